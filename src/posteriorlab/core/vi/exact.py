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

* :class:`NoisyCone`: the ring-shaped posterior of the programmable-VI paper's Table 4.
  :math:`x, y \sim \mathcal N(0, s^2)`, :math:`r^2 = x^2 + y^2`, :math:`o \sim
  \mathcal N(r^2, (0.1 + r^2/100)^2)`, observed :math:`o`. The posterior is a thin ring
  of radius about :math:`\sqrt o`; a Gaussian family cannot bend around it. The
  evidence is one-dimensional: :math:`r^2 \sim \mathrm{Exponential}` with mean
  :math:`2s^2` (a :math:`\chi^2_2` scaled by :math:`s^2`), so

  .. math::

      p(o) = \int_0^\infty \tfrac{1}{2s^2} e^{-u/(2s^2)}\,
      \mathcal N\bigl(o;\ u, (0.1 + u/100)^2\bigr)\,du,

  by quadrature; with :math:`s = 10`, :math:`o = 5`: :math:`\log p(o) = -5.3232`.

All are pytrees of arrays (callables ``z -> log p(x, z)``), so changing the data or the
mixture never recompiles a jitted optimiser.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm

__all__ = ["CONE_QUADRATURE_POINTS", "LinearRegression", "MixtureTarget", "NoisyCone"]

CONE_QUADRATURE_POINTS = 4001
"""Trapezoid nodes for the cone's evidence integral (a window of 24 likelihood widths)."""


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


class NoisyCone(NamedTuple):
    """The noisy cone: a 2-D latent :math:`(x, y)` seen through :math:`o \\approx x^2 + y^2`.

    Attributes
    ----------
    observation : Array, shape ()
        :math:`o`, the observed noisy squared radius.
    prior_scale : Array, shape ()
        :math:`s`, the standard deviation of :math:`x` and :math:`y` a priori.
    """

    observation: jax.Array
    prior_scale: jax.Array

    @classmethod
    def create(cls, observation=5.0, prior_scale=10.0) -> NoisyCone:
        """The paper's setting by default (:math:`o = 5`, :math:`s = 10`)."""
        return cls(jnp.asarray(observation, float), jnp.asarray(prior_scale, float))

    @staticmethod
    def _noise_scale(squared_radius: jax.Array) -> jax.Array:
        return 0.1 + squared_radius / 100.0

    def _log_likelihood(self, squared_radius: jax.Array) -> jax.Array:
        scale = self._noise_scale(squared_radius)
        residual = (self.observation - squared_radius) / scale
        return -0.5 * residual**2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)

    def __call__(self, z: jax.Array) -> jax.Array:
        """:math:`\\log\\mathcal N(x; 0, s^2) + \\log\\mathcal N(y; 0, s^2) +
        \\log\\mathcal N(o;\\ r^2, (0.1 + r^2/100)^2)`."""
        prior = -0.5 * jnp.sum(z**2) / self.prior_scale**2 - 2 * jnp.log(self.prior_scale)
        return prior - jnp.log(2 * jnp.pi) + self._log_likelihood(jnp.sum(z**2))

    def log_evidence(self) -> jax.Array:
        """:math:`\\log p(o)` by the trapezoid rule in :math:`u = r^2` over the window
        where the likelihood is not negligible (:math:`\\pm 12` widths around
        :math:`o`, cut at 0), plus the prior's mass there."""
        width = self._noise_scale(jnp.maximum(self.observation, 0.0))
        low = jnp.maximum(self.observation - 12.0 * width, 0.0)
        high = jnp.maximum(self.observation, 0.0) + 12.0 * width * (1.0 + 0.12 * width)
        u = jnp.linspace(low, high, CONE_QUADRATURE_POINTS)
        mean = 2.0 * self.prior_scale**2
        log_integrand = -u / mean - jnp.log(mean) + self._log_likelihood(u)
        log_trapezoid = jnp.log(jnp.ones_like(u).at[0].set(0.5).at[-1].set(0.5))
        return logsumexp(log_integrand + log_trapezoid) + jnp.log(u[1] - u[0])
