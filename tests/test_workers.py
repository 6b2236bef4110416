"""Worker processes (`day/workers.py`): results in the jobs' order, a worker's error raised in the caller,
and no workers where a process may not start any."""
from __future__ import annotations

import multiprocessing
import time

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


def test_a_large_delivery_is_parsed_apart_as_it_would_be_in_place_and_its_warnings_are_seen(city_factory, tmp_path,
                                                                                              monkeypatch, capfd):
    """A delivery of `STAGE_APART_FROM_BYTES` is staged in a worker process (`workers.apart`): the same staged
    files and report as in the date's own process, and what the worker logs (a quarantined file) reaches the
    date's log."""
    import json
    import logging

    from day import run
    from exchange import staging
    from settings import Settings, landed_dates
    from tests.conftest import copy_city

    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    d0 = landed_dates(home)[0]
    spoilt = sorted((home / "landing" / "police" / d0).glob("*.csv"))[0]
    spoilt.write_bytes(spoilt.read_bytes() + b"\n")  # no longer the manifest's checksum: quarantined
    settings, guards = Settings(home=home), staging.Guards()
    in_place = staging.stage(home, d0, guards)
    in_place_files = {p.name: p.read_bytes() for p in staging.staging_dir(home, d0).glob("*.parquet*")}
    monkeypatch.setattr(run, "STAGE_APART_FROM_BYTES", 1)
    monkeypatch.setattr(logging.getLogger("popbase"), "level", logging.INFO)
    capfd.readouterr()
    apart = run.stage(settings, d0, guards)
    assert f"quarantined {spoilt}" in capfd.readouterr().err  # logged by the worker
    assert json.loads(apart.to_json()) == json.loads(in_place.to_json())
    assert any(f.status == "quarantined" for f in apart.files) and any(f.status == "staged" for f in apart.files)
    assert {p.name: p.read_bytes() for p in staging.staging_dir(home, d0).glob("*.parquet*")} == in_place_files


def test_a_long_step_is_logged_as_it_ends(caplog):
    """A date's clock logs a step that took `log_from` seconds or more when it ends (a 10M date's staging is
    not silent for minutes); shorter steps only go into the figures."""
    import logging

    from day.clock import Clock

    steps, peaks = {}, {}
    clock = Clock(steps, peaks, log_as="20260301:", log_from=0.05)
    with caplog.at_level(logging.INFO, logger="popbase"):
        clock.step("quick")
        time.sleep(0.06)
        clock.step("stage")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("20260301: stage in 0.") and "GiB" in said[0]
    assert set(steps) == {"quick", "stage"} and steps["stage"] >= 0.05 and set(peaks) == set(steps)
