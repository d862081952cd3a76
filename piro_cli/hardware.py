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


def training_threads(freeze_backbone: bool, available: int) -> int:
    """Torch threads for CPU training steps, by the kind of a step's work.

    Steps on cached features (--freeze-backbone) are many small ops, where torch's thread pool mostly spin-waits:
    one thread (15x faster per step when the two cores were shared, docs/BENCHMARKS.md). Steps through backbone
    layers (full fine-tuning, --train-from) are convolutions that split across cores: every thread.
    """
    return 1 if freeze_backbone else available
