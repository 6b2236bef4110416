"""The population base in a relational database (SQLAlchemy 2: SQLite embedded, PostgreSQL in production).

Every table has one text primary key, so that a business date's changes can be written as
"delete the changed keys, insert their new rows" inside one transaction (`sync_frame`). The working
copy of the base lives in pandas during a run; the database is the system of record between runs.
"""
from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from catalog import TABLES
from catalog.base import (AUDIT_COLUMNS, DECISION_COLUMNS, LINK_COLUMNS, OVERLAY_COLUMNS,  # noqa: F401 - the schema's layouts
                          PERSON_COLUMNS, REJECT_COLUMNS, ROLE_INDEX_COLUMNS, SOURCE_META, TASK_COLUMNS)

metadata = sa.MetaData()



def _text_table(name: str, key: str, columns, extra=()) -> sa.Table:
    cols = [sa.Column(key, sa.Text, primary_key=True)]
    cols += [sa.Column(c, sa.Text, nullable=False, server_default="") for c in columns if c != key]
    return sa.Table(name, metadata, *cols, *extra)


SOURCE_TABLES: dict[str, sa.Table] = {
    name: _text_table(f"src_{name}", "_key", [c for c in SOURCE_META[1:]] + list(t.fields))
    for name, t in TABLES.items()
}

persons = _text_table("persons", "RKID", PERSON_COLUMNS)

# role_fp: fingerprint of the role as it was linked (linkage.incremental: what changed since)
links = _text_table("links", "role_key", LINK_COLUMNS, (sa.Index("ix_links_rkid", "RKID"),))

decisions = _text_table("decisions", "decision_key", DECISION_COLUMNS,
                        (sa.Index("ix_decisions_rkid", "RKID"), sa.Index("ix_decisions_record", "BH", "YWZJ")))

tasks = _text_table("tasks", "RWBH", TASK_COLUMNS, (
    sa.Index("ix_tasks_route", "route", "status"), sa.Index("ix_tasks_record", "BH", "YWZJ"),
    sa.Index("ix_tasks_closed", "close_reason", "closed_date"), sa.Index("ix_tasks_raised", "last_raised")))

# A department's answer that holds "until the record next changes": stored with the record's _ts.
overlays = _text_table("overlays", "overlay_key", OVERLAY_COLUMNS, (sa.Index("ix_overlays_record", "BH", "YWZJ"),))


def _partial(name: str, col: str) -> sa.Index:
    """An index of the rows where `col` is filled (most roles have no broken ID, no date sensitivity)."""
    return sa.Index(name, col, sqlite_where=sa.text(f"{col} <> ''"), postgresql_where=sa.text(f"{col} <> ''"))


# The index of record roles (exchange/role_index.py): what a daily date looks roles up by.
role_index = _text_table("role_index", "role_key", ROLE_INDEX_COLUMNS, (
    sa.Index("ix_role_index_record", "record"), _partial("ix_role_index_id_key", "id_key"),
    _partial("ix_role_index_state_id", "state_id"), _partial("ix_role_index_broken", "broken_id"),
    _partial("ix_role_index_near_a", "near_a"), _partial("ix_role_index_near_b", "near_b"),
    _partial("ix_role_index_near_c", "near_c"),
    _partial("ix_role_index_prefix", "repair_prefix"), _partial("ix_role_index_format", "format_birth"),
    _partial("ix_role_index_women", "women_birth"), _partial("ix_role_index_marriage", "marriage_date")))
ROLE_INDEX_KEY = "role_index"  # meta: the configuration version and passes the index was built for
CITY_COUNTS_KEY = "city_counts"  # meta: running totals of the city's figures, kept with the role index

_forms_meta = sa.MetaData()


FORM_COMPARE_COLUMNS = ["p_name_key", "p_birth", "p_sex", "p_region", "p_address", "p_idk", "p_idv", "p_spouse"]
# "1" where the role may be a fuzzy query (no link, or a link by a fuzzy method; `day.scoped.index_of`):
# the work set's blocks bring in only such roles, so the scope asks the database for them alone
FORM_FLAG_COLUMNS = ["pq"]


