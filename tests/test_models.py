"""The backbone registry and the Pose-invariant Attention Network (piro_cli.models)."""

from __future__ import annotations

import json
import time
import urllib.error

import pytest
import torch

from piro_cli.errors import PiroError
from piro_cli.models import backbones
from piro_cli.models.attention import ViewSetAttention
from piro_cli.models.backbones import (
    available_backbones,
    build_backbone,
    cut_backbone,
    cut_points,
    efficientnet_lite_weights_path,
)
from piro_cli.models.pan import PAN, PANConfig, PANOutput

B, V, HW = 3, 5, 32


def make_pan(dual: bool = True, seed: int = 0) -> PAN:
    torch.manual_seed(seed)
    return PAN(PANConfig(backbone="tiny", pretrained=False, dual=dual, cat_dim=16, obj_dim=24)).eval()


def views(b: int = B, v: int = V, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, v, 3, HW, HW, generator=torch.Generator().manual_seed(seed))


def assert_unit(x: torch.Tensor) -> None:
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(x.shape[:-1]), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- PAN


@torch.no_grad()
def test_dual_shapes_and_unit_norms():
    out = make_pan(dual=True)(views())
    assert isinstance(out, PANOutput)
    assert out.sv_cat.shape == (B, V, 16) and out.sv_obj.shape == (B, V, 24)
    assert out.mv_cat.shape == (B, 16) and out.mv_obj.shape == (B, 24)
    assert out.attn_cat.shape == (B, V, V) and out.attn_obj.shape == (B, V, V)
    for t in (out.sv_cat, out.sv_obj, out.mv_cat, out.mv_obj):
        assert_unit(t)
    assert out.sv_cat is not out.sv_obj and out.mv_cat is not out.mv_obj


@torch.no_grad()
def test_single_space_shares_tensors_and_uses_obj_dim():
    model = make_pan(dual=False)
    out = model(views())
    assert out.sv_cat is out.sv_obj and out.mv_cat is out.mv_obj and out.attn_cat is out.attn_obj
    assert out.sv_obj.shape == (B, V, 24) and out.mv_obj.shape == (B, 24)
    assert_unit(out.sv_obj)
    assert_unit(out.mv_obj)
    assert model.cat_head is None and model.cat_attention is None
    # fewer head parameters than the dual model: one head, one attention layer
    assert sum(p.numel() for p in model.head_parameters()) < sum(p.numel() for p in make_pan(dual=True).head_parameters())


@pytest.mark.parametrize("dual", [True, False])
@torch.no_grad()
def test_single_view_sets(dual):
    out = make_pan(dual)(views(v=1))
    assert out.sv_obj.shape == (B, 1, 24) and out.mv_obj.shape == (B, 24)
    torch.testing.assert_close(out.attn_obj, torch.ones(B, 1, 1))
    assert_unit(out.mv_cat)


@pytest.mark.parametrize("dual", [True, False])
@torch.no_grad()
def test_permutation_invariance(dual):
    model = make_pan(dual)
    x = views()
    perm = torch.tensor([3, 0, 4, 2, 1])
    a, b = model(x), model(x[:, perm])
    for name in ("sv_cat", "sv_obj"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name)[:, perm], atol=1e-5, rtol=0)
    for name in ("mv_cat", "mv_obj"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-5, rtol=0)
    # attention weights are permutation-equivariant: A[perm][:, perm]
    torch.testing.assert_close(b.attn_obj, a.attn_obj[:, perm][:, :, perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dual", [True, False])
@torch.no_grad()
def test_forward_equals_forward_features(dual):
    model = make_pan(dual)
    x = views()
    feats = model.features(x)
    assert feats.shape == (B, V, model.feat_dim)
    a, b = model(x), model.forward_features(feats)
    for name in ("sv_cat", "sv_obj", "mv_cat", "mv_obj", "attn_cat", "attn_obj"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_features_is_one_backbone_pass():
    model = make_pan()
    calls = []
    model.backbone.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    with torch.no_grad():
        model(views())
    assert calls == [torch.Size([B * V, 3, HW, HW])]


@torch.no_grad()
def test_attention_rows_sum_to_one_and_dropout_only_in_training():
    out = make_pan()(views())
    for attn in (out.attn_cat, out.attn_obj):
        assert (attn >= 0).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(B, V), atol=1e-5, rtol=0)

    torch.manual_seed(0)
    layer = ViewSetAttention(32, dropout=0.25)
    x = torch.randn(4, 6, 32)
    layer.eval()
    y1, w1 = layer(x)
    y2, _ = layer(x)
    assert torch.equal(y1, y2) and y1.shape == x.shape and w1.shape == (4, 6, 6)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])  # dropout active


def test_parameter_groups_partition_the_model():
    model = make_pan()
    head, body = model.head_parameters(), model.backbone_parameters()
    assert {id(p) for p in head}.isdisjoint({id(p) for p in body})
    assert len(head) + len(body) == len(list(model.parameters()))
    assert {id(p) for p in body} == {id(p) for p in model.backbone.parameters()}


def test_config_round_trip_and_unknown_fields():
    config = PANConfig(backbone="tiny", pretrained=False, dual=False, cat_dim=8, obj_dim=12, dropout=0.1)
    d = config.to_dict()
    assert PANConfig.from_dict(json.loads(json.dumps(d))) == config
    assert PANConfig.from_dict({"backbone": "tiny"}) == PANConfig(backbone="tiny")
    with pytest.raises(PiroError, match="unknown fields"):
        PANConfig.from_dict({**d, "heads": 4})


