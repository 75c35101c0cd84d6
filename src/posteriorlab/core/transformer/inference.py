r"""Posteriors from a trained network: the functions a lab calls.

:func:`posterior` takes a mixture prior in one or two dimensions and scalar
observations :math:`y_j = a_j^\top x + \sigma_j\varepsilon_j` (or, for a network of the
distance likelihood, :math:`y_j = \lVert x\rVert + \sigma_j\varepsilon_j` with rows of
ones, :func:`~posteriorlab.core.transformer.likelihoods.distance_rows`) and returns the
network's posterior mixture, with the prior's own number of components and dimension.
It checks its input first (:class:`TransformerInputError` names what is wrong and how to fix it),
then pads the problem to the network's fixed sizes -- ``max_components`` components,
``max_observations`` observations, two dimensions -- so that one compiled program
serves every prior, every number of observations from zero up, and both dimensions:
clicking to add a point never recompiles.

* :func:`expand_vector_observations` turns vector observations
  :math:`y_i = A x + e_i`, :math:`e_i \sim \mathcal{N}(0, \sigma^2 I)` (for example the
  identity likelihood) into the scalar rows the network reads.
* :func:`sequential_posteriors` feeds each posterior back as the next prior, batch after
  batch (compare :func:`posteriorlab.core.transformer.exact.sequential_posteriors`).
* :func:`posterior_batch` and :func:`padded_posterior` are the unchecked, batched and
  jittable forms for benchmarks and training code.

A prior with fewer components than the network takes is padded with masked components
(they receive weight zero); a component with weight exactly zero in the prior keeps
weight zero, as Bayes' rule says it must.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from posteriorlab.core import gmm
from posteriorlab.core.transformer.model import DIM, DistributionTransformer, apply

__all__ = [
    "TransformerInputError",
    "prior_from_covariances",
    "check_prior",
    "check_observations",
    "expand_vector_observations",
    "pad_prior",
    "pad_observations",
    "padded_posterior",
    "posterior",
    "posterior_batch",
    "sequential_posteriors",
]


class TransformerInputError(ValueError):
    """A prior or data set the network cannot take; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# Checks (Python, on concrete values)
# --------------------------------------------------------------------------------------


def prior_from_covariances(
    model: DistributionTransformer, weights, means, covariances
) -> gmm.GaussianMixture:
    """Build a prior with :func:`posteriorlab.core.gmm.from_covariances` (which checks
    weights, shapes and positive definiteness) and check it fits ``model``.

    Raises
    ------
    TransformerInputError
        With the message of the failed check.
    """
    try:
        prior = gmm.from_covariances(weights, means, covariances)
    except ValueError as error:
        raise TransformerInputError(str(error)) from None
    check_prior(model, prior)
    return prior


def check_prior(model: DistributionTransformer, prior: gmm.GaussianMixture) -> None:
    """Refuse priors the network was not built for.

    Raises
    ------
    TransformerInputError
        If the prior has more components than ``model.config.max_components``, a
        dimension other than 1 or 2, non-finite values, or a Cholesky factor that is not
        lower triangular with a positive diagonal (i.e. a covariance that is not
        positive definite).
    """
    means = np.asarray(prior.means)
    chol = np.asarray(prior.chol_covs)
    log_weights = np.asarray(prior.log_weights)
    if means.ndim != 2:
        raise TransformerInputError(
            f"prior.means has shape {means.shape}; it must be (K, d), one row per component."
        )
    num_components, dim = means.shape
    if dim not in (1, 2):
        raise TransformerInputError(
            f"the prior lives in d = {dim} dimensions; the distribution transformer "
            "handles d = 1 or d = 2 only. Use a 1-D or 2-D prior."
        )
    limit = model.config.max_components
    if num_components > limit:
        raise TransformerInputError(
            f"the prior has K = {num_components} components but this network was trained "
            f"for at most {limit}; remove or merge components (K <= {limit}), or train a "
            f"network with `posteriorlab train-transformer --max-components "
            f"{num_components}`."
        )
    if log_weights.shape != (num_components,) or chol.shape != (num_components, dim, dim):
        raise TransformerInputError(
            f"prior shapes disagree: log_weights {log_weights.shape}, means {means.shape}, "
            f"chol_covs {chol.shape}; expected ({num_components},), ({num_components}, "
            f"{dim}), ({num_components}, {dim}, {dim})."
        )
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(chol))):
        raise TransformerInputError(
            "the prior has non-finite means or covariance factors; every mean and "
            "covariance entry must be a finite number."
        )
    if np.any(np.isnan(log_weights)) or np.all(np.isneginf(log_weights)):
        raise TransformerInputError(
            f"prior log-weights {log_weights} are invalid; weights must be >= 0 with at "
            "least one positive (build the prior with gmm.from_covariances)."
        )
    diagonal = np.diagonal(chol, axis1=-2, axis2=-1)
    upper = np.triu(chol, 1)
    if np.any(diagonal <= 0) or np.any(upper != 0):
        index = int(np.argmax(np.any(diagonal <= 0, axis=-1) | np.any(upper != 0, axis=(1, 2))))
        raise TransformerInputError(
            f"prior.chol_covs[{index}] = {chol[index].tolist()} is not a Cholesky factor "
            "(lower triangular, positive diagonal), so its covariance is not positive "
            "definite; build the prior from covariances with gmm.from_covariances, which "
            "checks them."
        )


