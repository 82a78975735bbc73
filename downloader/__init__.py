"""weightlift.downloader: manifests, planning, the transfer engine and finalisation."""
