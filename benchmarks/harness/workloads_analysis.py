"""The numbers of the workloads report, computed from the stored runs.

Pure functions of `workloads.csv` rows and `workloads_run.json`: time to
target under either rate-selection rule; performance-profile areas with a
bootstrap interval over seeds and a leave-one-workload-out range;
learning-rate tolerance, with widths that reach an end of the grid kept apart
as censored; paired differences with confidence intervals. The study's rules
(`code_rules`) live here too, so that a run records them when it starts and
the report can compare them with a stored record. The report
(`workloads_report.py`) only formats these numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness import records, scoring
from harness.optimizers import (
    ADAM_FAMILY,
    CAUTIOUS_PAIRS,
    OPTIMIZERS,
    PAIRS,
    WARMUP_FRACTION,
)

Row = dict[str, Any]
Table = dict[str, dict[str, float]]
# Metrics are float32 and thresholds float64: a value exactly `k` ties above
# another may round a hair above the threshold. This slack (a millionth of the
# threshold's margin) counts it within, as `scoring.by_threshold` does.
SLACK = 1e-6
TAUS = np.linspace(1.0, scoring.TAU_MAX, 301)

# The study's rules, written into workloads_run.json when a run starts.
TARGET_MARGIN = 5  # ties above the best Adam-family final metric
TOLERANCE = 10  # ties above an optimizer's best median final metric
SWEEP = 5  # grid points tuned on the larger model
# The larger model's optimizers: the cautious question's four, fixed before
# any run (the study of 2026-12-06 picked its relative from the results).
SWEEP_OPTIMIZERS = ("aadamw", "adamw", "cautious_adamw", "cautious_aadamw")
# How a rate is picked from seed 0's tuning runs. Time to target picks its
# rate by the metric it reports (AlgoPerf's principle: select by the metric
# you report); the tuning choice, by final metric, is its sensitivity check.
FEWEST_STEPS, LOWEST_FINAL = "fewest_steps", "lowest_final"
RATE_RULES = {
    FEWEST_STEPS: "the grid point where seed 0 reached the target in the fewest "
    "steps; ties (never reaching too) go to the lower final metric, then the "
    "lower rate",
    LOWEST_FINAL: "the grid point with seed 0's lowest final metric; "
    "ties go to the lowest rate",
}
RATE_SELECTION = {
    "tuning": LOWEST_FINAL,
    "time_to_target": FEWEST_STEPS,
    "time_to_target_sensitivity": LOWEST_FINAL,
    "rules": RATE_RULES,
}
# The report's bootstraps: resamples, and the seed of their generator.
RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def code_rules(optimizers: Sequence[str]) -> dict[str, Any]:
    """The rules the code applies to a study of `optimizers`, as the run JSON
    stores them (JSON types: lists, not tuples)."""
    rules = {
        "grids": {name: list(OPTIMIZERS[name].rates) for name in optimizers},
        "warmup_fraction": WARMUP_FRACTION,
        "target_family": [n for n in ADAM_FAMILY if n in optimizers],
        "target_margin_ties": TARGET_MARGIN,
        "tolerance_ties": TOLERANCE,
        "sweep_points": SWEEP,
        "sweep_optimizers": list(SWEEP_OPTIMIZERS),
        "rate_selection": RATE_SELECTION,
        "diverged": "a final metric that is not finite, or worse than the "
        "untrained model's, counts as the untrained model's",
        "profile_tau_max": scoring.TAU_MAX,
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
        "regions": "the grid points below, at and above the second optimizer's "
        "tuning choice",
        "paired_comparisons": {
            "equal_rates": [p for p in PAIRS if set(p) <= set(optimizers)],
            "own_rates": [p for p in CAUTIOUS_PAIRS if set(p) <= set(optimizers)],
        },
        "interval": "two-sided 95 % t over the scored seeds, paired by seed",
    }
    return json.loads(json.dumps(rules))


def rule_differences(
    code: Mapping[str, Any], record: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(rule, recorded, applied) for each rule the record and the code state
    differently; None on the side that lacks the rule."""
    differences = []
    for key in [*code, *(k for k in record if k not in code)]:
        recorded, applied = record.get(key), code.get(key)
        if json.dumps(recorded, sort_keys=True) != json.dumps(applied, sort_keys=True):
            differences.append((key, recorded, applied))
    return differences