def forms_table(block_cols: list[str]) -> sa.Table:
    """`role_forms` (linkage/blocks.py): one row per role and form, a column `bk_<pass>` per blocking pass of
    the configuration, each with a partial index; `ensure_forms` creates what is missing."""
    name = "role_forms"
    if name in _forms_meta.tables:
        t = _forms_meta.tables[name]
        if [c.name for c in t.columns][3 + len(FORM_COMPARE_COLUMNS) + len(FORM_FLAG_COLUMNS):] == list(block_cols):
            return t
        _forms_meta.remove(t)
    cols = [sa.Column("form_key", sa.Text, primary_key=True), sa.Column("role_key", sa.Text, nullable=False),
            sa.Column("form", sa.Text, nullable=False)]
    cols += [sa.Column(c, sa.Text, nullable=False, server_default="") for c in FORM_COMPARE_COLUMNS + FORM_FLAG_COLUMNS]
    cols += [sa.Column(c, sa.BigInteger, nullable=True) for c in block_cols]  # NULL: in no block of the pass
    return sa.Table(name, _forms_meta, *cols)


def ensure_forms(conn: sa.Connection, block_cols: list[str]) -> sa.Table:
    """The `role_forms` table with a column and an index per pass: a pass added to the configuration
    gets them here, with no code of its own (the column is filled when the index is rebuilt)."""
    for c in block_cols:
        if not c.replace("_", "").isalnum():
            raise ValueError(f"not a block column: {c!r}")
    table = forms_table(block_cols)
    conn.exec_driver_sql('CREATE TABLE IF NOT EXISTS role_forms (form_key TEXT PRIMARY KEY, role_key TEXT NOT NULL, '
                         'form TEXT NOT NULL)')
    have = {c["name"] for c in sa.inspect(conn).get_columns("role_forms")}
    for c in FORM_COMPARE_COLUMNS + FORM_FLAG_COLUMNS:
        if c not in have:
            conn.exec_driver_sql(f"ALTER TABLE role_forms ADD COLUMN {c} TEXT NOT NULL DEFAULT ''")
    for c in block_cols:
        if c not in have:
            conn.exec_driver_sql(f"ALTER TABLE role_forms ADD COLUMN {c} BIGINT")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_role_forms_role ON role_forms (role_key)")
    for c in block_cols:
        # (block, pq): a block of the work set is asked for its possible queries only (`store.scope`), which
        # this reads without visiting the block's other forms; a whole block reads the prefix
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_role_forms_{c}")  # the index of a block alone, before
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_role_forms_pq_{c} ON role_forms ({c}, pq) "
                             f"WHERE {c} IS NOT NULL")
    return table


def drop_forms(conn: sa.Connection) -> None:
    """`role_forms` gone, to be created anew by `ensure_forms` (a whole index rebuilt: faster than deleting
    its rows, and the columns take the current layout's types)."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS role_forms")


@contextlib.contextmanager
def index_tables_unindexed(conn: sa.Connection, block_cols: list[str]) -> Iterator[None]:
    """`role_index` and `role_forms` without their secondary indexes while they are loaded whole, the
    indexes built afterwards: one sort each instead of a random B-tree insert per row and index (the
    whole index of a 100k city took 48 s to insert with its 29 indexes in place)."""
    for ix in role_index.indexes:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {ix.name}")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_role_forms_role")
    for c in block_cols:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_role_forms_{c}")
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_role_forms_pq_{c}")
    yield
    for ix in role_index.indexes:
        ix.create(conn)
    ensure_forms(conn, block_cols)


# Values the base keeps between runs: the linking model (`linkage_model`, compressed JSON).
meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
MODEL_KEY = "linkage_model"

batches = sa.Table(
    "batches", metadata,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("department", sa.Text, nullable=False),
    sa.Column("folder_date", sa.Text, nullable=False),
    sa.Column("run_date", sa.Text, nullable=False),
    sa.Column("report", sa.Text, nullable=False),  # JSON: per file/table figures
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("business_date", sa.Text, primary_key=True),
    sa.Column("finished_at", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # JSON: reconciliation per department, rates
)

rejects = _text_table("rejects", "reject_key", REJECT_COLUMNS, (sa.Index("ix_rejects_date", "business_date"),))

audit = sa.Table(
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_date", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),  # person / link / task / record
    sa.Column("entity_key", sa.Text, nullable=False),
    sa.Column("RKID", sa.Text, nullable=False, server_default=""),
    sa.Column("field", sa.Text, nullable=False, server_default=""),
    sa.Column("old", sa.Text, nullable=False, server_default=""),
    sa.Column("new", sa.Text, nullable=False, server_default=""),
    sa.Column("cause", sa.Text, nullable=False, server_default=""),
    sa.Column("actor", sa.Text, nullable=False, server_default=""),
    sa.Column("at", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_audit_rkid", "RKID"),
)

assert AUDIT_COLUMNS == [c.name for c in audit.columns if c.name != "id"]


_ENGINES: dict[str, sa.Engine] = {}


def engine_for(url: str) -> sa.Engine:
    """One engine (and connection pool) per process and URL, with the schema created."""
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def dispose_engine(url: str) -> None:
    """Close the pooled connections of a URL (before its database is dropped, in tests)."""
    engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


def make_engine(url: str) -> sa.Engine:
    """An engine with the schema created; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # 256 MiB of page cache (the default is 2 MiB): inserts and deletes keyed by hashes and role keys
            # touch pages all over the indexes, and re-reading them from the OS each time dominated writes
            cur.execute("PRAGMA cache_size=-262144")
            cur.close()
    else:
        engine = sa.create_engine(url)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


