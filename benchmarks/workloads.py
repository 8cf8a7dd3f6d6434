"""The study: learning-rate tolerance and time to a near-final target.

AAdam against Optax's Adam family and four sign-aware relatives (Cautious
AdamW, Cautious AAdamW, Lion, ADOPT), on the same data, schedule, budget,
initialisations and mini-batches, over every workload of the registry: eight
small optimisation problems (`harness/workloads/small.py`, whose metric is the
log10 training objective, and which run without decoupled weight decay),
three MNIST models and a byte-level Transformer at two sizes. A scaled-down
AlgoPerf (Dahl et al. 2023) with a full learning-rate grid in place of a
random search.

Protocol, per workload:

1. Grid: every optimizer trains at each of `GRID_POINTS` log-spaced peak
   learning rates over three decades (`harness/optimizers.py`; the Adam family
   and ADOPT share one grid, Lion's is a decade lower), under a linear
   warm-up then cosine decay, for the workload's fixed step budget.
2. Tuning: seed 0 at every grid point; the point with the lowest final
   metric (on a tie, the lowest rate) is the optimizer's chosen rate. It
   centres the larger model's sweep and marks the runs whose curves are
   stored (`chosen`).
3. Target, fixed and written into the run JSON before any scored run: the
   lowest final metric of any Adam-family tuning run, plus `TARGET_MARGIN`
   times the workload's tie (its resolution: one validation example, 0.01
   bits per byte, or 0.01 decades of an objective). A run reaches it when its
   metric, recorded every `eval_every` steps, first falls to it or below.
4. Scored seeds 1..`SEEDS` (not used for tuning) at every grid point. All of
   them give the learning-rate tolerance: the width of the range where the
   median final metric is within `TOLERANCE` ties of its best.
5. Time to target, computed by the report from the stored runs: the median
   steps over the scored seeds at the rate picked by the metric it reports
   (AlgoPerf's principle), the grid point where seed 0 reached the target in
   the fewest steps (ties: the lower final metric, then the lower rate). The
   report shows the same at the tuning choice of step 2 beside it, as a
   sensitivity check (`workloads_analysis.RATE_SELECTION`).

Every rule (grids, warm-up, target family and margin, tolerance, sweep, rate
selection, seeds: `workloads_analysis.code_rules`) is in the run JSON before
the first run, and each workload's target before its first scored seed; the
report scores a record only under the rules it was run under, and refuses one
whose rules differ from the code's.

The larger model (`bytes_lm_1m`) runs a shorter plan: the cautious question's
four (`LARGE`: AAdamW, AdamW, C-AdamW, C-AAdamW), tuned on the `SWEEP` grid
points centred on each one's chosen rate for the small model, then scored
seeds at the chosen rate only.

A further part, `--horizon` (`HORIZON`), asks whether the cautious mask's
lead is an early-training effect and what AAdam's acceleration adds to it:
AdamW, AAdamW, Cautious AdamW and Cautious AAdamW on bytes_lm at 300 steps
and at 1200 (the warm-up and cosine decay stretched to each horizon), at
three rates each (the stored study's chosen rate and the grid points either
side), every rate on scored seeds 1-5. Its rules
(`workloads_analysis.horizon_rules`: the rates, seeds, horizons, how the
best of three rates is picked, the paired comparisons and their interval) go
into `workloads_horizon_run.json` before any training; each horizon's runs
are stored as it finishes (`workloads_horizon.csv`,
`workloads_horizon_curves.csv`), and the report writes `workloads_horizon.md`
and `workloads_horizon_curves.png`.

Runs of different optimizers are interleaved, so machine noise falls on all
alike. Results go to `--out` (default `benchmarks/results`): `workloads.csv`
(one row per run), `workloads_curves.csv` (curves of the scored runs at the
chosen rates), `workloads_run.json` (rules, settings, machine, wall time and
provenance of each invocation), `workloads.md` and PNG plots. Each
workload's results are stored as it finishes; `--workloads W --merge` runs
only W and keeps the others, so the study runs in parts (it refuses stored
results whose settings or rules differ from the code's); `--report-only`
rewrites the reports and plots from the stored files.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from harness import environment, provenance, records, workloads_report
from harness import workloads_analysis as analysis
from harness.models import count_params
from harness.optimizers import ADAM_FAMILY, GRID_POINTS, OPTIMIZERS, STUDY_OPTIMIZERS
from harness.runner import make_train, steps_to_target
from harness.workload import Workload
from harness.workloads import SMALL, WORKLOADS

# The rules, recorded in workloads_run.json when a run starts
# (`analysis.code_rules`).
TARGET_MARGIN = analysis.TARGET_MARGIN
TOLERANCE = analysis.TOLERANCE
SWEEP = analysis.SWEEP
LARGE = analysis.SWEEP_OPTIMIZERS
SEEDS = 5  # scored seeds, 1..SEEDS; seed 0 tunes


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one workload is run.

    budget: keyword arguments of the workload (steps, eval_every, ...).
    reference: for a sweep plan, the full-grid workload whose chosen rates
      centre the sweep; None for a full grid at every seed.
    above: grid points past the top of every optimizer's grid, at the same
      spacing, for problems whose best rates lie higher.
    """

    budget: dict[str, Any]
    reference: str | None = None
    above: int = 0


