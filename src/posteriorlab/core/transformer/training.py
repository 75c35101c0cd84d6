r"""Training from simulation: amortised neural posterior estimation.

The objective
-------------
Draw a prior :math:`\phi` from the meta-prior, a parameter :math:`x \sim p_\phi` and
data :math:`y \sim p(y \mid x)` (:mod:`posteriorlab.core.transformer.simulate`), and
score the truth under the network's posterior :math:`q_\theta(\cdot \mid \phi, y)`:

.. math::

    \mathcal{L}(\theta) = -\mathbb{E}_{\phi,\, x,\, y}
        \bigl[\log q_\theta(x \mid \phi, y)\bigr].

No posterior is ever computed to train: the simulator only runs the model forwards.
Because :math:`(x, y)` is a draw from the joint, :math:`x` given :math:`y` is a draw
from the exact posterior, and

.. math::

    \mathcal{L}(\theta) = \mathbb{E}_{\phi, y}\,
        \mathrm{KL}\bigl(p(\cdot \mid \phi, y) \,\|\, q_\theta(\cdot \mid \phi, y)\bigr)
        + \mathbb{E}_{\phi, y}\, \mathrm{H}\bigl[p(\cdot \mid \phi, y)\bigr],

the average *forward* KL plus an entropy that does not depend on :math:`\theta`. The
forward KL is large wherever :math:`p` has mass and :math:`q` has none (a
:math:`\log q \to -\infty` there), so minimising it makes :math:`q` cover every mode of
the posterior -- *mass-covering* -- at the price of spreading too wide when the network
cannot represent :math:`p` exactly. (VI minimises the reverse KL, which is
mode-seeking: the opposite failure.) For linear-Gaussian data the exact posterior is
known, and the progress report shows the gap
:math:`\log p(x \mid y) - \log q_\theta(x \mid y)`, whose mean is that forward KL
(:func:`posteriorlab.core.transformer.exact.log_density_gap`).

For a 1-D problem the loss scores only the first coordinate, through the exact
marginal of the padded mixture (:func:`~posteriorlab.core.transformer.exact.log_density`).

The loss needs no posterior, so it is the same for every likelihood: the network's
:attr:`~posteriorlab.core.transformer.model.ModelConfig.likelihood` only tells the
simulator how to draw :math:`y` given :math:`x`. The progress report's gap to the exact
posterior is there for linear-Gaussian data; for the distance likelihood the exact
posterior is a quadrature, too slow to run at every step, and the gap is measured once
on held-out problems at the end (:mod:`posteriorlab.core.transformer.evaluation`).

The optimiser
-------------
AdamW with a linear warm-up to ``peak_learning_rate`` and a cosine decay over
``decay_steps``, after clipping the gradient's global norm. Every step draws a fresh
batch with the key ``fold_in(key, step)``, so a run interrupted and resumed from a
checkpoint (:class:`TrainingState` holds the step) sees the same batches as one that
was never interrupted.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from posteriorlab.core.transformer import exact, simulate
from posteriorlab.core.transformer.model import DistributionTransformer, ModelConfig, apply

__all__ = [
    "TrainingConfig",
    "TrainingState",
    "TrainingInfo",
    "optimizer",
    "init_training",
    "problem_loss",
    "train_step",
]


class TrainingConfig(NamedTuple):
    """How to train; static (hashable), a change compiles a new step.

    Attributes
    ----------
    batch_size : int
        Problems per step.
    peak_learning_rate : float
        AdamW step size after warm-up.
    warmup_steps : int
        Linear warm-up from zero.
    decay_steps : int
        Length of the whole schedule (warm-up included); the cosine reaches
        ``end_learning_rate_fraction * peak_learning_rate`` there and stays.
    end_learning_rate_fraction : float
    weight_decay : float
        AdamW's decoupled weight decay.
    max_grad_norm : float
        Gradients are clipped to this global norm.
    meta_prior : MetaPrior
        Ranges of the simulated problems.
    """

    batch_size: int = 256
    peak_learning_rate: float = 1e-3
    warmup_steps: int = 200
    decay_steps: int = 10_000
    end_learning_rate_fraction: float = 0.02
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    meta_prior: simulate.MetaPrior = simulate.MetaPrior()


class TrainingState(NamedTuple):
    """Where training stands; what a checkpoint stores.

    Attributes
    ----------
    model : DistributionTransformer
    optimizer_state : optax state
    step : Array of int, shape ()
        Steps taken.
    """

    model: DistributionTransformer
    optimizer_state: optax.OptState
    step: jax.Array


class TrainingInfo(NamedTuple):
    r"""What one step reports (scalars, measured on the step's batch before the update).

    Attributes
    ----------
    loss : Array
        :math:`-\frac1B\sum_b \log q_\theta(x_b \mid \phi_b, y_b)`.
    log_density_gap : Array
        :math:`\frac1B\sum_b [\log p(x_b \mid y_b) - \log q_\theta(x_b \mid y_b)]`, the
        batch estimate of the average forward KL to the exact posterior; ``nan`` where
        the posterior has no closed form (module docstring).
    grad_norm : Array
        Global norm of the gradient, before clipping.
    learning_rate : Array
        The schedule's value at this step.
    """

    loss: jax.Array
    log_density_gap: jax.Array
    grad_norm: jax.Array
    learning_rate: jax.Array


def learning_rate_schedule(config: TrainingConfig) -> optax.Schedule:
    """Linear warm-up, then cosine decay (see :class:`TrainingConfig`)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.peak_learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.decay_steps, config.warmup_steps + 1),
        end_value=config.end_learning_rate_fraction * config.peak_learning_rate,
    )


