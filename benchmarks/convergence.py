"""Convergence benchmark: AAdam and its relatives against the Adam family.

Each task is one compiled program holding every optimizer: the learning-rate
grid and the seeds are vectorised with `jax.vmap`, and the training loop is a
`jax.lax.scan` recording the exact training objective after every step, so
each (task, optimizer) cell compiles exactly once. Every optimizer gets the
same learning-rate grid per task. Each task's target is fixed by a written
rule (`TARGET_OPTIMIZER`, `TARGET_FRACTION`); the learning rate is then chosen
per (task, optimizer) by the metric reported, mean steps to target, on tuning
seeds, and every reported number comes from the other seeds.

Gradients: full batch for the two logistic regressions, mini-batches of 32
drawn with replacement for the digits MLP and CNN (keyed by seed and step, so
every optimizer and learning rate of a seed sees the same batches), exact for
Rosenbrock and the ill-conditioned quadratic, exact plus Gaussian noise (keyed
the same way) for the noisy quadratic.

Run `python benchmarks/convergence.py --help` for the options. Results go to
`--out` (default `benchmarks/results`):

* `convergence.csv`: one row per task x optimizer x learning rate x seed (the
  raw measurements; `tuning` marks the tuning seeds, `selected` the chosen
  learning rate);
* `convergence_summary.csv`: one row per task x optimizer at the chosen
  learning rate (means and standard deviations over seeds, ranks);
* `convergence_run.json`: the command, wall time, machine and provenance
  (commit, versions, numerics fingerprint) of the run;
* `convergence.md`: the tables, the command, the provenance and a
  plain-language summary written from the measured numbers;
* `convergence_curves.png`: training objective vs step per task, median over
  reported seeds with a min-max band, one line per optimizer;
* `convergence_lr.png`: mean steps to target against the learning rate.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from harness import convergence_report, environment, provenance, records, scoring
from harness.grid import make_program
from harness.problems import Task, make_tasks

import aadam_optax

# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------

# name -> constructor taking the (traced) learning rate. Hyperparameters other
# than the learning rate are every library's defaults (b1=0.9, b2=0.999,
# eps=1e-8, weight_decay=1e-4 for both AdamW and AAdamW).
OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "aadam_sign_change": lambda lr: aadam_optax.aadam(lr, variant="sign_change"),
    "aadam_sign": lambda lr: aadam_optax.aadam(lr, variant="sign"),
    "aadam_magnitude": lambda lr: aadam_optax.aadam(lr, variant="magnitude"),
    "aadamw": lambda lr: aadam_optax.aadamw(lr),
    "aadamax": lambda lr: aadam_optax.aadamax(lr),
    "aamsgrad": lambda lr: aadam_optax.aamsgrad(lr),
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr),
    "adamax": lambda lr: optax.adamax(lr),
    "amsgrad": lambda lr: optax.amsgrad(lr),
    "nadam": lambda lr: optax.nadam(lr),
    "rmsprop_momentum": lambda lr: optax.rmsprop(lr, momentum=0.9),
    "sgd_momentum": lambda lr: optax.sgd(lr, momentum=0.9),
}

# Each accelerated optimizer and the Optax optimizer it accelerates.
PAIRS: tuple[tuple[str, str], ...] = (
    ("aadam_sign_change", "adam"),
    ("aadam_sign", "adam"),
    ("aadam_magnitude", "adam"),
    ("aadamw", "adamw"),
    ("aadamax", "adamax"),
    ("aamsgrad", "amsgrad"),
)

# ---------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------


# The written rule that fixes each task's target before selection: the
# training objective that `adam`, at its learning rate with the lowest mean
# final objective on the tuning seeds, reaches after this fraction of the steps
# (median over the tuning seeds).
TARGET_OPTIMIZER = "adam"
TARGET_FRACTION = 0.25

# The noise rule for every comparison of an AAdam optimizer with its Optax
# optimizer, fixed before the run: the reported seeds give both the same
# initial parameters, batches and noise, so the per-seed differences are
# paired, and a difference counts only when a two-sided paired t-test rejects
# equality at this level; otherwise it is a tie (`harness/convergence_report.py`).
ALPHA = 0.05


@dataclasses.dataclass
class Cell:
    """Measurements of one (task, optimizer) over the grid, as NumPy arrays.

    Seeds `[0, tuning)` choose the learning rate; the others are reported.
    """

    task: Task
    optimizer: str
    learning_rates: np.ndarray  # (L,)
    curve: np.ndarray  # (L, S, steps + 1) training objective, non-finite -> inf
    val_loss: np.ndarray | None  # (L, S)
    test_accuracy: np.ndarray | None  # (L, S)
    tuning: int
    target: float = math.nan

    @property
    def final_loss(self) -> np.ndarray:
        return self.curve[..., -1]

    @property
    def loss(self) -> np.ndarray:
        """Validation loss where the task has data, else final training loss."""
        return self.val_loss if self.val_loss is not None else self.final_loss

    @property
    def steps_to_target(self) -> tuple[np.ndarray, np.ndarray]:
        """Steps to reach the target (max steps where not reached), reached."""
        below = self.curve <= self.target
        reached = below.any(-1)
        return np.where(reached, np.argmax(below, -1), self.task.steps), reached

    @property
    def best(self) -> int:
        """Index of the chosen learning rate, from the tuning seeds only.

        The fewest mean steps to target, ties (e.g. none reached) broken by the
        mean loss. A learning rate where a tuning seed diverged is never chosen
        unless every learning rate diverged.
        """
        steps = self.steps_to_target[0][:, : self.tuning].mean(-1)
        with np.errstate(invalid="ignore"):
            loss = self.loss[:, : self.tuning].mean(-1)
        loss = np.where(np.isnan(loss), np.inf, loss)
        steps = np.where(np.isfinite(loss), steps, np.inf)
        return int(np.lexsort((loss, steps))[0])

    @property
    def at_edge(self) -> str:
        i = self.best
        if i == 0:
            return "low"
        if i == len(self.learning_rates) - 1:
            return "high"
        return ""


def set_target(cells: list[Cell]) -> float:
    """Fixes every cell's target by the written rule; returns the target."""
    reference = next(c for c in cells if c.optimizer == TARGET_OPTIMIZER)
    tuning = reference.curve[:, : reference.tuning]
    with np.errstate(invalid="ignore"):
        final = tuning[..., -1].mean(-1)
    i = int(np.argmin(np.where(np.isnan(final), np.inf, final)))
    step = max(1, round(TARGET_FRACTION * reference.task.steps))
    target = float(np.median(tuning[i, :, step]))
    for cell in cells:
        cell.target = target
    return target


