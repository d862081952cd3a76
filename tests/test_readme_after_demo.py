"""A new user's path (issue #25): `piro demo`, then the commands it prints, then the README's evaluation and
deployment commands on the run they made, each typed exactly as printed. Only the demo is made small (a tiny
backbone, a small synthetic set); photos a command names (mug1.jpg, new-stock/) are written from the data first,
as a user would bring their own."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


def readme_block(heading: str) -> list[str]:
    """The `piro ...` command lines of the first bash block under a README heading, comments dropped."""
    text = README.read_text()
    section = text[text.index(f"## {heading}\n") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    return [shlex.join(shlex.split(line, comments=True)) for line in block.splitlines() if line.startswith("piro ")]


def run(command: str) -> str:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "piro"
    expanded = [match for arg in argv[1:] for match in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
    result = runner.invoke(app, expanded, env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{command}\n{result.output}"
    assert "Traceback" not in result.output
    return result.output


def write_photos(store: ViewSetStore, row: int, names: list[str]) -> None:
    views = store.split("test").views_uint8(row)
    for view, name in zip(views, names, strict=False):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(view)).save(name)


def test_the_readme_after_the_demo_runs_as_printed():
    demo = run("piro demo --categories 3 --objects-per-category 8 --size 32 --backbone tiny --epochs 1")
    printed = re.search(r"next: .*", demo.replace("\n", " ")).group(0)
    commands = re.findall(r"`(piro [^`]+)`", printed)
    assert [c.split()[1] for c in commands] == ["train", "compare"], printed
    for command in commands:  # train on the demo's data (the measured CPU path here), then compare the demo's runs
        run(command)
    assert Path("runs/exp/best.pt").is_file()

    evaluating = [c for c in readme_block("Evaluating and embedding") if "runs/exp" in c and "--images" not in c]
    assert len(evaluating) >= 8
    for command in evaluating:
        run(command)
    run("piro evaluate emb.h5")  # what the embed line's comment promises

    store = ViewSetStore("piro-demo/synthetic.h5")
    write_photos(store, 0, ["mug1.jpg", "mug2.jpg", "mug3.jpg"])
    write_photos(store, 1, ["photo.jpg", "a.jpg", "b.jpg"])
    write_photos(store, 2, [f"new-stock/cup/cup-{k}/{k}.jpg" for k in range(3)])
    # export, --onnx and serve: tests/test_serving.py and tests/test_service.py (serve runs until stopped)
    deploying = [c for c in readme_block("Deploying") if not c.startswith(("piro export", "piro serve")) and "--onnx" not in c]
    assert [c.split()[1:3] for c in deploying][:2] == [["index", "build"], ["index", "calibrate"]]
    for command in deploying:
        run(command)
    assert Path("shop.piro-index/index.json").is_file() and Path("cal.png").is_file()


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
