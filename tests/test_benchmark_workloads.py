"""End to end: `benchmarks/workloads.py --quick` runs and writes sane files.

Budget: about a minute on 2 cores (one subprocess; four compilations, two of
them the byte Transformer's).
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
from collections import defaultdict

import pytest
from benchmark_helpers import assert_valid_png, read_csv, run_script

SCRIPT = "workloads.py"
WORKLOADS = {"mnist_logreg", "bytes_lm"}
OPTIMIZERS = {"aadam_sign_change", "adam"}
TRIALS, SEEDS = 2, 2


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("workloads")
    run_script(SCRIPT, "--quick", "--out", str(out))
    return out


def test_help_lists_the_options():
    help_text = run_script(SCRIPT, "--help")
    for option in (
        "--out",
        "--quick",
        "--trials",
        "--seeds",
        "--workloads",
        "--merge",
        "--report-only",
    ):
        assert option in help_text


def test_runs_cover_every_trial_and_seed(out_dir):
    rows = read_csv(out_dir / "workloads.csv")
    assert {r["workload"] for r in rows} == WORKLOADS
    assert {r["optimizer"] for r in rows} == OPTIMIZERS
    assert len(rows) == len(WORKLOADS) * len(OPTIMIZERS) * (TRIALS + SEEDS)
    for r in rows:
        if r["phase"] == "tune":
            assert r["seed"] == "0"
        else:
            # Scored seeds are never the tuning seed.
            assert r["phase"] == "score" and int(r["seed"]) in (1, 2)
        assert float(r["seconds"]) > 0 and float(r["compile_seconds"]) > 0
        assert not math.isnan(float(r["final_metric"]))


def test_the_adam_family_shares_the_trial_learning_rates(out_dir):
    rows = [r for r in read_csv(out_dir / "workloads.csv") if r["phase"] == "tune"]
    rates = defaultdict(set)
    for r in rows:
        rates[(r["workload"], r["trial"])].add(r["learning_rate"])
        assert 1e-4 <= float(r["learning_rate"]) <= 1e-1
    assert all(len(v) == 1 for v in rates.values())
    assert len({v.pop() for v in rates.values()}) == TRIALS


def test_winner_is_the_best_tuning_trial(out_dir):
    rows = read_csv(out_dir / "workloads.csv")
    for w in WORKLOADS:
        for o in OPTIMIZERS:
            cell = [r for r in rows if r["workload"] == w and r["optimizer"] == o]
            tune = [r for r in cell if r["phase"] == "tune"]
            best = min(tune, key=lambda r: float(r["final_metric"]))
            assert {r["trial"] for r in cell if r["phase"] == "score"} == {
                best["trial"]
            }


def test_steps_to_target_match_the_recorded_curves(out_dir):
    # Re-derive steps to target from the validation curves of the scored runs.
    rows = [r for r in read_csv(out_dir / "workloads.csv") if r["phase"] == "score"]
    curves = defaultdict(list)
    for c in read_csv(out_dir / "workloads_curves.csv"):
        curves[(c["workload"], c["optimizer"], c["seed"])].append(c)
    for r in rows:
        curve = curves[(r["workload"], r["optimizer"], r["seed"])]
        assert len(curve) == int(r["steps"]) // int(r["eval_every"]) + 1
        below = [
            int(c["step"]) for c in curve if float(c["metric"]) <= float(r["target"])
        ]
        assert int(r["reached"]) == bool(below)
        if below:
            assert int(r["steps_to_target"]) == below[0]


def test_report_has_method_targets_and_plots(out_dir):
    text = (out_dir / "workloads.md").read_text()
    for words in ("performance profile", "bits per byte", "## Time to target"):
        assert words in text.lower() if words.islower() else words in text
    assert "python benchmarks/workloads.py --quick --out" in text
    for w in WORKLOADS:
        assert f"### {w} (target " in text
    meta = json.loads((out_dir / "workloads_run.json").read_text())
    assert meta["trials"] == TRIALS and meta["seeds"] == [1, 2]
    assert sorted(meta["files"]) == sorted(p.name for p in out_dir.iterdir())
    for name in ("profile", "curves", "sensitivity"):
        assert_valid_png(out_dir / f"workloads_{name}.png", 300, 200)


def test_report_only_rewrites_the_same_report(out_dir):
    before = (out_dir / "workloads.md").read_text()
    (out_dir / "workloads.md").unlink()
    run_script(SCRIPT, "--report-only", "--out", str(out_dir))
    assert (out_dir / "workloads.md").read_text() == before


def test_run_records_its_provenance(out_dir):
    meta = json.loads((out_dir / "workloads_run.json").read_text())
    (invocation,) = meta["invocations"]
    assert invocation["workloads"] == ["mnist_logreg", "bytes_lm"]
    recorded = invocation["provenance"]
    assert len(recorded["commit"]) == 40 and "jax" in recorded["versions"]
    assert set(recorded["numerics"]["values"]) >= {"aadam[sign_change]", "adam"}
    text = (out_dir / "workloads.md").read_text()
    assert f"- Numerics fingerprint: `{recorded['numerics']['hash']}`" in text
    assert f"- Commit: `{recorded['commit'][:12]}`" in text


def test_paired_comparisons_count_ties(out_dir):
    text = (out_dir / "workloads.md").read_text()
    ties = {
        w["name"]: w["tie"]
        for w in json.loads((out_dir / "workloads_run.json").read_text())["workloads"]
    }
    assert ties == {"mnist_logreg": 1 / 1000, "bytes_lm": 0.01}
    assert f"over {len(WORKLOADS) * SEEDS} seed pairs: steps to target fewer in" in text
    assert "tied of" in text and "**Paired comparisons**" in text


def test_merge_replaces_one_workload_and_keeps_the_others(out_dir, tmp_path):
    merged = tmp_path / "merged"
    shutil.copytree(out_dir, merged)
    before = read_csv(merged / "workloads.csv")
    run_script(
        SCRIPT,
        "--quick",
        "--workloads",
        "mnist_logreg",
        "--merge",
        "--out",
        str(merged),
    )
    after = read_csv(merged / "workloads.csv")
    assert len(after) == len(before)
    # The other workload's rows are kept as they were, in the registry's order.
    assert [r for r in after if r["workload"] == "bytes_lm"] == [
        r for r in before if r["workload"] == "bytes_lm"
    ]
    assert [r["workload"] for r in after] == [r["workload"] for r in before]
    meta = json.loads((merged / "workloads_run.json").read_text())
    assert [i["workloads"] for i in meta["invocations"]] == [
        ["bytes_lm"],
        ["mnist_logreg"],
    ]
    assert [w["name"] for w in meta["workloads"]] == ["mnist_logreg", "bytes_lm"]
    text = (merged / "workloads.md").read_text()
    assert "in 2 invocations" in text and text.count("- Numerics fingerprint:") == 2


def test_merge_refuses_results_of_other_settings(out_dir, tmp_path):
    merged = tmp_path / "other"
    shutil.copytree(out_dir, merged)
    with pytest.raises(subprocess.CalledProcessError) as error:
        run_script(
            SCRIPT,
            "--quick",
            "--trials",
            "3",
            "--workloads",
            "mnist_logreg",
            "--merge",
            "--out",
            str(merged),
        )
    assert "other settings (trials)" in error.value.stderr
