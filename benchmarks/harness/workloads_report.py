"""Writes workloads.md and the plots from the files a workloads run saved.

Reads `workloads_run.json`, `workloads.csv` and `workloads_curves.csv` in the
output directory, so the report can be rewritten without re-running
(`python benchmarks/workloads.py --report-only`). The numbers come from
`workloads_analysis.py`; this module only lays them out.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np

from harness import markdown, optimizers, plots, records, scoring
from harness import workloads_analysis as analysis

REGIONS = ("below", "at", "above")
ROOT = pathlib.Path(__file__).resolve().parents[2]
PRIMARY, SENSITIVITY = analysis.FEWEST_STEPS, analysis.LOWEST_FINAL
RULES = (PRIMARY, SENSITIVITY)


def write(out: pathlib.Path) -> None:
    results = analysis.Results(out)
    profiles = {rule: results.profile(rule) for rule in RULES}
    lines = _header(results) + _summary(results, profiles) + _method(results)
    lines += _time_table(results, profiles) + _tolerance_table(results)
    lines += _paired_table(results) + _cautious_table(results) + _size_table(results)
    markdown.write(out / "workloads.md", lines)
    plot_tolerance(out / "workloads_tolerance.png", results)
    plot_profile(out / "workloads_profile.png", results)
    plot_curves(out / "workloads_curves.png", results)


def _summary(
    results: analysis.Results, profiles: dict[str, analysis.Profile]
) -> list[str]:
    lines = ["## Summary", "", *_profile_summary(profiles)]
    for pair in _pairs(results):
        lines += [_width_summary(results, pair), _paired_summary(results, pair)]
    return lines + _cautious_summary(results) + _size_summary(results) + [""]


def _cautious_summary(results: analysis.Results) -> list[str]:
    """Per own-rate pair, the workloads where its interval is below, above or
    around 0."""
    lines = []
    for a, b in results.rules["paired_comparisons"]["own_rates"]:
        found: dict[str, list[str]] = {"lower": [], "higher": [], "within noise": []}
        for w in results.workloads:
            if not {a, b} <= set(results.optimizers(w)):
                continue
            _, low, high = analysis.interval(
                analysis.tuned_difference(results.runs, w, (a, b))
            )
            side = "lower" if high < 0 else "higher" if low > 0 else "within noise"
            found[side].append(w)
        counts = "; ".join(
            f"{side} on {len(ws)}"
            + (f" ({', '.join(ws)})" if ws and side != "within noise" else "")
            for side, ws in found.items()
        )
        lines.append(
            f"- `{a}` − `{b}`, each at its own chosen rate, paired by seed, "
            f"95 % t: {counts}."
        )
    return lines


def _areas_text(p: analysis.Profile) -> str:
    return ", ".join(
        f"`{o}` {p.areas[o]:.3f} [{p.low[o]:.3f}, {p.high[o]:.3f}] "
        f"({_range(*p.loo_range(o))})"
        for o in p.order
    )


def _profile_summary(profiles: dict[str, analysis.Profile]) -> list[str]:
    primary = profiles[PRIMARY]
    n = len(primary.workloads)
    lines = [
        f"- Time to target, steps-to-target profile areas over the {n} full-grid "
        "workload(s), area [95 % bootstrap over seeds] (leave-one-workload-out "
        f"range). Primary rule (`{PRIMARY}`): {_areas_text(primary)}. "
        f"Sensitivity (`{SENSITIVITY}`): {_areas_text(profiles[SENSITIVITY])}.",
        f"- {_stable_text(profiles)}",
    ]
    lines += [line for rule, p in profiles.items() if (line := _unreached(rule, p))]
    return lines


def stable_orders(profiles: dict[str, analysis.Profile]) -> list[tuple[str, str]]:
    """(ahead, behind) pairs whose order holds under every rule: the paired
    bootstrap interval of the area difference excludes 0, and no
    leave-one-workload-out subset reverses or levels them."""
    held: set[tuple[str, str]] | None = None
    for p in profiles.values():
        changed = {(a, b) for a, b, _, _ in analysis.order_changes(p.areas, p.loo)}
        kept = {(a, b) for a, b, *_ in p.separated() if (a, b) not in changed}
        held = kept if held is None else held & kept
    order = next(iter(profiles.values())).order
    return sorted(held or (), key=lambda ab: (order.index(ab[1]), order.index(ab[0])))


def _stable_text(profiles: dict[str, analysis.Profile]) -> str:
    names = next(iter(profiles.values())).order
    ahead_of: dict[str, list[str]] = {}
    for a, b in stable_orders(profiles):
        ahead_of.setdefault(b, []).append(a)
    parts = [
        (
            "every other optimizer"
            if len(aheads) == len(names) - 1
            else ", ".join(f"`{a}`" for a in aheads)
        )
        + f" ahead of `{behind}`"
        for behind, aheads in ahead_of.items()
    ]
    return (
        "Orders that hold under both rate rules (the paired bootstrap interval "
        "of the area difference excludes 0 under each, and no leave-one-workload-"
        f"out subset reverses or levels the pair): {'; '.join(parts) or 'none'}. "
        "Every other order depends on the rule, the seeds or the workloads."
    )


def _range(low: float, high: float) -> str:
    return f"{low:.3f}–{high:.3f}" if math.isfinite(low) else "-"


def _size_summary(results: analysis.Results) -> list[str]:
    sizes = [w for w in results.workloads if results.described[w]["sweep_of"]]
    lines = []
    for large in sizes:
        small = results.described[large]["sweep_of"]
        first, second, *_ = results.optimizers(large)
        cells = [
            f"{w} ({results.described[w]['parameters']:,} parameters) "
            + _interval_cell(
                analysis.tuned_difference(results.runs, w, (first, second))
            )
            for w in (small, large)
        ]
        lines.append(
            f"- `{first}` − `{second}`, final metric at each one's chosen rate, "
            f"paired by seed: {'; '.join(cells)}."
        )
    return lines


def _width_summary(results: analysis.Results, pair: tuple[str, str]) -> str:
    step = results.spacing
    counts = {"wider": 0, "within one grid step": 0, "narrower": 0, "undecided": 0}
    for w in results.full_grid:
        (a, open_a), (b, open_b) = (results.width(w, o) for o in pair)
        if (open_a and a <= b) or (open_b and b <= a):
            counts["undecided"] += 1  # the smaller one may be cut by the grid
        elif abs(a - b) <= step * (1 + analysis.SLACK):
            counts["within one grid step"] += 1
        else:
            counts["wider" if a > b else "narrower"] += 1
    listed = ", ".join(f"{n} on {k}" for n, k in counts.items())
    return (
        f"- Tolerance width of `{pair[0]}` against `{pair[1]}`, from the median "
        f"over seeds, per workload: {listed} (undecided: the narrower range "
        f"reaches an end of the grid). Per seed, paired: {_pooled_text(results, pair)}"
    )


def _pooled_text(results: analysis.Results, pair: tuple[str, str]) -> str:
    pairs = results.width_pairs(pair)
    groups = analysis.uncensored(pairs)
    used = [d for g in groups.values() for d in g]
    if not used:
        return "every (workload, seed) pair has a censored width."
    mean, low, high = analysis.interval(used)
    _, b_low, b_high = analysis.cluster_bootstrap(groups)
    means = [float(np.mean(g)) for g in groups.values()]
    w_mean, w_low, w_high = analysis.interval(means)
    text = (
        f"over the {len(used)} (workload, seed) pairs with no censored width "
        f"({len(pairs) - len(used)} left out: {_censored_text(pairs)}), "
        f"{mean:+.2f} decades; 95 % t interval, pairs as independent, "
        f"[{low:+.2f}, {high:+.2f}]; workload as the unit ({len(groups)} "
        f"workloads), bootstrap [{b_low:+.2f}, {b_high:+.2f}] and t over the "
        f"workload means {w_mean:+.2f} [{w_low:+.2f}, {w_high:+.2f}]."
    )
    bound = analysis.bounded_mean(pairs)
    if bound is not None:
        value, side, n = bound
        text += (
            f" With the one-sided pairs at their bounds, the mean over the {n} "
            f"pairs not censored on both sides is {side} {value:+.2f}."
        )
    return text


def _censored_text(pairs: list[analysis.WidthPair]) -> str:
    """The censored pairs by workload, with what each says of the difference."""
    said: dict[tuple[str, str], list[str]] = {}
    for p in pairs:
        if not p.censored:
            continue
        low, high = p.bounds
        bound = (
            "both censored, unbounded"
            if math.isinf(low) and math.isinf(high)
            else f"≤ {high:+.2f}"
            if math.isinf(low)
            else f"≥ {low:+.2f}"
        )
        said.setdefault((p.workload, bound), []).append(str(p.seed))
    return (
        "; ".join(
            f"{w} seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {bound}"
            for (w, bound), seeds in said.items()
        )
        or "none"
    )


def _paired_summary(results: analysis.Results, pair: tuple[str, str]) -> str:
    signs: dict[str, list[str]] = {"lower": [], "higher": [], "within noise": []}
    for w in results.full_grid:
        for region, values in results.paired_regions(w, pair).items():
            if region not in REGIONS or not values:
                continue
            _, low, high = analysis.interval(values)
            key = "lower" if high < 0 else "higher" if low > 0 else "within noise"
            signs[key].append(f"{w} {region}")
    total = sum(len(c) for c in signs.values())
    counts = "; ".join(
        f"{key} in {len(cells)}"
        + (f" ({', '.join(cells)})" if cells and key != "within noise" else "")
        for key, cells in signs.items()
    )
    return (
        f"- `{pair[0]}` − `{pair[1]}` at equal rates, paired by seed, over "
        f"{total} (workload, region) 95 % intervals: {counts}. By chance alone "
        f"about {total / 20:.1f} of {total} would exclude zero."
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [*markdown.table(header, rows), ""]


def _header(results: analysis.Results) -> list[str]:
    invocations = results.meta["invocations"]
    lines = [
        "# The study: learning-rate tolerance and time to target",
        "",
        "Generated by `benchmarks/workloads.py`; every number below was measured "
        f"by the {len(invocations)} invocation(s) listed here, each of which "
        "stored its workloads as they finished (commands relative to the "
        "repository).",
        "",
    ]
    for invocation in invocations:
        parts = ", ".join(f"{w} {s:.0f} s" for w, s in invocation["seconds"].items())
        shown = {**invocation, "command": relative_command(invocation["command"])}
        lines += markdown.run_lines(shown, _SHARED)
        lines += [f"- Workloads and their wall times: {parts}.", ""]
    return lines


def relative_command(command: str, root: pathlib.Path = ROOT) -> str:
    """`command` with each absolute path inside the repository written
    relative to it: under `root`, or, for a path recorded in another
    checkout, from its last parts that name a folder under `root`."""
    words = command.split(" ")
    for i, word in enumerate(words):
        path = pathlib.PurePosixPath(word)
        if not path.is_absolute():
            continue
        if path.is_relative_to(root):
            words[i] = str(path.relative_to(root)) or "."
            continue
        for start in range(1, len(path.parts)):
            tail = pathlib.PurePosixPath(*path.parts[start:])
            if (root / tail).is_dir():
                words[i] = str(tail)
                break
    return " ".join(words)


_SHARED = (
    " The CPU cores were shared with other jobs: times compare optimizers of one"
    " run (their runs were interleaved), not absolute speeds."
)


_RELATIVES = (
    "- **Relatives**: the library's `cautious_adamw` (Liang et al. 2024: "
    "Adam's direction with the components whose sign disagrees with the "
    "gradient's zeroed, rescaled by size / (kept + 1) per leaf; the decay "
    "unmasked) and `cautious_aadamw` (the same mask on AAdamW's direction), "
    "`optax.lion`, `optax.contrib.adopt`."
)
_OWN_RATES = (
    "- **The cautious question**: first minus second optimizer, each at its "
    "own tuning choice, same seed; the mean over the scored seeds with its "
    "95 % t interval."
)
_PAIRED = (
    "- **Paired differences**: first minus second optimizer at equal rates, "
    "same seed (same initialisation and batches); per seed, the mean over the "
    "grid points below, at, and above the second's chosen rate; the mean over "
    "seeds with its 95 % t interval. Negative means the first ended lower."
)


def _method(results: analysis.Results) -> list[str]:
    rules, meta = results.rules, results.meta
    grids = "; ".join(
        f"`{o}` [{low:g}, {high:g}]" for o, (low, high) in rules["grids"].items()
    )
    seeds = ", ".join(str(s) for s in meta["seeds"])
    lines = [
        "## Method",
        "",
        f"- **Grid**: {meta['points']} log-spaced peak learning rates per optimizer "
        f"({results.spacing:.3g} decades apart): {grids}{_above_text(results)}. "
        "Schedule: linear warm-up "
        f"over {rules['warmup_fraction']:.0%} of the budget, then cosine decay to "
        "zero. Decoupled weight decay is fixed, not tuned: "
        f"{optimizers.WEIGHT_DECAY:g} for `adamw`, `aadamw` and their cautious "
        "twins, "
        f"{optimizers.LION_WEIGHT_DECAY:g} for `lion` (times the learning rate, as "
        "in Optax; `harness/optimizers.py`)"
        f"{_no_decay_text(results)}. Every other hyperparameter is the "
        "library's default.",
        _RELATIVES,
        *_rate_lines(results),
        f"- **Target**, fixed before any scored run: the best final metric of any "
        f"{', '.join(f'`{o}`' for o in rules['target_family'])} tuning run "
        "(of those that ran on the workload) plus "
        f"{rules['target_margin_ties']} ties (the tie is the metric's resolution: "
        "one validation example, 0.01 bits per byte, or 0.01 decades of a training "
        "objective). Steps to target: the first "
        "recorded step at or below it (resolution: `eval every`); the median over "
        f"the scored seeds {seeds} at the rate the rate-selection rule picks "
        "counts (on the larger model, which scored one rate only, at the chosen "
        "rate), a seed that never reaches it "
        "counting as infinitely slow. Seconds to target: median steps "
        "times the fastest of the optimizer's runs per step. The target is strict "
        "by design (near the best final quality any seed-0 run reached), so on a "
        "workload whose seeds differ by more than the margin, few runs reach it.",
        f"- **Tolerance**: scored seeds {seeds} run at every grid point; the "
        "tolerance width is the span, in decades, of the contiguous grid points "
        f"around the best whose median final metric is within "
        f"{rules['tolerance_ties']} ties of the best median (≥ where the span "
        "reaches an end of the grid). A run's final metric is capped at its "
        "untrained value, so a diverged run counts as having learnt nothing. "
        "Per seed, a width that reaches an end of the grid is a lower bound "
        "(censored): a (workload, seed) pair with one is left out of the pooled "
        "paired difference, and what it bounds is listed. The seeds of one "
        "workload share its data and model, so besides the t interval that "
        "treats the pairs as independent, the workload is the unit: a "
        "two-stage bootstrap (workloads, then seeds within each) and a t "
        "interval over the workload means.",
        _PAIRED,
        _OWN_RATES,
        f"- **Larger model**: {_sweep_text(results)}, tuned on the "
        f"{rules['sweep_points']} grid points centred on each one's chosen rate "
        "for the small model (shifted inward where that rate is near an end of "
        "the grid), then the scored seeds at the chosen rate.",
        "",
    ]
    return lines + _workload_table(results)


def _above_text(results: analysis.Results) -> str:
    """Which workloads' grids reach past the standard top, and how far."""
    above: dict[int, list[str]] = {}
    for w in results.workloads:
        if results.above(w):
            above.setdefault(results.above(w), []).append(w)
    return "".join(
        f"; on {', '.join(ws)}, {n} more points past each top, at the same "
        "spacing (the workload's plan, recorded before the runs)"
        for n, ws in above.items()
    )


