"""Tiny generated datasets for the tests: a few objects, a few views, small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import piro_cli.losses.total as total_module
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.training import TrainConfig

OBJECTPI_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "objectpi"


def write_image(path: Path, seed: int, size: int = 40, fmt: str | None = None) -> np.ndarray:
    """A random but deterministic RGB image; returns its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def make_image_tree(
    root: Path,
    layout: dict[str, dict[str, int]],
    views: int = 4,
    name_view=lambda obj, k: f"{obj}_View{k}.png",
) -> Path:
    """root/<split>/<category>/<object>/<view files>; layout = {split: {category: number of objects}}."""
    seed = 0
    for split, categories in layout.items():
        for category, count in categories.items():
            for i in range(count):
                obj = f"{category} obj{i}"
                for k in range(1, views + 1):
                    seed += 1
                    write_image(root / split / category / obj / name_view(obj, k), seed)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic set of 3 categories x 5 objects (1 per category in test), 32 px views; one per test module. The easy
    difficulty (fixed cameras and light, white background): tests that check that losses fall in a few steps of the
    tiny backbone need objects that differ."""
    path = tmp_path_factory.mktemp("data") / "synthetic.h5"
    prepare_dataset(
        "synthetic",
        None,
        path,
        PrepareOptions(size=32),
        {"seed": 0, "categories": 3, "objects_per_category": 5, "test_fraction": 0.2, "difficulty": "easy"},
    )
    return path


def tiny_config(data: Path | None, **overrides) -> TrainConfig:
    """A seconds-long CPU training config on `data` with the tiny backbone; `overrides` replace any option."""
    values = dict(
        data=str(data) if data else None, backbone="tiny", pretrained=False, cat_dim=16, obj_dim=16, epochs=2, batch_pairs=4,
        pairs_per_object=2, lr=1e-3, seed=0, device="cpu", early_stop_rho=0.0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return make_image_tree(tmp_path / "raw", {"train": {"Mug": 2, "Chair (Toy)": 3}, "test": {"Mug": 2, "Chair (Toy)": 2}})


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own empty folder, so defaults like ./data/<name>.h5 never touch the repo."""
    monkeypatch.chdir(tmp_path)


def poison_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loss becomes NaN, as a diverged training's does."""
    original = total_module.PiroLoss.forward

    def poisoned(self, out_a, out_b, labels, **kwargs):
        losses = original(self, out_a, out_b, labels, **kwargs)
        losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(total_module.PiroLoss, "forward", poisoned)
