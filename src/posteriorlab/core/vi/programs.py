r"""Variational objectives as programs, with a gradient estimator chosen at each sample site.

A variational objective is an expectation, :math:`\mathcal L(\phi) = \mathbb E_{v \sim
q_\phi}[f_\phi(v)]`, and we want :math:`\nabla_\phi \mathcal L`. Here an objective is a
*program*: a plain Python function ``program(t, *args)`` that draws random choices with
``t.sample(name, distribution, estimator)`` (``distribution`` is a
:mod:`numpyro.distributions` object), evaluates whatever densities it likes (the model's
log-joint, the family's log-density: ordinary function calls), and returns one Monte
Carlo sample of the integrand :math:`f`, a scalar.

:func:`value_and_surrogate` runs the program and returns two scalars:

- the **value** :math:`V`, an unbiased estimate of :math:`\mathcal L` (the bound a
  student sees on the plot);
- the **surrogate** :math:`S`, equal to :math:`V` in value, whose ``jax.grad`` is an
  unbiased estimate of :math:`\nabla_\phi \mathcal L`.

Sign convention, stated once: programs return quantities to be **maximised** (ELBO,
IWAE, ...). A loss is the negative, named as such (``neg_elbo``); an optimiser minimises
:math:`-S`.

The estimators
--------------
Each site names how the gradient passes through its draw. The choice is made where the
site is written (``estimator=``) and can be overridden by name from outside
(``estimators={"z": Score()}``), so one objective serves every mix.

**Reparameterisation** (:class:`Reparam`). Write :math:`v = g_\phi(\varepsilon)` with
fixed-law noise :math:`\varepsilon`; then :math:`\nabla \mathbb E[f(v)] = \mathbb
E[\nabla_\phi f(g_\phi(\varepsilon))]`. The draw stays a differentiable function of
:math:`\phi` (NumPyro's ``rsample``) and ``jax.grad`` does the rest. Needs a
reparameterisable law and an integrand differentiable along the path.

**Score function / REINFORCE** (:class:`Score`). :math:`\nabla \mathbb E[f] = \mathbb
E[\nabla f + (f - b)\,\nabla \log q_\phi(v)]` for any baseline :math:`b` that does not
depend on :math:`v`. The draw is cut from the graph and the site adds

.. math::

    \bot(V - b)\,\bigl(\log q_\phi(v) - \bot\log q_\phi(v)\bigr)

to the surrogate, where :math:`\bot` is ``stop_gradient``: its value is zero, its
gradient is :math:`(V - b)\nabla\log q_\phi(v)`.

**Enumeration** (:class:`Enumerate`, finite support). :math:`\mathbb E[f] = \sum_v
q_\phi(v) f(v)` exactly. The rest of the program is run once per value :math:`v` and

.. math::

    V = \sum_v q_\phi(v)\, V_v, \qquad S = \sum_v q_\phi(v)\, S_v .

**Measure-valued derivative** (:class:`MeasureValued`, Bernoulli). For :math:`v \sim
\mathrm{Bernoulli}(p)`, :math:`\partial_p \mathbb E[f(v)] = f(1) - f(0)`. Draw
:math:`v`, run the rest of the program at both values, keep the run at :math:`v` and add
the difference:

.. math::

    V = V_v, \qquad S = S_v + (p - \bot p)\,\bot(V_1 - V_0).

Why every mix is unbiased
-------------------------
Read the program from a site to its end: that *rest of the program* has its own value
:math:`V_{\text{rest}}` and surrogate :math:`S_{\text{rest}}`. Each rule above turns an
unbiased pair for the rest into an unbiased pair for the program from the site on
(it is exactly the one-site identity written beside it, applied with the rest as
:math:`f`). By induction from the last site back to the first, any per-site mix gives
:math:`\mathbb E[V] = \mathcal L` and :math:`\mathbb E[\nabla S] = \nabla\mathcal L`.
This is the continuation-passing argument of ADEV (Lew et al., 2023; Becker et al., 2024),
done here by *re-running* the program: at an enumerated or measure-valued site the run
stops, and the program is run again once per value with that site held fixed. Every
other site draws its randomness from ``fold_in(key, name)``, so the re-runs see the same
earlier draws, and later draws are common to the branches (common random numbers: each
branch is still unbiased for its own expectation). Score terms are attached at the
level where their site was first met, so a score site before a branch multiplies the
combined :math:`V`, one after it the branch's own :math:`V_v`.

The cost: :math:`n` enumerated sites in sequence run the program
:math:`\prod_i |\mathrm{supp}_i|` times (exponential); measure-valued sites double it each.
Enumeration and the measure-valued rule are for scalar sites (one coin, one category).
Sites must be met in Python order (not inside ``jax.lax.scan`` or ``vmap``); a batch of
draws is one site with ``sample_shape``.

Recommended import::

    from posteriorlab.core.vi import programs

    def flip(t, p):
        b = t.sample("b", dist.Bernoulli(probs=p), programs.Enumerate())
        return jnp.where(b, 0.0, -p / 2)

    value, surrogate = programs.value_and_surrogate(flip, key, 0.3)
    jax.grad(lambda p: programs.value_and_surrogate(flip, key, p)[1])(0.3)  # -0.2
"""

import zlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "ESTIMATOR_NAMES",
    "Enumerate",
    "MeasureValued",
    "Reparam",
    "Score",
    "Trace",
    "as_estimator",
    "choose",
    "grad_estimate",
    "value_and_surrogate",
]


class Reparam(NamedTuple):
    """Reparameterisation (pathwise) gradient: the draw is a differentiable function of
    the parameters."""


class Score(NamedTuple):
    """Score-function (REINFORCE) gradient with a baseline.

    Attributes
    ----------
    baseline : ArrayLike
        :math:`b`, subtracted from the value that multiplies :math:`\\nabla\\log q(v)`.
        Any :math:`b` that does not depend on the draw keeps the estimator unbiased; a
        good one (about the mean value) lowers its variance. Traced, so changing it does
        not recompile.
    """

    baseline: ArrayLike = 0.0


class Enumerate(NamedTuple):
    """Exact enumeration of a scalar finite-support site (Bernoulli, categorical)."""


class MeasureValued(NamedTuple):
    """Measure-valued derivative of a scalar Bernoulli site: run both values, weight the
    difference."""


ESTIMATOR_NAMES = {
    "reparam": Reparam,
    "score": Score,
    "enum": Enumerate,
    "mvd": MeasureValued,
}
"""Short names accepted wherever an estimator is expected."""

Estimator = Reparam | Score | Enumerate | MeasureValued


def as_estimator(estimator: Any) -> Estimator:
    """An estimator object from itself or its short name (see :data:`ESTIMATOR_NAMES`)."""
    if isinstance(estimator, Reparam | Score | Enumerate | MeasureValued):
        return estimator
    if isinstance(estimator, str) and estimator in ESTIMATOR_NAMES:
        return ESTIMATOR_NAMES[estimator]()
    raise ValueError(
        f"unknown gradient estimator {estimator!r}; use one of {sorted(ESTIMATOR_NAMES)} "
        "or an object Reparam(), Score(baseline), Enumerate(), MeasureValued()"
    )


def choose(**by_site: Any) -> dict[str, Estimator]:
    """A per-site estimator mapping, e.g. ``choose(z="reparam", c=Score(1.0))``.

    The result is a pytree (estimator types are static, baselines are traced), so it can
    be passed to a jitted function.
    """
    return {name: as_estimator(estimator) for name, estimator in by_site.items()}


class _Branch(Exception):
    """Raised by :meth:`Trace.sample` to fork the program at an enumerated or
    measure-valued site."""

    def __init__(self, name, estimator, distribution, draw):
        super().__init__(name)
        self.name, self.estimator, self.distribution, self.draw = (
            name,
            estimator,
            distribution,
            draw,
        )


def _site_key(key: Array, name: str) -> Array:
    return jax.random.fold_in(key, zlib.crc32(name.encode()))


def _is_scalar_site(distribution, sample_shape) -> bool:
    return tuple(sample_shape) == () and distribution.batch_shape == ()


class Trace:
    """What a program sees while it runs: ``t.sample`` and the record of score terms.

    Made by :func:`value_and_surrogate`; a program only calls :meth:`sample`.
    """

    def __init__(self, key: Array, estimators: Mapping[str, Any], fixed: Mapping[str, Array]):
        self._key = key
        self._estimators = estimators
        self._fixed = dict(fixed)
        self._not_yet_met = set(fixed)
        self._names: set[str] = set()
        self.score_terms: list[tuple[Array, Array]] = []

    def sample(
        self,
        name: str,
        distribution: dist.Distribution,
        estimator: Any = "reparam",
        sample_shape: tuple[int, ...] = (),
    ) -> Array:
        """Draw ``distribution.sample(key, sample_shape)`` at the site ``name``.

        Parameters
        ----------
        name : str
            Unique within one run of the program; it seeds the draw and lets
            ``estimators={name: ...}`` override ``estimator``.
        distribution : numpyro.distributions.Distribution
            The law of the draw, typically a variational family's.
        estimator : Reparam, Score, Enumerate, MeasureValued or its short name
            How the gradient passes through this draw (see the module docstring).
        sample_shape : tuple of int
            Independent draws in one site (shares one estimator; one score term).

        Returns
        -------
        Array
            The draw.
        """
        if name in self._names:
            raise ValueError(
                f"sample site {name!r} was met twice in one run of the program; give "
                f"each site its own name (e.g. f'{name}_{{i}}')"
            )
        self._names.add(name)
        estimator = as_estimator(self._estimators.get(name, estimator))
        if name in self._fixed:  # a branch of an enumerated / measure-valued site
            self._not_yet_met.discard(name)
            return self._fixed[name]
        owned = not self._not_yet_met  # met after every fixed site: this level's site
        key = _site_key(self._key, name)
        if isinstance(estimator, Reparam):
            if not distribution.has_rsample:
                raise ValueError(
                    f"site {name!r}: {type(distribution).__name__} cannot be "
                    "reparameterised; choose Score(), Enumerate() or MeasureValued() for it"
                )
            return distribution.rsample(key, sample_shape)
        draw = jax.lax.stop_gradient(distribution.sample(key, sample_shape))
        if isinstance(estimator, Score):
            if owned:
                log_q = jnp.sum(distribution.log_prob(draw))
                self.score_terms.append(
                    (jnp.asarray(estimator.baseline), log_q - jax.lax.stop_gradient(log_q))
                )
            return draw
        if not _is_scalar_site(distribution, sample_shape):
            raise ValueError(
                f"site {name!r}: {type(estimator).__name__} needs a scalar site, got batch "
                f"shape {distribution.batch_shape} and sample_shape {tuple(sample_shape)}; "
                "split it into scalar sites or use Score()"
            )
        if isinstance(estimator, Enumerate) and not distribution.has_enumerate_support:
            raise ValueError(
                f"site {name!r}: {type(distribution).__name__} has no finite support to "
                "enumerate; use Reparam() or Score()"
            )
        if isinstance(estimator, MeasureValued) and not isinstance(
            distribution, dist.BernoulliProbs | dist.BernoulliLogits
        ):
            raise ValueError(
                f"site {name!r}: the measure-valued derivative is implemented for "
                f"Bernoulli sites, got {type(distribution).__name__}; use Enumerate() or "
                "Score()"
            )
        raise _Branch(name, estimator, distribution, draw)


