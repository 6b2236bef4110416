"""Worker processes (`day/workers.py`): results in the jobs' order, a worker's error raised in the caller,
and no workers where a process may not start any."""
from __future__ import annotations

import multiprocessing

import pytest

from day import workers


def _square_or_fail(n: int) -> int:  # module level: a spawned worker imports it by name
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


def test_made_ahead_gives_every_result_in_order_and_raises_a_workers_error():
    assert list(workers.made_ahead(_square_or_fail, ((n,) for n in range(7)), ahead=2)) == [n * n for n in range(7)]
    assert workers.side_by_side(_square_or_fail, [(3,), (1,), (2,)], 2) == [9, 1, 4]
    with pytest.raises(ValueError, match="negative: -1"):
        list(workers.made_ahead(_square_or_fail, [(1,), (-1,), (2,)], ahead=1))


def _spare_in(queue) -> None:
    queue.put(workers.spare_cores())


def test_a_daemonic_process_has_no_spare_cores():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_spare_in, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=60) == 0
    child.join()
