"""Start-up of the `piro` command in fresh processes: `--help`, `--version` and each command's `--help`, for this
checkout and (with --baseline DIR) another checkout of piro side by side, interleaved run by run.

    git worktree add ../piro-before efa5566              # the checkout to compare with
    python bench/bench_startup.py --baseline ../piro-before --runs 7

Each run is `python -c "...; sys.argv = ['piro', ...]; main()"` with the checkout first on sys.path, timed from
process start to exit (wall clock). Prints the median (min-max) of each and the ratio baseline / this checkout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["--version"], ["train", "--help"], ["evaluate", "--help"], ["identify", "--help"], ["index", "add", "--help"])
HERE = Path(__file__).resolve().parents[1]


def run_once(source: Path, argv: list[str]) -> float:
    code = f"import sys; sys.path.insert(0, {str(source)!r}); from piro_cli.cli import main; sys.argv = ['piro', *{argv!r}]; main()"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=None, help="another piro checkout to time beside this one")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sources = {"this checkout": HERE} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print("| command | " + " | ".join(f"{name} (s)" for name in sources) + (" | baseline / this |" if args.baseline else " |"))
    print("|---|" + "--:|" * (len(sources) + (1 if args.baseline else 0)))
    for argv in COMMANDS:
        times: dict[str, list[float]] = {name: [] for name in sources}
        for source in sources.values():
            run_once(source, argv)  # warm the file cache
        for _ in range(args.runs):
            for name, source in sources.items():  # interleaved: a drift in the machine's speed hits both
                times[name].append(run_once(source, argv))
        cells = [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})" for t in times.values()]
        ratio = ""
        if args.baseline:
            pairs = [b / a for a, b in zip(times["this checkout"], times["baseline"], strict=True)]
            ratio = f" | {statistics.median(pairs):.1f}x"
        print(f"| piro {' '.join(argv)} | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()
