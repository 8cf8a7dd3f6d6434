"""The example programs run end to end with tiny settings and write sane files."""

import csv
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name, *args):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def read_csv(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def assert_valid_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    # A complete PNG ends with the IEND chunk (its type and fixed CRC).
    assert data.endswith(b"IEND\xaeB`\x82")
    assert len(data) > 5_000  # a real plot, not an empty canvas


def load_example(name):
    """Imports an example as a module, for the checks that need no new process."""
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses (flax.linen modules) look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name", ["train_digits.py", "linen_trainstate.py", "orbax_resume.py"]
)
def test_help(name, capsys):
    # In-process: a subprocess per --help would only re-time the imports.
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--out" in help_text and "--quiet" in help_text


def test_train_digits_learning_rates():
    example = load_example("train_digits.py")
    tuned = example.TUNED_LEARNING_RATES
    # Every optimizer and model has a tuned default, and --lr overrides it
    # per optimizer (the unnamed one keeps its default) or for all.
    assert all(set(rates) == set(example.OPTIMIZERS) for rates in tuned.values())
    args = example.parse_args(["--model", "cnn", "--lr", "adam=5e-4"])
    assert args.lr == {"aadam": tuned["cnn"]["aadam"], "adam": 5e-4}
    assert example.parse_args(["--lr", "2e-3"]).lr == {"aadam": 2e-3, "adam": 2e-3}
    assert example.parse_args(["--optimizers", "aadamw,adamw"]).reference == "aadamw"
    with pytest.raises(SystemExit):
        example.parse_args(["--reference", "sgd"])


def test_train_digits_mlp(tmp_path):
    stdout = run_example(
        "train_digits.py",
        "--epochs", 2,
        "--batch-size", 64,
        "--lr", "aadam=3e-3,adam=1e-3",
        "--quiet",
        "--out", tmp_path,
    )  # fmt: skip
    columns, rows = read_csv(tmp_path / "summary.csv")
    assert columns[:5] == [
        "optimizer",
        "learning_rate",
        "final_train_loss",
        "test_accuracy",
        "wall_time_s",
    ]
    assert [row["optimizer"] for row in rows] == ["aadam", "adam"]
    assert [float(row["learning_rate"]) for row in rows] == [3e-3, 1e-3]
    for row in rows:
        assert row["optimizer"] in stdout  # the printed table
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        # Two epochs on the digits take any sane optimizer well past chance.
        assert float(row["test_accuracy"]) > 0.5
        assert math.isfinite(float(row["final_train_loss"]))
        assert float(row["wall_time_s"]) > float(row["compile_s"]) > 0
        # steps/s and ms/step are one measurement in two units.
        assert math.isclose(
            float(row["steps_per_s"]) * float(row["ms_per_step"]), 1e3, rel_tol=1e-9
        )
    # Adam is the reference: its own step time over itself is exactly 1, and
    # AAdam's ratio is the two ms/step columns' quotient.
    aadam, adam = rows
    assert float(adam["step_time_vs_reference"]) == 1.0
    assert math.isclose(
        float(aadam["step_time_vs_reference"]),
        float(aadam["ms_per_step"]) / float(adam["ms_per_step"]),
        rel_tol=1e-9,
    )
    assert "vs adam" in stdout

    columns, steps = read_csv(tmp_path / "metrics.csv")
    assert columns == ["optimizer", "step", "epoch", "train_loss"]
    # 1437 training digits in batches of 64: 22 full batches per epoch.
    for name in ("aadam", "adam"):
        losses = [float(r["train_loss"]) for r in steps if r["optimizer"] == name]
        assert len(losses) == 2 * 22
        assert all(math.isfinite(loss) for loss in losses)
        assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
        # The final training loss is below the untrained model's (ln 10-ish).
        final = next(
            float(r["final_train_loss"]) for r in rows if r["optimizer"] == name
        )
        assert final < losses[0]
    # Same initialisation and same first batch: the step-1 losses (taken before
    # any update) agree across optimizers.
    first = [float(r["train_loss"]) for r in steps if r["step"] == "1"]
    assert len(first) == 2
    assert math.isclose(first[0], first[1], rel_tol=1e-5)
    assert_valid_png(tmp_path / "loss_curves.png")


def test_train_digits_cnn(tmp_path, capsys):
    # In-process (the subprocess path is covered by the MLP run above).
    load_example("train_digits.py").main(
        [
            "--model", "cnn",
            "--optimizers", "aadam",
            "--epochs", "1",
            "--batch-size", "128",
            "--lr", "3e-3",
            "--quiet",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert "aadam" in capsys.readouterr().out
    _, rows = read_csv(tmp_path / "summary.csv")
    assert [row["optimizer"] for row in rows] == ["aadam"]
    assert 0.0 <= float(rows[0]["test_accuracy"]) <= 1.0
    _, steps = read_csv(tmp_path / "metrics.csv")
    losses = [float(r["train_loss"]) for r in steps]
    assert len(losses) == 1437 // 128
    assert losses[-1] < losses[0]
    assert_valid_png(tmp_path / "loss_curves.png")


def test_linen_trainstate(tmp_path):
    stdout = run_example(
        "linen_trainstate.py", "--steps", 40, "--quiet", "--out", tmp_path
    )
    columns, steps = read_csv(tmp_path / "metrics.csv")
    assert columns == ["step", "train_loss"]
    assert [int(r["step"]) for r in steps] == list(range(1, 41))
    _, (summary,) = read_csv(tmp_path / "summary.csv")
    assert summary["optimizer"] == "aadamw"
    assert int(summary["steps"]) == 40
    assert 0.0 <= float(summary["test_accuracy"]) <= 1.0
    assert math.isfinite(float(summary["final_train_loss"]))
    assert float(summary["final_train_loss"]) < float(summary["initial_batch_loss"])
    assert "test accuracy" in stdout


def test_orbax_resume(tmp_path):
    stdout = run_example(
        "orbax_resume.py", "--steps", 12, "--save-at", 5, "--quiet", "--out", tmp_path
    )
    assert "bitwise identical" in stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bitwise_identical"] is True
    assert summary["saved_at"] == 5 and summary["restored_count"] == 5
    assert summary["restored_count_dtype"] == "int32"
    assert summary["restored_prev_grad_sign_dtypes"] == ["int8"]
    assert summary["max_abs_param_difference"] == 0.0
    assert summary["final_loss_resumed"] < summary["first_loss"]
    columns, steps = read_csv(tmp_path / "trajectory.csv")
    assert columns == ["step", "loss_uninterrupted", "loss_resumed"]
    assert len(steps) == 12
    assert all(r["loss_uninterrupted"] == r["loss_resumed"] for r in steps)
    assert (tmp_path / "checkpoints" / "5").is_dir()
