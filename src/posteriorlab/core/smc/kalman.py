r"""The Kalman filter and the Rauch–Tung–Striebel smoother: the exact oracle.

Overview
--------
In a *linear-Gaussian* state-space model

.. math::

    x_0 \sim \mathcal N(m_0, P_0), \qquad
    x_t = F x_{t-1} + \eta_t,\ \eta_t \sim \mathcal N(0, Q), \qquad
    y_t = H x_t + \varepsilon_t,\ \varepsilon_t \sim \mathcal N(0, R),

every conditional law of states given observations is Gaussian, so the filter, the
smoother and the likelihood have closed forms. Nothing is approximated: this module is
the yardstick that the particle filters and smoothers of this package are measured
against (their estimates must converge to these numbers as the particle count grows).

Filtering
    Write :math:`m_{t|t-1}, P_{t|t-1}` for the mean and covariance of
    :math:`p(x_t \mid y_{0:t-1})` (the *prediction*) and :math:`m_{t|t}, P_{t|t}` for
    those of :math:`p(x_t \mid y_{0:t})` (the *filter*). At :math:`t = 0` the prediction
    is the prior :math:`(m_0, P_0)`. Each step alternates

    * **predict**: :math:`m_{t|t-1} = F m_{t-1|t-1}`,
      :math:`P_{t|t-1} = F P_{t-1|t-1} F^\top + Q`;
    * **update**: with the innovation covariance :math:`S_t = H P_{t|t-1} H^\top + R`
      and the gain :math:`K_t = P_{t|t-1} H^\top S_t^{-1}`,
      :math:`m_{t|t} = m_{t|t-1} + K_t (y_t - H m_{t|t-1})` and
      :math:`P_{t|t} = (I - K_t H) P_{t|t-1} (I - K_t H)^\top + K_t R K_t^\top`.

    The covariance update is written in *Joseph form*: algebraically equal to
    :math:`(I - K_t H) P_{t|t-1}`, but a sum of two positive semi-definite terms, so
    round-off cannot make it indefinite.

Likelihood
    The predictive law of the next observation is
    :math:`p(y_t \mid y_{0:t-1}) = \mathcal N(y_t; H m_{t|t-1}, S_t)`, and the chain rule
    gives :math:`\log p(y_{0:T-1}) = \sum_t \log p(y_t \mid y_{0:t-1})`. Every operation
    is differentiable, so ``jax.grad`` of the log-likelihood with respect to
    :math:`(F, Q, H, R, m_0, P_0)` is the exact score: the target of gradient-based
    parameter learning and of the Fisher-identity checks of the particle smoothers.

Smoothing
    The Rauch–Tung–Striebel recursion runs backwards from :math:`t = T-1`, where smoother
    and filter agree. With the backward gain :math:`J_t = P_{t|t} F^\top P_{t+1|t}^{-1}`,

    .. math::

        m_{t|T} = m_{t|t} + J_t (m_{t+1|T} - m_{t+1|t}), \qquad
        P_{t|T} = P_{t|t} + J_t (P_{t+1|T} - P_{t+1|t}) J_t^\top,

    and the lag-one cross-covariance is
    :math:`\operatorname{Cov}(x_t, x_{t+1} \mid y_{0:T-1}) = J_t P_{t+1|T}`. With these
    every additive functional that is at most quadratic, such as
    :math:`E[\sum_t x_t x_{t+1}^\top \mid y]`, has an exact value.

Numerics
    No matrix is ever inverted: :math:`S_t^{-1}` and :math:`P_{t+1|t}^{-1}` are applied
    through Cholesky solves, which also give :math:`\log\det S_t` for free. The RTS gain
    needs :math:`P_{t+1|t}` to be positive definite, which holds whenever :math:`Q` is.

Both functions are jitted: a new parameter value reuses the compiled code, and only a
new number of steps or new dimensions compile again.

Recommended import::

    from posteriorlab.core.smc import kalman
    result = kalman.kalman_filter(model, observations)
    smoothed = kalman.rts_smoother(model, result)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from posteriorlab.core.smc.models import LinearGaussianSSM

__all__ = ["KalmanFilterResult", "SmootherResult", "kalman_filter", "rts_smoother"]


class KalmanFilterResult(NamedTuple):
    r"""Moments of the predictive and filtering laws, and the log-likelihood.

    Attributes
    ----------
    predicted_means, predicted_covs
        Shapes ``(T, d)`` and ``(T, d, d)``: :math:`m_{t|t-1}, P_{t|t-1}`, the moments of
        :math:`p(x_t \mid y_{0:t-1})`; at ``t = 0`` the prior :math:`(m_0, P_0)`.
    filtered_means, filtered_covs
        Shapes ``(T, d)`` and ``(T, d, d)``: :math:`m_{t|t}, P_{t|t}`, the moments of
        :math:`p(x_t \mid y_{0:t})`.
    log_likelihood_increments
        Shape ``(T,)``: :math:`\log p(y_t \mid y_{0:t-1})`.
    log_likelihood
        Shape ``()``: :math:`\log p(y_{0:T-1})`, the sum of the increments.
    """

    predicted_means: jax.Array
    predicted_covs: jax.Array
    filtered_means: jax.Array
    filtered_covs: jax.Array
    log_likelihood_increments: jax.Array
    log_likelihood: jax.Array


class SmootherResult(NamedTuple):
    r"""Moments of the smoothing laws :math:`p(x_t \mid y_{0:T-1})`.

    Attributes
    ----------
    smoothed_means, smoothed_covs
        Shapes ``(T, d)`` and ``(T, d, d)``: :math:`m_{t|T}, P_{t|T}`.
    cross_covs
        Shape ``(T-1, d, d)``: :math:`\operatorname{Cov}(x_t, x_{t+1} \mid y_{0:T-1})`,
        rows indexing :math:`x_t` and columns :math:`x_{t+1}`.
    """

    smoothed_means: jax.Array
    smoothed_covs: jax.Array
    cross_covs: jax.Array


def _symmetrise(matrix: jax.Array) -> jax.Array:
    """Average a matrix with its transpose, removing round-off asymmetry."""
    return 0.5 * (matrix + matrix.T)


def _check_observations(model: LinearGaussianSSM, observations: jax.Array) -> None:
    """Raise a ValueError unless ``observations`` has shape ``(T, k)`` with ``T >= 1``."""
    obs_dim = model.observation_matrix.shape[0]
    if observations.ndim != 2 or observations.shape[1] != obs_dim or observations.shape[0] < 1:
        raise ValueError(
            f"observations must have shape (T, {obs_dim}) with T >= 1, matching the "
            f"observation matrix H of shape {model.observation_matrix.shape}; got shape "
            f"{observations.shape}. Reshape a 1-D series y of length T with y[:, None]."
        )


def _update(
    model: LinearGaussianSSM, mean: jax.Array, cov: jax.Array, observation: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Condition :math:`\mathcal N(m_{t|t-1}, P_{t|t-1})` on :math:`y_t`.

    Returns the filtering mean and covariance and
    :math:`\log \mathcal N(y_t; H m_{t|t-1}, S_t)`.
    """
    obs_matrix, obs_cov = model.observation_matrix, model.observation_cov
    innovation = observation - obs_matrix @ mean
    innovation_chol = jnp.linalg.cholesky(_symmetrise(obs_matrix @ cov @ obs_matrix.T + obs_cov))
    # K = P H^T S^{-1} = (S^{-1} H P)^T, as S and P are symmetric.
    gain = cho_solve((innovation_chol, True), obs_matrix @ cov).T
    filtered_mean = mean + gain @ innovation
    residual_map = jnp.eye(mean.shape[0], dtype=cov.dtype) - gain @ obs_matrix
    filtered_cov = residual_map @ cov @ residual_map.T + gain @ obs_cov @ gain.T
    whitened = solve_triangular(innovation_chol, innovation, lower=True)
    log_likelihood = (
        -0.5 * innovation.shape[0] * jnp.log(2.0 * jnp.pi)
        - jnp.sum(jnp.log(jnp.diag(innovation_chol)))
        - 0.5 * jnp.sum(whitened**2)
    )
    return filtered_mean, _symmetrise(filtered_cov), log_likelihood


