"""What piro_cli.hardware sets for the machine: CPU threads by the size of the work, and the allocator setting."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from piro_cli.hardware import LARGE_HEAD_DIM, keep_freed_memory, training_threads


def test_threads_follow_the_size_of_the_work():
    assert training_threads(freeze_backbone=True, widest_head=512, available=8) == 1  # many small ops
    assert training_threads(freeze_backbone=True, widest_head=LARGE_HEAD_DIM, available=8) == 8  # the paper's 2048-d heads
    assert training_threads(freeze_backbone=False, widest_head=256, available=8) == 8  # backbone layers train


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_tensor_memory_is_reused_instead_of_mapped_again():
    """After keep_freed_memory, tensors of 64 and 48 MiB made and freed 20 times (as a backbone's batches are) mostly
    reuse pages the process already has: glibc's default maps every one afresh, 28,672 page faults a round."""
    assert keep_freed_memory() is True
    rounds, pages_a_round = 20, (16 + 12) * 1024 * 1024 * 4 // resource.getpagesize()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.empty(16 * 1024 * 1024).fill_(1.0)  # float32: 64 MiB, above glibc's largest mmap threshold (32 MiB)
        torch.empty(12 * 1024 * 1024).fill_(2.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < rounds * pages_a_round / 4, (faults, rounds * pages_a_round)
