"""Writes workloads.md and the plots from the files a workloads run saved.

Reads `workloads_run.json`, `workloads.csv` and `workloads_curves.csv` in the
output directory, so the report can be rewritten without re-running
(`python benchmarks/workloads.py --report-only`).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections import defaultdict
from typing import Any

import numpy as np

from harness import plots, provenance, scoring

# Each AAdam optimizer and the Optax optimizer it accelerates.
PAIRS = (("aadam_sign_change", "adam"), ("aadamw", "adamw"))
TAUS = np.linspace(1.0, scoring.TAU_MAX, 301)


def read_csv(path: pathlib.Path) -> list[dict[str, Any]]:
    """Rows of a CSV this benchmark wrote, numbers parsed."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            try:
                r[k] = float(v) if any(c in v for c in ".ei") else int(v)
            except ValueError:
                pass
    return rows


class Results:
    """The saved run, indexed for the tables and plots."""

    def __init__(self, out: pathlib.Path) -> None:
        self.meta = json.loads((out / "workloads_run.json").read_text())
        self.runs = read_csv(out / "workloads.csv")
        self.curves = read_csv(out / "workloads_curves.csv")
        self.workloads = [w["name"] for w in self.meta["workloads"]]
        self.optimizers = self.meta["optimizers"]

    def scored(self, workload: str, optimizer: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs
            if r["workload"] == workload
            and r["optimizer"] == optimizer
            and r["phase"] == "score"
        ]

    def tuning(self, workload: str, optimizer: str) -> list[dict[str, Any]]:
        return sorted(
            (
                r
                for r in self.runs
                if r["workload"] == workload
                and r["optimizer"] == optimizer
                and r["phase"] == "tune"
            ),
            key=lambda r: r["trial"],
        )

    def tie(self, workload: str) -> float:
        """The largest difference of the metric that counts as a tie."""
        return next(w["tie"] for w in self.meta["workloads"] if w["name"] == workload)

    def eval_every(self, workload: str) -> int:
        return next(
            w["eval_every"] for w in self.meta["workloads"] if w["name"] == workload
        )

    def target(self, workload: str) -> float:
        return next(r["target"] for r in self.runs if r["workload"] == workload)

    def seconds_per_step(self, workload: str, optimizer: str) -> float:
        """The fastest of an optimizer's timed runs (tuning and scored).

        As `timeit` advises: on a shared machine other jobs only ever add time,
        so the minimum is the best estimate of the run's own cost.
        """
        return min(
            r["seconds"] / r["steps"]
            for r in self.runs
            if r["workload"] == workload and r["optimizer"] == optimizer
        )

    def steps_to_target(self, workload: str, optimizer: str) -> float:
        """Median over scored seeds; inf where the median seed did not reach."""
        return scoring.median(
            [
                r["steps_to_target"] if r["reached"] else math.inf
                for r in self.scored(workload, optimizer)
            ]
        )

    def times(self, per_step: bool) -> dict[str, dict[str, float]]:
        """`times[optimizer][workload]`: steps to target, or seconds if `per_step`."""
        return {
            o: {
                w: self.steps_to_target(w, o)
                * (self.seconds_per_step(w, o) if per_step else 1.0)
                for w in self.workloads
            }
            for o in self.optimizers
        }


def write(out: pathlib.Path) -> None:
    results = Results(out)
    seconds = results.times(per_step=True)
    steps = results.times(per_step=False)
    profiles = scoring.performance_profile(seconds, TAUS)
    step_profiles = scoring.performance_profile(steps, TAUS)
    plot_profile(out / "workloads_profile.png", profiles)
    plot_curves(out / "workloads_curves.png", results)
    plot_sensitivity(out / "workloads_sensitivity.png", results)
    lines = _header(results)
    lines += _headline(results, seconds, steps)
    lines += _score_table(results, profiles, step_profiles)
    lines += _time_table(results)
    lines += _tuning_table(results)
    lines += _sensitivity_lines(results)
    (out / "workloads.md").write_text("\n".join(lines) + "\n")


