"""Benchmark plumbing: busy co-processes, and configurations run in worker processes, interleaved.

A perception computer is shared: other nodes keep the cores busy while the segmenter works. Two tools
to measure that honestly on a machine whose background load also drifts:

- `BusyProcesses(n)`: n processes that each spin one core at 100 % (a pure-Python loop, like any
  CPU-bound node); `pause()` / `resume()` stop and continue them with SIGSTOP / SIGCONT, so quiet and
  loaded blocks alternate within one run and see the same background load.
- `Worker(target, config, env)`: one configuration in its own spawned process, started with its own
  environment (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads, so it cannot change inside one
  process) and with its own peak memory (``ru_maxrss`` of that process: no sampling thread beside the
  timed work). `run(index)` asks it for one timed call and returns its timings; workers are driven in
  turn, one call each per round, so every configuration sees the same machine.

Benchmarks import this file from their own folder (``benchmarks/`` is on ``sys.path`` when a script
there runs).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

BUSY_LOOP = "while True: pass"  # one core at 100 %: a CPU-bound co-process


class BusyProcesses:
    """`count` spinning processes; running after `start()` until `stop()` (also a context manager)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._processes: list[subprocess.Popen] = []
        self.running = False

    def start(self) -> BusyProcesses:
        self._processes = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(self.count)]
        self.running = bool(self._processes)
        return self

    def pause(self) -> None:
        for process in self._processes:
            process.send_signal(signal.SIGSTOP)
        self.running = False

    def resume(self) -> None:
        for process in self._processes:
            process.send_signal(signal.SIGCONT)
        self.running = bool(self._processes)

    def stop(self) -> None:
        for process in self._processes:
            process.send_signal(signal.SIGCONT)  # a stopped process must run to take SIGTERM
            process.terminate()
        for process in self._processes:
            process.wait(timeout=10)
        self._processes = []
        self.running = False

    def __enter__(self) -> BusyProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(target: Callable[[dict[str, Any]], Any], config: dict[str, Any], pipe: Any) -> None:
    """Worker main: `target(config)` returns a callable `run(index) -> dict` and a `stats() -> dict`."""
    try:
        run, stats = target(config)
    except Exception as error:  # noqa: BLE001 - reported to the parent as this configuration's error
        pipe.send({"error": f"{type(error).__name__}: {error}"})
        return
    pipe.send({"ready": True})
    while True:
        command, argument = pipe.recv()
        if command == "run":
            pipe.send(run(argument))
        elif command == "stats":
            pipe.send(stats())
        else:
            return


class Worker:
    """One configuration in a spawned process with environment `env` (added to this process's)."""

    def __init__(self, target: Callable[[dict[str, Any]], Any], config: dict[str, Any],
                 env: Mapping[str, str | None] | None = None) -> None:
        self.config = config
        self.error: str | None = None
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        with _environment(env or {}):  # a spawned child starts with this process's environment
            self._process = context.Process(target=_serve, args=(target, config, child), daemon=True)
            self._process.start()
        child.close()

    def wait_ready(self) -> bool:
        """Block until the worker has loaded its configuration; False (and `.error`) when it failed."""
        reply = self._pipe.recv()
        self.error = reply.get("error")
        return self.error is None

    def run(self, index: int) -> dict[str, Any]:
        self._pipe.send(("run", index))
        return self._pipe.recv()

    def stats(self) -> dict[str, Any]:
        self._pipe.send(("stats", None))
        return self._pipe.recv()

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._pipe.send(("quit", None))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()


@contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (value) or remove (None) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        _set_environment(changes)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB), from the kernel: no sampling needed."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB
