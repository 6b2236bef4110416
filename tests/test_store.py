"""store.db: reading tables as text and writing a date's changes as deletes + inserts, on both backends."""
from __future__ import annotations

import pandas as pd
import pytest

from store import db


def _links(n: int, rkid: str = "RK1") -> pd.DataFrame:
    keys = [f"police|hukou|R{i:05d}|SELF" for i in range(n)]
    return pd.DataFrame({"role_key": keys, "BM": "police", "BH": "hukou", "YWZJ": [k.split("|")[2] for k in keys],
                         "JS": "SELF", "RKID": rkid, "PPFS": "ID_EXACT", "PPDF": "1.0", "role_fp": "f", "PPMX": ""})


def test_diff_frames_finds_gone_changed_and_new_rows_only():
    old = _links(6)
    new = old.iloc[[5, 3, 2, 0]].copy()  # rows 1 and 4 gone, order shuffled
    new.loc[new["role_key"] == old["role_key"][3], "RKID"] = "RK2"  # changed
    extra = _links(1).assign(role_key="police|hukou|R99999|SELF", YWZJ="R99999")
    new = pd.concat([new, extra], ignore_index=True)
    delete, insert = db.diff_frames(old, new, "role_key")
    k = old["role_key"].tolist()
    assert sorted(delete) == sorted([k[1], k[4], k[3]])
    assert insert["role_key"].tolist() == sorted([k[3], "police|hukou|R99999|SELF"])  # sorted by key
    assert insert.loc[insert["role_key"] == k[3], "RKID"].item() == "RK2"
    # nothing changed: nothing to write, whatever the order
    delete, insert = db.diff_frames(old, old.iloc[::-1], "role_key")
    assert delete == [] and insert.empty


def test_diff_frames_compares_as_text_and_refuses_repeated_keys():
    old = _links(3).assign(PPDF="0.5")
    new = _links(3).assign(PPDF=0.5)  # the same value, not yet text
    delete, insert = db.diff_frames(old, new, "role_key")
    assert delete == [] and insert.empty
    with pytest.raises(ValueError, match="repeats"):
        db.diff_frames(old, pd.concat([new, new]), "role_key")


def test_read_frame_gives_text_and_sync_frame_round_trips(db_url, monkeypatch):
    monkeypatch.setattr(db, "FETCH_ROWS", 300)  # several fetches per table
    engine = db.make_engine(db_url)
    db.metadata.create_all(engine)
    old = _links(2000)
    with engine.begin() as conn:
        assert db.read_frame(conn, db.links).empty
        db.sync_frame(conn, db.links, db.read_frame(conn, db.links), old)
    new = old.copy()
    new.loc[10:19, "RKID"] = "RK9"
    new = new.drop(index=range(100, 150))
    with engine.begin() as conn:
        before = db.read_frame(conn, db.links)
        assert before.sort_values("role_key").reset_index(drop=True).equals(old.sort_values("role_key").reset_index(drop=True))
        # a repeated value is one object across fetches; distinct keys stay distinct
        assert len({id(v) for v in before["PPFS"]}) == 1 and before["role_key"].nunique() == 2000
        assert db.sync_frame(conn, db.links, before, new) == 10
    with engine.connect() as conn:
        got = db.read_frame(conn, db.links).sort_values("role_key").reset_index(drop=True)
        assert got.equals(new.sort_values("role_key").reset_index(drop=True))
        part = db.read_frame(conn, db.links, db.links.c.RKID == "RK9")  # a filter with a bound value
        assert sorted(part["role_key"]) == sorted(new.loc[10:19, "role_key"])
        # a non-text column (audit.id) comes back as text; IN lists go through SQLAlchemy
    with engine.begin() as conn:
        db.append_frame(conn, db.audit, pd.DataFrame([{c: "x" for c in db.AUDIT_COLUMNS} | {"RKID": "RK9"}]))
    with engine.connect() as conn:
        audit = db.read_frame(conn, db.audit, db.audit.c.entity_key.in_(["x", "y"]))
        assert len(audit) == 1 and isinstance(audit["id"].iloc[0], str) and audit["id"].iloc[0].isdigit()
        assert len(db.audit_for_person(conn, "RK9")) == 1
    engine.dispose()


def test_the_store_counts_the_rows_it_hands_out(db_url):
    """The read meter (issue 15: a daily date's reads are measured) counts every row read_frame returns."""
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        db.append_frame(conn, db.persons, pd.DataFrame([{c: f"{c}{i}" for c in db.PERSON_COLUMNS} | {"status": s}
                                                        for i, s in enumerate(["live", "live", "retired"])]))
    before = dict(db.READ.rows)
    with engine.connect() as conn:
        db.read_frame(conn, db.persons)
        db.read_frame(conn, db.persons, db.persons.c.status == "live")
        db.read_frame(conn, db.links)
    assert db.READ.since(before) == {"persons": 5}
    engine.dispose()


def test_a_whole_base_transaction_on_sqlite_is_journalled_and_dies_without_a_trace(tmp_path):
    """The first date's transaction runs with a rollback journal instead of the write-ahead log (a log holding
    a whole city's pages made every page read slow, `db.one_transaction`): it commits like any other, a
    process killed inside it leaves the base as it was, and the base is back in WAL mode for the daily dates."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "base.db"
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    with db.one_transaction(engine, whole_base=True) as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
        conn.exec_driver_sql("INSERT INTO meta VALUES ('before', '1')")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    child = (f"import os, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
             "from store import db\n"
             f"engine = db.make_engine({url!r})\n"
             "with db.one_transaction(engine, whole_base=True) as conn:\n"
             "    conn.exec_driver_sql('PRAGMA cache_size=10')  # pages reach the database file before the end\n"
             "    for i in range(5000):\n"
             "        conn.exec_driver_sql('INSERT INTO meta VALUES (?, ?)', (f'k{i}', 'x' * 500))\n"
             "    os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", child], timeout=120).returncode == 9
    assert path.with_name("base.db-journal").exists()  # a hot journal: the dead transaction's old pages
    engine = db.make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT key FROM meta").scalars().all() == ["before"]
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_daily_transaction_leaves_the_log_to_a_checkpoint_beside_the_outputs(tmp_path):
    """A daily date's commit does not copy the write-ahead log into the database (SQLite would on the commit
    that passes 1000 pages): the database file keeps its size until `db.Checkpoint` copies the log, and the
    connection's automatic checkpoint is back afterwards, for whatever else writes."""
    path = tmp_path / "base.db"
    engine = db.make_engine(f"sqlite:///{path}")
    size = path.stat().st_size
    with db.one_transaction(engine) as conn:
        for i in range(10_000):  # about 5 MB: beyond the 1000 pages that trigger the automatic checkpoint
            conn.exec_driver_sql("INSERT INTO meta VALUES (?, ?)", (f"k{i}", "x" * 500))
    assert path.stat().st_size == size and path.with_name("base.db-wal").stat().st_size > 4096 * 1000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == db.WAL_AUTOCHECKPOINT
    checkpoint = db.Checkpoint(engine)
    checkpoint.join()
    assert path.stat().st_size > size + 1_000_000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM meta WHERE key LIKE 'k%'").scalar() == 10_000
    engine.dispose()
