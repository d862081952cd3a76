"""Open-set identification on a run's validation objects: every scoring rule, enrolment size and query size, with and
without test-time flips, through the same code as `piro evaluate --task open-set` (piro_cli.inference.calibration).

    python bench/bench_openset.py bench-runs/recipe/dual-s0 bench-runs/recipe/dual-s1 --data data/objectpi.h5

Each run's gallery (the objects it trained on) and validation objects are embedded once per flip setting; then
every combination is scored. Prints one markdown row per combination: the mean over the runs (and the spread
between the lowest and highest run) of rank-1, EER, DIR@FAR1% and DIR@FAR5%, in percent; `--out` also writes
every run's values as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from piro_cli.evaluation.evaluate import evaluation_objects
from piro_cli.hardware import keep_freed_memory
from piro_cli.inference.calibration import OpenSetProtocol, choose_threshold, embed_held_out, open_set_scores
from piro_cli.inference.index import DISTANCES, REJECTIONS, ScoringRule, trained_gallery
from piro_cli.inference.run import load_run
from piro_cli.options import check_test_scales

RATES = ("rank1", "eer", "dir@far1", "dir@far5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default=None)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enrol", default="2,4,5", help="enrolment sizes E")
    parser.add_argument("--queries", default="1,2,3", help="query sizes Q")
    parser.add_argument("--tta", default="on,off", help="flip settings to measure: on, off or both")
    parser.add_argument("--tta-scales", default=None, help="test-time scales (e.g. 1,1.15); default: each run's own")
    parser.add_argument("--distances", default=",".join(DISTANCES))
    parser.add_argument("--rejections", default=",".join(REJECTIONS))
    parser.add_argument("--out", default=None, help="also write every run's values (.json)")
    parser.add_argument("--lookalikes", action="store_true", help="also print, per run, the never-enrolled objects accepted at FAR 1%% and what they were taken for")
    args = parser.parse_args()
    keep_freed_memory()  # as the `piro` command does: backbone passes about 3x faster on Linux CPUs
    enrols = [int(e) for e in args.enrol.split(",")]
    counts = [int(q) for q in args.queries.split(",")]
    rules = [ScoringRule(d, r) for d, r in itertools.product(args.distances.split(","), args.rejections.split(","))]
    rows: list[dict] = []
    for run, flips in itertools.product(args.runs, args.tta.split(",")):
        started = time.perf_counter()
        loaded = load_run(run, "cpu", tta=flips == "on", tta_scales=args.tta_scales and check_test_scales(args.tta_scales))
        store = loaded.open_data(args.data)
        probe_split, probe_rows, _ = evaluation_objects(loaded, store, "val")
        held = embed_held_out(loaded, store, probe_split, probe_rows)
        gallery = trained_gallery(loaded, store)
        embedded = time.perf_counter() - started
        for enrol, rule in itertools.product(enrols, rules):
            fitting = [q for q in counts if enrol + q <= held.num_views]
            protocol = OpenSetProtocol(enrol, tuple(fitting), args.draws, args.seed, rule)
            scores = open_set_scores(gallery, loaded.model, loaded.device, held, protocol)
            for q, pooled in scores.items():
                rows.append({"run": str(run), "tta": flips, "enrol": enrol, "query": q, "rule": rule.label, **pooled.summary()})
                if args.lookalikes:
                    at = choose_threshold(pooled.genuine, pooled.impostor, target_far=0.01)
                    for pair in pooled.lookalikes(at):
                        print(f"#   E={enrol} Q={q} {rule.label} FAR 1%: {pair['object']!r} taken for {pair['taken_for']!r} "
                              f"({pair['accepted']} of {pair['queries']} queries)")
        print(f"# {run} flips {flips}, scales {','.join(f'{x:g}' for x in loaded.tta_scales)}: embedded in {embedded:.1f} s, scored in {time.perf_counter() - started - embedded:.1f} s", flush=True)
    print("| flips | E | Q | scoring | runs | rank-1 | EER | DIR@FAR1% | DIR@FAR5% |")
    print("|---|--:|--:|---|--:|--:|--:|--:|--:|")
    for key in dict.fromkeys((r["tta"], r["enrol"], r["query"], r["rule"]) for r in rows):
        group = [r for r in rows if (r["tta"], r["enrol"], r["query"], r["rule"]) == key]
        cells = []
        for rate in RATES:
            values = np.array([r[rate] for r in group])
            cells.append(f"{values.mean():.1f} ({values.min():.1f}-{values.max():.1f})" if len(values) > 1 else f"{values.mean():.1f}")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(group)} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
