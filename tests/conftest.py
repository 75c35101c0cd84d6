"""Test configuration shared by every test.

Tests run JAX in float64 so that exact oracles (Kalman, closed-form mixtures) can be
compared to many digits; the served app runs in float32.
"""

import os

# Before numpy/jax load BLAS: one thread per test worker (see posteriorlab.cli.main).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key(request):
    """A PRNG key whose seed is visible in the test id of a failure."""
    seed = getattr(request, "param", 0)
    return jax.random.key(seed)
