"""The Batch API mode: input files, lifecycle, collecting (see ``sender``)."""
