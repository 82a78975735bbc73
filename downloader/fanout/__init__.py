"""Pull one model onto every node of a Ray cluster, origin serving it about once.

``pull_cluster`` (driver.py) is the entry point; Ray is imported only when it runs (the
``weightlift[ray]`` extra)."""

from weightlift.downloader.fanout.driver import ClusterReport, NodeReport, pull_cluster

__all__ = ["ClusterReport", "NodeReport", "pull_cluster"]