def _predict(
    model: LinearGaussianSSM, mean: jax.Array, cov: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Push :math:`\mathcal N(m, P)` through the transition: :math:`(Fm, FPF^\top + Q)`."""
    transition = model.transition_matrix
    return transition @ mean, _symmetrise(transition @ cov @ transition.T + model.transition_cov)


@jax.jit
def kalman_filter(model: LinearGaussianSSM, observations: jax.Array) -> KalmanFilterResult:
    r"""Run the Kalman filter: exact predictive and filtering moments and log-likelihood.

    The recursion (module docstring) is a ``jax.lax.scan`` whose carry is the prediction
    :math:`(m_{t|t-1}, P_{t|t-1})`, starting from the prior :math:`(m_0, P_0)`:

    .. math::

        (m_{t|t}, P_{t|t}, \ell_t) = \mathrm{update}(m_{t|t-1}, P_{t|t-1}, y_t),\qquad
        (m_{t+1|t}, P_{t+1|t}) = (F m_{t|t},\ F P_{t|t} F^\top + Q),

    with :math:`\ell_t = \log \mathcal N(y_t; H m_{t|t-1}, H P_{t|t-1} H^\top + R)`.

    Parameters
    ----------
    model
        The linear-Gaussian model; its matrices are traced, so changing a value never
        recompiles a jitted caller, and gradients flow through all of them.
    observations
        Shape ``(T, k)``, with ``k`` the number of rows of the observation matrix.

    Returns
    -------
    KalmanFilterResult
        Predicted and filtered moments over ``t = 0..T-1``, the log-likelihood increments
        :math:`\ell_t` and their sum :math:`\log p(y_{0:T-1})`.

    Raises
    ------
    ValueError
        If ``observations`` is not of shape ``(T, k)`` with ``T >= 1``.
    """
    _check_observations(model, observations)

    def step(prediction, observation):
        predicted_mean, predicted_cov = prediction
        filtered_mean, filtered_cov, log_likelihood = _update(
            model, predicted_mean, predicted_cov, observation
        )
        next_prediction = _predict(model, filtered_mean, filtered_cov)
        outputs = (predicted_mean, predicted_cov, filtered_mean, filtered_cov, log_likelihood)
        return next_prediction, outputs

    prior = (model.initial_mean, model.initial_cov)
    _, outputs = jax.lax.scan(step, prior, observations)
    increments = outputs[-1]
    return KalmanFilterResult(*outputs, log_likelihood=jnp.sum(increments))


@jax.jit
def rts_smoother(model: LinearGaussianSSM, filter_result: KalmanFilterResult) -> SmootherResult:
    r"""Run the Rauch–Tung–Striebel smoother backwards over a Kalman filter's output.

    A reverse ``jax.lax.scan`` from :math:`t = T-2` down to :math:`0`, carrying
    :math:`(m_{t+1|T}, P_{t+1|T})` and starting from the last filter moments:

    .. math::

        J_t = P_{t|t} F^\top P_{t+1|t}^{-1},\quad
        m_{t|T} = m_{t|t} + J_t (m_{t+1|T} - m_{t+1|t}),\quad
        P_{t|T} = P_{t|t} + J_t (P_{t+1|T} - P_{t+1|t}) J_t^\top,

    and :math:`\operatorname{Cov}(x_t, x_{t+1} \mid y_{0:T-1}) = J_t P_{t+1|T}`.

    Parameters
    ----------
    model
        The model that ``filter_result`` was computed with (only :math:`F` is used).
    filter_result
        The output of :func:`kalman_filter`.

    Returns
    -------
    SmootherResult
        Smoothed means ``(T, d)``, covariances ``(T, d, d)`` and lag-one
        cross-covariances ``(T-1, d, d)``.
    """
    transition = model.transition_matrix

    def step(next_smoothed, moments):
        next_mean, next_cov = next_smoothed
        filtered_mean, filtered_cov, predicted_mean, predicted_cov = moments
        predicted_chol = jnp.linalg.cholesky(predicted_cov)
        # J = P F^T (P^-)^{-1} = ((P^-)^{-1} F P)^T, as P and P^- are symmetric.
        gain = cho_solve((predicted_chol, True), transition @ filtered_cov).T
        mean = filtered_mean + gain @ (next_mean - predicted_mean)
        cov = _symmetrise(filtered_cov + gain @ (next_cov - predicted_cov) @ gain.T)
        return (mean, cov), (mean, cov, gain @ next_cov)

    last = (filter_result.filtered_means[-1], filter_result.filtered_covs[-1])
    moments = (
        filter_result.filtered_means[:-1],
        filter_result.filtered_covs[:-1],
        filter_result.predicted_means[1:],
        filter_result.predicted_covs[1:],
    )
    _, (means, covs, cross_covs) = jax.lax.scan(step, last, moments, reverse=True)
    return SmootherResult(
        smoothed_means=jnp.concatenate([means, last[0][None]]),
        smoothed_covs=jnp.concatenate([covs, last[1][None]]),
        cross_covs=cross_covs,
    )
