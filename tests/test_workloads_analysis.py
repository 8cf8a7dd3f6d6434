"""Unit tests of the workloads study's rules: the learning-rate grid,
tolerance widths, paired differences and the choice of relative.

Every expected value is derived by hand in the test, from the rule's
definition in `benchmarks/workloads.py`'s docstring and the report's Method.
"""

from __future__ import annotations

import csv
import json
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


def test_the_larger_model_sweeps_five_points_around_each_chosen_rate():
    import workloads

    rows = []
    centres = (
        ("aadamw", 0),
        ("adamw", 4),
        ("cautious_adamw", 8),
        ("cautious_aadamw", 7),
    )
    for optimizer, centre in centres:
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
    names = [name for name, _ in centres]
    sweep = workloads.plan_optimizers(plan, [*names, "lion"], 9, rows)
    # The four fixed before the runs, whatever else ran; centred where it can
    # be, shifted inward at the grid's ends.
    assert sweep == {
        "aadamw": [0, 1, 2, 3, 4],
        "adamw": [2, 3, 4, 5, 6],
        "cautious_adamw": [4, 5, 6, 7, 8],
        "cautious_aadamw": [4, 5, 6, 7, 8],
    }
    with pytest.raises(SystemExit, match="run --workloads bytes_lm first"):
        workloads.plan_optimizers(plan, names, 9, [])


def test_time_to_target_under_the_lowest_final_rule_reads_the_tuning_choice():
    rows = [
        timing_row("tune", 0, 0, 50, 0.30),  # lowest final: the tuning choice
        timing_row("tune", 0, 1, 40, 0.50),  # fewest steps
    ]
    rows[0]["chosen"] = 1
    for point, steps in {0: (60, 80), 1: (10, 20)}.items():
        rows += [
            timing_row("score", s, point, n, 0.5)
            for s, n in zip((1, 2), steps, strict=True)
        ]
    assert analysis.rate_point(rows, "w", "a", analysis.LOWEST_FINAL) == 0
    assert analysis.rate_point(rows, "w", "a", analysis.FEWEST_STEPS) == 1
    assert analysis.steps_to_target(rows, "w", "a", analysis.LOWEST_FINAL) == 70
    assert analysis.steps_to_target(rows, "w", "a") == 15  # the primary rule
    with pytest.raises(ValueError, match="rate-selection"):
        analysis.rate_point(rows, "w", "a", "best_guess")


def test_the_rules_name_both_rate_selections_and_the_primary():
    rules = analysis.code_rules(["adam", "lion"])
    assert rules["grids"] == {"adam": [1e-4, 1e-1], "lion": [1e-5, 1e-2]}
    assert rules["target_family"] == ["adam"]
    assert (rules["target_margin_ties"], rules["tolerance_ties"]) == (5, 10)
    selection = rules["rate_selection"]
    assert selection["time_to_target"] == "fewest_steps"  # the primary
    assert selection["time_to_target_sensitivity"] == "lowest_final"
    assert selection["tuning"] == "lowest_final"
    assert set(selection["rules"]) == {"fewest_steps", "lowest_final"}


def test_rule_differences_list_what_the_record_lacks_or_states_otherwise():
    code = {"tolerance_ties": 10, "rate_selection": {"time_to_target": "x"}}
    assert analysis.rule_differences(code, dict(code)) == []
    # A record without the rate selection, another tolerance and an old rule.
    record = {"tolerance_ties": 5, "retired": 1}
    assert analysis.rule_differences(code, record) == [
        ("tolerance_ties", 5, 10),
        ("rate_selection", None, {"time_to_target": "x"}),
        ("retired", 1, None),
    ]


# Per-seed times on three workloads with ratios 1 (fastest), 10 (beyond
# TAU_MAX = 4: counts nowhere) and inf: an optimizer's profile area is then
# the fraction of workloads where it is fastest, exactly.
HAND = {
    "a": {"x": 10.0, "y": 100.0, "z": 10.0},
    "b": {"x": 100.0, "y": 10.0, "z": math.inf},
    "c": {"x": 10.0, "y": math.inf, "z": 100.0},
}


