"""Settings: one frozen value from flags, environment, file and defaults."""
