"""On-demand measurements of batchrunner against the simulator (not tests)."""