def test_profile_areas_of_the_hand_table():
    areas = analysis.profile_areas(HAND)
    # a fastest on x and z; b on y; c on x (level with a).
    assert areas == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1 / 3})


def test_leave_one_out_areas_by_hand():
    loo = analysis.leave_one_out(HAND)
    assert list(loo) == ["x", "y", "z"]
    # Without x: a fastest on z, b on y, c nowhere (of two workloads).
    assert loo["x"] == pytest.approx({"a": 1 / 2, "b": 1 / 2, "c": 0.0})
    # Without y: a on x and z, b nowhere, c on x.
    assert loo["y"] == pytest.approx({"a": 1.0, "b": 0.0, "c": 1 / 2})
    # Without z: a on x, b on y, c on x.
    assert loo["z"] == pytest.approx({"a": 1 / 2, "b": 1 / 2, "c": 1 / 2})
    # a ahead of b (2/3 > 1/3) and of c: level with b without x and without
    # z, with c without z; b and c are level on all three, so no order.
    changes = analysis.order_changes(analysis.profile_areas(HAND), loo)
    assert changes == [
        ("a", "b", "x", False),
        ("a", "b", "z", False),
        ("a", "c", "z", False),
    ]
    # Reversed, not level, where the one behind comes strictly ahead.
    assert analysis.order_changes(
        {"a": 0.6, "b": 0.4}, {"w": {"a": 0.1, "b": 0.2}}
    ) == [("a", "b", "w", True)]


def test_a_workload_no_one_reaches_caps_every_area():
    table = {o: {**t, "never": math.inf} for o, t in HAND.items()}
    assert analysis.reached_workloads(table) == ["x", "y", "z"]
    # Three of four workloads reachable: every area three quarters of HAND's.
    areas = analysis.profile_areas(table)
    assert areas == pytest.approx({"a": 2 / 4, "b": 1 / 4, "c": 1 / 4})
    assert max(areas.values()) <= 3 / 4


def per_seed(table, seeds=3):
    return {o: {w: [v] * seeds for w, v in t.items()} for o, t in table.items()}


def test_bootstrap_collapses_to_the_point_where_every_seed_is_equal():
    samples = analysis.bootstrap_areas(per_seed(HAND), resamples=50, seed=1)
    point = analysis.profile_areas(HAND)
    for o, s in samples.items():
        assert analysis.percentile_interval(s) == pytest.approx((point[o], point[o]))
    profile = analysis.profile(per_seed(HAND), resamples=50)
    assert profile.low == pytest.approx(point) and profile.high == pytest.approx(point)
    assert profile.ranks == {"a": (1, 1), "b": (2, 3), "c": (2, 3)}


def test_bootstrap_resamples_the_same_seeds_for_every_optimizer():
    # On one workload, a beats b on every seed but not across seeds (a's
    # seed 3 is slower than b's seed 1): an unpaired draw could put b first.
    table = {"a": {"w": [10.0, 30.0, 50.0]}, "b": {"w": [20.0, 40.0, 60.0]}}
    samples = analysis.bootstrap_areas(table, resamples=200, seed=0)
    assert np.all(samples["a"] == 1.0)
    # a's and b's values rise together, so both medians sit at the same seed:
    # b's ratio to a is 20/10, 40/30 or 60/50, never one across seeds.
    ratios = (20 / 10, 40 / 30, 60 / 50)
    areas = [analysis.profile_areas({"a": {"w": 1.0}, "b": {"w": r}}) for r in ratios]
    assert set(np.round(samples["b"], 9)) <= {round(a["b"], 9) for a in areas}
    again = analysis.bootstrap_areas(table, resamples=200, seed=0)
    np.testing.assert_array_equal(samples["b"], again["b"])  # a fixed seed


