"""Unit tests of the benchmark harness (benchmarks/harness)."""

from __future__ import annotations

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from harness import (  # noqa: E402
    data,
    markdown,
    models,
    optimizers,
    records,
    runner,
    scoring,
)
from harness.workloads import WORKLOADS  # noqa: E402


def test_performance_profile_by_hand():
    # Workload a: fastest 1.0 (x), y at 2x. Workload b: y fastest, x at 3x.
    # Workload c: only x finishes.
    times = {
        "x": {"a": 1.0, "b": 6.0, "c": 5.0},
        "y": {"a": 2.0, "b": 2.0, "c": math.inf},
    }
    taus = np.array([1.0, 1.5, 2.0, 3.0, 4.0])
    profile = scoring.performance_profile(times, taus)
    np.testing.assert_allclose(profile["x"], [2 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(profile["y"], [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_profile_area_of_a_step_is_its_width():
    taus = np.linspace(1.0, 4.0, 301)
    assert scoring.profile_area(np.ones_like(taus), taus) == pytest.approx(1.0)
    # A profile that jumps from 0 to 1 at tau = 2.5 covers half of [1, 4].
    step = (taus >= 2.5).astype(float)
    assert scoring.profile_area(step, taus) == pytest.approx(0.5, abs=0.01)


def test_median_keeps_infinity():
    assert scoring.median([3.0, math.inf, 1.0]) == 3.0
    assert scoring.median([1.0, math.inf]) == math.inf
    assert scoring.median([1.0, 3.0]) == 2.0


def test_schedule_with_a_traced_peak_matches_optax():
    expected = optax.warmup_cosine_decay_schedule(0.0, 0.3, 5, 100, end_value=0.0)
    steps = jnp.arange(101)
    actual = jax.jit(lambda peak: optimizers.schedule(peak, 100)(steps))(0.3)
    np.testing.assert_allclose(actual, expected(steps), rtol=1e-5, atol=1e-8)


def test_conv3x3_matches_lax_convolution():
    conv = models.Conv3x3(3, 5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    reference = jax.lax.conv_general_dilated(
        x,
        conv.kernel[...].reshape(3, 3, 3, 5),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(conv(x), reference + conv.bias[...], atol=1e-5)


def test_byte_transformer_is_causal():
    model = models.ByteTransformer(16, 1, 2, 8, rngs=nnx.Rngs(0))
    tokens = jnp.arange(8, dtype=jnp.int32)[None]
    changed = tokens.at[0, 5].set(200)
    before, after = model(tokens), model(changed)
    # Positions before the change see the same logits; position 5 does not.
    np.testing.assert_allclose(before[0, :5], after[0, :5], atol=1e-6)
    assert not np.allclose(before[0, 5], after[0, 5])


def test_bits_per_byte_of_uniform_logits_is_eight():
    class Uniform(nnx.Module):
        def __call__(self, tokens):
            return jnp.zeros((*tokens.shape, 256))

    batch = (jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4), jnp.int32))
    assert float(models.bits_per_byte(Uniform(), batch)) == pytest.approx(8.0)


def test_sampled_windows_are_shifted_copies_of_the_text():
    tokens = jnp.arange(1000) % 256
    inputs, targets = data.sample_windows(jax.random.key(0), tokens, 4, 16)
    assert inputs.shape == targets.shape == (4, 16)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    np.testing.assert_array_equal((inputs + 1) % 256, targets)


def test_fixed_windows_reject_a_text_too_short():
    with pytest.raises(ValueError, match="count"):
        data.fixed_windows(np.zeros(100, np.uint8), 64, 2)


def test_steps_to_target_reads_the_first_recorded_step():
    assert runner.steps_to_target(np.array([5.0, 3.0, 1.0, 0.5]), 1.0, 10) == (
        20,
        True,
    )
    assert runner.steps_to_target(np.array([5.0, 3.0]), 1.0, 10) == (10, False)


def test_workload_ties_are_one_validation_example_or_a_hundredth_of_a_bit():
    logreg = WORKLOADS["mnist_logreg"](steps=10, eval_every=10)
    assert logreg.tie == pytest.approx(1 / len(logreg.val[1]))
    assert WORKLOADS["bytes_lm"](steps=10, eval_every=10, val_windows=4).tie == 0.01


def test_table_renders_headers_alignment_and_rows_by_hand():
    lines = markdown.table(
        ["name", "ms", "k"], [["adam", "1.00", 3], ["aa", 2, ""]], "lr"
    )
    assert lines == [
        "| name | ms | k |",
        "|---|---:|---|",
        "| adam | 1.00 | 3 |",
        "| aa | 2 |  |",
    ]


def test_spread_and_number_cells():
    assert markdown.spread(1.0234, 0.999, 1.05, 2) == "1.02 [1.00-1.05]"
    assert markdown.spread(3227.4, 2779.0, 3653.2, 0) == "3227 [2779-3653]"
    assert markdown.number(12.345, ".3g") == "12.3"
    assert markdown.number(math.inf, ".3g") == "not reached"


def test_header_names_the_command_date_code_machine_and_wall_time():
    run = {
        "command": "python benchmarks/x.py --quick",
        "date": "2026-11-30 03:24 UTC",
        "machine": "Linux, 2 cores",
        "wall_seconds": 433.6,
        "provenance": {
            "commit": "83d8b33e5dfd464233614a3f95d8498ad74c4b63",
            "dirty": False,
            "changed": [],
            "versions": "jax 0.10.2",
            "numerics": {"hash": "87e4fcee7215", "steps": 20, "rtol": 2e-4},
        },
    }
    lines = markdown.header("T", "benchmarks/x.py", run, " in a mode", " Shared.")
    assert lines[:8] == [
        "# T",
        "",
        "Generated by `benchmarks/x.py` in a mode. Every number below was "
        "measured by that run.",
        "",
        "```bash",
        "python benchmarks/x.py --quick",
        "```",
        "",
    ]
    assert lines[8] == "- Date: 2026-11-30 03:24 UTC"
    assert lines[9] == "- Commit: `83d8b33e5dfd`"
    assert lines[-2:] == [
        "- Machine: Linux, 2 cores. Shared.",
        "- Wall time of the run: 434 s.",
    ]


def test_write_ends_the_file_with_one_newline(tmp_path):
    markdown.write(tmp_path / "r.md", ["# T", ""], ["a"])
    assert (tmp_path / "r.md").read_text() == "# T\n\na\n"


def test_csv_rows_come_back_as_the_numbers_written(tmp_path):
    rows = [
        {"case": "one leaf layout, float32", "size": 10_000, "ratio": 1 / 3},
        {"case": "digits_mlp", "ratio": math.inf, "flags": "(none)"},
    ]
    records.write_csv(tmp_path / "r.csv", rows)
    back = records.read_csv(tmp_path / "r.csv")
    assert back[0] == {**rows[0], "flags": ""}
    assert back[1] == {**rows[1], "size": ""}
    assert list(back[0]) == ["case", "size", "ratio", "flags"]
