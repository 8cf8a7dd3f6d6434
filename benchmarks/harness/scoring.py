"""AlgoPerf's performance profiles, and small statistics the reports share."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

TAU_MAX = 4.0


def performance_profile(
    times: Mapping[str, Mapping[str, float]], taus: np.ndarray
) -> dict[str, np.ndarray]:
    """Fraction of workloads each optimizer finishes within tau x the fastest.

    `times[optimizer][workload]` is a time to target (inf where the target was
    not reached). For each workload, an optimizer's ratio is its time over the
    smallest time any optimizer took; the profile at tau is the fraction of
    workloads whose ratio is <= tau. A workload no optimizer finished counts
    against every optimizer.
    """
    names = list(times)
    workloads = sorted({w for t in times.values() for w in t})
    table = np.array([[times[n].get(w, math.inf) for w in workloads] for n in names])
    best = table.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(table), table / best, math.inf)
    return {
        n: (ratio[i][None, :] <= np.asarray(taus)[:, None]).mean(axis=1)
        for i, n in enumerate(names)
    }


def profile_area(profile: np.ndarray, taus: np.ndarray) -> float:
    """Area under a profile over [taus[0], taus[-1]], normalised to [0, 1]."""
    width = float(taus[-1] - taus[0])
    areas = 0.5 * (profile[1:] + profile[:-1]) * np.diff(taus)
    return float(areas.sum() / width)


def median(values: Sequence[float]) -> float:
    """Median that keeps inf (a run that never reached its target)."""
    ordered = sorted(values)
    n = len(ordered)
    if n % 2:
        return ordered[n // 2]
    low, high = ordered[n // 2 - 1], ordered[n // 2]
    return high if math.isinf(high) else 0.5 * (low + high)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for one value)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan


def plus_minus(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "not reached" if mean > 0 else "diverged"
    spread = f" ± {std:.{digits}g}" if math.isfinite(std) else ""
    return f"{mean:.{digits}g}{spread}"


def paired_critical_t(seeds: int, alpha: float = 0.05) -> float:
    """Two-sided critical value of Student's t with `seeds - 1` degrees of
    freedom (inf for one seed: a single pair cannot show a difference)."""
    return float(stats.t.ppf(1 - alpha / 2, seeds - 1)) if seeds > 1 else math.inf
