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


def test_autocast_precisions_on_the_cpu():
    import torch

    from piro_cli.hardware import autocast, resolve_precision

    a = torch.randn(4, 4)
    cpu = torch.device("cpu")
    assert resolve_precision(cpu) == "fp32"
    with autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu):  # auto: fp32 on a CPU
        assert (a @ a).dtype == torch.float32


def test_precision_option_is_checked_and_recorded(tmp_path):
    from conftest import tiny_config

    from piro_cli.errors import PiroError
    from piro_cli.training import TrainConfig

    with pytest.raises(PiroError, match=r"--precision 'half': choose one of auto, fp32, bf16, fp16"):
        TrainConfig(precision="half")
    assert TrainConfig(precision=" BF16").precision == "bf16"
    config, _ = TrainConfig().resolved("objectpi", num_views=8)
    assert config.precision == "fp32"  # the released recipe
    config, _ = TrainConfig(precision="bf16").resolved("objectpi", num_views=8)
    assert config.precision == "bf16"
    config, _ = tiny_config(None).resolved("synthetic", num_views=8)
    assert config.precision == "auto"
