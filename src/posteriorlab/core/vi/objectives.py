r"""Variational objectives, each a short program in the language of
:mod:`posteriorlab.core.vi.programs`.

Every objective has the signature ``objective(t, family, log_joint, ...)``: ``t`` is the
running trace, ``family`` the variational parameters (:mod:`~posteriorlab.core.vi.families`),
``log_joint`` the target (:mod:`~posteriorlab.core.vi.models`). It returns one Monte
Carlo sample of a quantity to **maximise**; the ``neg_*`` functions wrap one for an
optimiser: ``(loss, loss_surrogate) = -(value, surrogate)``. Shape settings (particle
counts) are keyword-only and compile once per value; continuous ones (:math:`\alpha`)
are positional and traced.

With importance weights :math:`\log w_k = \log p(x, z_k) - \log q(z_k)`, :math:`z_k
\sim q` i.i.d.:

- ELBO, :math:`\mathbb E[\log w_1]`. With ``stick_the_landing`` the density of
  :math:`q` is evaluated with its parameters cut from the gradient (Roeder et al., 2017):
  same value, and a gradient whose variance vanishes when :math:`q` is the posterior.
- IWAE(K), :math:`\mathbb E[\log \frac1K \sum_k w_k]`: increases with :math:`K` to
  :math:`\log p(x)`; :math:`K = 1` is the ELBO.
- Rényi-:math:`\alpha` (VR bound, Li & Turner 2016), :math:`\mathbb E[\frac{1}{1-\alpha}
  \log \frac1K \sum_k w_k^{1-\alpha}]`: :math:`\alpha = 0` is IWAE, :math:`\alpha \to 1`
  the ELBO.
- HVI, IWHVI(m), DIWHVI(n, m) for auxiliary-variable families: replace :math:`\log q(z)`
  by the inner estimate :math:`\log\hat q_m(z)` (see
  :func:`~posteriorlab.core.vi.families.sample_with_inner_estimate`);
  :math:`\mathrm{DIWHVI}(n, m) = \mathbb E[\log\frac1n\sum_i p(x, z_i)/\hat q_m(z_i)]`,
  HVI is :math:`(1, 1)`, IWHVI(m) is :math:`(1, m)`. Orderings: HVI :math:`\le`
  IWHVI(m) :math:`\le` IWHVI(m+1) :math:`\le` ELBO of the marginal :math:`q`.
- Reweighted wake-sleep with :math:`K` particles and self-normalised weights
  :math:`\bar w_k = w_k / \sum_j w_j` held fixed: wake-q returns :math:`\sum_k \bar w_k
  \log q(z_k)`, an estimate of :math:`\mathbb E_{p(z\mid x)}[\log q(z)]` (maximising it
  minimises :math:`\mathrm{KL}(p \,\|\, q)`); wake-p returns :math:`\sum_k \bar w_k \log
  p(x, z_k)`, whose gradient in the model's parameters estimates the score
  :math:`\nabla\log p(x)` (Fisher's identity). Their draws are held fixed: these are
  self-normalised (consistent, biased for finite :math:`K`) estimators, not bounds.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from posteriorlab.core.vi import families as _families

__all__ = [
    "diwhvi",
    "elbo",
    "hvi",
    "iwae",
    "iwhvi",
    "log_weights",
    "neg_diwhvi",
    "neg_elbo",
    "neg_iwae",
    "neg_renyi",
    "negated",
    "renyi",
    "wake_p",
    "wake_q",
]


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def log_weights(t, family, log_joint, num_particles: int, name: str = "z") -> Array:
    """:math:`\\log w_k = \\log p(x, z_k) - \\log q(z_k)` for :math:`K` draws at site
    ``name``; shape (K,)."""
    _check_count("num_particles", num_particles)
    z = family.sample(t, name, (num_particles,))
    return jax.vmap(log_joint)(z) - family.log_prob(z)


def elbo(t, family, log_joint, *, stick_the_landing: bool = False) -> Array:
    """One sample of the ELBO, :math:`\\log p(x, z) - \\log q(z)`, :math:`z \\sim q`."""
    z = family.sample(t, "z")
    scorer = _families.stop_gradient(family) if stick_the_landing else family
    return log_joint(z) - scorer.log_prob(z)


def iwae(t, family, log_joint, *, num_particles: int) -> Array:
    """One sample of the importance-weighted bound, :math:`\\log\\frac1K\\sum_k w_k`."""
    lw = log_weights(t, family, log_joint, num_particles)
    return logsumexp(lw) - jnp.log(num_particles)


def renyi(t, family, log_joint, alpha: ArrayLike, *, num_particles: int) -> Array:
    """One sample of the Rényi bound :math:`\\frac{1}{1-\\alpha}\\log\\frac1K\\sum_k
    w_k^{1-\\alpha}`; at :math:`\\alpha = 1` the mean of :math:`\\log w_k` (the ELBO)."""
    lw = log_weights(t, family, log_joint, num_particles)
    one_minus_alpha = 1.0 - jnp.asarray(alpha, dtype=lw.dtype)
    near_one = jnp.abs(one_minus_alpha) < 1e-6
    safe = jnp.where(near_one, 1.0, one_minus_alpha)
    tilted = (logsumexp(safe * lw) - jnp.log(num_particles)) / safe
    return jnp.where(near_one, lw.mean(), tilted)


def diwhvi(t, family, log_joint, *, num_outer: int, num_inner: int) -> Array:
    """One sample of DIWHVI(n, m): :math:`\\log\\frac1n\\sum_i p(x, z_i)/\\hat q_m(z_i)`.

    ``family`` needs ``sample_with_log_prob_estimate`` (an auxiliary-variable family).
    """
    _check_count("num_outer", num_outer)
    z, log_q = family.sample_with_log_prob_estimate(t, "z", (num_outer,), num_inner)
    lw = jax.vmap(log_joint)(z) - log_q
    return logsumexp(lw) - jnp.log(num_outer)


def hvi(t, family, log_joint) -> Array:
    """One sample of HVI: :math:`\\log p(x, z) - \\log q(z \\mid u)`, reverse model
    :math:`q(u)`."""
    return diwhvi(t, family, log_joint, num_outer=1, num_inner=1)


def iwhvi(t, family, log_joint, *, num_inner: int) -> Array:
    """One sample of IWHVI(m): :math:`\\log p(x, z) - \\log\\hat q_m(z)`."""
    return diwhvi(t, family, log_joint, num_outer=1, num_inner=num_inner)


def _fixed_draws_and_weights(t, family, log_joint, num_particles):
    _check_count("num_particles", num_particles)
    z = jax.lax.stop_gradient(family.sample(t, "z", (num_particles,)))
    log_p = jax.vmap(log_joint)(z)
    log_q = family.log_prob(z)
    weights = jax.nn.softmax(jax.lax.stop_gradient(log_p - log_q))
    return weights, log_p, log_q


def wake_q(t, family, log_joint, *, num_particles: int) -> Array:
    """Reweighted wake-sleep, q-update: :math:`\\sum_k \\bar w_k \\log q(z_k)`."""
    weights, _, log_q = _fixed_draws_and_weights(t, family, log_joint, num_particles)
    return jnp.sum(weights * log_q)


def wake_p(t, family, log_joint, *, num_particles: int) -> Array:
    """Reweighted wake-sleep, p-update: :math:`\\sum_k \\bar w_k \\log p(x, z_k)`;
    differentiate it in the parameters of ``log_joint``."""
    weights, log_p, _ = _fixed_draws_and_weights(t, family, log_joint, num_particles)
    return jnp.sum(weights * log_p)


def negated(objective):
    """The loss program :math:`-\\text{objective}` (value and surrogate both negated)."""

    def loss(t, *args, **kwargs):
        return -objective(t, *args, **kwargs)

    loss.__name__ = f"neg_{objective.__name__}"
    loss.__doc__ = f"The negative of :func:`{objective.__name__}`, a loss to minimise."
    return loss


neg_elbo = negated(elbo)
neg_iwae = negated(iwae)
neg_renyi = negated(renyi)
neg_diwhvi = negated(diwhvi)
