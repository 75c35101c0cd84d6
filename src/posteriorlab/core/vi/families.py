r"""Variational families: NamedTuples of unconstrained parameters that sample and score.

Each family is its own parameters (a pytree, so optax updates it and ``jax.grad`` returns
one of the same shape) with two methods:

- ``sample(t, name, sample_shape=())`` draws :math:`z` inside an objective program
  (:mod:`posteriorlab.core.vi.programs`), at one or more sample sites whose names start
  with ``name``;
- ``log_prob(z)`` is :math:`\log q_\phi(z)`, vectorised over leading axes of ``z``.

Parameters live on the real line: scales as their logarithm, a Cholesky factor as an
unconstrained lower triangle whose diagonal is exponentiated.

- :class:`MeanFieldGaussian`: :math:`q = \prod_i \mathcal N(z_i;\ \mu_i, \sigma_i^2)`.
- :class:`FullRankGaussian`: :math:`q = \mathcal N(z;\ \mu, LL^\top)`.
- :class:`GaussianMixture`: :math:`q = \sum_c \pi_c \prod_i \mathcal N(z_i;\ \mu_{ci},
  \sigma_{ci}^2)`. Its draw is two sites: the component ``{name}_component`` (discrete,
  score function by default; enumerate it for an exact sum over components) and the
  point ``name`` (reparameterised given the component). Its density is the exact
  mixture density.
- :class:`HierarchicalGaussian`: an auxiliary-variable family, :math:`u \sim \mathcal
  N(0, I_k)`, :math:`z \mid u \sim \mathcal N(\mu + Wu,\ \mathrm{diag}\,\sigma^2)`. Its
  marginal density is known (:math:`\mathcal N(\mu, WW^\top + \mathrm{diag}\,\sigma^2)`,
  :meth:`HierarchicalGaussian.log_prob`), which makes it the exact check for the
  hierarchical objectives, which only use :math:`q(z\mid u)` and estimate :math:`\log
  q(z)` by inner importance sampling (:func:`sample_with_inner_estimate`).
- :class:`RingGaussian`: another auxiliary-variable family, a Gaussian blurred around a
  circle, :math:`u \sim \mathcal U(0, 1)`, :math:`z \mid u \sim \mathcal N(c +
  \rho(\cos 2\pi u, \sin 2\pi u), \mathrm{diag}\,\sigma^2)`: the family that fits
  the noisy cone's ring posterior (:class:`~posteriorlab.core.vi.exact.NoisyCone`). Its
  marginal density is a one-dimensional integral over the angle, done by quadrature.
- :class:`MeanFieldBeta`: :math:`q = \prod_i \mathrm{Beta}(z_i;\ a_i, b_i)` on
  :math:`(0, 1)^d`, for targets written on the unit interval (a coin's bias). Its draw is
  reparameterised through the Gamma sampler's implicit gradient (NumPyro's ``Beta`` is
  :math:`G_a / (G_a + G_b)` with :math:`G \sim \mathrm{Gamma}`), so ``"reparam"`` is
  available as well as ``"score"``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp

__all__ = [
    "FullRankGaussian",
    "GaussianMixture",
    "HierarchicalGaussian",
    "MeanFieldBeta",
    "MeanFieldGaussian",
    "RING_QUADRATURE_POINTS",
    "RingGaussian",
    "sample_auxiliary_family",
    "sample_with_inner_estimate",
    "stop_gradient",
]


RING_QUADRATURE_POINTS = 512
"""Angles in :meth:`RingGaussian.log_prob`'s quadrature."""


def stop_gradient(family: Any) -> Any:
    """The same family with every parameter cut from the gradient (for sticking the
    landing: score :math:`z` with :math:`\\bot\\phi`)."""
    return jax.tree.map(jax.lax.stop_gradient, family)


class MeanFieldGaussian(NamedTuple):
    """Independent Gaussians.

    Attributes
    ----------
    loc : Array, shape (d,)
        :math:`\\mu`.
    log_scale : Array, shape (d,)
        :math:`\\log\\sigma`.
    """

    loc: Array
    log_scale: Array

    @classmethod
    def standard(cls, dimension: int, scale: float = 1.0) -> "MeanFieldGaussian":
        """:math:`\\mathcal N(0, \\mathrm{scale}^2 I_d)`."""
        return cls(jnp.zeros(dimension), jnp.full(dimension, jnp.log(scale), dtype=float))

    def distribution(self) -> dist.Distribution:
        return dist.Normal(self.loc, jnp.exp(self.log_scale)).to_event(1)

    def sample(self, t, name: str, sample_shape=(), estimator: Any = "reparam") -> Array:
        return t.sample(name, self.distribution(), estimator, sample_shape)

    def log_prob(self, z: Array) -> Array:
        return self.distribution().log_prob(z)


