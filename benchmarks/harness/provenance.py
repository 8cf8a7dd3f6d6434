"""What produced a results file: the commit, the versions and the numerics.

A results file describes the code only while the optimizers still compute what
they computed when it was written. `numerics()` runs every optimizer the
benchmarks use for `STEPS` steps on fixed inputs and keeps some of the updates;
`record()` bundles them with the commit and the package versions, and every
results writer stores that record next to its results.
`tests/test_results_provenance.py` recomputes the numerics and compares them
with every stored record, so a change to an update rule fails the tests until
the benchmarks are re-run, while a refactor that keeps the numbers passes.

Values and a tolerance, not a hash of the bits: another jax or XLA release may
fuse or reorder the same arithmetic and move the last bits (about 1e-7
relative). The inputs keep every quantity whose sign the rules take (the
gradients, the first moments) far from zero, so no sign flips on such noise;
the bias correction `1 - b2**n` loses digits to cancellation (about 50x at step
2), so an update may move by ~1e-5 relative. The values are compared with
`RTOL` (2e-4): above that noise, below a change of one part in a thousand in
any rule, which `tests/test_results_provenance.py` shows is caught. The short
hash, of the values on a coarse grid, is a label for reports; `compare`
decides.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pathlib
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import aadam_optax
from harness import environment

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The code whose changes can change results; results themselves are not code.
CODE_PATHS = ("aadam_optax", "benchmarks", ":(exclude)benchmarks/results")

STEPS = 20
# Steps whose updates are kept (1-based): the first (bias correction, AAdam's
# b1-scaled first step), the second (the first with a previous update) and
# the last; the sum of all updates is kept as well.
RECORDED_STEPS = (1, 2, STEPS)
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 0.1  # large enough that decoupled decay moves the updates
# Gradient magnitudes per element: 1e-8 is where eps = 1e-8 shapes the
# direction, so moving eps (inside the root, or eps_root) is seen.
MAGNITUDES = (1e-8, 1e-3, 1.0, 30.0)
SEED = 20261130
RTOL = 2e-4
# The hash rounds each value to this fraction of its row's scale (a power of
# ten): three digits, coarse enough that float noise rarely moves it.
HASH_GRID = 1e-3


def optimizers() -> dict[str, optax.GradientTransformation]:
    """The optimizers the benchmarks compare, with every rule's knobs in play."""
    lr = LEARNING_RATE
    family = {
        f"aadam[{variant}]": aadam_optax.aadam(lr, variant=variant)
        for variant in aadam_optax.VARIANTS
    }
    return {
        **family,
        "aadam[bias_correction=False]": aadam_optax.aadam(lr, bias_correction=False),
        "aadamw": aadam_optax.aadamw(lr, weight_decay=WEIGHT_DECAY),
        "aadamax": aadam_optax.aadamax(lr),
        "aamsgrad": aadam_optax.aamsgrad(lr),
        "adam": optax.adam(lr),
        "adamw": optax.adamw(lr, weight_decay=WEIGHT_DECAY),
        "adamax": optax.adamax(lr),
        "amsgrad": optax.amsgrad(lr),
        "nadam": optax.nadam(lr),
        "rmsprop_momentum": optax.rmsprop(lr, momentum=0.9),
        "sgd_momentum": optax.sgd(lr, momentum=0.9),
    }


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """(initial params (n,), gradients (STEPS, n)), float32, none of them zero.

    Element i has magnitude `MAGNITUDES[i // 2]` and a dominant sign (+ for
    even i, - for odd). About a quarter of the steps take the other sign at a
    third of the size, never two in a row and never on the first step: the
    gradient's sign flips, which the sign rules read, while the first moment
    keeps its sign, well away from zero (`moment_margin`).
    """
    rng = np.random.default_rng(SEED)
    n = 2 * len(MAGNITUDES)
    grads = np.empty((STEPS, n))
    for i in range(n):
        magnitude = MAGNITUDES[i // 2] * (1 if i % 2 == 0 else -1)
        flipped = True  # the first step keeps the dominant sign
        for step in range(STEPS):
            flipped = not flipped and rng.random() < 0.4
            size = 0.5 + rng.random()  # in [0.5, 1.5)
            grads[step, i] = magnitude * (-size / 3 if flipped else size)
    params = rng.uniform(0.5, 2.0, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return params.astype(np.float32), grads.astype(np.float32)


def moment_margin(b1: float = 0.9) -> float:
    """Smallest |bias-corrected first moment| / the element's largest |gradient|,
    over every step and element, in float64."""
    _, grads = inputs()
    grads = grads.astype(np.float64)
    moment, margins = np.zeros(grads.shape[1]), []
    for n, g in enumerate(grads, start=1):
        moment = b1 * moment + (1 - b1) * g
        margins.append(np.abs(moment / (1 - b1**n)) / np.abs(grads).max(0))
    return float(np.min(margins))


def _updates(
    optimizer: optax.GradientTransformation, params: jax.Array, grads: jax.Array
) -> jax.Array:
    def step(carry: Any, grad: jax.Array) -> tuple[Any, jax.Array]:
        current, state = carry
        updates, state = optimizer.update({"w": grad}, state, current)
        return (optax.apply_updates(current, updates), state), updates["w"]

    start = {"w": params}
    _, updates = jax.lax.scan(step, (start, optimizer.init(start)), grads)
    return updates


def numerics(
    make: Callable[[], Mapping[str, optax.GradientTransformation]] = optimizers,
) -> dict[str, Any]:
    """The fingerprint: every optimizer's updates at `RECORDED_STEPS` and their
    sum over all steps, on `inputs()`, on the CPU (where the process has one).

    Returns `{"hash", "device", "steps", "recorded_steps", "rtol", "values":
    {name: [rows]}}`; each row
    holds one float per element, rounded to 7 significant digits.
    """
    params, grads = inputs()
    try:
        device = jax.devices("cpu")[0]
    except RuntimeError:  # a process limited to accelerators (jax_platforms)
        device = jax.devices()[0]
    values = {}
    with jax.default_device(device):
        for name, optimizer in make().items():
            run = jax.jit(functools.partial(_updates, optimizer))
            updates = np.asarray(run(jnp.asarray(params), jnp.asarray(grads)))
            rows = [updates[n - 1] for n in RECORDED_STEPS]
            rows.append(updates.astype(np.float64).sum(0))
            values[name] = [[float(f"{v:.7g}") for v in row] for row in rows]
    return {
        "hash": fingerprint_hash(values),
        "device": device.platform,
        "steps": STEPS,
        "recorded_steps": list(RECORDED_STEPS) + ["sum"],
        "rtol": RTOL,
        "values": values,
    }


def _scale(row: np.ndarray) -> float:
    """The power of ten at or above the row's largest magnitude (1 for zeros)."""
    largest = float(np.max(np.abs(row))) if row.size else 0.0
    return 10.0 ** math.ceil(math.log10(largest)) if largest > 0 else 1.0


def fingerprint_hash(values: Mapping[str, list[list[float]]]) -> str:
    """12 hex digits of the values, each rounded to `HASH_GRID` of its row's scale."""
    grid = {
        name: [
            [round(v / (_scale(np.asarray(row)) * HASH_GRID)) for v in row]
            for row in rows
        ]
        for name, rows in sorted(values.items())
    }
    text = json.dumps(grid, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def compare(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Where `current` numerics differ from `recorded` beyond the tolerance.

    A value differs when `|current - recorded| > RTOL * max(|recorded|,
    row scale)`: the row scale (the row's largest magnitude) keeps elements
    whose updates cancel in the sum from failing on absolute noise. Returns
    one line per differing optimizer; empty when they agree.
    """
    old, new = recorded["values"], current["values"]
    problems = []
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            where = "only in the code" if name in new else "only in the record"
            problems.append(f"{name}: {where}")
            continue
        a, b = np.asarray(old[name], np.float64), np.asarray(new[name], np.float64)
        if a.shape != b.shape:
            problems.append(f"{name}: shape {a.shape} recorded, {b.shape} now")
            continue
        scale = np.abs(a).max(axis=1, keepdims=True)
        bad = np.abs(b - a) > RTOL * np.maximum(np.abs(a), scale)
        if bad.any():
            row, element = np.argwhere(bad)[0]
            step = (list(RECORDED_STEPS) + ["sum"])[row]
            problems.append(
                f"{name}: {int(bad.sum())} of {bad.size} values differ, e.g. the "
                f"update at step {step}, element {element}: {a[row, element]:.7g} "
                f"recorded, {b[row, element]:.7g} now"
            )
    return problems


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout


def commit() -> dict[str, Any]:
    """`{"commit", "dirty", "changed"}`: HEAD, and the files of the package or
    the benchmarks that differ from it (uncommitted changes)."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        status = _git("status", "--porcelain", "--", *CODE_PATHS)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": True, "changed": ["(no git)"]}
    # Porcelain lines are "XY path"; a rename is "XY old -> new".
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": head, "dirty": bool(changed), "changed": changed}


@functools.cache
def record(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything a results writer stores: commit, versions, numerics."""
    return {
        **commit(),
        "versions": environment.versions(extra_packages),
        "numerics": numerics(),
    }


def describe_commit(recorded: Mapping[str, Any]) -> str:
    text = f"`{recorded['commit'][:12]}`"
    if recorded["dirty"]:
        text += " with uncommitted changes to " + ", ".join(
            f"`{path}`" for path in recorded["changed"]
        )
    return text


def markdown_lines(recorded: Mapping[str, Any]) -> list[str]:
    """The lines a markdown report prints: commit, versions, fingerprint."""
    numbers = recorded["numerics"]
    return [
        f"- Commit: {describe_commit(recorded)}",
        f"- Versions: {recorded['versions']}",
        f"- Numerics fingerprint: `{numbers['hash']}` (every optimizer's updates "
        f"over {numbers['steps']} steps on fixed inputs, `harness/provenance.py`; "
        "`tests/test_results_provenance.py` fails when the code's differ by more "
        f"than {numbers['rtol']:g} relative)",
    ]
