"""Issue #11, everything piro writes: a full disk, a second process, a bad output path, SIGTERM, stale temporary files.

Each case leaves one clear line and a non-zero exit, no temporary file, and the old output intact. A full disk is
simulated with RLIMIT_FSIZE (writes past the limit fail with EFBIG, SIGXFSZ ignored): in a subprocess where the code
before the fix crashed (HDF5), in this process where it only raised.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.outputs import OutputLock
from piro_cli.runs import MetricsLog
from piro_cli.training import train

runner = CliRunner()
PIRO = [sys.executable, "-m", "piro_cli"]
SMALL_PREPARE = ["--size", "16", "--categories", "2", "--objects-per-category", "2"]


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A one-epoch tiny run (no validation split, so best.pt is written every epoch)."""
    project = tmp_path_factory.mktemp("trained") / "runs"
    return train(tiny_config(tiny_data, epochs=1, project=str(project), name="exp")).run_dir


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """The trained run, copied to ./runs/exp of this test's folder (tests that write into it)."""
    return Path(shutil.copytree(trained_run, tmp_path / "runs" / "exp"))


def invoke(argv: list) -> object:
    result = runner.invoke(app, [str(a) for a in argv], env={"COLUMNS": "300"})
    assert "Traceback" not in result.output
    return result


def one_line_error(result) -> str:
    """The error a command printed: exit 1, no exception but the CLI's exit, one `error:` line."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden files piro may leave: temporary files and lock files."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@contextmanager
def file_size_limit(nbytes: int):
    """Files in this process cannot grow past `nbytes`: a write beyond fails with EFBIG, like a full disk."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def run_limited(argv: list, nbytes: int) -> subprocess.CompletedProcess:
    """`python -m piro_cli ARGV` in a process whose files cannot grow past `nbytes`."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return subprocess.run(
        PIRO + [str(a) for a in argv],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"COLUMNS": "300"},
    )


def assert_one_line_from_process(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


# ----------------------------------------------------------------------------- 4. disk full


def test_prepare_on_a_full_disk_says_so_and_keeps_the_old_file(tmp_path):
    """It segfaulted (exit 139) with 1.5 MB of HDF5 tracebacks and left its temporary file."""
    out = tmp_path / "x.h5"
    out.write_bytes(b"the old file")
    # 20 objects x 12 views x 16x16x3 bytes = 180 KiB of images: past the 64 KiB limit
    done = run_limited(["prepare", "synthetic", "--out", out, "--overwrite", "--size", "16", "--categories", "2",
                        "--objects-per-category", "10"], 64 << 10)  # fmt: skip
    assert_one_line_from_process(done, "disk full writing", str(out), "free space or pass --out elsewhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    assert out.read_bytes() == b"the old file"


def test_train_on_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(run_copy):
    last, best = (run_copy / "last.pt").read_bytes(), (run_copy / "best.pt").read_bytes()
    stale = run_copy / f".last.pt.tmp-{dead_pid()}"  # what a killed run leaves
    stale.write_bytes(b"half a checkpoint")
    with file_size_limit(100 << 10):  # config.json and metrics.csv fit, best.pt (~270 KiB) does not
        result = invoke(["train", "--resume", run_copy, "--epochs", "2"])
    line = one_line_error(result)
    assert "disk full writing" in line and "best.pt" in line and f"piro train --resume {run_copy}" in line
    assert (run_copy / "last.pt").read_bytes() == last and (run_copy / "best.pt").read_bytes() == best
    assert leftovers(run_copy) == []  # nor the stale temporary file: the run's lock removed it


def test_embed_on_a_full_disk_says_so(trained_run, tiny_data, tmp_path):
    out = tmp_path / "e.h5"
    done = run_limited(["embed", trained_run, "--data", tiny_data, "--split", "train,test", "--out", out], 16 << 10)
    assert_one_line_from_process(done, "disk full writing", str(out))
    assert list(tmp_path.iterdir()) == []


def test_evaluate_out_on_a_full_disk_says_so(trained_run, tiny_data):
    argv = ["evaluate", trained_run, "--data", tiny_data, "--no-save", "--task", "sv-object-retrieval", "--out", "r.json"]
    assert invoke(argv).exit_code == 0  # warms every cache (numba) outside the limit
    Path("r.json").write_text("old results")
    with file_size_limit(64):
        line = one_line_error(invoke(argv))
    assert "disk full writing r.json" in line
    assert Path("r.json").read_text() == "old results" and leftovers(Path(".")) == []


SWEEP = """
import os, resource, signal, sys
import numpy as np
import torch
from piro_cli.data.store import StoreWriter
from piro_cli.errors import PiroError
from piro_cli.models.embedding import EmbeddingSet
from piro_cli.inference.embedding import EmbeddedGroup
from piro_cli.inference.embeddings_file import write_embeddings

