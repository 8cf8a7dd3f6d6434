"""benchmarks/speed.py runs end to end and writes sane files."""

import csv
import json
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # noqa: E402 - from the benchmarks folder added above
from harness import speed_report, timing  # noqa: E402

AADAM = "aadam[sign_change]"
LEAVES = 5
CAUTIOUS = "cautious_adamw"


def test_speed_benchmark_quick_run(tmp_path: pathlib.Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "speed.py"),
        "--quick",
        "--layouts=one,many",
        "--dtypes=float32",
        "--sizes=1000,5000",
        f"--leaves={LEAVES}",
        f"--optimizers=adam,{AADAM},adamw,{CAUTIOUS}",
        "--models=digits_mlp",
        "--repeats=7",
        "--sample-ms=2",
        "--step-sample-ms=2",
        "--step-repeats=7",
        f"--out={tmp_path}",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)

    with open(tmp_path / "speed.csv") as handle:
        rows = list(csv.DictReader(handle))
    sections = {row["section"] for row in rows}
    assert sections == {
        "isolated update",
        "whole step",
        "dispatch",
        "multi-output fusion",
    }
    for row in rows:
        allowed = {"adam", AADAM, "adamw", CAUTIOUS}
        if row["section"] == "dispatch":
            # The dispatch case keeps adam and AAdam (the cautious mask adds no
            # state leaves); the fusion case runs them alone.
            allowed = {"adam", AADAM, speed.DISPATCH_CONTROL}
        if row["section"] == "multi-output fusion":
            allowed = {"adam", AADAM}
        assert row["optimizer"] in allowed
        if row["optimizer"] == CAUTIOUS:
            # Its like-for-like ratio, to the optimizer it masks.
            assert row["reference"] == "adamw"
            low, mid, high = (
                float(row[k])
                for k in (
                    "reference_ratio_q25",
                    "ratio_to_reference",
                    "reference_ratio_q75",
                )
            )
            assert 0 < low <= mid <= high
        else:
            assert row["reference"] == row["ratio_to_reference"] == ""
        for low, mid, high in (
            ("q25_ms", "median_ms", "q75_ms"),
            ("ratio_q25", "ratio_to_adam", "ratio_q75"),
        ):
            assert float(row[low]) <= float(row[mid]) <= float(row[high])
        if row["section"] != "dispatch":  # a difference of two times there
            assert float(row["median_ms"]) > 0
        if row["optimizer"] == "adam":
            # Each round's ratio is adam's time over itself.
            assert float(row["ratio_to_adam"]) == 1.0
            assert float(row["ratio_q25"]) == float(row["ratio_q75"]) == 1.0

    isolated = [r for r in rows if r["section"] == "isolated update"]
    assert {(r["layout"], int(r["size"])) for r in isolated} == {
        ("one", 1000),
        ("one", 5000),
        ("many", 5000),
    }
    for row in isolated:
        assert 0 < float(row["floor_fraction"])
        # Minimal traffic from the dtypes alone: params and state read and
        # written, grads read. Adam's state is mu, nu (4 + 4 bytes); AAdam adds
        # prev_update (4) and the int8 sign (1). AdamW's and C-AdamW's are
        # Adam's: the mask keeps no state.
        adam_bytes = 2 * 4 + 4 + 2 * 8
        expected = {"adam": adam_bytes, "adamw": adam_bytes, CAUTIOUS: adam_bytes}
        expected[AADAM] = 2 * 4 + 4 + 2 * 13
        assert float(row["min_bytes_per_param"]) == expected[row["optimizer"]]
    # The many-leaf layout times the step optimizers: all four here.
    assert {r["optimizer"] for r in isolated if r["layout"] == "many"} == {
        "adam",
        AADAM,
        "adamw",
        CAUTIOUS,
    }

    whole = [r for r in rows if r["section"] == "whole step"]
    # In one compiled loop and one call per step, four optimizers each.
    assert len(whole) == 2 * 4
    # The main job's MLP: 64*128 + 128 + 128*128 + 128 + 128*10 + 10 params.
    assert {int(r["size"]) for r in whole} == {26_122}

    dispatch = {r["optimizer"]: r for r in rows if r["section"] == "dispatch"}
    assert set(dispatch) == {"adam", AADAM, speed.DISPATCH_CONTROL}
    # State leaves: the count, then mu and nu per leaf (Adam), plus
    # prev_update and the sign per leaf (AAdam).
    assert int(dispatch["adam"]["state_leaves"]) == 1 + 2 * LEAVES
    assert int(dispatch[AADAM]["state_leaves"]) == 1 + 4 * LEAVES
    # The control carries AAdam's leaves with Adam's work.
    assert int(dispatch[speed.DISPATCH_CONTROL]["state_leaves"]) == (1 + 4 * LEAVES)

    fusion = [r for r in rows if r["section"] == "multi-output fusion"]
    assert {r["xla_flags"] for r in fusion} == {
        "(none)",
        "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion=true",
    }
    assert {int(r["size"]) for r in fusion} == {5000}

    markdown = (tmp_path / "speed.md").read_text()
    assert "python benchmarks/speed.py --quick" in markdown
    assert "State bytes per parameter, aadam: 13.00" in markdown
    assert (
        "State bytes per parameter, aadam(mu_dtype=bf16, prev_update_dtype=bf16): 9.00"
        in markdown
    )
    assert "1 for every optimizer" in markdown
    assert "State bytes per parameter, cautious_adamw: 8.00" in markdown
    for heading in ("## Whole training step", "## Dispatch", "## XLA:CPU"):
        assert heading in markdown
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run = json.loads((tmp_path / "speed_run.json").read_text())
    assert sorted(run["files"]) == sorted(p.name for p in tmp_path.iterdir())
    recorded = run["provenance"]
    assert len(recorded["commit"]) == 40 and "jax" in recorded["versions"]
    assert f"- Numerics fingerprint: `{recorded['numerics']['hash']}`" in markdown
    assert run["compilations"][AADAM] == run["compilations"][CAUTIOUS] == 1
    assert run["state_bytes_per_param"]["aadam"] == 13.0
    assert run["goals"]["cautious_whole_step"]["at_most"] == 1.03

    # The report is written from the stored files alone.
    (tmp_path / "speed.md").unlink()
    (tmp_path / "speed.png").unlink()
    report_only = [command[0], command[1], "--report-only", f"--out={tmp_path}"]
    subprocess.run(report_only, check=True, capture_output=True, timeout=600)
    assert (tmp_path / "speed.md").read_text() == markdown
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_goal_line_never_rounds_a_miss_onto_the_goal() -> None:
    goal_line = speed_report.goal_line
    assert goal_line("x", 1.4027, 1.40) == "- x: 1.403 (goal <= 1.40: NOT met)."
    assert goal_line("x", 1.4127, 1.40) == "- x: 1.41 (goal <= 1.40: NOT met)."
    assert goal_line("x", 1.3951, 1.40) == "- x: 1.40 (goal <= 1.40: met)."