def _no_decay_text(results: analysis.Results) -> str:
    """Which workloads ran without the decoupled decays."""
    off = [
        w
        for w in results.workloads
        if not results.described[w].get("decoupled_decay", True)
    ]
    if not off:
        return ""
    return (
        f", and off on {', '.join(off)}, whose metric is the training objective "
        "that a decay would change (there AdamW is Adam, and Cautious AdamW "
        "masks Adam)"
    )


def _draws_text(seeds: int) -> str:
    """How many distinct bootstrap draws `seeds` seeds allow per workload."""
    return f"{seeds} seeds allow {math.comb(2 * seeds - 1, seeds)} distinct draws"


def _sweep_text(results: analysis.Results) -> str:
    """Which optimizers the larger model ran."""
    fixed = results.rules["sweep_optimizers"]
    return ", ".join(f"`{o}`" for o in fixed) + " (fixed before the runs)"


def _rate_lines(results: analysis.Results) -> list[str]:
    rules = analysis.RATE_RULES
    return [
        f"- **Tuning** on seed 0 (`{SENSITIVITY}`): {rules[SENSITIVITY]}; this "
        "chosen rate sets the paired regions, the larger model's sweep and the "
        "size comparison.",
        "- **Rate selection for time to target**: by the metric it reports, as "
        f"AlgoPerf selects (select by the metric you report): `{PRIMARY}`, "
        f"{rules[PRIMARY]}. This is the primary rule; the tuning choice "
        f"(`{SENSITIVITY}`) is shown beside it as a sensitivity check.",
        "- **Uncertainty of the profile areas**: a bootstrap over the scored "
        f"seeds, {analysis.RESAMPLES} resamples from NumPy's "
        f"`default_rng({analysis.BOOTSTRAP_SEED})`. Each resample draws, per "
        "workload, as many seeds as it has, with replacement, the same draw for "
        "every optimizer (they share initialisations and batches); times are "
        "the medians over the drawn seeds; the 95 % interval runs from the 2.5th "
        "to the 97.5th percentile of the areas. Each rate stays as seed 0 "
        "picked it (seed 0 is not resampled), and "
        f"{_draws_text(len(results.meta['seeds']))}: the intervals show seed "
        "noise at fixed rates, a lower bound on the uncertainty. Leave one "
        "out: the areas over each subset without one workload, min–max. Rank: "
        "the ranks an optimizer can take when any two whose intervals overlap "
        "count as tied. Paired: the interval of the difference of two "
        "optimizers' areas over the same resamples.",
    ]


