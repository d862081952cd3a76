"""Training on several processes with torch.distributed: who this process is, and the few collectives training needs.

`piro train` runs unchanged under `torchrun` (it reads RANK, WORLD_SIZE and LOCAL_RANK from the environment,
NCCL on GPUs and gloo on CPUs), and `piro train --devices N` starts torchrun for the user on one machine.

What is sharded, and how a run on N processes optimises what one process does with the global batch:
- every process draws the same pairs, views and cached passes from the same seeded generators (the global
  batch), and embeds only its contiguous share of the pairs (or objects);
- the embeddings of all shares are gathered, the process's own share keeping its gradient
  (`gather_rows(..., keep_grad=True)`), and every process computes the loss of the whole global batch. Terms
  that compare across the batch (the L-Softmax's hard-pair miner, pytorch-metric-learning's object losses,
  the PIEs losses) therefore see the same batch as in one process; PiRO's L_piobj and L_picat are per pair;
- backward runs on the loss times N: each process's gradient is N x the global loss's gradient through its
  own share, and DistributedDataParallel's mean over the processes is exactly the one-process gradient. The
  loss's own parameters (proxies, DVML), computed identically everywhere, are divided by N instead;
- the feature cache of `--freeze-backbone` / `--train-from` is computed in shares and gathered (or read by
  process 0 and broadcast); only process 0 writes the run folder, checkpoints, metrics and the cache.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from piro_cli.errors import PiroError
from piro_cli.runs import resume_advice

# set by `launch` for the processes it starts: the file process 0 writes its run folder's path in, so that the
# launcher can say how to resume when a process is killed (process 0 may be killed before it can say so)
RUN_FOLDER_FILE = "PIRO_RUN_FOLDER_FILE"


@dataclass
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This process's contiguous share of `count` items (the first `count % world` shares one longer)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def from_environment(device: str | None) -> Processes:
    """The processes torchrun started (RANK, WORLD_SIZE, LOCAL_RANK), the process group set up; else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available()
        if gpu and local_rank >= torch.cuda.device_count():
            raise PiroError(f"process {rank}: no GPU {local_rank} here ({torch.cuda.device_count()} GPUs); start fewer processes per node")
        if gpu:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return Processes(rank, world, local_rank)


def device_for(processes: Processes, requested: torch.device) -> torch.device:
    """Each process on a GPU of its own (cuda:LOCAL_RANK) when training on GPUs."""
    if processes.active and requested.type == "cuda":
        return torch.device("cuda", processes.local_rank)
    return requested


def gather_rows(tensor: torch.Tensor, processes: Processes, keep_grad: bool = False) -> torch.Tensor:
    """Every process's `tensor` (same shape but the first dimension), concatenated in rank order; with `keep_grad`
    this process's own rows stay in the autograd graph (the others are constants)."""
    if not processes.active:
        return tensor
    home = tensor.device
    if dist.get_backend() == "nccl" and home.type != "cuda":  # NCCL moves CUDA tensors only (the feature cache is on the CPU)
        return gather_rows(tensor.to(torch.device("cuda", torch.cuda.current_device())), processes, keep_grad).to(home)
    counts = torch.tensor([tensor.shape[0]], device=tensor.device)
    all_counts = [torch.zeros_like(counts) for _ in range(processes.world)]
    dist.all_gather(all_counts, counts)
    sizes = [int(c) for c in all_counts]
    longest = max(sizes)
    padded = tensor.detach()
    if padded.shape[0] < longest:  # all_gather needs equal shapes
        padded = torch.cat([padded, padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(processes.world)]
    dist.all_gather(parts, padded.contiguous())
    rows = [part[:size] for part, size in zip(parts, sizes, strict=True)]
    if keep_grad:
        rows[processes.rank] = tensor
    return torch.cat(rows)


def broadcast(value, processes: Processes):
    """Process 0's `value` (any picklable object, tensors included) on every process."""
    if not processes.active:
        return value
    box = [value if processes.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(devices: int, argv: Sequence[str]) -> int:
    """`torchrun --standalone --nproc-per-node DEVICES -m piro_cli ARGV` on this machine, in this process; the exit
    status of the first process that failed (0: none did). A process killed by a signal is one PiroError."""
    if devices < 2:
        raise PiroError(f"--devices {devices}: give 2 or more (one process trains without it)")
    if torch.cuda.is_available() and devices > torch.cuda.device_count():
        raise PiroError(f"--devices {devices}: this machine has {torch.cuda.device_count()} GPUs; give at most that many")
    if not torch.cuda.is_available():  # CPU processes share the cores
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun's own log lines (a worker's exit code, the SIGTERM sent to the others) and its failure table: the
    # one line below says what happened, and process 0 says how to resume
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = torchrun.get_args_parser().parse_args(["--standalone", f"--nproc-per-node={devices}", "-m", "piro_cli", *argv])
    with tempfile.TemporaryDirectory(prefix="piro-launch-") as scratch:
        told = Path(scratch) / "run-folder"
        os.environ[RUN_FOLDER_FILE] = str(told)
        try:
            torchrun.run(args)
        except ChildFailedError as exc:
            rank, failure = exc.get_first_failure()
            if failure.exitcode > 0:  # it stopped on an error, and said which
                return failure.exitcode
            run_dir = Path(told.read_text(encoding="utf-8")) if told.is_file() else None
            raise PiroError(
                f"training process {rank} of {devices} was killed ({failure.signal_name()}) and the others were "
                f"stopped with it; {resume_advice(run_dir)}"
            ) from None
        finally:
            os.environ.pop(RUN_FOLDER_FILE, None)
    return 0


def tell_launcher(run_dir: Path) -> None:
    """Process 0 tells `launch` (when it started this process) which run folder it writes."""
    told = os.environ.get(RUN_FOLDER_FILE)
    if told:
        Path(told).write_text(str(run_dir), encoding="utf-8")
