"""piro: pose-invariant object recognition and retrieval (dual embeddings, PiRO CVPR 2024)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("piro")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