def _workload_table(results: analysis.Results) -> list[str]:
    rows = [
        [
            w["name"],
            w["description"],
            f"{w['parameters']:,}",
            w["metric"],
            str(w["steps"]),
            str(w["batch_size"]),
            str(w["eval_every"]),
            f"{w['target']:.4g}",
            f"{w['tie']:.3g}",
        ]
        for w in results.described.values()
    ]
    header = "workload|description|parameters|metric|steps|batch|eval every|target|tie"
    return _table(header.split("|"), rows)


def _steps_cell(rows: list[dict[str, Any]], w: str, o: str, rule: str) -> str:
    runs = analysis.timed(rows, w, o, rule)
    steps = analysis.steps_to_target(rows, w, o, rule)
    reached = sum(int(r["reached"]) for r in runs)
    shown = "not reached" if math.isinf(steps) else f"{steps:g}"
    return f"{shown} ({reached}/{len(runs)}, lr {runs[0]['learning_rate']:.3g})"


_RULE_CAPTIONS = {
    PRIMARY: "at the rate where seed 0 was fastest to it (`fewest_steps`, the "
    "primary rule)",
    SENSITIVITY: "at the tuning choice, seed 0's lowest final metric "
    "(`lowest_final`, the sensitivity check)",
}


def _time_table(
    results: analysis.Results, profiles: dict[str, analysis.Profile]
) -> list[str]:
    rows = results.runs
    lines = ["## Time to target", ""]
    full = results.full_grid
    for rule in RULES:
        lines += [
            f"Median steps to target over the scored seeds {_RULE_CAPTIONS[rule]} "
            "(seeds that reached it / seeds; that peak rate).",
            "",
        ]
        optimizers = results.optimizers(full[0]) if full else []
        body = [[w] + [_steps_cell(rows, w, o, rule) for o in optimizers] for w in full]
        lines += _table(["workload"] + [f"`{o}`" for o in optimizers], body)
    if full:
        lines += _profile_lines(results, profiles)
    for w in results.workloads:
        if w in full:
            continue
        optimizers = results.optimizers(w)
        lines += [
            f"{w}, scored at the chosen rate only:",
            "",
            *_table(
                ["workload"] + [f"`{o}`" for o in optimizers],
                [[w] + [_steps_cell(rows, w, o, PRIMARY) for o in optimizers]],
            ),
        ]
    return lines


