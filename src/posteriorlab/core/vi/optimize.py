r"""Stochastic optimisation of a variational objective with optax, in jitted chunks.

Each step draws ``num_samples`` independent runs of the objective program, averages
their values and surrogates, and takes one optimiser step on the loss
:math:`-\bar S` (objectives are maximised, see :mod:`~posteriorlab.core.vi.programs`):

.. math::

    \phi \leftarrow \phi - \mathrm{update}\bigl(\nabla_\phi(-\bar S)\bigr),
    \qquad \bar S = \frac1B \sum_{b=1}^B S(\phi;\ \mathrm{key}_b).

:func:`run_chunk` runs ``num_steps`` such steps with ``jax.lax.scan`` and returns what a
dashboard streams: the loss :math:`-\bar V` (a negated bound, e.g. the negative ELBO)
and the gradient norm at every step. The learning rate lives in the optimiser state
(``optax.inject_hyperparams``) and is set at the start of each chunk from a traced
argument, so moving a slider does not recompile; neither do new data values in the
target. Shapes (``num_steps``, ``num_samples``), the optimiser's name and the objective
function are static: build an objective with settings once (``functools.partial(iwae,
num_particles=8)``) and reuse that object, since a new one compiles anew.

Recommended import::

    from posteriorlab.core.vi import optimize, objectives

    state = optimize.init(family, "adam")
    state, info = optimize.run_chunk(key, state, target, objectives.elbo,
                                     learning_rate=0.05, num_steps=100)
    info.loss  # negative ELBO per step
"""

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import Array
from jax.typing import ArrayLike

from posteriorlab.core.vi import programs

__all__ = ["OPTIMIZERS", "OptimizationState", "StepInfo", "init", "run_chunk"]

OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}
"""Optimiser names; each is wrapped in ``optax.inject_hyperparams``."""


class OptimizationState(NamedTuple):
    """What the optimiser carries between steps and chunks.

    Attributes
    ----------
    params : pytree
        The variational family (its parameters).
    opt_state : optax state
        Includes ``hyperparams["learning_rate"]``.
    step : Array of int, shape ()
        Steps taken so far.
    """

    params: Any
    opt_state: Any
    step: Array


class StepInfo(NamedTuple):
    """Per step, stacked along the chunk by :func:`run_chunk`.

    Attributes
    ----------
    loss : Array, shape (num_steps,)
        :math:`-\\bar V`, the negated objective estimate at the parameters before the step.
    grad_norm : Array, shape (num_steps,)
        Global norm of the gradient estimate of the loss.
    """

    loss: Array
    grad_norm: Array


def _optimizer(name: str) -> optax.GradientTransformation:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(OPTIMIZERS)}")
    return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=1e-3)


def init(params: Any, optimizer: str = "adam") -> OptimizationState:
    """The starting state for ``params`` and the optimiser named ``optimizer``.

    Leaves are made strongly typed, so that the state a chunk returns has the same types
    as the one it was given (a weakly typed leaf would retrace the second chunk).
    """
    params = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), params)
    return OptimizationState(params, _optimizer(optimizer).init(params), jnp.zeros((), jnp.int32))


@partial(jax.jit, static_argnames=("objective", "num_steps", "num_samples", "optimizer"))
def run_chunk(
    key: Array,
    state: OptimizationState,
    log_joint: Callable[[Array], Array],
    objective: Callable[..., Array],
    objective_args: tuple = (),
    *,
    learning_rate: ArrayLike,
    num_steps: int,
    num_samples: int = 1,
    optimizer: str = "adam",
    estimators: Mapping[str, Any] | None = None,
) -> tuple[OptimizationState, StepInfo]:
    """Take ``num_steps`` optimiser steps on ``objective``.

    Parameters
    ----------
    key : jax.random key
        Split into one key per step.
    state : OptimizationState
        From :func:`init` (same ``optimizer``) or a previous chunk.
    log_joint : pytree callable
        The target (:mod:`~posteriorlab.core.vi.models`); traced.
    objective : callable
        ``objective(t, params, log_joint, *objective_args)``, to maximise. Static.
    objective_args : tuple
        Continuous settings of the objective (e.g. Rényi's :math:`\\alpha`); traced.
    learning_rate : float
        Traced: changing it does not recompile.
    num_steps, num_samples : int
        Steps in this chunk; independent objective runs averaged per step.
    optimizer : str
        A key of :data:`OPTIMIZERS`; must match the one given to :func:`init`.
    estimators : mapping of site name to estimator object, optional
        Per-site overrides (use :func:`~posteriorlab.core.vi.programs.choose`).

    Returns
    -------
    state : OptimizationState
    info : StepInfo
    """
    transform = _optimizer(optimizer)
    hyperparams = state.opt_state.hyperparams
    lr = jnp.asarray(learning_rate, dtype=hyperparams["learning_rate"].dtype)
    opt_state = state.opt_state._replace(hyperparams={**hyperparams, "learning_rate": lr})

    def loss_and_value(params, key_step):
        def one(k):
            return programs.value_and_surrogate(
                objective, k, params, log_joint, *objective_args, estimators=estimators
            )

        values, surrogates = jax.vmap(one)(jax.random.split(key_step, num_samples))
        return -surrogates.mean(), -values.mean()

    def step(carry, key_step):
        params, opt_state, count = carry
        grads, loss = jax.grad(loss_and_value, has_aux=True)(params, key_step)
        updates, opt_state = transform.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, count + 1), StepInfo(loss, optax.tree.norm(grads))

    (params, opt_state, count), info = jax.lax.scan(
        step, (state.params, opt_state, state.step), jax.random.split(key, num_steps)
    )
    return OptimizationState(params, opt_state, count), info
