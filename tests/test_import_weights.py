"""`piro import-weights`: the authors' released VGG-16 PAN state dict -> a piro checkpoint that embeds exactly alike.

The reference is a forward pass written here, in plain torch, from the released code (github sarkar-rohan/PiRO,
models/VGG_PAN_DualEmb.py, models/VGG_PAN_SingleEmb.py, models/architecture_utils.py MultiHeadAttention), on a state
dict built here with the released key names: the real VGG-16 conv shapes, tiny embedding sizes, 32x32 views
(VGG-16's AdaptiveAvgPool2d(7x7) still gives 25088-d features).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import PiroError
from piro_cli.inference.released import convert_released_state_dict, import_released_weights
from piro_cli.models.embedding import FIELDS
from piro_cli.models.pan import PAN
from piro_cli.runs import load_checkpoint
from piro_cli.training.config import method_label

runner = CliRunner()

VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
FEATURES = 512 * 7 * 7
OBJ_DIM, CAT_DIM = 6, 5
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# ----------------------------------------------------------------------------- the released model, written from its code


def vgg16_conv_indices() -> list[int]:
    """Positions of the conv layers in torchvision's vgg16 `features` Sequential (conv, ReLU pairs; one max-pool)."""
    indices, position = [], 0
    for item in VGG16_LAYERS:
        if item == "M":
            position += 1
        else:
            indices.append(position)
            position += 2
    return indices


