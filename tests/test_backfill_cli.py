"""A backfill launched from the command line (`dagster job backfill`) and run by a `dagster-daemon`.

The CLI creates one run per business date and queues them all at once; the daemon's run queue starts
them together. The runs must still apply the dates in order (the run lock, earlier dates first) and
every date's outputs must show the base right after that date: the result equals running the dates
one by one. Subprocesses only (daemon, CLI, code servers, run workers), each in its own process group
that is killed at the end; no ports (the code servers listen on Unix sockets, no webserver).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tests.conftest import copy_city, run
from settings import landed_dates
from store.base import processed_dates

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEADLINE_S = 300  # hard limit for launch + every run; they take ~65 s on 2 CPUs shared with other jobs
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


def _stop(proc: subprocess.Popen | None) -> None:
    """Terminate the process group of `proc` (daemon or CLI with their code servers and run workers)."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            # the group may outlive its leader (run workers): make sure it is gone
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        break


def _out_files(home: Path) -> dict[str, Path]:
    out = home / "out"
    return {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_outputs(a: Path, b: Path) -> None:
    """The outputs of every date, not only the last one (an earlier date's must not show later data)."""
    fa, fb = _out_files(a), _out_files(b)
    assert sorted(fa) == sorted(fb)
    for name, path in fa.items():
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(fb[name]), obj=name)
        elif not name.endswith(".xlsx"):  # xlsx files carry their creation time
            assert path.read_bytes() == fb[name].read_bytes(), name


def test_cli_backfill_with_daemon_equals_dates_one_by_one(city_factory, tmp_path):
    import dagster as dg

    from store import db
    from tests.test_pipeline import assert_same, snapshot

    city = city_factory(persons=500, days=2, seed=11)
    a = copy_city(city, tmp_path / "a")
    b = copy_city(city, tmp_path / "b")
    dates = landed_dates(a)
    assert len(dates) == 3
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "POPBASE_HOME": str(a), "GX_ANALYTICS_ENABLED": "False"}
    env.pop("POPBASE_DB_URL", None)  # SQLite under POPBASE_HOME
    logs = tmp_path / "logs"
    logs.mkdir()
    workspace = str(ROOT / "workspace.yaml")

    daemon = cli = None
    t0 = time.monotonic()
    # the instance's storage is created here, once: the daemon and the CLI creating it at the same
    # time can leave two alembic heads and fail both
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        try:
            with open(logs / "daemon.log", "wb") as daemon_log, open(logs / "cli.log", "wb") as cli_log:
                daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", workspace], cwd=ROOT, env=env,
                                          stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True)
                cli = subprocess.Popen([str(BIN / "dagster"), "job", "backfill", "-w", workspace, "-j", "popbase_daily",
                                        "--from", dates[0], "--to", dates[-1], "--noprompt"],
                                       cwd=ROOT, env=env, stdout=cli_log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
                rc = cli.wait(timeout=DEADLINE_S)
            cli_out = (logs / "cli.log").read_text(encoding="utf-8", errors="replace")
            assert rc == 0, cli_out[-5000:]
            assert "Launched backfill job" in cli_out, cli_out[-5000:]
            t_cli = time.monotonic() - t0

            runs = []
            while time.monotonic() - t0 < DEADLINE_S:
                runs = instance.get_runs()
                if len(runs) >= len(dates) and all(r.is_finished for r in runs):
                    break
                if daemon.poll() is not None:
                    break
                time.sleep(1)
            t_runs = time.monotonic() - t0
            daemon_out = lambda: (logs / "daemon.log").read_text(encoding="utf-8", errors="replace")[-5000:]  # noqa: E731
            assert runs and all(r.is_finished for r in runs), (
                f"backfill not finished after {t_runs:.0f}s: {[(r.tags.get('dagster/partition'), r.status.value) for r in runs]}"
                f"\n{daemon_out()}")
            by_date = {r.tags.get("dagster/partition"): r for r in runs}
            assert len(runs) == len(dates) and sorted(by_date) == dates  # one run per business date
            failed = {d: r.status.value for d, r in by_date.items() if r.status != dg.DagsterRunStatus.SUCCESS}
            assert not failed, f"{failed}\n{daemon_out()}"
            assert len({r.tags.get("dagster/backfill") for r in runs}) == 1
        finally:
            _stop(cli)
            _stop(daemon)
    print(f"\nCLI returned after {t_cli:.1f}s, {len(runs)} runs succeeded after {t_runs:.1f}s")

    eng_a = db.make_engine(f"sqlite:///{a / 'popbase.db'}")
    eng_b = db.make_engine(f"sqlite:///{b / 'popbase.db'}")
    try:
        assert processed_dates(eng_a) == dates
        for d in dates:
            run(b, eng_b, [d])
        assert_same(snapshot(eng_a), snapshot(eng_b))
    finally:
        eng_a.dispose()
        eng_b.dispose()
    assert_same_outputs(a, b)


def test_an_earlier_date_run_again_keeps_the_outputs_of_its_day(city_factory, tmp_path):
    """Outputs show the base right after their date: run again through Dagster once a later date has
    been processed, an earlier date leaves its outputs as they were written (they equal running the
    dates one by one)."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.resources import PopbaseResource
    from settings import Settings
    from store import db

    city = city_factory(persons=500, days=2, seed=11)
    a = copy_city(city, tmp_path / "a")
    b = copy_city(city, tmp_path / "b")
    d0, d1 = landed_dates(a)[:2]
    settings = Settings(home=a)
    assets = build_definitions(settings).assets
    res = {"popbase": PopbaseResource.from_settings(settings)}
    with dg.DagsterInstance.ephemeral() as instance:
        for date in (d0, d1, d0):
            assert dg.materialize(assets, partition_key=date, resources=res, instance=instance).success
    eng_b = db.make_engine(f"sqlite:///{b / 'popbase.db'}")
    for d in (d0, d1):
        run(b, eng_b, [d])
    eng_b.dispose()
    assert_same_outputs(a, b)
