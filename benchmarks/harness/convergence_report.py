"""Writes convergence.md and the plots of a convergence run.

The tables and the plain-language summary are computed from the run's cells
(one per task and optimizer, `benchmarks/convergence.py`), its summary rows
and its run record (`convergence_run.json`: the command, machine, provenance,
seeds, the target rule, the compared pairs and the tie rule `alpha`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from harness import markdown, plots, scoring
from harness.problems import Task

Row = dict[str, Any]


class Cell(Protocol):
    """What the report reads of a (task, optimizer) cell over the grid:
    arrays have leading axes (learning rate, seed); seeds `[0, tuning)` chose
    the learning rate `best`, the others are reported."""

    task: Task
    optimizer: str
    learning_rates: np.ndarray
    curve: np.ndarray
    tuning: int
    target: float

    @property
    def loss(self) -> np.ndarray: ...
    @property
    def steps_to_target(self) -> tuple[np.ndarray, np.ndarray]: ...
    @property
    def best(self) -> int: ...


def write(
    out: pathlib.Path,
    run: Mapping[str, Any],
    rows: list[Row],
    cells: Sequence[Cell],
    tasks: Sequence[Task],
) -> None:
    """convergence.md, convergence_curves.png and convergence_lr.png in `out`."""
    plot_curves(out / "convergence_curves.png", cells)
    plot_learning_rates(out / "convergence_lr.png", cells)
    targets = {c.task.name: c.target for c in cells}
    markdown.write(
        out / "convergence.md",
        _header(run),
        _method(run, tasks, targets),
        _summary(run, rows, tasks, cells),
        _rank_table(rows, tasks),
        _per_task(rows, tasks, targets),
        FILES,
    )


def _header(run: Mapping[str, Any]) -> list[str]:
    quick = " in **--quick** mode (a tiny smoke-test grid; not results)"
    tuning, reported = run["tuning_seeds"], run["reported_seeds"]
    seeds = [str(s) for s in range(tuning + reported)]
    return markdown.header(
        "Convergence benchmark: AAdam vs the Adam family",
        "benchmarks/convergence.py",
        run,
        quick if run["quick"] else "",
        " The cores were shared with other jobs, so the wall time is not a "
        "measure of optimizer cost.",
    ) + [
        f"- Seeds: {tuning} for tuning ({', '.join(seeds[:tuning])}), "
        f"{reported} reported ({', '.join(seeds[tuning:])}). A seed "
        "sets the initial parameters, the mini-batch sequence and the gradient "
        "noise; the same seed gives the same batches and noise to every optimizer "
        "and learning rate. The train/validation/test split (60/20/20) is fixed.",
    ]


_SAME_GRID = (
    "- **Same learning-rate grid for every optimizer** (log-spaced, per task, "
    "listed below). Other hyperparameters are each library's defaults "
    "(`b1=0.9`, `b2=0.999`, `eps=1e-8`; weight decay 1e-4 for `adamw` and "
    "`aadamw`; momentum 0.9 for `rmsprop_momentum` and `sgd_momentum`)."
)
_SELECTION_RULE = (
    "- **Selection rule**: per (task, optimizer), the learning rate with the "
    "fewest mean steps to target on the tuning seeds (the metric reported), "
    "ties broken by the mean loss (validation loss for tasks with data, final "
    "training objective for synthetic tasks). A learning rate where a tuning "
    "seed diverged is never chosen. Every number reported comes from the "
    "other seeds."
)
_FAIRNESS_NOTE = (
    "- **Fairness note**: at an equal learning rate AAdam's first step is "
    "`b1` (0.9) times Adam's, and its later steps carry a momentum of past "
    "updates, so an untuned comparison at one learning rate is unfair to one "
    "side or the other; tuning each optimizer on the grid is what makes it "
    "fair."
)
_METRICS = (
    "- **Metrics** at the chosen learning rate, mean ± sample standard "
    "deviation over the reported seeds: steps to reach the task's target "
    "training objective (recorded after every step; a seed that never reaches "
    "it counts as the maximum number of steps, and `reached` says how many "
    "seeds did), final training objective, validation loss and test accuracy "
    "where there is data."
)
_RANKS = (
    "- **Ranks** per task, 1 = best: `rank (steps)` by mean steps to target, "
    "ties (e.g. none reached) broken by the loss; `rank (loss)` by "
    "the loss alone. Tied optimizers share the average rank."
)


def _method(
    run: Mapping[str, Any], tasks: Sequence[Task], targets: Mapping[str, float]
) -> list[str]:
    return [
        "",
        "## Method",
        "",
        _SAME_GRID,
        _target_rule(run["target_rule"]),
        _SELECTION_RULE,
        _FAIRNESS_NOTE,
        _METRICS,
        _RANKS,
        "",
        *_tasks_and_grids(tasks, targets),
    ]


def _target_rule(rule: Mapping[str, Any]) -> str:
    return (
        "- **Target**, one per task, fixed by a written rule before any selection: "
        f"the training objective that `{rule['optimizer']}`, at its learning rate "
        "with the lowest mean final objective on the tuning seeds, reaches after "
        f"{rule['fraction']:.0%} of the steps (median over the tuning seeds). It "
        "sits where the fastest optimizers arrive early, well above the converged "
        "loss, so that steps to target measure speed, not the last digits."
    )


def _tasks_and_grids(tasks: Sequence[Task], targets: Mapping[str, float]) -> list[str]:
    """One row per task: its description, gradients, steps, target and grid."""
    return markdown.table(
        ["task", "description", "gradients", "steps", "target"]
        + ["learning-rate grid"],
        (
            [t.name, t.description, t.batch, t.steps, f"{targets[t.name]:.4g}"]
            + [_grid(t)]
            for t in tasks
        ),
    )


def _grid(task: Task) -> str:
    low, high, count = task.lr_grid
    return f"10^{low:g} .. 10^{high:g}, {int(count)} values"


FILES = [
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
]


def _summary(
    run: Mapping[str, Any],
    rows: list[Row],
    tasks: Sequence[Task],
    cells: Sequence[Cell],
) -> list[str]:
    """Plain-language findings, each computed from the rows and cells."""
    cell_of = {(c.task.name, c.optimizer): c for c in cells}
    by = {(r["task"], r["optimizer"]): r for r in rows}
    lines = ["", "## Summary", ""]
    for accelerated, base in run["pairs"]:
        pairs = [(by[t.name, accelerated], by[t.name, base]) for t in tasks]
        cell_pairs = [
            (cell_of[t.name, accelerated], cell_of[t.name, base]) for t in tasks
        ]
        lines.append(_pair_line(accelerated, base, pairs, cell_pairs, run["alpha"]))
    lines.append(_accuracy_line(by, tasks))
    lines.append(_mean_rank_line(rows, tasks))
    lines.append(_edge_line(rows))
    lines += [
        _robustness_line(accelerated, base, cells, run["alpha"])
        for accelerated, base in run["pairs"]
    ]
    return lines + [_ties_line(run["reported_seeds"], run["alpha"])]


def _reported(cell: Cell, values: np.ndarray, i: int) -> np.ndarray:
    """`values[i]` over the reported (not tuning) seeds."""
    return values[i, cell.tuning :]


def _pair_line(
    accelerated: str,
    base: str,
    rows: list[tuple[Row, Row]],
    cells: list[tuple[Cell, Cell]],
    alpha: float,
) -> str:
    """Steps to target and loss of a pair at their chosen rates, task by task."""
    steps, losses = scoring.Tally(), scoring.Tally()
    for (a, b), (ca, cb) in zip(rows, cells, strict=True):
        outcome = scoring.paired_test(
            _reported(ca, ca.steps_to_target[0], ca.best),
            _reported(cb, cb.steps_to_target[0], cb.best),
            alpha,
        )
        ratio = a["steps_mean"] / max(b["steps_mean"], 1e-12)
        neither = a["reached"] == 0 and b["reached"] == 0
        steps.add(
            outcome,
            f"{a['task']} (neither reached)"
            if neither
            else f"{a['task']} ×{ratio:.2f}",
        )
        losses.add(
            scoring.paired_test(
                _reported(ca, ca.loss, ca.best), _reported(cb, cb.loss, cb.best), alpha
            ),
            f"{a['task']} ×{a['loss_mean'] / max(b['loss_mean'], 1e-30):.2g}",
        )
    return (
        f"- **`{accelerated}` vs `{base}`**, steps to target (ratio of means): "
        f"fewer on {len(steps.wins)} task(s) ({', '.join(steps.wins) or '-'}); "
        f"more on {len(steps.losses)} ({', '.join(steps.losses) or '-'}); "
        f"tied on {len(steps.ties)} ({', '.join(steps.ties) or '-'}). "
        f"Loss lower on {len(losses.wins)} ({', '.join(losses.wins) or '-'}), "
        f"higher on {len(losses.losses)} ({', '.join(losses.losses) or '-'}), "
        f"tied on {len(losses.ties)}."
    )


def _accuracy_line(by: Mapping[tuple[str, str], Row], tasks: Sequence[Task]) -> str:
    accuracy = [
        f"{t.name} {by[t.name, 'aadam_sign_change']['test_accuracy_mean']:.3f} vs "
        f"{by[t.name, 'adam']['test_accuracy_mean']:.3f}"
        for t in tasks
        if t.evaluate is not None
    ]
    return (
        "- Test accuracy, `aadam_sign_change` vs `adam` at their chosen learning "
        f"rates: {'; '.join(accuracy)}."
    )


def _mean_ranks(rows: list[Row], key: str) -> dict[str, float]:
    """Each optimizer's rank averaged over the tasks, in the rows' order."""
    names = dict.fromkeys(r["optimizer"] for r in rows)
    return {
        name: float(np.mean([r[key] for r in rows if r["optimizer"] == name]))
        for name in names
    }


def _mean_rank_line(rows: list[Row], tasks: Sequence[Task]) -> str:
    mean_rank = _mean_ranks(rows, "rank_steps")
    order = sorted(mean_rank, key=mean_rank.__getitem__)
    positions = ", ".join(
        f"`{name}` {mean_rank[name]:.2f} (position {order.index(name) + 1})"
        for name in dict.fromkeys([order[0], "aadam_sign_change", "adam", order[-1]])
    )
    return (
        f"- Mean rank by steps to target over {len(tasks)} tasks (1 = best of "
        f"{len(mean_rank)}): {positions}."
    )


def _edge_line(rows: list[Row]) -> str:
    edges = [
        f"{r['task']}/{r['optimizer']} ({r['lr_at_edge']})"
        for r in rows
        if r["lr_at_edge"]
    ]
    return (
        f"- The chosen learning rate is at the grid's edge in {len(edges)} of "
        f"{len(rows)} cells"
        + (f": {', '.join(edges)}." if edges else ".")
        + " An edge choice means that optimizer might do better outside the grid."
    )


def _robustness_line(
    accelerated: str, base: str, cells: Sequence[Cell], alpha: float
) -> str:
    """A pair at equal learning rates above the Optax optimizer's chosen one."""
    by = {(c.task.name, c.optimizer): c for c in cells}
    tally = scoring.Tally()
    for task in dict.fromkeys(c.task.name for c in cells):
        a, b = by[task, accelerated], by[task, base]
        steps_a, steps_b = a.steps_to_target[0], b.steps_to_target[0]
        for i in range(b.best + 1, len(b.learning_rates)):
            x, y = _reported(a, steps_a, i), _reported(b, steps_b, i)
            tally.add(
                scoring.paired_test(x, y, alpha),
                f"{task} at {b.learning_rates[i]:.3g}: "
                f"{x.mean():.1f} vs {y.mean():.1f}",
            )
    return (
        f"- **Above `{base}`'s chosen learning rate** (equal rates, mean steps "
        f"over reported seeds), `{accelerated}` took fewer steps at "
        f"{len(tally.wins)} (task, rate) point(s), more at {len(tally.losses)} "
        f"and tied at {len(tally.ties)}" + tally.notes("fewer", "more", "tied") + "."
    )