def _finite(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.inf)


def summarise(cell: Cell) -> dict[str, Any]:
    """Mean and standard deviation over the reported (not tuning) seeds at the
    chosen learning rate."""
    i, reported = cell.best, slice(cell.tuning, None)
    steps, reached = (a[i, reported] for a in cell.steps_to_target)
    row: dict[str, Any] = {
        "task": cell.task.name,
        "optimizer": cell.optimizer,
        "lr": float(cell.learning_rates[i]),
        "lr_at_edge": cell.at_edge,
        "seeds": len(steps),
        "target": cell.target,
        "max_steps": cell.task.steps,
        "steps_mean": float(steps.mean()),
        "steps_std": float(steps.std(ddof=1)) if len(steps) > 1 else 0.0,
        "reached": int(reached.sum()),
        "final_loss_mean": float(cell.final_loss[i, reported].mean()),
        "final_loss_std": scoring.sample_std(cell.final_loss[i, reported]),
        "loss_mean": float(cell.loss[i, reported].mean()),
        "loss_std": scoring.sample_std(cell.loss[i, reported]),
        "val_loss_mean": math.nan,
        "val_loss_std": math.nan,
        "test_accuracy_mean": math.nan,
        "test_accuracy_std": math.nan,
    }
    if cell.val_loss is not None and cell.test_accuracy is not None:
        row["val_loss_mean"] = float(cell.val_loss[i, reported].mean())
        row["val_loss_std"] = scoring.sample_std(cell.val_loss[i, reported])
        row["test_accuracy_mean"] = float(cell.test_accuracy[i, reported].mean())
        row["test_accuracy_std"] = scoring.sample_std(cell.test_accuracy[i, reported])
    return row