_LM = {"steps": 300, "eval_every": 20, "batch_size": 16, "val_windows": 64}
# The small problems' budgets are their modules' defaults. Their grids reach
# 2.25 decades higher (Adam family to 10^1.25): a pilot on the standard grid
# (seed 0 and scored seeds, not kept) put every optimizer's best rate at its
# top on seven of the eight, and Adam's best on seed 0 at 0.06 to 10.
SMALL_ABOVE = 6
PLANS: dict[str, Plan] = {
    **{name: Plan({}, above=SMALL_ABOVE) for name in SMALL},
    "mnist_logreg": Plan({"steps": 1000, "eval_every": 10}),
    "mnist_mlp": Plan({"steps": 1000, "eval_every": 10}),
    "mnist_cnn": Plan({"steps": 500, "eval_every": 20}),
    "bytes_lm": Plan(_LM),
    "bytes_lm_1m": Plan(_LM, reference="bytes_lm"),
}
_QUICK_LM = {"steps": 12, "eval_every": 4, "batch_size": 4, "val_windows": 4}
QUICK_PLANS: dict[str, Plan] = {
    "rosenbrock_2d": Plan({"steps": 40, "eval_every": 4}, above=1),
    "mnist_logreg": Plan({"steps": 40, "eval_every": 4}),
    # The "larger" model of a smoke test is tiny: it tests the plan, not size.
    "bytes_lm_1m": Plan(
        {**_QUICK_LM, "d_model": 16, "n_layers": 1}, reference="mnist_logreg"
    ),
}
QUICK_OPTIMIZERS = (*LARGE, "lion")
QUICK_POINTS = 3

RUN_COLUMNS = (
    "workload",
    "optimizer",
    "phase",
    "point",
    "seed",
    "learning_rate",
    "chosen",
    "steps",
    "eval_every",
    "initial_metric",
    "final_metric",
    "target",
    "steps_to_target",
    "reached",
    "seconds",
    "compile_seconds",
)
CURVE_COLUMNS = ("workload", "optimizer", "seed", "step", "metric")