def _ties_line(seeds: int, alpha: float) -> str:
    return (
        "- **Ties**: every comparison above pairs the two optimizers seed by seed "
        "(a seed gives both the same initial parameters, batches and noise) and "
        "counts a difference (fewer or more steps, lower or higher loss) only "
        f"when a two-sided paired t-test over the {seeds} reported seeds rejects "
        f"equality at the {alpha:.0%} level (|mean difference| / its standard "
        f"error > {scoring.paired_critical_t(seeds, alpha):.2f}; a difference "
        "that is the same on every seed counts); otherwise it is a tie. The rule "
        "is fixed in `benchmarks/convergence.py` (`ALPHA`), not chosen from "
        "these numbers."
    )


def _rank_table(rows: list[Row], tasks: Sequence[Task]) -> list[str]:
    steps, losses = _mean_ranks(rows, "rank_steps"), _mean_ranks(rows, "rank_loss")
    ranked = sorted(steps, key=lambda name: (steps[name], losses[name]))
    by = {(r["task"], r["optimizer"]): r for r in rows}
    table = markdown.table(
        ["optimizer", *(t.name for t in tasks), "mean rank (steps)"]
        + ["mean rank (loss)"],
        (
            [f"`{name}`"]
            + [
                f"{by[t.name, name]['rank_steps']:g} / "
                f"{by[t.name, name]['rank_loss']:g}"
                for t in tasks
            ]
            + [f"{steps[name]:.2f}", f"{losses[name]:.2f}"]
            for name in ranked
        ),
    )
    return [
        "",
        "## Rank table",
        "",
        "Each cell is `rank (steps) / rank (loss)` among the "
        f"{len(steps)} optimizers; rows sorted by mean rank (steps).",
        "",
        *table,
    ]


