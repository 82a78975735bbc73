"""Sources: where a manifest comes from (a file, plain URLs, later the platforms)."""
