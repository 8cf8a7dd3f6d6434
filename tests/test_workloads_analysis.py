"""Unit tests of the workloads study's rules: the learning-rate grid,
tolerance widths, paired differences and the choice of relative.

Every expected value is derived by hand in the test, from the rule's
definition in `benchmarks/workloads.py`'s docstring and the report's Method.
"""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from harness import optimizers  # noqa: E402
from harness import workloads_analysis as analysis  # noqa: E402


def test_grid_is_log_spaced_over_three_decades_with_lion_a_decade_lower():
    adam = optimizers.OPTIMIZERS["adam"].grid()
    lion = optimizers.OPTIMIZERS["lion"].grid()
    assert len(adam) == optimizers.GRID_POINTS == 9
    np.testing.assert_allclose(adam[[0, 4, 8]], [1e-4, 10**-2.5, 1e-1], rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log10(adam)), 3 / 8)
    np.testing.assert_allclose(lion, adam / 10)
    for name in ("aadam_sign_change", "aadamw", "adamw", "cautious_adamw", "adopt"):
        np.testing.assert_array_equal(optimizers.OPTIMIZERS[name].grid(), adam)


def test_tolerance_width_spans_the_contiguous_points_within_tolerance():
    medians = np.array([5.0, 3.0, 1.0, 1.5, 4.0, 1.2])
    # Best 1.0 at index 2; within 1.0 + 1 = 2.0: indices 2, 3 (and 5, which
    # is not contiguous with the best). Width one step of 0.5 decades.
    assert analysis.tolerance_width(medians, 1.0, 0.5) == (0.5, False)
    # A wider tolerance reaches both ends of the grid: the width is a bound.
    assert analysis.tolerance_width(medians, 4.0, 0.5) == (2.5, True)
    # Nothing else within: one point, width 0.
    assert analysis.tolerance_width(medians, 0.1, 0.5) == (0.0, False)
    # float32 error rates exactly ten examples apart count as within ten.
    rounded = np.array([0.108, 0.098], np.float32).astype(np.float64)
    assert rounded[0] - rounded[1] > 0.01
    assert analysis.tolerance_width(rounded, 0.01, 0.5) == (0.5, True)


def test_interval_is_the_t_interval_of_the_mean():
    mean, low, high = analysis.interval([1.0, 2.0, 3.0])
    # sd 1, n 3, t(0.975, 2) = 4.302653
    half = 4.302653 / math.sqrt(3)
    assert mean == 2.0
    assert low == pytest.approx(2.0 - half, rel=1e-6)
    assert high == pytest.approx(2.0 + half, rel=1e-6)


def row(optimizer: str, seed: int, point: int, final: float, **more) -> dict:
    return {
        "workload": "w",
        "optimizer": optimizer,
        "phase": "score" if seed else "tune",
        "seed": seed,
        "point": point,
        "final_metric": final,
        "initial_metric": 1.0,
        "chosen": 0,
        **more,
    }


def test_a_diverged_run_counts_as_its_untrained_value():
    assert analysis.capped(row("a", 1, 0, math.inf)) == 1.0
    assert analysis.capped(row("a", 1, 0, 2.0)) == 1.0
    assert analysis.capped(row("a", 1, 0, 0.25)) == 0.25


def test_paired_by_seed_averages_equal_rate_differences_per_seed():
    rows = [
        row("a", 1, 0, 0.5),
        row("a", 1, 1, 0.4),
        row("b", 1, 0, 0.6),
        row("b", 1, 1, 0.6),
        row("a", 2, 0, 0.5),
        row("a", 2, 1, math.inf),  # diverged: capped at 1.0
        row("b", 2, 0, 0.5),
        row("b", 2, 1, 0.5),
    ]
    # seed 1: (-0.1 - 0.2) / 2; seed 2: (0 + 0.5) / 2
    diffs = analysis.paired_by_seed(rows, "w", ("a", "b"), [0, 1])
    np.testing.assert_allclose(diffs, [-0.15, 0.25])
    np.testing.assert_allclose(
        analysis.paired_by_seed(rows, "w", ("a", "b"), [1]), [-0.2, 0.5]
    )


