"""Input rows: CSV and JSONL read lazily, each with where it stands in the file."""
