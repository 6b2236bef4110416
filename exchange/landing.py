"""Landing zone discovery (前置交换区, spec section 2): manifests, their validation, checksums.

Layout: ``<landing_root>/<dept>/<CCYYMMDD>/`` holds the delivered files and a ``manifest.json``
written last. A folder without ``manifest.json`` is still being written (``waiting``).

Decisions (see :func:`discover`):

* A malformed manifest never crashes the whole business date: :func:`discover` returns it with
  ``status == "malformed"`` and ``error`` set to a :class:`DeliveryError` (path + what is wrong), so
  the caller reports it and carries on with the other departments. :meth:`Manifest.raise_for_status`
  turns it into an exception for callers that prefer one.
* Everything listed in the manifest is checked before anything is loaded: ``batch_id`` a plain name
  (:data:`BATCH_ID`: it becomes part of paths under ``out/``), department known and equal to the folder,
  each file's table valid for that department (``verification_tasks`` only with
  ``verification_return`` and vice versa), ``extract_type`` / ``format`` / ``encoding`` known,
  ``rows`` a non-negative integer, ``sha256`` 64 hex digits, the file present inside the folder.
  One bad entry flags the whole manifest (a batch is loaded whole or not at all).
* The manifest's ``business_date`` must be a real ``CCYYMMDD`` date but may differ from the folder's
  date: a replayed batch may sit in a later date's folder (spec section 2). :attr:`Manifest.folder_date`
  keeps the folder's date; the caller decides (replay detection is by ``batch_id``).
* A checksum mismatch is *not* a manifest error: the caller calls :func:`verify` per file and
  quarantines that file (spec: ``checksum_ok`` false, nothing of it loaded).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from catalog import DEPARTMENTS, DEPT_TABLES, RETURN_TABLE

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
EXTRACT_TYPES = ("full", "incremental", "verification_return")
FORMATS = ("csv", "xlsx")
# canonical encoding names (spec: UTF-8 with optional BOM, or GB18030); matched case-insensitively
ENCODINGS = ("UTF-8", "GB18030")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class DeliveryError(Exception):
    """A delivery (manifest or one of its files) that cannot be accepted.

    ``path`` is the offending file, ``problem`` a readable sentence; ``str(err)`` has both.
    """

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def canonical_encoding(name: str | None) -> str | None:
    """``"utf8"``, ``"UTF-8"``, ``"utf_8"`` → ``"UTF-8"``; ``"gb18030"`` → ``"GB18030"``; else ``None``."""
    if not isinstance(name, str):
        return None
    squashed = re.sub(r"[\s_-]", "", name).upper()
    return {"UTF8": "UTF-8", "GB18030": "GB18030"}.get(squashed)


@dataclass
class ManifestFile:
    table: str
    extract_type: str
    path: str  # as written in the manifest, relative to the manifest's folder
    format: str  # "csv" | "xlsx" (lower-cased)
    encoding: str  # "UTF-8" | "GB18030" for csv (canonical spelling); "" for xlsx
    rows: int
    sha256: str  # lower-case hex

    def resolve(self, folder: Path) -> Path:
        return Path(folder) / self.path

    @property
    def incremental(self) -> bool:
        return self.extract_type == "incremental"


@dataclass
class Manifest:
    department: str
    business_date: str  # as declared in the manifest (may differ from the folder for a replay)
    batch_id: str
    files: list[ManifestFile]
    folder: Path
    raw: dict
    status: str = "ready"  # "ready" | "waiting" (no manifest.json yet) | "malformed"
    error: DeliveryError | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ready"

    @property
    def waiting(self) -> bool:
        return self.status == "waiting"

    @property
    def malformed(self) -> bool:
        return self.status == "malformed"

    @property
    def folder_date(self) -> str:
        return self.folder.name

    @property
    def folder_department(self) -> str:
        return self.folder.parent.name

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def raise_for_status(self) -> None:
        if self.status == "malformed" and self.error is not None:
            raise self.error
        if self.status == "waiting":
            raise DeliveryError(self.manifest_path, "delivery incomplete: manifest.json not written yet")


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Lower-case hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def verify(manifest_file: ManifestFile, folder: Path | str) -> bool:
    """True when the file exists and its sha256 equals the manifest's (case-insensitive)."""
    p = manifest_file.resolve(Path(folder))
    if not p.is_file():
        return False
    return sha256_file(p) == manifest_file.sha256.lower()