def _area_cell(p: analysis.Profile, o: str) -> str:
    return f"{p.areas[o]:.3f} [{p.low[o]:.3f}, {p.high[o]:.3f}]"


def _rank_cell(p: analysis.Profile, o: str) -> str:
    best, worst = p.ranks[o]
    return f"{best}" if best == worst else f"{best}–{worst}"


def _profile_lines(
    results: analysis.Results, profiles: dict[str, analysis.Profile]
) -> list[str]:
    seconds = {rule: results.profile(rule, seconds=True) for rule in RULES}
    primary = profiles[PRIMARY]
    header = ["optimizer"]
    for rule in RULES:
        role = "primary" if rule == PRIMARY else "sensitivity"
        header += [
            f"`{rule}` ({role}): area [95 % bootstrap]",
            "leave one out",
            "rank",
        ]
    body = [
        [f"`{o}`"]
        + [
            cell
            for p in profiles.values()
            for cell in (_area_cell(p, o), _range(*p.loo_range(o)), _rank_cell(p, o))
        ]
        for o in primary.order
    ]
    seconds_body = [
        [f"`{o}`"] + [_area_cell(p, o) for p in seconds.values()]
        for o in seconds[PRIMARY].order
    ]
    return [
        "Performance-profile areas of steps to target (AlgoPerf: the fraction of "
        f"workloads within tau x the fastest, tau in [1, {scoring.TAU_MAX:g}], "
        f"area normalised; 1 = fastest everywhere), over the {len(primary.workloads)} "
        "full-grid workload(s), under both rate-selection rules; the bootstrap, "
        "leave-one-out and rank as in the Method:",
        "",
        *_table(header, body),
        *_reach_lines(profiles),
        *_loo_lines(profiles),
        *_separated_lines(profiles),
        "Seconds to target (median steps times the fastest run's seconds per "
        "step), areas [95 % bootstrap]:",
        "",
        *_table(
            ["optimizer", *(f"`{rule}`" for rule in RULES)],
            seconds_body,
        ),
        "![performance profiles](workloads_profile.png)",
        "",
    ]