def test_regions_split_the_grid_at_the_base_optimizers_choice():
    assert analysis.regions(5, 2) == {
        "below": [0, 1],
        "at": [2],
        "above": [3, 4],
        "all": [0, 1, 2, 3, 4],
    }


def timing_row(phase, seed, point, steps, final, reached=True):
    return row(
        "a",
        seed,
        point,
        final,
        phase=phase,
        steps_to_target=steps,
        reached=int(reached),
    )


def test_time_to_target_selects_its_rate_by_steps_on_seed_0():
    rows = [
        # Seed 0: point 1 has the lowest final metric, points 1 and 2 tie on
        # steps; the lower final metric of the two (point 2's) breaks it.
        timing_row("tune", 0, 0, 50, 0.30),
        timing_row("tune", 0, 1, 40, 0.50),
        timing_row("tune", 0, 2, 40, 0.40),
    ]
    scored_steps = {0: (10, 10), 1: (20, 20), 2: (30, 70)}
    for point, steps in scored_steps.items():
        rows += [
            timing_row("score", s, point, n, 0.5)
            for s, n in zip((1, 2), steps, strict=True)
        ]
    assert analysis.fastest_point(rows, "w", "a") == 2
    assert [r["seed"] for r in analysis.timed(rows, "w", "a")] == [1, 2]
    assert analysis.steps_to_target(rows, "w", "a") == 50  # median of 30 and 70
    # Never reaching counts as infinitely slow; among such, the lower final.
    never = [timing_row("tune", 0, p, 100, f, False) for p, f in ((0, 0.3), (1, 0.2))]
    assert analysis.fastest_point(never, "w", "a") == 1


def test_strongest_relative_has_the_largest_steps_profile_area():
    rows = []
    # Two workloads; "lion" reaches in fewer steps on both, "adopt" never.
    for w, steps in (
        ("w1", {"adam": 50, "lion": 40}),
        ("w2", {"adam": 30, "lion": 20}),
    ):
        for o in ("adam", "lion", "adopt"):
            rows.append(
                {
                    "workload": w,
                    "optimizer": o,
                    "phase": "score",
                    "chosen": 1,
                    "seed": 1,
                    "point": 0,
                    "steps_to_target": steps.get(o, 100),
                    "reached": int(o in steps),
                    "seconds": 1.0,
                    "steps": 100,
                }
            )
    assert analysis.strongest_relative(rows, ["adam", "lion", "adopt"]) == "lion"
    with pytest.raises(ValueError, match="relative"):
        analysis.strongest_relative(rows, ["adam"])


def test_the_larger_model_sweeps_five_points_around_each_chosen_rate():
    import workloads

    rows = []
    for optimizer, centre in (("aadamw", 0), ("adamw", 4), ("lion", 8)):
        for phase, seed in (("tune", 0), ("score", 1)):
            rows.append(
                {
                    "workload": "bytes_lm",
                    "optimizer": optimizer,
                    "phase": phase,
                    "seed": seed,
                    "point": centre,
                    "chosen": 1,
                    "steps_to_target": 10,
                    "reached": 1,
                    "seconds": 1.0,
                    "steps": 100,
                }
            )
    plan = workloads.Plan({}, reference="bytes_lm")
    sweep = workloads.plan_optimizers(plan, ["aadamw", "adamw", "lion"], 9, rows)
    # Centred where it can be, shifted inward at the grid's ends.
    assert sweep == {
        "aadamw": [0, 1, 2, 3, 4],
        "adamw": [2, 3, 4, 5, 6],
        "lion": [4, 5, 6, 7, 8],
    }
    with pytest.raises(SystemExit, match="run --workloads bytes_lm first"):
        workloads.plan_optimizers(plan, ["aadamw", "adamw", "lion"], 9, [])