def test_unrolled_samples_run_each_step_once_with_its_index() -> None:
    """A sample of k steps, `unroll` written out per compiled call, runs steps
    0 .. k-1 once each: their indices sum to k (k - 1) / 2. k is chosen as a
    multiple of `unroll`."""

    def step(carry: Any, i: Any, constants: Any) -> Any:
        return carry + i.astype(carry.dtype) * constants

    one = np.float32(1.0)
    for unroll in (1, 3):
        sample = timing.compile_sample(step, np.float32(0), one, False, unroll)
        assert float(sample(np.float32(0), one, 6)) == 15.0
        contender = timing.Contender(sample, np.float32(0), one)
        k = timing.steps_per_sample(contender, 1e-3, multiple=unroll)
        assert k % unroll == 0 and k >= unroll


def test_looped_samples_run_each_step_once_with_its_index() -> None:
    def step(carry: Any, i: Any, constants: Any) -> Any:
        return carry + i.astype(carry.dtype) * constants

    one = np.float32(1.0)
    sample = timing.compile_sample(step, np.float32(0), one, in_loop=True)
    assert float(sample(np.float32(0), one, 6)) == 15.0


def test_interleaved_rounds_rotate_the_order() -> None:
    """Every contender runs once per round, the first of a round shifting by
    one each round, so no contender always runs first."""
    order: list[str] = []

    def sample_of(name: str) -> timing.Sample:
        def sample(carry: Any, constants: Any, k: int) -> Any:
            order.append(name)
            return carry

        return sample

    contenders = {n: timing.Contender(sample_of(n), np.float32(0), None) for n in "abc"}
    k = timing.time_interleaved(contenders, rounds=3, sample_seconds=1e-9)
    assert k == 1
    timed = order[-9:]  # after choosing k and the warm-up
    assert timed == list("abc" + "bca" + "cab")
    assert all(len(c.seconds) == 3 for c in contenders.values())


def test_per_round_ratios_are_taken_within_each_round() -> None:
    # The machine slows down in round 3; the ratio, taken within the round,
    # does not move.
    times, ratios = timing.per_round([2.0, 2.0, 20.0, 2.0], [1.0, 1.0, 10.0, 1.0])
    assert ratios == (2.0, 2.0, 2.0)
    assert times.median == 2000.0 and times.q25 == 2000.0 and times.q75 == 6500.0


def _contender(seconds: list[float]) -> timing.Contender:
    return timing.Contender(lambda c, k, n: c, None, None, seconds=seconds)


