"""weightlift.cli: argument parsing, commands, progress, JSON output and exit codes."""
