"""The eight PICR tasks' names, in the paper's column order, importable without torch (the command line's options
read them; piro_cli.retrieval.picr computes them)."""

from __future__ import annotations

TASKS = (
    "sv-category-recognition",
    "mv-category-recognition",
    "sv-object-recognition",
    "mv-object-recognition",
    "sv-category-retrieval",
    "mv-category-retrieval",
    "sv-object-retrieval",
    "mv-object-retrieval",
)
"""The paper's column order: classification then retrieval; category then object; single then multi view."""

SHORT_NAMES = {
    "sv-category-recognition": "SV cat acc",
    "mv-category-recognition": "MV cat acc",
    "sv-object-recognition": "SV obj acc",
    "mv-object-recognition": "MV obj acc",
    "sv-category-retrieval": "SV cat mAP",
    "mv-category-retrieval": "MV cat mAP",
    "sv-object-retrieval": "SV obj mAP",
    "mv-object-retrieval": "MV obj mAP",
}

