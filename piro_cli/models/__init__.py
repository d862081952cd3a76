"""Models: the backbones (registry: their names and facts, without torch; backbones: the builders), the view-set
attention and the Pose-invariant Attention Network (PAN). Names below load their module on first use."""

from __future__ import annotations

from piro_cli.lazy import lazy_names

from .registry import available_backbones

_LAZY = {
    "ViewSetAttention": "attention",
    "Backbone": "backbones",
    "build_backbone": "backbones",
    "PAN": "pan",
    "PANConfig": "pan",
    "PANOutput": "pan",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["available_backbones", *_LAZY]
