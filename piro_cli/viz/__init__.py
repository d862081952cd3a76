"""Figures of a trained run (`piro visualize`): UMAP of both spaces, distance curves, retrievals, attention.

`draw_figures(runs, kinds, ...)` (piro_cli.viz.figures) is the entry point; each kind lives in its own
module (umap_plot, distances, retrieval, attention); `embeddings` loads a run, its data and test objects.
"""

from piro_cli.viz.figures import KINDS, draw_figures

__all__ = ["KINDS", "draw_figures"]
