"""The Dagster code location: it loads, has the job, schedule and sensor, and runs a date in-process
through the one path (`day.run_dates`), showing what ran: each asset once per run with its metadata,
checks attached to the partition, partitions from the first landed date."""
from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from pipelines.definitions import build_definitions, defs
from pipelines.resources import PopbaseResource
from settings import FIRST_DATE_FILE, Settings, landed_dates
from store import db
from store.base import processed_dates
from tests.conftest import copy_city, run

ASSETS = {"staged_deliveries", "population_base", "exports", "verification_task_files", "reconciliation_reports"}


def _materialize(settings: Settings, **kw):
    d = build_definitions(settings)
    return dg.materialize(d.assets, resources={"popbase": PopbaseResource.from_settings(settings)},
                          instance=dg.DagsterInstance.ephemeral(), **kw)


def test_code_location_loads_with_job_schedule_sensor():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("popbase_daily")
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("popbase_daily_0200")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    assert defs.resolve_sensor_def("manifest_sensor").job_name == "popbase_daily"
    assert ASSETS <= {k.to_user_string() for k in defs.resolve_all_asset_keys()}


def test_partitions_start_at_the_first_landed_date_and_stay_there(city_factory, tmp_path):
    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    dates = landed_dates(home)
    partitions = build_definitions(Settings(home=home)).resolve_job_def("popbase_daily").partitions_def
    assert partitions.get_first_partition_key() == dates[0]
    run(home, "", dates[:1])
    assert (home / FIRST_DATE_FILE).read_text(encoding="utf-8").strip() == dates[0]
    # a delivery landing later for an earlier folder does not move the first partition
    early = home / "landing" / "police" / "20200101"
    early.mkdir(parents=True)
    (early / "manifest.json").write_text("{}", encoding="utf-8")
    assert Settings(home=home).first_date == dates[0]


def test_sensor_requests_each_manifest_once(city_factory, tmp_path):
    home = copy_city(city_factory(persons=3000, days=3, seed=7), tmp_path / "home")
    settings = Settings(home=home)
    sensor = build_definitions(settings).resolve_sensor_def("manifest_sensor")
    resources = {"popbase": PopbaseResource.from_settings(settings)}

    def tick(cursor):
        return sensor(dg.build_sensor_context(cursor=cursor, resources=resources))

    ctx = dg.build_sensor_context(cursor=None, resources=resources)
    first = list(sensor(ctx))
    manifests = sorted(home.glob("landing/*/*/manifest.json"))
    assert len(first) == len(manifests)
    assert {r.partition_key for r in first} == {m.parent.name for m in manifests}
    assert len({r.run_key for r in first}) == len(first)
    assert isinstance(tick(ctx.cursor), dg.SkipReason)  # same cursor: nothing new
    # a changed manifest is seen again, with a new run key
    m = manifests[0]
    data = json.loads(m.read_text(encoding="utf-8"))
    data["note"] = "resent"
    m.write_text(json.dumps(data), encoding="utf-8")
    third = list(tick(ctx.cursor))
    assert [r.partition_key for r in third] == [m.parent.name]
    assert third[0].run_key not in {r.run_key for r in first}