class MeanFieldBeta(NamedTuple):
    """Independent Beta laws on the unit interval.

    Attributes
    ----------
    log_concentration1 : Array, shape (d,)
        :math:`\\log a`, the first shape (pseudo-count of ones).
    log_concentration0 : Array, shape (d,)
        :math:`\\log b`, the second shape (pseudo-count of zeros).
    """

    log_concentration1: Array
    log_concentration0: Array

    @classmethod
    def create(cls, concentration1, concentration0) -> "MeanFieldBeta":
        """From the shapes :math:`a, b > 0` themselves (arrays of shape (d,))."""
        a = jnp.atleast_1d(jnp.asarray(concentration1, dtype=float))
        b = jnp.atleast_1d(jnp.asarray(concentration0, dtype=float))
        if not (bool(jnp.all(a > 0)) and bool(jnp.all(b > 0))):
            raise ValueError(
                f"Beta concentrations must be positive, got a = {a} and b = {b}; pass the "
                "shapes themselves, not their logarithms"
            )
        return cls(jnp.log(a), jnp.log(b))

    def distribution(self) -> dist.Distribution:
        return dist.Beta(
            jnp.exp(self.log_concentration1), jnp.exp(self.log_concentration0)
        ).to_event(1)

    def sample(self, t, name: str, sample_shape=(), estimator: Any = "reparam") -> Array:
        return t.sample(name, self.distribution(), estimator, sample_shape)

    def log_prob(self, z: Array) -> Array:
        return self.distribution().log_prob(z)


class FullRankGaussian(NamedTuple):
    """A Gaussian with a dense covariance :math:`LL^\\top`.

    Attributes
    ----------
    loc : Array, shape (d,)
        :math:`\\mu`.
    raw_scale_tril : Array, shape (d, d)
        Unconstrained: :math:`L` is its strict lower triangle plus the exponential of
        its diagonal.
    """

    loc: Array
    raw_scale_tril: Array

    @classmethod
    def standard(cls, dimension: int, scale: float = 1.0) -> "FullRankGaussian":
        return cls(jnp.zeros(dimension), jnp.eye(dimension) * jnp.log(scale))

    @property
    def scale_tril(self) -> Array:
        raw = self.raw_scale_tril
        return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))

    def distribution(self) -> dist.Distribution:
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)

    def sample(self, t, name: str, sample_shape=(), estimator: Any = "reparam") -> Array:
        return t.sample(name, self.distribution(), estimator, sample_shape)

    def log_prob(self, z: Array) -> Array:
        return self.distribution().log_prob(z)


class GaussianMixture(NamedTuple):
    """A mixture of mean-field Gaussians.

    Attributes
    ----------
    logits : Array, shape (C,)
        Unnormalised log-weights :math:`\\log\\pi_c`.
    locs : Array, shape (C, d)
    log_scales : Array, shape (C, d)
    """

    logits: Array
    locs: Array
    log_scales: Array

    def sample(
        self,
        t,
        name: str,
        sample_shape=(),
        estimator: Any = "reparam",
        component_estimator: Any = "score",
    ) -> Array:
        component = t.sample(
            f"{name}_component",
            dist.Categorical(logits=self.logits),
            component_estimator,
            sample_shape,
        )
        point = dist.Normal(self.locs[component], jnp.exp(self.log_scales[component]))
        return t.sample(name, point.to_event(1), estimator)

    def log_prob(self, z: Array) -> Array:
        components = dist.Normal(self.locs, jnp.exp(self.log_scales)).to_event(1)
        log_weights = jax.nn.log_softmax(self.logits)
        return logsumexp(log_weights + components.log_prob(z[..., None, :]), axis=-1)