def add_ranks(rows: list[dict[str, Any]]) -> None:
    """Per task: `rank_steps` (steps to target, ties by the loss) and
    `rank_loss` (the loss alone)."""
    for task in dict.fromkeys(r["task"] for r in rows):
        group = [r for r in rows if r["task"] == task]
        by_steps = scoring.average_ranks(
            [(r["steps_mean"], _nan_inf(r["loss_mean"])) for r in group]
        )
        by_loss = scoring.average_ranks(
            [(_nan_inf(r["loss_mean"]), 0.0) for r in group]
        )
        for r, a, b in zip(group, by_steps, by_loss, strict=True):
            r["rank_steps"], r["rank_loss"] = a, b


def _nan_inf(x: float) -> float:
    return math.inf if not math.isfinite(x) else x


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------

RAW_COLUMNS = (
    "task",
    "optimizer",
    "lr",
    "seed",
    "tuning",
    "selected",
    "steps_to_target",
    "reached",
    "final_loss",
    "val_loss",
    "test_accuracy",
)


def raw_rows(cells: list[Cell], seeds: np.ndarray) -> list[dict[str, Any]]:
    """A row per task, optimizer, learning rate and seed."""
    rows = []
    for cell in cells:
        steps, reached = cell.steps_to_target
        for i, lr in enumerate(cell.learning_rates):
            rows += [
                {
                    "task": cell.task.name,
                    "optimizer": cell.optimizer,
                    "lr": f"{lr:.6g}",
                    "seed": int(seed),
                    "tuning": int(s < cell.tuning),
                    "selected": int(i == cell.best),
                    "steps_to_target": int(steps[i, s]),
                    "reached": int(reached[i, s]),
                    "final_loss": f"{cell.final_loss[i, s]:.6g}",
                    "val_loss": _fmt_opt(cell.val_loss, i, s),
                    "test_accuracy": _fmt_opt(cell.test_accuracy, i, s),
                }
                for s, seed in enumerate(seeds)
            ]
    return rows


def _fmt_opt(a: np.ndarray | None, i: int, s: int) -> str:
    return "" if a is None else f"{a[i, s]:.6g}"


SUMMARY_COLUMNS = (
    "task",
    "optimizer",
    "lr",
    "lr_at_edge",
    "seeds",
    "target",
    "max_steps",
    "steps_mean",
    "steps_std",
    "reached",
    "final_loss_mean",
    "final_loss_std",
    "val_loss_mean",
    "val_loss_std",
    "test_accuracy_mean",
    "test_accuracy_std",
    "loss_mean",
    "loss_std",
    "rank_steps",
    "rank_loss",
)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

FILES = (
    "convergence.csv",
    "convergence_summary.csv",
    "convergence_run.json",
    "convergence.md",
    "convergence_curves.png",
    "convergence_lr.png",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/results"),
        help="directory for the CSVs, convergence.md and the PNG "
        "(default: benchmarks/results)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny grid (1 tuning and 2 reported seeds, 3 learning rates, few "
        "steps) for smoke tests",
    )
    _grid_options(parser)
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="tasks compiled and run at the same time, in threads "
        "(default: min(2, CPU count))",
    )
    return parser.parse_args(argv)


