"""The six PIEs losses (METHOD.md section 8) against values worked out by hand, and against loops written here
after the released code (chihhuiho/PIE_pose_invariant_embedding, each method's net.py); the object-batch sampler;
the fc7 embedding head; the methods' released options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from piro_cli.data import augment as augment_module
from piro_cli.data.samplers import object_batches
from piro_cli.errors import DataError, PiroError
from piro_cli.losses import PIES_LOSSES, MVCNNLoss, MVProxyLoss, MVTCLoss, PICNNLoss, PIProxyLoss, PITCLoss
from piro_cli.methods import METHODS, embedding_head
from piro_cli.models import backbones
from piro_cli.models import pan as pan_module
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.recipes import RECIPES
from piro_cli.training import TrainConfig

# ----------------------------------------------------------------------------- a tiny batch worked out by hand
#
# Unit vectors u(t) = (cos t, sin t) in the plane; between u(t1) and u(t2) the squared distance is 2 - 2 cos(t1 - t2).
# Two objects of two views each, three categories:
#   object 0, category 0: views u(0), u(60), view set s0 = u(30)   (s is the normalised mean of the views)
#   object 1, category 2: views u(150), u(270), view set s1 = u(210)
#   centres c0 = u(0), c1 = u(180), c2 = u(90)
# Angles between them (degrees):
#   object 0's views: 30 to s0, 150 to s1.       object 1's views: 120 to s0, 60 to s1.
#   s0: 30 to c0, 150 to c1, 60 to c2.           s1: 150 to c0, 30 to c1, 120 to c2.


def d2(degrees: float) -> float:
    """Squared distance between two unit vectors `degrees` apart."""
    return 2.0 - 2.0 * math.cos(math.radians(degrees))


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    views = torch.tensor([[unit(0), unit(60)], [unit(150), unit(270)]], requires_grad=True)
    view_set = torch.tensor([unit(30), unit(210)], requires_grad=True)
    labels = torch.tensor([0, 2])
    centres = torch.tensor([unit(0), unit(180), unit(90)])
    return views, view_set, labels, centres


def with_centres(loss: torch.nn.Module, centres: torch.Tensor) -> torch.nn.Module:
    with torch.no_grad():
        loss.centres.copy_(3.0 * centres)  # any length: the loss normalises its centres
    return loss


def test_tiny_batch_is_what_the_comment_says():
    views, view_set, _, centres = tiny_batch()
    assert torch.allclose(F.normalize(views.mean(dim=1), dim=-1), view_set, atol=1e-6)
    assert float(((views[1, 0] - view_set[0]) ** 2).sum().detach()) == pytest.approx(d2(120))
    assert float(((view_set[1] - centres[2]) ** 2).sum().detach()) == pytest.approx(d2(120))


def test_pi_cnn_by_hand():
    views, view_set, labels, centres = tiny_batch()
    e = math.exp
    # a = b = 1. Each view: -log( sum_s exp(-d2(x,s) - d2(s,c_y)) / sum_s sum_o exp(-d2(x,s) - d2(s,c_o)) ).
    # object 0 (y = 0): s0 is 30 from the view and 30 from c0; s1 is 150 from the view and 150 from c0.
    num0 = e(-d2(30) - d2(30)) + e(-d2(150) - d2(150))
    den0 = e(-d2(30)) * (e(-d2(30)) + e(-d2(150)) + e(-d2(60))) + e(-d2(150)) * (e(-d2(150)) + e(-d2(30)) + e(-d2(120)))
    # object 1 (y = 2): s0 is 120 from the view and 60 from c2; s1 is 60 from the view and 120 from c2.
    num1 = e(-d2(120) - d2(60)) + e(-d2(60) - d2(120))
    den1 = e(-d2(120)) * (e(-d2(30)) + e(-d2(150)) + e(-d2(60))) + e(-d2(60)) * (e(-d2(150)) + e(-d2(30)) + e(-d2(120)))
    expected = (2 * -math.log(num0 / den0) + 2 * -math.log(num1 / den1)) / 4  # mean over the 4 views
    loss = with_centres(PICNNLoss(3, 2), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx(expected, rel=1e-6)


def test_pi_proxy_by_hand_leaves_the_true_category_out_of_the_denominator():
    views, view_set, labels, centres = tiny_batch()
    e = math.exp
    num0 = e(-d2(30) - d2(30)) + e(-d2(150) - d2(150))
    den0 = e(-d2(30)) * (e(-d2(150)) + e(-d2(60))) + e(-d2(150)) * (e(-d2(30)) + e(-d2(120)))  # no c0
    num1 = e(-d2(120) - d2(60)) + e(-d2(60) - d2(120))
    den1 = e(-d2(120)) * (e(-d2(30)) + e(-d2(150))) + e(-d2(60)) * (e(-d2(150)) + e(-d2(30)))  # no c2
    expected = (-math.log(num0 / den0) - math.log(num1 / den1)) / 2
    loss = with_centres(PIProxyLoss(3, 2), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx(expected, rel=1e-6)


def test_pi_cnn_and_pi_proxy_weights_by_hand():
    views, view_set, labels, centres = tiny_batch()
    e, a, b = math.exp, 0.5, 2.0
    num0 = e(-a * d2(30) - b * d2(30)) + e(-a * d2(150) - b * d2(150))
    den0 = e(-a * d2(30)) * (e(-b * d2(30)) + e(-b * d2(150)) + e(-b * d2(60))) + e(-a * d2(150)) * (
        e(-b * d2(150)) + e(-b * d2(30)) + e(-b * d2(120))
    )
    num1 = e(-a * d2(120) - b * d2(60)) + e(-a * d2(60) - b * d2(120))
    den1 = e(-a * d2(120)) * (e(-b * d2(30)) + e(-b * d2(150)) + e(-b * d2(60))) + e(-a * d2(60)) * (
        e(-b * d2(150)) + e(-b * d2(30)) + e(-b * d2(120))
    )
    expected = (-math.log(num0 / den0) - math.log(num1 / den1)) / 2
    loss = with_centres(PICNNLoss(3, 2, a=a, b=b), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx(expected, rel=1e-6)


def test_mv_proxy_by_hand():
    views, view_set, labels, centres = tiny_batch()
    e = math.exp
    # -log( exp(-d2(s, c_y)) / sum_{o != y} exp(-d2(s, c_o)) ) = d2(s, c_y) + log(sum_{o != y} exp(-d2(s, c_o)))
    object0 = d2(30) + math.log(e(-d2(150)) + e(-d2(60)))
    object1 = d2(120) + math.log(e(-d2(150)) + e(-d2(30)))
    loss = with_centres(MVProxyLoss(3, 2), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx((object0 + object1) / 2, rel=1e-6)


def test_mv_tc_by_hand():
    views, view_set, labels, centres = tiny_batch()
    # [d2(s, c_y) - min_{o != y} d2(s, c_o) + 1]+: object 0 nearest other centre c2 (60), object 1 c1 (30)
    object0 = max(0.0, d2(30) - d2(60) + 1)  # 2 - sqrt(3)
    object1 = max(0.0, d2(120) - d2(30) + 1)  # 2 + sqrt(3)
    loss = with_centres(MVTCLoss(3, 2), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx((object0 + object1) / 2, rel=1e-6)
    assert (object0 + object1) / 2 == pytest.approx(2.0)


def test_pi_tc_by_hand():
    views, view_set, labels, centres = tiny_batch()
    a, b, m = 0.2, 1.0, 1.0
    # [a d2(x, s_own) + b d2(s_own, c_y) - a min_{other s} d2(x, s) - b min_{o != y} d2(s_own, c_o) + m]+
    object0 = max(0.0, a * d2(30) + b * d2(30) - a * d2(150) - b * d2(60) + m)  # 2 - 1.4 sqrt(3) < 0: no loss
    object1 = max(0.0, a * d2(60) + b * d2(120) - a * d2(120) - b * d2(30) + m)  # 1.6 + sqrt(3)
    assert object0 == 0.0 and object1 == pytest.approx(1.6 + math.sqrt(3))
    loss = with_centres(PITCLoss(3, 2), centres)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx((2 * object0 + 2 * object1) / 4, rel=1e-6)


def test_mv_cnn_by_hand():
    views, view_set, labels, _ = tiny_batch()
    loss = MVCNNLoss(3, 2).eval()  # eval: no dropout
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]]))
        loss.classifier.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    pooled = torch.tensor([[2.0, 0.0], [0.0, -1.0]])  # the views' mean before normalisation
    e = math.exp
    # logits W p + bias: object 0 (2, 0.5, -2), category 0; object 1 (0, -0.5, -1), category 2
    object0 = -math.log(e(2) / (e(2) + e(0.5) + e(-2)))
    object1 = -math.log(e(-1) / (e(0) + e(-0.5) + e(-1)))
    assert float(loss(views, view_set, labels, pooled=pooled).detach()) == pytest.approx((object0 + object1) / 2, rel=1e-6)
    assert loss.dropout.p == 0.5  # VGG's dropout before the released classifier, active in training
    with pytest.raises(ValueError, match="pooled"):
        loss(views, view_set, labels)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", list(PIES_LOSSES))
def test_gradient_reaches_centres_and_embeddings(name):
    views, view_set, labels, centres = tiny_batch()
    loss = PIES_LOSSES[name](3, 2)
    pooled = None
    if name == "mv-cnn":
        pooled = torch.tensor([[2.0, 0.0], [0.0, -1.0]], requires_grad=True)
        loss.eval()
    else:
        with_centres(loss, centres)
    loss(views, view_set, labels, pooled=pooled).backward()
    if name == "mv-cnn":
        assert pooled.grad.abs().sum() > 0 and loss.classifier.weight.grad.abs().sum() > 0
        return
    assert loss.centres.grad.abs().sum() > 0
    assert view_set.grad.abs().sum() > 0
    if name.startswith("pi-"):
        assert views.grad.abs().sum() > 0
    else:  # MV- losses see the view set only
        assert views.grad is None


# ----------------------------------------------------------------------------- against the released loops


def released_loops(name: str, views, view_set, labels, centres, a: float, b: float, margin: float) -> float:
    """The released net.py training losses, loop for loop, on unit vectors and normalised centres."""
    x = views.reshape(-1, views.shape[-1])  # image_feature: (B*V, D), object-major
    num_views = views.shape[1]
    y = labels.repeat_interleave(num_views).tolist()
    num_classes = centres.shape[0]

    def dist(u, v):
        return torch.sum((u - v) ** 2)

    total = 0.0
    if name in ("pi-cnn", "pi-proxy"):
        for v in range(x.shape[0]):
            nominator, denominator = 0.0, 0.0
            for s in range(view_set.shape[0]):
                nominator += torch.exp(-a * dist(x[v], view_set[s]) - b * dist(view_set[s], centres[y[v]]))
                for o in range(num_classes):
                    if name == "pi-cnn" or o != y[v]:
                        denominator += torch.exp(-a * dist(x[v], view_set[s]) - b * dist(view_set[s], centres[o]))
            total += -(torch.log(nominator) - torch.log(denominator))
        return float(total / x.shape[0])
    if name == "pi-tc":
        for v in range(x.shape[0]):
            own = v // num_views
            to_own = dist(x[v], view_set[own])
            own_centre = dist(view_set[own], centres[y[v]])
            other_set = min(dist(x[v], view_set[s]) for s in range(view_set.shape[0]) if s != own)
            other_centre = min(dist(view_set[own], centres[o]) for o in range(num_classes) if o != y[v])
            total += torch.clamp(a * to_own + b * own_centre - a * other_set - b * other_centre + margin, min=0)
        return float(total / x.shape[0])
    for i in range(view_set.shape[0]):
        own_centre = dist(view_set[i], centres[labels[i]])
        others = [dist(view_set[i], centres[o]) for o in range(num_classes) if o != labels[i]]
        if name == "mv-proxy":
            total += -(torch.log(torch.exp(-own_centre)) - torch.log(sum(torch.exp(-d) for d in others)))
        else:  # mv-tc
            total += torch.clamp(own_centre - min(others) + margin, min=0)
    return float(total / view_set.shape[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["pi-cnn", "pi-proxy", "pi-tc", "mv-proxy", "mv-tc"])
def test_losses_equal_the_released_loops(name, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.relu(torch.randn(3, 4, 5, generator=generator)) + 0.05  # fc7 features are >= 0 (after the ReLU)
    views = F.normalize(features, dim=-1)
    view_set = F.normalize(features.mean(dim=1), dim=-1)
    labels = torch.tensor([1, 3, 1])
    weights = {"a": 0.7, "b": 1.3} if name.startswith("pi-") else {}
    loss = PIES_LOSSES[name](4, 5, **weights)
    with torch.no_grad():
        loss.centres.copy_(torch.randn(4, 5, generator=generator))
    centres = F.normalize(loss.centres.detach(), dim=-1)
    a, b, margin = weights.get("a", 1.0), weights.get("b", 1.0), 1.0
    expected = released_loops(name, views.double(), view_set.double(), labels, centres.double(), a, b, margin)
    assert float(loss(views, view_set, labels).detach()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_released_defaults():
    assert (PICNNLoss(2, 2).a, PICNNLoss(2, 2).b) == (1.0, 1.0)
    assert (PIProxyLoss(2, 2).a, PIProxyLoss(2, 2).b) == (1.0, 1.0)
    assert (PITCLoss(2, 2).a, PITCLoss(2, 2).b, PITCLoss(2, 2).margin) == (0.2, 1.0, 1.0)
    assert MVTCLoss(2, 2).margin == 1.0


def test_pi_tc_needs_two_objects_and_proxy_two_categories():
    views, view_set, labels, _ = tiny_batch()
    with pytest.raises(ValueError, match="two objects"):
        PITCLoss(3, 2)(views[:1], view_set[:1], labels[:1])
    with pytest.raises(ValueError, match="at least 2 categories"):
        PIProxyLoss(1, 2)


# ----------------------------------------------------------------------------- batches of whole objects


def test_object_batches_cover_every_object_once_per_epoch():
    rng = np.random.default_rng(0)
    epochs = [object_batches(10, 4, rng) for _ in range(2)]
    for batches in epochs:
        assert [len(batch) for batch in batches] == [4, 4, 2]
        assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))  # reshuffled every epoch
    # a lone last object joins the batch before it (PI-TC needs another object in its batch)
    assert [len(batch) for batch in object_batches(9, 4, rng)] == [4, 5]
    assert [len(batch) for batch in object_batches(9, 8, rng)] == [9]
    assert [len(batch) for batch in object_batches(1, 8, rng)] == [1]
    with pytest.raises(DataError, match="--batch-objects 0"):
        object_batches(5, 0, rng)


# ----------------------------------------------------------------------------- the released options per method


def test_methods_carry_the_released_batch_sizes_and_recipe():
    sizes = {name: METHODS[name].objects_per_batch for name in PIES_LOSSES}
    assert sizes == {"mv-cnn": 8, "pi-cnn": 4, "mv-proxy": 8, "pi-proxy": 4, "mv-tc": 8, "pi-tc": 8}
    pies = RECIPES["pies"].values
    assert (pies["lr"], pies["epochs"], pies["lr_step"], pies["early_stop_rho"]) == (1e-5, 40, 0, 0.0)


def test_train_config_resolves_the_released_options():
    config = TrainConfig(method="pi-tc", backbone="tiny")
    assert (config.pi_alpha, config.pi_beta, config.batch_objects, config.augmentation) == (0.2, 1.0, 8, "pies")
    config = TrainConfig(method="pi-cnn", backbone="vgg16", obj_dim=512)
    assert (config.pi_alpha, config.pi_beta, config.batch_objects, config.obj_dim) == (1.0, 1.0, 4, 4096)
    assert embedding_head(METHODS["pi-cnn"], "vgg16") == "vgg16_fc7"
    assert embedding_head(METHODS["pi-cnn"], "tiny") == "linear"
    assert embedding_head(METHODS["piro-dual"], "vgg16") == "linear"
    config = TrainConfig(method="mv-proxy", backbone="tiny", obj_dim=32)
    assert (config.pi_alpha, config.batch_objects, config.obj_dim) == (None, 8, 32)
    assert TrainConfig().augmentation == "piro" and TrainConfig().batch_objects is None
    with pytest.raises(PiroError, match="pi_alpha: only pi-cnn, pi-proxy, pi-tc"):
        TrainConfig(method="mv-tc", pi_alpha=1.0)
    with pytest.raises(PiroError, match="batch_objects: piro-dual trains on pairs"):
        TrainConfig(method="piro-dual", batch_objects=4)
    with pytest.raises(PiroError, match="augmentation 'flip'"):
        TrainConfig(method="pi-tc", augmentation="flip")


# ----------------------------------------------------------------------------- the fc7 embedding


def test_vgg16_fc7_head_takes_fc6_and_fc7_of_the_imagenet_classifier(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    shapes = {"0.weight": (8, 12), "0.bias": (8,), "3.weight": (8, 8), "3.bias": (8,), "6.weight": (5, 8), "6.bias": (5,)}
    released = {f"classifier.{k}": torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    released["features.0.weight"] = torch.randn(4, 3, 3, 3, generator=generator)
    monkeypatch.setattr(backbones, "_load_url_state_dict", lambda url, name: released)
    head = backbones.vgg16_fc7_head(True, in_dim=12, dim=8)
    assert [type(layer).__name__ for layer in head] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert head[2].p == 0.5
    assert torch.equal(head[0].weight, released["classifier.0.weight"]) and torch.equal(
        head[3].bias, released["classifier.3.bias"]
    )
    # fc7 after its ReLU, written out from VGG-16's classifier[0:5] (dropout off in eval)
    features = torch.randn(2, 12, generator=generator)
    fc6 = torch.relu(features @ released["classifier.0.weight"].t() + released["classifier.0.bias"])
    fc7 = torch.relu(fc6 @ released["classifier.3.weight"].t() + released["classifier.3.bias"])
    assert torch.allclose(head.eval()(features), fc7, atol=1e-6)


def test_pan_with_the_fc7_head_embeds_the_normalised_fc7_features(monkeypatch):
    monkeypatch.setattr(pan_module, "build_backbone", lambda name, pretrained: backbones.Backbone(torch.nn.Identity(), 12, name))
    monkeypatch.setattr(pan_module, "vgg16_fc7_head", lambda pretrained: backbones.vgg16_fc7_head(pretrained, in_dim=12, dim=8))
    config = PANConfig(backbone="vgg16", pretrained=False, dual=False, obj_dim=4096, aggregation="mean", head="vgg16_fc7")
    model = PAN(config).eval()
    assert PANConfig.from_dict(config.to_dict()) == config  # the checkpoint's model config says fc7
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules() if m not in set(model.obj_head.modules()))
    feats = torch.randn(2, 3, 12)
    fc7 = model.obj_head(feats)
    out = model.forward_features(feats)
    assert torch.allclose(out.sv_obj, F.normalize(fc7, dim=-1), atol=1e-6)
    assert torch.allclose(out.pooled_obj, fc7.mean(dim=1), atol=1e-6)
    assert torch.allclose(out.mv_obj, F.normalize(fc7.mean(dim=1), dim=-1), atol=1e-6)


@pytest.mark.parametrize(
    "overrides", [{"backbone": "tiny"}, {"dual": True}, {"obj_dim": 512}], ids=["backbone", "dual", "obj_dim"]
)
def test_fc7_head_only_on_vgg16_with_one_4096_d_space(overrides):
    values = {"backbone": "vgg16", "dual": False, "obj_dim": 4096, "aggregation": "mean", "head": "vgg16_fc7", **overrides}
    with pytest.raises(PiroError, match="head vgg16_fc7 needs backbone vgg16"):
        PANConfig(**values)


# ----------------------------------------------------------------------------- the PIEs augmentation


def test_pies_augmentation_is_a_resized_crop_and_flip_seeded_by_the_generator():
    pies = augment_module.build_augmentation("pies")
    assert isinstance(pies, augment_module.PIEsAugment)
    transform = pies.transform_for(32, 32)
    crop, flip = transform.transforms
    assert crop.size == (32, 32) and crop.scale == (0.8, 1.0) and flip.p == 0.5
    views = torch.randn(2, 3, 3, 32, 32)
    first = pies(views, torch.Generator().manual_seed(5))
    assert first.shape == views.shape and not torch.equal(first, views)
    assert torch.equal(first, pies(views, torch.Generator().manual_seed(5)))
    with pytest.raises(PiroError, match="augmentation 'blur'"):
        augment_module.build_augmentation("blur")