def _header(results: Results) -> list[str]:
    meta = results.meta
    rule = meta["target_rule"]
    seeds = ", ".join(str(s) for s in meta["seeds"])
    spaces = "; ".join(
        f"`{o}`: "
        + ", ".join(
            f"{k} log-uniform [{low:g}, {high:g}]"
            for k, (low, high) in meta["search_spaces"][o].items()
        )
        for o in meta["optimizers"]
    )
    lines = [
        "# Real workloads: time to target, AAdam vs the Adam family",
        "",
        "Generated by `benchmarks/workloads.py`; every number below was measured by "
        "that run"
        + (
            ""
            if len(meta["invocations"]) == 1
            else f", in {len(meta['invocations'])} invocations that each stored "
            "their workloads"
        )
        + ".",
        "",
    ]
    for invocation in meta["invocations"]:
        lines += [
            "```bash",
            invocation["command"],
            "```",
            "",
            f"- Workloads: {', '.join(invocation['workloads'])}.",
            f"- Date: {invocation['date']}",
            *provenance.markdown_lines(invocation["provenance"]),
            f"- Machine: {invocation['machine']}. The CPU cores were shared with "
            "other jobs: times are comparable between optimizers of one run (their "
            "runs were interleaved), not as absolute speeds.",
            f"- Wall time: {invocation['wall_seconds']:.0f} s.",
            "",
        ]
    lines += [
        "## Method",
        "",
        "A scaled-down AlgoPerf (Dahl et al. 2023, *Benchmarking Neural Network "
        "Training Algorithms*).",
        "",
        f"- **Schedule**: every optimizer uses a linear warm-up over the first "
        f"{meta['warmup_fraction']:.0%} of the step budget, then a cosine decay to "
        "zero (`optax.warmup_cosine_decay_schedule`); the peak learning rate is "
        "tuned. The training loop is one compiled `jax.lax.scan`.",
        f"- **Search space** (the same for every workload): {spaces}. Other "
        "hyperparameters are the libraries' defaults (`b1=0.9`, `b2=0.999`, "
        "`eps=1e-8`; momentum 0.9 for SGD); weight decay applies to every "
        "parameter.",
        f"- **Tuning**: the same {meta['trials']} scrambled-Sobol points "
        "(`scipy.stats.qmc`, seed 0) for every optimizer; an optimizer with one "
        "hyperparameter uses the first coordinate, so the Adam-family optimizers "
        "are tried at exactly the same peak learning rates. Tuning runs use "
        "seed 0; the trial with the lowest final validation metric wins.",
        f"- **Targets**, fixed before any scored run: the validation metric that the "
        f"best `{rule['optimizer']}` tuning trial had reached at "
        f"{rule['fraction']:.0%} of the step budget.",
        f"- **Scoring**: each winner re-runs on seeds {seeds} (not used for tuning); "
        "for each seed the optimizers run one after another, so machine noise falls "
        "on all alike. A seed sets the initial parameters and the mini-batch "
        "sequence, the same for every optimizer.",
        "- **Steps to target**: the first step at which the validation metric, "
        "recorded every `eval_every` steps (table below), is at or below the target; "
        "the resolution is `eval_every` steps. The median over seeds counts; a "
        "seed that never reaches the target counts as infinitely slow. **Seconds "
        "to target**: median steps to target times the optimizer's seconds per "
        "step on that workload, from the fastest of all its timed runs (tuning and "
        "scored; compilation excluded, evaluations included). On a shared machine "
        "other jobs only add time, and identical runs here varied up to 3x, so one "
        "run's wall time is noise; the fastest of about a dozen interleaved runs "
        "is the best estimate of the cost. `workloads.csv` keeps every run's wall "
        "time and its own `seconds_to_target` (wall time times the fraction of its "
        "steps taken).",
        "- **Performance profile**: for each optimizer, the fraction of workloads on "
        f"which its time to target is within tau times the fastest optimizer's, for "
        f"tau in [1, {scoring.TAU_MAX:g}]; its area, normalised to [0, 1], is the "
        "single score (1 = fastest everywhere).",
        "- **Paired comparisons** of each AAdam optimizer with the Optax optimizer "
        "it accelerates (`"
        + "`, `".join(" vs ".join(pair) for pair in PAIRS)
        + "`), on the same seed or the same trial point, are counted as wins, "
        "losses and ties by rules fixed in the code before the run: final "
        "validation metrics that differ by at most the workload's *tie* (table "
        "below: one validation example for an error rate, 0.01 bits per byte) tie; "
        "steps to target that differ by at most one evaluation interval (the "
        "measurement's resolution) tie; a run that never reaches the target loses "
        "to one that does.",
        "",
        "| workload | description | parameters | metric | steps | batch | "
        "eval every | target | tie |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in meta["workloads"]:
        lines.append(
            f"| {w['name']} | {w['description']} | {w['parameters']:,} | "
            f"{w['metric']} | {w['steps']} | {w['batch_size']} | {w['eval_every']} | "
            f"{results.target(w['name']):.4g} | {w['tie']:.3g} |"
        )
    return lines + [""]


def _ratio(a: float, b: float) -> str:
    if math.isinf(a) and math.isinf(b):
        return "neither reached"
    if math.isinf(a) or math.isinf(b):
        return "only " + ("the second" if math.isinf(a) else "the first") + " reached"
    return f"x{a / b:.2f}"


def _headline(
    results: Results,
    seconds: dict[str, dict[str, float]],
    steps: dict[str, dict[str, float]],
) -> list[str]:
    lines = ["## Summary", ""]
    for accelerated, base in PAIRS:
        if accelerated not in results.optimizers or base not in results.optimizers:
            continue
        parts = []
        for w in results.workloads:
            a = [r["final_metric"] for r in results.scored(w, accelerated)]
            b = [r["final_metric"] for r in results.scored(w, base)]
            (ma, sa), (mb, sb) = scoring.mean_std(a), scoring.mean_std(b)
            parts.append(
                f"{w}: time {_ratio(seconds[accelerated][w], seconds[base][w])}, "
                f"steps {_ratio(steps[accelerated][w], steps[base][w])}, final "
                f"{scoring.plus_minus(ma, sa)} vs {scoring.plus_minus(mb, sb)}"
            )
        lines.append(
            f"- **`{accelerated}` vs `{base}`** (median time and steps to target, "
            f"ratio; final validation metric, mean ± sd over seeds): "
            + "; ".join(parts)
            + "."
        )
        steps_tally, final_tally = _paired_seeds(results, accelerated, base)
        lines.append(
            f"  Seed by seed (the same initial parameters and batches for both), "
            f"over {steps_tally.total} seed pairs: steps to target fewer in "
            f"{len(steps_tally.wins)}, more in {len(steps_tally.losses)}, tied in "
            f"{len(steps_tally.ties)}; final metric lower in {len(final_tally.wins)}, "
            f"higher in {len(final_tally.losses)}, tied in {len(final_tally.ties)} "
            "(ties as defined under Method)."
        )
    fastest = defaultdict(list)
    for w in results.workloads:
        best = min(seconds[o][w] for o in results.optimizers)
        if math.isfinite(best):
            fastest[
                next(o for o in results.optimizers if seconds[o][w] == best)
            ].append(w)
    lines.append(
        "- Fastest to target per workload: "
        + "; ".join(f"`{o}` on {', '.join(ws)}" for o, ws in fastest.items())
        + "."
    )
    return lines + [""]


def _paired_seeds(
    results: Results, accelerated: str, base: str
) -> tuple[scoring.Tally, scoring.Tally]:
    """Scored runs paired by seed: steps to target and final metric."""
    steps, final = scoring.Tally(), scoring.Tally()
    for w in results.workloads:
        b_by_seed = {r["seed"]: r for r in results.scored(w, base)}
        for ra in results.scored(w, accelerated):
            rb = b_by_seed[ra["seed"]]
            steps.add(
                scoring.by_threshold(_steps(ra), _steps(rb), results.eval_every(w)),
                f"{w} seed {ra['seed']}",
            )
            final.add(
                scoring.by_threshold(
                    ra["final_metric"], rb["final_metric"], results.tie(w)
                ),
                f"{w} seed {ra['seed']}",
            )
    return steps, final


def _steps(run: dict[str, Any]) -> float:
    return run["steps_to_target"] if run["reached"] else math.inf


def _score_table(
    results: Results,
    profiles: dict[str, np.ndarray],
    step_profiles: dict[str, np.ndarray],
) -> list[str]:
    lines = [
        "## Performance profile",
        "",
        "Area under each optimizer's performance profile (`workloads_profile.png`), "
        "by seconds to target (the score) and by steps to target.",
        "",
        "| optimizer | area (seconds) | area (steps) |",
        "|---|---|---|",
    ]
    ranked = sorted(
        results.optimizers, key=lambda o: -scoring.profile_area(profiles[o], TAUS)
    )
    for o in ranked:
        lines.append(
            f"| `{o}` | {scoring.profile_area(profiles[o], TAUS):.3f} | "
            f"{scoring.profile_area(step_profiles[o], TAUS):.3f} |"
        )
    return lines + ["", "![performance profile](workloads_profile.png)", ""]


def _time_table(results: Results) -> list[str]:
    lines = [
        "## Time to target",
        "",
        "Per workload and optimizer: seconds and median steps to target, how many "
        "scored seeds reached it, the final validation metric (mean ± sd over "
        "scored seeds) and the milliseconds per step of the fastest run.",
        "",
    ]
    for w in results.workloads:
        lines += [
            f"### {w} (target {results.target(w):.4g})",
            "",
            "| optimizer | seconds to target | steps to target | reached | "
            "final metric | ms per step |",
            "|---|---|---|---|---|---|",
        ]
        for o in results.optimizers:
            runs = results.scored(w, o)
            steps = results.steps_to_target(w, o)
            per_step = results.seconds_per_step(w, o)
            final = scoring.mean_std([r["final_metric"] for r in runs])
            lines.append(
                f"| `{o}` | {_number(steps * per_step, '.3g')} | "
                f"{_number(steps, '.0f')} | "
                f"{sum(r['reached'] for r in runs)}/{len(runs)} | "
                f"{scoring.plus_minus(*final)} | {1e3 * per_step:.3g} |"
            )
        lines += [""]
    return lines + ["![validation curves](workloads_curves.png)", ""]


def _number(x: float, spec: str) -> str:
    return format(x, spec) if math.isfinite(x) else "not reached"


def _tuning_table(results: Results) -> list[str]:
    lines = [
        "## Tuning",
        "",
        "The winning trial per workload and optimizer (seed 0), and the final "
        "validation metric of every trial, in trial order.",
        "",
        "| workload | optimizer | peak learning rate | weight decay | "
        "final metric of trials 0.. |",
        "|---|---|---|---|---|",
    ]
    for w in results.workloads:
        for o in results.optimizers:
            trials = results.tuning(w, o)
            win = _winner(trials)
            decay = win["weight_decay"]
            lines.append(
                f"| {w} | `{o}` | {win['learning_rate']:.3g} | "
                f"{decay if decay == '' else format(decay, '.3g')} | "
                + ", ".join(f"{r['final_metric']:.3g}" for r in trials)
                + " |"
            )
    return lines + [""]


def _sensitivity_lines(results: Results) -> list[str]:
    """Paired comparison at equal peak learning rates above adam's best."""
    lines = [
        "## Learning-rate sensitivity",
        "",
        "Final validation metric of every tuning trial against its peak learning "
        "rate (`workloads_sensitivity.png`). AAdam's first step is `b1` times "
        "Adam's and it then takes Adam's step wherever gradient signs stay "
        "consistent, so its best rate and its tolerance of large rates may differ.",
        "",
    ]
    for accelerated, base in PAIRS:
        if accelerated not in results.optimizers or base not in results.optimizers:
            continue
        tally = scoring.Tally()
        for w in results.workloads:
            a, b = results.tuning(w, accelerated), results.tuning(w, base)
            best_lr = _winner(b)["learning_rate"]
            for ra, rb in zip(a, b, strict=True):
                if rb["learning_rate"] > best_lr:
                    tally.add(
                        scoring.by_threshold(
                            ra["final_metric"], rb["final_metric"], results.tie(w)
                        ),
                        f"{w} at {rb['learning_rate']:.3g}: "
                        f"{ra['final_metric']:.4g} vs {rb['final_metric']:.4g}",
                    )
        lines.append(
            f"- At the trial points above `{base}`'s best peak learning rate (the "
            f"same rates for both; single seed each), `{accelerated}` ended with a "
            f"validation metric {tally.counts('lower', 'higher')} paired trials; a "
            "tie is a difference within the workload's tie (one validation example, "
            "or 0.01 bits per byte)" + tally.notes("lower", "higher", "tied") + "."
        )
    at_top = [
        f"{w}/`{o}`"
        for w in results.workloads
        for o in results.optimizers
        if _winner(results.tuning(w, o))["learning_rate"]
        == max(r["learning_rate"] for r in results.tuning(w, o))
    ]
    lines.append(
        f"- The winning trial has the highest peak learning rate tried in "
        f"{len(at_top)} of {len(results.workloads) * len(results.optimizers)} "
        "(workload, optimizer) cells"
        + (f": {', '.join(at_top)}" if at_top else "")
        + ". There a wider search space might find a faster setting."
    )
    return lines + ["", "![sensitivity](workloads_sensitivity.png)"]


def _winner(trials: list[dict[str, Any]]) -> dict[str, Any]:
    return min(trials, key=lambda r: r["final_metric"])


def plot_profile(path: pathlib.Path, profiles: dict[str, np.ndarray]) -> None:
    fig, (ax,) = plots.panels(1)
    for o, profile in profiles.items():
        ax.plot(TAUS, profile, label=o, **plots.style(o))
    ax.set_xlabel("tau (time to target / fastest time to target)")
    ax.set_ylabel("fraction of workloads")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    plots.save(fig, path, "Performance profile, seconds to target", 3)


def plot_curves(path: pathlib.Path, results: Results) -> None:
    fig, axes = plots.panels(len(results.workloads))
    for ax, w in zip(axes, results.workloads, strict=True):
        for o in results.optimizers:
            points = [c for c in results.curves if c["workload"] == w]
            by_step: dict[int, list[float]] = defaultdict(list)
            for c in points:
                if c["optimizer"] == o:
                    by_step[c["step"]].append(c["metric"])
            x = sorted(by_step)
            values = np.array([by_step[s] for s in x])
            style = plots.style(o)
            ax.plot(x, np.median(values, 1), label=o, **style)
            ax.fill_between(
                x, values.min(1), values.max(1), color=style["color"], alpha=0.12
            )
        ax.axhline(results.target(w), color="black", linewidth=0.8, linestyle=":")
        metric = next(m["metric"] for m in results.meta["workloads"] if m["name"] == w)
        low = results.target(w)
        ax.set_ylim(low - 0.5 * abs(low), None if low <= 0 else 3 * low)
        ax.set_title(w, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    plots.save(
        fig,
        path,
        "Validation metric of the scored runs: median over seeds, band = min..max; "
        "dotted = target",
    )


def plot_sensitivity(path: pathlib.Path, results: Results) -> None:
    fig, axes = plots.panels(len(results.workloads))
    for ax, w in zip(axes, results.workloads, strict=True):
        for o in results.optimizers:
            trials = sorted(results.tuning(w, o), key=lambda r: r["learning_rate"])
            ax.plot(
                [r["learning_rate"] for r in trials],
                [r["final_metric"] for r in trials],
                marker="o",
                markersize=3,
                label=o,
                **plots.style(o),
            )
        metric = next(m["metric"] for m in results.meta["workloads"] if m["name"] == w)
        finite = [
            r["final_metric"]
            for r in results.runs
            if r["workload"] == w and math.isfinite(r["final_metric"])
        ]
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.05)
        ax.set_xscale("log")
        ax.set_title(w, fontsize=10)
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3, which="both", linewidth=0.4)
    plots.save(
        fig,
        path,
        "Learning-rate sensitivity: final validation metric of each tuning trial "
        "(seed 0)",
    )
