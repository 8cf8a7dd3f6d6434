"""End to end: `benchmarks/convergence.py --quick` runs and writes sane files.

Budget: about a minute of CPU on 2 cores (one subprocess; the quick grid compiles one
program per task).
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
from benchmark_helpers import assert_valid_png, read_csv, run_script

SCRIPT = "convergence.py"

OPTIMIZERS = {
    "aadam_sign_change",
    "aadam_sign",
    "aadam_magnitude",
    "aadamw",
    "aadamax",
    "aamsgrad",
    "adam",
    "adamw",
    "adamax",
    "amsgrad",
    "nadam",
    "rmsprop_momentum",
    "sgd_momentum",
}
DATA_TASKS = {"digits_logreg", "digits_mlp", "digits_cnn", "cancer_logreg"}
SYNTHETIC_TASKS = {
    "rosenbrock_2d",
    "rosenbrock_100d",
    "quadratic_ill",
    "quadratic_noisy",
}
TASKS = DATA_TASKS | SYNTHETIC_TASKS
QUICK_TUNING, QUICK_SEEDS, QUICK_LRS = 1, 2, 3


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("convergence")
    run_script(SCRIPT, "--quick", "--out", str(out))
    return out


def test_help_runs():
    help_text = run_script(SCRIPT, "--help")
    for option in ("--out", "--quick", "--seeds", "--tuning-seeds", "--steps"):
        assert option in help_text


def test_raw_csv_has_every_cell_lr_and_seed(out_dir):
    rows = read_csv(out_dir / "convergence.csv")
    assert set(rows[0]) == {
        "task",
        "optimizer",
        "lr",
        "seed",
        "tuning",
        "selected",
        "steps_to_target",
        "reached",
        "final_loss",
        "val_loss",
        "test_accuracy",
    }
    assert {r["task"] for r in rows} == TASKS
    assert {r["optimizer"] for r in rows} == OPTIMIZERS
    n_seeds = QUICK_TUNING + QUICK_SEEDS
    assert len(rows) == len(TASKS) * len(OPTIMIZERS) * QUICK_LRS * n_seeds
    for task in TASKS:
        for name in OPTIMIZERS:
            cell = [r for r in rows if r["task"] == task and r["optimizer"] == name]
            assert {int(r["seed"]) for r in cell} == set(range(n_seeds))
            # The first seeds tune, the others are reported.
            for r in cell:
                assert r["tuning"] == str(int(int(r["seed"]) < QUICK_TUNING))
            assert len({r["lr"] for r in cell}) == QUICK_LRS
            # Exactly one learning rate is selected, for all its seeds.
            selected = {r["lr"] for r in cell if r["selected"] == "1"}
            assert len(selected) == 1
            assert sum(r["selected"] == "1" for r in cell) == n_seeds
    for r in rows:
        assert int(r["reached"]) in (0, 1)
        assert int(r["steps_to_target"]) >= 0
        assert float(r["lr"]) > 0
        # Diverged runs are written as inf, never NaN.
        assert not math.isnan(float(r["final_loss"]))
        if r["task"] in DATA_TASKS:
            assert 0.0 <= float(r["test_accuracy"]) <= 1.0
        else:
            assert r["val_loss"] == r["test_accuracy"] == ""


def test_selected_lr_has_fewest_steps_on_the_tuning_seeds(out_dir):
    # Re-derive the stated rule from the raw rows: the chosen learning rate has
    # the fewest mean steps to target over the tuning seeds, ties broken by the
    # mean validation loss (final training loss for synthetic tasks).
    rows = [r for r in read_csv(out_dir / "convergence.csv") if r["tuning"] == "1"]
    for task in TASKS:
        key = "val_loss" if task in DATA_TASKS else "final_loss"
        for name in OPTIMIZERS:
            by_lr: dict[str, list[tuple[float, float]]] = {}
            for r in rows:
                if r["task"] == task and r["optimizer"] == name:
                    by_lr.setdefault(r["lr"], []).append(
                        (float(r["steps_to_target"]), float(r[key]))
                    )
            means = {
                lr: tuple(sum(x) / len(x) for x in zip(*v, strict=True))
                for lr, v in by_lr.items()
            }
            chosen = next(
                r["lr"]
                for r in rows
                if r["task"] == task and r["optimizer"] == name and r["selected"] == "1"
            )
            steps, loss = means[chosen]
            finite = [m for m in means.values() if math.isfinite(m[1])]
            if finite:
                assert steps == min(m[0] for m in finite)
                tied = [m[1] for m in finite if m[0] == steps]
                # The CSV keeps 6 significant digits; allow for that rounding.
                assert loss <= min(tied) + 1e-5 * abs(min(tied))


def test_target_follows_the_written_rule(out_dir):
    # A target is the objective adam's best-final rate reaches at 25 % of the
    # budget on the (single, in --quick) tuning seed; adam's selected rate takes
    # the fewest steps to it there, so it reaches it within a quarter of the
    # steps.
    rows = read_csv(out_dir / "convergence.csv")
    summary = {
        (r["task"], r["optimizer"]): r
        for r in read_csv(out_dir / "convergence_summary.csv")
    }
    for task in TASKS:
        max_steps = int(summary[(task, "adam")]["max_steps"])
        adam_tuning = [
            r
            for r in rows
            if r["task"] == task
            and r["optimizer"] == "adam"
            and r["tuning"] == "1"
            and r["selected"] == "1"
        ]
        assert all(r["reached"] == "1" for r in adam_tuning)
        assert all(
            int(r["steps_to_target"]) <= max(1, round(0.25 * max_steps))
            for r in adam_tuning
        )


def test_summary_csv_is_finite_and_ranks_in_range(out_dir):
    rows = read_csv(out_dir / "convergence_summary.csv")
    assert len(rows) == len(TASKS) * len(OPTIMIZERS)
    assert {(r["task"], r["optimizer"]) for r in rows} == {
        (t, o) for t in TASKS for o in OPTIMIZERS
    }
    n = len(OPTIMIZERS)
    for r in rows:
        assert 1 <= float(r["rank_steps"]) <= n
        assert 1 <= float(r["rank_loss"]) <= n
        assert 0 <= float(r["steps_mean"]) <= float(r["max_steps"])
        assert 0 <= int(r["reached"]) <= int(r["seeds"]) == QUICK_SEEDS
        assert r["lr_at_edge"] in ("", "low", "high")
        assert math.isfinite(float(r["target"]))
        if r["task"] in DATA_TASKS:
            assert 0.0 <= float(r["test_accuracy_mean"]) <= 1.0
            assert math.isfinite(float(r["val_loss_mean"]))
        # Every task's target is finite and shared by all its optimizers.
        assert r["target"] == rows[[x["task"] for x in rows].index(r["task"])]["target"]
    for task in TASKS:
        ranks = [float(r["rank_steps"]) for r in rows if r["task"] == task]
        # Average ranks of n items always sum to n (n + 1) / 2, ties or not.
        assert sum(ranks) == pytest.approx(n * (n + 1) / 2)


def test_markdown_has_tables_command_and_versions(out_dir):
    text = (out_dir / "convergence.md").read_text()
    assert "python benchmarks/convergence.py --quick --out" in text
    assert "## Rank table" in text and "## Summary" in text
    for word in ("jax", "optax", "flax", "numpy", "aadam_optax", "b1"):
        assert word in text
    table_rows = [line for line in text.splitlines() if line.startswith("| `")]
    # One row per optimizer in the rank table, and one per cell in the tables.
    assert len(table_rows) == len(OPTIMIZERS) * (1 + len(TASKS))
    for task in TASKS:
        assert f"### {task}" in text


def test_pngs_are_valid_non_empty_images(out_dir):
    assert_valid_png(out_dir / "convergence_curves.png", 500, 300)
    assert_valid_png(out_dir / "convergence_lr.png", 500, 300)


def test_run_json_records_provenance_and_files(out_dir):
    run = json.loads((out_dir / "convergence_run.json").read_text())
    assert sorted(run["files"]) == sorted(p.name for p in out_dir.iterdir())
    recorded = run["provenance"]
    assert len(recorded["commit"]) == 40 and "optax" in recorded["versions"]
    assert "aadam[magnitude]" in recorded["numerics"]["values"]
    text = (out_dir / "convergence.md").read_text()
    assert f"- Numerics fingerprint: `{recorded['numerics']['hash']}`" in text


def test_comparisons_report_ties_by_a_paired_test(out_dir):
    text = (out_dir / "convergence.md").read_text()
    # One line per pair: aadam_*, aadamw, aadamax and aamsgrad.
    summary = [line for line in text.splitlines() if line.startswith("- **`aa")]
    assert len(summary) == 6 and all(" tied on " in line for line in summary)
    above = [line for line in text.splitlines() if line.startswith("- **Above")]
    assert len(above) == 6 and all(" and tied at " in line for line in above)
    # The rule, with the critical value for the reported seeds (2 in --quick).
    assert "paired t-test over the 2 reported seeds" in text and "12.71" in text
