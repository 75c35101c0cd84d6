r"""The likelihoods a distribution transformer learns to invert.

Every observation is a scalar :math:`y_j` with Gaussian noise of standard deviation
:math:`\sigma_j`, seen through an *observation function* :math:`h(a_j, x)` of the
parameter and a per-observation row :math:`a_j \in \mathbb{R}^2`:

.. math::

    y_j = h(a_j, x) + \sigma_j \varepsilon_j, \qquad \varepsilon_j \sim \mathcal{N}(0, 1),
    \qquad \log p(y \mid x) = \sum_j \log \mathcal{N}\bigl(y_j;\, h(a_j, x),\, \sigma_j^2\bigr).

``"linear_gaussian"`` -- task (a)
    :math:`h(a, x) = a^\top x`. The posterior of a mixture prior is a mixture again,
    known exactly (:func:`posteriorlab.core.transformer.exact.exact_posterior`).
``"norm"`` -- task (b), a *distance from the origin*
    :math:`h(a, x) = \lVert a \odot x \rVert`, the Euclidean length of the coordinates
    that :math:`a` selects: :math:`a = (1, 1)` observes :math:`\lVert x \rVert` of a 2-D
    parameter, :math:`a = (1, 0)` observes :math:`|x_1|` (a 1-D problem padded to two
    dimensions, :mod:`posteriorlab.core.transformer.model`). The likelihood is the same
    on every circle :math:`\lVert x \rVert = r`, so a prior component that straddles the
    origin becomes a ring or, in 1-D, two mirrored bumps: no closed form. The exact
    answer is a quadrature (:mod:`posteriorlab.core.transformer.quadrature`) and the
    practical one tempered SMC (:mod:`posteriorlab.core.smc.tempering`).

Both use the same rows, values and noise arrays with a mask, so the network's
observation tokens (:func:`~posteriorlab.core.transformer.model.observation_features`)
have one layout for both; which function :math:`h` they mean is a property of the
network (:attr:`~posteriorlab.core.transformer.model.ModelConfig.likelihood`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LIKELIHOODS", "NORM_ROWS", "check_likelihood", "distance_rows",
           "observed_function", "log_likelihood"]

LIKELIHOODS = ("linear_gaussian", "norm")
"""The observation functions :math:`h` (module docstring)."""

NORM_ROWS = {1: (1.0, 0.0), 2: (1.0, 1.0)}
"""The row :math:`a` of a distance observation of a 1-D and of a 2-D parameter."""


def check_likelihood(likelihood: str) -> None:
    """Raise ``ValueError`` naming the choices if ``likelihood`` is not one of them."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"likelihood = {likelihood!r} is not known; choose one of {LIKELIHOODS}."
        )


def distance_rows(count: int, dim: int) -> jax.Array:
    """The rows of ``count`` distance observations of a ``dim``-D parameter: all ones,
    shape ``(count, dim)`` (padding to two dimensions adds the zero of a 1-D problem)."""
    return jnp.ones((count, dim))


def observed_function(likelihood: str, rows, x) -> jax.Array:
    r""":math:`h(a_j, x)` for every row: ``rows (n, d)``, ``x (d,)`` -> ``(n,)``.

    ``likelihood`` is a Python string (static): it picks the code, not a value.
    """
    check_likelihood(likelihood)
    if likelihood == "linear_gaussian":
        return rows @ x
    squared = jnp.sum((rows * x) ** 2, axis=-1)
    # The gradient of sqrt at 0 is infinite; ||a ⊙ x|| is not differentiable there, and
    # the double where keeps gradients finite (zero) at the origin instead of nan.
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def log_likelihood(likelihood: str, x, rows, values, noise_sd, observation_mask) -> jax.Array:
    r""":math:`\sum_j m_j \log\mathcal{N}(y_j; h(a_j, x), \sigma_j^2)` over the real
    (``observation_mask``) observations; a scalar.

    Parameters
    ----------
    likelihood : str
        One of :data:`LIKELIHOODS` (static).
    x : Array, shape (d,)
    rows : Array, shape (n, d)
    values, noise_sd : Array, shape (n,)
    observation_mask : bool Array, shape (n,)
    """
    terms = jax.scipy.stats.norm.logpdf(values, observed_function(likelihood, rows, x), noise_sd)
    return jnp.sum(jnp.where(observation_mask, terms, 0.0))
