"""Shared builders for the distribution-transformer tests."""

import jax
import jax.numpy as jnp

from posteriorlab.core import gmm
from posteriorlab.core.transformer.model import DistributionTransformer, ModelConfig

SMALL = ModelConfig(
    d_model=16, num_heads=2, num_layers=2, ffn_width=16, embedding_width=16,
    max_components=4, max_observations=8,
)


def untrained(config: ModelConfig = SMALL) -> DistributionTransformer:
    return DistributionTransformer(jax.random.key(0), config)


def perturbed(config: ModelConfig = SMALL, scale: float = 0.3) -> DistributionTransformer:
    """An untrained network with noise added to every weight, so no block is zero."""
    model = untrained(config)
    leaves, structure = jax.tree.flatten(model)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys,
                                                                                 strict=True)]
    return jax.tree.unflatten(structure, noisy)


def two_d_prior() -> gmm.GaussianMixture:
    return gmm.from_covariances(
        weights=[0.5, 0.3, 0.2],
        means=[[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]],
        covariances=[0.5 * jnp.eye(2), [[0.8, 0.3], [0.3, 0.4]], [[1.5, -0.2], [-0.2, 0.3]]],
    )


def one_d_prior() -> gmm.GaussianMixture:
    return gmm.from_covariances([0.7, 0.3], [[-1.0], [2.5]], [[[0.6]], [[1.2]]])


def observations(dim: int, count: int, seed: int = 3):
    key_rows, key_values = jax.random.split(jax.random.key(seed))
    rows = jax.random.normal(key_rows, (count, dim))
    values = 2.0 * jax.random.normal(key_values, (count,))
    return rows, values
