"""elite_ros.cpu_threads: passive OpenMP waiting unless chosen, the threads and the nice parameters."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from elite_ros.cpu_threads import (
    OPENMP_WAIT_POLICY,
    OPENMP_WAIT_POLICY_ENV,
    prepare_openmp,
    resolve_threads,
    set_niceness,
)


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


# In a child process (a niceness raised without privilege cannot be lowered again): a thread started
# before the call and one started after run at the new niceness, read back from /proc.
NICENESS_OF_EVERY_THREAD = """
import os, threading
from elite_ros.cpu_threads import set_niceness
ready, done = threading.Event(), threading.Event()
def wait():
    ready.set(); done.wait()
before = threading.Thread(target=wait); before.start(); ready.wait()
print(set_niceness({nice}))
after = threading.Thread(target=done.wait); after.start()
for tid in sorted(os.listdir('/proc/self/task')):
    print(tid, os.getpriority(os.PRIO_PROCESS, int(tid)))
done.set()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is read from Linux's /proc")
def test_set_niceness_moves_every_thread_of_the_process():
    out = subprocess.run([sys.executable, "-c", NICENESS_OF_EVERY_THREAD.format(nice=7)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split("\n")
    assert out[0] == "7"
    threads = [line.split() for line in out[1:] if line]
    assert len(threads) >= 3 and all(nice == "7" for _, nice in threads)


REFUSED = """
import os
from elite_ros.cpu_threads import set_niceness
if os.geteuid() == 0:
    os.setuid(65534)  # root may lower its niceness: become nobody, who may not
set_niceness(5)
try:
    set_niceness(-1)
except PermissionError as error:
    print("refused", os.getpriority(os.PRIO_PROCESS, 0))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is read from Linux's /proc")
def test_a_niceness_the_os_refuses_raises_permission_error():
    out = subprocess.run([sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["refused", "5"]
    with pytest.raises(ValueError, match="nice must be in -20 .. 19"):
        set_niceness(20)