class Runner:
    """Compiled programs per (workload, optimizer), compiled once, timed apart."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.programs: dict[str, Any] = {}
        self.compile_seconds: dict[str, float] = {}

    def __call__(self, name: str, rate: float, seed: int) -> tuple[np.ndarray, float]:
        """(validation curve, seconds of the compiled run)."""
        w = self.workload
        args = ({"learning_rate": jnp.float32(rate)}, jnp.int32(seed), w.train, w.val)
        if name not in self.programs:
            start = time.perf_counter()
            make = functools.partial(OPTIMIZERS[name].make, decay=w.decoupled_decay)
            train = make_train(w, make)
            self.programs[name] = train.lower(*args).compile()
            self.compile_seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        curve = jax.block_until_ready(self.programs[name](*args))
        seconds = time.perf_counter() - start
        curve = np.asarray(curve, np.float64)
        # A diverged run never reaches a target and never wins a tuning.
        return np.where(np.isfinite(curve), curve, np.inf), seconds


@dataclasses.dataclass
class Study:
    """The runs of one workload, recorded as they finish."""

    workload: Workload
    points: int
    above: int = 0
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    curves: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.run = Runner(self.workload)

    def record(
        self, name: str, phase: str, point: int, seed: int, bar: Any
    ) -> np.ndarray:
        bar.set_description(f"{self.workload.name} seed {seed} {name}")
        rate = float(OPTIMIZERS[name].grid(self.points, self.above)[point])
        curve, seconds = self.run(name, rate, seed)
        self.rows.append(
            {
                "workload": self.workload.name,
                "optimizer": name,
                "phase": phase,
                "point": point,
                "seed": seed,
                "learning_rate": rate,
                "steps": self.workload.steps,
                "eval_every": self.workload.eval_every,
                "initial_metric": curve[0],
                "final_metric": curve[-1],
                "seconds": seconds,
                "compile_seconds": self.run.compile_seconds[name],
                "curve": curve,
            }
        )
        bar.update()
        return curve

    def score(self, target: float, chosen: dict[str, int]) -> None:
        """Fills target, steps to target and `chosen`; keeps chosen curves."""
        for r in self.rows:
            curve = r.pop("curve")
            step, reached = steps_to_target(curve, target, self.workload.eval_every)
            r["chosen"] = int(chosen[r["optimizer"]] == r["point"])
            r.update(target=target, steps_to_target=step, reached=int(reached))
            if r["chosen"] and r["phase"] == "score":
                self.curves += [
                    {
                        "workload": r["workload"],
                        "optimizer": r["optimizer"],
                        "seed": r["seed"],
                        "step": i * self.workload.eval_every,
                        "metric": value,
                    }
                    for i, value in enumerate(curve)
                ]


def run_workload(
    study: Study,
    tuning_points: dict[str, Sequence[int]],
    seeds: Sequence[int],
    full_grid: bool,
    bar: Any,
    fixed: Callable[[float], None],
) -> float:
    """Tunes on seed 0, fixes the target and hands it to `fixed` (which
    records it), runs the scored seeds; the target."""
    finals: dict[str, dict[int, float]] = {name: {} for name in tuning_points}
    for k in range(max(len(p) for p in tuning_points.values())):
        for name, points in tuning_points.items():
            if k < len(points):
                curve = study.record(name, "tune", points[k], 0, bar)
                finals[name][points[k]] = curve[-1]
    chosen = {name: min(f, key=f.__getitem__) for name, f in finals.items()}
    best = min(f[p] for name, f in finals.items() if name in ADAM_FAMILY for p in f)
    # The slack counts a float32 metric exactly at the margin as reaching it.
    margin = TARGET_MARGIN * study.workload.tie * (1 + 1e-6)
    # Where the whole family diverged, no run counts as reaching a target.
    target = best + margin if math.isfinite(best) else -math.inf
    fixed(target)
    for seed in seeds:
        for k in range(study.points + study.above if full_grid else 1):
            for name in tuning_points:
                study.record(name, "score", k if full_grid else chosen[name], seed, bar)
    study.score(target, chosen)
    return target


def plan_optimizers(
    plan: Plan, optimizers: Sequence[str], points: int, rows: Sequence[dict[str, Any]]
) -> dict[str, list[int]]:
    """Tuning grid points per optimizer: the full grid, or a sweep plan's.

    `rows` are the runs stored so far: a sweep is centred on each `LARGE`
    optimizer's chosen rate on the reference workload among them.
    """
    if plan.reference is None:
        return {name: list(range(points + plan.above)) for name in optimizers}
    reference = [r for r in rows if r["workload"] == plan.reference]
    if not reference:
        raise SystemExit(
            f"the larger model's sweep is centred on {plan.reference}'s chosen "
            f"rates: run --workloads {plan.reference} first (into the same --out)"
        )
    sweep = {}
    n = points + plan.above  # the sweep's own grid
    for name in LARGE:
        centre = analysis.chosen_point(reference, plan.reference, name)
        if centre >= n:
            raise SystemExit(
                f"{name}'s chosen point on {plan.reference} ({centre}) is past "
                f"the end of the sweep's grid ({n} points): give it `above`"
            )
        first = min(max(0, centre - SWEEP // 2), max(0, n - SWEEP))
        sweep[name] = list(range(first, min(n, first + SWEEP)))
    return sweep


def describe(
    workload: Workload, target: float, optimizers: Sequence[str], plan: Plan
) -> dict:
    return {
        "name": workload.name,
        "description": workload.description,
        "metric": workload.metric,
        "steps": workload.steps,
        "eval_every": workload.eval_every,
        "batch_size": workload.batch_size,
        "tie": workload.tie,
        "target": target,
        "optimizers": list(optimizers),
        # None: every optimizer on the full grid; else a sweep centred on it.
        "sweep_of": plan.reference,
        "grid_points_above": plan.above,
        "decoupled_decay": workload.decoupled_decay,
        "parameters": count_params(workload.make_model(nnx.Rngs(0))),
    }


def _parser() -> argparse.ArgumentParser:
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
        help=f"a smoke test: workloads {', '.join(QUICK_PLANS)}, optimizers "
        f"{', '.join(QUICK_OPTIMIZERS)}, tiny budgets, {QUICK_POINTS} grid "
        "points, 2 scored seeds",
    )
    parser.add_argument(
        "--points", type=int, default=None, help=f"grid points (default {GRID_POINTS})"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help=f"scored seeds (default {SEEDS})"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=list(PLANS),
        default=None,
        help="run only these workloads, in this order (default: all)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the results of other workloads already in --out (they must "
        "come from a run with the same points, seeds, optimizers, rules and "
        "plans)",
    )
    parser.add_argument(
        "--optimizers", nargs="+", choices=list(OPTIMIZERS), default=None
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite workloads.md (and workloads_horizon.md, where its run is "
        "stored) and the plots from the files in --out",
    )
    parser.add_argument(
        "--horizon",
        action="store_true",
        help="run the cautious-by-horizon part instead (`HORIZON`): "
        "AdamW, AAdamW, C-AdamW and C-AAdamW on bytes_lm at 300 and 1200 steps, "
        "3 rates each around the stored study's choice; writes "
        "workloads_horizon.* (default seeds 5)",
    )
    parser.add_argument(
        "--reference",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent / "results",
        help="with --horizon: the directory of the stored "
        "full-grid study whose "
        "chosen rates centre the part (default: benchmarks/results)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.horizon:
        given = {
            "--workloads": args.workloads,
            "--merge": args.merge,
            "--optimizers": args.optimizers,
            "--points": args.points,
        }
        extra = [option for option, value in given.items() if value]
        if extra:
            parser.error(f"--horizon runs its own plan: drop {', '.join(extra)}")
        args.seeds = args.seeds or (2 if args.quick else HORIZON.seeds)
        if args.seeds < 2:
            parser.error("--seeds must be >= 2")
        return args
    args.points = args.points or (QUICK_POINTS if args.quick else GRID_POINTS)
    args.seeds = args.seeds or (2 if args.quick else SEEDS)
    if args.points < 2 or args.seeds < 2:
        parser.error("--points and --seeds must be >= 2")
    args.plans = QUICK_PLANS if args.quick else PLANS
    args.workloads = args.workloads or list(args.plans)
    unknown = [w for w in args.workloads if w not in args.plans]
    if unknown:
        parser.error(f"--quick runs only {', '.join(QUICK_PLANS)}, not {unknown}")
    args.optimizers = args.optimizers or list(
        QUICK_OPTIMIZERS if args.quick else STUDY_OPTIMIZERS
    )
    if not set(ADAM_FAMILY) & set(args.optimizers):
        parser.error(
            f"--optimizers must include one of {ADAM_FAMILY}: they set targets"
        )
    sweeps = [w for w in args.workloads if args.plans[w].reference]
    if sweeps and not set(LARGE) <= set(args.optimizers):
        parser.error(
            f"{', '.join(sweeps)} runs {', '.join(LARGE)}: --optimizers must "
            "include them"
        )
    return args


# Settings that must agree for results of several invocations to be merged.
SHARED_SETTINGS = ("quick", "points", "seeds", "optimizers", "rules", "plans")


def previous_results(
    out: pathlib.Path, meta: dict[str, Any], replaced: Sequence[str]
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(runs, curves, run JSON) already in `out` for workloads not in `replaced`.

    Raises SystemExit where the stored run's settings differ from `meta`'s.
    """
    path = out / "workloads_run.json"
    if not path.exists():
        return [], [], {"invocations": [], "workloads": []}
    old = records.read_json(path)
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

    runs = keep(records.read_csv(out / "workloads.csv"))
    # A workload whose target was recorded but whose runs were not (an
    # interrupted invocation) is not kept.
    stored = {r["workload"] for r in runs}
    old["workloads"] = [w for w in old["workloads"] if w["name"] in stored]
    for invocation in old["invocations"]:
        invocation["workloads"] = [
            w for w in invocation["workloads"] if w not in replaced
        ]
        seconds = invocation["seconds"]
        invocation["seconds"] = {w: seconds[w] for w in invocation["workloads"]}
        # What remains of that invocation: the workloads it still contributes.
        invocation["wall_seconds"] = sum(invocation["seconds"].values())
    old["invocations"] = [i for i in old["invocations"] if i["workloads"]]
    curves = keep(records.read_csv(out / "workloads_curves.csv"))
    return runs, curves, old


