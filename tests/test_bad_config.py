"""Bad configurations and overrides are refused before Ray starts, naming the key
and what it allows (the corpus is tests/bad_configs.py).

All cases run through the CLI's Python entry point in one subprocess, which
never has Ray: after each case it checks that Ray was not initialized and that
it has no child process (a raylet or GCS would be one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_configs import CASES

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def outcomes():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    shards = 2  # two processes: Hydra's composition dominates, and is single-threaded
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "bad_configs.py"), str(i), str(shards)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(shards)
    ]
    out = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.update({o["case"]: o for o in json.loads(stdout)})
    assert len(out) == len(CASES)
    return out


def test_the_corpus_is_large_and_distinct():
    names = [c[0] for c in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert len({tuple(c[1]) for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "overrides", "key", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_refused_before_ray_naming_key_and_allowed(
    outcomes, name, overrides, key, allowed
):
    out = outcomes[name]
    assert out["code"] != 0, f"{overrides} was accepted:\n{out['message'][-2000:]}"
    message = out["message"]
    assert key in message, message
    assert allowed in message, message
    assert "Traceback" not in message, message
    assert not out["ray_initialized"] and not out["children"]
    assert not out["results"]  # nothing written where results go
    assert not out["run_dir_left"]  # a refused command line leaves no run directory