def test_backfill_through_dagster_equals_dates_one_by_one(city_factory, tmp_path):
    """A single-run backfill of every date through the Dagster assets gives the same base and outputs
    as running the dates one by one; every asset is materialised once, with its metadata."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from tests.test_pipeline import assert_same, snapshot

    city = city_factory(persons=1500, days=7, seed=5)
    a = copy_city(city, tmp_path / "a")
    b = copy_city(city, tmp_path / "b")
    dates = landed_dates(a)
    assert len(dates) == 8
    settings = Settings(home=a)
    result = _materialize(settings, tags={ASSET_PARTITION_RANGE_START_TAG: dates[0],
                                          ASSET_PARTITION_RANGE_END_TAG: dates[-1]})
    assert result.success
    events = result.get_asset_materialization_events()
    got = sorted((e.asset_key.to_user_string(), e.partition) for e in events)
    assert got == sorted((a, d) for a in ASSETS for d in dates)  # each asset once per partition of the run
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in events}
    assert meta["population_base"]["dagster/row_count"].value > 0
    assert isinstance(meta["population_base"]["link_rate"].value, float)
    assert {r.data["department"] for r in meta["population_base"]["tasks_by_department"].value.records} == {
        "police", "civil", "family_planning", "disability"}
    assert meta["reconciliation_reports"]["summary.html"].value.endswith(f"{dates[-1]}/summary.html")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["delivery_structure"].passed is True
    assert isinstance(checks["link_rate"].metadata["link_rate"].value, float)
    eng_a = db.make_engine(settings.db_url)
    assert processed_dates(eng_a) == dates
    eng_b = db.make_engine(f"sqlite:///{b / 'popbase.db'}")
    for d in dates:
        run(b, eng_b, [d])
    assert_same(snapshot(eng_a), snapshot(eng_b))
    p = pd.read_parquet(a / "out" / "exports" / dates[-1] / "persons.parquet")
    q = pd.read_parquet(b / "out" / "exports" / dates[-1] / "persons.parquet")
    pd.testing.assert_frame_equal(p, q)
    eng_a.dispose()
    eng_b.dispose()


def test_check_results_belong_to_their_partition(city_factory, tmp_path):
    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    d0 = landed_dates(home)[0]
    with dg.DagsterInstance.ephemeral() as instance:
        settings = Settings(home=home)
        d = build_definitions(settings)
        assert dg.materialize(d.assets, partition_key=d0, instance=instance,
                              resources={"popbase": PopbaseResource.from_settings(settings)}).success
        key = dg.AssetCheckKey(dg.AssetKey("population_base"), "link_rate")
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        assert records and records[0].event.asset_check_evaluation.partition == d0


def test_a_structural_failure_blocks_the_date(city_factory, tmp_path):
    """A manifest naming an unknown table fails the structure check: the run fails with the reason and
    the base is not loaded."""
    home = copy_city(city_factory(persons=1500, days=7, seed=5), tmp_path / "h")
    d0 = landed_dates(home)[0]
    m = home / "landing" / "police" / d0 / "manifest.json"
    manifest = json.loads(m.read_text(encoding="utf-8"))
    manifest["files"][0]["table"] = "no_such_table"
    m.write_text(json.dumps(manifest), encoding="utf-8")
    settings = Settings(home=home)
    result = _materialize(settings, partition_key=d0, raise_on_error=False)
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["delivery_structure"].passed is False
    assert "no_such_table" in checks["delivery_structure"].description
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no_such_table" in failure.event_specific_data.error.message
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"staged_deliveries"}
    assert processed_dates(db.engine_for(settings.db_url)) == []


def test_a_held_full_extract_and_a_quarantined_file_show_in_dagster(city_factory, tmp_path):
    """The run of a date with exceptions succeeds (the rest of the date is loaded), and its
    delivery_exceptions check fails as a warning on that partition, naming each file and why."""
    from tests.test_hostile import _manifest, full_hukou_as_short_delivery

    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    d0, d1, _ = landed_dates(home)
    full_hukou_as_short_delivery(home, d0, d1, 100)
    civil = home / "landing" / "civil" / d1
    spoilt = _manifest(civil)["files"][0]["path"]
    (civil / spoilt).write_bytes((civil / spoilt).read_bytes() + b"\n")  # checksum no longer matches
    settings = Settings(home=home)
    with dg.DagsterInstance.ephemeral() as instance:
        d = build_definitions(settings)
        res = {"popbase": PopbaseResource.from_settings(settings)}
        assert dg.materialize(d.assets, partition_key=d0, instance=instance, resources=res).success
        result = dg.materialize(d.assets, partition_key=d1, instance=instance, resources=res)
    assert result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "delivery_exceptions")
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert "hukou_full.csv: 全量文件行数不足" in check.description and f"{spoilt}: 文件校验和不符" in check.description
    assert check.metadata["exceptions"].value >= 2


def test_the_resource_carries_every_setting(tmp_path):
    """Dagster runs a date with the settings the resource gives back: every field must survive the trip
    (POPBASE_SCOPED_DATES was once dropped on the way, so `popbase run` ignored it)."""
    import dataclasses

    from settings import Settings

    s = Settings(home=tmp_path, db_url="sqlite:///x.db", first_date="20260301", incremental_linking=False,
                 full_relink=True, scoped_dates=False, quality_config=tmp_path / "q.json",
                 linkage_config=tmp_path / "l.json", bin_roles=7)
    assert all(getattr(s, f.name) != f.default for f in dataclasses.fields(Settings)
               if f.default is not dataclasses.MISSING)  # every field differs from its default
    assert PopbaseResource.from_settings(s).settings == s


def test_scoped_dates_are_on_unless_switched_off():
    from settings import Settings

    assert Settings.from_env({}).scoped_dates
    assert not Settings.from_env({"POPBASE_SCOPED_DATES": "0"}).scoped_dates
    assert PopbaseResource.from_settings(Settings.from_env({})).settings.scoped_dates


def test_the_bin_size_of_a_large_first_date_is_read_from_the_environment():
    import pytest

    from settings import DEFAULT_BIN_ROLES, Settings

    assert Settings.from_env({}).bin_roles == DEFAULT_BIN_ROLES
    assert Settings.from_env({"POPBASE_BIN_ROLES": "0"}).bin_roles == 0
    assert Settings.from_env({"POPBASE_BIN_ROLES": "200_000"}).bin_roles == 200_000
    with pytest.raises(ValueError, match="POPBASE_BIN_ROLES must be a whole number"):
        Settings.from_env({"POPBASE_BIN_ROLES": "lots"})
