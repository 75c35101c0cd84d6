r"""Targets whose posterior and evidence are known exactly, for judging a fit.

Variational inference maximises a lower bound on :math:`\log p(x)`; a teaching tool
should draw the exact :math:`\log p(x)` beside the bound and the exact posterior beside
:math:`q`. Two families of targets have both in closed form, through
:mod:`posteriorlab.core.gmm`:

* :class:`MixtureTarget`: the "posterior" is a Gaussian mixture itself, normalised, so
  :math:`\log Z = 0`. Multi-modal: a mean-field Gaussian under the ELBO (the mode-seeking
  :math:`\mathrm{KL}(q\,\|\,p)`) locks onto one mode.
* :class:`LinearRegression`: Bayesian linear regression, :math:`z \sim \mathcal N(m_0,
  S_0)`, :math:`y_i = \phi(u_i)^\top z + \varepsilon_i`,
  :math:`\varepsilon_i \sim \mathcal N(0, \sigma^2)`. Prior and likelihood are Gaussian,
  so the posterior is Gaussian and

  .. math::

      \log p(y) = \log \mathcal N\bigl(y;\ \Phi m_0,\ \Phi S_0 \Phi^\top + \sigma^2 I\bigr),

  computed by :func:`~posteriorlab.core.gmm.log_marginal_likelihood` on a one-component
  prior. The posterior's correlation shows what a mean-field family cannot represent.

Both are pytrees of arrays (callables ``z -> log p(x, z)``), so changing the data or the
mixture never recompiles a jitted optimiser.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from posteriorlab.core import gmm

__all__ = ["LinearRegression", "MixtureTarget"]


class MixtureTarget(NamedTuple):
    """A normalised Gaussian-mixture density as the target; :math:`\\log Z = 0`."""

    mixture: gmm.GaussianMixture

    def __call__(self, z: jax.Array) -> jax.Array:
        return gmm.log_prob(self.mixture, z)

    def posterior(self) -> gmm.GaussianMixture:
        return self.mixture

    def log_evidence(self) -> jax.Array:
        return jnp.zeros((), self.mixture.means.dtype)


class LinearRegression(NamedTuple):
    r"""Bayesian linear regression with a Gaussian prior and known noise.

    Attributes
    ----------
    design : Array, shape (n, d)
        :math:`\Phi`, one row of features per observation.
    observations : Array, shape (n,)
        :math:`y`.
    noise_scale : Array, shape ()
        :math:`\sigma`.
    prior : GaussianMixture
        One component: :math:`\mathcal N(m_0, S_0)`.
    """

    design: jax.Array
    observations: jax.Array
    noise_scale: jax.Array
    prior: gmm.GaussianMixture

    def _noise_cov(self) -> jax.Array:
        n = self.observations.shape[0]
        return self.noise_scale**2 * jnp.eye(n, dtype=self.design.dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        """:math:`\\log p(z) + \\sum_i \\log\\mathcal N(y_i;\\ \\phi_i^\\top z, \\sigma^2)`."""
        residuals = self.observations - self.design @ z
        n = self.observations.shape[0]
        log_likelihood = -0.5 * jnp.sum(residuals**2) / self.noise_scale**2 - n * (
            jnp.log(self.noise_scale) + 0.5 * jnp.log(2 * jnp.pi)
        )
        return gmm.log_prob(self.prior, z) + log_likelihood

    def posterior(self) -> gmm.GaussianMixture:
        return gmm.condition_on_linear_gaussian(
            self.prior, self.design, self._noise_cov(), self.observations
        )

    def log_evidence(self) -> jax.Array:
        return gmm.log_marginal_likelihood(
            self.prior, self.design, self._noise_cov(), self.observations
        )
