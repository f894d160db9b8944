"""Results: the sinks, resume, the output's lock and blob mirror, merge and join."""
