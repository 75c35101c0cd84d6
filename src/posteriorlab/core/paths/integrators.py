r"""Fixed-budget integrators that carry noise to data along a velocity field.

A velocity field :math:`u_t(x)` whose marginals are :math:`p_t` generates samples of
the data by solving the *probability-flow ODE*

.. math::

    \frac{\mathrm{d}X_t}{\mathrm{d}t} = u_t(X_t), \qquad X_0 \sim p_0,

from :math:`t = 0` to :math:`t = 1`. The same marginals are shared by a whole family of
SDEs, one for each diffusion level :math:`\varepsilon(t) \ge 0`:

.. math::

    \mathrm{d}X_t = \left[u_t(X_t) + \varepsilon(t)\, \nabla\log p_t(X_t)\right]\mathrm{d}t
                  + \sqrt{2\varepsilon(t)}\; \mathrm{d}W_t ,

because the extra drift :math:`\varepsilon\nabla\log p_t` moves probability exactly as
much as the noise :math:`\sqrt{2\varepsilon}\,\mathrm{d}W` spreads it (the Fokker--Planck
terms :math:`-\nabla\cdot(p\,\varepsilon\nabla\log p) + \varepsilon\Delta p` cancel). In
the diffusion-model notation :math:`g_t^2 = 2\varepsilon(t)`. With exact fields every
:math:`\varepsilon` gives exact samples in the limit of small steps; with a fixed step
budget each integrator has its own bias, and that bias is what the paths lab shows.

The solvers, each spending a fixed number of field evaluations per step:

* :func:`euler` -- one evaluation, error :math:`O(h)`;
* :func:`heun` -- two (Euler predictor, trapezoidal corrector), error :math:`O(h^2)`;
* :func:`rk4` -- four (classical Runge--Kutta), error :math:`O(h^4)`;
* :func:`euler_maruyama` -- the SDE above, one evaluation of velocity and score.

All take a field as a plain function ``(t, x) -> array`` of points ``x`` of shape
``(n, d)``, and a time grid. They run as one ``jax.lax.scan`` and return the whole
trajectory, shape ``(steps + 1, n, d)``, so a dashboard can draw it. The number of steps
is a shape and compiles once per value; the field's parameters, closed over by the
caller inside ``jit``, are traced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Field = Callable[[jax.Array, jax.Array], jax.Array]


def uniform_times(num_steps: int, dtype=None) -> jax.Array:
    """``num_steps + 1`` equally spaced times from 0 to 1."""
    return jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype or jnp.result_type(float))


def _integrate(step, x0, times):
    def advance(x, interval):
        t, t_next = interval
        x_next = step(t, t_next - t, x)
        return x_next, x_next

    _, path = jax.lax.scan(advance, x0, (times[:-1], times[1:]))
    return jnp.concatenate([x0[None], path], axis=0)


def _euler_step(velocity: Field, t, h, x):
    return x + h * velocity(t, x)


def _heun_step(velocity: Field, t, h, x):
    slope = velocity(t, x)
    predicted = x + h * slope
    return x + 0.5 * h * (slope + velocity(t + h, predicted))


def _rk4_step(velocity: Field, t, h, x):
    k1 = velocity(t, x)
    k2 = velocity(t + 0.5 * h, x + 0.5 * h * k1)
    k3 = velocity(t + 0.5 * h, x + 0.5 * h * k2)
    k4 = velocity(t + h, x + h * k3)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


_STEPS = {"euler": _euler_step, "heun": _heun_step, "rk4": _rk4_step}


def euler(velocity: Field, x0, times) -> jax.Array:
    r"""Euler's method, :math:`x_{k+1} = x_k + h\, u_{t_k}(x_k)`.

    Returns the trajectory, shape ``(len(times), *x0.shape)``.
    """
    return _integrate(functools.partial(_euler_step, velocity), x0, times)


def heun(velocity: Field, x0, times) -> jax.Array:
    r"""Heun's method: an Euler predictor :math:`\tilde x = x_k + h u_{t_k}(x_k)`, then
    the trapezoid :math:`x_{k+1} = x_k + \tfrac h2 [u_{t_k}(x_k) + u_{t_{k+1}}(\tilde x)]`."""
    return _integrate(functools.partial(_heun_step, velocity), x0, times)


def rk4(velocity: Field, x0, times) -> jax.Array:
    r"""The classical fourth-order Runge--Kutta method (four evaluations per step)."""
    return _integrate(functools.partial(_rk4_step, velocity), x0, times)


ODE_SOLVERS = {"euler": euler, "heun": heun, "rk4": rk4}
"""The probability-flow ODE solvers by name, with their evaluations per step below."""

EVALUATIONS_PER_STEP = {"euler": 1, "heun": 2, "rk4": 4, "euler_maruyama": 1}


def endpoint(solver: str, velocity: Field, x0, num_steps) -> jax.Array:
    """Where ``solver`` carries ``x0`` in ``num_steps`` equal steps from t = 0 to 1.

    Only the end point is kept, so ``num_steps`` may be a traced integer: comparing step
    budgets then needs one compiled program, not one per budget.
    """
    h = 1.0 / num_steps
    step = _STEPS[solver]

    def advance(k, x):
        return step(velocity, k * h, h, x)

    return jax.lax.fori_loop(0, num_steps, advance, x0)


def euler_maruyama(
    key: jax.Array,
    velocity_and_score: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    diffusion: Callable[[jax.Array], jax.Array],
    x0,
    times,
) -> jax.Array:
    r"""Euler--Maruyama for the same-marginals SDE,

    .. math::

        x_{k+1} = x_k + h\,[u_{t_k}(x_k) + \varepsilon(t_k)\, s_{t_k}(x_k)]
                  + \sqrt{2\varepsilon(t_k) h}\;\xi_k,\qquad \xi_k \sim \mathcal{N}(0, I).

    The last step adds no noise (:math:`\varepsilon` is evaluated at the step's start, so
    it only vanishes at the end if :math:`\varepsilon(t)` does); the usual practice of a
    final noise-free step is left to the diffusion schedule, e.g.
    :func:`diffusion_level` with ``shape="noise"``.

    Parameters
    ----------
    key : PRNG key
    velocity_and_score : callable ``(t, x) -> (u_t(x), ∇log p_t(x))``
    diffusion : callable ``t -> ε(t) >= 0``
    x0 : array, shape (n, d)
    times : array, shape (steps + 1,)
    """
    step_keys = jax.random.split(key, times.shape[0] - 1)

    def advance(x, inputs):
        step_key, t, t_next = inputs
        h = t_next - t
        drift_velocity, drift_score = velocity_and_score(t, x)
        level = diffusion(t)
        noise = jax.random.normal(step_key, x.shape, x.dtype)
        x_next = x + h * (drift_velocity + level * drift_score) + jnp.sqrt(2.0 * level * h) * noise
        return x_next, x_next

    _, path = jax.lax.scan(advance, x0, (step_keys, times[:-1], times[1:]))
    return jnp.concatenate([x0[None], path], axis=0)


def diffusion_level(level, shape: str = "constant", sigma=None) -> Callable[[jax.Array], jax.Array]:
    r"""A diffusion level :math:`\varepsilon(t)` for :func:`euler_maruyama`.

    ``shape="constant"`` gives :math:`\varepsilon(t) = \varepsilon`; ``shape="noise"``
    gives :math:`\varepsilon(t) = \varepsilon\,\sigma_t^2`, which fades out as the path
    reaches the data so the last steps sharpen rather than blur (``sigma`` is then the
    schedule's :math:`\sigma_t` as a function of ``t``).
    """
    if shape == "constant":
        return lambda t: level * jnp.ones_like(t)
    if shape == "noise":
        if sigma is None:
            raise ValueError('shape="noise" needs sigma, the schedule\'s sigma_t as a function.')
        return lambda t: level * sigma(t) ** 2
    raise ValueError(f'Unknown diffusion shape {shape!r}; use "constant" or "noise".')
