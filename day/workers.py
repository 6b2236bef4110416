"""Worker processes for the whole-city parts of a date. The date's Python runs on one core; where its work
splits into independent pieces (the delivered files' quality gates, the role index a chunk of records at a
time), a worker process takes some of them so that the machine's other cores work too. Workers are
spawned, not forked: they share nothing with the date's process but what they are sent, so that their
memory is the piece's, not a copy-on-write image of the whole city."""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from settings import LOG_FORMAT


def spare_cores() -> int:
    """Cores beyond the one the date's process runs on: 0 on a single-core machine, and in a daemonic
    process (one a multiprocessing pool started), which may not start processes of its own."""
    if not can_spawn():
        return 0
    return max(0, (os.cpu_count() or 1) - 1)


def can_spawn() -> bool:
    """Whether this process may start processes of its own (not a daemonic one a multiprocessing pool started)."""
    return not multiprocessing.current_process().daemon


def spawned(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes that log to stderr, as the CLI does, at this process's level for
    the project's logger (a bin linked in a worker logs its phases as the date's process would)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_log_to_stderr,
                               initargs=(logging.getLogger("popbase").getEffectiveLevel(),))


def apart(fn: Callable, *args):
    """`fn(*args)` in a worker process of its own (in place where this process may not start one): the memory
    the work takes, and the fragments its allocator would keep, leave with the worker. For a large date's
    parsing and cut, whose frames hold a table or the city at once. `fn` must be a module-level function."""
    if not can_spawn():
        return fn(*args)
    with spawned(1) as pool:
        return pool.submit(fn, *args).result()


def _log_to_stderr(level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("popbase")
    logger.addHandler(handler)
    logger.setLevel(level)


def made_ahead(fn: Callable, jobs: Iterable[tuple], ahead: int) -> Iterator:
    """`fn(*job)` for each job, in order, made in one worker process at most `ahead` jobs before the
    caller takes them: the caller consumes one result (writes it, say) while the worker makes the next.
    `fn` must be a module-level function (it is sent by name); an error in it is raised here."""
    with spawned(1) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(fn, *job))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def side_by_side(fn: Callable, jobs: list[tuple], workers: int) -> list:
    """`fn(*job)` for every job, in `workers` worker processes; the results in the jobs' order."""
    with spawned(workers) as pool:
        return list(pool.map(fn, *zip(*jobs))) if jobs else []