def test_bootstrap_interval_contains_the_point_estimate():
    table = {
        "a": {"x": [10.0, 12.0, 30.0], "y": [20.0, 22.0, 24.0]},
        "b": {"x": [11.0, 13.0, 14.0], "y": [19.0, 30.0, math.inf]},
    }
    profile = analysis.profile(table, resamples=500, seed=3)
    for o in table:
        assert profile.low[o] <= profile.areas[o] <= profile.high[o]
    with pytest.raises(ValueError, match="same seeds"):
        analysis.bootstrap_areas({"a": {"x": [1.0]}, "b": {"x": [1.0, 2.0]}})


def test_rank_ranges_count_overlapping_intervals_as_tied():
    low = {"a": 0.6, "b": 0.5, "c": 0.1}
    high = {"a": 0.9, "b": 0.7, "c": 0.3}
    # a and b overlap (ranks 1-2); c lies wholly below both (rank 3).
    assert analysis.rank_ranges(low, high) == {"a": (1, 2), "b": (1, 2), "c": (3, 3)}


def test_separated_pairs_are_those_whose_paired_difference_excludes_zero():
    samples = {
        "a": np.array([0.9, 0.8, 0.7, 0.9]),
        "b": np.array([0.5, 0.6, 0.5, 0.4]),  # below a in every resample
        "c": np.array([0.8, 0.9, 0.4, 0.3]),  # crosses both
    }
    profile = analysis.Profile(
        times={},
        areas={"a": 0.8, "b": 0.5, "c": 0.6},
        samples=samples,
        low={},
        high={},
        loo={},
    )
    ((ahead, behind, d, low, high),) = profile.separated()
    assert (ahead, behind) == ("a", "b") and d == pytest.approx(0.3)
    assert (low, high) == analysis.percentile_interval(samples["a"] - samples["b"])
    assert low > 0
    # Where the resamples put the one with the smaller point area ahead, it
    # is listed first, with the difference and its interval negated.
    flipped = analysis.Profile(
        times={},
        areas={"a": 0.5, "b": 0.8},
        samples={"a": samples["a"], "b": samples["b"]},
        low={},
        high={},
        loo={},
    )
    ((ahead, behind, d, low2, high2),) = flipped.separated()
    assert (ahead, behind, d) == ("a", "b", pytest.approx(-0.3))
    assert (low2, high2) == pytest.approx((low, high))


def test_seed_widths_flag_a_width_that_reaches_the_grids_end():
    # Seed 1's best is the top point and its neighbour is within: open.
    # Seed 2's best is in the middle, alone: width 0, closed.
    rows = [
        row("a", s, p, f)
        for s, finals in ((1, (0.9, 0.5, 0.45)), (2, (0.9, 0.4, 0.9)))
        for p, f in enumerate(finals)
    ]
    assert analysis.seed_widths(rows, "w", "a", 0.1, 0.5) == [(0.5, True), (0.0, False)]


def test_a_censored_width_pair_is_left_out_and_bounds_the_difference():
    pairs = [
        analysis.WidthPair("x", 1, 0.75, False, 1.125, False),  # -0.375
        analysis.WidthPair("x", 2, 0.75, False, 1.5, True),  # second censored
        analysis.WidthPair("y", 1, 0.375, False, 0.0, False),  # +0.375
        analysis.WidthPair("y", 2, 0.375, False, 0.375, False),  # 0
        analysis.WidthPair("z", 1, 1.125, True, 1.125, True),  # both censored
    ]
    assert [p.censored for p in pairs] == [False, True, False, False, True]
    # The second's width may be wider: first minus second is at most -0.75.
    assert pairs[1].bounds == (-math.inf, -0.75)
    assert pairs[4].bounds == (-math.inf, math.inf)
    assert analysis.WidthPair("x", 3, 1.5, True, 0.75, False).bounds == (0.75, math.inf)
    # Left out: x seed 2 and all of z (no uncensored pair: no group).
    assert analysis.uncensored(pairs) == {"x": [-0.375], "y": [0.375, 0.0]}
    # The one-sided pair at its bound: (-0.375 - 0.75 + 0.375 + 0) / 4, and
    # the true mean is at most that.
    assert analysis.bounded_mean(pairs) == (pytest.approx(-0.1875), "≤", 4)
    mixed = [*pairs, analysis.WidthPair("y", 3, 1.5, True, 0.75, False)]
    assert analysis.bounded_mean(mixed) is None  # bounds on both sides