def sample_with_inner_estimate(
    family: Any, t, name: str, sample_shape=(), num_inner: int = 1, estimator: Any = "reparam"
) -> tuple[Array, Array]:
    """Draw :math:`z` from an auxiliary-variable family and estimate :math:`\\log q(z)`.

    The family supplies ``auxiliary()``, the law :math:`q(u)`, and ``conditional(u)``,
    :math:`q(z \\mid u)`. With :math:`u_1 \\sim q(u)` (site ``{name}_aux``), :math:`z \\sim
    q(z\\mid u_1)` (site ``name``) and :math:`u_{2..m} \\sim q(u)` fresh (site
    ``{name}_aux_inner``):

    .. math::

        \\log \\hat q_m(z) = \\log \\frac1m \\Bigl(q(z\\mid u_1) + \\sum_{j=2}^m
        q(z \\mid u_j)\\Bigr).

    Given :math:`z`, :math:`u_1` is a draw from :math:`q(u\\mid z)`, so this is importance
    sampling of :math:`q(z) = \\int q(z\\mid u) q(u)\\,du` with the prior :math:`q(u)` as
    the proposal of every :math:`u_j` but the first. :math:`\\mathbb E[\\log\\hat q_m(z)]
    \\ge \\log q(z)` and it decreases in :math:`m` towards :math:`\\log q(z)` (Sobolev &
    Vetrov, 2019), so subtracting it keeps a lower bound a lower bound. ``num_inner = 1``
    gives :math:`\\log q(z\\mid u_1)`, the HVI estimate with the prior as reverse model.
    """
    if not isinstance(num_inner, int) or num_inner < 1:
        raise ValueError(f"num_inner must be a positive integer, got {num_inner!r}")
    sample_shape = tuple(sample_shape)
    u = t.sample(f"{name}_aux", family.auxiliary(), estimator, sample_shape)
    z = t.sample(name, family.conditional(u), estimator)
    log_q = family.conditional(u).log_prob(z)[..., None]
    if num_inner > 1:
        u_inner = t.sample(
            f"{name}_aux_inner", family.auxiliary(), estimator, (num_inner - 1, *sample_shape)
        )
        log_q_inner = jnp.moveaxis(family.conditional(u_inner).log_prob(z), 0, -1)
        log_q = jnp.concatenate([log_q, log_q_inner], axis=-1)
    return z, logsumexp(log_q, axis=-1) - jnp.log(num_inner)


def sample_auxiliary_family(
    family: Any, t, name: str, sample_shape=(), estimator: Any = "reparam"
) -> Array:
    """Draw :math:`z` from an auxiliary-variable family (the angle or :math:`u` first)."""
    return sample_with_inner_estimate(family, t, name, sample_shape, 1, estimator)[0]


class HierarchicalGaussian(NamedTuple):
    """:math:`u \\sim \\mathcal N(0, I_k)`, :math:`z \\mid u \\sim \\mathcal N(\\mu + W u,
    \\mathrm{diag}\\,\\sigma^2)`.

    Attributes
    ----------
    loc : Array, shape (d,)
    weights : Array, shape (d, k)
        :math:`W`.
    log_scale : Array, shape (d,)
        :math:`\\log\\sigma` of :math:`z` given :math:`u`.
    """

    loc: Array
    weights: Array
    log_scale: Array

    @classmethod
    def standard(cls, dimension: int, auxiliary_dimension: int = 1, spread: float = 0.5):
        """:math:`\\mu = 0`, :math:`\\sigma = 1`, and :math:`W` with columns
        ``spread`` times the first coordinate axes (so the start is not a saddle point at
        :math:`W = 0`, where the gradient in :math:`W` vanishes)."""
        weights = spread * jnp.eye(dimension, auxiliary_dimension)
        return cls(jnp.zeros(dimension), weights, jnp.zeros(dimension))

    def auxiliary(self) -> dist.Distribution:
        """:math:`q(u) = \\mathcal N(0, I_k)`."""
        return dist.Normal(jnp.zeros(self.weights.shape[1]), 1.0).to_event(1)

    def conditional(self, u: Array) -> dist.Distribution:
        """:math:`q(z \\mid u)`, batched over leading axes of ``u``."""
        return dist.Normal(self.loc + u @ self.weights.T, jnp.exp(self.log_scale)).to_event(1)

    sample = sample_auxiliary_family
    sample_with_log_prob_estimate = sample_with_inner_estimate

    def marginal(self) -> dist.Distribution:
        covariance = self.weights @ self.weights.T + jnp.diag(jnp.exp(2 * self.log_scale))
        return dist.MultivariateNormal(self.loc, covariance_matrix=covariance)

    def log_prob(self, z: Array) -> Array:
        """The exact marginal :math:`\\log q(z)` (the objectives do not use it)."""
        return self.marginal().log_prob(z)


