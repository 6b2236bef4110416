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

from catalog.base import AUDIT_COLUMNS, MEASURE_FLAGS, REJECT_COLUMNS, BaseState
from store import db

def _frame(conn: sa.Connection, table: sa.Table, where=None) -> pd.DataFrame:
    frame = db.read_frame(conn, table, where)
    if frame.empty:
        frame = pd.DataFrame(columns=[c.name for c in table.columns], dtype=object)
    return frame


def source_table(conn: sa.Connection, table: str) -> pd.DataFrame:
    """One department table's stored rows, whole (a full extract is compared with all of them)."""
    return _frame(conn, db.SOURCE_TABLES[table])


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
    write_date_rows(conn, batches, date, summary, rejects)


def write_date_rows(conn: sa.Connection, batches: list[dict], date: str, summary: dict,
                    rejects: pd.DataFrame | None = None) -> None:
    """The date's rejected rows, batch rows and run summary."""
    if rejects is not None and len(rejects):
        frame = rejects[REJECT_COLUMNS].drop_duplicates("reject_key", keep="last")
        db._delete_keys(conn, db.rejects, frame["reject_key"].tolist())
        db.append_frame(conn, db.rejects, frame)
    for batch in batches:
        conn.execute(db.batches.delete().where(db.batches.c.batch_id == batch["batch_id"]))
        conn.execute(db.batches.insert().values(**batch))
    write_run(conn, date, summary)


def write_run(conn: sa.Connection, date: str, summary: dict) -> None:
    """The run row of a date: when it finished and its summary (written again once the summary is final)."""
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
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


def export_parts(conn: sa.Connection, name: str, order: list[str]):
    """The live persons (`name` "persons") or every link ("links"), sorted by `order`, a part at a time."""
    if name == "persons":
        return db.read_sorted(conn, db.persons, order, db.persons.c.status == "live")
    return db.read_sorted(conn, db.links, order)


def persons_of(conn: sa.Connection, rkids) -> pd.DataFrame:
    """The person rows of `rkids` (live or not)."""
    return db.select_in(conn, db.persons, "RKID", rkids)


def links_of(conn: sa.Connection, role_keys) -> pd.DataFrame:
    return db.select_in(conn, db.links, "role_key", role_keys)


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


# ----------------------------------------------------------------------------------------------------
# The part of the base a daily date reaches (store/scope.py finds it), and the city's figures counted
# in the database


def read_scoped_base(conn: sa.Connection, records: set[str], roles: set[str], rkids: set[str]) -> BaseState:
    """The base restricted to the records `records` (`BH|YWZJ`), the links of `roles` and the persons
    `rkids` plus those the links name and the persons they were merged into: the working copy of a
    scoped date (`day.scoped`)."""
    by_table = db.records_by_table(records)
    sources = {name: db.select_in(conn, t, "_key", by_table.get(name, [])) for name, t in db.SOURCE_TABLES.items()}
    links = db.select_in(conn, db.links, "role_key", roles)
    per_record = {}
    for key, table in (("tasks", db.tasks), ("overlays", db.overlays), ("decisions", db.decisions)):
        parts = [db.select_in(conn, table, "YWZJ", keys, equal=("BH", bh)) for bh, keys in by_table.items()]
        per_record[key] = (pd.concat(parts, ignore_index=True) if parts else _frame(conn, table, sa.false()))
    want = set(rkids) | set(links["RKID"]) | set(per_record["decisions"]["RKID"])
    persons = db.select_in(conn, db.persons, "RKID", want)
    todo = set(persons["merged_into"]) - set(persons["RKID"]) - {""}
    while todo:
        more = db.select_in(conn, db.persons, "RKID", todo)
        persons = pd.concat([persons, more], ignore_index=True)
        todo = set(more["merged_into"]) - set(persons["RKID"]) - {""}
    persons = persons.sort_values("RKID", kind="stable").reset_index(drop=True)
    last_run = conn.execute(sa.select(sa.func.max(db.runs.c.business_date))).scalar() or ""
    return BaseState(sources=sources, persons=persons, links=links, decisions=per_record["decisions"],
                     tasks=per_record["tasks"], overlays=per_record["overlays"], model=db.read_meta(conn, db.MODEL_KEY),
                     last_run=str(last_run))


