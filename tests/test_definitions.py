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


def test_backfill_through_dagster_equals_dates_one_by_one(city_factory, tmp_path):
    """A single-run backfill of every date through the Dagster assets gives the same base and outputs
    as running the dates one by one with the plain runner."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from exchange import runner
    from pipelines.assets.base import population_base
    from pipelines.assets.ingest import staged_deliveries
    from pipelines.assets.outputs import exports, reconciliation_reports, verification_task_files
    from store import db
    from tests.test_pipeline import assert_same, snapshot

    city = city_factory(persons=1500, days=7, seed=5)
    a = copy_city(city, tmp_path / "a")
    b = copy_city(city, tmp_path / "b")
    dates = runner.landed_dates(a)
    assert len(dates) == 8
    res = PopbaseResource(home=str(a), db_url=f"sqlite:///{a / 'popbase.db'}")
    assets = [staged_deliveries, population_base, exports, verification_task_files, reconciliation_reports]
    result = dg.materialize(assets, resources={"popbase": res}, instance=dg.DagsterInstance.ephemeral(),
                            tags={ASSET_PARTITION_RANGE_START_TAG: dates[0], ASSET_PARTITION_RANGE_END_TAG: dates[-1]})
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["delivery_structure"] is True
    assert runner.processed_dates(res.engine()) == dates
    eng_b = db.make_engine(f"sqlite:///{b / 'popbase.db'}")
    for d in dates:
        runner.process_dates(b, eng_b, [d])
    assert_same(snapshot(res.engine()), snapshot(eng_b))
    p = pd.read_parquet(a / "out" / "exports" / dates[-1] / "persons.parquet")
    q = pd.read_parquet(b / "out" / "exports" / dates[-1] / "persons.parquet")
    pd.testing.assert_frame_equal(p, q)


def test_a_structural_failure_blocks_the_load(city_factory, tmp_path):
    """A delivery missing required columns fails the blocking check: the base is not loaded."""
    from exchange import runner
    from pipelines.assets.base import population_base
    from pipelines.assets.ingest import staged_deliveries

    home = copy_city(city_factory(persons=1500, days=7, seed=5), tmp_path / "h")
    d0 = runner.landed_dates(home)[0]
    m = home / "landing" / "police" / d0 / "manifest.json"
    manifest = json.loads(m.read_text(encoding="utf-8"))
    manifest["files"][0]["table"] = "no_such_table"
    m.write_text(json.dumps(manifest), encoding="utf-8")
    res = PopbaseResource(home=str(home), db_url=f"sqlite:///{home / 'popbase.db'}")
    result = dg.materialize([staged_deliveries, population_base], partition_key=d0, resources={"popbase": res},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["delivery_structure"].passed is False
    assert "no_such_table" in json.dumps(checks["delivery_structure"].metadata["errors"].value)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "population_base" not in materialized
    assert runner.processed_dates(res.engine()) == []
