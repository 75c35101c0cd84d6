r"""Flow matching: learning the velocity of a probability path by regression.

The paths lab knows the marginal velocity :math:`u_t(x)` of every Gaussian path to a
mixture in closed form (:mod:`posteriorlab.core.paths.fields`). For real data nobody
does, and generative models *learn* it. This module learns it on the mixture, where the
answer is known, so the student can watch a network approach the exact field and see
what the loss does and does not say about that.

The idea
--------
Pick a noise point :math:`x_0 \sim \mathcal{N}(0, I)`, a data point :math:`x_1` and a
time :math:`t \sim U(0, 1)`, and put the point
:math:`x_t = \sigma_t x_0 + \alpha_t x_1` on the path. Along this one curve (a straight
line for cond-OT) the point moves with the *conditional* velocity

.. math::

    \dot x_t = \dot\sigma_t x_0 + \dot\alpha_t x_1 ,

which we can compute because we chose :math:`x_0` and :math:`x_1`. The velocity we
want, the *marginal* one that moves the whole cloud of points, is what this conditional
velocity is on average among all the pairs that pass through the same place at the same
time:

.. math::

    u_t(x) = \mathbb{E}\left[\dot x_t \,\middle|\, x_t = x\right].

Conditional flow matching never computes that average. It regresses a network
:math:`v_\theta(t, x)` onto the conditional velocities,

.. math::

    L(v) = \mathbb{E}_{t, x_0, x_1} \left\lVert v(t, x_t) - \dot x_t \right\rVert^2 ,

and least squares does the averaging: the best predictor of a random target from
:math:`(t, x_t)` is its conditional mean, so the minimiser of :math:`L` is :math:`u_t`.

Why the loss never reaches zero
-------------------------------
Many pairs :math:`(x_0, x_1)` meet at the same :math:`x_t` and move in different
directions, and no function of :math:`(t, x_t)` can follow all of them. Precisely,

.. math::

    L(v) = L(u) + \mathbb{E}\left\lVert v(t, x_t) - u_t(x_t) \right\rVert^2,
    \qquad
    L(u) = \mathbb{E}\, \operatorname{tr}\operatorname{Cov}\left[\dot x_t \mid t, x_t\right] > 0 .

The floor :math:`L(u)` depends on the target and the schedule, not on the network. For
the simplest case, noise :math:`\mathcal{N}(0, a^2 I_d)` carried to a target
:math:`\mathcal{N}(\mu, s^2 I_d)` along :class:`~posteriorlab.core.paths.schedules.CondOT`,
each coordinate of :math:`\dot x_t` keeps the conditional variance
:math:`a^2 s^2 / ((1-t)^2 a^2 + t^2 s^2)` given :math:`x_t`, and integrating over
:math:`t` gives :math:`L(u) = \pi a s d / 2` -- whatever the mean.

A loss curve is therefore read against the loss of the exact field, which this module
computes on the same samples (:func:`evaluate`); the gap between the two is the quantity
that matters, :math:`\mathbb{E}\lVert v - u\rVert^2` (:func:`velocity_error`).

For :class:`~posteriorlab.core.paths.schedules.LinearVP` and
:class:`~posteriorlab.core.paths.schedules.VP`, :math:`\dot\sigma_t^2 \sim 1/(1-t)` near
the data end, so the floor is (logarithmically) infinite and the loss estimates are very
noisy; :func:`~posteriorlab.core.paths.schedules.coefficients` stops at
:math:`t = 1 - 10^{-6}`, which keeps them finite. Train with a schedule whose speeds stay
bounded (cond-OT, cosine) and move to another with
:func:`~posteriorlab.core.paths.schedules.change_schedule`.

What is here
------------
* :class:`VelocityNet` -- a small MLP :math:`v_\theta(t, x)` in equinox, fed the point
  and a few Fourier features of :math:`t` (:func:`time_embedding`);
  :func:`learned_velocity` evaluates it on a batch and is a field for
  :mod:`posteriorlab.core.paths.integrators`.
* :func:`sample_path` -- draws :math:`(t, x_0, x_1, x_t, \dot x_t)`;
  :func:`regression_loss` is :math:`L` on those draws and
  :func:`conditional_flow_matching_loss` the same on fresh ones.
* :func:`train_chunk` -- a fixed number of Adam steps in one ``jax.lax.scan``,
  returning the new :class:`TrainingState` and the per-step :class:`TrainingInfo`, so a
  dashboard can call it again and again and draw the loss as it falls
  (:func:`init_training` starts one).
* :func:`marginal_velocity` -- the exact :math:`u_t(x)` at per-draw times;
  :func:`decompose_loss`, :func:`evaluate`, :func:`velocity_error` and
  :func:`exact_field_loss` -- the network against the exact field on the same draws
  (:class:`LossDecomposition`).

Compilation
-----------
The network is an ``equinox.Module`` whose every leaf is a floating-point array (the
architecture -- width, depth, number of frequencies -- is static metadata of the
pytree), so it passes through ``jax.jit``, ``jax.grad`` and optax as it is, with no
``eqx.partition`` needed. In :func:`train_chunk` only the step count and the batch size
are static; the schedule's parameters, the target's weights, means and covariances and
the learning rate are traced, so moving any of them reuses the compiled program.

The public functions that run compiled code (:func:`sample_path`,
:func:`marginal_velocity`, :func:`decompose_loss`, :func:`train_chunk`) are thin
wrappers around jitted private ones. A wrapper hands its arguments over in one fixed
order and as plain arrays, because ``jax.jit`` keys its cache on *how* it was called: a
keyword instead of a position, an omitted default, or a Python float (weakly typed to
JAX) instead of an array would each compile again. :func:`evaluate`,
:func:`velocity_error` and :func:`exact_field_loss` call the compiled pieces in turn
rather than being compiled whole, so the sampler -- whose random-number code is most of
the compile time on a CPU -- is compiled once per batch size and shared.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields
from posteriorlab.core.paths.schedules import Schedule, coefficients

__all__ = [
    "VelocityNet",
    "time_embedding",
    "learned_velocity",
    "PathSamples",
    "sample_path",
    "marginal_velocity",
    "regression_loss",
    "conditional_flow_matching_loss",
    "LossDecomposition",
    "decompose_loss",
    "evaluate",
    "velocity_error",
    "exact_field_loss",
    "TrainingState",
    "TrainingInfo",
    "init_training",
    "train_chunk",
]


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


class VelocityNet(eqx.Module):
    r"""A small MLP velocity field :math:`v_\theta(t, x)`.

    The input is the point :math:`x \in \mathbb{R}^d` joined with a time embedding

    .. math::

        e(t) = \left(t,\ \sin(\pi t), \cos(\pi t), \dots,
                     \sin(F\pi t), \cos(F\pi t)\right) \in \mathbb{R}^{2F + 1},

    which lets a small network change its behaviour quickly in :math:`t` (the exact field
    of a mixture changes fastest near the data end). ``depth`` hidden layers of ``width``
    units with the SiLU activation map it to a velocity in :math:`\mathbb{R}^d`.

    Every leaf is a weight or a bias, so the module is an ordinary pytree of arrays:
    ``jax.jit``, ``jax.grad`` and optax take it as it is. The frequencies are not
    parameters; they are built from the static ``num_frequencies``.

    Parameters
    ----------
    key : PRNG key
        Initialises the weights (equinox's default uniform initialisation).
    dim : int
        Dimension :math:`d` of the points.
    width : int, default 64
        Units per hidden layer.
    depth : int, default 2
        Number of hidden layers (at least 1).
    num_frequencies : int, default 4
        Number :math:`F` of sine/cosine pairs in the time embedding.
    dtype : dtype, optional
        Of the weights; JAX's default floating type if omitted.
    """

    layers: tuple[eqx.nn.Linear, ...]
    num_frequencies: int = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        dim: int,
        *,
        width: int = 64,
        depth: int = 2,
        num_frequencies: int = 4,
        dtype=None,
    ):
        if depth < 1 or width < 1 or dim < 1 or num_frequencies < 0:
            raise ValueError(
                f"VelocityNet needs dim >= 1, width >= 1, depth >= 1 and num_frequencies >= "
                f"0; got dim={dim}, width={width}, depth={depth}, "
                f"num_frequencies={num_frequencies}."
            )
        sizes = [dim + 2 * num_frequencies + 1] + [width] * depth + [dim]
        self.layers = _linear_layers(key, sizes, dtype)
        self.num_frequencies = num_frequencies

    def __call__(self, t, x):
        r"""Velocity at one point: ``t`` a scalar, ``x`` of shape ``(d,)``."""
        h = jnp.concatenate([x, time_embedding(t, self.num_frequencies, x.dtype)])
        for layer in self.layers[:-1]:
            h = jax.nn.silu(layer(h))
        return self.layers[-1](h)


def _linear_layers(key, sizes, dtype) -> tuple[eqx.nn.Linear, ...]:
    r"""``eqx.nn.Linear`` layers ``sizes[0] -> sizes[1] -> ...``, initialised as equinox
    does -- weights and biases uniform on :math:`\pm 1/\sqrt{\text{fan-in}}` -- but
    drawn in a single random call.

    Letting each layer draw its own weights compiles one random-number program per array
    shape, seconds on a CPU for a network that then trains in milliseconds; here the
    layers are only *shaped* by ``jax.eval_shape`` and filled from one draw.
    """

    def build():
        layer_keys = jax.random.split(key, len(sizes) - 1)
        return tuple(
            eqx.nn.Linear(fan_in, fan_out, dtype=dtype, key=layer_key)
            for fan_in, fan_out, layer_key in zip(sizes[:-1], sizes[1:], layer_keys, strict=True)
        )

    shapes = jax.eval_shape(build)
    limits = tuple(
        1.0 / math.sqrt(layer.in_features) for layer in shapes for _ in jax.tree.leaves(layer)
    )
    leaves, structure = jax.tree.flatten(shapes)
    draws = _scaled_uniform_pieces(
        key, tuple(leaf.shape for leaf in leaves), limits, leaves[0].dtype
    )
    return jax.tree.unflatten(structure, draws)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _scaled_uniform_pieces(key, shapes, limits, dtype):
    """Arrays of the given shapes, uniform on ``(-limit, limit)``, from one draw."""
    sizes = [math.prod(shape) for shape in shapes]
    draws = jax.random.uniform(key, (sum(sizes),), dtype=dtype, minval=-1.0, maxval=1.0)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return [
        limit * draws[offset : offset + size].reshape(shape)
        for offset, size, shape, limit in zip(offsets, sizes, shapes, limits, strict=True)
    ]


def time_embedding(t, num_frequencies: int, dtype=None) -> jax.Array:
    r"""The embedding :math:`(t, \sin k\pi t, \cos k\pi t)_{k=1..F}`, shape ``(2F + 1,)``.

    The frequencies :math:`k\pi` make the features distinct on :math:`[0, 1]` (one half
    period for :math:`k = 1`), and :math:`t` itself is kept so the embedding is
    one-to-one even with ``num_frequencies=0``.
    """
    t = jnp.asarray(t, dtype=dtype)
    angles = jnp.pi * jnp.arange(1, num_frequencies + 1, dtype=t.dtype) * t
    return jnp.concatenate([t[None], jnp.sin(angles), jnp.cos(angles)])


def learned_velocity(params: VelocityNet, t, x) -> jax.Array:
    r"""The network's velocity :math:`v_\theta(t, x)` on a batch of points.

    Parameters
    ----------
    params : VelocityNet
    t : scalar or array broadcastable to ``x.shape[:-1]``
        One time for all points (as the integrators call it) or one per point.
    x : array, shape (..., d)

    Returns
    -------
    Array, shape (..., d)

    Notes
    -----
    ``functools.partial(learned_velocity, params)`` is a field ``(t, x) -> velocity``
    for :func:`~posteriorlab.core.paths.integrators.rk4` and friends.
    """
    x = jnp.asarray(x)
    batch_shape = x.shape[:-1]
    times = jnp.broadcast_to(jnp.asarray(t, dtype=x.dtype), batch_shape).reshape(-1)
    points = x.reshape(-1, x.shape[-1])
    return jax.vmap(params)(times, points).reshape(x.shape)


def _strongly_typed(tree):
    """Every leaf as an array of its own dtype.

    A Python float is *weakly typed* to JAX and an array is not, so the two would compile
    separate programs; making both plain arrays lets a slider hand over either.
    """
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype), tree)


# --------------------------------------------------------------------------------------
# Samples on the path and the regression loss
# --------------------------------------------------------------------------------------


class PathSamples(NamedTuple):
    r"""Independent draws of everything the flow-matching loss needs, ``n`` of each.

    Attributes
    ----------
    times : Array, shape (n,)
        :math:`t \sim U(0, 1)`.
    noise : Array, shape (n, d)
        :math:`x_0` from the source (standard normal unless another is given).
    data : Array, shape (n, d)
        :math:`x_1` from the target.
    points : Array, shape (n, d)
        :math:`x_t = \sigma_t x_0 + \alpha_t x_1`.
    target_velocities : Array, shape (n, d)
        The conditional velocities :math:`\dot x_t = \dot\sigma_t x_0 + \dot\alpha_t x_1`,
        the regression targets.
    """

    times: jax.Array
    noise: jax.Array
    data: jax.Array
    points: jax.Array
    target_velocities: jax.Array


def sample_path(
    key: jax.Array,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    num_samples: int,
    source: gmm.GaussianMixture | None = None,
) -> PathSamples:
    r"""Draw :math:`t \sim U(0,1)`, :math:`x_0 \sim` source, :math:`x_1 \sim` target,
    independently, and the point and conditional velocity they give.

    Parameters
    ----------
    key : PRNG key
    schedule : a schedule from :mod:`posteriorlab.core.paths.schedules`
    target : GaussianMixture
        The data distribution :math:`p_1`.
    num_samples : int
        A shape, hence static under ``jit``.
    source : GaussianMixture, optional
        The noise distribution; :math:`\mathcal{N}(0, I)` if omitted.

    Returns
    -------
    PathSamples
    """
    schedule, target, source = _strongly_typed((schedule, target, source))
    return _sample_path(key, schedule, target, source, num_samples)


def _draw_path_samples(key, schedule, target, source, num_samples) -> PathSamples:
    key_time, key_noise, key_data = jax.random.split(key, 3)
    dtype = target.means.dtype
    dim = target.means.shape[-1]
    times = jax.random.uniform(key_time, (num_samples,), dtype=dtype)
    if source is None:
        noise = jax.random.normal(key_noise, (num_samples, dim), dtype=dtype)
    else:
        noise = gmm.sample(key_noise, source, num_samples)
    data = gmm.sample(key_data, target, num_samples)
    c = coefficients(schedule, times)
    return PathSamples(
        times=times,
        noise=noise,
        data=data,
        points=c.sigma[:, None] * noise + c.alpha[:, None] * data,
        target_velocities=c.sigma_dot[:, None] * noise + c.alpha_dot[:, None] * data,
    )


_sample_path = jax.jit(_draw_path_samples, static_argnums=4)


def marginal_velocity(
    schedule: Schedule,
    target: gmm.GaussianMixture,
    times,
    points,
    source: gmm.GaussianMixture | None = None,
) -> jax.Array:
    r"""The exact marginal velocity :math:`u_{t_i}(x_i)`, each point at its own time.

    Parameters
    ----------
    schedule, target, source : as in :func:`sample_path`
    times : array, shape (n,)
    points : array, shape (n, d)

    Returns
    -------
    Array, shape (n, d)
    """
    schedule, target, source = _strongly_typed((schedule, target, source))
    return _marginal_velocity(schedule, target, source, times, points)


@jax.jit
def _marginal_velocity(schedule, target, source, times, points) -> jax.Array:
    def one(t, x):
        return fields.velocity(fields.marginal(schedule, target, t, source), x)

    return jax.vmap(one)(times, points)


def regression_loss(params: VelocityNet, samples: PathSamples) -> jax.Array:
    r"""The conditional flow-matching loss on given draws,

    .. math::

        \hat L(v_\theta) = \frac1n \sum_{i=1}^n
            \left\lVert v_\theta(t_i, x_{t_i}) - \dot x_{t_i} \right\rVert^2 ,

    an unbiased estimate of :math:`L(v_\theta)` (squared norms are summed over the
    :math:`d` coordinates, not averaged). This is what :func:`train_chunk` differentiates.

    Its minimiser over all fields is the marginal velocity :math:`u`, and its minimum
    :math:`L(u)` is not zero: writing
    :math:`v - \dot x = (v - u) + (u - \dot x)`, the cross term
    :math:`\mathbb{E}[(v - u)\cdot(u - \dot x)]` vanishes because
    :math:`u = \mathbb{E}[\dot x \mid t, x_t]` and :math:`v - u` is a function of
    :math:`(t, x_t)`, so :math:`L(v) = L(u) + \mathbb{E}\lVert v - u\rVert^2`.

    Parameters
    ----------
    params : VelocityNet
    samples : PathSamples

    Returns
    -------
    scalar Array
    """
    residuals = learned_velocity(params, samples.times, samples.points)
    residuals = residuals - samples.target_velocities
    return jnp.mean(jnp.sum(residuals**2, axis=-1))


def conditional_flow_matching_loss(
    key: jax.Array,
    params: VelocityNet,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    num_samples: int,
    source: gmm.GaussianMixture | None = None,
) -> jax.Array:
    r""":func:`regression_loss` on ``num_samples`` fresh draws from :func:`sample_path`.

    An unbiased estimate of :math:`L(v_\theta)`, whose minimiser is the marginal velocity
    and whose minimum :math:`L(u)` is positive (proof in :func:`regression_loss`).
    Differentiate with ``jax.grad(conditional_flow_matching_loss, argnums=1)``.
    """
    return regression_loss(params, sample_path(key, schedule, target, num_samples, source))


# --------------------------------------------------------------------------------------
# The network against the exact field
# --------------------------------------------------------------------------------------


class LossDecomposition(NamedTuple):
    r"""The loss of a network split around the exact field, on the same draws.

    With :math:`v = v_\theta(t, x_t)`, :math:`u = u_t(x_t)` and :math:`c = \dot x_t`,
    for every draw

    .. math::

        \underbrace{\lVert v - c\rVert^2}_{\texttt{loss}}
        = \underbrace{\lVert u - c\rVert^2}_{\texttt{exact\_field\_loss}}
        + \underbrace{\lVert v - u\rVert^2}_{\texttt{velocity\_error}}
        + \underbrace{2 (v - u)\cdot(u - c)}_{\texttt{cross\_term}} ,

    an algebraic identity. The cross term has mean zero (see :func:`regression_loss`),
    so in expectation the loss is the floor plus the velocity error; on a finite batch
    the cross term is the noise by which the two sides differ.

    Attributes are per draw, shape ``(n,)``, from :func:`decompose_loss`, or their means,
    scalars, from :func:`evaluate`.
    """

    loss: jax.Array
    exact_field_loss: jax.Array
    velocity_error: jax.Array
    cross_term: jax.Array


def decompose_loss(
    params: VelocityNet,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    samples: PathSamples,
    source: gmm.GaussianMixture | None = None,
) -> LossDecomposition:
    r"""The per-draw terms of :class:`LossDecomposition`, each of shape ``(n,)``.

    ``samples`` should come from :func:`sample_path` with the same schedule, target and
    source; only then is :math:`u` the conditional mean of the regression targets and the
    cross term centred.
    """
    schedule, target, source = _strongly_typed((schedule, target, source))
    return _decompose_loss(params, schedule, target, source, samples)


@jax.jit
def _decompose_loss(params, schedule, target, source, samples) -> LossDecomposition:
    predicted = learned_velocity(params, samples.times, samples.points)
    exact = _marginal_velocity(schedule, target, source, samples.times, samples.points)
    error = predicted - exact
    exact_residual = exact - samples.target_velocities
    return LossDecomposition(
        loss=jnp.sum((predicted - samples.target_velocities) ** 2, axis=-1),
        exact_field_loss=jnp.sum(exact_residual**2, axis=-1),
        velocity_error=jnp.sum(error**2, axis=-1),
        cross_term=2.0 * jnp.sum(error * exact_residual, axis=-1),
    )


def evaluate(
    key: jax.Array,
    params: VelocityNet,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    num_samples: int,
    source: gmm.GaussianMixture | None = None,
) -> LossDecomposition:
    r"""Means of :class:`LossDecomposition` over ``num_samples`` fresh path draws.

    A dashboard calls this after each training chunk with a fixed key, so that the
    numbers move only because the network does: ``loss`` is :math:`\hat L(v_\theta)`,
    ``exact_field_loss`` the floor :math:`\hat L(u)` on the same draws, and
    ``velocity_error`` the distance :math:`\frac1n\sum\lVert v_\theta - u\rVert^2`.
    """
    samples = sample_path(key, schedule, target, num_samples, source)
    return _means(decompose_loss(params, schedule, target, samples, source))


@jax.jit
def _means(terms: LossDecomposition) -> LossDecomposition:
    return LossDecomposition(*(jnp.mean(term) for term in terms))


def velocity_error(
    key: jax.Array,
    params: VelocityNet,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    num_samples: int,
    source: gmm.GaussianMixture | None = None,
) -> jax.Array:
    r"""Monte Carlo estimate of :math:`\mathbb{E}_{t, x_t}\lVert v_\theta(t, x_t) -
    u_t(x_t)\rVert^2`, the excess of the network's loss over the exact field's.

    The points are drawn from the path itself (:math:`t \sim U(0,1)`,
    :math:`x_t \sim p_t`), the weighting under which the excess equals this error.
    """
    return evaluate(key, params, schedule, target, num_samples, source).velocity_error


def exact_field_loss(
    key: jax.Array,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    num_samples: int,
    source: gmm.GaussianMixture | None = None,
) -> jax.Array:
    r"""Monte Carlo estimate of the irreducible floor
    :math:`L(u) = \mathbb{E}\lVert u_t(x_t) - \dot x_t\rVert^2`, no network needed."""
    samples = sample_path(key, schedule, target, num_samples, source)
    exact = marginal_velocity(schedule, target, samples.times, samples.points, source)
    return _mean_squared_distance(exact, samples.target_velocities)


@jax.jit
def _mean_squared_distance(a, b):
    return jnp.mean(jnp.sum((a - b) ** 2, axis=-1))


# --------------------------------------------------------------------------------------
# Training in chunks
# --------------------------------------------------------------------------------------

_OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
"""Adam whose learning rate lives in its state, so that it can be a traced value."""


class TrainingState(NamedTuple):
    """Where training stands between chunks.

    Attributes
    ----------
    params : VelocityNet
        The network.
    optimizer_state : optax state
        Adam's moment estimates and step count, and the learning rate in use.
    step : Array, int
        Optimisation steps taken so far.
    """

    params: VelocityNet
    optimizer_state: optax.OptState
    step: jax.Array


class TrainingInfo(NamedTuple):
    r"""What each step of :func:`train_chunk` reports, shape ``(num_steps,)`` each.

    Attributes
    ----------
    loss : Array
        :func:`regression_loss` on the step's batch, before the update.
    grad_norm : Array
        Global Euclidean norm of the gradient of that loss.
    """

    loss: jax.Array
    grad_norm: jax.Array


def init_training(params: VelocityNet, learning_rate=1e-3) -> TrainingState:
    """A fresh :class:`TrainingState` for ``params``: Adam's moments at zero, step 0.

    ``learning_rate`` is stored in the optimizer state; :func:`train_chunk` overwrites
    it with the value it is given.
    """
    optimizer_state = _OPTIMIZER.init(params)
    optimizer_state = _with_learning_rate(optimizer_state, learning_rate)
    return TrainingState(params, optimizer_state, jnp.zeros((), dtype=jnp.int32))


def _learning_rate_dtype(state: TrainingState):
    return state.optimizer_state.hyperparams["learning_rate"].dtype


def _with_learning_rate(optimizer_state, learning_rate):
    hyperparams = dict(optimizer_state.hyperparams)
    old = hyperparams["learning_rate"]
    hyperparams["learning_rate"] = jnp.asarray(learning_rate, dtype=old.dtype)
    return optimizer_state._replace(hyperparams=hyperparams)


def train_chunk(
    key: jax.Array,
    state: TrainingState,
    schedule: Schedule,
    target: gmm.GaussianMixture,
    learning_rate,
    *,
    num_steps: int = 50,
    batch_size: int = 256,
    source: gmm.GaussianMixture | None = None,
) -> tuple[TrainingState, TrainingInfo]:
    r"""Take ``num_steps`` Adam steps on the conditional flow-matching loss.

    Each step draws a fresh batch as :func:`sample_path` does, evaluates
    :func:`regression_loss` and its gradient, and updates the network. The steps run
    in one ``jax.lax.scan``, so a chunk is one compiled call, reused for every value of
    the traced arguments; a dashboard calls it repeatedly, appending ``info.loss`` to a
    live curve and drawing :func:`evaluate`'s ``exact_field_loss`` beneath it as the
    floor the curve can approach but never cross (in expectation).

    Parameters
    ----------
    key : PRNG key
        Split into one key per step; pass a new key for every chunk.
    state : TrainingState
    schedule : a schedule from :mod:`posteriorlab.core.paths.schedules`
        Traced: changing its parameters does not recompile.
    target : GaussianMixture
        Traced likewise (weights, means, covariances; not the number of components).
    learning_rate : float or scalar array
        Adam's step size for this chunk; traced.
    num_steps : int, default 50
        Steps in the chunk (static).
    batch_size : int, default 256
        Draws per step (static).
    source : GaussianMixture, optional
        The noise distribution; :math:`\mathcal{N}(0, I)` if omitted.

    Returns
    -------
    state : TrainingState
        After the chunk, with ``step`` advanced by ``num_steps``.
    info : TrainingInfo
        Per-step loss and gradient norm, shape ``(num_steps,)`` each.
    """
    schedule, target, source = _strongly_typed((schedule, target, source))
    learning_rate = jnp.asarray(learning_rate, dtype=_learning_rate_dtype(state))
    return _train_chunk(key, state, schedule, target, source, learning_rate, num_steps, batch_size)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _train_chunk(
    key, state, schedule, target, source, learning_rate, num_steps, batch_size
) -> tuple[TrainingState, TrainingInfo]:
    optimizer_state = _with_learning_rate(state.optimizer_state, learning_rate)

    def one_step(carry, step_key):
        params, optimizer_state = carry
        samples = _draw_path_samples(step_key, schedule, target, source, batch_size)
        loss, grads = jax.value_and_grad(regression_loss)(params, samples)
        updates, optimizer_state = _OPTIMIZER.update(grads, optimizer_state, params)
        params = optax.apply_updates(params, updates)
        return (params, optimizer_state), TrainingInfo(loss, optax.tree.norm(grads))

    step_keys = jax.random.split(key, num_steps)
    (params, optimizer_state), info = jax.lax.scan(
        one_step, (state.params, optimizer_state), step_keys
    )
    return TrainingState(params, optimizer_state, state.step + num_steps), info