def store():
    views = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    with StoreWriter("x.h5", categories=["a", "b"], num_views=12, image_size=16, source_dataset="t",
                     creation_options={}) as writer:
        for i in range(30):
            writer.append("train" if i % 3 else "test", views, i % 2, f"object {i}", f"path {i}")
        writer.commit()

def embeddings():
    n, v, d = 40, 12, 16
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=-1)
    groups = {
        split: EmbeddedGroup(
            EmbeddingSet(unit(n, v, d), unit(n, v, d), unit(n, d), unit(n, d), unit(n, d), unit(n, d), torch.arange(n) % 2),
            [f"object {i}" for i in range(n)], np.arange(n), split,
        )
        for split in ("train", "test")
    }
    write_embeddings("x.h5", groups, ["a", "b"], {"checkpoint": "c.pt", "model_config": {"dual": True}})

torch.manual_seed(0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for kib in map(int, sys.argv[1:]):
    for writer in (store, embeddings):
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib << 10, hard))
        try:
            writer()
            print(kib, "wrote")
        except PiroError as exc:
            print(kib, exc)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        print(kib, "left", sorted(os.listdir(".")), flush=True)
"""


def test_hdf5_writers_fail_cleanly_wherever_the_disk_fills(tmp_path):
    """HDF5 reads back what it wrote: a write lost to a full disk must not come back as zeros (a segfault)."""
    limits = list(range(1, 140, 3))  # KiB; the files are 150 KiB (embeddings) and 280 KiB (views)
    done = subprocess.run([sys.executable, "-c", SWEEP, *map(str, limits)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stdout[-1000:], done.stderr[-3000:])
    lines = done.stdout.splitlines()
    assert len(lines) == 4 * len(limits), done.stdout
    for kib, outcome, left in zip([k for k in limits for _ in range(2)], lines[0::2], lines[1::2], strict=True):
        assert outcome.startswith(f"{kib} disk full writing x.h5 (File too large)"), outcome
        assert left == f"{kib} left []", left


# ----------------------------------------------------------------------------- 5. locks, 8. SIGTERM


def test_a_second_prepare_refuses_and_sigterm_cleans_up(tmp_path):
    """Two prepares to one --out both reported "wrote"; SIGTERM was not handled and left the temporary file."""
    out = tmp_path / "x.h5"
    out.write_bytes(b"the old file")
    first = subprocess.Popen(
        PIRO + ["prepare", "synthetic", "--out", str(out), "--overwrite", "--size", "96", "--objects-per-category", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        temp = tmp_path / f".x.h5.tmp-{first.pid}"
        deadline = time.monotonic() + 300
        while not temp.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temp.exists(), "the first prepare started no output within 300 s"
        line = one_line_error(invoke(["prepare", "synthetic", "--out", out, "--overwrite", *SMALL_PREPARE]))
        assert f"{out} is being written by piro (PID {first.pid})" in line
        assert first.poll() is None, "the first prepare finished before it could be stopped"
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143 and "Traceback" not in stderr and "terminated" in stderr, stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    assert out.read_bytes() == b"the old file"


def test_a_run_being_trained_refuses_a_second_resume(run_copy):
    """Two `piro train --resume` of one run duplicated every metrics.csv row."""
    metrics = (run_copy / "metrics.csv").read_bytes()
    with OutputLock(run_copy, folder=True):
        line = one_line_error(invoke(["train", "--resume", run_copy, "--epochs", "2"]))
    assert f"{run_copy} is being written by piro (PID {os.getpid()}); wait for it or stop it" in line
    assert (run_copy / "metrics.csv").read_bytes() == metrics and leftovers(run_copy) == []


@pytest.mark.parametrize("command", ["embed", "evaluate"])
def test_an_output_being_written_refuses_a_second_writer(command, trained_run, tiny_data):
    out = Path("out.h5" if command == "embed" else "out.json")
    with OutputLock(out):
        line = one_line_error(invoke([command, trained_run, "--data", tiny_data, "--out", out]))
    assert f"{out} is being written by piro (PID {os.getpid()})" in line
    assert not out.exists()


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    stale = tmp_path / f".x.h5.tmp-{dead_pid()}"
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / f".y.h5.tmp-{dead_pid()}"  # another output's, of a dead process too: removed as well (issue #30)
    other.write_bytes(b"y")
    alive = subprocess.Popen(["sleep", "60"])
    try:
        busy = tmp_path / f".x.h5.tmp-{alive.pid}"  # a live process's: kept
        busy.write_bytes(b"z")
        assert invoke(["prepare", "synthetic", "--out", tmp_path / "x.h5", *SMALL_PREPARE]).exit_code == 0
    finally:
        alive.kill()
        alive.wait()
    assert not stale.exists() and not other.exists() and busy.exists()


# ----------------------------------------------------------------------------- 7. output paths


@pytest.mark.parametrize("command", ["prepare", "embed", "evaluate", "compare", "train"])
def test_an_output_under_a_regular_file_is_refused_before_any_work(command, trained_run, tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = {
        "prepare": ["prepare", "synthetic", "--out", blocker / "x.h5", *SMALL_PREPARE],
        "embed": ["embed", trained_run, "--data", tiny_data, "--out", blocker / "e.h5"],
        "evaluate": ["evaluate", trained_run, "--data", tiny_data, "--no-save", "--out", blocker / "r.json"],
        # the run recorded no validation numbers: the path is refused before that is found out
        "compare": ["compare", trained_run, "--out", blocker / "c.csv"],
        "train": ["train", "--data", tiny_data, "--backbone", "tiny", "--project", blocker / "runs"],
    }[command]
    line = one_line_error(invoke(argv))
    assert f"{blocker} is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("command", ["prepare", "embed"])
def test_an_out_naming_a_folder_is_refused_before_any_work_even_with_overwrite(command, trained_run, tiny_data, tmp_path):
    folder = tmp_path / "a-folder.h5"
    folder.mkdir()
    argv = {
        "prepare": ["prepare", "synthetic", "--out", folder, "--overwrite", *SMALL_PREPARE],
        "embed": ["embed", trained_run, "--data", tiny_data, "--out", folder, "--overwrite"],
    }[command]
    line = one_line_error(invoke(argv))
    assert f"--out {folder}: is a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_an_out_in_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = one_line_error(invoke(["prepare", "synthetic", "--out", folder / "x.h5", *SMALL_PREPARE]))
    finally:
        folder.chmod(stat.S_IRWXU)
    assert f"no permission to write in {folder}" in line


# ----------------------------------------------------------------------------- also


def test_best_checkpoint_has_no_optimiser_state_and_resume_needs_last(run_copy):
    best = torch.load(run_copy / "best.pt", weights_only=True)
    last = torch.load(run_copy / "last.pt", weights_only=True)
    training_state = {"optimizer_state", "scheduler_state", "rng"}
    assert training_state <= set(last) and not training_state & set(best)
    assert set(best) == set(last) - training_state
    assert all(torch.equal(best["model_state"][k], last["model_state"][k]) for k in last["model_state"])
    line = one_line_error(invoke(["train", "--resume", run_copy / "best.pt"]))
    assert "no optimiser state" in line and f"piro train --resume {run_copy}" in line


def test_a_replaced_file_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    """A power loss after the rename must not leave a renamed empty file: the data, then the rename, reach the disk."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    MetricsLog(tmp_path / "metrics.csv").append({"epoch": 1, "loss": 0.5})
    assert synced == ["file", "folder"]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,loss", "1,0.5"]