def _valid_date(s: object) -> bool:
    if not isinstance(s, str) or not re.fullmatch(r"[0-9]{8}", s):
        return False
    try:
        _dt.datetime.strptime(s, "%Y%m%d")
    except ValueError:
        return False
    return True


def _parse_rows(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[0-9]+\s*", v):
        return int(v)
    return None


# A batch id names the quarantine folder and the staging files: no separators, no '..', nothing hidden.
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json``. Raises :class:`DeliveryError` when malformed."""
    folder = Path(folder)
    mpath = folder / MANIFEST_NAME
    try:
        text = mpath.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DeliveryError(mpath, f"manifest is not UTF-8 text ({e})") from None
    except OSError as e:
        raise DeliveryError(mpath, f"cannot read manifest ({e.strerror or e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DeliveryError(mpath, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(raw, dict):
        raise DeliveryError(mpath, f"manifest must be a JSON object, got {type(raw).__name__}")

    def need(obj: dict, name: str, where: str) -> object:
        if name not in obj or obj[name] is None:
            raise DeliveryError(mpath, f"{where}: required field {name!r} is missing")
        return obj[name]

    dept = need(raw, "department", "manifest")
    if dept not in DEPARTMENTS:
        raise DeliveryError(mpath, f"unknown department {dept!r}; known: {', '.join(DEPARTMENTS)}")
    if dept != folder.parent.name:
        raise DeliveryError(
            mpath, f"department {dept!r} in the manifest does not match the folder {folder.parent.name!r}"
        )
    bdate = need(raw, "business_date", "manifest")
    if not _valid_date(bdate):
        raise DeliveryError(mpath, f"business_date {bdate!r} is not a CCYYMMDD date")
    batch_id = need(raw, "batch_id", "manifest")
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id.strip()) or ".." in batch_id:
        raise DeliveryError(mpath, f"batch_id {str(batch_id)[:80]!r} is not a batch id: 1-100 letters, digits, "
                                   "'.', '_' or '-', starting with a letter or digit (it names folders and files)")
    entries = need(raw, "files", "manifest")
    if not isinstance(entries, list):
        raise DeliveryError(mpath, "'files' must be a list")

    valid_tables = DEPT_TABLES[dept]
    files: list[ManifestFile] = []
    root = folder.resolve()
    for i, ent in enumerate(entries):
        where = f"files[{i}]"
        if not isinstance(ent, dict):
            raise DeliveryError(mpath, f"{where} must be an object")
        tbl = need(ent, "table", where)
        et = need(ent, "extract_type", where)
        if et not in EXTRACT_TYPES:
            raise DeliveryError(mpath, f"{where}: unknown extract_type {et!r}; known: {', '.join(EXTRACT_TYPES)}")
        if et == "verification_return":
            if tbl != RETURN_TABLE:
                raise DeliveryError(
                    mpath, f"{where}: a verification_return must have table {RETURN_TABLE!r}, got {tbl!r}"
                )
        elif tbl == RETURN_TABLE:
            raise DeliveryError(mpath, f"{where}: table {RETURN_TABLE!r} needs extract_type 'verification_return'")
        elif tbl not in valid_tables:
            raise DeliveryError(
                mpath,
                f"{where}: unknown table {tbl!r} for department {dept!r}; "
                f"valid: {', '.join(valid_tables)}, {RETURN_TABLE}",
            )
        fmt = need(ent, "format", where)
        fmt_l = fmt.lower() if isinstance(fmt, str) else fmt
        if fmt_l not in FORMATS:
            raise DeliveryError(mpath, f"{where}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        if fmt_l == "csv":
            enc = canonical_encoding(need(ent, "encoding", where))
            if enc is None:
                raise DeliveryError(
                    mpath, f"{where}: unknown encoding {ent['encoding']!r}; known: {', '.join(ENCODINGS)}"
                )
        else:
            enc = ""
        rows = _parse_rows(need(ent, "rows", where))
        if rows is None:
            raise DeliveryError(mpath, f"{where}: rows must be a non-negative integer, got {ent['rows']!r}")
        sha = need(ent, "sha256", where)
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha.strip()):
            raise DeliveryError(mpath, f"{where}: sha256 must be 64 hex digits, got {sha!r}")
        rel = need(ent, "path", where)
        if not isinstance(rel, str) or not rel.strip():
            raise DeliveryError(mpath, f"{where}: path must be a non-empty string")
        fpath = folder / rel
        try:
            inside = fpath.resolve().is_relative_to(root)
        except OSError:
            inside = False
        if Path(rel).is_absolute() or not inside:
            raise DeliveryError(mpath, f"{where}: path {rel!r} points outside the delivery folder")
        if not fpath.is_file():
            raise DeliveryError(fpath, f"file listed in {mpath.name} ({where}, table {tbl}) is missing")
        files.append(ManifestFile(tbl, et, rel, fmt_l, enc, rows, sha.strip().lower()))

    return Manifest(dept, bdate, batch_id.strip(), files, folder, raw)


def discover(landing_root: Path | str, business_date: str) -> list[Manifest]:
    """Every delivery folder ``landing_root/<dept>/<business_date>/``, as :class:`Manifest` objects.

    Returned in department catalogue order (unknown department folders last, by name):

    * ``status="ready"``: a valid manifest; ``files`` listed and present (checksums not yet verified,
      call :func:`verify`).
    * ``status="waiting"``: the folder exists but has no ``manifest.json`` yet: the delivery is
      incomplete and must not be loaded (logged at INFO; ``files`` empty, ``batch_id`` ``""``).
    * ``status="malformed"``: ``manifest.json`` exists but cannot be accepted; ``error`` is a
      :class:`DeliveryError` naming the path and the problem (logged at WARNING). The other
      departments of the date are unaffected.

    Never raises for a bad delivery; raises only if ``business_date`` itself is not ``CCYYMMDD``.
    A missing landing root yields ``[]``.
    """
    if not _valid_date(business_date):
        raise ValueError(f"business_date {business_date!r} is not a CCYYMMDD date")
    root = Path(landing_root)
    if not root.is_dir():
        return []
    order = {d: i for i, d in enumerate(DEPARTMENTS)}
    dept_dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name))
    out: list[Manifest] = []
    for ddir in dept_dirs:
        folder = ddir / business_date
        if not folder.is_dir():
            continue
        if not (folder / MANIFEST_NAME).is_file():
            log.info("delivery waiting (no manifest.json yet): %s", folder)
            out.append(Manifest(ddir.name, business_date, "", [], folder, {}, status="waiting"))
            continue
        try:
            out.append(load_manifest(folder))
        except DeliveryError as err:
            log.warning("malformed delivery: %s", err)
            raw: dict = {}
            try:
                loaded = json.loads((folder / MANIFEST_NAME).read_bytes().decode("utf-8-sig"))
                raw = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                pass
            batch = raw.get("batch_id") if isinstance(raw.get("batch_id"), str) else ""
            batch = batch if BATCH_ID.fullmatch(batch) and ".." not in batch else ""  # never a path
            out.append(Manifest(ddir.name, business_date, batch, [], folder, raw, status="malformed", error=err))
    return out