def optimizer(config: TrainingConfig) -> optax.GradientTransformation:
    """Gradient clipping followed by AdamW on :func:`learning_rate_schedule`."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(learning_rate_schedule(config), weight_decay=config.weight_decay),
    )


def init_training(model: DistributionTransformer, config: TrainingConfig) -> TrainingState:
    """A fresh :class:`TrainingState`: optimiser moments at zero, step 0."""
    return TrainingState(model, optimizer(config).init(model), jnp.zeros((), jnp.int32))


def problem_loss(model: DistributionTransformer, problems: simulate.Problems):
    r"""Mean :math:`-\log q_\theta(x \mid \phi, y)` over a batch, and the per-problem
    log-densities of the truth under the network.

    Returns
    -------
    loss : Array, shape ()
    log_q : Array, shape (B,)
    """
    posterior = apply(
        model,
        problems.prior,
        problems.component_mask,
        problems.rows,
        problems.values,
        problems.noise_sd,
        problems.observation_mask,
    )
    log_q = jax.vmap(exact.log_density)(posterior, problems.truth, problems.is_1d)
    return -jnp.mean(log_q), log_q


def exact_log_density_of_truth(problems: simulate.Problems) -> jax.Array:
    """:math:`\\log p(x \\mid y)` of the true parameter under the exact posterior of
    linear-Gaussian problems, ``(B,)``."""
    posterior = jax.vmap(exact.exact_posterior)(
        problems.prior, problems.rows, problems.values, problems.noise_sd,
        problems.observation_mask,
    )
    return jax.vmap(exact.log_density)(posterior, problems.truth, problems.is_1d)


@functools.partial(jax.jit, static_argnums=(2, 3))
def train_step(
    key: jax.Array, state: TrainingState, model_config: ModelConfig, config: TrainingConfig
) -> tuple[TrainingState, TrainingInfo]:
    """One AdamW step on a fresh batch drawn with ``fold_in(key, state.step)``.

    Parameters
    ----------
    key : PRNG key
        The run's key, the same for every step.
    state : TrainingState
    model_config : ModelConfig
        Sets the padded sizes of the simulated problems (static).
    config : TrainingConfig
        Static.

    Returns
    -------
    state : TrainingState
        With ``step`` advanced by one.
    info : TrainingInfo
    """
    problems = simulate.sample_problems(
        jax.random.fold_in(key, state.step),
        config.meta_prior,
        config.batch_size,
        model_config.max_components,
        model_config.max_observations,
        model_config.likelihood,
    )
    (loss, log_q), grads = jax.value_and_grad(problem_loss, has_aux=True)(state.model, problems)
    if model_config.likelihood == "linear_gaussian":
        gap = jnp.mean(exact_log_density_of_truth(problems) - log_q)
    else:
        gap = jnp.full((), jnp.nan, loss.dtype)
    updates, optimizer_state = optimizer(config).update(grads, state.optimizer_state, state.model)
    model = optax.apply_updates(state.model, updates)
    info = TrainingInfo(
        loss=loss,
        log_density_gap=gap,
        grad_norm=optax.tree.norm(grads),
        learning_rate=learning_rate_schedule(config)(state.step),
    )
    return TrainingState(model, optimizer_state, state.step + 1), info