def _grid_options(parser: argparse.ArgumentParser) -> None:
    """The seeds, step counts and tasks of the grid."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="reported seeds per cell (default: 5; 2 with --quick)",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=int,
        default=None,
        help="seeds that choose the learning rate, never reported "
        "(default: 3; 1 with --quick)",
    )
    parser.add_argument(
        "--steps",
        type=float,
        default=None,
        help="multiply every task's step count by this factor "
        "(default: 1; 0.02 with --quick)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="run only these tasks (by name; default: all)",
    )


def choose_tasks(args: argparse.Namespace) -> tuple[list[Task], int, int]:
    """The tasks to run, the tuning seeds and the reported seeds."""
    scale = args.steps if args.steps is not None else (0.02 if args.quick else 1.0)
    n_seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    tuning = args.tuning_seeds or (1 if args.quick else 3)
    if n_seeds < 1 or tuning < 1 or scale <= 0 or args.jobs < 1:
        raise SystemExit(
            "--seeds, --tuning-seeds and --jobs must be >= 1 and --steps > 0"
        )
    tasks = make_tasks(scale)
    if args.tasks:
        unknown = set(args.tasks) - {t.name for t in tasks}
        if unknown:
            raise SystemExit(f"unknown task(s): {sorted(unknown)}")
        tasks = [t for t in tasks if t.name in args.tasks]
    if args.quick:
        # Three learning rates across each task's grid: enough to exercise
        # selection and the edge report, small enough for a smoke test.
        tasks = [
            dataclasses.replace(t, lr_grid=(t.lr_grid[0], t.lr_grid[1], 3))
            for t in tasks
        ]
    return tasks, tuning, n_seeds


def run_task(task: Task, seeds: np.ndarray) -> dict[str, Any]:
    """Every optimizer on `task` over its learning-rate grid and `seeds`."""
    program = make_program(task, OPTIMIZERS)
    return jax.device_get(
        program(
            jnp.asarray(task.learning_rates(), jnp.float32),
            jnp.asarray(seeds, jnp.int32),
            task.data,
        )
    )


def run_tasks(
    tasks: list[Task], seeds: np.ndarray, jobs: int
) -> dict[str, dict[str, Any]]:
    """`run_task` of each task, `jobs` at a time: XLA releases the GIL while it
    compiles and runs, and compilation, single-threaded, is a large share of
    the time."""
    from tqdm import tqdm

    results: dict[str, dict[str, Any]] = {}
    with (
        tqdm(total=len(tasks) * len(OPTIMIZERS), unit="cell") as bar,
        concurrent.futures.ThreadPoolExecutor(jobs) as pool,
    ):
        futures = {pool.submit(run_task, task, seeds): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            results[task.name] = future.result()
            bar.set_description(f"done {task.name}")
            bar.update(len(OPTIMIZERS))
    return results


def make_cells(task: Task, result: dict[str, Any], tuning: int) -> list[Cell]:
    """A task's cells, their target set by the written rule."""
    cells = [
        Cell(
            task,
            name,
            task.learning_rates(),
            _finite(np.asarray(outcome["curve"], np.float64)),
            _maybe(outcome, "val_loss", finite=True),
            _maybe(outcome, "test_accuracy"),
            tuning,
        )
        for name, outcome in result.items()
    ]
    set_target(cells)
    return cells


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    tasks, tuning, n_seeds = choose_tasks(args)
    seeds = np.arange(tuning + n_seeds)
    # Recorded before the first run: the code this process imported.
    recorded = provenance.record(("tqdm",))
    results = run_tasks(tasks, seeds, args.jobs)
    cells = [c for t in tasks for c in make_cells(t, results[t.name], tuning)]
    rows = [summarise(c) for c in cells]
    add_ranks(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    records.write_csv(args.out / "convergence.csv", raw_rows(cells, seeds), RAW_COLUMNS)
    records.write_csv(args.out / "convergence_summary.csv", rows, SUMMARY_COLUMNS)
    command = "python benchmarks/convergence.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    run = {
        "command": command.strip(),
        "date": environment.now(),
        "wall_seconds": time.perf_counter() - start,
        "machine": environment.machine(),
        "quick": args.quick,
        "tasks": [t.name for t in tasks],
        "tuning_seeds": tuning,
        "reported_seeds": n_seeds,
        "alpha": ALPHA,
        "target_rule": {"optimizer": TARGET_OPTIMIZER, "fraction": TARGET_FRACTION},
        "pairs": PAIRS,
        "provenance": recorded,
        "files": list(FILES),
    }
    records.write_json(args.out / "convergence_run.json", run)
    convergence_report.write(args.out, run, rows, cells, tasks)
    print(f"wrote {args.out}/convergence.{{csv,md}}, convergence_summary.csv, PNGs")


def _maybe(result: dict[str, Any], key: str, finite: bool = False) -> np.ndarray | None:
    if key not in result:
        return None
    a = np.asarray(result[key], np.float64)
    return _finite(a) if finite else a


if __name__ == "__main__":
    main()
