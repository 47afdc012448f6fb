"""How inference uses the CPU's cores when other processes share them: torch threads and OpenMP waiting.

torch runs its CPU operators on an OpenMP team (libgomp in the PyPI wheels). Every parallel operator
ends at a barrier where each thread waits for the slowest. When other processes keep the cores busy,
one thread of the team is often descheduled, and the others wait a scheduler slice for it, hundreds of
times per scan: on this project's 2-core machine with two busy co-processes, the KITTI scan took
seconds per scan on 2 threads against well under a second on 1 (`benchmarks/student.py --co-load 2`).
So the node runs the network on `threads` torch threads (parameter; `DEFAULT_THREADS`), and idle
OpenMP threads sleep instead of spinning (`prepare_openmp`), which matters when `threads` > 1.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: torch CPU threads of the node by default: the setting whose p99 latency held best under co-load
#: (benchmarks/student.py --co-load 2, README "CPU threads on a shared computer")
DEFAULT_THREADS = 1
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


def set_torch_threads(threads: int) -> int:
    """Run torch's CPU operators on `threads` threads (0 = one per core), process-wide; returns the count."""
    import torch

    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count
