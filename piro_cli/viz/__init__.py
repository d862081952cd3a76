"""Figures of a trained run (`piro visualize`): UMAP of both spaces, distance curves, retrievals, attention.

`draw_figures(runs, kinds, FigureOptions(...))` (piro_cli.viz.figures) is the entry point; each kind lives in its own
module (umap_plot, distances, retrieval, attention); `embeddings` loads a run, its data and test objects;
`kinds` names the figures without loading torch or matplotlib (`draw_figures` loads them on first use).
"""

from __future__ import annotations

from typing import Any

from piro_cli.viz.kinds import KINDS


def __getattr__(name: str) -> Any:
    if name in ("draw_figures", "FigureOptions"):
        from piro_cli.viz import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["KINDS", "FigureOptions", "draw_figures"]
