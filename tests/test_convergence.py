"""The progress statistic (d_intra_max, d_inter_min, rho) and the early-stop rule, against the released procedure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import piro_cli.training.trainer as train_module
from piro_cli.convergence import Spread, object_spread, should_stop
from piro_cli.data.store import ViewSetStore, normalize_views
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.runs import load_checkpoint
from piro_cli.training import train


def released_stats(embeddings: torch.Tensor, labels: list[int]) -> tuple[float, float, float]:
    """calculate_stats of the released utils/DataUtility_PiRO.py, written out: per object the max over its own
    view pairs, and the min over the other objects of its category of the mean over view pairs; both averaged.
    Objects alone in their category (which the released code cannot handle) are left out, as piro does."""
    intra, inter = [], []
    for i, label in enumerate(labels):
        others = [j for j, other in enumerate(labels) if other == label and j != i]
        if not others:
            continue
        intra.append(torch.cdist(embeddings[i], embeddings[i]).max().item())
        inter.append(min(torch.cdist(embeddings[i], embeddings[j]).mean().item() for j in others))
    d_intra, d_inter = float(np.mean(intra)), float(np.mean(inter))
    return d_intra, d_inter, d_inter / d_intra


def test_spread_by_hand_mean_over_view_pairs_not_closest_views():
    # 1-D embeddings, 2 views each. Category 0: A (0, 2), B (3, 9), C (5, 5). Category 1: D (0, 0), E (10, 14),
    # D sitting on A to show that other categories never count. Category 2: F alone.
    emb = torch.tensor([[0, 2], [3, 9], [5, 5], [0, 0], [10, 14], [1, 2]], dtype=torch.float32)[..., None]
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    # d_intra_max: A 2, B 6, C 0, D 0, E 4 (F left out)                                  -> mean 12/5
    # mean view-pair distances: A-B (3+9+1+7)/4 = 5, A-C (5+5+3+3)/4 = 4, B-C (2+2+4+4)/4 = 3, D-E (10+14+10+14)/4 = 12
    # d_inter_min: A min(5, 4) = 4, B min(5, 3) = 3, C min(4, 3) = 3, D 12, E 12         -> mean 34/5
    spread = object_spread(emb, labels)
    assert spread.d_intra_max == pytest.approx(12 / 5)
    assert spread.d_inter_min == pytest.approx(34 / 5)
    assert spread.rho == pytest.approx(34 / 12)
    # the closest pair of views would give A 1 (2 to 3), B 1, C 2: a different, smaller d_inter_min
    assert spread.d_inter_min != pytest.approx((1 + 1 + 2 + 10 + 10) / 5)


@pytest.mark.parametrize(("views", "block"), [(8, 1 << 24), (12, 50), (3, 1)])
def test_spread_matches_the_released_procedure_on_random_embeddings(views, block):
    generator = torch.Generator().manual_seed(views)
    labels = [0] * 7 + [1] * 3 + [2] + [3] * 2  # category 2 has a single object
    emb = torch.randn(len(labels), views, 5, generator=generator)
    spread = object_spread(emb, torch.tensor(labels), block_elements=block)  # small blocks: several per category
    expected = released_stats(emb, labels)
    assert (spread.d_intra_max, spread.d_inter_min, spread.rho) == pytest.approx(expected, rel=1e-6)


def test_spread_limits():
    one_view = torch.tensor([[[0.0]], [[3.0]]])  # a single view per object: d_intra_max 0, rho infinite
    spread = object_spread(one_view, torch.tensor([0, 0]))
    assert (spread.d_intra_max, spread.d_inter_min, spread.rho) == (0.0, 3.0, math.inf)
    alone = object_spread(torch.zeros(2, 3, 4), torch.tensor([0, 1]))  # nobody has a same-category partner
    assert all(math.isnan(v) for v in (alone.d_intra_max, alone.d_inter_min, alone.rho))
    assert should_stop(Spread(1, 2, 2.0), 1.5) and not should_stop(Spread(1, 1, 1.0), 1.5)
    assert not should_stop(Spread(1, 2, 2.0), 0.0) and not should_stop(alone, 1.5)


def read_rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_training_stops_one_epoch_after_rho_crosses(tiny_data, monkeypatch):
    # rho of the model before epoch 1, before epoch 2 (= after epoch 1), ...: it crosses 1.5 before epoch 2,
    # so epoch 2 still trains and the run stops after it, as the released loop does
    sequence = iter([0.5, 2.0, 0.1, 0.1, 0.1])
    monkeypatch.setattr(train_module, "object_spread", lambda sv_obj, labels: Spread(1.0, 1.0, next(sequence)))
    result = train(tiny_config(tiny_data, epochs=5, early_stop_rho=1.5, freeze_backbone=True, feature_passes=1))
    assert result.epochs_done == 2
    assert result.stop_reason == "early stop: rho 2.000 > 1.5 before epoch 2, stopped after it"
    assert [float(r["rho"]) for r in read_rows(result.run_dir)] == [0.5, 2.0]  # metrics.csv: rho before each epoch
    assert load_checkpoint(result.last_path)["epoch"] == 2


def test_metrics_rows_hold_the_statistic_of_the_model_before_the_epoch(tiny_data):
    """Row 2 is the statistic of the model after epoch 1: the last.pt of a 1-epoch run with the same seed."""
    two = train(tiny_config(tiny_data, epochs=2, name="two"))
    one = train(tiny_config(tiny_data, epochs=1, name="one"))
    checkpoint = load_checkpoint(one.last_path)
    model = PAN(PANConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    split = ViewSetStore(tiny_data).split("train")
    with torch.no_grad():  # un-augmented views, eval mode, as the released calculate_stats
        views = normalize_views(np.stack([split.views_uint8(i) for i in range(len(split))]), torch.device("cpu"))
        sv_obj = model(views).sv_obj
    expected = released_stats(sv_obj, split.category.tolist())
    row = read_rows(two.run_dir)[1]
    assert int(row["epoch"]) == 2
    got = (float(row["d_intra_max"]), float(row["d_inter_min"]), float(row["rho"]))
    assert got == pytest.approx(expected, rel=1e-5)  # metrics.csv keeps 6 significant digits
