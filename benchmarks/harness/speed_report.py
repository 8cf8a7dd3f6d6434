"""Writes speed.md and speed.png from the files a speed run saved.

Reads `speed.csv` (a row per case and optimizer) and `speed_run.json` (the
command, machine, provenance, and the facts that are not timings: state bytes
per parameter and compilations per step), so the report can be rewritten
without re-running (`python benchmarks/speed.py --report-only`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from harness import markdown, plots, records

AADAM = "aadam[sign_change]"
# The project's goals, checked against what a run measured.
ISOLATED_UPDATE_GOAL = 1.40  # AAdam's isolated update / Adam's, at the largest size
WHOLE_STEP_GOAL = 1.03  # AAdam's whole training step / Adam's (Transformer, CNN)
# The cautious mask's one reduction per leaf must not cost the Transformer's
# whole step more than 3 %: each cautious optimizer's step / its reference's.
CAUTIOUS_WHOLE_STEP_GOAL = 1.03
# A cautious optimizer's like-for-like reference: the optimizer it masks.
REFERENCES = {"cautious_adamw": "adamw", "cautious_aadamw": "aadamw"}
# The goals as the run JSON records them (the report reads them from there).
GOALS = {
    "whole_step": {
        "ratio": f"{AADAM} / adam, whole training step, mnist_cnn and bytes_lm",
        "at_most": WHOLE_STEP_GOAL,
    },
    "isolated_update": {
        "ratio": f"{AADAM} / adam, isolated update, float32, the largest size "
        "(also in fresh processes, with and without multi-output fusion)",
        "at_most": ISOLATED_UPDATE_GOAL,
    },
    "cautious_whole_step": {
        "ratio": ", ".join(f"{c} / {r}" for c, r in REFERENCES.items())
        + ", whole training step, bytes_lm (the Transformer)",
        "at_most": CAUTIOUS_WHOLE_STEP_GOAL,
    },
}
MULTI_OUTPUT_FUSION = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion=true"
SECTIONS = ("isolated update", "whole step", "multi-output fusion", "dispatch")
# A timing's columns: its median and interquartile range.
MS = ("median_ms", "q25_ms", "q75_ms")
RATIO = ("ratio_to_adam", "ratio_q25", "ratio_q75")
# A cautious optimizer's time / its reference's, taken within each round.
REFERENCE_RATIO = ("ratio_to_reference", "reference_ratio_q25", "reference_ratio_q75")

Row = dict[str, Any]


def write(out: pathlib.Path, run: Mapping[str, Any]) -> None:
    """speed.md and speed.png in `out`, from its speed.csv and the run JSON."""
    rows = records.read_csv(out / "speed.csv")
    isolated, whole, fusion, dispatch = (pick(rows, section=s) for s in SECTIONS)
    plot(out / "speed.png", isolated, whole, goals(run))
    markdown.write(
        out / "speed.md",
        _header(run),
        _goals(isolated, whole, fusion, run),
        _whole_step(whole),
        _isolated(isolated),
        _fusion(fusion),
        _dispatch(dispatch),
    )


def goals(run: Mapping[str, Any]) -> dict[str, float]:
    """Each goal's bound, as the run recorded it (a run from before the goals
    were recorded: the constants above, which it was checked against)."""
    recorded = run.get("goals", GOALS)
    bounds = {name: goal["at_most"] for name, goal in recorded.items()}
    return {name: bounds.get(name, goal["at_most"]) for name, goal in GOALS.items()}


def pick(rows: list[Row], **match: Any) -> list[Row]:
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in match.items())]


def goal_line(what: str, ratio: float, goal: float) -> str:
    verdict = "met" if ratio <= goal else "NOT met"
    # Three decimals where two would round a miss onto the goal.
    digits = 2 if verdict == "met" or round(ratio, 2) > goal else 3
    return f"- {what}: {ratio:.{digits}f} (goal <= {goal:.2f}: {verdict})."


def _ms(row: Row, digits: int) -> str:
    """Milliseconds per step, median [IQR]."""
    return markdown.spread(*(row[k] for k in MS), digits)


def _ratio(row: Row) -> str:
    """The ratio to adam's time in the same round, median [IQR]."""
    return markdown.spread(*(row[k] for k in RATIO), 2)


