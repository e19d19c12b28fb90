"""One CPU for each server worker process (`STATESET_PIN_WORKERS`).

A worker is three busy threads: the event loop and granian's two I/O threads, which hand every
request, its body and its response to one another. On the small VMs measured here, waking a thread
on the other CPU costs ten times what it costs on the same one (a pipe round trip between two
processes: 65 µs across two vCPUs, 6 µs on one), and the scheduler spreads each worker's threads
over both CPUs. Held to a CPU of its own, a worker's hand-offs stay on it and the other worker has
the other CPU. On SQLite, where the whole database runs inside the workers, that gave creates +21–22 %,
pays +10–18 %, gets −5 to +6 % and a p95 at half the peak for gets 41–48 % lower (two sets of three
alternating pairs); with PostgreSQL, whose own processes need CPU time beside the workers, creates
lost 12 % and pays gained 10 % (two pairs), so there it stays off unless asked for (docs/benchmarks.md, session 17).

`stateset-server serve` decides (`tell_workers`) and tells its workers through the environment. Each
worker then picks its CPU alone: granian starts the workers one after another, so the order of their
process ids among their parent's children is their order, and the i-th takes the i-th CPU it may run
on. A thread inherits its creator's CPUs and granian starts its I/O threads after the app factory has
run, so pinning the factory's thread (`pin_this_worker`) pins the whole worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from stateset_server.settings import flag

__all__ = ["ENV", "allowed_cpus", "choose_cpu", "pin_this_worker", "resolve", "tell_workers"]

ENV = "STATESET_PIN_WORKERS"


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (none where the platform cannot tell)."""
    getter = getattr(os, "sched_getaffinity", None)
    return sorted(getter(0)) if getter is not None else []


def resolve(workers: int, database_url: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `serve` pins its `workers` (ValueError on a malformed setting): as set; by default
    (unset or `auto`) when two or more workers serve a SQLite database and there are two or more
    CPUs to put them on."""
    env = os.environ if environ is None else environ
    chosen = flag(ENV, env.get(ENV), auto=True)
    if chosen is not None:
        return chosen
    return workers >= 2 and database_url.startswith("sqlite") and len(allowed_cpus()) >= 2


def tell_workers(workers: int, database_url: str) -> bool:
    """Decide (`resolve`) for the `workers` about to be started, and set the decision in the
    environment they inherit (`pin_this_worker` reads it). ValueError on a malformed setting, so
    that a typo stops the server before any worker starts."""
    pinned = resolve(workers, database_url)
    os.environ[ENV] = "true" if pinned else "false"
    return pinned


def choose_cpu(pid: int, siblings: Sequence[int], allowed: Sequence[int]) -> int | None:
    """The CPU for the worker `pid` among its parent's children `siblings`: the i-th of them (in
    process id order, the order they were started in) gets the i-th of the `allowed` CPUs, wrapping
    around when there are more workers than CPUs. None when there is nothing to choose."""
    if pid not in siblings or len(allowed) < 2:
        return None
    return sorted(allowed)[sorted(siblings).index(pid) % len(allowed)]


def _command_line(pid: int | str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:  # gone meanwhile
        return None


def _siblings() -> list[int]:
    """The workers among this process's parent's children: those started with this one's command
    line (another child, such as multiprocessing's resource tracker, has its own). Linux; OSError
    elsewhere."""
    parent, own = os.getppid(), _command_line("self")
    with open(f"/proc/{parent}/task/{parent}/children") as listing:
        return [int(pid) for pid in listing.read().split() if _command_line(pid) == own]


def pin_this_worker(environ: Mapping[str, str] | None = None) -> int | None:
    """Hold this worker process, and every thread it starts from now on, to one CPU when the
    setting is true (`serve` sets it for its workers). The CPU, or None when it was not pinned: not
    asked to, or the platform cannot (no affinity calls, no /proc), which only costs speed."""
    env = os.environ if environ is None else environ
    try:
        if not flag(ENV, env.get(ENV), auto=True):
            return None
        cpu = choose_cpu(os.getpid(), _siblings(), allowed_cpus())
        if cpu is None:
            return None
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError, AttributeError):
        return None
    logging.getLogger("stateset_server").info("worker %d runs on CPU %d (%s)", os.getpid(), cpu, ENV)
    return cpu
