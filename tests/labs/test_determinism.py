"""The same state and seed give the same results in two fresh processes (the promise
behind a shared link): every array of every lab's results, bit for bit, except the wall
times they report; other seeds give other results (so the check can fail).

Each process runs the labs as the server does (float32, the default JAX settings, programs
loaded from a disk cache after the first) with non-default settings and seeds, as a URL
would set them.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np

    from posteriorlab.labs.paths import PathsLab
    from posteriorlab.labs.smc import SMCLab
    from posteriorlab.labs.transformer import TransformerLab
    from posteriorlab.labs.vi import VILab

    def fingerprint(value, digest, name=""):
        if "second" in name:  # wall times differ from run to run by design
            return
        if hasattr(value, "_fields"):
            for field in value._fields:
                fingerprint(getattr(value, field), digest, field)
        elif isinstance(value, (tuple, list)):
            for item in value:
                fingerprint(item, digest, name)
        elif isinstance(value, str):
            digest.update(value.encode())
        elif value is not None:
            digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())

    def timeless(answer):  # the transformer lab's answers carry their own times
        return answer._replace(milliseconds=0.0)

    shift = int(sys.argv[1])  # added to every seed
    smc = SMCLab(num_particles=500, seed=3 + shift)
    paths = PathsLab(schedule="cosine", num_steps=20, seed=2 + shift)
    vi = VILab(target="mixture", family="full_rank", seed=5 + shift)
    for _ in range(2):
        vi.advance()
    transformer = TransformerLab(seed=4 + shift, num_particles=1000)
    transformer.param.trigger("simulate")
    results = {
        "smc": (smc.result, smc.replicate_result),
        "paths": (paths.result, paths.comparison),
        "vi": vi.result,
        "transformer": transformer.result._replace(
            answers=tuple(map(timeless, transformer.result.answers))
        ),
    }
    prints = {}
    for lab, result in results.items():
        digest = hashlib.sha256()
        fingerprint(result, digest)
        prints[lab] = digest.hexdigest()
    print(json.dumps(prints))
    """
)


def fingerprints(compilation_cache, seed_shift: int = 0) -> dict:
    """The labs' fingerprints from a fresh process. The processes share a JAX disk cache
    of compiled programs, as a server's processes and restarts do: the first compiles,
    the others load what it compiled."""
    environment = os.environ | {
        "JAX_COMPILATION_CACHE_DIR": str(compilation_cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seed_shift)],
        check=True, capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip
    return json.loads(finished.stdout.strip().splitlines()[-1])


def test_same_state_and_seed_give_the_same_results_in_another_process(tmp_path):
    first, second = fingerprints(tmp_path), fingerprints(tmp_path)
    assert set(first) == {"smc", "paths", "vi", "transformer"}
    assert first == second
    other_seeds = fingerprints(tmp_path, seed_shift=1)  # the fingerprints do see the results
    assert all(other_seeds[lab] != first[lab] for lab in first)
