"""Sending: the pool, pacing, retries, and answers reused instead of sent."""
