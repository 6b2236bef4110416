"""Staging a business date's deliveries: find its manifests, verify checksums, parse every file to
Parquet + rejects under `out/staging/<D>/`. Files only, no database (`day.run` tells replays with the
batches the store has processed: `classify_batches`).

Idempotence: a batch is processed once, on the run date that first saw it. Re-running a date finds
its batches already processed by that same date and changes nothing; a batch id first processed on
another date is a replay and is skipped whole.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from exchange import landing, parse
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
    status: str = "staged"  # staged / quarantined / held / replay / processed / late / structural_error / missing
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


def inside(root: Path, path: Path) -> Path:
    """`path`, after checking that it lies under `root` (nothing is ever written outside POPBASE_HOME/out)."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"refusing to write {path}: it is outside {root}")
    return Path(path)


@dataclass(frozen=True)
class Guards:
    """Limits that hold a delivery back instead of letting it change the base (config/quality.json `guards`)."""

    full_min_share: float = 0.95  # a full extract with fewer rows than this share of its manifest `rows` is held
    future_margin_days: int = 1  # CZSJ/GXSJ later than the business date plus this many days are rejected

    @classmethod
    def from_config(cls, cfg: dict) -> "Guards":
        g = cfg.get("guards", {})
        return cls(float(g.get("full_min_share", cls.full_min_share)),
                   int(g.get("future_margin_days", cls.future_margin_days)))


def delivered_bytes(home: Path, date: str) -> int:
    """The bytes of the files landed for `date` (every department's folder of that date)."""
    return sum(p.stat().st_size for p in (Path(home) / "landing").glob(f"*/{date}/*") if p.is_file())


def stage(home: Path, date: str, guards: Guards = Guards()) -> StageResult:
    """Verify and parse the date's deliveries into staging Parquet files (no database)."""
    home = Path(home)
    out = inside(home / "out", staging_dir(home, date))
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
                qdir = inside(home / "out", home / "out" / "quarantine" / date / manifest.batch_id)
                qdir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, qdir / path.name)
                log.warning("quarantined %s (%s)", path, sf.message)
                continue
            _parse_one(sf, path, mf, out, date, guards)
            _hold_if_short(sf, guards)
    (out / "stage.json").write_text(result.to_json(), encoding="utf-8")
    return result


# What opening a damaged file raises (a bug in our code raises something else, and is not hidden as bad data).
UNREADABLE = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeError)


def _hold_if_short(sf: StagedFile, guards: Guards) -> None:
    """A full extract re-baselines its table: rows it lacks count as deleted. One that arrives empty, or
    short of its manifest `rows` beyond the tolerance, is held: nothing of it is applied (a cut-off
    transfer must not delete half the base); the department sends it again under a new batch id."""
    if sf.status != "staged" or sf.extract_type != "full":
        return
    if sf.received_rows == 0:
        sf.status = "held"
        sf.message = (f"full extract {sf.path} holds no data rows (manifest says {sf.manifest_rows:,}); "
                      "held: applying it would delete the whole table")
    elif sf.received_rows < guards.full_min_share * sf.manifest_rows:
        sf.status = "held"
        sf.message = (f"full extract {sf.path} holds {sf.received_rows:,} of the {sf.manifest_rows:,} rows its "
                      f"manifest lists (below {guards.full_min_share:.0%}); held: applying it would delete "
                      f"{sf.manifest_rows - sf.received_rows:,} records")
    if sf.status == "held":
        log.error("%s/%s: %s", sf.department, sf.batch_id, sf.message)


def _parse_one(sf: StagedFile, path: Path, mf, out: Path, date: str, guards: Guards) -> None:
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
                                         expected_fields=tbl.fields, incremental=incremental, key=tbl.key,
                                         table=mf.table, business_date=date,
                                         future_margin_days=guards.future_margin_days)
            frame, rejects, received = parsed.frame, parsed.rejects, parsed.received_rows
    except parse.StructuralError as exc:
        sf.status, sf.message = "structural_error", str(exc)
        log.error("%s: %s", path, exc)
        return
    except UNREADABLE as exc:  # a file no reader can open (a corrupt xlsx): say which file and why
        sf.status = "structural_error"
        sf.message = f"{sf.department}/{path.name}: the file cannot be read ({type(exc).__name__}: {exc})"
        log.error("%s", sf.message)
        return
    sf.received_rows = int(received)
    sf.rejected_rows = len(rejects)
    name = f"{sf.batch_id}__{sf.line_in_manifest}__{sf.table}.parquet"
    frame.to_parquet(inside(out, out / name), index=False)
    sf.parquet = name
    if len(rejects):  # kept in the base with the date's commit (reject_rows), written out from there
        cols = [c for c in ("line", "reason", "detail", "raw", "key") if c in rejects.columns]
        rejects[cols].astype(str).to_parquet(out / (name + ".rejects"), index=False)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


RAW_LIMIT = 4000  # characters of a rejected line kept in the base and the rejects file (a 10 MB value is cut)


def _storable(text: str) -> str:
    """Text any database and CSV can hold: NUL and lone surrogates (undecodable bytes) as visible escapes,
    at most RAW_LIMIT characters (the rest is said, not kept)."""
    if len(text) > RAW_LIMIT:
        text = text[:RAW_LIMIT] + f"…(cut: {len(text):,} characters in all)"
    return _UNSTORABLE.sub(lambda m: "\\x%02x" % (ord(m.group()) & 0xFF) if m.group() == "\x00" or
                           ord(m.group()) >= 0xDC80 else "\\u%04x" % ord(m.group()), text)


def reject_rows(date: str, department: str, table: str, batch_id: str, rejects: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows in the layout the base keeps them (catalog.base.REJECT_COLUMNS). The key makes the
    same reject of the same line the same row, so a re-run adds nothing twice."""
    n = len(rejects)

    def col(c: str) -> np.ndarray:
        if c not in rejects.columns:
            return np.full(n, "", dtype=object)
        return np.array([_storable(v) for v in rejects[c].astype(str)], dtype=object)

    frame = pd.DataFrame({"business_date": date, "department": department, "table": table, "batch_id": batch_id,
                          "line": col("line"), "reason": col("reason"),
                          "detail": col("reason_text" if "reason_text" in rejects.columns else "detail"),
                          "raw": col("raw"), "RWBH": col("RWBH")}, index=range(n))
    digest = [hashlib.sha1(r.encode("utf-8", "surrogatepass")).hexdigest()[:12] for r in frame["raw"]]
    frame.insert(0, "reject_key", date + "|" + batch_id + "|" + table + "|" + frame["line"] + "|" + frame["reason"]
                 + "|" + pd.Series(digest, dtype=object))
    return frame


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
