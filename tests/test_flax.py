"""AAdam inside Flax: `nnx.Optimizer` (NNX) and `TrainState` (Linen); Cautious
AdamW in `nnx.Optimizer`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import aadam_optax

NUM_STEPS = 30


@pytest.fixture(scope="module")
def regression_data():
    # y = X w* + b*: a linear model can fit it exactly.
    x = jax.random.normal(jax.random.key(0), (32, 4))
    y = x @ jnp.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.7
    return x, y


def mse(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(mse)(model, x, y)
    optimizer.update(model, grads)
    return loss


def new_model_and_optimizer():
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, aadam_optax.aadam(0.05), wrt=nnx.Param)
    return model, optimizer


def params_of(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_nnx_optimizer_trains_and_matches_plain_optax(regression_data):
    x, y = regression_data
    model, optimizer = new_model_and_optimizer()
    start = params_of(model)
    losses = [float(nnx_train_step(model, optimizer, x, y)) for _ in range(NUM_STEPS)]
    assert losses[-1] < 0.5 * losses[0]
    assert int(optimizer.step[...]) == NUM_STEPS
    adam_state = optimizer.opt_state[0]
    assert isinstance(adam_state, aadam_optax.ScaleByAAdamState)
    assert int(adam_state.count[...]) == NUM_STEPS

    # The same steps with plain optax on the parameter dict: nnx.Optimizer adds
    # nothing to AAdam's arithmetic.
    tx = aadam_optax.aadam(0.05)

    def loss_of(params):
        return jnp.mean((x @ params["kernel"] + params["bias"] - y) ** 2)

    @jax.jit
    def optax_step(params, state):
        updates, state = tx.update(jax.grad(loss_of)(params), state, params)
        return optax.apply_updates(params, updates), state

    params, state = start, tx.init(start)
    for _ in range(NUM_STEPS):
        params, state = optax_step(params, state)
    for name, value in params_of(model).items():
        np.testing.assert_allclose(value, params[name], rtol=1e-5, atol=1e-6)


def test_nnx_optimizer_state_survives_split_and_merge(regression_data):
    x, y = regression_data
    model, optimizer = new_model_and_optimizer()
    for _ in range(10):
        nnx_train_step(model, optimizer, x, y)

    graphdef, state = nnx.split((model, optimizer))
    pure = nnx.to_pure_dict(state)
    adam_state = pure[1]["opt_state"][0]
    assert adam_state["count"].dtype == jnp.int32
    assert all(
        leaf.dtype == jnp.int8 for leaf in jax.tree.leaves(adam_state["prev_grad_sign"])
    )
    # Through host memory and back, as a checkpoint would carry it.
    state = jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf)), state)
    merged_model, merged_optimizer = nnx.merge(graphdef, state)
    assert merged_model is not model and merged_optimizer is not optimizer

    for _ in range(15):
        loss = nnx_train_step(model, optimizer, x, y)
        merged_loss = nnx_train_step(merged_model, merged_optimizer, x, y)
        assert float(loss) == float(merged_loss)
    for a, b in zip(
        jax.tree.leaves(nnx.state((model, optimizer))),
        jax.tree.leaves(nnx.state((merged_model, merged_optimizer))),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert int(merged_optimizer.opt_state[0].count[...]) == 25


def test_nnx_optimizer_with_cautious_adamw_trains(regression_data):
    x, y = regression_data
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, aadam_optax.cautious_adamw(0.1, weight_decay=1e-4), wrt=nnx.Param
    )
    losses = [float(nnx_train_step(model, optimizer, x, y)) for _ in range(NUM_STEPS)]
    assert losses[-1] < 0.5 * losses[0]
    assert int(optimizer.step[...]) == NUM_STEPS
    # The state is AdamW's (the mask keeps none).
    adam_state = optimizer.opt_state[0]
    assert isinstance(adam_state, optax.ScaleByAdamState)
    assert int(adam_state.count[...]) == NUM_STEPS


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


def test_linen_trainstate_with_aadamw_trains(regression_data):
    x, y = regression_data
    model = LinenMLP()
    params = model.init(jax.random.key(1), x)["params"]
    tx = aadam_optax.aadamw(0.03, weight_decay=1e-4)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    def loss_of(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    @jax.jit
    def step(state):
        loss, grads = jax.value_and_grad(loss_of)(state.params)
        return state.apply_gradients(grads=grads), loss

    first_state = state
    losses = []
    for _ in range(NUM_STEPS):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == NUM_STEPS

    adam_state = state.opt_state[0]
    assert isinstance(adam_state, aadam_optax.ScaleByAAdamState)
    assert int(adam_state.count) == NUM_STEPS
    assert adam_state.count.dtype == jnp.int32
    assert jax.tree.structure(adam_state.prev_update) == jax.tree.structure(params)
    assert {leaf.dtype for leaf in jax.tree.leaves(adam_state.prev_grad_sign)} == {
        jnp.dtype(jnp.int8)
    }
    # The signs are those of the last gradient, which the state saw one step ago.
    last_grads = jax.jit(jax.grad(loss_of))(_params_before_last_step(first_state, step))
    for sign, grad in zip(
        jax.tree.leaves(adam_state.prev_grad_sign),
        jax.tree.leaves(last_grads),
        strict=True,
    ):
        np.testing.assert_array_equal(sign, np.sign(grad).astype(np.int8))


def _params_before_last_step(state, step):
    for _ in range(NUM_STEPS - 1):
        state, _ = step(state)
    return state.params