def capped(row: Row) -> float:
    """The final metric, no worse than the untrained model's.

    A diverged run (non-finite, or worse than at step 0) counts as having
    learnt nothing, so that differences and medians stay finite.
    """
    return min(row["final_metric"], row["initial_metric"])


def select(rows: Sequence[Row], **match: Any) -> list[Row]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def chosen_point(rows: Sequence[Row], workload: str, optimizer: str) -> int:
    """The grid point seed 0 chose (lowest final metric of the tuning runs)."""
    (row,) = select(
        rows, workload=workload, optimizer=optimizer, phase="tune", chosen=1
    )
    return int(row["point"])


def scored(rows: Sequence[Row], workload: str, optimizer: str) -> list[Row]:
    """The scored seeds' runs at the chosen rate, in seed order."""
    found = select(
        rows, workload=workload, optimizer=optimizer, phase="score", chosen=1
    )
    return sorted(found, key=lambda r: r["seed"])


def _steps(row: Row) -> float:
    """A run's steps to target; inf where it never reached it."""
    return row["steps_to_target"] if row["reached"] else math.inf


def fastest_point(rows: Sequence[Row], workload: str, optimizer: str) -> int:
    """The grid point where seed 0 reached the target in the fewest steps, the
    metric time to target reports; ties (never reaching too) go to the lower
    final metric, then the lower rate."""
    tune = select(rows, workload=workload, optimizer=optimizer, phase="tune")
    return int(min(tune, key=lambda r: (_steps(r), capped(r), r["point"]))["point"])


def rate_point(rows: Sequence[Row], workload: str, optimizer: str, rule: str) -> int:
    """The grid point a rate-selection rule (`RATE_RULES`) picks from seed 0."""
    if rule == FEWEST_STEPS:
        return fastest_point(rows, workload, optimizer)
    if rule == LOWEST_FINAL:
        return chosen_point(rows, workload, optimizer)
    raise ValueError(f"unknown rate-selection rule {rule!r}")


def timed(
    rows: Sequence[Row], workload: str, optimizer: str, rule: str = FEWEST_STEPS
) -> list[Row]:
    """The scored seeds' runs that time to target reports, in seed order.

    On a full grid, those at `rule`'s point (`rate_point`); where the scored
    seeds ran at one rate only (a sweep, chosen by final metric), those.
    """
    found = select(rows, workload=workload, optimizer=optimizer, phase="score")
    if len({r["point"] for r in found}) > 1:
        point = rate_point(rows, workload, optimizer, rule)
        found = [r for r in found if r["point"] == point]
    return sorted(found, key=lambda r: r["seed"])


def steps_to_target(
    rows: Sequence[Row], workload: str, optimizer: str, rule: str = FEWEST_STEPS
) -> float:
    """Median over the `timed` seeds; inf where the median seed did not reach."""
    return scoring.median([_steps(r) for r in timed(rows, workload, optimizer, rule)])


def seconds_per_step(rows: Sequence[Row], workload: str, optimizer: str) -> float:
    """The fastest of an optimizer's timed runs on a workload, per step.

    On a shared machine other jobs only ever add time, so the minimum is the
    best estimate of the run's own cost (as `timeit` advises).
    """
    return min(
        r["seconds"] / r["steps"]
        for r in select(rows, workload=workload, optimizer=optimizer)
    )


def seed_times(
    rows: Sequence[Row],
    workloads: Sequence[str],
    optimizers: Sequence[str],
    seconds: bool,
    rule: str = FEWEST_STEPS,
) -> dict[str, dict[str, list[float]]]:
    """`[optimizer][workload]`: per scored seed (in seed order), steps (or
    seconds) to target at `rule`'s rate; inf where the seed never reached."""
    return {
        o: {
            w: [
                _steps(r) * (seconds_per_step(rows, w, o) if seconds else 1.0)
                for r in timed(rows, w, o, rule)
            ]
            for w in workloads
        }
        for o in optimizers
    }


def medians(table: Mapping[str, Mapping[str, Sequence[float]]]) -> Table:
    """Per optimizer and workload, the median over seeds (keeping inf)."""
    return {o: {w: scoring.median(v) for w, v in t.items()} for o, t in table.items()}


