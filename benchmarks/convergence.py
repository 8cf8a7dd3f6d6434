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
import csv
import dataclasses
import json
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
from harness import environment, plots, provenance, scoring
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
        "final_loss_std": _std(cell.final_loss[i, reported]),
        "loss_mean": float(cell.loss[i, reported].mean()),
        "loss_std": _std(cell.loss[i, reported]),
        "val_loss_mean": math.nan,
        "val_loss_std": math.nan,
        "test_accuracy_mean": math.nan,
        "test_accuracy_std": math.nan,
    }
    if cell.val_loss is not None and cell.test_accuracy is not None:
        row["val_loss_mean"] = float(cell.val_loss[i, reported].mean())
        row["val_loss_std"] = _std(cell.val_loss[i, reported])
        row["test_accuracy_mean"] = float(cell.test_accuracy[i, reported].mean())
        row["test_accuracy_std"] = _std(cell.test_accuracy[i, reported])
    return row


def _std(a: np.ndarray) -> float:
    """Sample standard deviation; NaN if any seed diverged, 0 for one seed."""
    if not np.all(np.isfinite(a)):
        return math.nan
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _rank(values: Sequence[tuple[float, float]]) -> list[float]:
    """Average ranks (1 = best) of tuples compared lexicographically; ties share."""
    order = sorted(range(len(values)), key=lambda k: values[k])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in order[start : end + 1]:
            ranks[k] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def add_ranks(rows: list[dict[str, Any]]) -> None:
    """Per task: `rank_steps` (steps to target, ties by the loss) and
    `rank_loss` (the loss alone)."""
    for task in dict.fromkeys(r["task"] for r in rows):
        group = [r for r in rows if r["task"] == task]
        by_steps = _rank([(r["steps_mean"], _nan_inf(r["loss_mean"])) for r in group])
        by_loss = _rank([(_nan_inf(r["loss_mean"]), 0.0) for r in group])
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


def write_raw_csv(path: pathlib.Path, cells: list[Cell], seeds: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RAW_COLUMNS)
        for cell in cells:
            steps, reached = cell.steps_to_target
            for i, lr in enumerate(cell.learning_rates):
                for s, seed in enumerate(seeds):
                    writer.writerow(
                        [
                            cell.task.name,
                            cell.optimizer,
                            f"{lr:.6g}",
                            int(seed),
                            int(s < cell.tuning),
                            int(i == cell.best),
                            int(steps[i, s]),
                            int(reached[i, s]),
                            f"{cell.final_loss[i, s]:.6g}",
                            _fmt_opt(cell.val_loss, i, s),
                            _fmt_opt(cell.test_accuracy, i, s),
                        ]
                    )


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