def test_cautious_ratios_are_taken_against_their_reference_in_each_round() -> None:
    """C-AdamW's like-for-like ratio is its time over AdamW's in the same
    round; the other optimizers have none."""
    contenders = {
        "adam": _contender([1.0, 1.0, 4.0, 1.0]),
        "adamw": _contender([2.0, 2.0, 8.0, 2.0]),
        CAUTIOUS: _contender([2.0, 2.2, 8.8, 3.0]),
    }
    cautious = speed.timed(contenders, CAUTIOUS)
    # Against adamw, round by round: 1.0, 1.1, 1.1, 1.5.
    assert cautious["reference"] == "adamw"
    assert np.isclose(cautious["ratio_to_reference"], 1.1)
    assert np.isclose(cautious["reference_ratio_q25"], 1.075)
    assert np.isclose(cautious["reference_ratio_q75"], 1.2)
    # Against adam: 2.0, 2.2, 2.2, 3.0.
    assert np.isclose(cautious["ratio_to_adam"], 2.2)
    assert "reference" not in speed.timed(contenders, "adamw")


def test_a_cautious_optimizer_is_timed_with_its_reference() -> None:
    args = speed.parse_args([f"--optimizers=adam,{AADAM},adamw,{CAUTIOUS}"])
    # The default step optimizers: those of STEP_OPTIMIZERS chosen, in order;
    # dispatch keeps adam and AAdam.
    assert args.step_optimizers == ["adam", AADAM, "adamw", CAUTIOUS]
    assert args.dispatch_optimizers == ["adam", AADAM]
    assert speed.parse_args([]).step_optimizers == list(speed.STEP_OPTIMIZERS)
    for argv in (
        [f"--optimizers=adam,{CAUTIOUS}"],
        [f"--optimizers=adam,adamw,{CAUTIOUS}", f"--step-optimizers=adam,{CAUTIOUS}"],
    ):
        try:
            speed.parse_args(argv)
        except SystemExit:
            continue
        raise AssertionError(f"{argv} accepted without adamw")


def _whole_row(case: str, optimizer: str, ratio: float, **reference: Any) -> dict:
    """A whole-step row as speed.csv stores it, the spreads set by hand."""
    return {
        "section": "whole step",
        "case": case,
        "size": 137_216,
        "optimizer": optimizer,
        "median_ms": 30.0,
        "q25_ms": 29.0,
        "q75_ms": 31.0,
        "ratio_to_adam": ratio,
        "ratio_q25": ratio - 0.01,
        "ratio_q75": ratio + 0.02,
        "steps_per_sample": 15,
        "description": "a Transformer",
        "reference": "",
        "ratio_to_reference": "",
        "reference_ratio_q25": "",
        "reference_ratio_q75": "",
        **reference,
    }


def test_report_gives_the_cautious_goal_against_the_reference() -> None:
    lm, cnn = "bytes_lm (loop)", "mnist_cnn (unrolled)"

    def against(reference: str, ratio: float) -> dict[str, Any]:
        return {
            "reference": reference,
            "ratio_to_reference": ratio,
            "reference_ratio_q25": ratio - 0.02,
            "reference_ratio_q75": ratio + 0.01,
        }

    whole = [
        _whole_row(lm, "adam", 1.0),
        _whole_row(lm, AADAM, 1.01),
        _whole_row(lm, "adamw", 1.02),
        _whole_row(lm, CAUTIOUS, 1.05, **against("adamw", 1.0294)),
        _whole_row(lm, "aadamw", 1.0),
        _whole_row(lm, "cautious_aadamw", 1.04, **against("aadamw", 1.0312)),
        # The CNN's cautious row has no goal: the goal is the Transformer's.
        _whole_row(cnn, "adam", 1.0),
        _whole_row(cnn, "adamw", 1.0),
        _whole_row(cnn, CAUTIOUS, 1.2, **against("adamw", 1.2)),
    ]
    run = {"compilations": {"adam": 1}, "state_bytes_per_param": {}}
    # The ratio to the reference, not to adam; a miss in three decimals.
    assert speed_report._goals([], whole, [], run)[3:7] == [
        f"- AAdam whole step / Adam's, {lm}: 1.01 (goal <= 1.03: met).",
        f"- cautious_adamw whole step / adamw's, {lm}: 1.03 (goal <= 1.03: met).",
        f"- cautious_aadamw whole step / aadamw's, {lm}: 1.031 (goal <= 1.03: "
        "NOT met).",
        "- Compilations of each jitted step over 5 steps: 1 for every optimizer.",
    ]
    # The bound is the one the run recorded.
    recorded = {"goals": {"cautious_whole_step": {"at_most": 1.05}}, **run}
    lines = speed_report._goals([], whole, [], recorded)
    assert lines[5].endswith(": 1.03 (goal <= 1.05: met).")

    table = speed_report._whole_step(whole)
    assert table[3] == (
        "| case | params | optimizer | ms per step | ratio to adam "
        "| ratio to reference | k |"
    )
    assert table[5] == (
        f"| {lm} | 137,216 | adam | 30.000 [29.000-31.000] | 1.00 [0.99-1.02] "
        "| - | 15 |"
    )
    assert table[8] == (
        f"| {lm} | 137,216 | {CAUTIOUS} | 30.000 [29.000-31.000] | 1.05 [1.04-1.07] "
        "| 1.03 [1.01-1.04] (adamw) | 15 |"
    )
