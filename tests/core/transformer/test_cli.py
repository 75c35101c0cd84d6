"""`posteriorlab train-transformer`: checkpoint, resume, and the same result as one run.

Each run is a separate process (float32, as a user runs it); the data of step ``s`` are
drawn with ``fold_in(key, s)``, so a run stopped at step 10 and resumed to step 20 must
end with the same weights as a run of 20 steps.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from posteriorlab import cli
from posteriorlab.core.transformer import checkpoints, likelihoods

TINY = [
    "--d-model", "8", "--num-heads", "2", "--num-layers", "1", "--ffn-width", "8",
    "--embedding-width", "8", "--max-components", "2", "--max-observations", "4",
    "--batch-size", "16", "--warmup-steps", "5", "--report-every", "5",
]


def train(*args, output):
    return subprocess.Popen(
        [sys.executable, "-m", "posteriorlab.cli", "train-transformer", *TINY, *args,
         "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stderr


def test_checkpoint_and_resume(tmp_path):
    interrupted = tmp_path / "interrupted.eqx"
    straight = tmp_path / "straight.eqx"
    first = train("--steps", "10", "--decay-steps", "20", "--checkpoint-every", "5",
                  "--eval-problems", "0", output=interrupted)
    whole = train("--steps", "20", "--checkpoint-every", "10", "--eval-problems", "0",
                  output=straight)
    log = finish(first)
    assert "step 10/10" in log
    record = json.loads(checkpoints.metadata_path(interrupted).read_text())
    assert record["steps"] == 10
    assert checkpoints.state_path(interrupted).exists()
    state, _ = checkpoints.load_checkpoint(interrupted)
    assert int(state.step) == 10

    log = finish(train("--resume", "--steps", "20", "--eval-problems", "32",
                       output=interrupted))
    assert "step 20/20" in log
    assert "held-out" in log
    finish(whole)

    resumed_record = json.loads(checkpoints.metadata_path(interrupted).read_text())
    assert resumed_record["steps"] == 20
    assert len(resumed_record["commands"]) == 2
    assert "--resume" in resumed_record["commands"][1]
    assert resumed_record["training_config"]["decay_steps"] == 20
    assert "mean_log_density_gap" in resumed_record["held_out"]
    resumed_state, _ = checkpoints.load_checkpoint(interrupted)
    assert int(resumed_state.step) == 20
    resumed, _ = checkpoints.load_model(interrupted)
    uninterrupted, _ = checkpoints.load_model(straight)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="missing.json is missing"):
        cli.main(["train-transformer", "--resume", "--output", str(tmp_path / "missing.eqx")])


def test_a_distance_network_trains_and_is_scored_by_quadrature(tmp_path):
    output = tmp_path / "norm.eqx"
    log = finish(train("--task", "norm", "--steps", "20", "--eval-problems", "16",
                       output=output))
    assert "gap to exact" not in log.split("held-out")[0]  # no closed form during training
    assert "held-out" in log
    record = json.loads(checkpoints.metadata_path(output).read_text())
    assert record["model_config"]["likelihood"] == "norm"
    assert record["held_out"]["num_problems"] > 0
    model, _ = checkpoints.load_model(output)
    assert model.config.likelihood == "norm"


def test_task_choices_are_the_cores_likelihoods():
    assert cli.LIKELIHOOD_CHOICES == likelihoods.LIKELIHOODS
