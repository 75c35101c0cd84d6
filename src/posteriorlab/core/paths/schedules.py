r"""Noise schedules: how a Gaussian probability path mixes noise into data.

A Gaussian probability path carries a *source* sample :math:`x_0` (noise, usually
:math:`\mathcal{N}(0, I)`) to a *data* sample :math:`x_1` along

.. math::

    x_t = \sigma_t\, x_0 + \alpha_t\, x_1, \qquad t \in [0, 1],

with time running from noise (:math:`t = 0`) to data (:math:`t = 1`), the convention
of flow matching. The pair of scalar functions :math:`(\alpha_t, \sigma_t)` is the
*schedule*; everything else about the path -- its marginal densities, its velocity
field, its score -- follows from the schedule and the data (see
:mod:`posteriorlab.core.paths.fields`). Most schedules start at
:math:`(\alpha_0, \sigma_0) = (0, 1)` (pure noise) and end at
:math:`(\alpha_1, \sigma_1) = (1, 0)` (pure data).

The signal-to-noise ratio :math:`\rho_t = \alpha_t / \sigma_t` grows from 0 to
:math:`\infty`. Two schedules with the same endpoints describe the same *family* of
noisy distributions visited at different speeds and scales, which is why their
probability-flow ODEs carry a noise sample to the same data point
(:func:`change_schedule` makes the re-timing explicit).

The schedules here
------------------
=====================  ==========================  =============================
schedule               :math:`\alpha_t`            :math:`\sigma_t`
=====================  ==========================  =============================
:class:`CondOT`        :math:`t`                   :math:`1 - t`
:class:`Cosine`        :math:`\sin(\pi t / 2)`     :math:`\cos(\pi t / 2)`
:class:`Polynomial`    :math:`t^n`                 :math:`1 - t^n`
:class:`LinearVP`      :math:`t`                   :math:`\sqrt{1 - t^2}`
:class:`VP`            :math:`e^{-T(t)/2}`         :math:`\sqrt{1 - e^{-T(t)}}`
:class:`VE`            :math:`1`                   :math:`\sigma_{\max}^{1-t}\sigma_{\min}^{t}`
:class:`Tabulated`     spline through a table      spline through a table
=====================  ==========================  =============================

For VP, :math:`T(t) = \tfrac12 (1-t)^2 (\beta_{\max} - \beta_{\min}) + (1-t)\beta_{\min}`
is the integrated noise rate of the variance-preserving diffusion run backwards, so
:math:`\alpha_0 = e^{-T(0)/2}` is small but not zero. VE (variance exploding) keeps the
data at full scale and adds noise of size :math:`\sigma_t`; its start is the data blurred
by :math:`\sigma_{\max}` rather than pure noise. :class:`Tabulated` holds a schedule
computed from data, such as the kinetic-optimal one.

How a schedule is written
-------------------------
Each schedule is a small ``NamedTuple`` (hence a JAX pytree) whose fields are its
continuous parameters -- the exponent :math:`n`, :math:`\beta_{\min}, \beta_{\max}`,
:math:`\sigma_{\min}, \sigma_{\max}`. They are traced arrays under ``jit``, so moving a
schedule slider never recompiles; only a change of *kind* does. Every schedule
gives ``alpha``, ``sigma`` and their time derivatives ``alpha_dot``, ``sigma_dot`` in
closed form (the tests check them against ``jax.jvp``), and :func:`coefficients`
gathers the four at once.

Two schedules have :math:`\dot\sigma_t \to -\infty` at :math:`t = 1` (linear-VP and
VP, where :math:`\sigma_t \propto \sqrt{1-t}`). The velocity only ever needs
:math:`\sigma_t\dot\sigma_t = \tfrac12\, \mathrm{d}\sigma_t^2/\mathrm{d}t`, which is
finite, so :func:`coefficients` evaluates every schedule at
:math:`\min(t, 1 - 10^{-6})` -- a shift far below what any plot or sample can see.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

T_MAX = 1.0 - 1e-6
"""Latest time at which a schedule is evaluated (see the module docstring)."""


class Schedule(Protocol):
    """What every schedule provides: the two coefficients and their time derivatives."""

    def alpha(self, t) -> jax.Array: ...
    def sigma(self, t) -> jax.Array: ...
    def alpha_dot(self, t) -> jax.Array: ...
    def sigma_dot(self, t) -> jax.Array: ...


class PathCoefficients(NamedTuple):
    r""":math:`(\alpha_t, \sigma_t, \dot\alpha_t, \dot\sigma_t)` at one time."""

    alpha: jax.Array
    sigma: jax.Array
    alpha_dot: jax.Array
    sigma_dot: jax.Array


def coefficients(schedule: Schedule, t) -> PathCoefficients:
    r"""Evaluate a schedule and its derivatives at :math:`\min(t, 1 - 10^{-6})`."""
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    t = jnp.where(t > T_MAX, T_MAX, t)  # not jnp.minimum: its gradient is halved at a tie
    return PathCoefficients(
        schedule.alpha(t), schedule.sigma(t), schedule.alpha_dot(t), schedule.sigma_dot(t)
    )


def signal_to_noise(schedule: Schedule, t) -> jax.Array:
    r"""The signal-to-noise ratio :math:`\rho_t = \alpha_t / \sigma_t` (increasing in t)."""
    c = coefficients(schedule, t)
    return c.alpha / c.sigma


# --------------------------------------------------------------------------------------
# The schedules
# --------------------------------------------------------------------------------------


class CondOT(NamedTuple):
    r"""Conditional optimal transport: :math:`\alpha_t = t,\ \sigma_t = 1 - t`.

    Each noise sample moves on a straight line at constant speed towards its data point,
    which is optimal transport *conditionally* on the data point, not for the whole
    distribution.
    """

    def alpha(self, t):
        return t

    def sigma(self, t):
        return 1.0 - t

    def alpha_dot(self, t):
        return jnp.ones_like(t)

    def sigma_dot(self, t):
        return -jnp.ones_like(t)


class Cosine(NamedTuple):
    r"""The cosine schedule: :math:`\alpha_t = \sin(\pi t/2),\ \sigma_t = \cos(\pi t/2)`.

    :math:`\alpha_t^2 + \sigma_t^2 = 1`, so it is variance preserving for data of unit
    variance; on the :math:`(\sigma, \alpha)` plane it is the quarter circle, traversed at
    constant angular speed.
    """

    def alpha(self, t):
        return jnp.sin(0.5 * jnp.pi * t)

    def sigma(self, t):
        return jnp.cos(0.5 * jnp.pi * t)

    def alpha_dot(self, t):
        return 0.5 * jnp.pi * jnp.cos(0.5 * jnp.pi * t)

    def sigma_dot(self, t):
        return -0.5 * jnp.pi * jnp.sin(0.5 * jnp.pi * t)


class Polynomial(NamedTuple):
    r"""Polynomial schedule :math:`\alpha_t = t^n,\ \sigma_t = 1 - t^n`, ``exponent`` :math:`n > 0`.

    :math:`n = 1` is :class:`CondOT`. For :math:`n < 1`, :math:`\dot\alpha_t \sim t^{n-1}`
    is infinite at :math:`t = 0` and so is the kinetic energy of the path.
    """

    exponent: jax.Array = 2.0

    def alpha(self, t):
        return t**self.exponent

    def sigma(self, t):
        return 1.0 - t**self.exponent

    def alpha_dot(self, t):
        return self.exponent * t ** (self.exponent - 1.0)

    def sigma_dot(self, t):
        return -self.alpha_dot(t)


class LinearVP(NamedTuple):
    r"""Linear variance preserving: :math:`\alpha_t = t,\ \sigma_t = \sqrt{1 - t^2}`."""

    def alpha(self, t):
        return t

    def sigma(self, t):
        return jnp.sqrt(1.0 - t**2)

    def alpha_dot(self, t):
        return jnp.ones_like(t)

    def sigma_dot(self, t):
        return -t / jnp.sqrt(1.0 - t**2)


class VP(NamedTuple):
    r"""Variance preserving (the DDPM / score-SDE schedule) in flow-matching time.

    .. math::

        T(t) = \tfrac12 (1-t)^2 (\beta_{\max} - \beta_{\min}) + (1-t)\,\beta_{\min},\qquad
        \alpha_t = e^{-T/2},\qquad \sigma_t = \sqrt{1 - e^{-T}},

    so that :math:`\alpha_t^2 + \sigma_t^2 = 1`, with
    :math:`\dot T = -(1-t)(\beta_{\max} - \beta_{\min}) - \beta_{\min}`,
    :math:`\dot\alpha = -\tfrac12 \dot T \alpha` and
    :math:`\dot\sigma = \tfrac12 \dot T e^{-T} / \sigma`.
    """

    beta_min: jax.Array = 0.1
    beta_max: jax.Array = 20.0

    def _integrated_rate(self, t):
        s = 1.0 - t
        return 0.5 * s**2 * (self.beta_max - self.beta_min) + s * self.beta_min

    def _integrated_rate_dot(self, t):
        return -(1.0 - t) * (self.beta_max - self.beta_min) - self.beta_min

    def alpha(self, t):
        return jnp.exp(-0.5 * self._integrated_rate(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(-self._integrated_rate(t)))

    def alpha_dot(self, t):
        return -0.5 * self._integrated_rate_dot(t) * self.alpha(t)

    def sigma_dot(self, t):
        rate = self._integrated_rate(t)
        return 0.5 * self._integrated_rate_dot(t) * jnp.exp(-rate) / self.sigma(t)


class VE(NamedTuple):
    r"""Variance exploding: :math:`\alpha_t = 1,\ \sigma_t = \sigma_{\max}^{1-t}\sigma_{\min}^{t}`.

    The data is never scaled down; noise of geometric size is added instead. The path
    starts at the data blurred by :math:`\sigma_{\max}`, not at pure noise, so samplers
    must start from that blurred distribution (for a mixture it is known exactly).
    """

    sigma_min: jax.Array = 0.01
    sigma_max: jax.Array = 10.0

    def alpha(self, t):
        return jnp.ones_like(t)

    def sigma(self, t):
        return self.sigma_max ** (1.0 - t) * self.sigma_min**t

    def alpha_dot(self, t):
        return jnp.zeros_like(t)

    def sigma_dot(self, t):
        return self.sigma(t) * jnp.log(self.sigma_min / self.sigma_max)


class Tabulated(NamedTuple):
    r"""A schedule given by a table, read with cubic Hermite interpolation.

    ``times`` ``(G,)`` is an increasing grid on :math:`[0, 1]`; ``alphas``, ``sigmas``
    are the values there and ``alpha_slopes``, ``sigma_slopes`` the derivatives. Between
    grid points each coefficient is the cubic that matches the two values and two
    slopes, so the schedule is continuously differentiable and ``alpha_dot`` is the exact
    derivative of ``alpha``. Used for schedules computed from data, such as the
    kinetic-optimal one (:mod:`posteriorlab.core.paths.kinetic`).
    """

    times: jax.Array
    alphas: jax.Array
    sigmas: jax.Array
    alpha_slopes: jax.Array
    sigma_slopes: jax.Array

    def alpha(self, t):
        return _hermite(self.times, self.alphas, self.alpha_slopes, t)[0]

    def sigma(self, t):
        return _hermite(self.times, self.sigmas, self.sigma_slopes, t)[0]

    def alpha_dot(self, t):
        return _hermite(self.times, self.alphas, self.alpha_slopes, t)[1]

    def sigma_dot(self, t):
        return _hermite(self.times, self.sigmas, self.sigma_slopes, t)[1]


def _hermite(knots, values, slopes, t):
    """Cubic Hermite interpolation: value and derivative at ``t`` (any shape)."""
    index = jnp.clip(jnp.searchsorted(knots, t, side="right") - 1, 0, knots.shape[0] - 2)
    left, right = knots[index], knots[index + 1]
    width = right - left
    u = (t - left) / width
    v0, v1 = values[index], values[index + 1]
    m0, m1 = slopes[index] * width, slopes[index + 1] * width
    # The four Hermite basis cubics and their derivatives in u.
    h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
    h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
    d00, d10 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1
    d01, d11 = -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
    value = h00 * v0 + h10 * m0 + h01 * v1 + h11 * m1
    derivative = (d00 * v0 + d10 * m0 + d01 * v1 + d11 * m1) / width
    return value, derivative


class Switchable(NamedTuple):
    r"""Every schedule kind in one pytree, chosen by a traced index.

    A dashboard that lets the student switch between schedules would compile a new
    program for each kind, because each kind is a different pytree. Holding the
    parameters of all kinds side by side and choosing among them with
    ``jax.lax.switch`` on a traced ``kind`` makes the switch as cheap as moving a slider.
    Under ``jax.vmap`` over ``kind`` (comparing all schedules at once) the switch becomes
    a select that evaluates every kind, which is what a comparison needs anyway.

    ``kind`` indexes :data:`SWITCHABLE_KINDS`.
    """

    kind: jax.Array
    polynomial: Polynomial
    vp: VP
    ve: VE
    table: Tabulated

    def _members(self):
        return (CondOT(), Cosine(), self.polynomial, LinearVP(), self.vp, self.ve, self.table)

    def _switch(self, method, t):
        return jax.lax.switch(self.kind, [getattr(m, method) for m in self._members()], t)

    def alpha(self, t):
        return self._switch("alpha", t)

    def sigma(self, t):
        return self._switch("sigma", t)

    def alpha_dot(self, t):
        return self._switch("alpha_dot", t)

    def sigma_dot(self, t):
        return self._switch("sigma_dot", t)


SWITCHABLE_KINDS = ("condot", "cosine", "polynomial", "linear_vp", "vp", "ve", "tabulated")
"""The order of the schedule kinds inside :class:`Switchable`."""


# --------------------------------------------------------------------------------------
# Changing schedule: the same transport, re-timed and re-scaled
# --------------------------------------------------------------------------------------


def snr_inverse(schedule: Schedule, snr, *, iterations: int = 60) -> jax.Array:
    r"""The time :math:`t` at which :math:`\alpha_t / \sigma_t` equals ``snr``.

    The signal-to-noise ratio is increasing in :math:`t` for every schedule here, so
    bisection on :math:`[0, 1]` finds it; 60 halvings reach machine precision. Bisection
    works for every schedule, tabulated ones included, with no closed-form inverse.
    """
    snr = jnp.asarray(snr, dtype=jnp.result_type(float))

    def halve(bracket, _):
        low, high = bracket
        middle = 0.5 * (low + high)
        below = signal_to_noise(schedule, middle) < snr
        return (jnp.where(below, middle, low), jnp.where(below, high, middle)), None

    (low, high), _ = jax.lax.scan(
        halve, (jnp.zeros_like(snr), jnp.ones_like(snr)), None, length=iterations
    )
    return 0.5 * (low + high)


def change_schedule(velocity, old: Schedule, new: Schedule):
    r"""Turn a velocity field of one schedule into the velocity field of another.

    If :math:`u_t` transports along the path :math:`x_t = \sigma_t x_0 + \alpha_t x_1`,
    the path of a new schedule :math:`(\bar\alpha_r, \bar\sigma_r)` is the old one
    re-timed and re-scaled, :math:`\bar x_r = s_r\, x_{t_r}`, with

    .. math::

        t_r = \rho^{-1}(\bar\rho_r), \qquad s_r = \bar\sigma_r / \sigma_{t_r},
        \qquad
        \bar u_r(x) = \frac{\dot s_r}{s_r}\, x + s_r\, \dot t_r\, u_{t_r}(x / s_r),

    where :math:`\rho = \alpha/\sigma` is the signal-to-noise ratio,
    :math:`\dot t_r = \dfrac{\sigma_{t_r}^2(\bar\sigma_r\dot{\bar\alpha}_r
    - \bar\alpha_r\dot{\bar\sigma}_r)}{\bar\sigma_r^2(\sigma_{t_r}\dot\alpha_{t_r}
    - \alpha_{t_r}\dot\sigma_{t_r})}` (the chain rule through :math:`\rho`) and
    :math:`\dot s_r = (\sigma_{t_r}\dot{\bar\sigma}_r - \bar\sigma_r\dot\sigma_{t_r}\dot
    t_r)/\sigma_{t_r}^2`. This is a change of variables, exact for *any* field; for the
    exact mixture field it gives the exact field of the new schedule.

    Near :math:`t = 1` both :math:`\sigma`'s vanish, so when the noise is smaller than
    the signal the scale is computed from the other coefficient,
    :math:`s_r = \bar\alpha_r / \alpha_{t_r}` and
    :math:`\dot s_r = (\alpha_{t_r}\dot{\bar\alpha}_r - \bar\alpha_r\dot\alpha_{t_r}\dot
    t_r)/\alpha_{t_r}^2` (the same numbers, without 0/0).

    Parameters
    ----------
    velocity : callable ``(t, x) -> u_t(x)`` for the old schedule
    old, new : schedules

    Returns
    -------
    callable ``(r, x) -> ū_r(x)``
    """

    def new_velocity(r, x):
        bar = coefficients(new, r)
        t = snr_inverse(old, bar.alpha / bar.sigma)
        c = coefficients(old, t)
        snr_rate_new = (bar.sigma * bar.alpha_dot - bar.alpha * bar.sigma_dot) / bar.sigma**2
        snr_rate_old = (c.sigma * c.alpha_dot - c.alpha * c.sigma_dot) / c.sigma**2
        t_dot = snr_rate_new / snr_rate_old
        noisy = bar.sigma > bar.alpha
        scale = jnp.where(noisy, bar.sigma / c.sigma, bar.alpha / c.alpha)
        scale_dot = jnp.where(
            noisy,
            (c.sigma * bar.sigma_dot - bar.sigma * c.sigma_dot * t_dot) / c.sigma**2,
            (c.alpha * bar.alpha_dot - bar.alpha * c.alpha_dot * t_dot) / c.alpha**2,
        )
        return (scale_dot / scale) * x + scale * t_dot * velocity(t, x / scale)

    return new_velocity