@contextlib.contextmanager
def one_transaction(engine: sa.Engine, whole_base: bool = False) -> Iterator[sa.Connection]:
    """A connection in one transaction (committed at the end, rolled back on an error), like
    `engine.begin()`. `whole_base`: the transaction writes the whole base (the first date). SQLite then keeps
    a rollback journal for it instead of the write-ahead log: a transaction's pages stay in the log until it
    commits, and every page read looks through the log's index, whose cost grows with the log: the 3M
    historical date built its indexes CPU-bound, reading nothing from disk, against a 12.6 GB log (the index
    step 1053 s against 174-245 s at 1M; with the journal 890 s, and the commit 0.4 s against 56 s; the 1M date
    is no faster with it: docs/benchmarks.md). The
    journal keeps the transaction atomic (a hot journal is rolled back when the database is next opened); the
    base returns to the log afterwards, for the daily dates' readers. Any other SQLite transaction (a daily
    date's) commits without copying the log into the database: `Checkpoint` does that afterwards, beside the
    date's outputs (the copy was 2.4-6.4 s of a 1M daily commit)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    if not whole_base:
        with engine.connect() as conn:
            # the commit does not copy the log into the database (SQLite does so on the commit that passes
            # 1000 pages: 2.4-6.4 s of a 1M daily date); `Checkpoint` does it beside the outputs
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            conn.commit()
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
                conn.commit()
        return
    engine.dispose()  # leaving WAL needs the only connection to the database
    with engine.connect() as conn:
        # another connection open (a reader, a second engine): the log stays, only slower; no waiting for it
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        try:
            journal = conn.exec_driver_sql("PRAGMA journal_mode=TRUNCATE").scalar() == "truncate"
        except sa.exc.OperationalError:
            journal = False
        conn.exec_driver_sql("PRAGMA busy_timeout=60000")  # as `make_engine` connects
        conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            if journal:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.commit()


WAL_AUTOCHECKPOINT = 1000  # SQLite's default: pages of log after which a commit copies the log into the database


class Checkpoint(threading.Thread):
    """SQLite: the write-ahead log copied into the database on a connection of its own, in a thread beside
    what the caller does next (a date's outputs, which only read), after a transaction that left it to
    later (`one_transaction`). A passive checkpoint waits for no reader and blocks none; the driver lets go
    of the interpreter while it runs. `join()` re-raises its error. Nothing to do on PostgreSQL."""

    def __init__(self, engine: sa.Engine):
        super().__init__(name="popbase-checkpoint", daemon=True)
        self.engine, self.error = engine, None
        if engine.dialect.name == "sqlite":
            self.start()

    def run(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # noqa: BLE001 - handed to the caller in join()
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        if self.ident is not None:  # started (SQLite)
            super().join(timeout)
        if self.error is not None:
            raise self.error


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to a text table since the base was created (all text, default ''); nothing else
    is ever migrated in place."""
    insp = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name not in have:
                    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" TEXT NOT NULL DEFAULT \'\'')


def read_meta(conn: sa.Connection, key: str) -> str:
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).first()
    return row.value if row else ""


