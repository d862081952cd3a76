"""What the machine offers the training and inference code: devices, CPU precision support, thread counts."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX, via oneDNN), so bf16 matmuls run faster than
    fp32; on other CPUs (e.g. AVX2-only) bf16 is emulated and slower, so piro keeps fp32 there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_threads(freeze_backbone: bool, cat_dim: int | None, obj_dim: int | None, dual: bool, available: int) -> int:
    """Torch threads for CPU training steps, by the size of a step's work.

    Steps on cached features with small heads are many tiny ops, where torch's thread pool mostly spin-waits (15x
    slower per step when the two cores were shared, docs/BENCHMARKS.md): one thread. Heads of the paper's size
    (2048-d attention) and steps through backbone layers (full fine-tuning, --train-from) are large matrix products
    that split well across cores: every thread.
    """
    if not freeze_backbone:
        return available
    widest = max(obj_dim or 0, (cat_dim or 0) if dual else 0)
    return available if widest >= LARGE_HEAD_DIM else 1


LARGE_HEAD_DIM = 1024  # heads at least this wide count as large work (bench/bench_head_step.py)
