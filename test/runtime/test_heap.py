"""elite_ros.heap: freed heap memory stays in the process, so re-allocating it costs no page faults."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Five rounds of: allocate and touch two 24 MB blocks, free both (as a scan's temporaries come and go);
# print the minor page faults of the last four rounds.
PROBE = """
import ctypes, resource, sys
from elite_ros.heap import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 24 * 1024 * 1024
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(size) for _ in range(2)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[1:]))
"""


def _probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True).stdout
    applied, faults = out.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc malloc's")
def test_reallocating_a_freed_block_touches_no_new_pages():
    pages = 4 * 2 * 24 * 1024 * 1024 // 4096  # what the last four rounds fault when nothing is reused
    applied, faults = _probe("retain")
    assert applied
    assert faults < pages // 20, f"{faults} page faults over four rounds of 2 x 24 MB"
    # glibc's default gives the freed 48 MB back to the kernel (trim): every round faults it in again
    _, default_faults = _probe("default")
    assert default_faults > pages // 2


def test_segmenter_on_cpu_applies_it(monkeypatch, tmp_path):
    from elite_ros import segmenter as segmenter_module

    calls = []
    monkeypatch.setattr(segmenter_module, "retain_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setenv("ELITE_ROS_CACHE", str(tmp_path))
    segmenter_module.Segmenter.from_checkpoint(None, device="cpu", warmup=False)
    assert calls == [True]
    segmenter_module.Segmenter.from_checkpoint(None, device="cpu", warmup=False, retain_memory=False)
    assert calls == [True]