def issued_rkids(conn: sa.Connection, candidates) -> set[str]:
    """Which of the RKIDs `candidates` the base has issued (a person row, live or retired)."""
    return set(db.select_in(conn, db.persons, "RKID", candidates)["RKID"]) if len(candidates) else set()


def date_sensitive_roles(conn: sa.Connection, since: str, date: str, young_after: str, old_until: str) -> set[str]:
    """Roles whose states can change between `since` and `date` with no change to their record
    (`verification.states.date_sensitive`): a FORMAT number's birth date after `since`, a
    family-planning woman born after `young_after` or on or before `old_until`, a marriage registered
    after `since`; and the roles of tasks a return closed on `since` or `date` (a state that still holds
    reopens them)."""
    ix = db.role_index
    # one range on its partial index each: joined by OR in one statement, SQLite scanned the whole index
    # table instead (3.7 s at 1M persons, 0.04 s so)
    ranges = [(ix.c.format_birth, ix.c.format_birth > since), (ix.c.women_birth, ix.c.women_birth > young_after),
              (ix.c.women_birth, ix.c.women_birth <= old_until), (ix.c.marriage_date, ix.c.marriage_date > since)]
    keys: set[str] = set()
    for col, cond in ranges:
        keys |= {r[0] for r in conn.execute(sa.select(ix.c.role_key).where(col != "", cond))}
    t = db.tasks
    rows = conn.execute(sa.select(t.c.BM, t.c.BH, t.c.YWZJ, t.c.JS).where(
        t.c.close_reason == "RETURN", t.c.closed_date.in_([since, date]))).all()
    keys |= {"|".join(r) for r in rows}
    db.READ.add(ix.name, len(keys))
    return keys


def tasks_by_number(conn: sa.Connection, numbers) -> pd.DataFrame:
    return db.select_in(conn, db.tasks, "RWBH", numbers)


def index_rows_of_records(conn: sa.Connection, forms: sa.Table, records: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored index and form rows of the roles of `records` (`BH|YWZJ`)."""
    index = db.select_in(conn, db.role_index, "record", records)
    return index, db.select_in(conn, forms, "role_key", set(index["role_key"]))


def write_index(conn: sa.Connection, forms: sa.Table, old: tuple[pd.DataFrame, pd.DataFrame],
                index: pd.DataFrame, form_rows: pd.DataFrame, stamp: str) -> None:
    """Write the changes of the role index against `old` (the stored rows of the same roles). `stamp`:
    what it was built for (`db.ROLE_INDEX_KEY`)."""
    db.sync_frame(conn, db.role_index, old[0], index)
    db.sync_frame(conn, forms, old[1], form_rows)
    if db.read_meta(conn, db.ROLE_INDEX_KEY) != stamp:
        db.write_meta(conn, db.ROLE_INDEX_KEY, stamp)


def rebuild_index(conn: sa.Connection, forms: sa.Table, chunks, stamp: str) -> None:
    """The whole role index anew from `chunks`, an iterable of (index rows, form rows) made one at a time
    (memory bounded by a chunk), loaded with the tables' indexes dropped and built after; `role_forms`
    is created anew (an index of an older layout may have other column types)."""
    block_cols = [c.name for c in forms.columns if c.name.startswith("bk_")]
    conn.execute(db.role_index.delete())
    db.drop_forms(conn)
    db.ensure_forms(conn, block_cols)
    with db.index_tables_unindexed(conn, block_cols):
        for index, form_rows in chunks:
            db.append_frame(conn, db.role_index, index.sort_values("role_key"))
            db.append_frame(conn, forms, form_rows.sort_values("form_key"))
    db.write_meta(conn, db.ROLE_INDEX_KEY, stamp)


def refresh_statistics(conn: sa.Connection) -> None:
    """PostgreSQL: the planner's statistics of the base anew, after a date that wrote it whole (a bulk
    load leaves them empty until autovacuum gets round to it: at 1M persons the next daily date's
    lookups then waited on the server for minutes). SQLite plans these lookups by their indexes alone."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE")


def bump_raised(conn: sa.Connection, last_run: str, date: str, tasks_read: pd.DataFrame) -> pd.DataFrame:
    """The tasks raised on the last run stay raised today unless the date re-checked them: set their
    `last_raised` to `date` in the database, and return `tasks_read` (the tasks the date re-checked,
    as read) as the database now holds them, so that writing the date's tasks over it is exact."""
    conn.execute(db.tasks.update().where(db.tasks.c.last_raised == last_run).values(last_raised=date))
    out = tasks_read.copy()
    out.loc[out["last_raised"] == last_run, "last_raised"] = date
    return out


def task_counts(conn: sa.Connection, date: str) -> pd.DataFrame:
    """Every task counted by what the run summary reports of it (`exchange.process.build_summary`):
    route, status, state, reason closed, whether new, closed or overdue on `date`; column `n`."""
    t = db.tasks

    def on(col):
        return sa.case((col == date, date), else_="")

    cols = [t.c.route.label("route"), t.c.status.label("status"), t.c.HCZT.label("HCZT"),
            t.c.close_reason.label("close_reason"), on(t.c.XFRQ).label("XFRQ"), on(t.c.last_raised).label("last_raised"),
            on(t.c.closed_date).label("closed_date"), sa.case((t.c.HCQX < date, "0"), else_="99999999").label("HCQX")]
    rows = conn.execute(sa.select(*cols, sa.func.count().label("n")).group_by(*cols)).all()
    return pd.DataFrame(rows, columns=["route", "status", "HCZT", "close_reason", "XFRQ", "last_raised",
                                       "closed_date", "HCQX", "n"], dtype=object)


def link_methods(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(db.links.c.PPFS, sa.func.count()).group_by(db.links.c.PPFS)).all()
    return {r[0]: int(r[1]) for r in rows}


def live_person_count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).where(db.persons.c.status == "live")).scalar() or 0)


def read_city_counts(conn: sa.Connection) -> dict | None:
    """The running totals a scoped date keeps instead of counting the city (`day.scoped.city_counts`)."""
    text = db.read_meta(conn, db.CITY_COUNTS_KEY)
    return json.loads(text) if text else None


def write_city_counts(conn: sa.Connection, counts: dict) -> None:
    db.write_meta(conn, db.CITY_COUNTS_KEY, json.dumps(counts, ensure_ascii=False, sort_keys=True))


def forget_role_index(conn: sa.Connection) -> None:
    """A date that did not keep the role index up to date: a later scoped date must rebuild it first."""
    conn.execute(db.meta.delete().where(db.meta.c.key.in_([db.ROLE_INDEX_KEY, db.CITY_COUNTS_KEY])))


def role_measure_counts(conn: sa.Connection) -> pd.DataFrame:
    """The roles counted by their contribution to the quality rates (`quality.rates.rates_from_counts`)."""
    ix, lk = db.role_index, db.links
    flags = [ix.c[f"q_{f}"] for f in MEASURE_FLAGS]
    linked = sa.case((sa.and_(lk.c.PPFS != "", lk.c.PPFS.notin_(["UNMATCHED", "POSSIBLE"])), "1"), else_="0")
    cols = [ix.c.BH, ix.c.q_dept, *flags, linked]
    stmt = (sa.select(*cols, sa.func.count()).select_from(ix.outerjoin(lk, lk.c.role_key == ix.c.role_key))
            .group_by(*cols))
    frame = pd.DataFrame(conn.execute(stmt).all(), columns=["table", "dept", *MEASURE_FLAGS, "linked", "n"])
    for f in (*MEASURE_FLAGS, "linked"):
        frame[f] = frame[f].astype(str) == "1"
    return frame
