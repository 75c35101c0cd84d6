r"""Targets for variational inference: log-joint densities :math:`\log p(x, z)` of a latent
vector :math:`z \in \mathbb R^d`.

A target is any callable ``log_joint(z) -> scalar`` that is also a pytree, so it can be
an argument of a jitted function and its numbers (data, prior settings) are traced:
changing them does not recompile. The classes here are NamedTuples with ``__call__``;
:func:`numpyro_log_joint` wraps a NumPyro model the same way.

- :class:`ConjugateGaussian`: :math:`z \sim \mathcal N(\mu_0, \mathrm{diag}\,s_0^2)`,
  :math:`x_i \mid z \sim \mathcal N(z, \mathrm{diag}\,\sigma^2)`, :math:`i = 1..n`.
  Exact posterior and evidence, the oracle of the tests. With :math:`d = 1`,
  :math:`\mu_0 = 0`, :math:`s_0 = \sigma = 1` and one observation :math:`x = 1`:
  :math:`\log p(x) = \log\mathcal N(1;\ 0, 2) = -1.51551`, posterior :math:`\mathcal
  N(1/2, 1/2)`.
- :class:`Banana`: :math:`z_1 \sim \mathcal N(0, s^2)`, :math:`z_2 \mid z_1 \sim
  \mathcal N(b (z_1^2 - s^2), 1)`; normalised (:math:`\log p(x) = 0`).
- :class:`Funnel`: Neal's funnel, :math:`v \sim \mathcal N(0, s^2)`, :math:`x \mid v
  \sim \mathcal N(0, e^{v})`; normalised.

A NumPyro model's latent sites may be constrained (a scale lives on :math:`(0, \infty)`).
:func:`numpyro_log_joint` maps them to one unconstrained flat vector :math:`u`, with
:math:`z = T(u)`, and returns :math:`\log p(x, T(u)) + \log|\det \partial T(u)|`, the
density of :math:`u` (NumPyro's ``potential_energy``, negated). Its evidence is the same.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.infer.util import potential_energy

__all__ = [
    "Banana",
    "ConjugateGaussian",
    "Funnel",
    "numpyro_latent_size",
    "numpyro_log_joint",
]


class ConjugateGaussian(NamedTuple):
    """Gaussian prior, Gaussian likelihood centred at :math:`z`, :math:`n` observations.

    Attributes
    ----------
    prior_loc, prior_scale : Array, shape (d,)
    noise_scale : Array, shape (d,)
    observations : Array, shape (n, d)
    """

    prior_loc: Array
    prior_scale: Array
    noise_scale: Array
    observations: Array

    @classmethod
    def create(
        cls,
        observations: ArrayLike,
        prior_loc: ArrayLike = 0.0,
        prior_scale: ArrayLike = 1.0,
        noise_scale: ArrayLike = 1.0,
    ) -> "ConjugateGaussian":
        """From observations of shape (n, d) (or (d,) for one); settings broadcast to (d,)."""
        x = jnp.atleast_2d(jnp.asarray(observations, dtype=float))
        d = x.shape[1]
        return cls(
            jnp.broadcast_to(jnp.asarray(prior_loc, dtype=float), (d,)),
            jnp.broadcast_to(jnp.asarray(prior_scale, dtype=float), (d,)),
            jnp.broadcast_to(jnp.asarray(noise_scale, dtype=float), (d,)),
            x,
        )

    def __call__(self, z: Array) -> Array:
        prior = dist.Normal(self.prior_loc, self.prior_scale).log_prob(z).sum()
        likelihood = dist.Normal(z, self.noise_scale).log_prob(self.observations).sum()
        return prior + likelihood

    def posterior(self) -> tuple[Array, Array]:
        """Exact posterior mean and standard deviation, each shape (d,)."""
        n = self.observations.shape[0]
        precision = 1 / self.prior_scale**2 + n / self.noise_scale**2
        mean = (
            self.prior_loc / self.prior_scale**2 + self.observations.sum(0) / self.noise_scale**2
        ) / precision
        return mean, 1 / jnp.sqrt(precision)

    def log_evidence(self) -> Array:
        """Exact :math:`\\log p(x_{1:n})`: per coordinate, :math:`x_{1:n}` is Gaussian
        with mean :math:`\\mu_0` and covariance :math:`\\sigma^2 I + s_0^2 \\mathbf 1
        \\mathbf 1^\\top`."""
        n = self.observations.shape[0]
        ones = jnp.ones((n, n))

        def one_coordinate(x, m, s, e):
            covariance = e**2 * jnp.eye(n) + s**2 * ones
            return dist.MultivariateNormal(jnp.full(n, m), covariance).log_prob(x)

        return jax.vmap(one_coordinate, in_axes=(1, 0, 0, 0))(
            self.observations, self.prior_loc, self.prior_scale, self.noise_scale
        ).sum()


class Banana(NamedTuple):
    """A bent 2-D Gaussian; ``curvature`` :math:`b` bends it, ``scale`` :math:`s` widens it."""

    curvature: ArrayLike = 1.0
    scale: ArrayLike = 1.0

    def __call__(self, z: Array) -> Array:
        z1, z2 = z[..., 0], z[..., 1]
        return dist.Normal(0.0, self.scale).log_prob(z1) + dist.Normal(
            self.curvature * (z1**2 - self.scale**2), 1.0
        ).log_prob(z2)


class Funnel(NamedTuple):
    """Neal's funnel in 2-D: ``z = (v, x)``; the width of :math:`x` is :math:`e^{v/2}`."""

    scale: ArrayLike = 3.0

    def __call__(self, z: Array) -> Array:
        v, x = z[..., 0], z[..., 1]
        return dist.Normal(0.0, self.scale).log_prob(v) + dist.Normal(0.0, jnp.exp(v / 2)).log_prob(
            x
        )


