"""Coordinator side: start generator processes, exchange pipe messages, sum up figures."""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from bench.wire import LINE, WS

# fork: children start at once and need nothing re-imported; the bench is Linux-only anyway.
CTX = multiprocessing.get_context("fork")


class BenchError(Exception):
    """The scenario could not run (server down, workers died, timeout); exit code 2."""


class Worker:
    """One generator process and the coordinator's end of its pipe."""

    def __init__(self, name: str, target: Callable[..., None], plan: Any) -> None:
        self.name = name
        self.pipe, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, plan), name=name, daemon=True)
        self.proc.start()
        child.close()
        self.replies: dict[str, dict] = {}

    def send(self, *msg: str) -> None:
        try:
            self.pipe.send(msg)
        except (OSError, ValueError):
            pass  # already gone; the waits report it

    def cpu_note(self) -> str:
        return f"{self.name} pid {self.proc.pid}"


def collect(workers: Sequence[Worker], kind: str, deadline: float) -> list[Worker]:
    """Wait until every worker has sent a `kind` message; return those that did not in time."""
    missing = {w.pipe: w for w in workers if kind not in w.replies}
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for pipe in wait(list(missing), timeout=left):
            w = missing[pipe]
            try:
                name, info = pipe.recv()
            except (EOFError, OSError):
                raise BenchError(f"{w.name} died (exit code {w.proc.exitcode})") from None
            w.replies[name] = info
            if name == kind:
                del missing[pipe]
    return list(missing.values())


def stop(workers: Sequence[Worker], timeout: float = 10.0) -> None:
    """Ask every worker to close its sockets and exit; kill the ones that do not."""
    for w in workers:
        w.send("stop")
    end = time.monotonic() + timeout
    for w in workers:
        w.proc.join(max(0.1, end - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1)


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    """Deal items round-robin so every process gets the same mix of doors."""
    return [list(items[i::parts]) for i in range(parts) if items[i::parts]]


def doors_for(door: str, count: int) -> list[str]:
    """The door of each connection: all one kind, or alternating for "mixed"."""
    if door == "mixed":
        return [LINE if i % 2 == 0 else WS for i in range(count)]
    return [door] * count


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def fmt_num(x: float) -> str:
    """Thousands separators for counts and rates."""
    return f"{x:,.0f}"