def test_the_workload_bootstrap_collapses_and_contains_its_mean():
    same = {"x": [0.25, 0.25], "y": [0.25, 0.25, 0.25]}
    assert analysis.cluster_bootstrap(same, resamples=100) == pytest.approx(
        (0.25, 0.25, 0.25)
    )
    groups = {"x": [-0.375, 0.0], "y": [0.375, 0.0, -0.375], "z": [0.0]}
    mean, low, high = analysis.cluster_bootstrap(groups, resamples=500, seed=2)
    assert mean == pytest.approx(-0.375 / 6)  # pooled over the six values
    assert low <= mean <= high
    # Every resample's mean is a mean of the values: within their range.
    assert -0.375 <= low and high <= 0.375


def test_report_commands_are_relative_to_the_repository(tmp_path):
    from harness import workloads_report

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    command = "python benchmarks/workloads.py --out {} --merge"
    inside = command.format(tmp_path / "benchmarks" / "results")
    assert workloads_report.relative_command(inside, tmp_path) == command.format(
        "benchmarks/results"
    )
    # Recorded in another checkout: from the last parts naming a folder here.
    other = command.format("/elsewhere/repo/benchmarks/results")
    assert workloads_report.relative_command(other, tmp_path) == command.format(
        "benchmarks/results"
    )
    # Outside any repository: as recorded.
    outside = command.format("/scratch/run7")
    assert workloads_report.relative_command(outside, tmp_path) == outside


# The cautious-by-horizon part (`workloads.py --horizon`).
STORED = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_the_stored_study_ran_every_registered_optimizer_cautious_aadamw_too():
    cautious = optimizers.OPTIMIZERS["cautious_aadamw"]
    assert cautious.relative
    np.testing.assert_array_equal(
        cautious.grid(), optimizers.OPTIMIZERS["adamw"].grid()
    )
    stored = json.loads((STORED / "workloads_run.json").read_text())
    assert stored["optimizers"] == list(optimizers.STUDY_OPTIMIZERS)
    assert list(optimizers.STUDY_OPTIMIZERS) == list(optimizers.OPTIMIZERS)


