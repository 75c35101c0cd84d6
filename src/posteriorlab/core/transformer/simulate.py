r"""Simulated training problems: a meta-prior over priors, parameters and data.

The network is trained on problems it draws itself. One problem is

1. a prior :math:`\phi`: a mixture of :math:`K \in \{1, \dots, K_{\max}\}` components in
   :math:`d \in \{1, 2\}` dimensions, weights :math:`\pi \sim \mathrm{Dirichlet}(1)`,
   means uniform on :math:`[-4, 4]^d`, component standard deviations log-uniform on
   :math:`[0.3, 2]` per axis and (in 2-D) a correlation uniform on :math:`[-0.8, 0.8]`;
2. a true parameter :math:`x \sim p_\phi`;
3. :math:`n \in \{0, \dots, n_{\max}\}` scalar observations
   :math:`y_j = h(a_j, x) + \sigma\varepsilon_j`, one noise level per problem,
   :math:`\sigma` log-uniform on :math:`[0.2, 2]`, with the observation function
   :math:`h` of the likelihood (:mod:`posteriorlab.core.transformer.likelihoods`):

   * ``"linear_gaussian"``, :math:`h = a_j^\top x`: each row :math:`a_j` is half the
     time a coordinate axis (so the identity likelihood :math:`y = x + e` is in
     distribution) and otherwise a uniformly random direction, with length log-uniform
     on :math:`[0.5, 2]` and a random sign;
   * ``"norm"``, :math:`h = \lVert a_j \odot x\rVert`: the distance from the origin,
     :math:`a_j = (1, 1)` in 2-D and :math:`(1, 0)` (that is :math:`|x_1|`) in 1-D.

These ranges cover the lab's controls (means in :math:`[-4, 4]`, standard deviations
0.3--2, noise 0.2--2). Priors outside them are out of distribution: the network still
returns a valid mixture, but nothing promises it is close to the posterior.

Every problem is padded to ``max_components`` and ``max_observations`` with masks (see
:mod:`posteriorlab.core.transformer.model`); a 1-D problem is the first coordinate of a
2-D one with an independent standard-normal second coordinate and rows
:math:`a_j = (a_{j,1}, 0)`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from posteriorlab.core import gmm
from posteriorlab.core.transformer import likelihoods
from posteriorlab.core.transformer.model import DIM

__all__ = ["MetaPrior", "Problems", "sample_problems"]


class MetaPrior(NamedTuple):
    """Ranges of the simulated problems (module docstring); continuous, so traced.

    Attributes
    ----------
    mean_range : float
        Means uniform on ``[-mean_range, mean_range]`` per axis.
    min_sd, max_sd : float
        Component standard deviations log-uniform on ``[min_sd, max_sd]``.
    max_correlation : float
        2-D component correlations uniform on ``[-max_correlation, max_correlation]``.
    min_noise_sd, max_noise_sd : float
        Observation noise standard deviation log-uniform on this range.
    min_row_norm, max_row_norm : float
        Length of an observation row, log-uniform on this range.
    dirichlet_concentration : float
        Symmetric Dirichlet concentration of the weights.
    probability_1d : float
        Chance that a problem is one-dimensional.
    """

    mean_range: float = 4.0
    min_sd: float = 0.3
    max_sd: float = 2.0
    max_correlation: float = 0.8
    min_noise_sd: float = 0.2
    max_noise_sd: float = 2.0
    min_row_norm: float = 0.5
    max_row_norm: float = 2.0
    dirichlet_concentration: float = 1.0
    probability_1d: float = 0.5


class Problems(NamedTuple):
    """A batch of padded 2-D problems, ``B`` of each.

    Attributes
    ----------
    prior : GaussianMixture
        ``log_weights (B, K)`` (``-inf`` on padded components), ``means (B, K, 2)``,
        ``chol_covs (B, K, 2, 2)`` (the identity on padded components).
    component_mask : bool Array, shape (B, K)
    truth : Array, shape (B, 2)
        The parameter :math:`x` drawn from the prior.
    rows : Array, shape (B, n, 2)
    values : Array, shape (B, n)
    noise_sd : Array, shape (B, n)
    observation_mask : bool Array, shape (B, n)
    is_1d : bool Array, shape (B,)
        One-dimensional problems: only the first coordinate is the answer.
    """

    prior: gmm.GaussianMixture
    component_mask: jax.Array
    truth: jax.Array
    rows: jax.Array
    values: jax.Array
    noise_sd: jax.Array
    observation_mask: jax.Array
    is_1d: jax.Array


def _log_uniform(key, low, high, shape):
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(low), maxval=jnp.log(high)))


def _one_problem(key, meta: MetaPrior, max_components: int, max_observations: int,
                 likelihood: str):
    keys = jax.random.split(key, 12)
    (key_dim, key_count, key_weights, key_means, key_sd, key_corr, key_truth, key_n,
     key_axis, key_angle, key_norm, key_noise) = keys
    is_1d = jax.random.bernoulli(key_dim, meta.probability_1d)
    second_axis = jnp.where(is_1d, 0.0, 1.0)

    num_components = jax.random.randint(key_count, (), 1, max_components + 1)
    component_mask = jnp.arange(max_components) < num_components
    gammas = jax.random.gamma(key_weights, meta.dirichlet_concentration, (max_components,))
    gammas = jnp.where(component_mask, gammas, 0.0)
    log_weights = jnp.where(component_mask, jnp.log(gammas) - jnp.log(jnp.sum(gammas)), -jnp.inf)

    means = jax.random.uniform(
        key_means, (max_components, DIM), minval=-meta.mean_range, maxval=meta.mean_range
    )
    means = means.at[:, 1].multiply(second_axis)
    sds = _log_uniform(key_sd, meta.min_sd, meta.max_sd, (max_components, DIM))
    sds = sds.at[:, 1].set(jnp.where(is_1d, 1.0, sds[:, 1]))
    correlation = second_axis * jax.random.uniform(
        key_corr, (max_components,), minval=-meta.max_correlation, maxval=meta.max_correlation
    )
    chol = jnp.zeros((max_components, DIM, DIM))
    chol = chol.at[:, 0, 0].set(sds[:, 0])
    chol = chol.at[:, 1, 0].set(correlation * sds[:, 1])
    chol = chol.at[:, 1, 1].set(jnp.sqrt(1.0 - correlation**2) * sds[:, 1])
    identity = jnp.broadcast_to(jnp.eye(DIM), chol.shape)
    chol = jnp.where(component_mask[:, None, None], chol, identity)
    means = jnp.where(component_mask[:, None], means, 0.0)
    prior = gmm.GaussianMixture(log_weights, means, chol)

    truth = gmm.sample(key_truth, prior, 1)[0]

    num_observations = jax.random.randint(key_n, (), 0, max_observations + 1)
    observation_mask = jnp.arange(max_observations) < num_observations
    angle = jax.random.uniform(key_angle, (max_observations,), maxval=2.0 * math.pi)
    axis_choice = jax.random.randint(key_axis, (max_observations,), 0, 4)
    # 0, 1: the first or second coordinate axis; 2, 3: a random direction.
    axis_angle = jnp.where(axis_choice == 0, 0.0, 0.5 * math.pi)
    angle = jnp.where(axis_choice < 2, axis_angle, angle)
    directions = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    key_norm, key_sign = jax.random.split(key_norm)
    norms = _log_uniform(key_norm, meta.min_row_norm, meta.max_row_norm, (max_observations,))
    signs = jnp.where(jax.random.bernoulli(key_sign, 0.5, (max_observations,)), 1.0, -1.0)
    rows = (signs * norms)[:, None] * directions
    rows_1d = jnp.stack([signs * norms, jnp.zeros_like(norms)], axis=-1)
    rows = jnp.where(is_1d, rows_1d, rows)
    if likelihood == "norm":
        rows = jnp.broadcast_to(
            jnp.where(is_1d, jnp.array(likelihoods.NORM_ROWS[1]),
                      jnp.array(likelihoods.NORM_ROWS[2])), rows.shape
        )

    key_noise, key_eps = jax.random.split(key_noise)
    noise_sd = _log_uniform(key_noise, meta.min_noise_sd, meta.max_noise_sd, ())
    noise_sd = jnp.full((max_observations,), noise_sd)
    noise = noise_sd * jax.random.normal(key_eps, (max_observations,))
    values = likelihoods.observed_function(likelihood, rows, truth) + noise
    return Problems(
        prior=prior,
        component_mask=component_mask,
        truth=truth,
        rows=rows,
        values=values,
        noise_sd=noise_sd,
        observation_mask=observation_mask,
        is_1d=is_1d,
    )


def sample_problems(
    key: jax.Array,
    meta: MetaPrior,
    batch_size: int,
    max_components: int,
    max_observations: int,
    likelihood: str = "linear_gaussian",
) -> Problems:
    """Draw ``batch_size`` independent problems from the meta-prior.

    Parameters
    ----------
    key : PRNG key
    meta : MetaPrior
        Traced: changing a range does not recompile.
    batch_size, max_components, max_observations : int
        Shapes, static under ``jit``.
    likelihood : str
        One of :data:`~posteriorlab.core.transformer.likelihoods.LIKELIHOODS` (static).

    Returns
    -------
    Problems
    """
    keys = jax.random.split(key, batch_size)
    likelihoods.check_likelihood(likelihood)
    return jax.vmap(_one_problem, in_axes=(0, None, None, None, None))(
        keys, meta, max_components, max_observations, likelihood
    )
