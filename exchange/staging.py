"""Staging a business date's deliveries: find its manifests, verify checksums, parse every file to
Parquet + rejects under `out/staging/<D>/`. Files only, no database (`day.run` tells replays with the
batches the store has processed: `classify_batches`).

Idempotence: a batch is processed once, on the run date that first saw it. Re-running a date finds
its batches already processed by that same date and changes nothing; a batch id first processed on
another date is a replay and is skipped whole.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from exchange import landing, parse
from exchange.outputs import neutralise
from exchange.taskfile import read_return
from catalog import RETURN_TABLE, TABLES

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
    rejects_dir.mkdir(parents=True, exist_ok=True)
    target = rejects_dir / f"{dept}_{table}_rejects.csv"
    frame = rejects[["line", "reason", "raw"]].astype(str).map(neutralise)
    frame.to_csv(target, mode="a", header=not target.exists(), index=False,
                 encoding="utf-8-sig" if not target.exists() else "utf-8")


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
