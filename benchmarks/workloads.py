"""Real workloads, wall-clock time to result: AAdam against the Adam family.

A scaled-down AlgoPerf (Dahl et al. 2023): fixed workloads with validation
targets, one workload-agnostic search space per optimizer with the same
quasi-random trials for every optimizer, time to target as the score, and
performance profiles across workloads.

Protocol, per workload:

1. Tuning: every optimizer trains once (seed 0) at each of the same K
   quasi-random points of its search space (`harness/optimizers.py`), under a
   linear warm-up then cosine decay, for the workload's fixed step budget. The
   trial with the lowest final validation metric wins.
2. Target: the validation metric that the best `adam` trial has reached at 75 %
   of the step budget, fixed before any scored run.
3. Scoring: each winner is re-run on seeds not used for tuning (1, 2, 3, ...);
   runs of different optimizers are interleaved so that machine noise falls on
   all of them alike. Steps to target are read from the validation metric,
   recorded every `eval_every` steps; seconds to target are the measured wall
   time of the compiled run times the fraction of its steps taken to reach the
   target.

Run `python benchmarks/workloads.py --help` for the options. Results go to
`--out` (default `benchmarks/results`): `workloads.csv` (one row per run),
`workloads_curves.csv` (validation curves of the scored runs),
`workloads_run.json` (the run's settings, machine, wall time, and its
provenance: commit, versions, numerics fingerprint), `workloads.md` and PNG
plots (performance profile, curves, learning-rate sensitivity). They are
written again after each workload, so an interrupted run keeps the workloads
it finished. `--workloads W --merge` runs only W and keeps the other
workloads already in `--out`; `--report-only` rewrites the report and plots
from those files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from harness import environment, provenance, workloads_report
from harness.models import count_params
from harness.optimizers import OPTIMIZERS, WARMUP_FRACTION, quasi_random
from harness.runner import make_train, steps_to_target
from harness.workload import Workload
from harness.workloads import WORKLOADS

TARGET_OPTIMIZER = "adam"
TARGET_FRACTION = 0.75

# Step budgets and evaluation intervals: the full suite, and --quick.
BUDGETS: dict[str, dict[str, Any]] = {
    "mnist_logreg": {"steps": 1000, "eval_every": 10},
    "mnist_mlp": {"steps": 1000, "eval_every": 10},
    "mnist_cnn": {"steps": 500, "eval_every": 20},
    "bytes_lm": {"steps": 300, "eval_every": 20, "batch_size": 16, "val_windows": 64},
}
QUICK_BUDGETS: dict[str, dict[str, Any]] = {
    "mnist_logreg": {"steps": 40, "eval_every": 4},
    "mnist_mlp": {"steps": 40, "eval_every": 4},
    "mnist_cnn": {"steps": 20, "eval_every": 4},
    "bytes_lm": {"steps": 12, "eval_every": 4, "batch_size": 4, "val_windows": 4},
}
QUICK_WORKLOADS = ("mnist_logreg", "bytes_lm")
QUICK_OPTIMIZERS = ("aadam_sign_change", "adam")

RUN_COLUMNS = (
    "workload",
    "optimizer",
    "phase",
    "trial",
    "seed",
    "learning_rate",
    "weight_decay",
    "steps",
    "eval_every",
    "final_metric",
    "target",
    "steps_to_target",
    "reached",
    "seconds",
    "seconds_to_target",
    "compile_seconds",
)
CURVE_COLUMNS = ("workload", "optimizer", "seed", "step", "metric")


class Runner:
    """Compiled programs per (workload, optimizer), compiled once, timed apart."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.programs: dict[str, Any] = {}
        self.compile_seconds: dict[str, float] = {}

    def __call__(
        self, name: str, hyperparameters: dict[str, float], seed: int
    ) -> tuple[np.ndarray, float]:
        """(validation curve, seconds of the compiled run)."""
        w = self.workload
        h = {k: jnp.float32(v) for k, v in hyperparameters.items()}
        args = (h, jnp.int32(seed), w.train, w.val)
        if name not in self.programs:
            start = time.perf_counter()
            train = make_train(w, OPTIMIZERS[name].make)
            self.programs[name] = train.lower(*args).compile()
            self.compile_seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        curve = jax.block_until_ready(self.programs[name](*args))
        seconds = time.perf_counter() - start
        curve = np.asarray(curve, np.float64)
        # A diverged run never reaches a target and never wins a tuning.
        return np.where(np.isfinite(curve), curve, np.inf), seconds


