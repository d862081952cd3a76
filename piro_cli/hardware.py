"""What the machine offers the training and inference code: devices, CPU precision support, thread counts."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in each function: `keep_freed_memory` runs at start-up, before torch is needed
    import torch

from piro_cli.errors import PiroError


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX, via oneDNN), so bf16 matmuls run faster than
    fp32; on other CPUs (e.g. AVX2-only) bf16 is emulated and slower, so piro keeps fp32 there."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def bf16_matmul_speedup() -> float:
    """float32 time / bf16 time of one (256 x 1024) @ (1024 x 8192) product on this CPU (best of 3 each, after a
    warm-up); 0 where bf16 is not native. Measured once per process (about 0.1 s) because the instruction flags
    alone do not say how fast a CPU's bf16 path is."""
    import torch

    if not cpu_has_native_bf16():
        return 0.0
    import time

    a, b = torch.randn(256, 1024), torch.randn(1024, 8192)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        torch.matmul(x, y)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            torch.matmul(x, y)
            best = min(best, time.perf_counter() - started)
        timings[dtype] = best
    return timings[torch.float32] / max(timings[torch.bfloat16], 1e-9)


LARGE_HEAD_DIM = 2048  # the paper's heads: measured faster on every thread of an idle CPU (docs/BENCHMARKS.md)


def training_threads(freeze_backbone: bool, widest_head: int, available: int) -> int:
    """Torch threads for CPU training steps, by the size of a step's work (bench/bench_head_step.py).

    Steps on cached features with small heads are many small ops: one thread (on an idle 2-core machine 2 threads
    gain only 1.14x at 256/512, and on a shared one torch's spin-waiting pool made them 4-15x slower). Heads of
    the paper's 2048 dimensions (1.45x faster on 2 idle threads) and steps through backbone layers (full
    fine-tuning, --train-from) are large products that split across cores: every thread.
    """
    if not freeze_backbone or widest_head >= LARGE_HEAD_DIM:
        return available
    return 1


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let the process keep the memory torch frees on the CPU for its next tensors (glibc only; a no-op elsewhere).

    By default glibc serves each large tensor (a batch's activations: 100 MB at 64 views of 224 px) with a fresh
    mmap and returns it on free, so every batch pays again for zeroing its pages: on ObjectPI a backbone pass
    spent twice its compute time in page faults (bench/bench_malloc.py, docs/BENCHMARKS.md). Serving them from
    the heap and never trimming it keeps the pages mapped; the process holds on to its peak memory instead.
    Returns True when the setting took effect. Process-wide: the CLI calls it once at start.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def pick_device(requested: str | None) -> torch.device:
    """The device asked for (`--device cpu|cuda|cuda:N`); None: the GPU when there is one, else the CPU."""
    import torch

    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise PiroError(f"--device {requested!r}: not a device name (use cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PiroError(f"--device {requested}: no CUDA GPU is available here; use --device cpu")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""`--precision`: auto is mixed precision on CUDA (bf16 where supported, else fp16) and fp32 on a CPU; fp32 is full
float32 with TF32 off (the released code's arithmetic); bf16 and fp16 are autocast to that type on any device."""


def check_precision(precision: str, option: str = "--precision") -> str:
    """`precision` as one of PRECISIONS (case and surrounding spaces as typed are accepted), else a PiroError."""
    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise PiroError(f"{option} {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return value


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """fp32, bf16 or fp16: what `precision` computes in on `device`."""
    import torch

    value = check_precision(precision)
    if value != "auto":
        return value
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """The arithmetic of `precision` (PRECISIONS) on `device` for the code inside."""
    import torch

    resolved = resolve_precision(device, precision)
    if resolved != "fp32":
        with torch.autocast(device.type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16):
            yield
        return
    if device.type != "cuda":
        with torch.autocast(device.type, enabled=False):
            yield
        return
    # fp32 on a GPU: no TF32 in matmuls or convolutions either (cuDNN allows it by default)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
