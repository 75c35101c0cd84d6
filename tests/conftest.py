"""Test configuration shared by every test.

Tests run JAX in float64 so that exact oracles (Kalman, closed-form mixtures) can be
compared to many digits; the served app runs in float32.
"""

import gc
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


# Every XLA:CPU executable maps its code into a few memory regions of its own, and JAX
# keeps every program it compiled. A test worker that runs half the suite compiles
# thousands of them and reaches Linux's per-process limit on memory maps
# (vm.max_map_count, 65530 by default), at which point XLA's next compilation segfaults.
# So between modules, a worker that is three quarters of the way there forgets its
# compiled programs (the most one module has added is about 7,000 maps).
MEMORY_MAP_LIMIT = 65530
CLEAR_CACHES_AT_MAPS = 3 * MEMORY_MAP_LIMIT // 4


def memory_map_count() -> int:
    """The number of memory regions mapped into this process (0 where /proc is absent)."""
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    leaving_module = nextitem is None or nextitem.module is not item.module
    if leaving_module and memory_map_count() > CLEAR_CACHES_AT_MAPS:
        jax.clear_caches()
        gc.collect()
    return result