def run_workload(
    workload: Workload,
    optimizers: Sequence[str],
    unit_points: np.ndarray,
    seeds: Sequence[int],
    bar: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All runs of one workload: tuning, target, scored seeds."""
    run = Runner(workload)
    points = {name: OPTIMIZERS[name].space.points(unit_points) for name in optimizers}
    tuned: dict[str, list[np.ndarray]] = {name: [] for name in optimizers}
    seconds: dict[str, list[float]] = {name: [] for name in optimizers}
    for k in range(len(unit_points)):
        for name in optimizers:
            bar.set_description(f"{workload.name} tune {k} {name}")
            curve, wall = run(name, points[name][k], seed=0)
            tuned[name].append(curve)
            seconds[name].append(wall)
            bar.update()
    # The target is fixed before any scored run, by the written rule.
    reference = tuned[TARGET_OPTIMIZER]
    best_reference = reference[int(np.argmin([c[-1] for c in reference]))]
    target_index = round(TARGET_FRACTION * (len(best_reference) - 1))
    target = float(best_reference[target_index])
    winners = {
        name: int(np.argmin([c[-1] for c in tuned[name]])) for name in optimizers
    }

    def row(name: str, phase: str, k: int, seed: int, curve: np.ndarray, wall: float):
        step, reached = steps_to_target(curve, target, workload.eval_every)
        hyperparameters = points[name][k]
        return {
            "workload": workload.name,
            "optimizer": name,
            "phase": phase,
            "trial": k,
            "seed": seed,
            "learning_rate": hyperparameters["learning_rate"],
            "weight_decay": hyperparameters.get("weight_decay", ""),
            "steps": workload.steps,
            "eval_every": workload.eval_every,
            "final_metric": curve[-1],
            "target": target,
            "steps_to_target": step,
            "reached": int(reached),
            "seconds": wall,
            "seconds_to_target": wall * step / workload.steps if reached else math.inf,
            "compile_seconds": run.compile_seconds[name],
        }

    rows = [
        row(name, "tune", k, 0, tuned[name][k], seconds[name][k])
        for name in optimizers
        for k in range(len(unit_points))
    ]
    curves = []
    for seed in seeds:
        for name in optimizers:
            bar.set_description(f"{workload.name} seed {seed} {name}")
            k = winners[name]
            curve, wall = run(name, points[name][k], seed)
            rows.append(row(name, "score", k, seed, curve, wall))
            curves += [
                {
                    "workload": workload.name,
                    "optimizer": name,
                    "seed": seed,
                    "step": i * workload.eval_every,
                    "metric": value,
                }
                for i, value in enumerate(curve)
            ]
            bar.update()
    return rows, curves


def describe(workload: Workload) -> dict[str, Any]:
    return {
        "name": workload.name,
        "description": workload.description,
        "metric": workload.metric,
        "steps": workload.steps,
        "eval_every": workload.eval_every,
        "batch_size": workload.batch_size,
        "tie": workload.tie,
        "parameters": count_params(workload.make_model(nnx.Rngs(0))),
    }


def write_csv(path: pathlib.Path, columns: Sequence[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()}
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/results"),
        help="directory for workloads.{csv,md}, the curves CSV and the PNGs "
        "(default: benchmarks/results)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: workloads {', '.join(QUICK_WORKLOADS)}, optimizers "
        f"{', '.join(QUICK_OPTIMIZERS)}, tiny budgets, 2 trials, 2 seeds",
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="quasi-random trials (default 8)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="scored seeds per winner (default 3)"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=list(BUDGETS),
        default=None,
        help="run only these workloads (default: all)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the results of other workloads already in --out (they must "
        "come from a run with the same trials, seeds and optimizers)",
    )
    parser.add_argument(
        "--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=None
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite workloads.md and the plots from the files in --out",
    )
    args = parser.parse_args(argv)
    args.trials = args.trials or (2 if args.quick else 8)
    args.seeds = args.seeds or (2 if args.quick else 3)
    if args.trials < 1 or args.seeds < 1:
        parser.error("--trials and --seeds must be >= 1")
    args.workloads = args.workloads or list(QUICK_WORKLOADS if args.quick else BUDGETS)
    args.optimizers = args.optimizers or list(
        QUICK_OPTIMIZERS if args.quick else OPTIMIZERS
    )
    if TARGET_OPTIMIZER not in args.optimizers:
        parser.error(f"--optimizers must include {TARGET_OPTIMIZER!r}: it sets targets")
    return args


# Settings that must agree for results of several invocations to be merged.
SHARED_SETTINGS = ("quick", "trials", "seeds", "optimizers", "search_spaces")


def previous_results(
    out: pathlib.Path, meta: dict[str, Any], replaced: Sequence[str]
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(runs, curves, run JSON) already in `out` for workloads not in `replaced`.

    Raises SystemExit where the stored run's settings differ from `meta`'s.
    """
    path = out / "workloads_run.json"
    if not path.exists():
        return [], [], {"invocations": [], "workloads": []}
    old = json.loads(path.read_text())
    different = [
        k for k in SHARED_SETTINGS if json.dumps(old.get(k)) != json.dumps(meta[k])
    ]
    if different or "invocations" not in old:
        raise SystemExit(
            f"--merge: {path} comes from a run with other settings "
            f"({', '.join(different) or 'no provenance'}); re-run every workload "
            "without --merge, or pass another --out"
        )

    def keep(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["workload"] not in replaced]

    old["workloads"] = [w for w in old["workloads"] if w["name"] not in replaced]
    for invocation in old["invocations"]:
        invocation["workloads"] = [
            w for w in invocation["workloads"] if w not in replaced
        ]
    old["invocations"] = [i for i in old["invocations"] if i["workloads"]]
    runs = keep(workloads_report.read_csv(out / "workloads.csv"))
    curves = keep(workloads_report.read_csv(out / "workloads_curves.csv"))
    return runs, curves, old


def store(
    out: pathlib.Path,
    meta: dict[str, Any],
    kept: tuple[list[dict], list[dict], dict[str, Any]],
    rows: list[dict],
    curves: list[dict],
    invocation: dict[str, Any],
) -> None:
    """Writes the CSVs, the run JSON and the report: kept and new results."""
    kept_rows, kept_curves, old = kept
    order = list(BUDGETS)

    def by_workload(r: dict) -> int:
        return order.index(r["workload"])

    out.mkdir(parents=True, exist_ok=True)
    all_rows = sorted(kept_rows + rows, key=by_workload)
    write_csv(out / "workloads.csv", RUN_COLUMNS, all_rows)
    write_csv(
        out / "workloads_curves.csv",
        CURVE_COLUMNS,
        sorted(kept_curves + curves, key=by_workload),
    )
    described = sorted(
        old["workloads"] + meta["workloads"], key=lambda w: order.index(w["name"])
    )
    run = {
        **{k: v for k, v in meta.items() if k != "workloads"},
        "workloads": described,
        "invocations": old["invocations"] + [invocation],
        "files": [f"workloads{suffix}" for suffix in FILES],
    }
    (out / "workloads_run.json").write_text(json.dumps(run, indent=1) + "\n")
    workloads_report.write(out)


FILES = (
    ".csv",
    "_curves.csv",
    "_run.json",
    ".md",
    "_profile.png",
    "_curves.png",
    "_sensitivity.png",
)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/workloads.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.report_only:
        workloads_report.write(args.out)
        return
    from tqdm import tqdm

    start = time.perf_counter()
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    unit_points = quasi_random(args.trials)
    seeds = list(range(1, args.seeds + 1))
    meta: dict[str, Any] = {
        "quick": args.quick,
        "trials": args.trials,
        "seeds": seeds,
        "optimizers": args.optimizers,
        "search_spaces": {
            name: OPTIMIZERS[name].space.ranges for name in args.optimizers
        },
        "warmup_fraction": WARMUP_FRACTION,
        "target_rule": {"optimizer": TARGET_OPTIMIZER, "fraction": TARGET_FRACTION},
        "workloads": [],
    }
    # JSON turns the ranges' tuples into lists; compare like with like.
    meta = json.loads(json.dumps(meta))
    kept = (
        previous_results(args.out, meta, args.workloads)
        if args.merge
        else ([], [], {"invocations": [], "workloads": []})
    )
    invocation: dict[str, Any] = {
        "command": command.strip(),
        "date": environment.now(),
        "machine": environment.machine(),
        "workloads": [],
        "wall_seconds": 0.0,
        # Recorded before the first run: the code this process imported.
        "provenance": provenance.record(("mlxtend", "tqdm")),
    }
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    per_workload = len(args.optimizers) * (args.trials + args.seeds)
    with tqdm(total=len(args.workloads) * per_workload, unit="run") as bar:
        for name in args.workloads:
            workload = WORKLOADS[name](**budgets[name])
            more_rows, more_curves = run_workload(
                workload, args.optimizers, unit_points, seeds, bar
            )
            rows += more_rows
            curves += more_curves
            meta["workloads"].append(describe(workload))
            invocation["workloads"].append(name)
            invocation["wall_seconds"] = time.perf_counter() - start
            # Stored after every workload: an interrupted run keeps its results.
            store(args.out, meta, kept, rows, curves, invocation)
    print(f"wrote {args.out}/workloads.{{csv,md}}, workloads_curves.csv and PNGs")


if __name__ == "__main__":
    main()
