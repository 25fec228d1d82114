"""SEAT / Cas-SEAT (arXiv 2501.05662), read in the order of notebooks 01 to 05."""
