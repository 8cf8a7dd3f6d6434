"""What a report says about the run: versions, machine, date."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

import jax

import aadam_optax

PACKAGES = ("jax", "jaxlib", "optax", "flax", "numpy", "scipy", "scikit-learn")


def versions(extra: tuple[str, ...] = ()) -> str:
    parts = []
    for name in PACKAGES + extra:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    parts.append(f"aadam_optax {aadam_optax.__version__}")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def machine() -> str:
    device = jax.devices()[0]
    return (
        f"{platform.platform()}, {os.cpu_count()} CPU core(s) visible, JAX backend "
        f"`{jax.default_backend()}` ({device.device_kind}), float32"
    )


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