def times(
    rows: Sequence[Row],
    workloads: Sequence[str],
    optimizers: Sequence[str],
    seconds: bool,
    rule: str = FEWEST_STEPS,
) -> Table:
    """`times[optimizer][workload]`: median steps (or seconds) to target."""
    return medians(seed_times(rows, workloads, optimizers, seconds, rule))


def profile_areas(table: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Performance-profile area per optimizer (1 = fastest everywhere)."""
    profiles = scoring.performance_profile(table, TAUS)
    return {o: scoring.profile_area(p, TAUS) for o, p in profiles.items()}


def reached_workloads(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The workloads where some optimizer's time is finite, in table order.

    A workload that no one reaches adds nothing to any profile area: over `n`
    workloads of which `k` are reached, every area is at most `k / n`.
    """
    first = next(iter(table.values()))
    return [w for w in first if any(math.isfinite(t[w]) for t in table.values())]


def bootstrap_areas(
    table: Mapping[str, Mapping[str, Sequence[float]]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, np.ndarray]:
    """Profile areas of `resamples` bootstrap resamples of the scored seeds.

    `table[optimizer][workload]` lists per-seed times, in the same seed order
    for every optimizer. Each resample draws, per workload, as many seeds as it
    has, with replacement, and the same draw for every optimizer (the seeds
    share initialisations and batches); an optimizer's time is the median over
    the drawn seeds. Each optimizer's rate stays as seed 0 picked it: seed 0 is
    not resampled.
    """
    optimizers = list(table)
    workloads = list(table[optimizers[0]])
    counts = {w: {len(table[o][w]) for o in optimizers} for w in workloads}
    if any(len(c) != 1 for c in counts.values()):
        raise ValueError("every optimizer needs the same seeds on a workload")
    rng = np.random.default_rng(seed)
    areas = {o: np.empty(resamples) for o in optimizers}
    for k in range(resamples):
        picks = {w: rng.integers(0, n, n) for w, (n,) in counts.items()}
        drawn = {
            o: {w: scoring.median([t[w][i] for i in picks[w]]) for w in workloads}
            for o, t in table.items()
        }
        for o, area in profile_areas(drawn).items():
            areas[o][k] = area
    return areas


def percentile_interval(
    samples: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap samples."""
    tail = 50 * (1 - level)
    low, high = np.percentile(np.asarray(samples, np.float64), [tail, 100 - tail])
    return float(low), float(high)


def leave_one_out(table: Mapping[str, Mapping[str, float]]) -> Table:
    """`[left-out workload][optimizer]`: profile areas over the other
    workloads; empty where there are fewer than two workloads."""
    workloads = list(next(iter(table.values())))
    if len(workloads) < 2:
        return {}
    return {
        out: profile_areas(
            {o: {w: t[w] for w in workloads if w != out} for o, t in table.items()}
        )
        for out in workloads
    }


def rank_ranges(
    low: Mapping[str, float], high: Mapping[str, float]
) -> dict[str, tuple[int, int]]:
    """(best, worst) rank (1 = largest area) of each optimizer where any two
    whose intervals overlap count as tied: it ranks below every optimizer
    whose interval lies wholly above its own, above every one whose interval
    lies wholly below, and anywhere between."""
    names = list(low)
    return {
        o: (
            1 + sum(low[j] > high[o] for j in names),
            len(names) - sum(high[j] < low[o] for j in names),
        )
        for o in names
    }


def order_changes(
    areas: Mapping[str, float], subsets: Mapping[str, Mapping[str, float]]
) -> list[tuple[str, str, str, bool]]:
    """(ahead, behind, subset, reversed) for each pair that `areas` orders
    strictly and a subset's areas do not: reversed where `behind` comes
    strictly ahead in the subset, False where the two are level there."""
    changes = []
    names = sorted(areas, key=lambda o: -areas[o])
    for i, ahead in enumerate(names):
        for behind in names[i + 1 :]:
            if areas[ahead] <= areas[behind]:
                continue
            for name, sub in subsets.items():
                if sub[ahead] <= sub[behind]:
                    changes.append((ahead, behind, name, sub[ahead] < sub[behind]))
    return changes


@dataclasses.dataclass(frozen=True)
class Profile:
    """Profile areas of one time (steps or seconds, one rate rule) with their
    uncertainty: a bootstrap interval over seeds and the leave-one-out areas."""

    times: Table
    areas: dict[str, float]
    samples: dict[str, np.ndarray]
    low: dict[str, float]
    high: dict[str, float]
    loo: Table

    @property
    def workloads(self) -> list[str]:
        return list(next(iter(self.times.values())))

    @property
    def reached(self) -> list[str]:
        return reached_workloads(self.times)

    @property
    def ranks(self) -> dict[str, tuple[int, int]]:
        return rank_ranges(self.low, self.high)

    def loo_range(self, optimizer: str) -> tuple[float, float]:
        """Min and max of the leave-one-out areas (nan without subsets)."""
        values = [areas[optimizer] for areas in self.loo.values()] or [math.nan]
        return min(values), max(values)

    @property
    def order(self) -> list[str]:
        """Optimizers by area, largest first (ties in their given order)."""
        return sorted(self.areas, key=lambda o: -self.areas[o])

    def difference(self, first: str, second: str) -> tuple[float, float, float]:
        """(first's area minus second's, and the percentile interval of that
        difference over the same resamples: the bootstrap paired by seed)."""
        low, high = percentile_interval(self.samples[first] - self.samples[second])
        return self.areas[first] - self.areas[second], low, high

    def separated(self) -> list[tuple[str, str, float, float, float]]:
        """(ahead, behind, difference, low, high) for each pair whose paired
        interval of the difference excludes zero, ahead first."""
        found = []
        for i, a in enumerate(self.order):
            for b in self.order[i + 1 :]:
                d, low, high = self.difference(a, b)
                if low > 0:
                    found.append((a, b, d, low, high))
                elif high < 0:  # the one with the smaller area is ahead
                    found.append((b, a, -d, -high, -low))
        return found


def profile(
    table: Mapping[str, Mapping[str, Sequence[float]]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Profile:
    """`Profile` of per-seed times `table[optimizer][workload]`."""
    point = medians(table)
    samples = bootstrap_areas(table, resamples, seed)
    bounds = {o: percentile_interval(a) for o, a in samples.items()}
    return Profile(
        times=point,
        areas=profile_areas(point),
        samples=samples,
        low={o: b[0] for o, b in bounds.items()},
        high={o: b[1] for o, b in bounds.items()},
        loo=leave_one_out(point),
    )


def grid_medians(rows: Sequence[Row], workload: str, optimizer: str) -> np.ndarray:
    """Per grid point, the median over scored seeds of the capped final metric."""
    found = select(rows, workload=workload, optimizer=optimizer, phase="score")
    points = sorted({int(r["point"]) for r in found})
    return np.array(
        [np.median([capped(r) for r in found if r["point"] == p]) for p in points]
    )


def tolerance_width(
    medians: np.ndarray, tolerance: float, spacing: float
) -> tuple[float, bool]:
    """(width in decades, open) of the contiguous run of grid points around
    the best median whose medians are within `tolerance` of it.

    `open` is True where the run touches an end of the grid: the true range
    may be wider. One point alone has width 0; the resolution is `spacing`.
    """
    best = int(np.argmin(medians))
    within = medians <= medians[best] + tolerance * (1 + SLACK)
    low = high = best
    while low > 0 and within[low - 1]:
        low -= 1
    while high < len(medians) - 1 and within[high + 1]:
        high += 1
    return (high - low) * spacing, low == 0 or high == len(medians) - 1


def seed_widths(
    rows: Sequence[Row], workload: str, optimizer: str, tolerance: float, spacing: float
) -> list[tuple[float, bool]]:
    """Per scored seed, the (width, open) `tolerance_width` of that seed's own
    final metrics."""
    found = select(rows, workload=workload, optimizer=optimizer, phase="score")
    widths = []
    for seed in sorted({r["seed"] for r in found}):
        mine = sorted((r for r in found if r["seed"] == seed), key=lambda r: r["point"])
        finals = np.array([capped(r) for r in mine])
        widths.append(tolerance_width(finals, tolerance, spacing))
    return widths


@dataclasses.dataclass(frozen=True)
class WidthPair:
    """Two optimizers' tolerance widths on one (workload, seed); an open width
    reaches an end of the grid, so it is a lower bound (censored)."""

    workload: str
    seed: int
    first: float
    first_open: bool
    second: float
    second_open: bool

    @property
    def censored(self) -> bool:
        return self.first_open or self.second_open

    @property
    def difference(self) -> float:
        """First minus second as measured (exact only where not censored)."""
        return self.first - self.second

    @property
    def bounds(self) -> tuple[float, float]:
        """What the pair says of the true first minus second: a censored
        first may be wider (no upper bound), a censored second too (no lower)."""
        return (
            -math.inf if self.second_open else self.difference,
            math.inf if self.first_open else self.difference,
        )


def uncensored(pairs: Sequence[WidthPair]) -> dict[str, list[float]]:
    """Per workload (in order), the differences of its uncensored pairs;
    workloads whose pairs are all censored are left out."""
    groups: dict[str, list[float]] = {}
    for p in pairs:
        if not p.censored:
            groups.setdefault(p.workload, []).append(p.difference)
    return groups


def bounded_mean(pairs: Sequence[WidthPair]) -> tuple[float, str, int] | None:
    """What the pairs censored on one side only add: (mean, "≤" or "≥", n),
    the mean over the `n` pairs not censored on both sides with each one-sided
    pair at its bound, and which side of the true mean it lies on. None where
    no pair is censored on one side only, or they bound it both ways."""
    kept = [p for p in pairs if not (p.first_open and p.second_open)]
    one_sided = {p.first_open for p in kept if p.censored}
    if len(one_sided) != 1:
        return None
    # A censored first may be wider: the true difference is at least the
    # measured one; a censored second, at most.
    side = "≥" if one_sided.pop() else "≤"
    return float(np.mean([p.difference for p in kept])), side, len(kept)


def cluster_bootstrap(
    groups: Mapping[str, Sequence[float]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over all values and its two-stage
    bootstrap percentile interval, the group (workload) as the unit.

    Each resample draws as many groups as there are, with replacement, then,
    within each drawn group, as many of its values as it has, with
    replacement; its statistic is the mean of everything drawn.
    """
    values = [np.asarray(v, np.float64) for v in groups.values()]
    point = float(np.concatenate(values).mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for k in range(resamples):
        chosen = [values[i] for i in rng.integers(0, len(values), len(values))]
        means[k] = np.concatenate(
            [g[rng.integers(0, len(g), len(g))] for g in chosen]
        ).mean()
    return (point, *percentile_interval(means, level))


def interval(
    values: Sequence[float], alpha: float = 0.05
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided t confidence interval."""
    a = np.asarray(values, np.float64)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, -math.inf, math.inf
    half = (
        scoring.paired_critical_t(len(a), alpha)
        * float(a.std(ddof=1))
        / math.sqrt(len(a))
    )
    return mean, mean - half, mean + half


def paired_by_seed(
    rows: Sequence[Row], workload: str, pair: tuple[str, str], points: Sequence[int]
) -> list[float]:
    """Per scored seed, the mean over `points` of first minus second (capped
    final metrics at equal grid points, same seed)."""
    first, second = (
        {
            (r["seed"], r["point"]): capped(r)
            for r in select(rows, workload=workload, optimizer=o, phase="score")
        }
        for o in pair
    )
    seeds = sorted({seed for seed, _ in first})
    return [
        float(np.mean([first[(s, p)] - second[(s, p)] for p in points])) for s in seeds
    ]


def regions(n_points: int, best: int) -> dict[str, list[int]]:
    """Grid points below, at and above a base optimizer's chosen point."""
    return {
        "below": list(range(best)),
        "at": [best],
        "above": list(range(best + 1, n_points)),
        "all": list(range(n_points)),
    }


def tuned_difference(
    rows: Sequence[Row], workload: str, pair: tuple[str, str]
) -> list[float]:
    """Per scored seed, first minus second at each one's own chosen rate."""
    a, b = (scored(rows, workload, o) for o in pair)
    return [capped(x) - capped(y) for x, y in zip(a, b, strict=True)]


class Results:
    """The saved run: its settings and rows."""

    def __init__(self, out: pathlib.Path) -> None:
        self.meta = records.read_json(out / "workloads_run.json")
        self.runs = records.read_csv(out / "workloads.csv")
        self.curves = records.read_csv(out / "workloads_curves.csv")
        # A workload whose target is recorded but whose runs are not (an
        # interrupted invocation) has nothing to score.
        stored = {r["workload"] for r in self.runs}
        self.described = {
            w["name"]: w for w in self.meta["workloads"] if w["name"] in stored
        }
        self.workloads = list(self.described)
        self.rules = self.meta["rules"]
        # Scored only by the rules it was run under, which must be the code's.
        differences = rule_differences(code_rules(self.meta["optimizers"]), self.rules)
        if differences:
            listed = "; ".join(
                f"{key}: recorded {json.dumps(recorded)}, code {json.dumps(applied)}"
                for key, recorded, applied in differences
            )
            raise SystemExit(
                f"{out / 'workloads_run.json'} was run under other rules than "
                f"the code's, which this report would apply: {listed}. Report it "
                "from the commit that ran it, or run the study again"
            )

    def optimizers(self, workload: str) -> list[str]:
        return self.described[workload]["optimizers"]

    def above(self, workload: str) -> int:
        """Grid points past the standard grid's top on `workload`."""
        return self.described[workload].get("grid_points_above", 0)

    def rates(self, workload: str, optimizer: str) -> np.ndarray:
        """`optimizer`'s peak rates on `workload`, by grid point."""
        return OPTIMIZERS[optimizer].grid(self.meta["points"], self.above(workload))

    @property
    def full_grid(self) -> list[str]:
        """Workloads run on the whole grid by every optimizer (not a sweep)."""
        return [w for w in self.workloads if self.described[w]["sweep_of"] is None]

    def tolerance(self, workload: str) -> float:
        return self.rules["tolerance_ties"] * self.described[workload]["tie"]

    @property
    def spacing(self) -> float:
        """Decades between neighbouring grid points."""
        low, high = next(iter(self.rules["grids"].values()))
        return math.log10(high / low) / (self.meta["points"] - 1)

    def width_pairs(self, pair: tuple[str, str]) -> list[WidthPair]:
        """Per (full-grid workload, scored seed), the pair's tolerance widths."""
        pairs = []
        for w in self.full_grid:
            a, b = (
                seed_widths(self.runs, w, o, self.tolerance(w), self.spacing)
                for o in pair
            )
            seeds = sorted(
                {r["seed"] for r in select(self.runs, workload=w, phase="score")}
            )
            pairs += [
                WidthPair(w, s, *x, *y) for s, x, y in zip(seeds, a, b, strict=True)
            ]
        return pairs

    def profile(self, rule: str, seconds: bool = False) -> Profile:
        """Steps (or seconds) to target on the full-grid workloads under a
        rate-selection rule, with its bootstrap and leave-one-out areas."""
        optimizers = self.meta["optimizers"]
        table = seed_times(self.runs, self.full_grid, optimizers, seconds, rule)
        return profile(table)

    def width(self, workload: str, optimizer: str) -> tuple[float, bool]:
        """Tolerance width in decades, and whether it reaches a grid end."""
        medians = grid_medians(self.runs, workload, optimizer)
        return tolerance_width(medians, self.tolerance(workload), self.spacing)

    def paired_regions(
        self, workload: str, pair: tuple[str, str]
    ) -> dict[str, list[float]]:
        """Per region of the grid (`regions`), `paired_by_seed` over it."""
        best = chosen_point(self.runs, workload, pair[1])
        return {
            region: paired_by_seed(self.runs, workload, pair, points) if points else []
            for region, points in regions(
                self.meta["points"] + self.above(workload), best
            ).items()
        }


# The cautious-by-horizon part (`workloads.py --horizon`): AdamW, AAdamW and
# their cautious twins on one workload at two horizons, three rates each, paired
# by seed. Its rules are written into workloads_horizon_run.json when it starts.
HORIZON_PART = "cautious_horizon"
HORIZON_OFFSETS = (-1, 0, 1)  # grid points around each optimizer's centre
HORIZON_LEVEL = 0.95
# First minus second, each at its own best rate of the three, paired by seed.
HORIZON_COMPARISONS = (
    ("cautious_aadamw", "cautious_adamw"),  # acceleration on top of the mask
    ("cautious_aadamw", "aadamw"),  # the mask on top of acceleration
    ("cautious_adamw", "adamw"),  # the mask on Adam's direction
    ("aadamw", "adamw"),  # acceleration alone
)
ALL_SEEDS, FIRST_SEED = "all_seeds", "first_seed"
BEST_RATE_RULES = {
    ALL_SEEDS: "at each horizon, the rate of the three with the lowest mean "
    "final metric over all scored seeds (ties: the lower rate), scored on those "
    "same seeds; optimistic, as the choice sees the seeds it is scored on, and "
    "alike for every optimizer",
    FIRST_SEED: "at each horizon, the rate of the three with the first scored "
    "seed's lowest final metric (ties: the lower rate), scored on the other "
    "seeds only; free of that selection bias, with one seed fewer",
}
HORIZON_BEST_RATE = {"primary": ALL_SEEDS, "sensitivity": FIRST_SEED}


def horizon_points(centre: int, points: int) -> list[int]:
    """The grid points `HORIZON_OFFSETS` around `centre` that the grid has."""
    return [centre + k for k in HORIZON_OFFSETS if 0 <= centre + k < points]


def horizon_centres(
    reference_rows: Sequence[Row], reference: str, optimizers: Sequence[str]
) -> dict[str, int]:
    """Each optimizer's centre: the grid point the stored full-grid study chose
    for it on `reference` (`chosen_point`)."""
    return {o: chosen_point(reference_rows, reference, o) for o in optimizers}


def horizon_rules(
    reference: str,
    optimizers: Sequence[str],
    centres: Mapping[str, int],
    points: int,
    seeds: Sequence[int],
    horizons: Sequence[int],
    eval_every: Sequence[int],
) -> dict[str, Any]:
    """The part's rules as its run JSON stores them, fixed before any run."""
    grids = {o: OPTIMIZERS[o].grid(points) for o in optimizers}
    chosen = {o: horizon_points(centres[o], points) for o in optimizers}
    rules = {
        "reference": reference,
        "optimizers": list(optimizers),
        "rate_rule": (
            f"each optimizer's chosen grid point in the stored {reference} study "
            f"(seed 0's lowest final metric at its budget, `{LOWEST_FINAL}`) and "
            f"the grid points either side, on the {points}-point grid"
        ),
        "centres": dict(centres),
        "points": chosen,
        "rates": {o: [float(grids[o][p]) for p in chosen[o]] for o in optimizers},
        "grid_points": points,
        "seeds": list(seeds),
        "horizons": list(horizons),
        "eval_every": dict(zip(map(str, horizons), eval_every, strict=True)),
        "warmup_fraction": WARMUP_FRACTION,
        "schedule": "linear warm-up over the first warmup_fraction of each "
        "horizon's steps, then cosine decay to zero at its last step: the "
        "schedule stretched to the horizon, never cut",
        "pairing": "a seed sets the initialisation and the mini-batch sequence, "
        "the same for every optimizer, rate and horizon",
        "best_rate": {**HORIZON_BEST_RATE, "rules": BEST_RATE_RULES},
        "comparisons": [list(p) for p in HORIZON_COMPARISONS],
        "interval": "two-sided t interval of the mean paired difference over "
        "seeds (n - 1 degrees of freedom)",
        "interval_level": HORIZON_LEVEL,
        "metric": "capped final validation metric (no worse than at step 0)",
    }
    return json.loads(json.dumps(rules))


def horizon_finals(
    rows: Sequence[Row], steps: int, optimizer: str, point: int
) -> dict[int, float]:
    """`{seed: capped final metric}` of one optimizer at one grid point."""
    return {
        int(r["seed"]): capped(r)
        for r in select(rows, steps=steps, optimizer=optimizer, point=point)
    }


def best_horizon_point(
    rows: Sequence[Row], steps: int, optimizer: str, seeds: Sequence[int]
) -> int:
    """The grid point with the lowest mean capped final metric over `seeds`
    (ties: the lower rate)."""
    points = sorted({int(r["point"]) for r in select(rows, optimizer=optimizer)})

    def mean(p: int) -> float:
        finals = horizon_finals(rows, steps, optimizer, p)
        return float(np.mean([finals[s] for s in seeds]))

    return min(points, key=lambda p: (mean(p), p))


def horizon_seeds(rows: Sequence[Row], steps: int) -> list[int]:
    return sorted({int(r["seed"]) for r in select(rows, steps=steps)})


def horizon_choice(
    rows: Sequence[Row], steps: int, optimizer: str, rule: str
) -> tuple[int, list[int]]:
    """(grid point, scored seeds) of an optimizer at a horizon under a
    `BEST_RATE_RULES` rule."""
    seeds = horizon_seeds(rows, steps)
    if rule == ALL_SEEDS:
        return best_horizon_point(rows, steps, optimizer, seeds), seeds
    if rule == FIRST_SEED:
        return best_horizon_point(rows, steps, optimizer, seeds[:1]), seeds[1:]
    raise ValueError(f"unknown best-rate rule {rule!r}")


def horizon_difference(
    rows: Sequence[Row], steps: int, pair: tuple[str, str], rule: str = ALL_SEEDS
) -> dict[int, float]:
    """`{seed: first minus second}`, each at its own best rate under `rule`,
    over the seeds that rule scores."""
    (a, seeds), (b, _) = (horizon_choice(rows, steps, o, rule) for o in pair)
    first = horizon_finals(rows, steps, pair[0], a)
    second = horizon_finals(rows, steps, pair[1], b)
    return {s: first[s] - second[s] for s in seeds}


def horizon_change(
    rows: Sequence[Row],
    short: int,
    long: int,
    pair: tuple[str, str],
    rule: str = ALL_SEEDS,
) -> dict[int, float]:
    """`{seed: difference at long minus difference at short}`: how a pair's
    difference moves with the horizon, paired by seed."""
    early = horizon_difference(rows, short, pair, rule)
    late = horizon_difference(rows, long, pair, rule)
    return {s: late[s] - early[s] for s in late if s in early}


def reproduction_gap(
    rows: Sequence[Row], reference_rows: Sequence[Row], reference: str
) -> tuple[float, float, int]:
    """(largest and median |difference|, count) of the final metrics of the runs that
    repeat a stored run of `reference` (same optimizer, grid point, seed and
    steps): the part's control against the stored study."""
    stored = {
        (r["optimizer"], int(r["point"]), int(r["seed"]), int(r["steps"])): r
        for r in select(reference_rows, workload=reference, phase="score")
    }
    gaps = [
        abs(float(r["final_metric"]) - float(stored[key]["final_metric"]))
        for r in rows
        if (key := (r["optimizer"], int(r["point"]), int(r["seed"]), int(r["steps"])))
        in stored
    ]
    if not gaps:
        return math.nan, math.nan, 0
    return max(gaps), float(np.median(gaps)), len(gaps)


class HorizonResults:
    """The saved cautious-by-horizon part: its settings, rows and curves."""

    def __init__(self, out: pathlib.Path) -> None:
        meta = records.read_json(out / "workloads_horizon_run.json")
        runs = records.read_csv(out / "workloads_horizon.csv")
        curves = records.read_csv(out / "workloads_horizon_curves.csv")
        self.meta, self.runs, self.curves = meta, runs, curves
        self.rules = meta["rules"]
        self.optimizers = list(self.rules["optimizers"])
        # The horizons stored so far, in the planned order.
        done = {int(r["steps"]) for r in self.runs}
        self.horizons = [h for h in self.rules["horizons"] if h in done]

    def finals(self, steps: int, optimizer: str, point: int) -> list[float]:
        """Capped final metrics in seed order."""
        finals = horizon_finals(self.runs, steps, optimizer, point)
        return [finals[s] for s in sorted(finals)]

    def choice(self, steps: int, optimizer: str, rule: str) -> tuple[int, list[int]]:
        return horizon_choice(self.runs, steps, optimizer, rule)

    def difference(
        self, steps: int, pair: tuple[str, str], rule: str
    ) -> tuple[float, float, float, int]:
        """(mean, low, high, seeds) of a pair's paired difference."""
        values = list(horizon_difference(self.runs, steps, pair, rule).values())
        return (*interval(values, 1 - self.rules["interval_level"]), len(values))

    def change(
        self, pair: tuple[str, str], rule: str
    ) -> tuple[float, float, float, int]:
        """(mean, low, high, seeds) of `horizon_change` from the first to the
        last horizon."""
        short, long = self.horizons[0], self.horizons[-1]
        values = list(horizon_change(self.runs, short, long, pair, rule).values())
        return (*interval(values, 1 - self.rules["interval_level"]), len(values))

    def curve(
        self, steps: int, optimizer: str, point: int
    ) -> tuple[list[int], list[float]]:
        """(steps, mean metric over seeds) of the stored validation curves."""
        found = select(self.curves, steps=steps, optimizer=optimizer, point=point)
        at = sorted({int(c["step"]) for c in found})
        return at, [
            float(np.mean([c["metric"] for c in found if c["step"] == s])) for s in at
        ]
