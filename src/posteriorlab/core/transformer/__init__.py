r"""Distribution transformers: a network that maps a mixture prior and data to a posterior.

After Whittle, Ziomek, Rawling and Osborne, *Distribution Transformers: Fast Approximate
Bayesian Inference With On-The-Fly Prior Adaptation* (arXiv 2502.02463). A prior
Gaussian mixture is a set of component tokens, the data a set of observation tokens;
attention layers turn the prior's components into the posterior's, in one forward pass
of about a millisecond, for any prior the network was trained around -- the prior can
change at every click without retraining.

Modules
-------
:mod:`~posteriorlab.core.transformer.model`
    The network: tokens, attention over components, the output mixture.
:mod:`~posteriorlab.core.transformer.likelihoods`
    The likelihoods a network inverts: linear-Gaussian (task a) and the distance from
    the origin, :math:`y = \lVert x\rVert + \sigma\varepsilon` (task b).
:mod:`~posteriorlab.core.transformer.simulate`
    The meta-prior over priors, parameters and data that training draws from.
:mod:`~posteriorlab.core.transformer.training`
    Amortised neural posterior estimation (forward KL) with AdamW.
:mod:`~posteriorlab.core.transformer.exact`
    Exact posteriors for linear-Gaussian data (single and sequential) and importance
    sampling for any likelihood.
:mod:`~posteriorlab.core.transformer.quadrature`
    The exact posterior of distance data, by quadrature in polar coordinates.
:mod:`~posteriorlab.core.transformer.evaluation`
    Held-out accuracy in nats against the exact posterior; kernel density estimates
    that let particle answers be scored the same way.
:mod:`~posteriorlab.core.transformer.inference`
    What a lab calls: :func:`posterior`, :func:`sequential_posteriors`, input checks.
:mod:`~posteriorlab.core.transformer.checkpoints`
    Saving, loading and the packaged weights (:func:`load_pretrained`; one network per
    likelihood, ``"linear_gaussian"`` and ``"norm"``).

Example
-------
>>> import jax.numpy as jnp
>>> from posteriorlab.core import gmm
>>> from posteriorlab.core import transformer
>>> model = transformer.load_pretrained()
>>> prior = gmm.from_covariances([0.5, 0.5], [[-2.0], [2.0]], [[[1.0]], [[1.0]]])
>>> rows, values = jnp.ones((3, 1)), jnp.array([1.5, 2.2, 1.9])
>>> q = transformer.posterior(model, prior, rows, values, noise_sd=0.5)
>>> q.means.shape
(2, 1)
"""

from posteriorlab.core.transformer.checkpoints import (
    load_model,
    load_pretrained,
    pretrained_metadata,
    save_model,
)
from posteriorlab.core.transformer.exact import exact_posterior, importance_sample
from posteriorlab.core.transformer.exact import (
    sequential_posteriors as exact_sequential_posteriors,
)
from posteriorlab.core.transformer.inference import (
    TransformerInputError,
    check_observations,
    check_prior,
    expand_vector_observations,
    posterior,
    posterior_batch,
    prior_from_covariances,
    sequential_posteriors,
)
from posteriorlab.core.transformer.model import DistributionTransformer, ModelConfig

__all__ = [
    "DistributionTransformer",
    "ModelConfig",
    "TransformerInputError",
    "check_observations",
    "check_prior",
    "exact_posterior",
    "exact_sequential_posteriors",
    "expand_vector_observations",
    "importance_sample",
    "load_model",
    "load_pretrained",
    "posterior",
    "posterior_batch",
    "pretrained_metadata",
    "prior_from_covariances",
    "save_model",
    "sequential_posteriors",
]