def _reference_ratio(row: Row) -> str:
    """A cautious optimizer's ratio to its reference in the same rounds, or
    "-" for the other rows."""
    if row.get("reference", "") == "":
        return "-"
    ratio = markdown.spread(*(row[k] for k in REFERENCE_RATIO), 2)
    return f"{ratio} ({row['reference']})"


def _columns(rows: list[Row], *keys: str) -> list[list[Any]]:
    """Each column of `keys` over the rows."""
    return [[r[k] for r in rows] for k in keys]


def _hlo(value: Any) -> str:
    """An HLO fact, or "-" where the case's HLO was not read."""
    if value == "":
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _header(run: Mapping[str, Any]) -> list[str]:
    quick = (
        " in **--quick** mode (small sizes; not results)" if run.get("quick") else ""
    )
    # Runs before the machine line named the backend stored it apart.
    backend = "" if "backend" in run["machine"] else f" JAX backend `{run['backend']}`."
    return markdown.header(
        "Speed and memory: the AAdam family against optax.adam",
        "benchmarks/speed.py",
        run,
        quick,
        backend,
    ) + [
        "",
        "Every optimizer of a case runs once per round, in a rotating order, and "
        "a sample is k steps inside one compiled loop (the same k for all, "
        "`k` column), so the time is the step's, not Python's. Cells are the "
        "median over the rounds with the interquartile range in brackets; a "
        "ratio is taken within each round (time / adam's time), then its median "
        "and IQR. A cautious optimizer's `ratio to reference` is taken the same "
        "way against the optimizer it masks, timed in the same rounds "
        "(cautious_adamw / adamw, cautious_aadamw / aadamw): the cost of the "
        "mask alone. Absolute times on a shared machine vary from run to run; "
        "the interleaved ratios are what to compare.",
    ]


def _goals(
    isolated: list[Row], whole: list[Row], fusion: list[Row], run: Mapping[str, Any]
) -> list[str]:
    bounds = goals(run)
    return [
        "",
        "## Goals",
        "",
        *_whole_step_goals(whole, bounds["whole_step"]),
        *_cautious_goals(whole, bounds["cautious_whole_step"]),
        *_isolated_goals(isolated, bounds["isolated_update"]),
        *_fusion_goals(fusion, bounds["isolated_update"]),
        *_code_facts(run),
    ]


def _whole_step_goals(whole: list[Row], goal: float) -> list[str]:
    return [
        goal_line(
            f"AAdam whole step / Adam's, {row['case']}", row["ratio_to_adam"], goal
        )
        for row in pick(whole, optimizer=AADAM)
        if "cnn" in row["case"] or "bytes_lm" in row["case"]
    ]


def _cautious_goals(whole: list[Row], goal: float) -> list[str]:
    """Each cautious optimizer's Transformer step against its reference's: what
    the mask's reduction per leaf costs a whole step."""
    return [
        goal_line(
            f"{row['optimizer']} whole step / {row['reference']}'s, {row['case']}",
            row["ratio_to_reference"],
            goal,
        )
        for row in whole
        if "bytes_lm" in row["case"] and row.get("reference", "") != ""
    ]


def _isolated_goals(isolated: list[Row], goal: float) -> list[str]:
    if not isolated:
        return []
    largest = max(r["size"] for r in isolated)
    lines = [
        goal_line(
            f"AAdam isolated update / Adam's, {row['case']}, {largest:.0e} params",
            row["ratio_to_adam"],
            goal,
        )
        for row in pick(isolated, size=largest, dtype="float32", optimizer=AADAM)
    ]
    for row in pick(isolated, size=largest, optimizer=AADAM):
        (adam,) = pick(isolated, case=row["case"], size=largest, optimizer="adam")
        if row["xla_bytes_per_param"] and adam["xla_bytes_per_param"]:
            lines.append(
                f"- XLA's bytes accessed, AAdam / Adam, {row['case']}: "
                f"{row['xla_bytes_per_param'] / adam['xla_bytes_per_param']:.2f}"
                " (the floor of this backend's fusions, see below)."
            )
    return lines


