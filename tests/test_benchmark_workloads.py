"""End to end: `benchmarks/workloads.py --quick` runs and writes sane files.

Budget: about a minute on 2 cores (one subprocess; six small compilations).
Every expected value is re-derived here from the stored runs by the rules in
the script's docstring, not read from the report.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from benchmark_helpers import ROOT, assert_valid_png, read_csv, run_script

SCRIPT = "workloads.py"
LARGE = ("aadamw", "adamw", "cautious_adamw", "cautious_aadamw")
OPTIMIZERS = (*LARGE, "lion")
POINTS, SEEDS = 3, (1, 2)
TIES = {"rosenbrock_2d": 0.01, "mnist_logreg": 1 / 1000, "bytes_lm_1m": 0.01}
WORKLOADS = ["rosenbrock_2d", "mnist_logreg", "bytes_lm_1m"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("workloads")
    run_script(SCRIPT, "--quick", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def rows(out_dir) -> list[dict]:
    return read_csv(out_dir / "workloads.csv")


def runs(rows, workload, **match):
    return [
        r
        for r in rows
        if r["workload"] == workload and all(r[k] == str(v) for k, v in match.items())
    ]


def test_help_lists_the_options():
    help_text = run_script(SCRIPT, "--help")
    for option in (
        "--out",
        "--quick",
        "--points",
        "--seeds",
        "--workloads",
        "--merge",
        "--report-only",
    ):
        assert option in help_text


def test_every_optimizer_runs_every_grid_point_on_every_seed(rows):
    grid = runs(rows, "mnist_logreg")
    cells = {(r["optimizer"], r["point"], r["seed"]) for r in grid}
    assert len(grid) == len(cells) == len(OPTIMIZERS) * POINTS * (1 + len(SEEDS))
    assert {r["phase"] for r in grid if r["seed"] == "0"} == {"tune"}
    assert {r["phase"] for r in grid if r["seed"] != "0"} == {"score"}
    for r in grid:
        assert float(r["seconds"]) > 0 and float(r["compile_seconds"]) > 0
        assert not math.isnan(float(r["final_metric"]))


def test_grids_are_three_decades_log_spaced_lion_a_decade_lower(rows):
    rates = defaultdict(set)
    for r in runs(rows, "mnist_logreg"):
        rates[r["optimizer"]].add(float(r["learning_rate"]))
    adam = sorted(rates["adamw"])
    np.testing.assert_allclose(adam, [1e-4, 10**-2.5, 1e-1], rtol=1e-5)
    np.testing.assert_allclose(sorted(rates["aadamw"]), adam)
    np.testing.assert_allclose(sorted(rates["lion"]), np.array(adam) / 10, rtol=1e-5)


def test_a_small_problem_grid_reaches_one_step_past_the_top(out_dir, rows):
    # The quick plan gives rosenbrock_2d one point above: 10^0.5 for the Adam
    # family (1.5 decades past 0.1), 10^-0.5 for Lion, on every seed.
    grid = runs(rows, "rosenbrock_2d")
    for o, top in (("adamw", 10**0.5), ("lion", 10**-0.5)):
        mine = [r for r in grid if r["optimizer"] == o]
        assert len(mine) == (POINTS + 1) * (1 + len(SEEDS))
        (last,) = {float(r["learning_rate"]) for r in mine if r["point"] == "3"}
        assert last == pytest.approx(top, rel=1e-6)
    meta = json.loads((out_dir / "workloads_run.json").read_text())
    (small,) = [w for w in meta["workloads"] if w["name"] == "rosenbrock_2d"]
    assert small["grid_points_above"] == 1
    assert meta["plans"]["rosenbrock_2d"]["above"] == 1
    assert meta["plans"]["mnist_logreg"]["above"] == 0


def test_chosen_point_and_target_follow_the_written_rules(rows):
    for w in WORKLOADS:
        tune = runs(rows, w, phase="tune")
        # The Adam family sets the target; the relatives do not.
        family = [float(r["final_metric"]) for r in tune if r["optimizer"] in LARGE[:2]]
        target = min(family) + 5 * TIES[w]
        for r in runs(rows, w):
            assert float(r["target"]) == pytest.approx(target, rel=1e-5)
        for o in {r["optimizer"] for r in tune}:
            mine = [r for r in tune if r["optimizer"] == o]
            best = min(mine, key=lambda r: float(r["final_metric"]))
            assert {r["point"] for r in mine if r["chosen"] == "1"} == {best["point"]}
            assert {r["point"] for r in runs(rows, w, optimizer=o, chosen=1)} == {
                best["point"]
            }


def test_the_larger_model_scores_only_its_chosen_rate(rows):
    large = runs(rows, "bytes_lm_1m")
    # The four fixed before any run, whatever the full grid ran.
    assert {r["optimizer"] for r in large} == set(LARGE)
    scored = [r for r in large if r["phase"] == "score"]
    assert len(scored) == len(LARGE) * len(SEEDS)
    assert all(r["chosen"] == "1" for r in scored)


def test_steps_to_target_match_the_recorded_curves(out_dir, rows):
    curves = defaultdict(list)
    for c in read_csv(out_dir / "workloads_curves.csv"):
        curves[(c["workload"], c["optimizer"], c["seed"])].append(c)
    scored = [r for r in rows if r["phase"] == "score" and r["chosen"] == "1"]
    assert len(curves) == len(scored)
    for r in scored:
        curve = curves[(r["workload"], r["optimizer"], r["seed"])]
        assert len(curve) == int(r["steps"]) // int(r["eval_every"]) + 1
        below = [
            int(c["step"]) for c in curve if float(c["metric"]) <= float(r["target"])
        ]
        assert int(r["reached"]) == bool(below)
        if below:
            assert int(r["steps_to_target"]) == below[0]
        assert float(curve[-1]["metric"]) == pytest.approx(float(r["final_metric"]))


def test_report_has_its_sections_rules_and_plots(out_dir):
    text = (out_dir / "workloads.md").read_text()
    for words in (
        "## Time to target",
        "## Learning-rate tolerance",
        "## AAdam minus Adam at equal learning rates",
        "Performance-profile areas",
        "python benchmarks/workloads.py --quick --out",
        "`aadamw` − `adamw`",
    ):
        assert words in text
    meta = json.loads((out_dir / "workloads_run.json").read_text())
    assert meta["rules"]["target_margin_ties"] == 5
    assert meta["rules"]["tolerance_ties"] == 10
    # The rate selection is recorded when the run starts, the primary named.
    selection = meta["rules"]["rate_selection"]
    assert selection["time_to_target"] == "fewest_steps"
    assert selection["time_to_target_sensitivity"] == "lowest_final"
    # Both rules' profiles, with the bootstrap's seed and resamples.
    for words in (
        "`fewest_steps` (primary): area [95 % bootstrap]",
        "`lowest_final` (sensitivity): area [95 % bootstrap]",
        "2000 resamples from NumPy's `default_rng(0)`",
    ):
        assert words in text
    # The record holds every rule the code applies: no note.
    assert meta["points"] == POINTS and meta["seeds"] == list(SEEDS)
    assert sorted(meta["files"]) == sorted(p.name for p in out_dir.iterdir())
    for name in ("profile", "curves", "tolerance"):
        assert_valid_png(out_dir / f"workloads_{name}.png", 300, 200)


@pytest.mark.parametrize(
    "workload, tolerance, points",
    [("mnist_logreg", "0.01", POINTS), ("rosenbrock_2d", "0.1", POINTS + 1)],
)
def test_tolerance_widths_match_the_medians(out_dir, rows, workload, tolerance, points):
    # The width of the contiguous points within 10 ties of the best median
    # final metric (capped at the untrained value), re-derived; rosenbrock_2d's
    # grid has one point past the standard top.
    text = (out_dir / "workloads.md").read_text()
    head = f"| {workload} | {tolerance} |"
    line = next(x for x in text.splitlines() if x.startswith(head))
    cells = [c.strip() for c in line.strip("|").split("|")][2:]
    for o, cell in zip(OPTIMIZERS, cells, strict=True):
        medians = []
        for p in range(points):
            finals = [
                min(float(r["final_metric"]), float(r["initial_metric"]))
                for r in runs(rows, workload, optimizer=o, phase="score", point=p)
            ]
            medians.append(float(np.median(finals)))
        best = int(np.argmin(medians))
        ok = [m <= medians[best] + 10 * TIES[workload] * (1 + 1e-6) for m in medians]
        low, high = best, best
        while low > 0 and ok[low - 1]:
            low -= 1
        while high < points - 1 and ok[high + 1]:
            high += 1
        edge = "≥" if low == 0 or high == points - 1 else ""
        assert cell == f"{edge}{(high - low) * 1.5:.2f}"


def test_the_cautious_table_is_each_pair_at_its_own_chosen_rate(out_dir, rows):
    # Re-derived from the rows: per scored seed, first minus second at each
    # one's chosen point (capped), then the mean and its 95 % t interval
    # (2 seeds: t = 12.706).
    text = (out_dir / "workloads.md").read_text()
    section = text.split("## The cautious question")[1].split("\n## ")[0]
    pairs = [
        ("cautious_aadamw", "cautious_adamw"),
        ("cautious_aadamw", "aadamw"),
        ("cautious_adamw", "adamw"),
    ]
    for w in WORKLOADS:
        line = next(x for x in section.splitlines() if x.startswith(f"| {w} | "))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]

        def finals(o, w=w):
            chosen = runs(rows, w, optimizer=o, phase="score", chosen=1)
            chosen.sort(key=lambda r: int(r["seed"]))
            return np.array(
                [
                    min(float(r["final_metric"]), float(r["initial_metric"]))
                    for r in chosen
                ]
            )

        for (a, b), cell in zip(pairs, cells, strict=True):
            d = finals(a) - finals(b)
            half = 12.706205 * d.std(ddof=1) / math.sqrt(len(d))
            mean, low, high = (
                float(x.strip("[]+")) for x in cell.replace(",", "").split()
            )
            # Cells have three significant digits: half a unit of the third.
            scale = max(abs(d.mean()) + half, 1e-9)
            assert mean == pytest.approx(d.mean(), abs=5e-3 * scale)
            assert low == pytest.approx(d.mean() - half, abs=5e-3 * scale)
            assert high == pytest.approx(d.mean() + half, abs=5e-3 * scale)


def test_time_to_target_reads_the_rate_seed_0_reached_fastest(out_dir, rows):
    # mnist_logreg: the cell of each optimizer re-derived from the rows: the
    # point of seed 0's fewest steps (ties: lower final metric, lower rate),
    # then the median of the scored seeds' steps there.
    text = (out_dir / "workloads.md").read_text().split("## Time to target")[1]
    line = next(x for x in text.splitlines() if x.startswith("| mnist_logreg | "))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]

    def steps(r):
        return int(r["steps_to_target"]) if r["reached"] == "1" else math.inf

    for o, cell in zip(OPTIMIZERS, cells, strict=True):
        tune = runs(rows, "mnist_logreg", optimizer=o, phase="tune")
        key = min(
            tune,
            key=lambda r: (
                steps(r),
                min(float(r["final_metric"]), float(r["initial_metric"])),
                int(r["point"]),
            ),
        )
        scored = runs(
            rows, "mnist_logreg", optimizer=o, phase="score", point=key["point"]
        )
        median = float(np.median([steps(r) for r in scored]))
        shown = "not reached" if math.isinf(median) else f"{median:g}"
        reached = sum(r["reached"] == "1" for r in scored)
        rate = float(key["learning_rate"])
        assert cell == f"{shown} ({reached}/{len(scored)}, lr {rate:.3g})"


def test_time_to_target_under_the_sensitivity_rule_reads_the_tuning_choice(
    out_dir, rows
):
    # The second mnist_logreg row of Time to target: the scored seeds at the
    # point seed 0 chose by final metric (`chosen`).
    text = (out_dir / "workloads.md").read_text().split("## Time to target")[1]
    lines = [x for x in text.splitlines() if x.startswith("| mnist_logreg | ")]
    cells = [c.strip() for c in lines[1].strip("|").split("|")][1:]
    for o, cell in zip(OPTIMIZERS, cells, strict=True):
        (tune,) = runs(rows, "mnist_logreg", optimizer=o, phase="tune", chosen=1)
        scored = runs(
            rows, "mnist_logreg", optimizer=o, phase="score", point=tune["point"]
        )
        steps = [
            int(r["steps_to_target"]) if r["reached"] == "1" else math.inf
            for r in scored
        ]
        median = float(np.median(steps))
        shown = "not reached" if math.isinf(median) else f"{median:g}"
        reached = sum(r["reached"] == "1" for r in scored)
        rate = float(tune["learning_rate"])
        assert cell == f"{shown} ({reached}/{len(scored)}, lr {rate:.3g})"


def test_a_record_run_under_other_rules_is_refused(out_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(out_dir, old)
    meta = json.loads((old / "workloads_run.json").read_text())
    del meta["rules"]["rate_selection"]
    meta["rules"]["tolerance_ties"] = 7
    (old / "workloads_run.json").write_text(json.dumps(meta))
    before = (old / "workloads.md").read_text()
    with pytest.raises(subprocess.CalledProcessError) as error:
        run_script(SCRIPT, "--report-only", "--out", str(old))
    message = error.value.stderr
    assert "was run under other rules than the code's" in message
    assert "rate_selection: recorded null" in message
    assert "tolerance_ties: recorded 7, code 10" in message
    # Nothing is re-scored: the stored report is left as it was.
    assert (old / "workloads.md").read_text() == before


def test_a_workload_recorded_but_not_run_is_left_out(out_dir, tmp_path):
    # As an invocation interrupted after fixing a target: the record names a
    # workload the runs file lacks; the report scores the others.
    cut = tmp_path / "cut"
    shutil.copytree(out_dir, cut)
    meta = json.loads((cut / "workloads_run.json").read_text())
    ghost = {**meta["workloads"][0], "name": "ghost"}
    meta["workloads"].append(ghost)
    (cut / "workloads_run.json").write_text(json.dumps(meta))
    run_script(SCRIPT, "--report-only", "--out", str(cut))
    text = (cut / "workloads.md").read_text()
    assert "| ghost |" not in text and "| mnist_logreg |" in text


def test_report_only_rewrites_the_same_report(out_dir):
    before = (out_dir / "workloads.md").read_text()
    (out_dir / "workloads.md").unlink()
    run_script(SCRIPT, "--report-only", "--out", str(out_dir))
    assert (out_dir / "workloads.md").read_text() == before


def test_run_records_its_provenance(out_dir):
    meta = json.loads((out_dir / "workloads_run.json").read_text())
    (invocation,) = meta["invocations"]
    assert invocation["workloads"] == WORKLOADS
    assert set(invocation["seconds"]) == set(WORKLOADS)
    recorded = invocation["provenance"]
    assert len(recorded["commit"]) == 40 and "jax" in recorded["versions"]
    assert set(recorded["numerics"]["values"]) >= {"aadam[sign_change]", "adam"}
    text = (out_dir / "workloads.md").read_text()
    assert f"- Numerics fingerprint: `{recorded['numerics']['hash']}`" in text
    assert f"- Commit: `{recorded['commit'][:12]}`" in text


def test_merge_replaces_one_workload_and_keeps_the_others(out_dir, tmp_path):
    merged = tmp_path / "merged"
    shutil.copytree(out_dir, merged)
    before = read_csv(merged / "workloads.csv")
    run_script(
        SCRIPT, "--quick", "--workloads", "bytes_lm_1m", "--merge", "--out", str(merged)
    )
    after = read_csv(merged / "workloads.csv")
    assert len(after) == len(before)
    # The other workload's rows are kept as they were, in the registry's order.
    kept = [r for r in after if r["workload"] == "mnist_logreg"]
    assert kept == [r for r in before if r["workload"] == "mnist_logreg"]
    assert [r["workload"] for r in after] == [r["workload"] for r in before]
    meta = json.loads((merged / "workloads_run.json").read_text())
    assert [i["workloads"] for i in meta["invocations"]] == [
        WORKLOADS[:2],
        ["bytes_lm_1m"],
    ]
    # The first invocation keeps only the wall time of what it still holds.
    first = meta["invocations"][0]
    assert list(first["seconds"]) == WORKLOADS[:2]
    assert first["wall_seconds"] == pytest.approx(sum(first["seconds"].values()))
    text = (merged / "workloads.md").read_text()
    assert "2 invocation(s)" in text and text.count("- Numerics fingerprint:") == 2


def test_the_larger_model_needs_its_reference_workload(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as error:
        run_script(
            SCRIPT, "--quick", "--workloads", "bytes_lm_1m", "--out", str(tmp_path)
        )
    assert "run --workloads mnist_logreg first" in error.value.stderr


def test_merge_refuses_results_of_other_settings(out_dir, tmp_path):
    merged = tmp_path / "other"
    shutil.copytree(out_dir, merged)
    with pytest.raises(subprocess.CalledProcessError) as error:
        run_script(
            SCRIPT,
            "--quick",
            "--points",
            "4",
            "--workloads",
            "mnist_logreg",
            "--merge",
            "--out",
            str(merged),
        )
    assert "other settings (points)" in error.value.stderr


# The cautious-by-horizon part: `--horizon --quick` end to end (about 30 s).
HORIZON_OPTIMIZERS = ("adamw", "aadamw", "cautious_adamw", "cautious_aadamw")
QUICK_HORIZONS = (10, 40)


@pytest.fixture(scope="module")
def horizon_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("horizon")
    run_script(SCRIPT, "--horizon", "--quick", "--out", str(out))
    return out


def test_horizon_quick_runs_every_rate_on_every_seed_at_both_horizons(horizon_dir):
    meta = json.loads((horizon_dir / "workloads_horizon_run.json").read_text())
    rules = meta["rules"]
    # The stored study's choices on mnist_logreg (the quick reference), read
    # by hand: the tuning run with the lowest final metric.
    stored = read_csv(ROOT / "benchmarks" / "results" / "workloads.csv")
    tune = [
        r for r in stored if r["workload"] == "mnist_logreg" and r["phase"] == "tune"
    ]
    centre = {
        o: int(
            min(
                (r for r in tune if r["optimizer"] == o),
                key=lambda r: (float(r["final_metric"]), int(r["point"])),
            )["point"]
        )
        for o in HORIZON_OPTIMIZERS
    }
    assert rules["centres"] == centre
    assert rules["seeds"] == [1, 2] and rules["horizons"] == list(QUICK_HORIZONS)
    rows = read_csv(horizon_dir / "workloads_horizon.csv")
    cells = {
        (r["optimizer"], int(r["steps"]), int(r["point"]), int(r["seed"])) for r in rows
    }
    expected = {
        (o, h, p, s)
        for o in HORIZON_OPTIMIZERS
        for h in QUICK_HORIZONS
        for p in (centre[o] - 1, centre[o], centre[o] + 1)
        for s in (1, 2)
    }
    assert len(rows) == len(cells) == 48 and cells == expected
    curves = read_csv(horizon_dir / "workloads_horizon_curves.csv")
    for r in rows:
        mine = [
            c
            for c in curves
            if (c["optimizer"], c["steps"], c["point"], c["seed"])
            == (r["optimizer"], r["steps"], r["point"], r["seed"])
        ]
        every = rules["eval_every"][r["steps"]]
        assert [int(c["step"]) for c in mine] == list(
            range(0, int(r["steps"]) + 1, every)
        )
        assert float(mine[-1]["metric"]) == float(r["final_metric"])
        assert int(r["offset"]) == int(r["point"]) - centre[r["optimizer"]]
    assert meta["files"] == [
        "workloads_horizon.csv",
        "workloads_horizon_curves.csv",
        "workloads_horizon_run.json",
        "workloads_horizon.md",
        "workloads_horizon_curves.png",
    ]
    assert_valid_png(horizon_dir / "workloads_horizon_curves.png", 300, 200)
    assert set(meta["seconds"]) == {"10", "40"}


def _best(rows, steps, optimizer, seeds):
    finals = defaultdict(dict)
    for r in rows:
        if r["optimizer"] == optimizer and int(r["steps"]) == steps:
            value = min(float(r["final_metric"]), float(r["initial_metric"]))
            finals[int(r["point"])][int(r["seed"])] = value
    point = min(finals, key=lambda p: (np.mean([finals[p][s] for s in seeds]), p))
    return finals[point]


def test_horizon_report_shows_the_paired_differences_of_the_stored_runs(horizon_dir):
    from scipy import stats

    rows = read_csv(horizon_dir / "workloads_horizon.csv")
    text = (horizon_dir / "workloads_horizon.md").read_text()
    names = {
        "adamw": "AdamW",
        "aadamw": "AAdamW",
        "cautious_adamw": "C-AdamW",
        "cautious_aadamw": "C-AAdamW",
    }
    for first, second in (
        ("cautious_aadamw", "cautious_adamw"),
        ("cautious_aadamw", "aadamw"),
        ("cautious_adamw", "adamw"),
        ("aadamw", "adamw"),
    ):
        cells = []
        for steps in QUICK_HORIZONS:
            a, b = (_best(rows, steps, o, [1, 2]) for o in (first, second))
            d = np.array([a[s] - b[s] for s in (1, 2)])
            half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
            mean = d.mean()
            cells.append(f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]")
        pair = f"{names[first]} − {names[second]}"
        line = f"- {pair}: 10 steps {cells[0]}; 40 steps {cells[1]}"
        assert line in text, line
    for section in (
        "## Summary",
        "## Rules, as recorded when the run started",
        "## Final metric per optimizer, rate and horizon",
        "## Best of three rates",
        "## Paired differences",
    ):
        assert section in text
    meta = json.loads((horizon_dir / "workloads_horizon_run.json").read_text())
    assert f"- Numerics fingerprint: `{meta['provenance']['numerics']['hash']}`" in text


def test_horizon_report_only_rewrites_the_same_report(horizon_dir):
    before = (horizon_dir / "workloads_horizon.md").read_text()
    (horizon_dir / "workloads_horizon.md").unlink()
    run_script(SCRIPT, "--report-only", "--out", str(horizon_dir))
    assert (horizon_dir / "workloads_horizon.md").read_text() == before
    assert not (horizon_dir / "workloads.md").exists()


def test_horizon_refuses_the_full_grid_options(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as error:
        run_script(
            SCRIPT, "--horizon", "--workloads", "bytes_lm", "--out", str(tmp_path)
        )
    assert "--horizon runs its own plan: drop --workloads" in error.value.stderr