def write_meta(conn: sa.Connection, key: str, value: str) -> None:
    conn.execute(meta.delete().where(meta.c.key == key))
    conn.execute(meta.insert().values(key=key, value=value))


FETCH_ROWS = 50_000  # rows per fetch: bounds the duplicate strings alive at once while reading


def _fetch(conn: sa.Connection, stmt, size: int | None = None) -> Iterator[tuple[list, list[str]]]:
    """Rows (plain tuples, `size` at a time) and column names of `stmt`, through the driver's own cursor
    when the statement allows: SQLAlchemy's Row objects cost about as much again as the fetch itself on
    millions of rows."""
    compiled = stmt.compile(dialect=conn.dialect)
    sql = str(compiled)
    if "POSTCOMPILE" in sql:  # expanding IN lists: let SQLAlchemy render them
        result = conn.execute(stmt)
        yield [tuple(r) for r in result.fetchall()], list(result.keys())
        return
    size = size or FETCH_ROWS
    params = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup)
    cur = conn.connection.driver_connection.cursor()  # same connection, same transaction
    try:
        cur.execute(sql, params)
        cols = [d[0] for d in cur.description]
        while True:
            rows = cur.fetchmany(size)
            yield rows, cols
            if len(rows) < size:
                break
    finally:
        cur.close()


def _intern(values: np.ndarray, pool: dict) -> np.ndarray:
    """`values` with equal strings sharing one object (from `pool`): the driver makes a new string for
    every cell, and a column such as sex or a district code repeats a handful of values millions of times."""
    codes, uniq = pd.factorize(values, use_na_sentinel=False)
    canon = np.empty(len(uniq), dtype=object)
    canon[:] = [pool.setdefault(u, u) for u in uniq]
    return canon[codes]


