r"""The distribution transformer: a network that maps a mixture prior and data to a posterior.

Bayes' rule with a Gaussian-mixture prior :math:`p(x) = \sum_k \pi_k
\mathcal{N}(x; \mu_k, L_k L_k^\top)` is a map from (prior, data) to posterior. For a
linear-Gaussian likelihood it is known in closed form
(:func:`posteriorlab.core.gmm.condition_on_linear_gaussian`); for most likelihoods it is
not, and an approximation costs an optimisation (VI) or a particle system (SMC) *per
prior and data set*. A distribution transformer learns the map itself, once, and then
applies it in one forward pass.

Tokens
------
A prior with :math:`K` components is :math:`K` *tokens*, one per component, each the
vector

.. math::

    c_k = \bigl(\log\pi_k,\ \mu_k,\ \log\operatorname{diag}L_k,\ \text{strict lower
    triangle of } L_k\bigr) \in \mathbb{R}^{1 + d + d(d+1)/2},

lifted by a small MLP to :math:`h_k \in \mathbb{R}^{D}` (``d_model``). Each scalar
observation :math:`y_j = a_j^\top x + \sigma_j \varepsilon_j` is one *memory* token built
from :math:`(y_j, a_j, \log\sigma_j)` and the whitened
:math:`(a_j/\sigma_j, y_j/\sigma_j)`, which say the same thing in the units of the
noise. A vector observation with independent noise (for example :math:`y = x + e`, the
identity likelihood) is :math:`m` such tokens, one per row of :math:`A`
(:func:`posteriorlab.core.transformer.inference.expand_vector_observations`).

Which likelihood: one network per likelihood
--------------------------------------------
The same token :math:`(y_j, a_j, \log\sigma_j, a_j/\sigma_j, y_j/\sigma_j)` serves a
second likelihood, the distance from the origin :math:`y_j = \lVert a_j \odot x\rVert +
\sigma_j\varepsilon_j` with :math:`a_j` the coordinates it measures
(:mod:`posteriorlab.core.transformer.likelihoods`). What a token *means* is fixed by the
network, :attr:`ModelConfig.likelihood`, not written into the token: each likelihood has
its own trained network with its own config and weights file. The alternative -- one
network for both, with a learned likelihood-type embedding added to every observation
token -- would share capacity between unrelated tasks and force retraining the
linear-Gaussian network whenever a likelihood is added; separate networks keep the
architecture and the code unchanged, leave the packaged linear-Gaussian weights valid,
and cost nothing at run time (a lab loads the network of the likelihood it shows).

Attention over component tokens
-------------------------------
One layer updates every component token in three residual steps (pre-norm: each step
reads a layer-normalised copy, writes into the untouched stream):

.. math::

    h_k &\leftarrow h_k + \mathrm{SelfAttn}(h)_k
        &&\text{components look at each other,}\\
    h_k &\leftarrow h_k + \mathrm{CrossAttn}(h, e)_k
        &&\text{components look at the data,}\\
    h_k &\leftarrow h_k + \mathrm{FFN}(h_k).

With queries :math:`q_k = W_Q h_k`, keys :math:`\kappa_j = W_K s_j` and values
:math:`v_j = W_V s_j` (:math:`s` is :math:`h` itself for self-attention, the observation
tokens :math:`e` for cross-attention), one head computes

.. math::

    \mathrm{Attn}(h, s)_k = W_O \sum_j \alpha_{kj} v_j, \qquad
    \alpha_{kj} = \frac{\exp(q_k^\top\kappa_j / \sqrt{D_h})}
                       {\sum_{j'} \exp(q_k^\top\kappa_{j'} / \sqrt{D_h})} .

Self-attention is what lets the weights change *jointly*: Bayes re-scores every
:math:`\pi_k` by its evidence and then normalises, so a component's posterior weight
depends on how well all the others explain the data. Cross-attention is a weighted
average over the observations, so the result cannot depend on their order; the data
enter only as a set. Nothing in the formula uses a token's position, so permuting the
components permutes the outputs the same way (*equivariance*) and permuting the
observations changes nothing (*invariance*) -- there are no positional encodings, and
the tests check both.

Padding and masks
-----------------
Batches need fixed shapes, so every problem is padded to ``max_components`` component
tokens and ``max_observations`` observation tokens, with boolean masks. A masked token
is never a key: its attention logit is :math:`-\infty`. One learned *no-data* memory
token is always present in cross-attention. With zero observations the components
attend to it alone; with :math:`n` observations its share of the attention lets the
network sense how much data there is (the softmax only averages, and a posterior
depends on the *sum* of the evidence). Padded components get posterior weight zero.

Dimension
---------
One network serves :math:`d = 1` and :math:`d = 2`. It always works in two dimensions;
a 1-D problem is embedded as the first coordinate of a 2-D one whose second coordinate
is an independent standard normal that no observation sees (:math:`a_{j,2} = 0`). That
padded problem's posterior is the 1-D posterior times :math:`\mathcal{N}(0, 1)`, and
since :math:`(\Sigma_k)_{11} = (L_k)_{11}^2` for a lower-triangular factor, the 1-D
answer is read off the first coordinate with no approximation
(:func:`posteriorlab.core.transformer.inference.posterior`).

The output, and why an untrained network is the identity
--------------------------------------------------------
A de-embedding MLP turns each final token into a change
:math:`(\delta_\pi, \delta_\mu, \delta_{\log\mathrm{diag}}, \delta_{\mathrm{off}})` of its
own component, expressed in the component's whitened coordinates
:math:`z = L_k^{-1}(x - \mu_k)`:

.. math::

    \log\pi'_k = \log\pi_k + \delta_{\pi,k} - \operatorname{LSE}_j(\cdots),\quad
    \mu'_k = \mu_k + L_k\,\delta_{\mu,k},\quad
    L'_k = L_k M_k,\quad
    M_k = \begin{pmatrix} e^{\delta_{1}} & 0 \\ \delta_{\mathrm{off}} & e^{\delta_{2}}
          \end{pmatrix}.

:math:`L'_k` is lower triangular with a positive diagonal, so every output is a valid
mixture. The last layer of the head, and the output projection of every attention and
feed-forward block, start at zero (as in the paper): an untrained network outputs
:math:`\delta = 0`, i.e. the prior itself, and training starts from "the data changed
nothing". Working in whitened coordinates makes the job scale-free: a posterior that is
half as wide as its prior component is :math:`\delta_{\log\mathrm{diag}} = -\log 2`
whatever the prior's units.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.transformer import likelihoods

__all__ = [
    "DIM",
    "ModelConfig",
    "DistributionTransformer",
    "component_features",
    "observation_features",
    "apply",
]

DIM = 2
"""The dimension the network works in; 1-D problems are padded (module docstring)."""

NUM_COMPONENT_FEATURES = 1 + DIM + DIM * (DIM + 1) // 2
NUM_OBSERVATION_FEATURES = 2 * (DIM + 1) + 1
MIN_LOG_WEIGHT_FEATURE = -30.0
"""Log-weights below this (e.g. a weight of exactly zero) are embedded as this value."""
_DELTA_LOG_SCALE_RANGE = (-20.0, 6.0)


class ModelConfig(NamedTuple):
    """The architecture, all static: a change builds a different network.

    Attributes
    ----------
    d_model : int
        Width :math:`D` of every token.
    num_heads : int
        Attention heads; must divide ``d_model``.
    num_layers : int
        Transformer layers (self-attention, cross-attention, feed-forward).
    ffn_width : int
        Hidden units of each feed-forward block.
    embedding_width : int
        Hidden units of the embedding and de-embedding MLPs.
    max_components : int
        Component tokens per problem; priors with more components are refused.
    max_observations : int
        Scalar observation tokens per problem; more are refused.
    likelihood : str
        The likelihood the network inverts, one of
        :data:`~posteriorlab.core.transformer.likelihoods.LIKELIHOODS`; it gives the
        observation tokens their meaning (it changes no shape, and no weight).
    """

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 4
    ffn_width: int = 128
    embedding_width: int = 64
    max_components: int = 4
    max_observations: int = 20
    likelihood: str = "linear_gaussian"


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def _linear(key, fan_in: int, fan_out: int, *, zero: bool = False) -> eqx.nn.Linear:
    layer = eqx.nn.Linear(fan_in, fan_out, key=key)
    if zero:
        layer = eqx.tree_at(
            lambda lin: (lin.weight, lin.bias),
            layer,
            (jnp.zeros_like(layer.weight), jnp.zeros_like(layer.bias)),
        )
    return layer


def _mlp(key, sizes: list[int], *, zero_last: bool = False) -> tuple[eqx.nn.Linear, ...]:
    keys = jax.random.split(key, len(sizes) - 1)
    last = len(sizes) - 2
    return tuple(
        _linear(k, fan_in, fan_out, zero=zero_last and i == last)
        for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
    )


def _apply_mlp(layers: tuple[eqx.nn.Linear, ...], h: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        h = jax.nn.gelu(layer(h))
    return layers[-1](h)


def _tokens(layer, tokens: jax.Array) -> jax.Array:
    """Apply a per-token layer to tokens of shape (n, features)."""
    return jax.vmap(layer)(tokens)


class Attention(eqx.Module):
    r"""Multi-head attention from query tokens to key/value tokens, with a key mask.

    ``__call__(queries (q, D), sources (s, D), source_mask (s,))`` returns ``(q, D)``:
    :math:`W_O\,[\mathrm{softmax}(Q K^\top/\sqrt{D_h} + \log m)\, V]` per head, where
    :math:`\log m = -\infty` for masked sources. At least one source must be unmasked.
    """

    query: eqx.nn.Linear
    key: eqx.nn.Linear
    value: eqx.nn.Linear
    output: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, key, d_model: int, num_heads: int):
        key_q, key_k, key_v, key_o = jax.random.split(key, 4)
        self.query = _linear(key_q, d_model, d_model)
        self.key = _linear(key_k, d_model, d_model)
        self.value = _linear(key_v, d_model, d_model)
        self.output = _linear(key_o, d_model, d_model, zero=True)
        self.num_heads = num_heads

    def __call__(self, queries, sources, source_mask):
        def heads(x):
            return x.reshape(x.shape[0], self.num_heads, -1)

        q = heads(_tokens(self.query, queries))
        k = heads(_tokens(self.key, sources))
        v = heads(_tokens(self.value, sources))
        logits = jnp.einsum("qhc,shc->hqs", q, k) / math.sqrt(q.shape[-1])
        logits = jnp.where(source_mask[None, None, :], logits, -jnp.inf)
        attention = jax.nn.softmax(logits, axis=-1)
        mixed = jnp.einsum("hqs,shc->qhc", attention, v).reshape(queries.shape[0], -1)
        return _tokens(self.output, mixed)


class Layer(eqx.Module):
    """Self-attention among components, cross-attention to data, feed-forward (pre-norm)."""

    self_norm: eqx.nn.LayerNorm
    self_attention: Attention
    cross_norm: eqx.nn.LayerNorm
    cross_attention: Attention
    ffn_norm: eqx.nn.LayerNorm
    ffn: tuple[eqx.nn.Linear, ...]

    def __init__(self, key, config: ModelConfig):
        key_self, key_cross, key_ffn = jax.random.split(key, 3)
        width = config.d_model
        self.self_norm = eqx.nn.LayerNorm(width)
        self.self_attention = Attention(key_self, width, config.num_heads)
        self.cross_norm = eqx.nn.LayerNorm(width)
        self.cross_attention = Attention(key_cross, width, config.num_heads)
        self.ffn_norm = eqx.nn.LayerNorm(width)
        self.ffn = _mlp(key_ffn, [width, config.ffn_width, width], zero_last=True)

    def __call__(self, h, component_mask, memory, memory_mask):
        normed = _tokens(self.self_norm, h)
        h = h + self.self_attention(normed, normed, component_mask)
        h = h + self.cross_attention(_tokens(self.cross_norm, h), memory, memory_mask)
        return h + _tokens(lambda t: _apply_mlp(self.ffn, self.ffn_norm(t)), h)


class DistributionTransformer(eqx.Module):
    """The network; see the module docstring. Every leaf is an array (a plain pytree).

    Parameters
    ----------
    key : PRNG key
        Initialises the weights.
    config : ModelConfig
    """

    component_embedding: tuple[eqx.nn.Linear, ...]
    observation_embedding: tuple[eqx.nn.Linear, ...]
    no_data_token: jax.Array
    layers: tuple[Layer, ...]
    final_norm: eqx.nn.LayerNorm
    head: tuple[eqx.nn.Linear, ...]
    config: ModelConfig = eqx.field(static=True)

    def __init__(self, key: jax.Array, config: ModelConfig):
        likelihoods.check_likelihood(config.likelihood)
        if config.d_model % config.num_heads:
            raise ValueError(
                f"d_model = {config.d_model} is not divisible by num_heads = "
                f"{config.num_heads}; pick a number of heads that divides the width."
            )
        key_comp, key_obs, key_null, key_layers, key_head = jax.random.split(key, 5)
        width, hidden = config.d_model, config.embedding_width
        self.component_embedding = _mlp(key_comp, [NUM_COMPONENT_FEATURES, hidden, width])
        self.observation_embedding = _mlp(key_obs, [NUM_OBSERVATION_FEATURES, hidden, width])
        self.no_data_token = 0.02 * jax.random.normal(key_null, (width,))
        self.layers = tuple(
            Layer(k, config) for k in jax.random.split(key_layers, config.num_layers)
        )
        self.final_norm = eqx.nn.LayerNorm(width)
        self.head = _mlp(key_head, [width, hidden, NUM_COMPONENT_FEATURES], zero_last=True)
        self.config = config

    def __call__(self, prior: gmm.GaussianMixture, component_mask, rows, values, noise_sd,
                 observation_mask):
        """Posterior of one padded 2-D problem; arguments as in :func:`apply`."""
        h = _tokens(lambda c: _apply_mlp(self.component_embedding, c), component_features(prior))
        observed = observation_features(rows, values, noise_sd)
        memory = jnp.concatenate(
            [self.no_data_token[None, :].astype(h.dtype),
             _tokens(lambda e: _apply_mlp(self.observation_embedding, e), observed)]
        )
        memory_mask = jnp.concatenate([jnp.ones((1,), bool), observation_mask])
        for layer in self.layers:
            h = layer(h, component_mask, memory, memory_mask)
        deltas = _tokens(lambda t: _apply_mlp(self.head, self.final_norm(t)), h)
        return _update_components(prior, component_mask, deltas)


def component_features(prior: gmm.GaussianMixture) -> jax.Array:
    r"""Token inputs :math:`(\log\pi_k, \mu_k, \log L_{k,11}, \log L_{k,22}, L_{k,21})`,
    shape ``(K, 6)``, for a 2-D prior; log-weights are floored at
    ``MIN_LOG_WEIGHT_FEATURE`` so that a weight of zero embeds as a finite number."""
    chol = prior.chol_covs
    return jnp.concatenate(
        [
            jnp.maximum(prior.log_weights, MIN_LOG_WEIGHT_FEATURE)[:, None],
            prior.means,
            jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)),
            chol[:, 1:2, 0],
        ],
        axis=-1,
    )


def observation_features(rows, values, noise_sd) -> jax.Array:
    r"""Token inputs :math:`(y_j, a_j, \log\sigma_j, a_j/\sigma_j, y_j/\sigma_j)`, shape
    ``(n, 7)``, for scalar observations :math:`y_j = a_j^\top x + \sigma_j\varepsilon_j`.

    Parameters
    ----------
    rows : Array, shape (n, 2)
    values : Array, shape (n,)
    noise_sd : Array, shape (n,)
    """
    whitened_rows = rows / noise_sd[:, None]
    return jnp.concatenate(
        [
            values[:, None],
            rows,
            jnp.log(noise_sd)[:, None],
            whitened_rows,
            (values / noise_sd)[:, None],
        ],
        axis=-1,
    )


def _update_components(prior, component_mask, deltas) -> gmm.GaussianMixture:
    """Apply the head's changes in each component's whitened frame (module docstring)."""
    chol = prior.chol_covs
    log_weights = jnp.where(component_mask, prior.log_weights + deltas[:, 0], -jnp.inf)
    means = prior.means + jnp.einsum("kij,kj->ki", chol, deltas[:, 1 : 1 + DIM])
    low, high = _DELTA_LOG_SCALE_RANGE
    diagonal = jnp.exp(jnp.clip(deltas[:, 1 + DIM : 1 + 2 * DIM], low, high))
    zeros = jnp.zeros_like(deltas[:, -1])
    whitened_chol = jnp.stack(
        [
            jnp.stack([diagonal[:, 0], zeros], axis=-1),
            jnp.stack([deltas[:, -1], diagonal[:, 1]], axis=-1),
        ],
        axis=-2,
    )
    return gmm.GaussianMixture(
        log_weights=log_weights - logsumexp(log_weights),
        means=means,
        chol_covs=chol @ whitened_chol,
    )


def apply(
    model: DistributionTransformer,
    prior: gmm.GaussianMixture,
    component_mask,
    rows,
    values,
    noise_sd,
    observation_mask,
) -> gmm.GaussianMixture:
    r"""The network on a batch of padded 2-D problems (no checks; jit- and grad-safe).

    Parameters
    ----------
    model : DistributionTransformer
    prior : GaussianMixture
        Batched: ``log_weights (B, K)``, ``means (B, K, 2)``, ``chol_covs (B, K, 2, 2)``.
        Padded components need finite means and a valid factor (e.g. the identity).
    component_mask : bool Array, shape (B, K)
        Which components are real; at least one per problem.
    rows : Array, shape (B, n, 2)
        Observation rows :math:`a_j`.
    values : Array, shape (B, n)
        Observations :math:`y_j`.
    noise_sd : Array, shape (B, n)
        Noise standard deviations :math:`\sigma_j > 0` (also on padded slots).
    observation_mask : bool Array, shape (B, n)
        Which observations are real; all ``False`` means no data.

    Returns
    -------
    GaussianMixture
        Batched like ``prior``; padded components have log-weight ``-inf``.
    """
    return jax.vmap(model)(prior, component_mask, rows, values, noise_sd, observation_mask)
