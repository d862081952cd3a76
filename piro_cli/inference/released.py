"""The authors' released PAN weights (github sarkar-rohan/PiRO) as a piro checkpoint: `piro import-weights`.

The released training scripts save `model.state_dict()` (a plain state dict, no DataParallel `module.` prefix) of
`DualModel` (models/VGG_PAN_DualEmb.py) or `SingleModel` (models/VGG_PAN_SingleEmb.py):

- `backbone`: torchvision VGG-16 with `classifier = Identity()`, so only the conv weights `backbone.features.<i>.*`;
  features -> AdaptiveAvgPool2d(7x7) -> flatten = 25088-d, exactly piro's `vgg16` backbone;
- `obj_embedder.0` (and, dual, `cls_embedder.0`): Linear(25088, D) on the backbone features;
- `obj_mha` (and `cls_mha`): models/architecture_utils.py MultiHeadAttention(n_head, D, d_k=D, d_v=D) with
  `w_qs`, `w_ks`, `w_vs`, `fc` (Linear layers) and `layer_norm`. With the released one head (ConfigLearn nHeads = 1)
  it computes LayerNorm(x + Dropout(fc(softmax(q k^T / sqrt(D)) v))): post-norm, dropout on the projected output,
  no positional encoding, no feed-forward block, which is piro's ViewSetAttention term for term.

Single-view embeddings are L2norm(embedder(features)) and multi-view ones L2norm(mean over views of mha(...)) in
both, as in PAN, so every tensor maps one to one and the converted model embeds exactly as the released one:

    backbone.features.<i>.*   -> backbone.features.<i>.*
    obj_embedder.0.*          -> obj_head.*                cls_embedder.0.* -> cat_head.*
    obj_mha.<w_qs|w_ks|w_vs|fc|layer_norm>.* -> obj_attention.<q|k|v|out|norm>.*   (cls_mha -> cat_attention)

The released L-Softmax class weights live in the loss module (losses/CategoryLoss.py), not in the model, so the
file holds no classifier whose category count could be checked against the data file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from piro_cli.data.store import resolve_data
from piro_cli.errors import PiroError
from piro_cli.methods import method_for_space
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.outputs import atomic_torch_save, check_output_path
from piro_cli.runs import CHECKPOINT_FORMAT, checkpoint_header, load_plain_torch_file
from piro_cli.training import open_run_data

RELEASED_FEAT_DIM = 512 * 7 * 7  # VGG-16 conv features, classifier removed
RELEASED_DROPOUT = 0.25  # ConfigLearn.HyperParams.dropout (no effect in evaluation)
RELEASED_IMAGE_SIZE = 224  # ConfigLearn imgDim: the released weights saw 224x224 views
RELEASED_MODELS = {True: "models/VGG_PAN_DualEmb.py DualModel", False: "models/VGG_PAN_SingleEmb.py SingleModel"}
DATA_PARALLEL_PREFIX = "module."

_HEADS = {"obj_embedder.0.": "obj_head.", "cls_embedder.0.": "cat_head."}  # released prefix -> piro prefix
_ATTENTIONS = {"obj_mha.": "obj_attention.", "cls_mha.": "cat_attention."}
_ATTENTION_LAYERS = {"w_qs": "q", "w_ks": "k", "w_vs": "v", "fc": "out", "layer_norm": "norm"}
_CATEGORY_PREFIXES = ("cls_embedder.", "cls_mha.")  # present only in the dual model


def released_key(piro_key: str) -> str:
    """The released state-dict name of a parameter of piro's PAN with the vgg16 backbone."""
    if piro_key.startswith("backbone."):
        return piro_key
    for released, ours in _HEADS.items():
        if piro_key.startswith(ours):
            return released + piro_key[len(ours) :]
    for released, ours in _ATTENTIONS.items():
        if piro_key.startswith(ours):
            layer, _, leaf = piro_key[len(ours) :].partition(".")
            by_piro_name = {v: k for k, v in _ATTENTION_LAYERS.items()}
            return f"{released}{by_piro_name[layer]}.{leaf}"
    raise ValueError(f"PAN parameter {piro_key!r} has no released counterpart")


def _space_name(dual: bool) -> str:
    return "dual" if dual else "single"


def _describe_expected(dual: bool) -> str:
    heads = "obj_embedder.0.*, obj_mha.*" + (", cls_embedder.0.*, cls_mha.*" if dual else "")
    return f"a released {RELEASED_MODELS[dual]} state dict holds only backbone.features.*, {heads}"


