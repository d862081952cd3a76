"""Photos embedded by the graphs `piro export --onnx` writes, in onnxruntime: what `piro identify --onnx` runs.

No torch, timm or torchvision is imported (seconds of start-up in a fresh process); the graphs hold the run's
ImageNet normalisation, test-time flips and scales, and `NAME.json` the fingerprint of the weights they were exported
from, which must be the index's. The embeddings match the model's own to 1e-4 (checked at export).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from piro_cli.errors import PiroError
from piro_cli.inference.index_manifest import recorded_tta_scales


@dataclass
class OnnxEmbedder:
    """The single-view graph (NAME.onnx), the view-set graph (NAME.viewset.onnx) and their record (NAME.json)."""

    path: Path
    fingerprint: str
    image_size: int
    tta: bool  # the graphs average each photo with its mirror
    single: object  # onnxruntime.InferenceSession
    viewset: object
    tta_scales: list[float] = field(default_factory=lambda: [1.0])  # the graphs average each photo over these resizings

    @classmethod
    def open(cls, path: str | Path) -> OnnxEmbedder:
        path = Path(path)
        if path.suffix != ".onnx" or path.name.endswith(".viewset.onnx"):
            raise PiroError(f"--onnx {path}: give the single-view graph NAME.onnx that `piro export --onnx NAME.onnx` wrote")
        viewset, record = path.with_suffix(".viewset.onnx"), path.with_suffix(".json")
        for needed in (path, viewset, record):
            if not needed.is_file():
                raise PiroError(f"--onnx {path}: {needed} is missing; write all three with `piro export RUN --onnx {path}`")
        try:
            facts = json.loads(record.read_text())
            fingerprint, image_size, tta = str(facts["fingerprint"]), int(facts["image_size"]), facts["tta"]
            if not isinstance(tta, bool):
                raise TypeError("tta is not true or false")
            scales = recorded_tta_scales(facts)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise PiroError(f"{record}: not the record `piro export` writes ({exc}); export the run again") from None
        try:
            import onnxruntime
        except ImportError:
            raise PiroError("--onnx needs onnxruntime: pip install -e '.[deploy]'") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        try:
            single = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            heads = onnxruntime.InferenceSession(str(viewset), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types; all mean the same here
            raise PiroError(f"--onnx {path}: onnxruntime cannot load the graphs ({str(exc).splitlines()[0]}); export again") from None
        return cls(path, fingerprint, image_size, tta, single, heads, scales)

    def check_index(self, checkpoint: dict, index: Path) -> None:
        """Refuse graphs of other weights, or other test-time flips, than the index's `checkpoint` record."""
        if checkpoint["fingerprint"] != self.fingerprint:
            raise PiroError(
                f"--onnx {self.path}: exported from other weights (fingerprint {self.fingerprint}) than {index} was built "
                f"with ({checkpoint['fingerprint']}); export the index's run"
            )
        if bool(checkpoint.get("tta", False)) != self.tta:
            raise PiroError(
                f"--onnx {self.path}: exported {'with' if self.tta else 'without'} test-time flips, {index} was built "
                f"{'with' if checkpoint.get('tta') else 'without'}; export the run with the index's setting"
            )
        if recorded_tta_scales(checkpoint) != self.tta_scales:
            raise PiroError(
                f"--onnx {self.path}: exported with test-time scales {self.tta_scales}, {index} was built with "
                f"{recorded_tta_scales(checkpoint)}; export the run with the index's setting"
            )

    def embed(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (V, S, S, 3) photos -> sv_cat (V, Dc), sv_obj (V, Do), mv_obj (Do,): what `embed_views` gives."""
        sv_cat, sv_obj, features = self.single.run(None, {"images": np.ascontiguousarray(views, dtype=np.uint8)})
        _, mv_obj = self.viewset.run(None, {"view_features": features[None]})
        return sv_cat, sv_obj, mv_obj[0]

    def embed_each(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) photos, each a view set of its own -> sv_cat (N, Dc), sv_obj (N, Do), mv_obj (N, Do)."""
        sv_cat, sv_obj, features = self.single.run(None, {"images": np.ascontiguousarray(views, dtype=np.uint8)})
        _, mv_obj = self.viewset.run(None, {"view_features": features[:, None]})
        return sv_cat, sv_obj, mv_obj