def _unreached(rule: str, p: analysis.Profile) -> str:
    """What the workloads no median reaches do to `rule`'s areas ("" if none)."""
    n, k = len(p.workloads), len(p.reached)
    missed = [w for w in p.workloads if w not in p.reached]
    if not missed:
        return ""
    return (
        f"- `{rule}`: {', '.join(missed)} reached by no optimizer's median: "
        f"it adds nothing to any area, so every area is at most {k}/{n} = "
        f"{k / n:.2f}. Over the {k} workloads some median reaches, each area "
        f"is {n}/{k} of the one above, in the same order (the leave-one-out "
        "subset without it)."
    )


def _reach_lines(profiles: dict[str, analysis.Profile]) -> list[str]:
    lines = [
        _unreached(rule, p) or f"- `{rule}`: every workload is reached by some median."
        for rule, p in profiles.items()
    ]
    return [*lines, ""]


def _loo_lines(profiles: dict[str, analysis.Profile]) -> list[str]:
    lines = ["Orders that leaving one workload out does not keep:", ""]
    for rule, p in profiles.items():
        by_pair: dict[tuple[str, str], list[str]] = {}
        for a, b, w, reversed_ in analysis.order_changes(p.areas, p.loo):
            how = "reversed" if reversed_ else "level"
            by_pair.setdefault((a, b), []).append(f"{how} without {w}")
        listed = "; ".join(
            f"`{a}` ahead of `{b}`: {', '.join(how)}" for (a, b), how in by_pair.items()
        )
        lines.append(f"- `{rule}`: {listed or 'none'}.")
    return [*lines, ""]


def _separated_lines(profiles: dict[str, analysis.Profile]) -> list[str]:
    lines = [
        "Pairs whose paired bootstrap interval of the area difference excludes 0 "
        "(first minus second [95 %]); every other pair's includes it:",
        "",
    ]
    for rule, p in profiles.items():
        listed = "; ".join(
            f"`{a}` − `{b}` {d:+.3f} [{low:+.3f}, {high:+.3f}]"
            for a, b, d, low, high in p.separated()
        )
        lines.append(f"- `{rule}`: {listed or 'none'}.")
    return [*lines, "", f"{_stable_text(profiles)}", ""]


def _width_cell(results: analysis.Results, w: str, o: str) -> str:
    width, open_ = results.width(w, o)
    return f"{'≥' if open_ else ''}{width:.2f}"


def _tolerance_table(results: analysis.Results) -> list[str]:
    optimizers = results.meta["optimizers"]
    body = [
        [w, f"{results.tolerance(w):.3g}"]
        + [_width_cell(results, w, o) for o in optimizers]
        for w in results.full_grid
    ]
    return [
        "## Learning-rate tolerance",
        "",
        "Width in decades of the rates whose median final metric is within the "
        f"tolerance of the optimizer's best (grid resolution {results.spacing:.3g} "
        "decades; ≥: the range reaches an end of the grid).",
        "",
        *_table(["workload", "tolerance"] + [f"`{o}`" for o in optimizers], body),
        *_pooled_table(results),
        "![tolerance](workloads_tolerance.png)",
        "",
    ]


def _pooled_table(results: analysis.Results) -> list[str]:
    """Per pair, the per-seed width difference with censored pairs left out."""
    body = []
    for pair in _pairs(results):
        pairs = results.width_pairs(pair)
        groups = analysis.uncensored(pairs)
        used = [d for g in groups.values() for d in g]
        if not used:
            continue
        mean, low, high = analysis.interval(used)
        _, b_low, b_high = analysis.cluster_bootstrap(groups)
        w_mean, w_low, w_high = analysis.interval(
            [float(np.mean(g)) for g in groups.values()]
        )
        bound = analysis.bounded_mean(pairs)
        body.append(
            [
                f"`{pair[0]}` − `{pair[1]}`",
                f"{len(used)} of {len(pairs)}",
                f"{mean:+.2f}",
                f"[{low:+.2f}, {high:+.2f}]",
                f"[{b_low:+.2f}, {b_high:+.2f}] ({len(groups)} workloads)",
                f"{w_mean:+.2f} [{w_low:+.2f}, {w_high:+.2f}]",
                _censored_text(pairs),
                "-"
                if bound is None
                else f"{bound[1]} {bound[0]:+.2f} ({bound[2]} pairs)",
            ]
        )
    if not body:
        return []
    header = [
        "pair",
        "pairs used",
        "mean",
        "95 % t, pairs independent",
        "95 % bootstrap, workload as unit",
        "t over workload means",
        "left out (censored): what each bounds",
        "one-sided pairs at their bounds",
    ]
    return [
        "Width difference per seed, paired, in decades: first minus second on "
        "the same (workload, seed), over the pairs with no censored width. A "
        "censored pair is left out; one censored on one side only still bounds "
        "the difference (≤ where the second's width is censored), and the last "
        "column puts those at their bounds.",
        "",
        *_table(header, body),
    ]


def _interval_cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, low, high = analysis.interval(values)
    return f"{mean:+.3g} [{low:+.3g}, {high:+.3g}]"


def _pairs(results: analysis.Results) -> list[tuple[str, str]]:
    return [tuple(p) for p in results.rules["paired_comparisons"]["equal_rates"]]


