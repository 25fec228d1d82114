"""The embedded tiny world: procedural benchmark analogues (``world``), tiny models of the real architectures
(``models``), their pre-training (``pretrain``) and the tour. Only the command line and the tools import it; the
papers' code reads its files as it would read the real datasets."""