def _fusion_goals(fusion: list[Row], goal: float) -> list[str]:
    lines = []
    for row in pick(fusion, optimizer=AADAM):
        adam = pick(fusion, optimizer="adam", xla_flags=row["xla_flags"])[0]
        # A ratio can improve because Adam got slower: give both times.
        what = (
            f"Same, fresh process, {row['layout']} leaf layout, XLA_FLAGS "
            f"{row['xla_flags']} (AAdam {row['median_ms']:.1f} ms, "
            f"Adam {adam['median_ms']:.1f} ms)"
        )
        lines.append(goal_line(what, row["ratio_to_adam"], goal))
    return lines


def _code_facts(run: Mapping[str, Any]) -> list[str]:
    """Compilations per step and state sizes: properties of the code, not
    timings."""
    compilations = run["compilations"]
    recompiled = sorted(name for name, count in compilations.items() if count != 1)
    return [
        "- Compilations of each jitted step over 5 steps: "
        + (
            f"more than 1 for {recompiled}." if recompiled else "1 for every optimizer."
        ),
        *(
            f"- State bytes per parameter, {name}: {value:.2f}"
            for name, value in run["state_bytes_per_param"].items()
        ),
    ]


def _whole_step(whole: list[Row]) -> list[str]:
    if not whole:
        return []
    table = markdown.table(
        ["case", "params", "optimizer", "ms per step", "ratio to adam"]
        + ["ratio to reference", "k"],
        (
            [r["case"], f"{r['size']:,}", r["optimizer"], _ms(r, 3), _ratio(r)]
            + [_reference_ratio(r), r["steps_per_sample"]]
            for r in whole
        ),
        numeric="lrlrrrr",
    )
    models = sorted(
        {f"- {r['case'].split(' ')[0]}: {r['description']}." for r in whole}
    )
    return [
        "",
        "## Whole training step (forward, backward, update)",
        "",
        *table,
        "",
        *models,
    ]


ISOLATED_METHOD = [
    "`floor` is the fraction of the bandwidth floor reached: minimal bytes "
    "(read params, grads and state; write params and state) over the "
    "bandwidth a fused `y + a*x` reached in the same rounds. `XLA B/param` "
    "is XLA's own estimate for one step.",
    "",
    "Without multi-output fusion (XLA:CPU's default) every array a step "
    "writes is its own kernel, which reads all it needs: Adam writes 3 "
    "arrays per leaf (mu, nu, params), AAdam 5 (mu, nu, prev_update, the "
    "sign, params). Per float32 parameter that is mu 12 B, nu 12 B and "
    "params 16 B for Adam (40 B), and mu 12, nu 12, prev_update 21 "
    "(g, mu, nu, prev_update, sign in; prev_update out), sign 5 and "
    "params 12 B for AAdam (62 B): 1.55 times Adam's, above the 1.36 of "
    "the minimal traffic (`min B/param`). The same count of kernels sets "
    "the fixed cost per leaf that dominates small models.",
]


def _isolated(isolated: list[Row]) -> list[str]:
    if not isolated:
        return []
    largest = max(r["size"] for r in isolated)
    table = markdown.table(
        ["case", "optimizer", "ms", "ratio to adam", "ratio to reference"]
        + ["min B/param", "XLA B/param", "floor", "large copies", "fusions"],
        (
            [r["case"], r["optimizer"], _ms(r, 2), _ratio(r), _reference_ratio(r)]
            + [f"{r['min_bytes_per_param']:.1f}", _hlo(r["xla_bytes_per_param"])]
            + [f"{r['floor_fraction']:.2f}", _hlo(r["large_copies"])]
            + [_hlo(r["fusions"])]
            for r in pick(isolated, size=largest)
        ),
        numeric="llrrrrrrrr",
    )
    return [
        "",
        f"## Isolated update (update + apply_updates), {largest:.0e} params",
        "",
        *ISOLATED_METHOD,
        "",
        *table,
        *_all_sizes(isolated),
    ]