def _numpyro_density(model, unravel, args, kwargs, u):
    return -potential_energy(model, args, kwargs, unravel(u))


def _latent_sites(model, args, kwargs) -> dict:
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    latent = {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    if not latent:
        raise ValueError("the NumPyro model has no latent sample site (all are observed)")
    return latent


def numpyro_latent_size(model: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """The length d of the flat unconstrained latent vector of :func:`numpyro_log_joint`."""
    latent = _latent_sites(model, args, kwargs)
    return sum(
        int(jnp.size(dist.biject_to(site["fn"].support).inv(site["value"])))
        for site in latent.values()
    )


def numpyro_log_joint(
    model: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Partial, Callable[[Array], dict]]:
    """A NumPyro model as a log-joint over one flat unconstrained vector.

    Parameters
    ----------
    model : callable
        A NumPyro model; its observed sites carry ``obs=``.
    *args, **kwargs
        Its arguments (data). They become traced leaves of the returned target, so a
        jitted optimiser given new data of the same shape does not recompile.

    Returns
    -------
    log_joint : jax.tree_util.Partial
        ``log_joint(u)``, :math:`\\log p(x, T(u)) + \\log|\\det\\partial T(u)|`, for ``u``
        of shape (d,) where d is the total size of the latent sites.
    to_constrained : callable
        ``u -> {site: value}`` on the model's own (constrained) scale.
    """
    latent = _latent_sites(model, args, kwargs)
    unconstrained = {
        name: dist.biject_to(site["fn"].support).inv(site["value"]) for name, site in latent.items()
    }
    _, unravel = ravel_pytree(unconstrained)

    def to_constrained(u: Array) -> dict:
        return {
            name: dist.biject_to(latent[name]["fn"].support)(value)
            for name, value in unravel(u).items()
        }

    density = functools.partial(_numpyro_density, model, unravel)
    return Partial(density, args, kwargs), to_constrained
