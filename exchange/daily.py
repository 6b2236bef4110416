"""One business date end to end, in three phases the Dagster assets call (docs/architecture.md).

1. `stage`: find the date's manifests, verify checksums, parse every file to Parquet + rejects.
   Reads the database only to tell replays; writes files only under `out/staging/<D>/` and `out/rejects/<D>/`.
2. `commit`: apply the staged deliveries, link, apply returns, evaluate states, open/close tasks,
   and write all of it in ONE database transaction (a run that dies leaves the base as it was).
3. outputs are written from the database afterwards (`exchange.outputs`).

Idempotence: a batch is processed once, on the run date that first saw it. Re-running a date finds
its batches already processed by that same date and changes nothing; a batch id first processed on
another date is a replay and is skipped whole.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from exchange import landing, parse
from exchange.tables import RETURN_TABLE, TABLES
from store import db

log = logging.getLogger("popbase")

COUNT_FIELDS = ("inserted", "updated", "deleted", "unchanged", "ignored_stale")


@dataclass
class StagedFile:
    """What became of one file of a manifest."""

    batch_id: str
    department: str
    table: str
    extract_type: str
    path: str
    line_in_manifest: int
    manifest_rows: int
    status: str = "staged"  # staged / quarantined / replay / structural_error / missing
    checksum_ok: bool = True
    received_rows: int = 0
    rejected_rows: int = 0
    parquet: str = ""
    message: str = ""


@dataclass
class StageResult:
    business_date: str
    files: list[StagedFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # manifests that could not be read
    waiting: list[str] = field(default_factory=list)  # folders without manifest.json yet

    def to_json(self) -> str:
        return json.dumps(
            {"business_date": self.business_date, "files": [asdict(f) for f in self.files],
             "errors": self.errors, "waiting": self.waiting},
            ensure_ascii=False, indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "StageResult":
        d = json.loads(text)
        return cls(d["business_date"], [StagedFile(**f) for f in d["files"]], d["errors"], d.get("waiting", []))


def staging_dir(home: Path, date: str) -> Path:
    return Path(home) / "out" / "staging" / date


def processed_batches(engine: sa.Engine) -> dict[str, str]:
    """batch_id -> run date that processed it."""
    with engine.connect() as conn:
        return {r.batch_id: r.run_date for r in conn.execute(sa.select(db.batches.c.batch_id, db.batches.c.run_date))}


def stage(home: Path, date: str) -> StageResult:
    """Phase 1: verify and parse the date's deliveries into staging Parquet files (no database)."""
    home = Path(home)
    out = staging_dir(home, date)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    result = StageResult(date)
    found = landing.discover(home / "landing", date)
    for manifest in found:
        if getattr(manifest, "error", ""):
            result.errors.append(f"{manifest.folder}: {manifest.error}")
            continue
        if getattr(manifest, "waiting", False):
            result.waiting.append(str(manifest.folder))
            continue
        for n, mf in enumerate(manifest.files):
            sf = StagedFile(manifest.batch_id, manifest.department, mf.table, mf.extract_type, mf.path, n,
                            int(mf.rows or 0))
            result.files.append(sf)
            path = Path(manifest.folder) / mf.path
            if not path.exists():
                sf.status, sf.checksum_ok, sf.message = "missing", False, f"file {mf.path} is listed but absent"
                continue
            if not landing.verify(mf, manifest.folder):
                sf.status, sf.checksum_ok = "quarantined", False
                sf.message = f"sha256 of {mf.path} does not match the manifest; nothing of it was loaded"
                qdir = home / "out" / "quarantine" / date / manifest.batch_id
                qdir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, qdir / path.name)
                log.warning("quarantined %s (%s)", path, sf.message)
                continue
            _parse_one(sf, path, mf, out)
    (out / "stage.json").write_text(result.to_json(), encoding="utf-8")
    return result


def _parse_one(sf: StagedFile, path: Path, mf, out: Path) -> None:
    incremental = mf.extract_type == "incremental"
    is_return = mf.table == RETURN_TABLE
    try:
        if is_return:
            from exchange.taskfile import read_return

            frame = read_return(path, mf.format)
            rejects = pd.DataFrame(columns=["line", "reason", "raw"])
            received = len(frame)
        else:
            tbl = TABLES[mf.table]
            parsed = parse.read_delivery(path, mf.format, mf.encoding or "UTF-8",
                                         expected_fields=tbl.fields, incremental=incremental, key=tbl.key)
            frame, rejects, received = parsed.frame, parsed.rejects, parsed.received_rows
    except parse.StructuralError as exc:
        sf.status, sf.message = "structural_error", str(exc)
        log.error("%s: %s", path, exc)
        return
    sf.received_rows = int(received)
    sf.rejected_rows = len(rejects)
    name = f"{sf.batch_id}__{sf.line_in_manifest}__{sf.table}.parquet"
    frame.to_parquet(out / name, index=False)
    sf.parquet = name
    if len(rejects):  # written to out/rejects only once the date's transaction has committed
        cols = [c for c in ("line", "reason", "raw", "key") if c in rejects.columns]
        rejects[cols].astype(str).to_parquet(out / (name + ".rejects"), index=False)


def write_rejects(rejects_dir: Path, dept: str, table: str, rejects: pd.DataFrame) -> None:
    """Append to `rejects/<D>/<dept>_<table>_rejects.csv` (line number, reason code, raw line)."""
    from exchange.outputs import neutralise

    rejects_dir.mkdir(parents=True, exist_ok=True)
    target = rejects_dir / f"{dept}_{table}_rejects.csv"
    frame = rejects[["line", "reason", "raw"]].astype(str).map(neutralise)
    frame.to_csv(target, mode="a", header=not target.exists(), index=False, encoding="utf-8-sig" if not target.exists() else "utf-8")