def _all_sizes(isolated: list[Row]) -> list[str]:
    names = list(dict.fromkeys(r["optimizer"] for r in isolated))
    cases = dict.fromkeys((r["case"], r["size"]) for r in isolated)
    rows = []
    for case, size in cases:
        cells = {r["optimizer"]: r for r in pick(isolated, case=case, size=size)}
        ratios = [
            f"{cells[n]['ratio_to_adam']:.2f}" if n in cells else "-" for n in names
        ]
        rows.append([case, f"{size:.0e}", *ratios])
    return [
        "",
        "### All sizes: median ratio to adam",
        "",
        *markdown.table(["case", "size", *names], rows, "lr" + "r" * len(names)),
    ]


def _fusion(fusion: list[Row]) -> list[str]:
    if not fusion:
        return []
    table = markdown.table(
        ["XLA_FLAGS", "case", "optimizer", "ms", "ratio to adam", "XLA B/param"]
        + ["fusions"],
        (
            [r["xla_flags"], r["case"], r["optimizer"], _ms(r, 2), _ratio(r)]
            + [f"{r['xla_bytes_per_param']:.1f}", r["fusions"]]
            for r in fusion
        ),
        numeric="lllrrrr",
    )
    return [
        "",
        "## XLA:CPU multi-output fusion",
        "",
        f"The isolated update in two fresh processes, XLA_FLAGS unset and "
        f"`XLA_FLAGS={MULTI_OUTPUT_FUSION}`.",
        "",
        *table,
    ]


def _dispatch(dispatch: list[Row]) -> list[str]:
    if not dispatch:
        return []
    table = markdown.table(
        ["case", "optimizer", "state leaves", "per call us", "in loop us"]
        + ["host us", "host ratio to adam"],
        (
            [r["case"], r["optimizer"], r["state_leaves"]]
            + [f"{1e3 * r['per_call_ms']:.0f}", f"{1e3 * r['in_loop_ms']:.0f}"]
            + [markdown.spread(*(1e3 * r[k] for k in MS), 0), _ratio(r)]
            for r in dispatch
        ),
        numeric="llrrrrr",
    )
    return [
        "",
        "## Dispatch: what the host adds to one jitted update call",
        "",
        "The isolated update timed as one call per step and as steps in one "
        "compiled loop, interleaved; host cost = per-call time - in-loop time "
        "(microseconds, median [IQR] over the rounds).",
        "",
        *table,
    ]


def plot(
    path: pathlib.Path,
    isolated: list[Row],
    whole: list[Row],
    bounds: Mapping[str, float] | None = None,
) -> None:
    """Ratio to adam (median and IQR): the isolated update by size, and the
    whole step by model. `bounds` are `goals(run)` (the constants by default)."""
    bounds = bounds or goals({})
    fig, (left, right) = plots.side_by_side(2, (12, 4.5))
    _plot_isolated(left, isolated, bounds["isolated_update"])
    _plot_whole(right, whole, bounds["whole_step"])
    plots.finish(fig, path, dpi=120)


def _plot_isolated(ax: Any, isolated: list[Row], goal: float) -> None:
    for case in dict.fromkeys(r["case"] for r in isolated):
        points = pick(isolated, case=case, optimizer=AADAM)
        if len({r["size"] for r in points}) > 1:
            sizes = [r["size"] for r in points]
            median, q25, q75 = _columns(points, *RATIO)
            plots.band(ax, sizes, median, q25, q75, 0.2, marker="o", label=case)
    plots.goal(ax, goal)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("AAdam time / optax.adam time")
    ax.set_title("isolated update (median, IQR band)")
    if isolated:
        ax.legend(fontsize=7)


def _plot_whole(ax: Any, whole: list[Row], goal: float) -> None:
    cases = list(dict.fromkeys(r["case"] for r in whole))
    names = dict.fromkeys(r["optimizer"] for r in whole)
    series = {}
    for name in names:
        cells = [pick(whole, case=c, optimizer=name)[0] for c in cases]
        series[name] = _columns(cells, *RATIO)
    plots.bars(ax, [case.replace(" (", "\n(") for case in cases], series)
    plots.goal(ax, goal)
    ax.set_ylabel("step time / optax.adam step time")
    ax.set_title("whole training step (median, IQR)")
    if whole:
        ax.set_ylim(0.8, max(1.3, max(r["ratio_q75"] for r in whole) + 0.05))
        ax.legend(fontsize=7)