def check_observations(model: DistributionTransformer, dim: int, rows, values, noise_sd,
                       observation_mask=None) -> None:
    """Refuse data the network cannot take.

    Raises
    ------
    TransformerInputError
        On shapes that disagree, more observations than ``model.config.max_observations``,
        non-finite values, rows other than ones for a distance network, or a noise
        standard deviation that is not positive.
    """
    rows = np.asarray(rows, dtype=float)
    values = np.asarray(values, dtype=float)
    noise_sd = np.asarray(noise_sd, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != dim or values.shape != (rows.shape[0],):
        raise TransformerInputError(
            f"observation rows have shape {rows.shape} and values {values.shape}; for a "
            f"{dim}-D prior pass rows (n, {dim}) and values (n,), one row a_j per scalar "
            "observation y_j = a_j . x + noise (n may be 0; for vector observations use "
            "expand_vector_observations)."
        )
    count = rows.shape[0]
    limit = model.config.max_observations
    if count > limit:
        raise TransformerInputError(
            f"{count} scalar observations given but this network takes at most {limit}; "
            f"drop some, or train a network with `posteriorlab train-transformer "
            f"--max-observations {count}`."
        )
    if noise_sd.shape not in ((), (count,)):
        raise TransformerInputError(
            f"noise_sd has shape {noise_sd.shape}; pass one standard deviation for all "
            f"observations or one per observation, shape ({count},)."
        )
    if observation_mask is not None and np.shape(observation_mask) != (count,):
        raise TransformerInputError(
            f"observation_mask has shape {np.shape(observation_mask)}; it needs one flag per "
            f"observation, shape ({count},)."
        )
    if not (np.all(np.isfinite(rows)) and np.all(np.isfinite(values))):
        raise TransformerInputError(
            "observations or rows contain non-finite values; every y_j and a_j must be a "
            "finite number."
        )
    if model.config.likelihood == "norm" and np.any(rows != 1.0):
        raise TransformerInputError(
            "this network reads distance observations y_j = ||x|| + noise, whose rows are "
            f"all ones (got rows {rows.tolist()}); pass likelihoods.distance_rows(n, {dim}), "
            "or use a linear-Gaussian network for rows a_j."
        )
    if not np.all(np.isfinite(noise_sd)) or np.any(noise_sd <= 0):
        raise TransformerInputError(
            f"noise_sd = {noise_sd} must be finite and > 0 (the network was trained on "
            "0.2 to 2)."
        )


# --------------------------------------------------------------------------------------
# Padding (pure JAX)
# --------------------------------------------------------------------------------------


def expand_vector_observations(A, observations):
    r"""Scalar rows for vector observations :math:`y_i = A x + e_i` with independent noise.

    Parameters
    ----------
    A : array_like, shape (m, d)
        The observation matrix (``jnp.eye(d)`` for the identity likelihood).
    observations : array_like, shape (n, m)
        The vectors :math:`y_i`.

    Returns
    -------
    rows : Array, shape (n * m, d)
    values : Array, shape (n * m,)
        Valid when the noise covariance is :math:`\sigma^2 I` (independent components),
        so that each component of each :math:`y_i` is a separate scalar observation.
    """
    A = jnp.atleast_2d(jnp.asarray(A))
    observations = jnp.asarray(observations).reshape(-1, A.shape[0])
    rows = jnp.tile(A, (observations.shape[0], 1))
    return rows, observations.reshape(-1)


def pad_prior(prior: gmm.GaussianMixture, max_components: int):
    """Pad a 1-D or 2-D prior to ``max_components`` components in two dimensions.

    A 1-D prior gains an independent standard-normal second coordinate; extra
    components get mean zero, identity factor and log-weight ``-inf``.

    Returns
    -------
    padded : GaussianMixture
        ``(max_components,)``, ``(max_components, 2)``, ``(max_components, 2, 2)``.
    component_mask : bool Array, shape (max_components,)
    """
    num_components, dim = prior.means.shape
    extra = max_components - num_components
    means = jnp.pad(prior.means, ((0, extra), (0, DIM - dim)))
    chol = jnp.pad(prior.chol_covs, ((0, extra), (0, DIM - dim), (0, DIM - dim)))
    filler = jnp.eye(DIM, dtype=chol.dtype)
    component_mask = jnp.arange(max_components) < num_components
    chol = jnp.where(component_mask[:, None, None], chol, filler)
    if dim == 1:
        chol = chol.at[:, 1, 1].set(1.0)
    log_weights = jnp.pad(prior.log_weights, (0, extra), constant_values=-jnp.inf)
    return gmm.GaussianMixture(log_weights, means, chol), component_mask


def pad_observations(rows, values, noise_sd, observation_mask, max_observations: int):
    """Pad ``n`` scalar observations to ``max_observations`` slots and two dimensions.

    Returns
    -------
    rows : Array, shape (max_observations, 2)
    values, noise_sd : Array, shape (max_observations,)
    observation_mask : bool Array, shape (max_observations,)
    """
    rows = jnp.asarray(rows)
    count, dim = rows.shape
    extra = max_observations - count
    noise_sd = jnp.broadcast_to(jnp.asarray(noise_sd, dtype=rows.dtype), (count,))
    if observation_mask is None:
        observation_mask = jnp.ones((count,), bool)
    return (
        jnp.pad(rows, ((0, extra), (0, DIM - dim))),
        jnp.pad(jnp.asarray(values, dtype=rows.dtype), (0, extra)),
        jnp.pad(noise_sd, (0, extra), constant_values=1.0),
        jnp.pad(jnp.asarray(observation_mask, bool), (0, extra)),
    )


def _crop(mixture: gmm.GaussianMixture, num_components: int, dim: int) -> gmm.GaussianMixture:
    return gmm.GaussianMixture(
        mixture.log_weights[..., :num_components],
        mixture.means[..., :num_components, :dim],
        mixture.chol_covs[..., :num_components, :dim, :dim],
    )


# --------------------------------------------------------------------------------------
# Posteriors
# --------------------------------------------------------------------------------------


@jax.jit
def padded_posterior(model, prior, component_mask, rows, values, noise_sd, observation_mask):
    """The network on one padded 2-D problem (shapes as :func:`pad_prior`,
    :func:`pad_observations`); unchecked and jitted."""
    batched = apply(
        model,
        *jax.tree.map(lambda a: a[None], (prior, component_mask, rows, values, noise_sd,
                                          observation_mask)),
    )
    return jax.tree.map(lambda a: a[0], batched)


def posterior(
    model: DistributionTransformer,
    prior: gmm.GaussianMixture,
    rows,
    values,
    noise_sd,
    observation_mask=None,
) -> gmm.GaussianMixture:
    r"""The network's posterior given scalar observations :math:`y_j = a_j^\top x +
    \sigma_j\varepsilon_j`.

    Parameters
    ----------
    model : DistributionTransformer
        For example :func:`~posteriorlab.core.transformer.checkpoints.load_pretrained`.
    prior : GaussianMixture
        ``K <= model.config.max_components`` components in ``d`` = 1 or 2 dimensions.
    rows : array_like, shape (n, d)
        The rows :math:`a_j`; ``n`` may be 0 (shape ``(0, d)``).
    values : array_like, shape (n,)
        The observations :math:`y_j`.
    noise_sd : float or array_like, shape (n,)
        :math:`\sigma_j > 0`, one for all or one per observation.
    observation_mask : bool array_like, shape (n,), optional
        Observations to ignore are ``False`` (default: use all).

    Returns
    -------
    GaussianMixture
        ``K`` components in ``d`` dimensions.

    Raises
    ------
    TransformerInputError
        From :func:`check_prior` or :func:`check_observations`.
    """
    check_prior(model, prior)
    num_components, dim = prior.means.shape
    rows = jnp.asarray(rows, dtype=prior.means.dtype)
    if rows.size == 0:  # no data: [] or shape (0,) read as (0, d)
        rows = rows.reshape(0, dim)
    check_observations(model, dim, rows, values, noise_sd, observation_mask)
    padded_prior, component_mask = pad_prior(prior, model.config.max_components)
    padded_data = pad_observations(
        rows, values, noise_sd, observation_mask, model.config.max_observations
    )
    result = padded_posterior(model, padded_prior, component_mask, *padded_data)
    return _crop(result, num_components, dim)


def posterior_batch(model, prior, component_mask, rows, values, noise_sd, observation_mask):
    """The network on a batch of padded 2-D problems (leading axis ``B`` on every
    argument, as in :func:`~posteriorlab.core.transformer.model.apply`); jitted,
    unchecked."""
    return _apply_jit(model, prior, component_mask, rows, values, noise_sd, observation_mask)


_apply_jit = jax.jit(apply)


def _reset_padding(mixture: gmm.GaussianMixture, is_1d: bool) -> gmm.GaussianMixture:
    """Put the unseen second coordinate of a 1-D problem back to an exact N(0, 1)."""
    if not is_1d:
        return mixture
    return mixture._replace(
        means=mixture.means.at[:, 1].set(0.0),
        chol_covs=mixture.chol_covs.at[:, 1, :].set(jnp.array([0.0, 1.0])),
    )


@functools.partial(jax.jit, static_argnums=7)
def _padded_sequence(model, prior, component_mask, rows, values, noise_sd, observation_mask,
                     is_1d):
    def step(current, batch):
        updated = padded_posterior(model, current, component_mask, *batch)
        updated = _reset_padding(updated, is_1d)
        return updated, updated

    _, posteriors = jax.lax.scan(step, prior, (rows, values, noise_sd, observation_mask))
    return posteriors


def sequential_posteriors(
    model: DistributionTransformer,
    prior: gmm.GaussianMixture,
    rows,
    values,
    noise_sd,
    observation_mask=None,
) -> gmm.GaussianMixture:
    r"""Filter batch after batch: the network's posterior after batch :math:`t` is the
    prior for batch :math:`t + 1`.

    Parameters
    ----------
    model, prior : as in :func:`posterior`
    rows : array_like, shape (T, n, d)
    values : array_like, shape (T, n)
    noise_sd : float or array_like, shape (T, n)
    observation_mask : bool array_like, shape (T, n), optional

    Returns
    -------
    GaussianMixture
        Stacked over batches: ``log_weights (T, K)``, ``means (T, K, d)``,
        ``chol_covs (T, K, d, d)``. The exact counterpart is
        :func:`posteriorlab.core.transformer.exact.sequential_posteriors`.
    """
    check_prior(model, prior)
    num_components, dim = prior.means.shape
    rows = jnp.asarray(rows, dtype=prior.means.dtype)
    values = jnp.asarray(values, dtype=rows.dtype)
    num_batches, count = values.shape
    noise_sd = jnp.broadcast_to(jnp.asarray(noise_sd, dtype=rows.dtype), (num_batches, count))
    if observation_mask is None:
        observation_mask = jnp.ones((num_batches, count), bool)
    for t in range(num_batches):
        check_observations(model, dim, rows[t], values[t], noise_sd[t], observation_mask[t])
    padded_prior, component_mask = pad_prior(prior, model.config.max_components)
    padded_data = jax.vmap(pad_observations, in_axes=(0, 0, 0, 0, None))(
        rows, values, noise_sd, jnp.asarray(observation_mask, bool),
        model.config.max_observations,
    )
    result = _padded_sequence(model, padded_prior, component_mask, *padded_data, dim == 1)
    return _crop(result, num_components, dim)

