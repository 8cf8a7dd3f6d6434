"""The benchmark models, in Flax NNX, and their losses and metrics.

Every model holds only `nnx.Param` state (no dropout, no batch statistics), so
`nnx.split` gives a graph definition and a parameter pytree that a pure,
compiled training loop can carry.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

N_CLASSES = 10
N_BYTES = 256


class LogisticRegression(nnx.Module):
    """Multinomial logistic regression on flattened inputs (convex)."""

    def __init__(
        self, n_features: int, n_classes: int = N_CLASSES, *, rngs: nnx.Rngs
    ) -> None:
        self.linear = nnx.Linear(n_features, n_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x.reshape(x.shape[0], -1))


class MLP(nnx.Module):
    """One hidden ReLU layer on flattened images."""

    def __init__(self, n_features: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(n_features, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, N_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1))))


def average_pool(x: jax.Array) -> jax.Array:
    """2x2 average pooling of NHWC images."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 'SAME' convolution of NHWC images, computed as patches @ kernel.

    `kernel` has shape (3, 3, in, out) or (9 * in, out). Inside a compiled
    `scan` on CPU, XLA's convolution (as in `nnx.Conv`) measured about 12x
    slower per training step of `CNN` than this matrix product of the nine
    shifted copies of the input, and under `vmap` over models it becomes a
    grouped convolution, slower still; the result is the same.
    """
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate(
        [padded[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)],
        axis=-1,
    )
    return patches @ kernel.reshape(-1, kernel.shape[-1])


class Conv3x3(nnx.Module):
    """`conv3x3` with a learned kernel and bias."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (9 * in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros(out_features))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv3x3(x, self.kernel[...]) + self.bias[...]


class CNN(nnx.Module):
    """conv3x3-pool-conv3x3-pool-dense, ReLU, for `side` x `side` x 1 images."""

    def __init__(
        self, channels: tuple[int, int], side: int = 28, *, rngs: nnx.Rngs
    ) -> None:
        if side % 4:
            raise ValueError(f"side ({side}) must be a multiple of 4: two 2x2 pools")
        first, second = channels
        self.conv1 = Conv3x3(1, first, rngs=rngs)
        self.conv2 = Conv3x3(first, second, rngs=rngs)
        self.out = nnx.Linear((side // 4) ** 2 * second, N_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = average_pool(jax.nn.relu(self.conv1(x)))
        x = average_pool(jax.nn.relu(self.conv2(x)))
        return self.out(x.reshape(x.shape[0], -1))


class CausalSelfAttention(nnx.Module):
    def __init__(self, d_model: int, n_heads: int, *, rngs: nnx.Rngs) -> None:
        if d_model % n_heads:
            raise ValueError(
                f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})"
            )
        self.n_heads = n_heads
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, d_model = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.n_heads, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.reshape(batch, length, d_model))


class Block(nnx.Module):
    """Pre-LayerNorm Transformer block: attention then a 4x ReLU MLP."""

    def __init__(self, d_model: int, n_heads: int, *, rngs: nnx.Rngs) -> None:
        self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = CausalSelfAttention(d_model, n_heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.up = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
        self.down = nnx.Linear(4 * d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))
        return x + self.down(jax.nn.relu(self.up(self.norm2(x))))


class ByteTransformer(nnx.Module):
    """Decoder-only Transformer over bytes: learned positions, pre-LayerNorm.

    Maps int32 byte ids of shape (batch, length <= context) to next-byte
    logits of shape (batch, length, 256).
    """

    def __init__(
        self, d_model: int, n_layers: int, n_heads: int, context: int, *, rngs: nnx.Rngs
    ) -> None:
        self.context = context
        self.embed = nnx.Embed(N_BYTES, d_model, rngs=rngs)
        self.positions = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (context, d_model))
        )
        self.blocks = nnx.List(
            [Block(d_model, n_heads, rngs=rngs) for _ in range(n_layers)]
        )
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, N_BYTES, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens) + self.positions[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def count_params(model: nnx.Module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def cross_entropy(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Mean cross-entropy in nats: image classes, or next bytes per position."""
    inputs, targets = batch
    logits = model(inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def error_rate(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    images, labels = batch
    return jnp.mean(jnp.argmax(model(images), -1) != labels)


def bits_per_byte(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    return cross_entropy(model, batch) / math.log(2.0)