def test_horizon_plan_rates_are_the_stored_choices_and_their_neighbours():
    import workloads

    # By hand from the stored runs: the tuning run (seed 0) with the lowest
    # final metric on bytes_lm is each optimizer's chosen point.
    rows = [
        r
        for r in csv.DictReader((STORED / "workloads.csv").open())
        if r["workload"] == "bytes_lm" and r["phase"] == "tune"
    ]
    chosen = {}
    for name in ("adamw", "aadamw", "cautious_adamw", "cautious_aadamw"):
        tune = [r for r in rows if r["optimizer"] == name]
        best = min(tune, key=lambda r: (float(r["final_metric"]), int(r["point"])))
        chosen[name] = int(best["point"])
    meta = workloads.horizon_settings(workloads.HORIZON, STORED, 5, quick=False)
    rules = meta["rules"]
    assert rules["optimizers"] == [
        "adamw",
        "aadamw",
        "cautious_adamw",
        "cautious_aadamw",
    ]
    assert rules["centres"] == chosen
    grid = optimizers.OPTIMIZERS["adamw"].grid()
    for name, centre in chosen.items():
        assert rules["points"][name] == [centre - 1, centre, centre + 1]
        np.testing.assert_allclose(rules["rates"][name], grid[centre - 1 : centre + 2])
    np.testing.assert_allclose(grid, 10 ** np.arange(-4, -0.99, 0.375))
    assert rules["seeds"] == [1, 2, 3, 4, 5]
    assert rules["horizons"] == [300, 1200]
    assert rules["eval_every"] == {"300": 20, "1200": 60}
    assert rules["warmup_fraction"] == 0.05
    assert rules["best_rate"]["primary"] == "all_seeds"
    assert rules["best_rate"]["sensitivity"] == "first_seed"
    assert rules["comparisons"] == [
        ["cautious_aadamw", "cautious_adamw"],
        ["cautious_aadamw", "aadamw"],
        ["cautious_adamw", "adamw"],
        ["aadamw", "adamw"],
    ]
    assert rules["interval_level"] == 0.95
    # The 300-step control is the stored study's budget exactly.
    assert workloads.HORIZON.budget == {"batch_size": 16, "val_windows": 64}
    assert workloads.PLANS["bytes_lm"].budget == {
        "steps": 300,
        "eval_every": 20,
        **workloads.HORIZON.budget,
    }
    # At a grid end the neighbours it lacks are left out.
    assert analysis.horizon_points(0, 9) == [0, 1]
    assert analysis.horizon_points(8, 9) == [7, 8]


def horizon_row(optimizer, steps, point, seed, final, initial=9.0):
    return {
        "optimizer": optimizer,
        "steps": steps,
        "point": point,
        "seed": seed,
        "initial_metric": initial,
        "final_metric": final,
    }


# Final metrics [optimizer][point] per seed 1, 2, 3 at one horizon.
HORIZON_HAND = {
    "a": {4: [3.0, 3.2, 3.4], 5: [2.0, 2.6, 2.3], 6: [2.5, 2.4, 2.6]},
    "b": {4: [2.1, 2.2, 2.0], 5: [2.9, 3.0, 3.1], 6: [math.inf, 3.3, 3.3]},
}


def hand_rows(steps=100, shift=0.0):
    return [
        horizon_row(o, steps, p, s + 1, v + shift if o == "a" else v)
        for o, by_point in HORIZON_HAND.items()
        for p, values in by_point.items()
        for s, v in enumerate(values)
    ]


def test_horizon_best_rates_and_paired_differences_by_hand():
    rows = hand_rows()
    # Means over seeds: a 3.2, 2.3, 2.5 -> point 5; b 2.1, 3.0, (inf capped to 9.0
    # + 3.3 + 3.3) / 3 = 5.2 -> point 4.
    assert analysis.horizon_choice(rows, 100, "a", analysis.ALL_SEEDS) == (5, [1, 2, 3])
    assert analysis.horizon_choice(rows, 100, "b", analysis.ALL_SEEDS) == (4, [1, 2, 3])
    # a at 5 minus b at 4, per seed: -0.1, 0.4, 0.3.
    diff = analysis.horizon_difference(rows, 100, ("a", "b"))
    assert diff == pytest.approx({1: -0.1, 2: 0.4, 3: 0.3})
    mean, low, high = analysis.interval(list(diff.values()))
    half = 4.302653 * float(np.std([-0.1, 0.4, 0.3], ddof=1)) / math.sqrt(3)
    assert mean == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.2 - half, 0.2 + half), rel=1e-6)
    # Seed 1 picks: a 2.0 at 5, b 2.1 at 4; scored on seeds 2, 3 only.
    assert analysis.horizon_choice(rows, 100, "a", analysis.FIRST_SEED) == (5, [2, 3])
    first = analysis.horizon_difference(rows, 100, ("a", "b"), analysis.FIRST_SEED)
    assert first == pytest.approx({2: 0.4, 3: 0.3})
    # Ties of the mean go to the lower rate.
    tied = [horizon_row("c", 100, p, 1, 1.0) for p in (6, 4, 5)]
    assert analysis.horizon_choice(tied, 100, "c", analysis.ALL_SEEDS)[0] == 4


