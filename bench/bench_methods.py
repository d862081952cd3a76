"""The paper's comparison on this machine: piro-dual, piro-single and the six PIEs baselines, 3 seeds each.

ObjectPI train with a 20% validation split carved out (the same objects for every run: --val-seed 0),
efficientnet_lite0 with a frozen backbone (one shared feature cache per augmentation), embedding sizes 256
(category) / 512 (object; single-space methods use 512). Everything else is each method's default: the
released recipe (PiRO: `--recipe objectpi`, chosen from the data's source; PIEs: `--recipe pies`), unless
`--epochs`, `--lr` or `--early-stop-rho` are given. Each run is a real `piro train` process; `--jobs` of them
run at once (head training is single-threaded on a CPU, so 2 fit the 2 cores). The table is `piro compare`
over all runs (validation numbers at each run's best epoch).

    python bench/bench_methods.py --data data/objectpi.h5 --project bench-runs/methods --jobs 2
    python bench/bench_methods.py --methods piro-dual+dvml,piro-dual+triplet --seeds 0   # zoo variants

A method may carry the options that make a variant, as `piro compare` labels them: `+<obj-loss>`, `+dvml`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from piro_cli.methods import METHODS


def variant_options(variant: str) -> list[str]:
    """'piro-dual+triplet+dvml' -> ['--method', 'piro-dual', '--obj-loss', 'triplet', '--dvml']."""
    method, *extras = variant.split("+")
    options = ["--method", method]
    for extra in extras:
        options += ["--dvml"] if extra == "dvml" else ["--obj-loss", extra]
    return options


def run_name(method: str, seed: int) -> str:
    return f"{method.replace('+', '_')}-s{seed}"  # run folder names take no '+'


def train_command(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    if args.piro_epochs is not None and METHODS[method.split("+")[0]].family == "piro":
        args = argparse.Namespace(**{**vars(args), "epochs": args.piro_epochs})
    return [
        sys.executable, "-m", "piro_cli", "train", "--data", args.data, "--project", args.project, "--name", run_name(method, seed),
        *variant_options(method), "--backbone", "efficientnet_lite0", "--freeze-backbone", "--val-fraction", "0.2", "--val-seed", "0",
        "--seed", str(seed), "--cat-dim", "256", "--obj-dim", "512",
        *[flag for name in ("epochs", "lr", "early_stop_rho") if getattr(args, name) is not None
          for flag in ("--" + name.replace("_", "-"), str(getattr(args, name)))],
    ]  # fmt: skip


def run_one(args: argparse.Namespace, method: str, seed: int) -> tuple[str, int, float, int]:
    run_dir = Path(args.project) / run_name(method, seed)
    if (run_dir / "best.pt").exists() and not args.force:
        return method, seed, float("nan"), 0  # already done (the bench can be re-run to fill gaps)
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    started = time.perf_counter()
    done = subprocess.run(train_command(args, method, seed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{method} seed {seed} FAILED:\n{done.stderr[-2000:]}", flush=True)
    else:
        print(f"{method} seed {seed}: {wall:.0f} s", flush=True)
    return method, seed, wall, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/objectpi.h5")
    parser.add_argument("--project", default="bench-runs/methods")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: each method's recipe")
    parser.add_argument("--lr", type=float, default=None, help="default: each method's recipe")
    parser.add_argument("--early-stop-rho", type=float, default=None, help="default: each method's recipe")
    parser.add_argument("--piro-epochs", type=int, default=None, help="epochs of the PiRO methods alone (default: --epochs)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="retrain runs that already have a best.pt")
    args = parser.parse_args()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    # The first run of each method family first: each builds the shared feature cache of its augmentation (PiRO's,
    # the PIEs'), which all the other runs of the family then read.
    jobs = [(m, s) for s in seeds for m in methods]
    first = list({METHODS[m.split("+")[0]].family: (m, s) for m, s in reversed(jobs)}.values())[::-1]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(args, *job), first))
        results += list(pool.map(lambda job: run_one(args, *job), [j for j in jobs if j not in first]))
    print(f"all runs: {time.perf_counter() - started:.0f} s wall, {args.jobs} at a time", flush=True)
    if any(code != 0 for *_, code in results):
        sys.exit(1)
    runs = [str(Path(args.project) / run_name(m, s)) for m, s in jobs]
    subprocess.run([sys.executable, "-m", "piro_cli", "compare", *runs, "--format", "markdown"], check=True)


if __name__ == "__main__":
    main()