def _paired_table(results: analysis.Results) -> list[str]:
    body = []
    for w in results.full_grid:
        for pair in _pairs(results):
            by_region = results.paired_regions(w, pair)
            cells = [_interval_cell(by_region[region]) for region in REGIONS]
            body.append([w, f"`{pair[0]}` − `{pair[1]}`", *cells])
    return [
        "## AAdam minus Adam at equal learning rates",
        "",
        "Final metric, first minus second, paired by seed and averaged over the "
        "grid points below, at and above the second's chosen rate: mean over "
        "seeds [95 % t interval]. An interval that excludes 0 is a difference "
        "beyond the seeds' noise.",
        "",
        *_table(["workload", "pair", "below", "at", "above"], body),
    ]


def _cautious_table(results: analysis.Results) -> list[str]:
    """The recorded own-rate comparisons on every workload that ran both."""
    pairs = [tuple(p) for p in results.rules["paired_comparisons"]["own_rates"]]
    body = [
        [w, *(_interval_cell(analysis.tuned_difference(results.runs, w, p))
              for p in pairs)]
        for w in results.workloads
        if all(set(p) <= set(results.optimizers(w)) for p in pairs)
    ]  # fmt: skip
    if not pairs or not body:
        return []
    return [
        "## The cautious question: each at its own chosen rate",
        "",
        "Final metric, first minus second, each optimizer at its own tuning "
        "choice, paired by seed: mean over the scored seeds [95 % t interval]. "
        "Below 0: the first ends lower. Units are each workload's metric.",
        "",
        *_table(["workload", *(f"`{a}` − `{b}`" for a, b in pairs)], body),
    ]


def _size_table(results: analysis.Results) -> list[str]:
    sizes = [w for w in ("bytes_lm", "bytes_lm_1m") if w in results.workloads]
    if len(sizes) < 2:
        return []
    large = results.optimizers(sizes[1])
    body = []
    for w in sizes:
        finals = [
            scoring.plus_minus(
                *scoring.mean_std(
                    [analysis.capped(r) for r in analysis.scored(results.runs, w, o)]
                ),
                digits=4,
            )
            for o in large
        ]
        pair = (large[0], large[1])
        body.append(
            [
                w,
                f"{results.described[w]['parameters']:,}",
                *finals,
                _interval_cell(analysis.tuned_difference(results.runs, w, pair)),
            ]
        )
    return [
        "## Model size",
        "",
        "Final bits per byte at each optimizer's chosen rate (mean ± sd over the "
        f"scored seeds), and `{large[0]}` − `{large[1]}` at their own chosen rates, "
        "paired by seed [95 % t interval].",
        "",
        *_table(
            [
                "workload",
                "parameters",
                *(f"`{o}`" for o in large),
                f"`{large[0]}` − `{large[1]}`",
            ],
            body,
        ),
    ]


def plot_tolerance(path: pathlib.Path, results: analysis.Results) -> None:
    workloads = results.full_grid
    fig, axes = plots.panels(len(workloads))
    for ax, w in zip(axes, workloads, strict=True):
        best = math.inf
        for o in results.meta["optimizers"]:
            values = _grid_values(results, w, o)
            medians = np.median(values, axis=1)
            best = min(best, medians.min())
            rates = results.rates(w, o)
            ax.plot(rates, medians, label=o, **plots.style(o))
            low, high = values.min(axis=1), values.max(axis=1)
            ax.fill_between(rates, low, high, color=plots.style(o)["color"], alpha=0.12)
        # From just below the best to 8 tolerances above: the rates that matter.
        tolerance = results.tolerance(w)
        ax.axhspan(best, best + tolerance, color="0.85", zorder=0)
        ax.set_ylim(best - tolerance, best + 8 * tolerance)
        ax.set_xscale("log")
        ax.set_title(w)
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(f"final {results.described[w]['metric']}")
    plots.save(
        fig,
        path,
        "Final metric by peak learning rate: median over seeds, band: their "
        "range, grey: within tolerance of the best optimizer's best median",
    )


def _grid_values(results: analysis.Results, w: str, o: str) -> np.ndarray:
    """Capped final metrics, one row per grid point, one column per seed."""
    runs = analysis.select(results.runs, workload=w, optimizer=o, phase="score")
    return np.array(
        [
            [analysis.capped(r) for r in runs if r["point"] == p]
            for p in range(len(results.rates(w, o)))
        ]
    )


def plot_profile(path: pathlib.Path, results: analysis.Results) -> None:
    optimizers = results.meta["optimizers"]
    fig, axes = plots.panels(len(RULES))
    for ax, rule in zip(axes, RULES, strict=True):
        table = analysis.times(results.runs, results.full_grid, optimizers, False, rule)
        profiles = scoring.performance_profile(table, analysis.TAUS)
        for o, p in profiles.items():
            ax.step(analysis.TAUS, p, where="post", label=o, **plots.style(o))
        role = "primary" if rule == PRIMARY else "sensitivity"
        ax.set_title(f"rate by {rule} ({role})")
        ax.set_xlabel("tau (steps to target / fastest)")
        ax.set_ylabel("fraction of workloads")
        ax.set_ylim(-0.03, 1.03)
    plots.save(fig, path, "Performance profiles, steps to target", legend_columns=4)


