"""Reading and writing the base of one business date: the store's half of `day.run`.

`read_base` gives the working copy a date starts from (`catalog.base.BaseState`), `write_base` writes
what the date changed, both inside the caller's transaction. The bookkeeping of dates and batches
(`runs`, `batches`) and the rows the outputs are written from are read here too, so nothing above
`store/` writes SQL.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from catalog.base import AUDIT_COLUMNS, REJECT_COLUMNS, BaseState
from store import db

def _frame(conn: sa.Connection, table: sa.Table, where=None) -> pd.DataFrame:
    frame = db.read_frame(conn, table, where)
    if frame.empty:
        frame = pd.DataFrame(columns=[c.name for c in table.columns], dtype=object)
    return frame


def read_base(conn: sa.Connection) -> BaseState:
    """Every table of the base, whole (issue 15 replaces this with what a date's deliveries reach)."""
    sources = {name: _frame(conn, t) for name, t in db.SOURCE_TABLES.items()}
    frames = {key: _frame(conn, table) for key, table in (
        ("persons", db.persons), ("links", db.links), ("decisions", db.decisions), ("tasks", db.tasks),
        ("overlays", db.overlays))}
    last_run = conn.execute(sa.select(sa.func.max(db.runs.c.business_date))).scalar() or ""
    return BaseState(sources=sources, **frames, model=db.read_meta(conn, db.MODEL_KEY), last_run=str(last_run))


def write_base(conn: sa.Connection, old: BaseState, new: BaseState, audit: pd.DataFrame, batches: list[dict],
               date: str, summary: dict, rejects: pd.DataFrame | None = None) -> None:
    """Write what the date changed (rows compared by key), its audit rows, rejected rows, batches and run
    summary."""
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    for name, table in db.SOURCE_TABLES.items():
        db.sync_frame(conn, table, old.sources[name], new.sources[name])
    for attr, table in (("persons", db.persons), ("links", db.links), ("decisions", db.decisions),
                        ("tasks", db.tasks), ("overlays", db.overlays)):
        db.sync_frame(conn, table, getattr(old, attr), getattr(new, attr))
    if new.model != old.model:
        db.write_meta(conn, db.MODEL_KEY, new.model)
    if len(audit):
        audit = audit.copy()
        audit["at"] = now
        db.append_frame(conn, db.audit, audit[AUDIT_COLUMNS])
    if rejects is not None and len(rejects):
        frame = rejects[REJECT_COLUMNS].drop_duplicates("reject_key", keep="last")
        db._delete_keys(conn, db.rejects, frame["reject_key"].tolist())
        db.append_frame(conn, db.rejects, frame)
    for batch in batches:
        conn.execute(db.batches.delete().where(db.batches.c.batch_id == batch["batch_id"]))
        conn.execute(db.batches.insert().values(**batch))
    conn.execute(db.runs.delete().where(db.runs.c.business_date == date))
    conn.execute(db.runs.insert().values(business_date=date, finished_at=now,
                                         summary=json.dumps(summary, ensure_ascii=False)))


# ----------------------------------------------------------------------------------------------------
# Bookkeeping of dates and batches


def processed_dates(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.select(db.runs.c.business_date)))


def processed_batches(engine: sa.Engine) -> dict[str, str]:
    """batch_id -> run date that processed it."""
    with engine.connect() as conn:
        return {r.batch_id: r.run_date for r in conn.execute(sa.select(db.batches.c.batch_id, db.batches.c.run_date))}


def batch_reports(conn: sa.Connection, date: str) -> dict[str, dict]:
    """The reports of the batches a date has processed already (a re-run adds its new batches to them)."""
    return {r.batch_id: json.loads(r.report) for r in conn.execute(
        sa.select(db.batches.c.batch_id, db.batches.c.report).where(db.batches.c.run_date == date))}


def run_summary(engine: sa.Engine, date: str) -> dict | None:
    """The summary a processed date left, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.runs.c.summary).where(db.runs.c.business_date == date)).first()
    return json.loads(row.summary) if row else None


def run_history(conn: sa.Connection, up_to: str) -> list[dict]:
    rows = conn.execute(sa.select(db.runs.c.summary).where(db.runs.c.business_date <= up_to)
                        .order_by(db.runs.c.business_date))
    return [json.loads(r.summary) for r in rows]


# ----------------------------------------------------------------------------------------------------
# What the outputs of spec section 6 are written from


def live_persons(conn: sa.Connection) -> pd.DataFrame:
    return _frame(conn, db.persons, db.persons.c.status == "live")


def all_links(conn: sa.Connection) -> pd.DataFrame:
    return _frame(conn, db.links)


def open_tasks(conn: sa.Connection) -> pd.DataFrame:
    return _frame(conn, db.tasks, db.tasks.c.status == "open")


def date_rejects(conn: sa.Connection, date: str) -> pd.DataFrame:
    """The rows rejected on a business date, in the order they were delivered."""
    frame = _frame(conn, db.rejects, db.rejects.c.business_date == date)
    if len(frame):
        order = pd.to_numeric(frame["line"], errors="coerce").fillna(0)
        frame = frame.assign(_o=order).sort_values(["department", "table", "batch_id", "_o", "reject_key"],
                                                   kind="stable").drop(columns="_o").reset_index(drop=True)
    return frame
