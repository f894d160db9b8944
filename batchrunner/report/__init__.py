"""What people and machines see: logs, progress, the summary, the printed settings."""