def _per_task(
    rows: list[Row], tasks: Sequence[Task], targets: Mapping[str, float]
) -> list[str]:
    lines = ["", "## Per-task results", ""]
    for t in tasks:
        lines += [
            f"### {t.name}",
            "",
            f"{t.description}; {t.batch}; target {targets[t.name]:.4g}.",
            "",
            *_task_table([r for r in rows if r["task"] == t.name], t),
            "",
        ]
    return lines


def _task_table(rows: list[Row], task: Task) -> list[str]:
    has_data = task.evaluate is not None
    header = ["optimizer", "lr", "steps to target", "reached", "final train loss"]
    if has_data:
        header += ["val loss", "test accuracy"]
    return markdown.table(
        header + ["rank (steps)", "rank (loss)"],
        (_task_row(r, has_data) for r in rows),
    )


def _task_row(r: Row, has_data: bool) -> list[str]:
    edge = f" ({r['lr_at_edge']} edge)" if r["lr_at_edge"] else ""
    cells = [
        f"`{r['optimizer']}`",
        f"{r['lr']:.3g}{edge}",
        scoring.plus_minus(r["steps_mean"], r["steps_std"], 4),
        f"{r['reached']}/{r['seeds']}",
        scoring.plus_minus(r["final_loss_mean"], r["final_loss_std"]),
    ]
    if has_data:
        cells += [
            scoring.plus_minus(r["val_loss_mean"], r["val_loss_std"]),
            scoring.plus_minus(r["test_accuracy_mean"], r["test_accuracy_std"]),
        ]
    return cells + [f"{r['rank_steps']:g}", f"{r['rank_loss']:g}"]


def plot_curves(path: pathlib.Path, cells: Sequence[Cell]) -> None:
    """Training objective against the step, median and min-max band over the
    reported seeds at each optimizer's chosen learning rate."""
    tasks = list(dict.fromkeys(c.task.name for c in cells))
    fig, axes = plots.panels(len(tasks))
    for ax, name in zip(axes, tasks, strict=True):
        task_cells = [c for c in cells if c.task.name == name]
        task = task_cells[0].task
        x = np.arange(task.steps + 1)
        for cell in task_cells:
            positive = np.clip(cell.curve[cell.best, cell.tuning :], 1e-12, None)
            style = plots.style(cell.optimizer)
            median, low, high = np.median(positive, 0), positive.min(0), positive.max(0)
            plots.band(ax, x, median, low, high, label=cell.optimizer, **style)
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


def plot_learning_rates(path: pathlib.Path, cells: Sequence[Cell]) -> None:
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
