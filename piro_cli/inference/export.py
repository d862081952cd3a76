"""`piro export --onnx`: a run's model as two ONNX graphs, to embed photos and view sets without piro or torch.

- `NAME.onnx`, the single-view embedder: `images` uint8 (N, S, S, 3), RGB photos resized to the run's image
  size S (what `piro prepare` and `read_image` give) -> `sv_cat` (N, Dc), `sv_obj` (N, Do), the L2-normalised
  single-view embeddings (what an index holds and `identify` searches), and `view_features` (N, F), the
  backbone's pooled features that the view-set head reads. ImageNet normalisation and, for a run trained with
  `--tta`, the mean with the mirrored photo are inside the graph. N is dynamic.
- `NAME.viewset.onnx`, the view-set head: `view_features` (B, V, F) -> `mv_cat` (B, Dc), `mv_obj` (B, Do), the
  multi-view embeddings of B view sets of V views each (attention over the views, mean, L2 norm). B and V
  are dynamic.
- `NAME.json`: the checkpoint's weights fingerprint (an index built from the run holds the same one), image
  size, input and output names and shapes.

Both graphs are checked after export: onnxruntime (when installed) runs them on sample inputs and their
outputs must match piro's own to 1e-4.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from piro_cli.data.store import IMAGENET_MEAN, IMAGENET_STD
from piro_cli.errors import PiroError, short_cause
from piro_cli.inference.run import EmbedSettings, load_run
from piro_cli.models.pan import PAN
from piro_cli.outputs import AtomicFile, check_output_path, write_json
from piro_cli.reporting import Reporter, SilentReporter

OPSET = 18
TOLERANCE = 1e-4


class SingleViewEmbedder(nn.Module):
    """uint8 photos (N, S, S, 3) -> (sv_cat, sv_obj, view_features)."""

    def __init__(self, model: PAN) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        feats = self.model.features(x.unsqueeze(1))  # (N, 1, F); mirrored mean inside with the run's --tta
        out = self.model.forward_features(feats)
        return out.sv_cat[:, 0], out.sv_obj[:, 0], feats[:, 0]


class ViewSetHead(nn.Module):
    """view_features (B, V, F) -> (mv_cat, mv_obj)."""

    def __init__(self, model: PAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, view_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_features(view_features)
        return out.mv_cat, out.mv_obj


@dataclass
class ExportResult:
    embedder: Path
    viewset: Path
    metadata: Path
    max_difference: float | None  # largest |onnxruntime - piro| over the check's outputs; None without onnxruntime


def _require(module: str, extra: str = "deploy"):
    try:
        return __import__(module)
    except ImportError:
        raise PiroError(
            f"`piro export --onnx` needs the {module} package: pip install 'piro[{extra}]' (or pip install {module})"
        ) from None


def export_onnx(
    run: str | Path, out: str | Path, *, overwrite: bool = False, check: bool = True, reporter: Reporter | None = None,
    embedding: EmbedSettings | None = None,
) -> ExportResult:
    """Write the two graphs and their metadata beside `out` (module docstring); with `check`, run them in onnxruntime.
    `reporter` hears each stage as it starts (tracing the embedder takes minutes). `embedding`: the flips and scales
    the graphs embed with (default: the run's own; an index built with others needs graphs of its settings)."""
    reporter = reporter or SilentReporter()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise PiroError(f"--onnx {out}: name the file NAME.onnx")
    viewset = out.with_name(out.stem + ".viewset.onnx")
    metadata = out.with_suffix(".json")
    for path in (out, viewset, metadata):
        check_output_path(path, "--onnx", overwrite)
    _require("onnx")
    _require("onnxscript")
    embedding = embedding or EmbedSettings()
    loaded = load_run(run, "cpu", embedding.tta, tta_scales=embedding.tta_scales)
    model = loaded.model.float().eval()
    size = loaded.image_size
    embedder, head = SingleViewEmbedder(model).eval(), ViewSetHead(model).eval()
    images = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sv_cat, sv_obj, feats = embedder(images)
    sets = torch.randn(2, 3, feats.shape[-1], generator=torch.Generator().manual_seed(1))
    batch = torch.export.Dim("batch", min=1, max=4096)
    views = torch.export.Dim("views", min=1, max=1024)
    # both graphs are written under temporary names and checked there; only then do they replace the targets
    staged = {path: path.with_name(f".{path.name}.staged-{os.getpid()}") for path in (out, viewset)}
    try:
        reporter.info(f"{loaded.name}: exporting the single-view embedder (tracing takes a minute or two on a CPU)")
        _export(embedder, (images,), staged[out], ["images"], ["sv_cat", "sv_obj", "view_features"], {"images": {0: batch}})
        reporter.info(f"{loaded.name}: exporting the view-set head")
        _export(head, (sets,), staged[viewset], ["view_features"], ["mv_cat", "mv_obj"], {"view_features": {0: batch, 1: views}})
        if check:
            reporter.info("checking both graphs in onnxruntime against piro's embeddings")
        difference = _check(staged[out], staged[viewset], embedder, head, size, feats.shape[-1]) if check else None
        for final, temporary in staged.items():
            os.replace(temporary, final)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    write_json(
        {
            "format": "piro-onnx",
            "run": str(loaded.path),
            "fingerprint": loaded.fingerprint(),
            "image_size": size,
            "tta": loaded.tta,
            "tta_scales": list(loaded.tta_scales),
            "dual": bool(model.config.dual),
            "embedder": {"file": out.name, "inputs": {"images": ["N", size, size, 3, "uint8 RGB"]},
                         "outputs": {"sv_cat": ["N", int(sv_cat.shape[-1])], "sv_obj": ["N", int(sv_obj.shape[-1])],
                                     "view_features": ["N", int(feats.shape[-1])]}},
            "viewset": {"file": viewset.name, "inputs": {"view_features": ["B", "V", int(feats.shape[-1])]},
                        "outputs": {"mv_cat": ["B", int(sv_cat.shape[-1])], "mv_obj": ["B", int(sv_obj.shape[-1])]}},
            "max_difference": difference,
        },
        metadata,
    )  # fmt: skip
    return ExportResult(out, viewset, metadata, difference)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    try:
        _write_graph(module, args, path, inputs, outputs, dynamic)
    except PiroError:
        raise
    except Exception as exc:  # an operator torch.onnx cannot express (some timm backbones), or onnxscript's own errors
        raise PiroError(f"--onnx: this model cannot be exported to ONNX ({short_cause(exc)}); nothing written") from None


def _write_graph(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings(), AtomicFile(path) as target:
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=inputs, output_names=outputs, dynamic_shapes=dynamic, opset_version=OPSET,
            verbose=False,
        )  # fmt: skip
        program.optimize()
        target.write(program.model_proto.SerializeToString())


def _check(
    embedder_path: Path, viewset_path: Path, embedder: nn.Module, head: nn.Module, size: int, feat_dim: int
) -> float | None:
    """Largest difference between onnxruntime and torch on fresh inputs of other shapes than the export's."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    images = torch.randint(0, 256, (3, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    sets = torch.randn(1, 5, feat_dim, generator=torch.Generator().manual_seed(3))
    worst = 0.0
    for path, module, value, name in ((embedder_path, embedder, images, "images"), (viewset_path, head, sets, "view_features")):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {name: value.numpy()})
        with torch.no_grad():
            expected = module(value)
        for g, e in zip(got, expected, strict=True):
            worst = max(worst, float(np.abs(g - e.numpy()).max()))
    if worst > TOLERANCE:
        raise PiroError(
            f"onnxruntime's embeddings differ from piro's by {worst:.2e} (> {TOLERANCE}); nothing written; report this"
        )
    return worst
