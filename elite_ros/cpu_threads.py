"""How inference uses the CPU's cores when other processes share them: torch threads and OpenMP waiting.

torch runs its CPU operators on an OpenMP team (libgomp in the PyPI wheels). Every parallel operator
ends at a barrier, where libgomp's threads spin (up to ~300,000 iterations) before they sleep. When other
processes want the cores, a spinning thread burns the time the descheduled member of its team needs,
hundreds of times per scan. Measured on this project's 2-core machine (`benchmarks/student.py --co-load 2
--threads 1 2 --omp-wait passive unset`, the KITTI scan through the handler, background load 4-6):
2 threads spinning: fp32 p50 7.4 s quiet, p99 47 s beside two busy processes. So idle OpenMP threads
sleep (`prepare_openmp`, before torch loads). With passive waiting on an otherwise idle 2-core machine
(`--threads 1 2 --runs 30 --co-load 2`): 1 thread 0.65 s quiet, co-load p99 1.12 s (1.7x); 2 threads
0.47 s and 1.28 s (2.7x): a second thread halves its share of the cores once two busy processes run. So
the network runs on the `threads` parameter's count, default 1 (README, "On a shared CPU"). torch's
inter-op pool is left alone: eager inference never uses it.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: OpenMP wait policy the node asks for: waiting threads yield the core at once (libgomp: spin count 0)
#: instead of spinning up to ~300,000 iterations first, time a busy co-process could have used
OPENMP_WAIT_POLICY = "PASSIVE"
OPENMP_WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def prepare_openmp(environ: MutableMapping[str, str] | None = None) -> bool:
    """Ask OpenMP for passive waiting unless the environment already chose (``OMP_WAIT_POLICY``).

    libgomp reads the variable once, when torch loads it, so this must run before ``import torch``.
    Returns False when torch is already imported in this process (the call then changes nothing for it).
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(OPENMP_WAIT_POLICY_ENV, OPENMP_WAIT_POLICY)
    return "torch" not in sys.modules


def resolve_threads(threads: int) -> int:
    """The torch thread count for a `threads` parameter value: itself, or one per core for 0."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = one per core), got {threads}")
    return threads or (os.cpu_count() or 1)


#: niceness range of Linux (setpriority(2)): lower runs first when processes compete for a core
NICENESS_RANGE = (-20, 19)


def set_niceness(nice: int) -> int:
    """Run every thread of this process at niceness `nice` (-20 .. 19); returns the niceness after.

    Linux keeps a niceness per thread and a new thread inherits its creator's, so the threads that exist
    (DDS's, the executor's, OpenMP's) are set one by one and later ones follow. Beside busy processes on
    a shared CPU a node at a lower niceness gets a larger share of each core (README: On a shared CPU).
    Raises PermissionError when the OS refuses: a niceness below the current one needs root,
    CAP_SYS_NICE or an RLIMIT_NICE that allows it (limits.conf ``nice``).
    """
    low, high = NICENESS_RANGE
    if not low <= nice <= high:
        raise ValueError(f"nice must be in {low} .. {high}, got {nice}")
    task_folder = "/proc/self/task"
    threads = [int(name) for name in os.listdir(task_folder)] if os.path.isdir(task_folder) else [0]
    for thread in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


def set_torch_threads(threads: int) -> int:
    """Run torch's CPU operators on `threads` threads (0 = one per core), process-wide; returns the count."""
    import torch

    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count