FILES = (
    ".csv",
    "_curves.csv",
    "_run.json",
    ".md",
    "_profile.png",
    "_curves.png",
    "_tolerance.png",
)


def store(
    out: pathlib.Path,
    meta: dict[str, Any],
    old: dict[str, Any],
    rows: list[dict],
    curves: list[dict],
    invocation: dict[str, Any],
) -> None:
    """Writes the CSVs and the run JSON (kept and new results), then the report."""
    order = list(PLANS)

    def by_workload(r: dict) -> int:
        return order.index(r["workload"])

    out.mkdir(parents=True, exist_ok=True)
    records.write_csv(out / "workloads.csv", sorted(rows, key=by_workload), RUN_COLUMNS)
    records.write_csv(
        out / "workloads_curves.csv", sorted(curves, key=by_workload), CURVE_COLUMNS
    )
    write_record(out, meta, old, invocation)
    workloads_report.write(out)


def write_record(
    out: pathlib.Path, meta: dict[str, Any], old: dict[str, Any], invocation: dict
) -> None:
    """Writes the run JSON: the rules, each workload's description (with its
    target as soon as it is fixed) and every invocation so far."""
    order = list(PLANS)
    out.mkdir(parents=True, exist_ok=True)
    described = sorted(
        old["workloads"] + meta["workloads"], key=lambda w: order.index(w["name"])
    )
    run = {
        **{k: v for k, v in meta.items() if k != "workloads"},
        "workloads": described,
        "invocations": old["invocations"] + [invocation],
        "files": [f"workloads{suffix}" for suffix in FILES],
    }
    records.write_json(out / "workloads_run.json", run)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the run is, as JSON will store it; written before any run."""
    return json.loads(
        json.dumps(
            {
                "quick": args.quick,
                "points": args.points,
                "seeds": list(range(1, args.seeds + 1)),
                "optimizers": args.optimizers,
                "rules": analysis.code_rules(args.optimizers),
                # Every workload's budget, sweep and grid, whichever this
                # invocation runs: the parts of one study share them.
                "plans": {
                    name: dataclasses.asdict(plan) for name, plan in args.plans.items()
                },
                "workloads": [],
            }
        )
    )


@dataclasses.dataclass(frozen=True)
class HorizonPlan:
    """The cautious-by-horizon part: a few optimizers on one stored workload,
    at a short and a long horizon, three rates each, every rate on every seed.

    reference: the stored full-grid workload whose model, data and chosen
      rates the part reuses.
    horizons, eval_every: the step budgets and their validation spacing; the
      schedule (warm-up, cosine decay) is stretched to each budget.
    budget: the workload's other arguments (batch, validation, model size).
    """

    reference: str
    optimizers: tuple[str, ...]
    horizons: tuple[int, ...]
    eval_every: tuple[int, ...]
    budget: dict[str, Any]
    seeds: int


# Each optimizer is centred on its own chosen rate in the stored study (the
# run of 2026-12-06, whose study lacked C-AAdamW, centred it on AAdamW's).
HORIZON = HorizonPlan(
    reference="bytes_lm",
    optimizers=("adamw", "aadamw", "cautious_adamw", "cautious_aadamw"),
    # The stored study's 300 steps (the control) and 4x that.
    horizons=(300, 1200),
    eval_every=(20, 60),
    budget={k: v for k, v in _LM.items() if k not in ("steps", "eval_every")},
    seeds=5,
)
# A smoke test of the plan: the convex workload, whose programs compile fast,
# at tiny horizons, centred on the stored study's choices there.
QUICK_HORIZON = dataclasses.replace(
    HORIZON,
    reference="mnist_logreg",
    horizons=(10, 40),
    eval_every=(5, 10),
    budget={},
    seeds=2,
)
HORIZON_COLUMNS = (
    "workload",
    "optimizer",
    "steps",
    "eval_every",
    "point",
    "offset",
    "seed",
    "learning_rate",
    "initial_metric",
    "final_metric",
    "seconds",
    "compile_seconds",
)
HORIZON_CURVE_COLUMNS = ("optimizer", "steps", "point", "seed", "step", "metric")
HORIZON_FILES = (
    "workloads_horizon.csv",
    "workloads_horizon_curves.csv",
    "workloads_horizon_run.json",
    "workloads_horizon.md",
    "workloads_horizon_curves.png",
)


def horizon_settings(
    plan: HorizonPlan, reference_dir: pathlib.Path, seeds: int, quick: bool
) -> dict[str, Any]:
    """The part's run JSON before any training: its rules, from the stored
    study's chosen rates."""
    stored = records.read_json(reference_dir / "workloads_run.json")
    reference_rows = records.read_csv(reference_dir / "workloads.csv")
    centres = analysis.horizon_centres(reference_rows, plan.reference, plan.optimizers)
    rules = analysis.horizon_rules(
        plan.reference,
        plan.optimizers,
        centres,
        stored["points"],
        list(range(1, seeds + 1)),
        plan.horizons,
        plan.eval_every,
    )
    return {
        "part": analysis.HORIZON_PART,
        "quick": quick,
        # Where the centres were read: the stored study's runs and settings.
        "reference_files": [
            workloads_report.relative_command(str(reference_dir / name))
            for name in ("workloads.csv", "workloads_run.json")
        ],
        "budget": dict(plan.budget),
        "rules": rules,
        "horizons": [],
    }


