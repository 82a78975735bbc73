"""weightlift.emulator: a local stand-in for the platforms and their object storage."""