def _run(program, key, args, estimators, fixed) -> tuple[Array, Array]:
    trace = Trace(key, estimators, fixed)
    try:
        value = jnp.asarray(program(trace, *args))
    except _Branch as branch:
        value, surrogate = _combine_branches(program, key, args, estimators, fixed, branch)
    else:
        if value.shape != ():
            raise ValueError(
                f"an objective program must return a scalar, got shape {value.shape}; "
                "sum or average it inside the program"
            )
        surrogate = value
    for baseline, score in trace.score_terms:
        surrogate = surrogate + jax.lax.stop_gradient(value - baseline) * score
    return value, surrogate


def _combine_branches(program, key, args, estimators, fixed, branch):
    distribution = branch.distribution
    if isinstance(branch.estimator, Enumerate):
        support = distribution.enumerate_support(expand=False)
        weights = jnp.exp(distribution.log_prob(support))
        runs = [
            _run(program, key, args, estimators, {**fixed, branch.name: support[i]})
            for i in range(support.shape[0])
        ]
        values = jnp.stack([v for v, _ in runs])
        surrogates = jnp.stack([s for _, s in runs])
        return jnp.sum(weights * values), jnp.sum(weights * surrogates)
    # measure-valued derivative of a Bernoulli site
    draw = branch.draw
    value_0, surrogate_0 = _run(
        program, key, args, estimators, {**fixed, branch.name: jnp.zeros_like(draw)}
    )
    value_1, surrogate_1 = _run(
        program, key, args, estimators, {**fixed, branch.name: jnp.ones_like(draw)}
    )
    is_one = draw == 1
    p = distribution.probs
    value = jnp.where(is_one, value_1, value_0)
    surrogate = jnp.where(is_one, surrogate_1, surrogate_0) + (
        p - jax.lax.stop_gradient(p)
    ) * jax.lax.stop_gradient(value_1 - value_0)
    return value, surrogate


def value_and_surrogate(
    program: Callable[..., ArrayLike],
    key: Array,
    *args: Any,
    estimators: Mapping[str, Any] | None = None,
) -> tuple[Array, Array]:
    """Run an objective program once: its value and its gradient surrogate.

    Parameters
    ----------
    program : callable
        ``program(t, *args) -> scalar``, drawing with ``t.sample``.
    key : jax.random key
        Seeds every site (site ``name`` uses ``fold_in(key, crc32(name))``).
    *args
        Passed to ``program``; differentiate the surrogate with respect to them.
    estimators : mapping of site name to estimator, optional
        Overrides the estimator written at each named site.

    Returns
    -------
    value : Array, shape ()
        Unbiased estimate of the objective :math:`\\mathcal L`.
    surrogate : Array, shape ()
        Equal to ``value``; ``jax.grad`` of it is an unbiased estimate of
        :math:`\\nabla\\mathcal L`.
    """
    return _run(program, key, args, dict(estimators or {}), {})


def grad_estimate(
    program: Callable[..., ArrayLike],
    key: Array,
    params: Any,
    *args: Any,
    estimators: Mapping[str, Any] | None = None,
) -> tuple[Array, Any]:
    """The value and an unbiased estimate of its gradient with respect to ``params``.

    ``program(t, params, *args)``; returns ``(value, gradient)`` with ``gradient`` shaped
    like ``params``.
    """

    def surrogate(p):
        value, s = value_and_surrogate(program, key, p, *args, estimators=estimators)
        return s, value

    gradient, value = jax.grad(surrogate, has_aux=True)(params)
    return value, gradient