# ----------------------------------------------------------------------------- registry


def test_unknown_backbone_lists_names():
    with pytest.raises(PiroError) as info:
        build_backbone("alexnet")
    for name in available_backbones():
        assert name in str(info.value)
    assert "timm:" in str(info.value)
    assert available_backbones()[0] == "efficientnet_lite0"


def test_tiny_backbone_sizes():
    bb = build_backbone("tiny")
    assert bb.name == "tiny" and bb.feat_dim == 64
    bb.module.eval()
    with torch.no_grad():
        for size in (32, 64, 224):
            assert bb.module(torch.randn(2, 3, size, size)).shape == (2, 64)


def test_timm_backbone_without_weights():
    bb = build_backbone("timm:resnet10t", pretrained=False)
    assert bb.name == "timm:resnet10t" and bb.feat_dim == 512
    with torch.no_grad():
        assert bb.module.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    with pytest.raises(PiroError, match="no model"):
        build_backbone("timm:not_a_model_xyz", pretrained=False)


def test_timm_pretrained_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(backbones, "_timm_cached_file", lambda cfg: None)
    monkeypatch.setattr(backbones, "_unreachable", lambda url, timeout=5.0: "cannot reach huggingface.co:443 (test)")
    with pytest.raises(PiroError, match="--no-pretrained"):
        build_backbone("timm:resnet10t", pretrained=True)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_loads_packaged_weights_offline(name):
    bb = build_backbone(name, pretrained=True)
    assert bb.feat_dim == 1280
    state = torch.load(efficientnet_lite_weights_path(name), map_location="cpu", weights_only=True)
    assert torch.equal(bb.module.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(bb.module.bn2.running_var, state["_bn1.running_var"])  # the last BatchNorm: the order held
    with torch.no_grad():
        assert bb.module.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.parametrize("name", ["tiny", "resnet18", "efficientnet_lite0", "vgg16"])
def test_every_cut_point_composes_to_the_whole_backbone(name):
    """below then above, at each --train-from stage, is the backbone's own forward pass, and `above` holds exactly
    the backbone's parameters from that stage on (by their names in the backbone)."""
    module = build_backbone(name, pretrained=False).module.eval()
    images = torch.randn(2, 3, 64, 64)
    names = {id(p): n for n, p in module.named_parameters()}
    with torch.no_grad():
        whole = module(images)
        for stage in cut_points(name):
            cut = cut_backbone(name, module, stage)
            torch.testing.assert_close(cut.above(cut.below(images)), whole, rtol=0, atol=0)
            trained = {names[id(p)] for p in cut.above.parameters()}
            prefix = stage.split(".")[0]
            # parameters at or after the stage in the backbone's registration order (which is its forward order here)
            order = list(names.values())
            first = next(i for i, n in enumerate(order) if n.startswith(stage + ".") or n.startswith(stage + "_"))
            assert trained == set(order[first:]), (name, stage, prefix)
    with pytest.raises(PiroError, match="can start training at"):
        cut_backbone(name, module, "nowhere")


def test_cut_refuses_backbones_without_cut_points():
    module = build_backbone("timm:resnet10t", pretrained=False).module
    assert cut_points("timm:resnet10t") == ()
    with pytest.raises(PiroError, match="not available"):
        cut_backbone("timm:resnet10t", module, "layer4")


def test_ordered_loading_rejects_mismatched_files():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {f"x{i}": torch.randn_like(t) for i, t in enumerate(model.state_dict().values())}
    backbones.load_ordered_state_dict(
        model, dict(zip(["a.weight", "a.bias", "b.weight", "b.bias"], good.values(), strict=True)), "f"
    )
    assert torch.equal(model[1].bias, list(good.values())[3])
    bad = {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4), "b.weight": torch.randn(3, 4), "b.bias": torch.randn(2)}
    with pytest.raises(PiroError, match="does not match"):
        backbones.load_ordered_state_dict(model, bad, "f")
    with pytest.raises(PiroError, match="tensors"):
        backbones.load_ordered_state_dict(model, {"a.weight": torch.randn(4, 3)}, "f")


@pytest.mark.parametrize("name,feat_dim", [("vgg16", 25088), ("resnet18", 512)])
def test_torchvision_backbones_build_without_weights(name, feat_dim):
    bb = build_backbone(name, pretrained=False)
    assert bb.name == name and bb.feat_dim == feat_dim
    if name == "resnet18":
        with torch.no_grad():
            assert bb.module.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_torchvision_pretrained_without_network_raises_quickly(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_unreachable", lambda url, timeout=5.0: None)  # pretend the host answers

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    start = time.monotonic()
    with pytest.raises(PiroError) as info:
        build_backbone(name, pretrained=True)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "--no-pretrained" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message  # the exact place to put the file


def test_torchvision_pretrained_unreachable_host_skips_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_unreachable", lambda url, timeout=5.0: "cannot reach download.pytorch.org:443 (test)")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("must not try to download"))
    with pytest.raises(PiroError, match="resnet18-f37072fd.pth"):
        build_backbone("resnet18", pretrained=True)


def test_torchvision_pretrained_uses_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("must not download"))
    import torchvision

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = backbones.hub_checkpoint_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    bb = build_backbone("resnet18", pretrained=True)
    assert torch.equal(bb.module.conv1.weight, reference.conv1.weight)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PiroError, match="Delete the file"):
        build_backbone("resnet18", pretrained=True)
