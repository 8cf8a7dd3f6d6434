"""The main job (examples/train_transformer.py) runs end to end and is fair.

One tiny run (a few steps, a small validation set) is shared by the checks on
its files; the data split and the decay mask are checked directly.
"""

import csv
import importlib.util
import math
import pathlib
import sys

import jax
import pytest
from flax import nnx

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples/train_transformer.py"
TINY = ["--steps", "6", "--chunk", "3", "--eval-every", "3", "--batch-size", "8"]
TINY += ["--val-windows", "16", "--quiet"]


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("main_job", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_transformer")
    rows = job.main([*TINY, "--out", str(out)])
    return out, rows


def read_csv(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def test_help(job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        job.parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--steps", "--seed", "--out", "--quiet", "--lr-aadamw"):
        assert option in help_text


def test_arguments(job):
    args = job.parse_args([])
    assert args.optimizers == ["aadamw", "adamw", "cautious_adamw"]
    assert args.learning_rates["aadamw"] == job.TUNED_LEARNING_RATES["aadamw"]
    args = job.parse_args(["--with-adam", "--lr-adamw", "1e-3"])
    assert args.optimizers == ["aadamw", "adamw", "cautious_adamw", "aadam", "adam"]
    assert args.learning_rates["adamw"] == 1e-3
    # Evaluations fall between chunks, and every chunk is the same program.
    with pytest.raises(SystemExit):
        job.parse_args(["--steps", "10", "--eval-every", "3", "--chunk", "1"])
    with pytest.raises(SystemExit):
        job.parse_args(["--steps", "12", "--eval-every", "4", "--chunk", "3"])


def test_split_is_by_file_and_deterministic(job):
    files = job.split_files(job.stdlib_root())
    assert files["train"] and files["val"]
    assert not set(files["train"]) & set(files["val"])
    # About one file in VALIDATION_ONE_IN is held out, the same one every time.
    share = len(files["val"]) / (len(files["train"]) + len(files["val"]))
    assert 0.5 / job.VALIDATION_ONE_IN < share < 2 / job.VALIDATION_ONE_IN
    assert job.split_files(job.stdlib_root()) == files


def test_decay_mask_spares_biases_and_norms(job):
    model = job.ByteTransformer(rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    mask = job.decay_matrices_only(params)
    decayed = {
        path: flag
        for path, flag in jax.tree_util.tree_leaves_with_path(mask)
        if isinstance(flag, bool)
    }
    names = {jax.tree_util.keystr(path): flag for path, flag in decayed.items()}
    assert names and len(names) == len(jax.tree.leaves(params))
    for name, flag in names.items():
        spared = "bias" in name or "scale" in name
        assert flag != spared, name


def test_curves(job, tiny_run):
    out, _ = tiny_run
    columns, rows = read_csv(out / "curves.csv")
    assert columns == ["optimizer", "step", "seconds", "train_loss", "val_bpb"]
    by_optimizer = {}
    for row in rows:
        by_optimizer.setdefault(row["optimizer"], []).append(row)
    assert list(by_optimizer) == ["aadamw", "adamw", "cautious_adamw"]
    for curve in by_optimizer.values():
        assert [int(row["step"]) for row in curve] == [0, 3, 6]
        bpb = [float(row["val_bpb"]) for row in curve]
        assert all(math.isfinite(value) for value in bpb)
        # Below a uniform guess over 256 bytes after a few steps.
        assert bpb[-1] < 8.0 and bpb[-1] < bpb[0]
        assert curve[0]["train_loss"] == ""
        assert all(math.isfinite(float(row["train_loss"])) for row in curve[1:])
        seconds = [float(row["seconds"]) for row in curve]
        assert seconds == sorted(seconds) and seconds[-1] > 0
    # The same seed gives every optimizer the same initial parameters ...
    first = {name: curve[0]["val_bpb"] for name, curve in by_optimizer.items()}
    assert len(set(first.values())) == 1
    # ... and they then differ: each ran its own optimizer.
    last = {name: curve[-1]["val_bpb"] for name, curve in by_optimizer.items()}
    assert len(set(last.values())) == len(last)


def test_summary_and_plot(tiny_run):
    out, returned = tiny_run
    columns, rows = read_csv(out / "summary.csv")
    assert columns[:4] == [
        "optimizer",
        "learning_rate",
        "final_val_bpb",
        "best_val_bpb",
    ]
    assert "ms_per_step" in columns and "step_time_vs_baseline" in columns
    assert [row["optimizer"] for row in rows] == ["aadamw", "adamw", "cautious_adamw"]
    aadamw, adamw, cautious_adamw = rows
    assert adamw["baseline"] == ""
    for row in (aadamw, cautious_adamw):
        assert row["baseline"] == "adamw"
        # Two chunks: one ratio after leaving out the first.
        assert int(row["ratio_chunks"]) == 1
        assert 0 < float(row["step_time_vs_baseline"]) < 10
    for row, value in zip(rows, returned, strict=True):
        assert float(row["best_val_bpb"]) <= float(row["final_val_bpb"]) < 8.0
        assert float(row["ms_per_step"]) > 0
        assert row["optimizer"] == value["optimizer"]
    png = (out / "bits_per_byte.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    assert len(png) > 5_000