def write_summary_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: pathlib.Path, cells: list[Cell]) -> None:
    tasks = list(dict.fromkeys(c.task.name for c in cells))
    fig, axes = plots.panels(len(tasks))
    for ax, name in zip(axes, tasks, strict=True):
        task_cells = [c for c in cells if c.task.name == name]
        task = task_cells[0].task
        x = np.arange(task.steps + 1)
        for cell in task_cells:
            curve = cell.curve[cell.best, cell.tuning :]
            positive = np.clip(curve, 1e-12, None)
            style = plots.style(cell.optimizer)
            ax.plot(x, np.median(positive, 0), label=cell.optimizer, **style)
            ax.fill_between(
                x,
                positive.min(0),
                positive.max(0),
                color=style["color"],
                alpha=0.12,
                linewidth=0,
            )
        ax.axhline(task_cells[0].target, color="black", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_title(f"{name} ({task.batch})", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training objective")
        ax.grid(alpha=0.3, which="both", linewidth=0.4)
    plots.save(
        fig,
        path,
        "Training objective at each optimizer's chosen learning rate: median over "
        "reported seeds, band = min..max; dotted line = target",
    )


def plot_learning_rates(path: pathlib.Path, cells: list[Cell]) -> None:
    """Mean steps to target (reported seeds) against the learning rate."""
    tasks = list(dict.fromkeys(c.task.name for c in cells))
    fig, axes = plots.panels(len(tasks))
    for ax, name in zip(axes, tasks, strict=True):
        for cell in (c for c in cells if c.task.name == name):
            steps = cell.steps_to_target[0][:, cell.tuning :].mean(-1)
            ax.plot(
                cell.learning_rates,
                steps,
                marker="o",
                markersize=2.5,
                label=cell.optimizer,
                **plots.style(cell.optimizer),
            )
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("mean steps to target")
        ax.grid(alpha=0.3, which="both", linewidth=0.4)
    plots.save(
        fig,
        path,
        "Steps to target against the learning rate (mean over reported seeds; "
        "the step budget where not reached)",
    )


def task_table(rows: list[dict[str, Any]], task: Task) -> list[str]:
    has_data = task.evaluate is not None
    header = ["optimizer", "lr", "steps to target", "reached", "final train loss"]
    if has_data:
        header += ["val loss", "test accuracy"]
    header += ["rank (steps)", "rank (loss)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lr = f"{r['lr']:.3g}" + (
            f" ({r['lr_at_edge']} edge)" if r["lr_at_edge"] else ""
        )
        cells = [
            f"`{r['optimizer']}`",
            lr,
            scoring.plus_minus(r["steps_mean"], r["steps_std"], 4),
            f"{r['reached']}/{r['seeds']}",
            scoring.plus_minus(r["final_loss_mean"], r["final_loss_std"]),
        ]
        if has_data:
            cells += [
                scoring.plus_minus(r["val_loss_mean"], r["val_loss_std"]),
                scoring.plus_minus(r["test_accuracy_mean"], r["test_accuracy_std"]),
            ]
        cells += [f"{r['rank_steps']:g}", f"{r['rank_loss']:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rank_table(rows: list[dict[str, Any]], tasks: list[Task]) -> list[str]:
    names = list(OPTIMIZERS)
    header = ["optimizer"] + [t.name for t in tasks]
    header += ["mean rank (steps)", "mean rank (loss)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    averages = {}
    for name in names:
        mine = [r for r in rows if r["optimizer"] == name]
        averages[name] = (
            float(np.mean([r["rank_steps"] for r in mine])),
            float(np.mean([r["rank_loss"] for r in mine])),
        )
    for name in sorted(names, key=lambda n: averages[n]):
        by_task = {r["task"]: r for r in rows if r["optimizer"] == name}
        cells = [f"`{name}`"]
        cells += [
            f"{by_task[t.name]['rank_steps']:g} / {by_task[t.name]['rank_loss']:g}"
            for t in tasks
        ]
        cells += [f"{averages[name][0]:.2f}", f"{averages[name][1]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# The noise rule for every comparison of an AAdam optimizer with its Optax
# optimizer, fixed before the run: the reported seeds give both the same
# initial parameters, batches and noise, so the per-seed differences are
# paired, and a difference counts only when a two-sided paired t-test rejects
# equality at this level; otherwise it is a tie.
ALPHA = 0.05


def _reported(cell: Cell, values: np.ndarray, i: int) -> np.ndarray:
    """`values[i]` over the reported (not tuning) seeds."""
    return values[i, cell.tuning :]


def robustness_lines(cells: list[Cell]) -> list[str]:
    """Each pair at equal learning rates above the Optax optimizer's chosen one."""
    lines = []
    for accelerated, base in PAIRS:
        tally = scoring.Tally()
        for a, b in _pairs_of_cells(cells, accelerated, base):
            steps_a, steps_b = a.steps_to_target[0], b.steps_to_target[0]
            for i in range(b.best + 1, len(b.learning_rates)):
                x, y = _reported(a, steps_a, i), _reported(b, steps_b, i)
                tally.add(
                    scoring.paired_test(x, y, ALPHA),
                    f"{a.task.name} at {b.learning_rates[i]:.3g}: "
                    f"{x.mean():.1f} vs {y.mean():.1f}",
                )
        lines.append(
            f"- **Above `{base}`'s chosen learning rate** (equal rates, mean steps "
            f"over reported seeds), `{accelerated}` took fewer steps at "
            f"{len(tally.wins)} (task, rate) point(s), more at {len(tally.losses)} "
            f"and tied at {len(tally.ties)}"
            + tally.notes("fewer", "more", "tied")
            + "."
        )
    return lines


def _pairs_of_cells(
    cells: list[Cell], accelerated: str, base: str
) -> list[tuple[Cell, Cell]]:
    by = {(c.task.name, c.optimizer): c for c in cells}
    tasks = dict.fromkeys(c.task.name for c in cells)
    return [(by[(t, accelerated)], by[(t, base)]) for t in tasks]


def summary_lines(
    rows: list[dict[str, Any]], tasks: list[Task], cells: list[Cell]
) -> list[str]:
    """Plain-language findings, each computed from the rows."""
    by = {(r["task"], r["optimizer"]): r for r in rows}
    cell_of = {(c.task.name, c.optimizer): c for c in cells}
    lines = []
    for accelerated, base in PAIRS:
        steps, losses = scoring.Tally(), scoring.Tally()
        for task in tasks:
            a, b = by[(task.name, accelerated)], by[(task.name, base)]
            ca, cb = cell_of[(task.name, accelerated)], cell_of[(task.name, base)]
            ratio = a["steps_mean"] / max(b["steps_mean"], 1e-12)
            outcome = scoring.paired_test(
                _reported(ca, ca.steps_to_target[0], ca.best),
                _reported(cb, cb.steps_to_target[0], cb.best),
                ALPHA,
            )
            neither = a["reached"] == 0 and b["reached"] == 0
            steps.add(
                outcome,
                f"{task.name} (neither reached)"
                if neither
                else f"{task.name} ×{ratio:.2f}",
            )
            loss_ratio = a["loss_mean"] / max(b["loss_mean"], 1e-30)
            losses.add(
                scoring.paired_test(
                    _reported(ca, ca.loss, ca.best),
                    _reported(cb, cb.loss, cb.best),
                    ALPHA,
                ),
                f"{task.name} ×{loss_ratio:.2g}",
            )
        lines.append(
            f"- **`{accelerated}` vs `{base}`**, steps to target (ratio of means): "
            f"fewer on {len(steps.wins)} task(s) ({', '.join(steps.wins) or '-'}); "
            f"more on {len(steps.losses)} ({', '.join(steps.losses) or '-'}); "
            f"tied on {len(steps.ties)} ({', '.join(steps.ties) or '-'}). "
            f"Loss lower on {len(losses.wins)} ({', '.join(losses.wins) or '-'}), "
            f"higher on {len(losses.losses)} ({', '.join(losses.losses) or '-'}), "
            f"tied on {len(losses.ties)}."
        )
    accuracy = []
    for task in tasks:
        if task.evaluate is None:
            continue
        a, b = by[(task.name, "aadam_sign_change")], by[(task.name, "adam")]
        accuracy.append(
            f"{task.name} {a['test_accuracy_mean']:.3f} vs "
            f"{b['test_accuracy_mean']:.3f}"
        )
    lines.append(
        "- Test accuracy, `aadam_sign_change` vs `adam` at their chosen learning "
        f"rates: {'; '.join(accuracy)}."
    )
    mean_rank = {
        name: float(np.mean([r["rank_steps"] for r in rows if r["optimizer"] == name]))
        for name in OPTIMIZERS
    }
    order = sorted(mean_rank, key=mean_rank.get)
    positions = ", ".join(
        f"`{name}` {mean_rank[name]:.2f} (position {order.index(name) + 1})"
        for name in dict.fromkeys([order[0], "aadam_sign_change", "adam", order[-1]])
    )
    lines.append(
        f"- Mean rank by steps to target over {len(tasks)} tasks (1 = best of "
        f"{len(OPTIMIZERS)}): {positions}."
    )
    edges = [
        f"{r['task']}/{r['optimizer']} ({r['lr_at_edge']})"
        for r in rows
        if r["lr_at_edge"]
    ]
    lines.append(
        f"- The chosen learning rate is at the grid's edge in {len(edges)} of "
        f"{len(rows)} cells"
        + (f": {', '.join(edges)}." if edges else ".")
        + " An edge choice means that optimizer might do better outside the grid."
    )
    lines += robustness_lines(cells)
    seeds = len(cells[0].curve[0]) - cells[0].tuning
    lines.append(
        "- **Ties**: every comparison above pairs the two optimizers seed by seed "
        "(a seed gives both the same initial parameters, batches and noise) and "
        "counts a difference (fewer or more steps, lower or higher loss) only "
        f"when a two-sided paired t-test over the {seeds} reported seeds rejects "
        f"equality at the {ALPHA:.0%} level (|mean difference| / its standard "
        f"error > {scoring.paired_critical_t(seeds, ALPHA):.2f}; a difference "
        "that is the same on every seed counts); otherwise it is a tie. The rule "
        "is fixed in `benchmarks/convergence.py` (`ALPHA`), not chosen from "
        "these numbers."
    )
    return lines


def write_markdown(
    path: pathlib.Path,
    rows: list[dict[str, Any]],
    cells: list[Cell],
    tasks: list[Task],
    seeds: np.ndarray,
    tuning: int,
    command: str,
    wall_seconds: float,
    quick: bool,
    recorded: dict[str, Any],
) -> None:
    out = [
        "# Convergence benchmark: AAdam vs the Adam family",
        "",
        "Generated by `benchmarks/convergence.py`"
        + (
            " in **--quick** mode (a tiny smoke-test grid; not results)"
            if quick
            else ""
        )
        + ". Every number below was measured by that run.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- Date: {environment.now()}",
        *provenance.markdown_lines(recorded),
        f"- Machine: {environment.machine()}. The cores were shared with other "
        "jobs, so the wall time is not a measure of optimizer cost.",
        f"- Wall time of the run: {wall_seconds:.0f} s.",
        f"- Seeds: {tuning} for tuning "
        f"({', '.join(str(int(s)) for s in seeds[:tuning])}), "
        f"{len(seeds) - tuning} reported "
        f"({', '.join(str(int(s)) for s in seeds[tuning:])}). A seed "
        "sets the initial parameters, the mini-batch sequence and the gradient "
        "noise; the same seed gives the same batches and noise to every optimizer "
        "and learning rate. The train/validation/test split (60/20/20) is fixed.",
        "",
        "## Method",
        "",
        "- **Same learning-rate grid for every optimizer** (log-spaced, per task, "
        "listed below). Other hyperparameters are each library's defaults "
        "(`b1=0.9`, `b2=0.999`, `eps=1e-8`; weight decay 1e-4 for `adamw` and "
        "`aadamw`; momentum 0.9 for `rmsprop_momentum` and `sgd_momentum`).",
        "- **Target**, one per task, fixed by a written rule before any selection: "
        f"the training objective that `{TARGET_OPTIMIZER}`, at its learning rate "
        "with the lowest mean final objective on the tuning seeds, reaches after "
        f"{TARGET_FRACTION:.0%} of the steps (median over the tuning seeds). It "
        "sits where the fastest optimizers arrive early, well above the converged "
        "loss, so that steps to target measure speed, not the last digits.",
        "- **Selection rule**: per (task, optimizer), the learning rate with the "
        "fewest mean steps to target on the tuning seeds (the metric reported), "
        "ties broken by the mean loss (validation loss for tasks with data, final "
        "training objective for synthetic tasks). A learning rate where a tuning "
        "seed diverged is never chosen. Every number reported comes from the "
        "other seeds.",
        "- **Fairness note**: at an equal learning rate AAdam's first step is "
        "`b1` (0.9) times Adam's, and its later steps carry a momentum of past "
        "updates, so an untuned comparison at one learning rate is unfair to one "
        "side or the other; tuning each optimizer on the grid is what makes it "
        "fair.",
        "- **Metrics** at the chosen learning rate, mean ± sample standard "
        "deviation over the reported seeds: steps to reach the task's target "
        "training objective (recorded after every step; a seed that never reaches "
        "it counts as the maximum number of steps, and `reached` says how many "
        "seeds did), final training objective, validation loss and test accuracy "
        "where there is data.",
        "- **Ranks** per task, 1 = best: `rank (steps)` by mean steps to target, "
        "ties (e.g. none reached) broken by the loss; `rank (loss)` by "
        "the loss alone. Tied optimizers share the average rank.",
        "",
        "| task | description | gradients | steps | target | learning-rate grid |",
        "|---|---|---|---|---|---|",
    ]
    targets = {c.task.name: c.target for c in cells}
    for t in tasks:
        low, high, count = t.lr_grid
        out.append(
            f"| {t.name} | {t.description} | {t.batch} | {t.steps} | "
            f"{targets[t.name]:.4g} | 10^{low:g} .. 10^{high:g}, {int(count)} values |"
        )
    out += ["", "## Summary", ""]
    out += summary_lines(rows, tasks, cells)
    out += [
        "",
        "## Rank table",
        "",
        "Each cell is `rank (steps) / rank (loss)` among the "
        f"{len(OPTIMIZERS)} optimizers; rows sorted by mean rank (steps).",
        "",
    ]
    out += rank_table(rows, tasks)
    out += ["", "## Per-task results", ""]
    for t in tasks:
        out += [
            f"### {t.name}",
            "",
            f"{t.description}; {t.batch}; target {targets[t.name]:.4g}.",
            "",
        ]
        out += task_table([r for r in rows if r["task"] == t.name], t)
        out.append("")
    out += [
        "## Files",
        "",
        "- `convergence.csv`: one row per task × optimizer × learning rate × seed "
        "(`selected` = 1 at the chosen learning rate).",
        "- `convergence_summary.csv`: the per-task tables above as CSV.",
        "- `convergence_run.json`: the command, wall time, machine and provenance "
        "(commit, versions, the numerics fingerprint's values).",
        "- `convergence_curves.png`: training objective vs step at each "
        "optimizer's chosen learning rate.",
        "- `convergence_lr.png`: mean steps to target against the learning rate, "
        "every optimizer and task.",
        "",
    ]
    path.write_text("\n".join(out))


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
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="tasks compiled and run at the same time, in threads "
        "(default: min(2, CPU count))",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from tqdm import tqdm

    start = time.perf_counter()
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
    seeds = np.arange(tuning + n_seeds)
    cells: list[Cell] = []
    # Recorded before the first run: the code this process imported.
    recorded = provenance.record(("tqdm",))

    def run_task(task: Task) -> dict[str, Any]:
        program = make_program(task, OPTIMIZERS)
        return jax.device_get(
            program(
                jnp.asarray(task.learning_rates(), jnp.float32),
                jnp.asarray(seeds, jnp.int32),
                task.data,
            )
        )

    # Tasks run in `--jobs` threads: XLA releases the GIL while it compiles and
    # runs, and compilation, single-threaded, is a large share of the time.
    results: dict[str, dict[str, Any]] = {}
    with (
        tqdm(total=len(tasks) * len(OPTIMIZERS), unit="cell") as bar,
        concurrent.futures.ThreadPoolExecutor(args.jobs) as pool,
    ):
        futures = {pool.submit(run_task, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            results[task.name] = future.result()
            bar.set_description(f"done {task.name}")
            bar.update(len(OPTIMIZERS))
    for task in tasks:
        task_cells = [
            Cell(
                task,
                name,
                task.learning_rates(),
                _finite(np.asarray(result["curve"], np.float64)),
                _maybe(result, "val_loss", finite=True),
                _maybe(result, "test_accuracy"),
                tuning,
            )
            for name, result in results[task.name].items()
        ]
        set_target(task_cells)
        cells += task_cells
    rows = [summarise(c) for c in cells]
    add_ranks(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_raw_csv(args.out / "convergence.csv", cells, seeds)
    write_summary_csv(args.out / "convergence_summary.csv", rows)
    plot_curves(args.out / "convergence_curves.png", cells)
    plot_learning_rates(args.out / "convergence_lr.png", cells)
    command = "python benchmarks/convergence.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    wall_seconds = time.perf_counter() - start
    write_markdown(
        args.out / "convergence.md",
        rows,
        cells,
        tasks,
        seeds,
        tuning,
        command.strip(),
        wall_seconds,
        args.quick,
        recorded,
    )
    run = {
        "command": command.strip(),
        "date": environment.now(),
        "wall_seconds": wall_seconds,
        "machine": environment.machine(),
        "quick": args.quick,
        "tasks": [t.name for t in tasks],
        "tuning_seeds": tuning,
        "reported_seeds": n_seeds,
        "alpha": ALPHA,
        "provenance": recorded,
        "files": list(FILES),
    }
    (args.out / "convergence_run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"wrote {args.out}/convergence.{{csv,md}}, convergence_summary.csv, PNGs")


def _maybe(result: dict[str, Any], key: str, finite: bool = False) -> np.ndarray | None:
    if key not in result:
        return None
    a = np.asarray(result[key], np.float64)
    return _finite(a) if finite else a


if __name__ == "__main__":
    main()
