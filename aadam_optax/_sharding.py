"""The shardings of an optimizer state, derived from the shardings of the params."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

KeyPath = tuple[Any, ...]


def state_shardings(
    optimizer: optax.GradientTransformation | Callable[[optax.Params], Any],
    params: optax.Params,
) -> Any:
    """Shardings for each leaf of ``optimizer.init(params)``, from the params'.

    ``jax.jit(optimizer.init)`` cannot see where its output should live: every
    leaf of the state is a fresh array (zeros, a step count) that depends on
    the params only through their shape, so the compiled ``init`` puts them all
    on one device; an eager ``init`` does the same for the count. Pass the
    result as ``out_shardings`` to keep the state next to the params, and use it
    to build the abstract target an Orbax restore needs (the target's shardings
    are where the restored arrays land, in every process).

    A state leaf gets the sharding of the param it mirrors: the param at the
    longest key path that ends the leaf's own path (``mu['w']`` mirrors
    ``params['w']``) and has the leaf's shape. Every other leaf (step counts,
    hyperparameters, factored statistics whose shape differs from their param's)
    is replicated over the params' mesh. The state is never computed: only
    ``jax.eval_shape(optimizer.init, params)``. This works for any Optax
    transformation, this package's or not.

    Args:
      optimizer: an ``optax.GradientTransformation``, or its ``init`` function.
      params: the params, as ``jax.Array`` leaves or ``jax.ShapeDtypeStruct``
        leaves with a ``sharding``; every leaf's sharding must be a
        ``NamedSharding`` on one common mesh, or all leaves must sit on the same
        single device.

    Returns:
      A pytree with the structure of ``optimizer.init(params)`` whose leaves are
      ``jax.sharding.Sharding`` objects.

    Params that are not placed on devices (Python numbers, NumPy arrays) have
    no sharding of their own: their state leaves are replicated over the
    params' mesh, or go to the default device, as ``init`` would put them.
    Empty params give a state on the default device.

    Raises:
      ValueError: if a ``jax.ShapeDtypeStruct`` leaf has no sharding, or the
        params' shardings do not share one mesh or one device.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> import aadam_optax
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> sharding = NamedSharding(mesh, P("data"))
      >>> params = {"w": jax.device_put(jnp.zeros((4, 3)), sharding)}
      >>> tx = aadam_optax.aadamw(1e-3)
      >>> shardings = aadam_optax.state_shardings(tx, params)
      >>> shardings[0].mu["w"].spec, shardings[0].count.spec
      (P('data',), P())
      >>> state = jax.jit(tx.init, out_shardings=shardings)(params)
      >>> state[0].prev_update["w"].sharding == sharding
      True
    """
    init = getattr(optimizer, "init", optimizer)
    if not callable(init):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation or its init "
            f"function, got {type(optimizer).__name__}"
        )
    param_leaves = jax.tree_util.tree_leaves_with_path(params)
    placed = {
        tuple(path): (jax.numpy.shape(leaf), _sharding_of(path, leaf))
        for path, leaf in param_leaves
    }
    shardings_by_path = {
        path: (shape, sharding)
        for path, (shape, sharding) in placed.items()
        if sharding is not None
    }
    replicated = _replicated(shardings_by_path)
    shardings_by_path.update(
        (path, (shape, replicated))
        for path, (shape, sharding) in placed.items()
        if sharding is None
    )

    def sharding_for(path: KeyPath, leaf: jax.ShapeDtypeStruct) -> Sharding:
        # Longest suffix first: with params {"a": {"b": x}, "b": y}, the state
        # leaf mu['a']['b'] mirrors x, not y.
        for start in range(len(path) + 1):
            match = shardings_by_path.get(tuple(path[start:]))
            if match is not None and match[0] == leaf.shape:
                return match[1]
        return replicated

    abstract_state = jax.eval_shape(init, params)
    return jax.tree_util.tree_map_with_path(sharding_for, abstract_state)


def _sharding_of(path: KeyPath, leaf: Any) -> Sharding | None:
    """The leaf's sharding; None for a host value (a number, a NumPy array)."""
    if not isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        return None
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding | SingleDeviceSharding):
        raise ValueError(
            f"params{jax.tree_util.keystr(path)} has sharding {sharding!r}; "
            "state_shardings needs jax.Array or jax.ShapeDtypeStruct params "
            "with a NamedSharding (or all on one device): place them with "
            "jax.device_put(leaf, NamedSharding(mesh, spec)) first"
        )
    return sharding


def _replicated(shardings_by_path: dict[KeyPath, tuple[Any, Sharding]]) -> Sharding:
    """The sharding that puts a full copy on every device the params use."""
    shardings = {sharding for _, sharding in shardings_by_path.values()}
    if not shardings:
        # No placed params (none at all, or only host values): where init
        # puts the state.
        return SingleDeviceSharding(jax.devices()[0])
    meshes = {s.mesh for s in shardings if isinstance(s, NamedSharding)}
    if len(meshes) == 1 and all(isinstance(s, NamedSharding) for s in shardings):
        return NamedSharding(meshes.pop(), PartitionSpec())
    if len(shardings) == 1 and not meshes:
        return shardings.pop()
    raise ValueError(
        "params must be sharded over one common mesh, or all sit on one "
        "device, for the state's step count to have a place; got "
        f"{sorted(map(str, shardings))}"
    )