class RingGaussian(NamedTuple):
    """A ring: :math:`u \\sim \\mathcal U(0, 1)`, :math:`\\theta = 2\\pi u`,
    :math:`z \\mid u \\sim \\mathcal N\\bigl(c + \\rho(\\cos\\theta, \\sin\\theta),\\
    \\mathrm{diag}\\,\\sigma^2\\bigr)` in two dimensions.

    The expressive family of the noisy-cone experiment (Table 4 of the programmable-VI
    paper, where :math:`c = 0` and :math:`\\rho = \\sqrt{o}` are fixed and only
    :math:`\\log\\sigma` is learnt). The auxiliary angle is what the hierarchical
    objectives marginalise by inner importance sampling; :meth:`log_prob` integrates it
    out by quadrature instead, for pictures and the ELBO of the marginal.

    Attributes
    ----------
    centre : Array, shape (2,)
        :math:`c`.
    log_radius : Array, shape ()
        :math:`\\log\\rho`.
    log_scale : Array, shape (2,)
        :math:`\\log\\sigma` of :math:`z` given the angle.
    """

    centre: Array
    log_radius: Array
    log_scale: Array

    @classmethod
    def create(cls, radius=1.0, scale=1.0, centre=(0.0, 0.0)) -> "RingGaussian":
        return cls(
            jnp.asarray(centre, float),
            jnp.log(jnp.asarray(radius, float)),
            jnp.log(jnp.broadcast_to(jnp.asarray(scale, float), (2,))),
        )

    def auxiliary(self) -> dist.Distribution:
        """:math:`q(u) = \\mathcal U(0, 1)`."""
        return dist.Uniform(jnp.zeros(()), 1.0)

    def _point_on_ring(self, u: Array) -> Array:
        angle = 2 * jnp.pi * u
        direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
        return self.centre + jnp.exp(self.log_radius) * direction

    def conditional(self, u: Array) -> dist.Distribution:
        """:math:`q(z \\mid u)`, batched over the axes of ``u``."""
        return dist.Normal(self._point_on_ring(u), jnp.exp(self.log_scale)).to_event(1)

    sample = sample_auxiliary_family
    sample_with_log_prob_estimate = sample_with_inner_estimate

    def log_prob(self, z: Array) -> Array:
        """:math:`\\log q(z) = \\log\\int_0^1 q(z\\mid u)\\,du` by the trapezoid rule on
        :data:`RING_QUADRATURE_POINTS` angles (periodic integrand: the error falls like
        :math:`\\exp(-2\\pi^2 (J\\sigma / 2\\pi\\rho)^2)`, negligible once the node
        spacing :math:`2\\pi\\rho/J` is below :math:`\\sigma`).

        Expanding the square, :math:`\\log q(z \\mid \\theta_j) = a(z) + b(z)^\\top
        e(\\theta_j) + c_j` with :math:`w = (z - c)/\\sigma^2` (elementwise),
        :math:`a = -\\tfrac12\\sum_i (z_i - c_i)^2/\\sigma_i^2 - \\log 2\\pi\\sigma_1\\sigma_2`,
        :math:`b = \\rho w` and :math:`c_j = -\\tfrac12\\rho^2\\sum_i e_i(\\theta_j)^2/
        \\sigma_i^2`: one matrix product over all points and angles (a 200 × 200 grid
        takes milliseconds)."""
        angles = 2 * jnp.pi * jnp.arange(RING_QUADRATURE_POINTS) / RING_QUADRATURE_POINTS
        directions = jnp.stack([jnp.cos(angles), jnp.sin(angles)])  # (2, J)
        radius, precision = jnp.exp(self.log_radius), jnp.exp(-2 * self.log_scale)
        offset = z - self.centre
        constant = -0.5 * jnp.sum(offset**2 * precision, axis=-1) - (
            jnp.log(2 * jnp.pi) + jnp.sum(self.log_scale)
        )
        per_angle = radius * (offset * precision) @ directions - 0.5 * radius**2 * (
            precision @ directions**2
        )
        return constant + logsumexp(per_angle, axis=-1) - jnp.log(RING_QUADRATURE_POINTS)