def test_horizon_change_pairs_the_two_horizons_by_seed():
    # At the long horizon a is 1.0 lower everywhere: the best points stay,
    # each seed's difference falls by exactly 1.0.
    rows = hand_rows(100) + hand_rows(400, shift=-1.0)
    change = analysis.horizon_change(rows, 100, 400, ("a", "b"))
    assert change == pytest.approx({1: -1.0, 2: -1.0, 3: -1.0})
    assert analysis.horizon_difference(rows, 400, ("a", "b")) == pytest.approx(
        {1: -1.1, 2: -0.6, 3: -0.7}
    )


def test_reproduction_gap_compares_only_repeated_runs():
    stored = [
        {**horizon_row("a", 100, 5, 1, 2.0), "workload": "w", "phase": "score"},
        {**horizon_row("a", 100, 5, 9, 7.0), "workload": "w", "phase": "score"},
        {**horizon_row("a", 100, 5, 1, 5.0), "workload": "w", "phase": "tune"},
    ]
    rows = [horizon_row("a", 100, 5, 1, 2.25), horizon_row("a", 400, 5, 1, 1.0)]
    assert analysis.reproduction_gap(rows, stored, "w") == (0.25, 0.25, 1)
    assert analysis.reproduction_gap(rows[1:], stored, "w")[2] == 0


def test_the_target_is_recorded_before_the_first_scored_seed():
    import types

    import workloads

    events = []

    class FakeStudy:
        workload = types.SimpleNamespace(tie=0.5)
        points, above = 2, 1

        def record(self, name, phase, point, seed, bar):
            events.append((phase, name, point, seed))
            # Final metrics by point: 3, 2, 1 for adam, 9 for lion anywhere.
            return np.array([10.0, 9.0 if name == "lion" else 3.0 - point])

        def score(self, target, chosen):
            events.append(("score_all", target, dict(chosen)))

    def fixed(target):
        events.append(("fixed", target))

    tuning = {"adam": [0, 1, 2], "lion": [0, 1, 2]}
    target = workloads.run_workload(FakeStudy(), tuning, [1, 2], True, None, fixed)
    # The best Adam-family final (1.0) plus 5 ties of 0.5, with the slack.
    assert target == pytest.approx(1.0 + 2.5 * (1 + 1e-6))
    phases = [e[0] for e in events]
    first_score = phases.index("score")
    assert phases.index("fixed") < first_score
    assert set(phases[:first_score]) == {"tune", "fixed"}
    # Every seed at every point of the extended grid (2 + 1 above).
    scored = {(e[1], e[2], e[3]) for e in events if e[0] == "score"}
    assert scored == {(o, p, s) for o in tuning for p in range(3) for s in (1, 2)}
    assert events[-1] == ("score_all", target, {"adam": 2, "lion": 0})


def test_a_workload_no_median_reaches_is_named_with_the_areas_cap():
    from types import SimpleNamespace

    from harness import workloads_report

    # 3 of 4 workloads reached: every area is at most 3/4, rescaled by 4/3.
    p = SimpleNamespace(workloads=["a", "b", "c", "d"], reached=["a", "b", "d"])
    text = workloads_report._unreached("fewest_steps", p)
    assert text.startswith("- `fewest_steps`: c reached by no optimizer's median")
    assert "at most 3/4 = 0.75" in text and "each area is 4/3" in text
    everywhere = SimpleNamespace(workloads=["a"], reached=["a"])
    assert workloads_report._unreached("lowest_final", everywhere) == ""
    # The summary and the time-to-target section say it in the same words.
    report = (STORED / "workloads.md").read_text()
    summary, rest = report.split("## Method")
    line = next(x for x in summary.splitlines() if "reached by no" in x)
    assert line in rest