def strip_data_parallel(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict without the `module.` prefix nn.DataParallel adds to every key (when every key has it)."""
    if state and all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        return {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}, True
    return dict(state), False


def convert_released_state_dict(
    state: Mapping[str, torch.Tensor], dual: bool, origin: str = "the state dict"
) -> tuple[PANConfig, dict[str, torch.Tensor]]:
    """A released VGG_PAN_DualEmb (`dual`) or VGG_PAN_SingleEmb state dict -> (PANConfig, piro PAN state dict).

    Every released key must map onto a PAN parameter and every PAN parameter must be in the file, with the shape
    PAN has for the dimensions the file's embedders give; anything else raises a one-line PiroError naming `origin`
    and the offending key. Tensors are returned as float32 CPU tensors.
    """
    if not isinstance(state, Mapping):
        raise PiroError(f"{origin}: holds a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str):
            raise PiroError(
                f"{origin}: key {key!r} is a {type(key).__name__}, not a parameter name; pass the plain state dict the "
                "released scripts save (torch.save(model.state_dict(), ...))"
            )
        if not isinstance(value, torch.Tensor):
            raise PiroError(
                f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor; pass the plain state dict the released "
                "scripts save (torch.save(model.state_dict(), ...))"
            )
    state, _ = strip_data_parallel(state)
    category_keys = [k for k in state if k.startswith(_CATEGORY_PREFIXES)]
    if dual and not category_keys:
        if "obj_embedder.0.weight" not in state:  # not a released PiRO state dict at all: say that, not "single"
            raise PiroError(f"{origin}: not a released PiRO state dict (no obj_embedder / cls_embedder keys); {_describe_expected(dual)}")
        raise PiroError(
            f"{origin}: holds a single-space model (no cls_embedder / cls_mha keys, as {RELEASED_MODELS[False]} saves); "
            "import it with --single"
        )
    if not dual and category_keys:
        raise PiroError(
            f"{origin}: holds a dual-space model (it has {category_keys[0]}, as {RELEASED_MODELS[True]} saves); "
            "import it with --dual"
        )
    obj_dim = _embedding_dim(state, "obj_embedder.0.weight", origin)
    cat_dim = _embedding_dim(state, "cls_embedder.0.weight", origin) if dual else obj_dim
    config = PANConfig(backbone="vgg16", pretrained=False, dual=dual, cat_dim=cat_dim, obj_dim=obj_dim, dropout=RELEASED_DROPOUT)
    with torch.device("meta"):  # shapes only: no memory, no initialisation of VGG-16's 138M parameters
        expected = {released_key(k): (k, tuple(v.shape)) for k, v in PAN(config).state_dict().items()}

    unknown = [k for k in state if k not in expected]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        hint = " (the released backbone's classifier is an Identity)" if unknown[0].startswith("backbone.classifier.") else ""
        raise PiroError(
            f"{origin}: unexpected key {unknown[0]}{more}{hint}; {_describe_expected(dual)}. Is it a released PiRO "
            f"{_space_name(dual)}-space checkpoint?"
        )
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise PiroError(
            f"{origin}: key {missing[0]}{more} is missing (expected shape {expected[missing[0]][1]}); "
            f"{_describe_expected(dual)}, all of them"
        )
    converted: dict[str, torch.Tensor] = {}
    for key, (piro_key, shape) in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            raise PiroError(
                f"{origin}: key {key} has shape {tuple(tensor.shape)}, expected {shape}{_shape_hint(key, tensor, shape)}"
            )
        if not tensor.is_floating_point():
            raise PiroError(f"{origin}: key {key} holds {tensor.dtype} values, expected floating-point weights")
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(tensor).all():
            raise PiroError(f"{origin}: key {key} holds NaN or infinite values; the file is damaged or from a diverged run")
        converted[piro_key] = tensor.contiguous()
    return config, converted


def _embedding_dim(state: Mapping[str, torch.Tensor], key: str, origin: str) -> int:
    """D from an embedder's Linear(25088, D) weight."""
    if key not in state:
        raise PiroError(f"{origin}: key {key} is missing (expected shape (D, {RELEASED_FEAT_DIM}), D the embedding size)")
    weight = state[key]
    if weight.dim() != 2 or weight.shape[1] != RELEASED_FEAT_DIM or weight.shape[0] < 1:
        raise PiroError(
            f"{origin}: key {key} has shape {tuple(weight.shape)}, expected (D, {RELEASED_FEAT_DIM}): a Linear layer on "
            "the 25088-d VGG-16 features (the released models use only the VGG-16 backbone)"
        )
    return int(weight.shape[0])


def _shape_hint(key: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> str:
    layer = key.split(".")
    if len(layer) == 3 and layer[1] in ("w_qs", "w_ks", "w_vs") and layer[2] == "weight" and tensor.dim() == 2:
        rows, dim = tensor.shape
        if rows != dim and dim == shape[1] and rows % dim == 0:
            return (
                f": a {rows // dim}-head attention layer; piro's PAN has the one head of the released configuration "
                "(ConfigLearn nHeads = 1)"
            )
    return ""


def load_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released .pth file, read with torch.load(weights_only=True): opening it cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise PiroError(f"{path}: no such file; pass the .pth file of the released PiRO weights")
    state = load_plain_torch_file(
        path,
        "it cannot be read as a plain PyTorch state dict: pass the .pth file the released scripts save with "
        "torch.save(model.state_dict(), ...)",
    )
    if isinstance(state, Mapping) and state.get("format") == CHECKPOINT_FORMAT:
        raise PiroError(f"{path}: is already a piro checkpoint; pass it to `piro evaluate` directly")
    if not isinstance(state, Mapping):
        raise PiroError(f"{path}: holds a {type(state).__name__}, not a state dict (a mapping of parameter names to tensors)")
    return dict(state)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ImportedWeights:
    path: Path  # the checkpoint written
    model_config: PANConfig
    source: Path
    sha256: str
    num_categories: int
    notes: list[str] = field(default_factory=list)  # what the caller should tell the user (e.g. the image size)


def import_released_weights(
    weights: str | Path, dual: bool, data: str | Path, out: str | Path, overwrite: bool = False
) -> ImportedWeights:
    """Write a piro checkpoint (for `piro evaluate`, `embed`, `visualize`, `compare`) from the released weights.

    `weights`: the .pth state dict the released trainPiRO_Dual.py (`dual`) or trainPiRO_Single.py saved; `data`: the
    piro data file the model is to be evaluated on (its categories and fingerprint are recorded, as a trained run
    records its data); `out`: the checkpoint file to write (e.g. runs/released-dual/best.pt, a run folder).
    """
    weights, out = Path(weights), Path(out)
    if out.suffix.lower() not in (".pt", ".pth"):
        raise PiroError(f"--out {out}: a checkpoint is a .pt file, e.g. runs/released-dual/best.pt")
    check_output_path(out, "--out", overwrite)
    if out.resolve() == weights.resolve():
        raise PiroError(f"--out {out}: is the released weights file itself; write the checkpoint elsewhere")
    run_data = open_run_data(resolve_data(data), val_fraction=None, val_seed=0)
    store = run_data.store
    state, stripped = strip_data_parallel(load_released_state_dict(weights))
    config, model_state = convert_released_state_dict(state, dual, origin=str(weights))
    digest = file_sha256(weights)
    imported = {
        "source": weights.name,
        "sha256": digest,
        "released_model": RELEASED_MODELS[dual],
        "data_parallel_prefix_stripped": stripped,
    }
    payload = {
        **checkpoint_header(),
        "model_config": config.to_dict(),
        "model_state": model_state,
        "categories": list(store.categories),
        "data": run_data.describe(),
        # what is known of how the weights were trained; `imported_from` keeps them apart from piro's own runs in
        # `piro compare` (method label '<method>+released')
        "train_config": {
            "method": method_for_space(dual),
            "dual": dual,
            "backbone": config.backbone,
            "cat_dim": config.cat_dim,
            "obj_dim": config.obj_dim,
            "data": str(store.path),
            "imported_from": weights.name,
        },
        "metrics": {},
        "imported": imported,
    }
    atomic_torch_save(payload, out)
    notes = []
    if store.image_size != RELEASED_IMAGE_SIZE:
        notes.append(
            f"{store.path} holds {store.image_size}x{store.image_size} views; the released weights were trained and "
            f"evaluated on {RELEASED_IMAGE_SIZE}x{RELEASED_IMAGE_SIZE} (prepare the data with --size {RELEASED_IMAGE_SIZE} "
            "to reproduce the paper's numbers)"
        )
    return ImportedWeights(out, config, weights, digest, len(store.categories), notes)
