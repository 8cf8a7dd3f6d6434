"""The numbers of the workloads report, computed from the stored runs.

Pure functions of `workloads.csv` rows and `workloads_run.json`: time to
target, learning-rate tolerance, paired differences with confidence
intervals. The report (`workloads_report.py`) only formats them.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import records, scoring
from harness.optimizers import OPTIMIZERS

Row = dict[str, Any]
# Metrics are float32 and thresholds float64: a value exactly `k` ties above
# another may round a hair above the threshold. This slack (a millionth of the
# threshold's margin) counts it within, as `scoring.by_threshold` does.
SLACK = 1e-6
TAUS = np.linspace(1.0, scoring.TAU_MAX, 301)


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


def timed(rows: Sequence[Row], workload: str, optimizer: str) -> list[Row]:
    """The scored seeds' runs that time to target reports, in seed order.

    On a full grid, those at `fastest_point`; where the scored seeds ran at one
    rate only (a sweep, chosen by final metric), those.
    """
    found = select(rows, workload=workload, optimizer=optimizer, phase="score")
    if len({r["point"] for r in found}) > 1:
        point = fastest_point(rows, workload, optimizer)
        found = [r for r in found if r["point"] == point]
    return sorted(found, key=lambda r: r["seed"])


def steps_to_target(rows: Sequence[Row], workload: str, optimizer: str) -> float:
    """Median over the `timed` seeds; inf where the median seed did not reach."""
    return scoring.median([_steps(r) for r in timed(rows, workload, optimizer)])


def seconds_per_step(rows: Sequence[Row], workload: str, optimizer: str) -> float:
    """The fastest of an optimizer's timed runs on a workload, per step.

    On a shared machine other jobs only ever add time, so the minimum is the
    best estimate of the run's own cost (as `timeit` advises).
    """
    return min(
        r["seconds"] / r["steps"]
        for r in select(rows, workload=workload, optimizer=optimizer)
    )


def times(
    rows: Sequence[Row],
    workloads: Sequence[str],
    optimizers: Sequence[str],
    seconds: bool,
) -> dict[str, dict[str, float]]:
    """`times[optimizer][workload]`: median steps (or seconds) to target."""
    return {
        o: {
            w: steps_to_target(rows, w, o)
            * (seconds_per_step(rows, w, o) if seconds else 1.0)
            for w in workloads
        }
        for o in optimizers
    }


def profile_areas(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Performance-profile area per optimizer (1 = fastest everywhere)."""
    profiles = scoring.performance_profile(table, TAUS)
    return {o: scoring.profile_area(p, TAUS) for o, p in profiles.items()}


def strongest_relative(rows: Sequence[Row], optimizers: Sequence[str]) -> str:
    """The relative with the largest steps-to-target profile area over the
    workloads in `rows` where every one of `optimizers` ran; ties go to the
    first in `OPTIMIZERS`' order."""
    workloads = sorted(
        w
        for w in {r["workload"] for r in rows}
        if {r["optimizer"] for r in select(rows, workload=w)} == set(optimizers)
    )
    relatives = [o for o in optimizers if OPTIMIZERS[o].relative]
    if not workloads or not relatives:
        raise ValueError("no full-grid workload with a relative to choose from")
    areas = profile_areas(times(rows, workloads, optimizers, seconds=False))
    return max(relatives, key=lambda o: (areas[o], -list(OPTIMIZERS).index(o)))


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
) -> list[float]:
    """Per scored seed, the tolerance width of that seed's own final metrics."""
    found = select(rows, workload=workload, optimizer=optimizer, phase="score")
    widths = []
    for seed in sorted({r["seed"] for r in found}):
        mine = sorted((r for r in found if r["seed"] == seed), key=lambda r: r["point"])
        finals = np.array([capped(r) for r in mine])
        widths.append(tolerance_width(finals, tolerance, spacing)[0])
    return widths


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
        self.described = {w["name"]: w for w in self.meta["workloads"]}
        self.workloads = list(self.described)
        self.rules = self.meta["rules"]

    def optimizers(self, workload: str) -> list[str]:
        return self.described[workload]["optimizers"]

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

    def seed_width_differences(self, pair: tuple[str, str]) -> list[float]:
        """First minus second tolerance width, per (full-grid workload, seed)."""
        differences = []
        for w in self.full_grid:
            a, b = (
                seed_widths(self.runs, w, o, self.tolerance(w), self.spacing)
                for o in pair
            )
            differences += [x - y for x, y in zip(a, b, strict=True)]
        return differences

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
            for region, points in regions(self.meta["points"], best).items()
        }
