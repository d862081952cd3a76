"""`piro train --ema-decay`: the moving average of the trained weights (piro_cli/training/averaging.py) against a
hand computation, and in training: what is validated is what is saved, and a resumed run goes on exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.retrieval.picr import TASKS
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train
from piro_cli.training.averaging import WeightAverage
from piro_cli.training.config import method_label


def test_the_average_follows_the_weights_as_computed_by_hand():
    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # not trained: not averaged
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    average = WeightAverage(model, decay=0.75)
    assert list(average.average) == ["weight"]
    for new in ([[5.0, 2.0]], [[1.0, 10.0]]):
        with torch.no_grad():
            model.weight.copy_(torch.tensor(new))
        average.update()
    # 0.75 * (0.75 * [1, 2] + 0.25 * [5, 2]) + 0.25 * [1, 10] = 0.75 * [2, 2] + [0.25, 2.5] = [1.75, 4]
    torch.testing.assert_close(average.average["weight"], torch.tensor([[1.75, 4.0]]))
    with average.averaged():
        torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.75, 4.0]]))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, 10.0]]))  # the raw weights come back
    with pytest.raises(ValueError, match="decay 1"):
        WeightAverage(model, decay=1.0)


def test_validated_saved_and_evaluated_weights_are_the_average(tiny_data):
    run = train(tiny_config(tiny_data, epochs=2, val_fraction=0.25, ema_decay=0.9, name="ema"))
    last = load_checkpoint(run.last_path)
    raw = last["raw_state"]
    assert raw and any(not torch.equal(raw[k], last["model_state"][k]) for k in raw)  # the average is not the raw
    assert "raw_state" not in load_checkpoint(run.best_path)
    recorded = load_checkpoint(run.best_path)["metrics"]
    again = evaluate([run.best_path], split="val", save=False, tasks=list(TASKS)).runs[0].values
    assert np.allclose([again[t] for t in TASKS], [recorded[f"val_{t}"] for t in TASKS], atol=1e-4)
    plain = load_checkpoint(train(tiny_config(tiny_data, epochs=2, val_fraction=0.25, name="plain")).last_path)
    # the same training steps: the raw weights of the averaged run are the plain run's weights
    for key in raw:
        torch.testing.assert_close(raw[key], plain["model_state"][key], msg=key)
    assert method_label(last["train_config"]) == "piro-dual+ema=0.9"


def test_a_resumed_averaged_run_goes_on_exactly(tiny_data):
    whole = load_checkpoint(train(tiny_config(tiny_data, epochs=2, ema_decay=0.8, name="whole")).last_path)
    first = train(tiny_config(tiny_data, epochs=1, ema_decay=0.8, name="split"))
    resumed = load_checkpoint(train(TrainConfig(), resume=first.run_dir, resume_epochs=2).last_path)
    for part in ("model_state", "raw_state"):
        for key in whole[part]:
            torch.testing.assert_close(whole[part][key], resumed[part][key], msg=f"{part} {key}")


def test_a_decay_outside_zero_to_one_is_refused():
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(PiroError, match=r"ema_decay"):
            tiny_config(Path("none.h5"), ema_decay=bad)
