"""The figures `piro visualize` draws and their limits, importable without torch or matplotlib (the command line's
options read them; piro_cli.viz.figures draws them)."""

from __future__ import annotations

KINDS = ("umap", "distances", "retrieval", "attention", "views")
DEFAULT_QUERIES = 3
DEFAULT_TOP_K = 5
# a figure past 100 thumbnails a row or 100 query blocks is unreadable, and far wider ones exceed what matplotlib draws
MAX_QUERIES = 100
MAX_TOP_K = 100
DEFAULT_CATEGORIES = 5  # the paper's Fig. 5 shows 5 categories
