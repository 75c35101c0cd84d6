"""Saving and loading networks, training checkpoints and the packaged weights.

This is the one module of the core that touches files: a trained network is data that
ships with the package. A network saved at ``PATH`` (say ``linear_gaussian.eqx``) is
two files side by side:

* ``PATH`` -- the weights, written by ``equinox.tree_serialise_leaves`` (raw arrays in
  a fixed leaf order, nothing executable);
* ``PATH`` with suffix ``.json`` -- what is needed to rebuild the empty network the
  weights are read into (the :class:`~posteriorlab.core.transformer.model.ModelConfig`
  and the dtype), plus whatever the trainer recorded: the training configuration, the
  seed, the command line, the step and the measured accuracy.

A training checkpoint (``PATH`` with suffix ``.state.eqx``) adds the optimiser state
and the step, so that training resumes where it stopped.

The packaged networks, :func:`load_pretrained`, live in the ``weights/`` folder next to
this module, one per likelihood (``linear_gaussian.eqx``, ``norm.eqx``).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from posteriorlab.core.transformer.model import DistributionTransformer, ModelConfig
from posteriorlab.core.transformer.simulate import MetaPrior
from posteriorlab.core.transformer.training import TrainingConfig, TrainingState, init_training

__all__ = [
    "WEIGHTS_DIR",
    "metadata_path",
    "state_path",
    "save_model",
    "load_model",
    "save_checkpoint",
    "load_checkpoint",
    "training_config_to_dict",
    "training_config_from_dict",
    "load_pretrained",
    "pretrained_metadata",
]

WEIGHTS_DIR = pathlib.Path(__file__).parent / "weights"
"""Where the packaged networks live."""

_STORAGE_DTYPE = "float32"


def metadata_path(path) -> pathlib.Path:
    """The JSON file beside the weights at ``path``."""
    return pathlib.Path(path).with_suffix(".json")


def state_path(path) -> pathlib.Path:
    """The training checkpoint beside the weights at ``path``."""
    return pathlib.Path(path).with_suffix(".state.eqx")


def _empty_model(config: ModelConfig) -> DistributionTransformer:
    """The network's shapes with float32 leaves, to read weights into (no random init)."""
    shapes = eqx.filter_eval_shape(DistributionTransformer, jax.random.key(0), config)
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(_STORAGE_DTYPE))
        if jnp.issubdtype(leaf.dtype, jnp.floating)
        else leaf,
        shapes,
    )


def _float32(tree):
    return jax.tree.map(
        lambda leaf: leaf.astype(_STORAGE_DTYPE)
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)
        else leaf,
        tree,
    )


def training_config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """A JSON-ready dict of a :class:`TrainingConfig` (the meta-prior nested)."""
    as_dict = config._asdict()
    as_dict["meta_prior"] = config.meta_prior._asdict()
    return as_dict


def training_config_from_dict(as_dict: dict[str, Any]) -> TrainingConfig:
    """Inverse of :func:`training_config_to_dict`."""
    fields = dict(as_dict)
    fields["meta_prior"] = MetaPrior(**fields.get("meta_prior", {}))
    return TrainingConfig(**fields)


def save_model(path, model: DistributionTransformer, metadata: dict[str, Any] | None = None):
    """Write the weights to ``path`` (float32) and the config plus ``metadata`` to JSON.

    Returns the two paths written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(path, _float32(model))
    record = {"model_config": model.config._asdict(), "dtype": _STORAGE_DTYPE}
    record.update(metadata or {})
    metadata_path(path).write_text(json.dumps(record, indent=2) + "\n")
    return path, metadata_path(path)


def _read_metadata(path) -> dict[str, Any]:
    json_path = metadata_path(path)
    if not json_path.exists():
        raise FileNotFoundError(
            f"{json_path} is missing: the weights at {path} are read into a network built "
            "from the model_config stored in that JSON file; save with save_model (or "
            "`posteriorlab train-transformer`), which writes both."
        )
    return json.loads(json_path.read_text())


def load_model(path) -> tuple[DistributionTransformer, dict[str, Any]]:
    """Read a network saved by :func:`save_model`; returns ``(model, metadata)``."""
    metadata = _read_metadata(path)
    config = ModelConfig(**metadata["model_config"])
    model = eqx.tree_deserialise_leaves(pathlib.Path(path), _empty_model(config))
    return model, metadata


def save_checkpoint(path, state: TrainingState, metadata: dict[str, Any]):
    """Write the network (as :func:`save_model`) and the full training state beside it."""
    save_model(path, state.model, metadata)
    eqx.tree_serialise_leaves(state_path(path), _float32(state))


def load_checkpoint(path) -> tuple[TrainingState, dict[str, Any]]:
    """Read the training state saved by :func:`save_checkpoint`; returns ``(state,
    metadata)``. The metadata must hold ``training_config`` (as the CLI writes it)."""
    metadata = _read_metadata(path)
    config = ModelConfig(**metadata["model_config"])
    training_config = training_config_from_dict(metadata["training_config"])
    like = eqx.filter_eval_shape(
        lambda: init_training(DistributionTransformer(jax.random.key(0), config), training_config)
    )
    like = like._replace(model=_empty_model(config))
    like = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(_STORAGE_DTYPE))
        if jnp.issubdtype(leaf.dtype, jnp.floating)
        else leaf,
        like,
    )
    if not state_path(path).exists():
        raise FileNotFoundError(
            f"no training checkpoint at {state_path(path)}; --resume continues a run "
            f"that wrote one (every --checkpoint-every steps) to the same --output {path}."
        )
    state = eqx.tree_deserialise_leaves(state_path(path), like)
    return state, metadata


def load_pretrained(name: str = "linear_gaussian") -> DistributionTransformer:
    """The packaged network ``weights/<name>.eqx``, one per likelihood and named after
    it: ``"linear_gaussian"`` (the default) or ``"norm"`` (distances from the origin).
    Its JSON records how it was trained and how accurate it is
    (:func:`pretrained_metadata`)."""
    path = WEIGHTS_DIR / f"{name}.eqx"
    if not path.exists():
        available = sorted(p.stem for p in WEIGHTS_DIR.glob("*.eqx") if ".state" not in p.name)
        raise FileNotFoundError(
            f"no packaged network named {name!r} in {WEIGHTS_DIR}; available: {available}."
        )
    return load_model(path)[0]


def pretrained_metadata(name: str = "linear_gaussian") -> dict[str, Any]:
    """The JSON record of a packaged network (configs, command line, steps, accuracy)."""
    return _read_metadata(WEIGHTS_DIR / f"{name}.eqx")