# ----------------------------------------------------------------------------------------------------
# Phase 2


def classify_batches(result: StageResult, seen: dict[str, str], date: str) -> None:
    """Mark files of batches processed before: by this date (a re-run) or by another date (a replay)."""
    for sf in result.files:
        if sf.batch_id not in seen:
            continue
        if seen[sf.batch_id] == date:
            sf.status, sf.message = "processed", f"batch {sf.batch_id} was already processed for {date}"
        else:
            sf.status = "replay"
            sf.message = f"batch {sf.batch_id} was already processed for {seen[sf.batch_id]}; this copy is skipped whole"


@dataclass
class BaseState:
    """The working copy of the whole base, as frames."""

    sources: dict[str, pd.DataFrame]
    persons: pd.DataFrame
    links: pd.DataFrame
    decisions: pd.DataFrame
    tasks: pd.DataFrame
    overlays: pd.DataFrame
    model: str = ""  # the linking model in force (FSModel payload), "" before the first date
    last_run: str = ""  # the latest business date processed, "" before the first


def load_state(conn: sa.Connection) -> BaseState:
    sources = {name: db.read_frame(conn, t) for name, t in db.SOURCE_TABLES.items()}
    for name, frame in sources.items():
        if frame.empty:
            sources[name] = pd.DataFrame(columns=[c.name for c in db.SOURCE_TABLES[name].columns], dtype=object)
    frames = {}
    for key, table in (("persons", db.persons), ("links", db.links), ("decisions", db.decisions),
                       ("tasks", db.tasks), ("overlays", db.overlays)):
        frame = db.read_frame(conn, table)
        if frame.empty:
            frame = pd.DataFrame(columns=[c.name for c in table.columns], dtype=object)
        frames[key] = frame
    last_run = conn.execute(sa.select(sa.func.max(db.runs.c.business_date))).scalar() or ""
    return BaseState(sources=sources, **frames, model=db.read_meta(conn, db.MODEL_KEY), last_run=str(last_run))


def already_run(engine: sa.Engine, date: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(db.runs.c.business_date).where(db.runs.c.business_date == date)).first() is not None


def commit(home: Path, engine: sa.Engine, date: str, stage_result: StageResult | None = None) -> dict:
    """Phase 2: apply, link, verify, and write it all in one transaction. Returns the run summary."""
    from exchange.process import process_date  # the pure part

    home = Path(home)
    out = staging_dir(home, date)
    if stage_result is None:
        stage_result = StageResult.from_json((out / "stage.json").read_text(encoding="utf-8"))
    classify_batches(stage_result, processed_batches(engine), date)
    new_files = [f for f in stage_result.files if f.status == "staged"]
    if already_run(engine, date) and not new_files:
        log.info("business date %s was already processed and nothing new arrived: nothing to do", date)
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.runs.c.summary).where(db.runs.c.business_date == date)).first()
        return json.loads(row.summary)

    with engine.begin() as conn:
        state = load_state(conn)
        staged = {f"{f.batch_id}__{f.line_in_manifest}": pd.read_parquet(out / f.parquet) for f in new_files}
        for f in new_files:  # keys of rejected rows: a full file must not delete what it failed to deliver
            rj = out / (f.parquet + ".rejects")
            if rj.exists():
                staged[f"{f.batch_id}__{f.line_in_manifest}#rejects"] = pd.read_parquet(rj)
        prior = {r.batch_id: json.loads(r.report) for r in conn.execute(
            sa.select(db.batches.c.batch_id, db.batches.c.report).where(db.batches.c.run_date == date))}
        res = process_date(state, stage_result, staged, date, prior_reports=prior)
        _write(conn, state, res, date)
        log.info("business date %s committed: %s", date, res.summary_line())
    rejects_dir = home / "out" / "rejects" / date
    for f in new_files:
        rj = out / (f.parquet + ".rejects")
        if rj.exists():
            write_rejects(rejects_dir, f.department, f.table, pd.read_parquet(rj))
    for dept, table, frame in res.rejects:
        write_rejects(rejects_dir, dept, table, frame)
    return res.summary


def _write(conn: sa.Connection, old: BaseState, res, date: str) -> None:
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    for name, table in db.SOURCE_TABLES.items():
        db.sync_frame(conn, table, old.sources[name], res.state.sources[name])
    db.sync_frame(conn, db.persons, old.persons, res.state.persons)
    db.sync_frame(conn, db.links, old.links, res.state.links)
    db.sync_frame(conn, db.decisions, old.decisions, res.state.decisions)
    db.sync_frame(conn, db.tasks, old.tasks, res.state.tasks)
    db.sync_frame(conn, db.overlays, old.overlays, res.state.overlays)
    if res.state.model != old.model:
        db.write_meta(conn, db.MODEL_KEY, res.state.model)
    if len(res.audit):
        audit = res.audit.copy()
        audit["at"] = now
        db.append_frame(conn, db.audit, audit[db.AUDIT_COLUMNS])
    for batch in res.batches:
        conn.execute(db.batches.delete().where(db.batches.c.batch_id == batch["batch_id"]))
        conn.execute(db.batches.insert().values(**batch))
    conn.execute(db.runs.delete().where(db.runs.c.business_date == date))
    conn.execute(db.runs.insert().values(business_date=date, finished_at=now,
                                         summary=json.dumps(res.summary, ensure_ascii=False)))
