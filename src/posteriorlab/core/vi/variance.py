r"""How noisy is a gradient estimator? Mean, variance and signal-to-noise ratio per parameter.

For the current parameters :math:`\phi`, draw :math:`N` independent gradient estimates
:math:`g_1, \dots, g_N` (flattened to vectors) and report, per coordinate,

.. math::

    \bar g = \frac1N\sum_n g_n, \qquad
    s^2 = \frac{1}{N-1}\sum_n (g_n - \bar g)^2, \qquad
    \mathrm{SNR} = \frac{|\bar g|}{s}.

Every estimator of the same objective has the same mean (they are all unbiased), so
the variance is what tells them apart. :func:`compare_estimators` uses the same keys
for every estimator choice (common random numbers: a site seeded by the same key draws
the same noise whether it is reparameterised or scored), so differences between
estimators are not drowned by differences between draws.
"""

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.flatten_util import ravel_pytree

from posteriorlab.core.vi import programs

__all__ = ["GradientStatistics", "compare_estimators", "gradient_statistics"]


class GradientStatistics(NamedTuple):
    """Per-coordinate moments of a gradient estimator (coordinates of ``ravel_pytree``).

    Attributes
    ----------
    mean, variance, snr : Array, shape (P,)
    value_mean : Array, shape ()
        Mean of the objective's value over the same draws.
    """

    mean: Array
    variance: Array
    snr: Array
    value_mean: Array


@partial(jax.jit, static_argnames=("program", "num_samples"))
def gradient_statistics(
    key: Array,
    program: Callable[..., Array],
    params: Any,
    args: tuple = (),
    *,
    estimators: Mapping[str, Any] | None = None,
    num_samples: int = 1000,
) -> GradientStatistics:
    """Moments of ``grad_estimate(program, key_n, params, *args)`` over ``num_samples`` keys."""
    if num_samples < 2:
        raise ValueError(
            f"num_samples must be at least 2 to estimate a variance, got {num_samples}"
        )

    def one(k):
        value, gradient = programs.grad_estimate(program, k, params, *args, estimators=estimators)
        return value, ravel_pytree(gradient)[0]

    values, grads = jax.vmap(one)(jax.random.split(key, num_samples))
    mean = grads.mean(0)
    variance = grads.var(0, ddof=1)
    snr = jnp.abs(mean) / jnp.sqrt(variance)
    return GradientStatistics(mean, variance, snr, values.mean())


def compare_estimators(
    key: Array,
    program: Callable[..., Array],
    params: Any,
    args: tuple = (),
    *,
    choices: Mapping[str, Mapping[str, Any]],
    num_samples: int = 1000,
) -> dict[str, GradientStatistics]:
    """:func:`gradient_statistics` for each labelled estimator mapping, on the same keys."""
    return {
        label: gradient_statistics(
            key, program, params, args, estimators=estimators, num_samples=num_samples
        )
        for label, estimators in choices.items()
    }