def run_horizon_runs(
    plan: HorizonPlan, rules: dict[str, Any], steps: int, every: int, bar: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every rate of `rules` on every seed at one horizon of `plan`:
    (runs, validation curves, the workload as the run JSON describes it)."""
    workload = WORKLOADS[plan.reference](steps=steps, eval_every=every, **plan.budget)
    study = Study(workload, rules["grid_points"])
    # Interleaved: seed, then offset, then optimizer.
    for seed in rules["seeds"]:
        for k in range(len(analysis.HORIZON_OFFSETS)):
            for name in plan.optimizers:
                if k < len(rules["points"][name]):
                    point = rules["points"][name][k]
                    study.record(name, "score", point, seed, bar)
    curves = []
    for r in study.rows:
        curve = r.pop("curve")
        r["offset"] = r["point"] - rules["centres"][r["optimizer"]]
        curves += [
            {
                "workload": plan.reference,
                "optimizer": r["optimizer"],
                "steps": steps,
                "point": r["point"],
                "seed": r["seed"],
                "step": i * every,
                "metric": value,
            }
            for i, value in enumerate(curve)
        ]
    described = {
        k: v
        for k, v in describe(workload, math.nan, plan.optimizers, Plan({})).items()
        if k not in ("target", "sweep_of")
    }
    return study.rows, curves, described


def start_record(
    meta: dict[str, Any], command: str, out: pathlib.Path, name: str
) -> dict[str, Any]:
    """A part's run record, on disk before any training: its rules (`meta`),
    the command, the machine and the provenance of the code this process
    imported."""
    run = {
        **meta,
        "command": command,
        "date": environment.now(),
        "machine": environment.machine(),
        "seconds": {},
        "wall_seconds": 0.0,
        "provenance": provenance.record(("mlxtend", "tqdm")),
        "files": [name],
    }
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / name, run)
    return run


def store_part(
    out: pathlib.Path,
    files: Sequence[str],
    columns: tuple[Sequence[str], Sequence[str]],
    run: dict[str, Any],
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
) -> None:
    """Writes a part's runs, curves and record (`files`, in that order)."""
    run["files"] = list(files)
    records.write_csv(out / files[0], rows, columns[0])
    records.write_csv(out / files[1], curves, columns[1])
    records.write_json(out / files[2], run)


def run_horizon(args: argparse.Namespace, command: str) -> None:
    """Runs the part, storing its rules first and its results per horizon."""
    from tqdm import tqdm

    start = time.perf_counter()
    plan = QUICK_HORIZON if args.quick else HORIZON
    meta = horizon_settings(plan, args.reference, args.seeds, args.quick)
    rules = meta["rules"]
    run = start_record(meta, command, args.out, HORIZON_FILES[2])
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    total = sum(len(p) for p in rules["points"].values())
    total *= len(rules["seeds"]) * len(plan.horizons)
    with tqdm(total=total, unit="run") as bar:
        for steps, every in zip(plan.horizons, plan.eval_every, strict=True):
            begun = time.perf_counter()
            found, found_curves, described = run_horizon_runs(
                plan, rules, steps, every, bar
            )
            rows += found
            curves += found_curves
            run["horizons"].append(described)
            run["seconds"][str(steps)] = time.perf_counter() - begun
            run["wall_seconds"] = time.perf_counter() - start
            # Stored after every horizon: an interrupted run keeps its results.
            store_part(
                args.out,
                HORIZON_FILES,
                (HORIZON_COLUMNS, HORIZON_CURVE_COLUMNS),
                run,
                rows,
                curves,
            )
            workloads_report.write_horizon(args.out)
    print(f"wrote {args.out}/workloads_horizon.{{csv,md}}, its curves and plot")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/workloads.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.report_only:
        stored = [
            write
            for write, path in (
                (workloads_report.write, "workloads_run.json"),
                (workloads_report.write_horizon, HORIZON_FILES[0]),
            )
            if (args.out / path).exists()
        ]
        if not stored:
            raise SystemExit(f"--report-only: no stored results in {args.out}")
        for write in stored:
            write(args.out)
        return
    if args.horizon:
        run_horizon(args, command.strip())
        return
    from tqdm import tqdm

    start = time.perf_counter()
    meta = settings(args)
    kept_rows, curves, old = (
        previous_results(args.out, meta, args.workloads)
        if args.merge
        else ([], [], {"invocations": [], "workloads": []})
    )
    rows = list(kept_rows)
    invocation: dict[str, Any] = {
        "command": command.strip(),
        "date": environment.now(),
        "machine": environment.machine(),
        "workloads": [],
        "seconds": {},
        "wall_seconds": 0.0,
        # Recorded before the first run: the code this process imported.
        "provenance": provenance.record(("mlxtend", "tqdm")),
    }
    seeds = meta["seeds"]
    # On disk before the first run: the rules, the settings, the machine.
    write_record(args.out, meta, old, invocation)
    with tqdm(unit="run") as bar:
        for name in args.workloads:
            begun = time.perf_counter()
            plan = args.plans[name]
            tuning = plan_optimizers(plan, args.optimizers, args.points, rows)
            study = Study(WORKLOADS[name](**plan.budget), args.points, plan.above)

            def fixed(target: float) -> None:
                # On disk before the first scored seed: the workload's target.
                meta["workloads"].append(
                    describe(study.workload, target, list(tuning), plan)  # noqa: B023
                )
                write_record(args.out, meta, old, invocation)

            run_workload(study, tuning, seeds, plan.reference is None, bar, fixed)
            rows += study.rows
            curves += study.curves
            invocation["workloads"].append(name)
            invocation["seconds"][name] = time.perf_counter() - begun
            invocation["wall_seconds"] = time.perf_counter() - start
            # Stored after every workload: an interrupted run keeps its results.
            store(args.out, meta, old, rows, curves, invocation)
    print(f"wrote {args.out}/workloads.{{csv,md}}, workloads_curves.csv and PNGs")


if __name__ == "__main__":
    main()
