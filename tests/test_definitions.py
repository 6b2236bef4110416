"""The Dagster code location: it loads, has the job, schedule and sensor, and runs a date in-process."""
from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from pipelines.definitions import defs
from pipelines.resources import PopbaseResource
from pipelines.sensors import manifest_sensor
from tests.conftest import copy_city


def test_code_location_loads_with_job_schedule_sensor():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("popbase_daily")
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("popbase_daily_0200")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    assert defs.resolve_sensor_def("manifest_sensor").job_name == "popbase_daily"
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"staged_deliveries", "population_base", "exports", "verification_task_files", "reconciliation_reports"} <= keys


def test_sensor_requests_each_manifest_once(city_factory, tmp_path, monkeypatch):
    home = copy_city(city_factory(persons=3000, days=3, seed=7), tmp_path / "home")
    monkeypatch.setenv("POPBASE_HOME", str(home))
    ctx = dg.build_sensor_context(cursor=None)
    first = list(manifest_sensor(ctx))
    manifests = sorted(home.glob("landing/*/*/manifest.json"))
    assert len(first) == len(manifests)
    assert {r.partition_key for r in first} == {m.parent.name for m in manifests}
    assert len({r.run_key for r in first}) == len(first)
    # same cursor: nothing new
    again = manifest_sensor(dg.build_sensor_context(cursor=ctx.cursor))
    assert isinstance(again, dg.SkipReason)
    # a changed manifest is seen again, with a new run key
    m = manifests[0]
    data = json.loads(m.read_text(encoding="utf-8"))
    data["note"] = "resent"
    m.write_text(json.dumps(data), encoding="utf-8")
    third = list(manifest_sensor(dg.build_sensor_context(cursor=ctx.cursor)))
    assert [r.partition_key for r in third] == [m.parent.name]
    assert third[0].run_key not in {r.run_key for r in first}


def test_materialize_in_process_equals_runner(city_factory, tmp_path):
    """The assets through Dagster give the same base as the plain runner, date by date."""
    from exchange import runner
    from store import db
    from tests.test_pipeline import assert_same, snapshot

    city = city_factory(persons=3000, days=3, seed=7)
    a = copy_city(city, tmp_path / "a")
    b = copy_city(city, tmp_path / "b")
    dates = runner.landed_dates(a)
    res = PopbaseResource(home=str(a), db_url=f"sqlite:///{a / 'popbase.db'}")
    from pipelines.assets.base import population_base
    from pipelines.assets.ingest import staged_deliveries
    from pipelines.assets.outputs import exports, reconciliation_reports, verification_task_files

    assets = [staged_deliveries, population_base, exports, verification_task_files, reconciliation_reports]
    instance = dg.DagsterInstance.ephemeral()
    for d in dates:
        result = dg.materialize(assets, partition_key=d, resources={"popbase": res}, instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["delivery_structure"] is True
    eng_b = db.make_engine(f"sqlite:///{b / 'popbase.db'}")
    runner.process_dates(b, eng_b, dates)
    assert_same(snapshot(res.engine()), snapshot(eng_b))
    p = pd.read_parquet(a / "out" / "exports" / dates[-1] / "persons.parquet")
    q = pd.read_parquet(b / "out" / "exports" / dates[-1] / "persons.parquet")
    pd.testing.assert_frame_equal(p, q)
