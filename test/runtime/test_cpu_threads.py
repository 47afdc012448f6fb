"""elite_ros.cpu_threads: passive OpenMP waiting unless chosen, and the threads parameter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from elite_ros.cpu_threads import OPENMP_WAIT_POLICY, OPENMP_WAIT_POLICY_ENV, prepare_openmp, resolve_threads


def test_passive_waiting_unless_the_environment_chose():
    environ: dict[str, str] = {}
    prepare_openmp(environ)
    assert environ == {OPENMP_WAIT_POLICY_ENV: OPENMP_WAIT_POLICY}
    chosen = {OPENMP_WAIT_POLICY_ENV: "ACTIVE"}
    prepare_openmp(chosen)
    assert chosen == {OPENMP_WAIT_POLICY_ENV: "ACTIVE"}


def test_the_entry_points_ask_before_torch_loads():
    """segment_node and elite-ros set it first thing, in a process that has not loaded torch yet."""
    code = ("import os, sys\nfrom elite_ros.cli import main\nassert 'torch' not in sys.modules\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\nprint(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != OPENMP_WAIT_POLICY_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-1] == OPENMP_WAIT_POLICY
    assert prepare_openmp({}) is ("torch" not in sys.modules)  # here torch may be loaded already: reported


def test_threads_parameter():
    assert resolve_threads(1) == 1 and resolve_threads(3) == 3
    assert resolve_threads(0) == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="threads must be >= 0"):
        resolve_threads(-1)
