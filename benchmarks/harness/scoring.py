"""AlgoPerf's performance profiles, and small statistics the reports share.

Paired comparisons (an AAdam optimizer against the Optax optimizer it
accelerates, on the same seed or trial) come out as wins, losses and ties: a
difference counts only beyond a noise threshold fixed in the code before the
run, by `by_threshold` (one measurement per side) or `paired_test` (several
seeds per side).
"""

from __future__ import annotations

import dataclasses
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


def sample_std(values: np.ndarray) -> float:
    """Sample standard deviation; nan if any value is not finite (a run
    diverged), 0 for one value."""
    if not np.all(np.isfinite(values)):
        return math.nan
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def average_ranks(values: Sequence[tuple[float, float]]) -> list[float]:
    """Ranks (1 = best, lowest) of tuples compared lexicographically; tied
    values share the average of the ranks they span."""
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


def plus_minus(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "not reached" if mean > 0 else "diverged"
    spread = f" ± {std:.{digits}g}" if math.isfinite(std) else ""
    return f"{mean:.{digits}g}{spread}"


# Outcomes of a paired comparison, from the first optimizer's side; lower
# values (steps, losses, error rates) are better.
WIN, TIE, LOSS = -1, 0, 1


def by_threshold(a: float, b: float, tie: float) -> int:
    """WIN where `a` is lower than `b` by more than `tie`, LOSS where higher,
    TIE otherwise. Infinity (never reached, diverged) loses to any finite
    value and ties with itself."""
    if math.isinf(a) or math.isinf(b):
        return TIE if a == b else (LOSS if a > b else WIN)
    # Stored values carry decimal rounding: a difference of exactly `tie`
    # (one validation example) must not count as more than `tie`.
    if abs(a - b) <= tie * (1 + 1e-6):
        return TIE
    return WIN if a < b else LOSS


def paired_critical_t(seeds: int, alpha: float = 0.05) -> float:
    """Two-sided critical value of Student's t with `seeds - 1` degrees of
    freedom (inf for one seed: a single pair cannot show a difference)."""
    return float(stats.t.ppf(1 - alpha / 2, seeds - 1)) if seeds > 1 else math.inf


def paired_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> int:
    """WIN, LOSS or TIE from per-seed pairs `(a[s], b[s])`, lower is better.

    A two-sided paired t-test at level `alpha`: the mean difference counts
    only when |mean| / (sd / sqrt(n)) exceeds `paired_critical_t(n)`; a
    difference that is the same on every seed (sd 0) counts whenever it is not
    zero. Where a run is not finite (diverged) and its partner is, the side
    with fewer such runs wins; equal counts tie.
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bad_x, bad_y = ~np.isfinite(x), ~np.isfinite(y)
    if (bad_x ^ bad_y).any():
        lost_x, lost_y = int((bad_x & ~bad_y).sum()), int((bad_y & ~bad_x).sum())
        return TIE if lost_x == lost_y else (LOSS if lost_x > lost_y else WIN)
    both = bad_x & bad_y
    d = x[~both] - y[~both]
    if d.size == 0 or not d.any():
        return TIE
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    if sd == 0:
        return WIN if mean < 0 else LOSS
    if d.size < 2 or abs(mean) / (sd / math.sqrt(d.size)) <= paired_critical_t(
        d.size, alpha
    ):
        return TIE
    return WIN if mean < 0 else LOSS


@dataclasses.dataclass
class Tally:
    """Counts of paired outcomes, with a note per comparison."""

    wins: list[str] = dataclasses.field(default_factory=list)
    losses: list[str] = dataclasses.field(default_factory=list)
    ties: list[str] = dataclasses.field(default_factory=list)

    def add(self, outcome: int, note: str = "") -> None:
        {WIN: self.wins, LOSS: self.losses, TIE: self.ties}[outcome].append(note)

    @property
    def total(self) -> int:
        return len(self.wins) + len(self.losses) + len(self.ties)

    def counts(self, win: str = "won", loss: str = "lost", tie: str = "tied") -> str:
        """E.g. "5 lower, 1 higher, 2 tied of 8"."""
        return (
            f"{len(self.wins)} {win}, {len(self.losses)} {loss}, "
            f"{len(self.ties)} {tie} of {self.total}"
        )

    def notes(self, win: str = "won", loss: str = "lost", tie: str = "tied") -> str:
        """E.g. "; lower: a; b; tied: c", the notes of each non-empty outcome."""
        return "".join(
            f"; {label}: {'; '.join(notes)}"
            for label, notes in (
                (win, self.wins),
                (loss, self.losses),
                (tie, self.ties),
            )
            if notes
        )
