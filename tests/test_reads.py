"""A daily date reads what its deliveries reach, not the base (issue 15).

The store counts every row it hands out (`store.db.READ`); `DateResult.commit_rows_read` has the rows a
date's commit read, per table. On a generated city every daily date with incremental deliveries must
read far fewer rows than the base holds, bounded by a multiple of the rows it delivered, on SQLite and
PostgreSQL. (A date with a full extract compares the whole table it replaces and reads it: not bounded
here.)
Its outputs do not read the base back either: the exports are the previous date's with the persons and
links the date touched replaced (`exchange.outputs.merge_exports`), and must equal the exports written
from the whole base. (The task files hold every open task: they read the open tasks.)
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from day import run_dates
from day.run import outputs_complete
from exchange import outputs
from store import db
from tests.conftest import copy_city, settings_for

PER_ROW = 200  # rows read per row delivered, at most (the blocks of the changed roles, their persons)
FIXED = 3_000  # plus a fixed allowance (the model, the date-sensitive roles, a handful of lookups)


def _base_rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = ["links", "persons", "tasks", "role_index", "role_forms", *(t.name for t in db.SOURCE_TABLES.values())]
            return {t: int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{t}"')).scalar()) for t in tables}
    finally:
        engine.dispose()


def _assert_exports_are_the_whole_bases(db_url: str, home, tmp_path, date: str) -> None:
    """The exports a date wrote (merged from the previous date's) equal those written from the whole base."""
    from store import base

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            whole = outputs.write_exports(tmp_path / "whole", base.live_persons(conn), base.all_links(conn), date)
    finally:
        engine.dispose()
    for name, path in whole.items():
        merged = pd.read_parquet(home / "out" / "exports" / date / f"{name}.parquet")
        pd.testing.assert_frame_equal(merged, pd.read_parquet(path), obj=f"{date} {name}")


def test_a_daily_date_reads_what_its_deliveries_reach(city_factory, tmp_path, db_url):
    city = city_factory(persons=6000, days=3, seed=11, rebaseline=False)
    home = copy_city(city, tmp_path / "home")
    settings = settings_for(home, db_url, scoped_dates=True)
    dates = sorted(p.name for p in (home / "landing" / "police").iterdir())
    run_dates(settings, dates[:1], quality_gates=False)
    for date in dates[1:]:
        result = run_dates(settings, [date], quality_gates=False)[date]
        delivered = sum(f.received_rows for f in result.staged.files if f.status == "staged")
        read = result.commit_rows_read
        held = _base_rows(db_url)
        total = sum(read.values())
        assert 0 < delivered and total <= PER_ROW * delivered + FIXED, (date, delivered, read)
        for table, n in read.items():  # no table is read whole
            if held.get(table, 0) > 1000:
                assert n < 0.25 * held[table], (date, table, n, held[table])
        assert total < 0.25 * sum(held.values()), (date, total, held)
        # the city's running totals are what counting the whole base gives
        engine = sa.create_engine(db_url)
        try:
            with engine.connect() as conn:
                from day.scoped import MEASURE_KEYS
                from store import base
                kept = base.read_city_counts(conn)
                counted = base.role_measure_counts(conn)
                assert kept["methods"] == dict(sorted(base.link_methods(conn).items()))
                assert kept["persons"] == base.live_person_count(conn)
        finally:
            engine.dispose()
        kept_m = pd.DataFrame(kept["measures"], columns=[*MEASURE_KEYS, "n"]).sort_values(MEASURE_KEYS)
        counted = counted[counted["n"] > 0].sort_values(MEASURE_KEYS)
        pd.testing.assert_frame_equal(kept_m.reset_index(drop=True), counted.reset_index(drop=True), check_dtype=False)
        # the outputs: the exports merged from the previous date's read only the touched rows
        for table in ("links", "persons"):
            assert result.rows_read.get(table, 0) < 0.25 * held[table], (date, table, result.rows_read, held)
        _assert_exports_are_the_whole_bases(db_url, home, tmp_path, date)
    # the last date run again with nothing new reads nothing of the base and keeps its outputs; one of them gone,
    # the run mends them first (`mend_outputs`)
    out = home / "out"
    written = {p: p.stat().st_mtime_ns for kind in ("exports", "tasks", "reports") for p in (out / kind).rglob("*")
               if p.is_file() and dates[-1] in p.parts}
    again = run_dates(settings, [dates[-1]], quality_gates=False)[dates[-1]]
    assert not again.committed and again.outputs == {}
    assert sum(again.rows_read.values()) == 0, again.rows_read
    assert {p: p.stat().st_mtime_ns for p in written} == written
    gone = next(p for p in written if p.suffix == ".xlsx" and p.parent.name == dates[-1])
    gone.unlink()
    again = run_dates(settings, [dates[-1]], quality_gates=False)[dates[-1]]
    assert not again.committed and gone.exists() and outputs_complete(settings, dates[-1])


def _index_tables(url: str) -> dict[str, pd.DataFrame]:
    """The role index, its form rows and the meta rows (stamp, running totals) of a base, sorted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            out = {t: pd.read_sql_table(t, conn).sort_values(key).reset_index(drop=True)
                   for t, key in (("role_index", "role_key"), ("role_forms", "form_key"), ("meta", "key"))}
    finally:
        engine.dispose()
    return out


def test_the_whole_index_written_in_chunks_is_the_index_written_at_once(city_factory, tmp_path, monkeypatch):
    """The historical date writes the role index a chunk of records at a time (`day.scoped.write_full_index`):
    any chunk size gives the same index and the same running totals."""
    from day import scoped

    city = city_factory(persons=1500, days=1, seed=5)
    tables = {}
    for size in (10 ** 9, 301):
        monkeypatch.setattr(scoped, "ROLES_PER_CHUNK", size)
        home = copy_city(city, tmp_path / str(size))
        url = f"sqlite:///{home / 'popbase.db'}"
        dates = sorted(p.name for p in (home / "landing" / "police").iterdir())
        run_dates(settings_for(home, url, scoped_dates=True), dates[:1], write_outputs=False, quality_gates=False)
        tables[size] = _index_tables(url)
    assert len(tables[301]["role_index"]) > 5 * 301  # several chunks
    for t in tables[301]:
        pd.testing.assert_frame_equal(tables[301][t], tables[10 ** 9][t], obj=t)


def test_a_whole_base_date_rewrites_the_index_rows_of_changed_records_only(city_factory, tmp_path, monkeypatch, caplog):
    """A daily date that reads the whole base while the stored index is current (here every daily date:
    the scope is refused, as when it reaches past `incremental.max_share`) writes the index rows of the
    records that changed (`day.scoped.update_index`), not the whole index: the index and running totals
    come out as a whole index written anew gives them."""
    import logging
    import re

    from day import scoped

    city = city_factory(persons=1500, days=3, seed=5)
    tables = {}
    for mode in ("changed", "whole"):
        home = copy_city(city, tmp_path / mode)
        url = f"sqlite:///{home / 'popbase.db'}"
        dates = sorted(p.name for p in (home / "landing" / "police").iterdir())
        with monkeypatch.context() as m:
            m.setattr(scoped, "scoped_state", lambda *args, **kw: None)
            if mode == "whole":
                m.setattr(scoped, "index_is_current", lambda conn, cfg: False)
            with caplog.at_level(logging.INFO, logger="popbase"):
                run_dates(settings_for(home, url, scoped_dates=True), dates, write_outputs=False, quality_gates=False)
        tables[mode] = _index_tables(url)
        if mode == "changed":
            found = (re.search(r"role index of ([\d,]+) changed records written", r.getMessage()) for r in caplog.records)
            written = [int(m.group(1).replace(",", "")) for m in found if m]
            records = tables[mode]["role_index"]["record"].nunique()
            assert written and all(0 < n < 0.5 * records for n in written), (written, records)
    for t in tables["whole"]:
        pd.testing.assert_frame_equal(tables["changed"][t], tables["whole"][t], obj=t)


def test_a_full_extract_reads_the_table_it_replaces_not_the_base(city_factory, tmp_path, db_url):
    """A re-baseline (the women table delivered full, rows missing from it deleted) is compared with the
    whole table it replaces, which the date reads; the records it changed are the seeds of a scope, and no
    other table is read whole. The exports merged from the previous date's equal those of the whole base."""
    city = city_factory(persons=4000, days=3, seed=5)
    home = copy_city(city, tmp_path / "home")
    settings = settings_for(home, db_url, scoped_dates=True)
    dates = sorted(p.name for p in (home / "landing" / "police").iterdir())
    run_dates(settings, dates[:1], quality_gates=False)
    full_dates = 0
    for date in dates[1:]:
        result = run_dates(settings, [date], quality_gates=False)[date]
        full = {f.table for f in result.staged.files if f.status == "staged" and f.extract_type == "full"}
        if not full:
            continue
        full_dates += 1
        held = _base_rows(db_url)
        read = result.commit_rows_read
        for table, n in read.items():
            if table in {db.SOURCE_TABLES[t].name for t in full}:
                assert n >= held[table], (date, table, n, held[table])  # read whole, once or so
                assert n <= 3 * held[table], (date, table, n, held[table])
            elif held.get(table, 0) > 1000:
                assert n < 0.25 * held[table], (date, table, n, held[table])
        _assert_exports_are_the_whole_bases(db_url, home, tmp_path, date)
    assert full_dates == 1


def test_merged_exports_stream_the_previous_file_and_equal_the_whole_base(tmp_path, monkeypatch):
    """`merge_exports` reads the previous exports a few rows at a time (here 7, so that replaced, removed
    and new rows fall in every batch and between batches) and writes what `write_exports` writes from the
    whole base: the same rows in the same order."""
    import random

    rnd = random.Random(3)
    keys = sorted({(rnd.choice("AB"), rnd.choice(["hukou", "temp"]), f"{rnd.randrange(60):03d}", rnd.choice(["SELF", "ZF"]))
                   for _ in range(150)})

    def links(rows, tag):
        return pd.DataFrame([{"role_key": "|".join(k), "BM": k[0], "BH": k[1], "YWZJ": k[2], "JS": k[3],
                              "RKID": f"R{i % 40:03d}{tag}", "PPFS": "ID", "PPDF": "1.0000"} for i, k in enumerate(rows)])

    def persons(ids, tag):
        return pd.DataFrame([{"RKID": r, "XM": f"{r}{tag}", "status": "live"} for r in ids])

    before_links, before_persons = links(keys, ""), persons([f"R{i:03d}" for i in range(40)], "")
    outputs.write_exports(tmp_path, before_persons, before_links, "20260301")
    touched = set(rnd.sample(keys, 40)) | {keys[0], keys[-1]}
    gone = set(rnd.sample(sorted(touched), 10))
    new_keys = [("C", "temp", f"{i:03d}", "SELF") for i in range(5)] + [("A", "hukou", "0005", "SELF")]
    fresh_links = links(sorted((touched - gone) | set(new_keys)), "x")
    rkids = {f"R{i:03d}" for i in range(0, 40, 3)}
    fresh_persons = persons(sorted(rkids - {"R003"}) + ["R999"], "x")
    after_links = pd.concat([before_links[~before_links["role_key"].isin({"|".join(k) for k in touched})], fresh_links])
    after_persons = pd.concat([before_persons[~before_persons["RKID"].isin(rkids)], fresh_persons])
    monkeypatch.setattr(outputs, "MERGE_ROWS", 7)
    merged = outputs.merge_exports(tmp_path, "20260301", "20260302", fresh_persons, rkids | {"R999"}, fresh_links,
                                   {"|".join(k) for k in touched | set(new_keys)})
    whole = outputs.write_exports(tmp_path / "whole", after_persons, after_links, "20260302")
    for name in ("persons", "links"):
        got = pd.read_parquet(merged[name])
        assert len(got) == len(pd.read_parquet(whole[name])) > 30
        pd.testing.assert_frame_equal(got, pd.read_parquet(whole[name]), obj=name)


def test_a_date_says_where_its_time_went(city_factory, tmp_path, caplog):
    """Each date logs its steps ("<D> in steps: stage ..., outputs ...", what benchmarks/scale.py reads):
    the historical date reads the whole base, a daily date its scope, and the steps add up to the date; and
    the parts of its outputs."""
    import logging

    from benchmarks import scale

    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    dates = sorted(p.name for p in (home / "landing" / "police").iterdir())
    with caplog.at_level(logging.INFO, logger="popbase"):
        results = run_dates(settings_for(home, f"sqlite:///{home / 'popbase.db'}", scoped_dates=True), dates)
    first, daily = results[dates[0]], results[dates[1]]
    for r, read in ((first, "read base"), (daily, "scope")):
        assert {"stage", "gates", read, "process", "write", "index", "outputs"} <= set(r.steps), r.steps
        assert abs(sum(r.steps.values()) - r.seconds) < 0.05 * r.seconds + 0.05, (r.steps, r.seconds)
        # the process's high-water mark after each step, in GiB: never above the one after the last step
        assert set(r.step_peaks) == set(r.steps) and 0 < min(r.step_peaks.values()), r.step_peaks
        assert max(r.step_peaks.values()) == r.step_peaks["outputs"], r.step_peaks
        line = [m.getMessage() for m in caplog.records if m.getMessage().startswith(f"{r.business_date} in steps: ")]
        assert scale.parse_steps(line[-1]) == ({k: round(v, 1) for k, v in r.steps.items()},
                                               {k: round(v, 1) for k, v in r.step_peaks.items()})
        # and its outputs their parts, within the outputs step
        line = [m.getMessage() for m in caplog.records if m.getMessage().startswith(f"outputs of {r.business_date} in")]
        parts = scale.parse_output_parts(line[-1])
        assert set(parts) == {"exports", "task files", "rejects/receipts/reports"}, parts
        assert sum(parts.values()) <= r.steps["outputs"] + 0.15, (parts, r.steps)
    assert "read base" not in daily.steps


def test_task_files_written_by_a_worker_beside_the_exports_merge_are_the_same(city_factory, tmp_path, monkeypatch,
                                                                             caplog):
    """A scoped date with a large backlog has its task files written by a worker process while it merges its
    exports (`day.jobs.task_files`; forced here by a threshold of 0): every output of every date is what the
    date's own process writes."""
    import logging

    from day import run as day_run
    from tests.test_backfill_cli import assert_same_outputs

    city = city_factory(persons=500, days=2, seed=11)
    a, b = copy_city(city, tmp_path / "a"), copy_city(city, tmp_path / "b")
    dates = sorted(p.name for p in (city / "landing" / "police").iterdir())
    run_dates(settings_for(a), dates)
    monkeypatch.setattr(day_run, "TASK_FILES_BESIDE_FROM", 0)
    with caplog.at_level(logging.INFO, logger="popbase"):
        run_dates(settings_for(b), dates)
    beside = [r.getMessage() for r in caplog.records if "task files (waited)" in r.getMessage()]
    assert len(beside) == len(dates) - 1  # every daily date (the first date writes from the base in memory)
    assert any(p.suffix == ".xlsx" for p in (b / "out" / "tasks").rglob("*"))
    assert_same_outputs(a, b)
