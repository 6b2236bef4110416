"""End to end on a generated city: loading, reconciliation, idempotence, atomicity, outputs — on each backend."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from store import db
from tests.conftest import copy_city, database, run
from settings import landed_dates
from store.base import processed_dates

RECON_FIELDS = ["manifest_rows", "received_rows", "loaded_rows", "rejected_rows", "inserted", "updated", "deleted",
                "unchanged", "ignored_stale", "checksum_ok"]


def snapshot(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """Every table of the base, sorted, as text (audit without its wall-clock column)."""
    out = {}
    with engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            frame = db.read_frame(conn, table)
            if table.name == "audit":
                frame = frame.drop(columns=["id", "at"], errors="ignore")
            if table.name == "runs":
                frame = frame.drop(columns=["finished_at"], errors="ignore")
            out[table.name] = frame.sort_values(list(frame.columns)).reset_index(drop=True) if len(frame) else frame
    return out


def assert_same(a: dict, b: dict) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def city_run(request, city_factory, tmp_path_factory):
    """A small city with 7 days of increments (with every delivery anomaly), run date by date, per backend.

    The tests using it only read, or re-run dates (which must change nothing)."""
    city = city_factory(persons=2000, days=7, seed=7)
    folder = tmp_path_factory.mktemp(f"run_{request.param}")
    with database(request.param, folder) as url:
        home = copy_city(city, folder / "home")
        engine = db.make_engine(url)
        dates = landed_dates(home)
        results = run(home, engine, dates)
        yield city, home, engine, dates, results
        engine.dispose()


def test_every_delivered_row_is_loaded_or_rejected_and_reports_match_truth(city_run):
    city, home, engine, dates, results = city_run
    assert len(dates) == 8
    kinds = {a["type"] for a in json.loads((city / "truth" / "deliveries.json").read_text("utf-8"))["anomalies"]}
    assert {"REPLAY", "STALE_OP", "CHECKSUM_MISMATCH", "ROW_COUNT_DEVIATION", "DELETE_UNKNOWN", "FULL_REBASELINE",
            "BAD_FIELD_COUNT", "BAD_ENCODING"} <= kinds
    for date in dates:
        truth = json.loads((city / "truth" / f"reconciliation_{date}.json").read_text(encoding="utf-8"))["departments"]
        for dept, rep in results[date]["departments"].items():
            on_disk = json.loads((home / "out" / "reports" / date / f"reconciliation_{dept}.json").read_text("utf-8"))
            assert on_disk["tables"] == rep["tables"]
            expected_dept = truth.get(dept, {"tables": {}})
            if expected_dept.get("replay"):
                assert [b["status"] for b in rep["batches"]] == ["replay"], (date, dept)
                assert rep["tables"] == {}, (date, dept)
                continue
            assert set(rep["tables"]) == set(expected_dept["tables"]), (date, dept)
            for table, figs in rep["tables"].items():
                assert figs["received_rows"] == figs["loaded_rows"] + figs["rejected_rows"], (date, table)
                expected = expected_dept["tables"][table]
                got = {k: figs[k] for k in RECON_FIELDS}
                assert got == {k: expected[k] for k in RECON_FIELDS}, (date, dept, table)
                assert bool(figs["deviation"]) == bool(expected["deviation"]), (date, dept, table)


def test_rejected_rows_are_written_with_line_and_reason(city_run):
    city, home, engine, dates, results = city_run
    total = sum(t["rejected_rows"] for r in results.values() for d in r["departments"].values()
                for name, t in d["tables"].items() if name != "verification_tasks")
    files = list((home / "out" / "rejects").glob("*/*_rejects.csv"))
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False, encoding="utf-8-sig") for f in files]
    rows = pd.concat(frames) if frames else pd.DataFrame(columns=["line", "reason", "raw"])
    assert total > 0, "the generated city injects unreadable rows"
    assert len(rows) == total
    assert rows["line"].str.fullmatch(r"\d+").all() and (rows["reason"] != "").all()


def test_quarantine_and_replay_load_nothing(city_run):
    city, home, engine, dates, results = city_run
    statuses = [(b["status"], d) for r in results.values() for d, rep in r["departments"].items() for b in rep["batches"]]
    assert any(s == "replay" for s, _ in statuses), "the generated city replays a batch"
    quarantined = [(date, dept, t) for date, r in results.items() for dept, rep in r["departments"].items()
                   for t, f in rep["tables"].items() if not f["checksum_ok"]]
    assert quarantined, "the generated city injects a corrupted file"
    for date, dept, table in quarantined:
        f = results[date]["departments"][dept]["tables"][table]
        assert f["loaded_rows"] == 0 and f["received_rows"] == 0 and f["manifest_rows"] > 0
    assert list((home / "out" / "quarantine").rglob("*.*"))


def test_rerunning_any_date_changes_nothing(city_run):
    city, home, engine, dates, results = city_run
    before = snapshot(engine)
    persons_before = pd.read_parquet(home / "out" / "exports" / dates[-1] / "persons.parquet")
    again = run(home, engine, [dates[0]])
    again.update(run(home, engine, [dates[-1]]))
    assert_same(before, snapshot(engine))
    assert again[dates[-1]] == results[dates[-1]]
    pd.testing.assert_frame_equal(persons_before, pd.read_parquet(home / "out" / "exports" / dates[-1] / "persons.parquet"))


def test_a_run_that_dies_leaves_the_base_as_it_was(city_factory, tmp_path, monkeypatch):
    city = city_factory(persons=3000, days=3, seed=7)
    home = copy_city(city, tmp_path / "home")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    dates = landed_dates(home)
    run(home, engine, [dates[0]])
    before = snapshot(engine)

    def boom(*a, **k):
        raise RuntimeError("disk full while writing tasks")

    monkeypatch.setattr(db, "sync_frame", _fail_on(db.sync_frame, db.tasks, boom))
    with pytest.raises(RuntimeError, match="disk full"):
        run(home, engine, [dates[1]])
    assert_same(before, snapshot(engine))
    monkeypatch.undo()
    run(home, engine, [dates[1]])
    assert dates[1] in processed_dates(engine)


def _fail_on(real, table, boom):
    def wrapper(conn, tbl, old, new):
        if tbl is table:
            boom()
        return real(conn, tbl, old, new)
    return wrapper


def test_outputs_exist_and_exports_cover_live_roles(city_run):
    city, home, engine, dates, results = city_run
    d = dates[-1]
    out = home / "out"
    persons = pd.read_parquet(out / "exports" / d / "persons.parquet")
    links = pd.read_parquet(out / "exports" / d / "links.parquet")
    assert persons["RKID"].is_unique and links["RKID"].isin(persons["RKID"]).all()
    truth = pd.read_parquet(city / "truth" / f"roles_{d}.parquet")
    key = ["BM", "BH", "YWZJ", "JS"]
    got = set(map(tuple, links[key].to_numpy()))
    assert set(map(tuple, truth[key].to_numpy())) == got
    for dept in ("police", "civil", "family_planning", "disability"):
        assert (out / "tasks" / dept / d / f"verification_tasks_{dept}_{d}.xlsx").exists()
        assert (out / "tasks" / dept / d / f"verification_tasks_{dept}_{d}.csv").exists()
        assert (out / "reports" / d / f"reconciliation_{dept}.xlsx").exists()
    assert "<svg" in (out / "reports" / d / "summary.html").read_text(encoding="utf-8")
