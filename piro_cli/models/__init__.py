"""Models: the backbones (registry: their names and facts, without torch; backbones: the builders), the view-set
attention and the Pose-invariant Attention Network (PAN). Names below load their module on first use."""

from __future__ import annotations

import importlib
from typing import Any

from .registry import available_backbones

_LAZY = {
    "ViewSetAttention": "attention",
    "Backbone": "backbones",
    "build_backbone": "backbones",
    "PAN": "pan",
    "PANConfig": "pan",
    "PANOutput": "pan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["available_backbones", *_LAZY]
