"""Experiments built on the library: the ``demo`` job, the paper ``reproduce``-tions and
the CI ``smoke`` budget."""