def plot_curves(path: pathlib.Path, results: analysis.Results) -> None:
    fig, axes = plots.panels(len(results.workloads))
    for ax, w in zip(axes, results.workloads, strict=True):
        for o in results.optimizers(w):
            curves = analysis.select(results.curves, workload=w, optimizer=o)
            steps = sorted({c["step"] for c in curves})
            median = [
                np.median([c["metric"] for c in curves if c["step"] == s])
                for s in steps
            ]
            ax.plot(steps, median, label=o, **plots.style(o))
        target, tie = (results.described[w][k] for k in ("target", "tie"))
        ax.axhline(target, color="k", linewidth=0.6)
        # Near the target, where the optimizers part.
        ax.set_ylim(target - 20 * tie, target + 40 * tie)
        ax.set_title(w)
        ax.set_xlabel("step")
        ax.set_ylabel(results.described[w]["metric"])
    plots.save(
        fig,
        path,
        "Validation curves at the chosen rates (median over "
        "scored seeds); black line: target",
    )


# The cautious-by-horizon part (`workloads.py --horizon`).
_SHORT_NAMES = {
    "adamw": "AdamW",
    "aadamw": "AAdamW",
    "cautious_adamw": "C-AdamW",
    "cautious_aadamw": "C-AAdamW",
}
HORIZON_RULES = (analysis.ALL_SEEDS, analysis.FIRST_SEED)


def _short(name: str) -> str:
    return _SHORT_NAMES.get(name, name)


def _pair_text(pair: tuple[str, str] | list[str]) -> str:
    return f"{_short(pair[0])} − {_short(pair[1])}"


def _difference_text(values: tuple[float, float, float, int]) -> str:
    mean, low, high, n = values
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def write_horizon(out: pathlib.Path) -> None:
    """Writes workloads_horizon.md and its plot from the part's stored files."""
    results = analysis.HorizonResults(out)
    mode = " with --quick (a smoke test: tiny budgets)"
    run = {**results.meta, "command": relative_command(results.meta["command"])}
    lines = [
        *markdown.header(
            "Cautious by horizon: the mask and the acceleration at 300 and 1200 steps",
            "benchmarks/workloads.py --horizon",
            run,
            mode if results.meta["quick"] else "",
            _SHARED,
        ),
        "- Wall time per horizon: "
        + ", ".join(f"{h} steps {s:.0f} s" for h, s in results.meta["seconds"].items())
        + ".",
        "",
    ]
    lines += _horizon_summary(results, out) + _horizon_rules(results)
    lines += _horizon_finals(results) + _horizon_best(results)
    lines += _horizon_differences(results)
    markdown.write(out / "workloads_horizon.md", lines)
    plot_horizon(out / "workloads_horizon_curves.png", results)


def _horizon_summary(results: analysis.HorizonResults, out: pathlib.Path) -> list[str]:
    rules = results.rules
    primary = analysis.HORIZON_BEST_RATE["primary"]
    seeds = len(rules["seeds"])
    lines = [
        "## Summary",
        "",
        f"Final {results.meta['horizons'][0]['metric']} on {rules['reference']}, "
        f"{seeds} seeds, each optimizer at its best of three rates (`{primary}`: "
        "chosen on the seeds it is scored on, so optimistic for every optimizer "
        "alike); first minus second, mean paired by seed "
        f"[{rules['interval_level']:.0%} t interval]. Below 0: the first ends "
        "lower.",
        "",
    ]
    for pair in rules["comparisons"]:
        parts = [
            f"{h} steps {_difference_text(results.difference(h, pair, primary))}"
            for h in results.horizons
        ]
        if len(results.horizons) > 1:
            change = _difference_text(results.change(pair, primary))
            parts.append(f"change from the first to the last horizon {change}")
        lines.append(f"- {_pair_text(pair)}: " + "; ".join(parts) + ".")
    ends = [
        f"{_short(o)} at {h} steps"
        for h in results.horizons
        for o in results.optimizers
        if results.choice(h, o, primary)[0] != rules["centres"][o]
    ]
    if ends:
        lines.append(
            "- Best rate at an end of the three (a better rate may lie "
            f"beyond it): {', '.join(ends)}."
        )
    reference = out / "workloads.csv"
    if reference.exists() and not results.meta["quick"]:
        gap, median, n = analysis.reproduction_gap(
            results.runs, records.read_csv(reference), rules["reference"]
        )
        if n:
            lines.append(
                f"- The {results.horizons[0]}-step control repeats {n} scored runs "
                "of the stored full-grid study (same optimizer, rate, seed and "
                "budget): their final metrics differ by at most "
                f"{gap:.3f} (median {median:.4f}). {_machines(results, out)}"
            )
    return [*lines, ""]


def _machines(results: analysis.HorizonResults, out: pathlib.Path) -> str:
    """Where the stored study's reference runs and this part ran."""
    stored = records.read_json(out / "workloads_run.json")["invocations"]
    machines = {
        i["machine"] for i in stored if results.rules["reference"] in i["workloads"]
    }
    if machines == {results.meta["machine"]}:
        return "Both ran on the same machine."
    return (
        f"The stored runs ran on {', '.join(sorted(machines))}; this part on "
        f"{results.meta['machine']}: float rounding that differs between the two, "
        "amplified by training, can move a final metric."
    )


def _horizon_rules(
    results: analysis.HorizonResults, run_file: str = "workloads_horizon_run.json"
) -> list[str]:
    rules = results.rules
    rates = "; ".join(
        f"{_short(o)} "
        + ", ".join(
            f"{rate:.3g} (point {p})"
            for p, rate in zip(rules["points"][o], rules["rates"][o], strict=True)
        )
        for o in rules["optimizers"]
    )
    best = rules["best_rate"]
    return [
        "## Rules, as recorded when the run started",
        "",
        f"`{run_file}` holds them, written before any training.",
        "",
        f"- Rates: {rules['rate_rule']}. {rates}.",
        f"- Seeds: {', '.join(map(str, rules['seeds']))}, every one at every "
        f"rate and horizon; {rules['pairing']}.",
        "- Horizons: "
        + ", ".join(
            f"{h} steps (validation every {rules['eval_every'][str(h)]})"
            for h in rules["horizons"]
        )
        + f"; schedule: {rules['schedule']} (warm-up fraction "
        f"{rules['warmup_fraction']}).",
        f"- Best rate of the three, primary (`{best['primary']}`): "
        f"{best['rules'][best['primary']]}. Sensitivity (`{best['sensitivity']}`): "
        f"{best['rules'][best['sensitivity']]}.",
        "- Comparisons: "
        + ", ".join(_pair_text(p) for p in rules["comparisons"])
        + f"; {rules['interval']}, level {rules['interval_level']:.0%}; "
        f"metric: {rules['metric']}.",
        "",
    ]


