"""EACO (arXiv 2412.04903), read in the order of notebooks 06 to 08."""
