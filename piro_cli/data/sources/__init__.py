"""Dataset sources for `piro prepare`: one module per source, registered here by name."""

from __future__ import annotations

from piro_cli.data.sources import fg3d, folder, modelnet40, objectpi, synthetic
from piro_cli.data.sources.base import ObjectRecord, Source, SourceScan
from piro_cli.errors import DataError

SOURCES: dict[str, Source] = {module.SOURCE.name: module.SOURCE for module in (objectpi, modelnet40, fg3d, folder, synthetic)}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown dataset source {name!r}; choose one of: {', '.join(SOURCES)}") from None


__all__ = ["SOURCES", "ObjectRecord", "Source", "SourceScan", "get_source"]