def _horizon_finals(results: analysis.HorizonResults) -> list[str]:
    body = []
    primary = analysis.HORIZON_BEST_RATE["primary"]
    for h in results.horizons:
        for o in results.optimizers:
            best, _ = results.choice(h, o, primary)
            for p, rate in zip(
                results.rules["points"][o], results.rules["rates"][o], strict=True
            ):
                finals = results.finals(h, o, p)
                cell = f"{np.mean(finals):.3f} ± {np.std(finals, ddof=1):.3f}"
                body.append(
                    [
                        str(h),
                        _short(o),
                        f"{rate:.3g}",
                        str(p - results.rules["centres"][o]),
                        f"**{cell}**" if p == best else cell,
                        str(len(finals)),
                    ]
                )
    return [
        "## Final metric per optimizer, rate and horizon",
        "",
        "Mean ± sd over seeds of the capped final metric; offset: grid points "
        "from the stored study's choice; bold: the best of the three "
        f"(`{primary}`).",
        "",
        *_table(["steps", "optimizer", "rate", "offset", "final", "seeds"], body),
    ]


def _horizon_best(results: analysis.HorizonResults) -> list[str]:
    body = []
    for h in results.horizons:
        for o in results.optimizers:
            cells = [str(h), _short(o)]
            for rule in HORIZON_RULES:
                point, seeds = results.choice(h, o, rule)
                finals = analysis.horizon_finals(results.runs, h, o, point)
                values = [finals[s] for s in seeds]
                rate = results.rules["rates"][o][
                    results.rules["points"][o].index(point)
                ]
                cells += [
                    f"{rate:.3g}",
                    f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
                    if len(values) > 1
                    else f"{values[0]:.3f}",
                ]
            body.append(cells)
    seeds = results.rules["seeds"]
    return [
        "## Best of three rates",
        "",
        f"Per optimizer and horizon, the rate each rule picks and the mean ± sd "
        f"of the seeds it scores: `{HORIZON_RULES[0]}` picks and scores on seeds "
        f"{seeds[0]}-{seeds[-1]}; `{HORIZON_RULES[1]}` picks on seed {seeds[0]} "
        f"and scores seeds {seeds[1]}-{seeds[-1]}.",
        "",
        *_table(
            [
                "steps",
                "optimizer",
                f"rate ({HORIZON_RULES[0]})",
                "final",
                f"rate ({HORIZON_RULES[1]})",
                "final",
            ],
            body,
        ),
    ]


def _horizon_differences(results: analysis.HorizonResults) -> list[str]:
    body = []
    for pair in results.rules["comparisons"]:
        for rule in HORIZON_RULES:
            cells = [_pair_text(pair), f"`{rule}`"]
            cells += [
                _difference_text(results.difference(h, pair, rule))
                for h in results.horizons
            ]
            if len(results.horizons) > 1:
                cells.append(_difference_text(results.change(pair, rule)))
            cells.append(str(results.difference(results.horizons[-1], pair, rule)[3]))
            body.append(cells)
    change = (
        [f"{results.horizons[-1]} − {results.horizons[0]}"]
        if len(results.horizons) > 1
        else []
    )
    return [
        "## Paired differences",
        "",
        "First minus second, each at its own best rate under the rule, paired "
        f"by seed: mean [{results.rules['interval_level']:.0%} t interval]. The "
        "last difference column is the change of the pair's difference from the "
        "short horizon to the long one, paired by seed.",
        "",
        *_table(
            [
                "pair",
                "rule",
                *(f"{h} steps" for h in results.horizons),
                *change,
                "seeds",
            ],
            body,
        ),
    ]


def plot_horizon(path: pathlib.Path, results: analysis.HorizonResults) -> None:
    """Validation curves (mean over seeds) at each optimizer's best rate."""
    primary = analysis.HORIZON_BEST_RATE["primary"]
    fig, axes = plots.panels(len(results.horizons), cols=2)
    for ax, h in zip(axes, results.horizons, strict=True):
        finals = []
        for o in results.optimizers:
            point, _ = results.choice(h, o, primary)
            steps, mean = results.curve(h, o, point)
            rate = results.rules["rates"][o][results.rules["points"][o].index(point)]
            ax.plot(steps, mean, label=f"{_short(o)}", **plots.style(o))
            finals.append(mean[-1])
            ax.annotate(f"{rate:.2g}", (steps[-1], mean[-1]), fontsize=7)
        finite = [f for f in finals if math.isfinite(f)]
        if finite:
            ax.set_ylim(min(finite) - 0.2, min(finite) + 1.0)
        ax.set_title(f"{h} steps")
        ax.set_xlabel("step")
        ax.set_ylabel(results.meta["horizons"][0]["metric"])
    plots.save(
        fig,
        path,
        f"{results.rules['reference']}: validation curves at each optimizer's "
        f"best rate (`{primary}`), mean over seeds; labels: peak rate",
        legend_columns=4,
    )
