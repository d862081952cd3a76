"""The losses' names, choices and defaults, importable without torch: what the command line's options and the run
labels read (the loss modules import them from here, so each value has one home)."""

from __future__ import annotations

from typing import Any

LOSS_TERMS = ("cat", "piobj", "picat")

# the category term "cat": PiRO's L-Softmax (losses/category.py), or ProxyGML over the categories (losses/proxy_gml.py)
CATEGORY_LOSSES = {
    "lsoftmax": "L_cat: large-margin softmax on the single views, hard views mined (PiRO)",
    "proxy-gml": "ProxyGML: N proxies per category, a sub-graph of the nearest, reverse label propagation",
}

# name -> one-line description; "piro" is PiRO's own L_piobj (losses/object.py), handled by PiroLoss.
OBJECT_LOSSES: dict[str, str] = {
    "piro": "L_piobj: confuser-based clustering and separation (PiRO)",
    "contrastive": "contrastive loss (positive margin 0, negative margin 1)",
    "triplet": "triplet margin loss (margin 0.2) on semi-hard triplets",
    "npair": "N-pair loss (one positive pair per object)",
    "multi-similarity": "multi-similarity loss with its miner",
    "proxy-nca": "ProxyNCA, one proxy per training object",
    "proxy-anchor": "Proxy-Anchor, one proxy per training object",
    "proxy-gml": "ProxyGML: N proxies per object, a sub-graph of the nearest, reverse label propagation",
}

POSE_INVARIANT_LOSSES = ("pi-cnn", "pi-proxy", "pi-tc")  # PIEs losses with the view weight a and the centre weight b
SEPARATIONS = ("squared", "plain")  # the distance of L_piobj's confuser separation: released squared, Eq. 7 plain
DIRECTION_LOSSES = ("piro", "triplet")  # the object losses the direction regulariser applies to (losses/direction.py)

# ProxyGML (losses/proxy_gml.py): the paper's settings for CUB-200 and Cars-196
DEFAULT_PROXIES = 12
DEFAULT_NEIGHBOURHOOD = 0.05
DEFAULT_REGULARISATION = 0.3

# language guidance (losses/language.py)
DEFAULT_WEIGHT = 7.5
SPACES = ("object", "category")
LABELS = ("names", "imagenet")  # expert labels (the category names) or ImageNet pseudo-labels
DEFAULT_TOPK = 5


def parse_object_loss(name: str) -> str:
    key = name.strip().lower()
    if key not in OBJECT_LOSSES:
        raise ValueError(f"unknown object loss {name!r}; choose one of {', '.join(OBJECT_LOSSES)}")
    return key


def canonical_terms(terms: Any) -> tuple[str, ...]:
    """Validate a collection of term names; returns them deduplicated, in LOSS_TERMS order."""
    if isinstance(terms, str):
        return parse_loss_terms(terms)
    terms = tuple(terms)
    if not terms:
        raise ValueError(f"no loss terms given; choose one or more of {', '.join(LOSS_TERMS)}")
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"unknown loss term(s) {', '.join(map(repr, unknown))}; valid terms are {', '.join(LOSS_TERMS)}")
    # Canonical order (the spec is silent): "piobj,cat" and "cat,piobj" name the same ablation, so they compare equal.
    return tuple(t for t in LOSS_TERMS if t in terms)


def parse_loss_terms(text: str) -> tuple[str, ...]:
    """'cat,piobj' -> ('cat', 'piobj'). Whitespace and letter case around names are ignored; duplicates collapse; the
    result is in LOSS_TERMS order. Raises ValueError for an empty list, an empty item ('cat,,piobj') or an unknown
    name (the message lists the valid ones)."""
    if not text or not text.strip():
        raise ValueError(f"no loss terms given; choose one or more of {', '.join(LOSS_TERMS)} (comma-separated)")
    items = [item.strip().lower() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError(f"empty item in loss terms {text!r}; write e.g. 'cat,piobj' (valid terms: {', '.join(LOSS_TERMS)})")
    return canonical_terms(items)
