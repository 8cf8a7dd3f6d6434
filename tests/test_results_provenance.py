"""The committed benchmark results still describe the code.

Every file in `benchmarks/results` belongs to a run JSON that records the
commit, the versions and the numerics fingerprint (`benchmarks/harness/
provenance.py`) of the code that produced it. The fingerprint is recomputed
here and compared with a tolerance: a change to any optimizer's numbers fails
until its benchmarks are re-run, while float noise from another jax or XLA
release, or a refactor that keeps the numbers, passes.

Budget: a few seconds (the fingerprint compiles 14 short runs).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import jax
import numpy as np
import optax
import pytest

import aadam_optax
from aadam_optax import _acceleration

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import provenance  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUN_FILES = sorted(RESULTS.glob("*_run.json"))
AADAM_FAMILY = [
    name for name in provenance.optimizers() if name.startswith(("aadam", "aams"))
]


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    return provenance.numerics()


def _records(run: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(command, provenance) of each invocation that wrote a run JSON."""
    if "invocations" in run:
        return [(i["command"], i.get("provenance")) for i in run["invocations"]]
    return [(run.get("command", "?"), run.get("provenance"))]


def _subset(numbers: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {**numbers, "values": {k: numbers["values"][k] for k in names}}


def _only(**optimizers: optax.GradientTransformation):
    return lambda: optimizers


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_committed_results_match_the_code(path, current):
    for command, recorded in _records(json.loads(path.read_text())):
        assert recorded is not None, (
            f"{path.relative_to(ROOT)} records no provenance: re-run `{command}` "
            "(writing to benchmarks/results) and update the prose that quotes it"
        )
        problems = provenance.compare(recorded["numerics"], current)
        assert not problems, (
            f"{path.relative_to(ROOT)} was produced by code whose numerics differ "
            f"from the code's now (fingerprint {recorded['numerics']['hash']} "
            f"recorded at {recorded['commit'][:12]}, {current['hash']} now):\n  "
            + "\n  ".join(problems)
            + f"\nRe-run `{command}` (writing to benchmarks/results) and update "
            "the README and docs text that quotes its numbers."
        )


def test_every_results_file_belongs_to_a_run_with_provenance():
    assert RUN_FILES, "no *_run.json in benchmarks/results"
    covered = set()
    for path in RUN_FILES:
        run = json.loads(path.read_text())
        covered.update(run.get("files", []))
        hashes = [r["numerics"]["hash"] for _, r in _records(run) if r]
        for name in run.get("files", []):
            assert (RESULTS / name).exists(), f"{path.name} lists missing {name}"
            if name.endswith(".md"):
                text = (RESULTS / name).read_text()
                for h in hashes:
                    assert f"Numerics fingerprint: `{h}`" in text, (name, h)
    orphans = sorted(p.name for p in RESULTS.iterdir() if p.name not in covered)
    assert not orphans, f"results files no run JSON accounts for: {orphans}"


def test_fingerprint_is_stable(current):
    again = provenance.numerics()
    assert again == current
    assert provenance.compare(current, again) == []


def test_fingerprint_survives_op_by_op_execution(current):
    # Without jit every operation rounds on its own, unfused: a stand-in for
    # another XLA release's fusion and ordering of the same arithmetic.
    names = ["aadam[magnitude]"]
    with jax.disable_jit():
        eager = provenance.numerics(
            lambda: {k: v for k, v in provenance.optimizers().items() if k in names}
        )
    assert provenance.compare(_subset(current, names), eager) == []


def test_compare_ignores_noise_and_catches_changes(current):
    rng = np.random.default_rng(0)

    def scaled(relative: float) -> dict[str, Any]:
        return {
            **current,
            "values": {
                k: (
                    np.asarray(v) * (1 + relative * rng.choice([-1, 1], np.shape(v)))
                ).tolist()
                for k, v in current["values"].items()
            },
        }

    assert provenance.compare(current, scaled(1e-5)) == []
    assert len(provenance.compare(current, scaled(1e-3))) == len(current["values"])
    missing = _subset(current, list(current["values"])[1:])
    assert provenance.compare(current, missing)[0].endswith("only in the record")


def test_a_changed_acceleration_rule_is_caught(current, monkeypatch):
    # One part in a thousand on the rule every accelerated optimizer calls.
    rule = _acceleration._rule
    monkeypatch.setattr(
        _acceleration, "_rule", lambda *args, **kwargs: rule(*args, **kwargs) * 1.001
    )
    perturbed = provenance.numerics(
        lambda: {k: v for k, v in provenance.optimizers().items() if k in AADAM_FAMILY}
    )
    problems = provenance.compare(_subset(current, AADAM_FAMILY), perturbed)
    assert [p.split(":")[0] for p in problems] == sorted(AADAM_FAMILY)
    assert perturbed["hash"] != provenance.fingerprint_hash(
        _subset(current, AADAM_FAMILY)["values"]
    )


LR = provenance.LEARNING_RATE


@pytest.mark.parametrize(
    ("name", "changed"),
    [
        pytest.param(name, changed, id=f"{name} {label}")
        for name, label, changed in [
            ("aadam[sign_change]", "b1=0.91", aadam_optax.aadam(LR, b1=0.91)),
            ("aadam[sign_change]", "b2=0.99", aadam_optax.aadam(LR, b2=0.99)),
            ("aadam[sign_change]", "eps=1e-7", aadam_optax.aadam(LR, eps=1e-7)),
            (
                "aadam[sign_change]",
                "eps_root=1e-16",
                aadam_optax.aadam(LR, eps_root=1e-16),
            ),
            ("aadam[sign_change]", "as sign", aadam_optax.aadam(LR, variant="sign")),
            ("aadam[sign]", "as magnitude", aadam_optax.aadam(LR, variant="magnitude")),
            (
                "aadam[sign_change]",
                "without bias correction",
                aadam_optax.aadam(LR, bias_correction=False),
            ),
            (
                "aadamw",
                "weight_decay=0.101",
                aadam_optax.aadamw(LR, weight_decay=0.101),
            ),
            ("aadamax", "b1=0.91", aadam_optax.aadamax(LR, b1=0.91)),
            ("aamsgrad", "eps=1e-7", aadam_optax.aamsgrad(LR, eps=1e-7)),
            ("adam", "nesterov", optax.adam(LR, nesterov=True)),
        ]
    ],
)
def test_a_changed_hyperparameter_is_caught(current, name, changed):
    perturbed = provenance.numerics(_only(**{name: changed}))
    assert provenance.compare(_subset(current, [name]), perturbed)


def test_inputs_keep_every_sign_away_from_zero():
    params, grads = provenance.inputs()
    assert params.dtype == grads.dtype == np.float32
    assert np.all(grads != 0) and np.all(params != 0)
    # Gradients flip sign, so the sign rules are exercised ...
    assert np.any(np.diff(np.sign(grads), axis=0) != 0, axis=0).all()
    # ... while the first moment stays far from zero: rounding noise cannot
    # flip sign(m) in the magnitude variant or move m/(sqrt(v) + eps) by more
    # than ~1e-6 relative.
    assert provenance.moment_margin() > 0.1


def test_commit_names_head_and_uncommitted_code():
    info = provenance.commit()
    assert len(info["commit"]) == 40 and set(info["commit"]) <= set("0123456789abcdef")
    assert info["dirty"] == bool(info["changed"])
    assert not any(path.startswith("benchmarks/results") for path in info["changed"])