class ReadMeter:
    """Rows the store has handed out, per table: what a business date reads of the base (issue 15: a
    daily date must read what its deliveries reach, not the city). `read_frame` counts every row."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def add(self, table: str, n: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + n

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """Rows read per table since `before` (a copy of `rows` taken earlier)."""
        return {t: n - before.get(t, 0) for t, n in self.rows.items() if n - before.get(t, 0)}


READ = ReadMeter()


def read_frame(conn: sa.Connection, table: sa.Table, where=None) -> pd.DataFrame:
    """A whole table (or a filtered part) as a frame of strings (the rows count in `READ`).

    Text columns that are NOT NULL come back as they are (they hold strings, "" for missing); any other
    column is turned into text, NULL into "". Columns that repeat their values (judged on the first
    rows) share one string object per value."""
    stmt = sa.select(table)
    if where is not None:
        stmt = stmt.where(where)
    parts: list[pd.DataFrame] = []
    pools: dict[str, dict] | None = None
    cols: list[str] = []
    for rows, cols in _fetch(conn, stmt):
        if not rows:
            continue
        # integer columns (`_integer`) stay Python ints and None: inferred, they would turn float (NaN)
        part = (pd.DataFrame(rows, columns=cols, dtype=object) if _typed(table).intersection(cols) else
                pd.DataFrame.from_records(rows, columns=cols))
        del rows
        if pools is None:
            head = part.iloc[:5000]
            pools = {c: {} for c in cols if c not in _typed(table) and len(set(head[c])) < 0.5 * len(head)}
        for c, pool in pools.items():
            part[c] = _intern(part[c].to_numpy(dtype=object), pool)
        parts.append(part)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    del parts
    READ.add(table.name, len(frame))
    return _as_text(frame, table)


def read_sorted(conn: sa.Connection, table: sa.Table, order: list[str], where=None,
                rows: int = FETCH_ROWS) -> Iterator[pd.DataFrame]:
    """`table`'s rows (those matching `where`) sorted by the columns `order` as Python sorts strings (by code
    point: PostgreSQL's "C" collation, SQLite's own), `rows` at a time, as `read_frame` gives them (they count
    in `READ`). The server streams them (a server-side cursor on PostgreSQL): memory follows `rows`, not the
    table (a 10M city's links are 21 M rows)."""
    keys = [table.c[c].collate("C") if conn.dialect.name == "postgresql" else table.c[c] for c in order]
    stmt = sa.select(table).order_by(*keys)
    if where is not None:
        stmt = stmt.where(where)
    result = conn.execution_options(stream_results=True).execute(stmt)
    names = list(result.keys())
    for part in result.partitions(rows):
        frame = pd.DataFrame.from_records([tuple(r) for r in part], columns=names)
        READ.add(table.name, len(frame))
        yield _as_text(frame, table)


def _integer(column: sa.Column) -> bool:
    """An INTEGER / BIGINT column other than a surrogate key: its values stay Python ints, NULL None (the
    block columns of `role_forms`); every other column is text."""
    return isinstance(column.type, sa.Integer) and not column.primary_key


def _as_text(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Text NOT NULL columns as they are; any other column of `table` in `frame` as text, NULL as "",
    but for integer columns (`_integer`), left as they are."""
    for c in table.columns:
        if _integer(c):
            continue
        if c.name in frame and (not isinstance(c.type, sa.Text) or (c.nullable and not c.primary_key)):
            col = frame[c.name]
            frame[c.name] = col.where(col.notna(), "").astype(str)
    return frame


def records_by_table(records) -> dict[str, set[str]]:
    """Record keys `BH|YWZJ` grouped by table: {BH: {YWZJ, ...}}."""
    out: dict[str, set[str]] = {}
    for r in records:
        bh, ywzj = r.split("|", 1)
        out.setdefault(bh, set()).add(ywzj)
    return out


SELECT_CHUNK = 5000  # keys per query of `select_in` (SQLite allows 32,766 parameters)


def select_in(conn: sa.Connection, table: sa.Table, column: str, values, cols: list[str] | None = None,
              equal: tuple[str, str] | None = None) -> pd.DataFrame:
    """Rows of `table` whose `column` is one of `values` (and, given `equal` = (column, value), that column
    equal to that value), columns `cols` (default all), as text like `read_frame`; the rows count in
    `READ`. The lookup every scoped read goes through. In chunks of `SELECT_CHUNK` keys, as driver SQL:
    compiling an IN list of thousands of values through SQLAlchemy cost more than running it. The
    condition `column <> ''` is spelled out: it lets SQLite use a partial index (`_partial`), which it
    does not infer from an IN list (without it each chunk scanned the whole table); on an integer
    column (`_integer`), `IS NOT NULL`."""
    cols = cols or [c.name for c in table.columns]
    values = sorted({v for v in values if v is not None and v != ""})
    q = '"'
    ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    filled = "IS NOT NULL" if _integer(table.c[column]) else "<> ''"
    head = (f"SELECT {', '.join(q + c + q for c in cols)} FROM {q}{table.name}{q} "
            f"WHERE {q}{column}{q} {filled}" + (f" AND {q}{equal[0]}{q} = {ph}" if equal else "") + f" AND {q}{column}{q} ")
    tail = (equal[1],) if equal else ()
    rows: list[tuple] = []
    # the driver's own cursor, in the connection's transaction: its plain tuples, not SQLAlchemy's rows
    # (a scope reads about a million rows at 1M persons)
    cur = conn.connection.driver_connection.cursor()
    try:
        for start in range(0, len(values), SELECT_CHUNK):
            chunk = values[start:start + SELECT_CHUNK]
            if conn.dialect.name == "postgresql":
                cur.execute(head + f"= ANY({ph})", (*tail, chunk))
            else:
                cur.execute(head + f"IN ({', '.join([ph] * len(chunk))})", (*tail, *chunk))
            rows += cur.fetchall()
    finally:
        cur.close()
    frame = (pd.DataFrame({c: np.array(v, dtype=object) for c, v in zip(cols, zip(*rows))}) if rows
             else pd.DataFrame(columns=cols, dtype=object))
    READ.add(table.name, len(frame))
    return _as_text(frame, table) if len(frame) else frame


def _write_rows(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    cols = [c.name for c in table.columns if c.name in frame.columns]
    frame = frame[cols]
    if conn.dialect.name == "postgresql":
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False)
        buf.seek(0)
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            quoted = ", ".join(f'"{c}"' for c in cols)
            # FORCE_NOT_NULL: an empty text field is the empty string (our "missing"), never NULL; an empty
            # integer field is NULL
            text = ", ".join(f'"{c.name}"' for c in table.columns if c.name in cols and not _integer(c))
            cur.copy_expert(f'COPY "{table.name}" ({quoted}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL ({text}))', buf)
        return
    if conn.dialect.name == "sqlite":
        # the driver's executemany over plain tuples: several times faster than dicts through Core
        sql = (f'INSERT INTO "{table.name}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
               f'VALUES ({", ".join("?" * len(cols))})')
        conn.exec_driver_sql(sql, list(frame.itertuples(index=False, name=None)))
        return
    records = frame.to_dict("records")
    for start in range(0, len(records), 50_000):
        conn.execute(table.insert(), records[start : start + 50_000])


def _delete_keys(conn: sa.Connection, table: sa.Table, keys: list[str]) -> None:
    key_col = list(table.primary_key.columns)[0]
    for start in range(0, len(keys), 900):
        conn.execute(table.delete().where(key_col.in_(keys[start : start + 900])))


def diff_frames(old: pd.DataFrame, new: pd.DataFrame, key: str,
                typed: frozenset[str] = frozenset()) -> tuple[list[str], pd.DataFrame]:
    """Keys to delete and rows to (re)insert so that `old` becomes `new` (values compared as text, but for
    the columns `typed`, compared and returned as they are: integer columns, `_integer`).

    Rows are aligned by key with one hash lookup and compared column by column (no merged copy of both
    frames); the rows to insert come sorted by key."""
    cols = list(new.columns)
    new = _stored(new, typed)
    if old.empty:
        return [], new
    old = old.reindex(columns=cols, fill_value="")
    okeys = old[key].astype(str).to_numpy(dtype=object)
    nkeys = new[key].to_numpy(dtype=object)
    oindex = pd.Index(okeys)
    if not oindex.is_unique or not pd.Index(nkeys).is_unique:
        raise ValueError(f"{key} repeats: a table's key must be unique")
    pos = oindex.get_indexer(nkeys)
    present = pos >= 0
    changed = ~present
    at = pos[present]
    for c in cols:
        if c == key:
            continue
        o = (old[c] if old[c].dtype == object or c in typed else old[c].astype(str)).to_numpy(dtype=object)[at]
        changed[present] |= o != new[c].to_numpy(dtype=object)[present]
    gone = okeys[~oindex.isin(nkeys)].tolist()
    upd = nkeys[present & changed].tolist()
    to_insert = new[changed]
    to_insert = to_insert.iloc[np.argsort(to_insert[key].to_numpy(dtype=object), kind="stable")]
    return gone + upd, to_insert


def _typed(table: sa.Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if _integer(c))


def _stored(frame: pd.DataFrame, typed: frozenset[str]) -> pd.DataFrame:
    """`frame` as it is written: every column as text but those `typed` (Python ints and None)."""
    if not typed.intersection(frame.columns):
        return frame.astype(str)
    return frame.astype({c: str for c in frame.columns if c not in typed})


def sync_frame(conn: sa.Connection, table: sa.Table, old: pd.DataFrame, new: pd.DataFrame) -> int:
    """Make `table` hold `new` where it held `old`; returns the number of rows written."""
    key = list(table.primary_key.columns)[0].name
    to_delete, to_insert = diff_frames(old, new, key, _typed(table))
    _delete_keys(conn, table, to_delete)
    _write_rows(conn, table, to_insert)
    return len(to_insert)


def append_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    _write_rows(conn, table, _stored(frame, _typed(table)))


def role_key(frame: pd.DataFrame) -> pd.Series:
    return frame["BM"] + "|" + frame["BH"] + "|" + frame["YWZJ"] + "|" + frame["JS"]


def loads(text: str):
    return json.loads(text) if text else {}


def audit_for_person(conn: sa.Connection, rkid: str) -> pd.DataFrame:
    """Every traced change about one person: rows naming the RKID, and rows about its record roles."""
    keys = [r.role_key for r in conn.execute(sa.select(links.c.role_key).where(links.c.RKID == rkid))]
    records = sorted({"|".join(k.split("|")[:3]) for k in keys})
    cond = audit.c.RKID == rkid
    if keys:
        cond = sa.or_(cond, audit.c.entity_key.in_(keys + records))
    frame = read_frame(conn, audit, cond)
    return frame.sort_values("id", key=lambda s: s.astype(int)).reset_index(drop=True) if len(frame) else frame