def released_state_dict(dual: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the keys torch.save(DualModel/SingleModel(...).state_dict()) writes, nHeads = 1."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std + mean

    state: dict[str, torch.Tensor] = {}
    c_in = 3
    for index, c_out in zip(vgg16_conv_indices(), [c for c in VGG16_LAYERS if c != "M"], strict=True):
        state[f"backbone.features.{index}.weight"] = normal(c_out, c_in, 3, 3, std=math.sqrt(2.0 / (9 * c_in)))
        state[f"backbone.features.{index}.bias"] = normal(c_out, std=0.05)
        c_in = c_out
    spaces = [("obj", OBJ_DIM)] + ([("cls", CAT_DIM)] if dual else [])
    for space, dim in spaces:
        state[f"{space}_embedder.0.weight"] = normal(dim, FEATURES, std=1.0 / math.sqrt(FEATURES) * 4)
        state[f"{space}_embedder.0.bias"] = normal(dim, std=0.1)
        for layer in ("w_qs", "w_ks", "w_vs", "fc"):
            state[f"{space}_mha.{layer}.weight"] = normal(dim, dim, std=0.8)
            state[f"{space}_mha.{layer}.bias"] = normal(dim, std=0.2)
        state[f"{space}_mha.layer_norm.weight"] = normal(dim, std=0.2, mean=1.0)
        state[f"{space}_mha.layer_norm.bias"] = normal(dim, std=0.2)
    return state


def released_forward(state: dict[str, torch.Tensor], views: torch.Tensor, dual: bool) -> dict[str, torch.Tensor]:
    """The released forward pass in eval mode: (B, V, 3, H, W) ImageNet-normalised views -> the embeddings."""
    b, v = views.shape[:2]
    x = views.reshape(b * v, *views.shape[2:])
    conv = iter(vgg16_conv_indices())
    for item in VGG16_LAYERS:
        if item == "M":
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        else:
            index = next(conv)
            x = F.relu(
                F.conv2d(x, state[f"backbone.features.{index}.weight"], state[f"backbone.features.{index}.bias"], padding=1)
            )
    feats = torch.flatten(F.adaptive_avg_pool2d(x, (7, 7)), 1)  # classifier = Identity

    def attention(space: str, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # MultiHeadAttention(n_head=1, d_model=D, d_k=D, d_v=D): dropout is off in eval mode
        p = {k[len(space) + 5 :]: t for k, t in state.items() if k.startswith(f"{space}_mha.")}
        q = emb @ p["w_qs.weight"].T + p["w_qs.bias"]
        k = emb @ p["w_ks.weight"].T + p["w_ks.bias"]
        val = emb @ p["w_vs.weight"].T + p["w_vs.bias"]
        attn = torch.softmax(torch.einsum("blk,btk->blt", q, k) / np.sqrt(q.shape[-1]), dim=2)
        out = torch.einsum("blt,btv->blv", attn, val) @ p["fc.weight"].T + p["fc.bias"]
        out = F.layer_norm(out + emb, (emb.shape[-1],), p["layer_norm.weight"], p["layer_norm.bias"], eps=1e-5)
        return out, attn

    result = {}
    for space, name in [("obj", "obj")] + ([("cls", "cat")] if dual else []):
        emb = (feats @ state[f"{space}_embedder.0.weight"].T + state[f"{space}_embedder.0.bias"]).reshape(b, v, -1)
        context, attn = attention(space, emb)
        result[f"mv_{name}"] = F.normalize(context.mean(1), dim=1, p=2)
        result[f"sv_{name}"] = F.normalize(emb, dim=2, p=2)
        result[f"attn_{name}"] = attn
    return result


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def normalized_views(uint8_views: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) as torchvision ToTensor + Normalize(ImageNet) make them."""
    x = torch.as_tensor(uint8_views).float().div(255.0)
    x = x.movedim(-1, -3)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def released() -> dict[bool, dict[str, torch.Tensor]]:
    return {True: released_state_dict(dual=True), False: released_state_dict(dual=False, seed=1)}


@pytest.fixture(scope="module")
def released_files(released, tmp_path_factory) -> dict[bool, Path]:
    folder = tmp_path_factory.mktemp("released")
    paths = {}
    for dual, state in released.items():
        paths[dual] = folder / f"CAT_0.25_case1_b4{'dual' if dual else 'single'}.pth"
        torch.save(state, paths[dual])
    return paths


# ----------------------------------------------------------------------------- conversion: embeds exactly as released


@pytest.mark.parametrize("dual", [True, False], ids=["dual", "single"])
def test_converted_pan_embeds_as_the_released_model(released, dual):
    state = released[dual]
    config, converted = convert_released_state_dict(state, dual)
    assert (config.backbone, config.dual, config.obj_dim) == ("vgg16", dual, OBJ_DIM)
    if dual:
        assert config.cat_dim == CAT_DIM
    with torch.device("meta"):  # no random initialisation of VGG-16's 138M parameters: all come from the file
        model = PAN(config)
    model.load_state_dict(converted, strict=True, assign=True)  # strict: every PAN parameter comes from the file
    assert len(converted) == len(state)  # and every key of the file went somewhere
    model.eval()
    views = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = released_forward(state, views, dual)
    with torch.no_grad():
        out = model(views)
    names = ["obj", "cat"] if dual else ["obj"]
    for name in names:
        for kind in ("sv", "mv", "attn"):
            got, want = getattr(out, f"{kind}_{name}"), expected[f"{kind}_{name}"]
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{kind}_{name}")
    if not dual:
        assert out.sv_cat is out.sv_obj and out.mv_cat is out.mv_obj
    # the views are not all alike: a wrong attention would show
    assert float(expected["attn_obj"].std()) > 1e-3


def test_data_parallel_prefix_is_stripped(released):
    state = {f"module.{k}": v for k, v in released[True].items()}
    _, converted = convert_released_state_dict(state, dual=True)
    _, plain = convert_released_state_dict(released[True], dual=True)
    assert converted.keys() == plain.keys()
    assert all(torch.equal(converted[k], plain[k]) for k in plain)


# ----------------------------------------------------------------------------- refusals


def _refusal(state, dual) -> str:
    with pytest.raises(PiroError) as info:
        convert_released_state_dict(state, dual, origin="weights.pth")
    message = str(info.value)
    assert "\n" not in message and message.startswith("weights.pth: ")
    return message


def test_refuses_the_other_space(released):
    message = _refusal(released[False], dual=True)
    assert "single-space model" in message and "--single" in message
    message = _refusal(released[True], dual=False)
    assert "dual-space model" in message and "--dual" in message


def test_refuses_unknown_missing_and_misshapen_keys(released):
    state = dict(released[True])
    state["obj_mha.pos_encoding"] = torch.zeros(3)
    assert "unexpected key obj_mha.pos_encoding" in _refusal(state, True)

    state = dict(released[True])
    state["backbone.classifier.0.weight"] = torch.zeros(4096, FEATURES)
    assert "unexpected key backbone.classifier.0.weight" in _refusal(state, True)

    state = dict(released[True])
    del state["cls_mha.layer_norm.bias"]
    assert "key cls_mha.layer_norm.bias is missing" in _refusal(state, True)

    state = dict(released[True])
    state["backbone.features.5.weight"] = torch.zeros(128, 64, 5, 5)
    message = _refusal(state, True)
    assert "key backbone.features.5.weight has shape (128, 64, 5, 5), expected (128, 64, 3, 3)" in message

    state = dict(released[False])
    state["obj_mha.w_qs.weight"] = torch.zeros(2 * OBJ_DIM, OBJ_DIM)  # nHeads = 2
    message = _refusal(state, False)
    assert "obj_mha.w_qs.weight" in message and "2-head" in message

    state = dict(released[False])
    state["obj_embedder.0.weight"] = torch.zeros(OBJ_DIM, 2048)  # not the VGG-16 feature size
    assert f"expected (D, {FEATURES})" in _refusal(state, False)

    state = dict(released[False])
    state["obj_mha.fc.bias"] = torch.full((OBJ_DIM,), float("nan"))
    assert "obj_mha.fc.bias holds NaN" in _refusal(state, False)


def test_refuses_files_that_are_not_plain_state_dicts(tmp_path, tiny_data):
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not its state dict: weights_only refuses it
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for path, expected in [
        (pickled, "cannot be read as a plain PyTorch state dict"),
        (tensor, "holds a Tensor, not a state dict"),
        (tmp_path / "absent.pth", "no such file"),
    ]:
        result = runner.invoke(
            app, ["import-weights", str(path), "--dual", "--data", str(tiny_data), "--out", str(tmp_path / "c.pt")]
        )
        assert result.exit_code == 1, result.output
        assert expected in flat(result.output) and "Traceback" not in result.output
        assert not (tmp_path / "c.pt").exists()


# ----------------------------------------------------------------------------- the checkpoint, through the commands


@pytest.mark.parametrize("dual", [True, False], ids=["dual", "single"])
def test_imported_checkpoint_runs_through_embed_and_evaluate(released, released_files, tiny_data, tmp_path, dual):
    space = "dual" if dual else "single"
    out = tmp_path / "runs" / f"released-{space}" / "best.pt"
    result = runner.invoke(
        app, ["import-weights", str(released_files[dual]), f"--{space}", "--data", str(tiny_data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "note:" in result.output  # the tiny data's 32 px views are not the released 224

    checkpoint = load_checkpoint(out)
    store = ViewSetStore(tiny_data)
    assert checkpoint["categories"] == list(store.categories)
    assert checkpoint["data"]["fingerprint"] == store.fingerprint
    assert checkpoint["imported"]["source"] == released_files[dual].name
    assert len(checkpoint["imported"]["sha256"]) == 64
    assert method_label(checkpoint["train_config"]) == f"piro-{space}+released"  # never averaged with piro's own runs

    # `piro embed` gives the released model's embeddings of the data file's test views
    emb_path = tmp_path / "emb.h5"
    result = runner.invoke(app, ["embed", str(out), "--data", str(tiny_data), "--split", "test", "--out", str(emb_path)])
    assert result.exit_code == 0, result.output
    test = store.split("test")
    views = normalized_views(np.stack([test.views_uint8(i) for i in range(len(test))]))
    expected = released_forward(released[dual], views, dual)
    assert store.num_views % 2 == 0
    half = store.num_views // 2  # the released split of a test object's views: [:V/2] and [V/2:]
    first, last = released_forward(released[dual], views[:, :half], dual), released_forward(released[dual], views[:, half:], dual)
    name = "cat" if dual else "obj"
    with h5py.File(emb_path, "r") as f:
        assert list(f["test"]["object_index"][:]) == list(range(len(test)))
        got = {field: torch.as_tensor(f["test"][field][:]) for field in FIELDS}
    for field, want in [
        ("sv_obj", expected["sv_obj"]), ("mv_obj", expected["mv_obj"]), ("sv_cat", expected[f"sv_{name}"]),
        ("mv_cat", expected[f"mv_{name}"]), ("mv_obj_first", first["mv_obj"]), ("mv_obj_last", last["mv_obj"]),
    ]:  # fmt: skip
        torch.testing.assert_close(got[field], want, atol=1e-5, rtol=0, msg=field)

    if dual:  # the single-space model loads through the same load_model; one evaluation keeps the test short
        result = runner.invoke(app, ["evaluate", str(out.parent), "--data", str(tiny_data), "--format", "json", "--no-save"])
        assert result.exit_code == 0, result.output
        (run,) = json.loads(result.stdout)["runs"]
        assert run["source"] == str(out.parent) and len(run["tasks"]) == 8
        assert all(0.0 <= value <= 100.0 for value in run["tasks"].values())


def test_import_refuses_to_overwrite_and_names_the_file(released_files, tiny_data, tmp_path):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"keep me")
    result = runner.invoke(
        app, ["import-weights", str(released_files[False]), "--single", "--data", str(tiny_data), "--out", str(out)]
    )
    assert result.exit_code == 1 and "ckpt.pt: already exists" in flat(result.output) and out.read_bytes() == b"keep me"
    with pytest.raises(PiroError, match="holds a single-space model"):
        import_released_weights(released_files[False], True, tiny_data, tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()


def test_help_explains_every_option():
    result = runner.invoke(app, ["import-weights", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--dual", "--single", "--data", "--out", "--overwrite", "Example"):
        assert option in result.output
