"""Landing discovery: manifests, their validation, checksums (exchange/landing.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from exchange.landing import DeliveryError, Manifest, discover, load_manifest, sha256_file, verify

DATE = "20260301"


def _deliver(root: Path, dept: str, date: str = DATE, files=None, manifest: dict | None = None,
             raw_manifest: str | None = None) -> Path:
    folder = root / dept / date
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, table, et, content in files or []:
        (folder / name).write_bytes(content)
        entries.append({"table": table, "extract_type": et, "path": name, "format": "csv",
                        "encoding": "GB18030", "rows": 1, "sha256": hashlib.sha256(content).hexdigest()})
    m = {"department": dept, "business_date": date, "batch_id": f"{dept}-{date}-01", "files": entries}
    if manifest:
        m.update(manifest)
    (folder / "manifest.json").write_text(raw_manifest if raw_manifest is not None else json.dumps(m),
                                          encoding="utf-8")
    return folder


HUKOU = ("hukou.csv", "hukou", "full", "RYBH,XM\r\nR1,张三\r\n".encode("gb18030"))


def test_sha256_streamed_and_verify(tmp_path):
    p = tmp_path / "f.bin"
    data = b"x" * (3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    folder = _deliver(tmp_path / "landing", "police", files=[HUKOU])
    m = load_manifest(folder)
    mf = m.files[0]
    assert verify(mf, folder)
    (folder / "hukou.csv").write_bytes(b"tampered")
    assert not verify(mf, folder)


def test_discover_ready_waiting_and_malformed(tmp_path):
    root = tmp_path / "landing"
    _deliver(root, "police", files=[HUKOU,
                                    ("ret.xlsx", "verification_tasks", "verification_return", b"PK")])
    (root / "civil" / DATE).mkdir(parents=True)  # no manifest yet
    (root / "civil" / DATE / "resident.csv").write_bytes(b"JMBH\n")
    _deliver(root, "disability", raw_manifest="{not json")
    _deliver(root, "police", date="20260302", files=[HUKOU])  # another date: not listed

    found = discover(root, DATE)
    by = {m.folder.parent.name: m for m in found}
    assert [m.folder.parent.name for m in found] == ["police", "civil", "disability"]  # catalogue order
    pol = by["police"]
    assert pol.ok and pol.status == "ready" and pol.batch_id == "police-20260301-01"
    assert [(f.table, f.extract_type, f.encoding) for f in pol.files] == [
        ("hukou", "full", "GB18030"), ("verification_tasks", "verification_return", "GB18030")]
    assert by["civil"].status == "waiting" and by["civil"].waiting and by["civil"].files == []
    dis = by["disability"]
    assert dis.status == "malformed" and isinstance(dis.error, DeliveryError)
    assert "invalid JSON" in str(dis.error) and "manifest.json" in str(dis.error)
    with pytest.raises(DeliveryError):
        dis.raise_for_status()
    assert discover(tmp_path / "nowhere", DATE) == []


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"department": "tax"}, "unknown department"),
        ({"department": "civil"}, "does not match the folder"),
        ({"business_date": "20260230"}, "not a CCYYMMDD date"),
        ({"batch_id": ""}, "batch_id"),
        ({"files": [{"table": "dibao"}]}, "extract_type"),
    ],
)
def test_malformed_manifest_fields(tmp_path, change, expect):
    folder = _deliver(tmp_path / "landing", "police", files=[HUKOU], manifest=change)
    with pytest.raises(DeliveryError, match=expect):
        load_manifest(folder)
    (m,) = discover(tmp_path / "landing", DATE)
    assert m.status == "malformed" and expect in m.error.problem


@pytest.mark.parametrize(
    "entry, expect",
    [
        ({"table": "dibao"}, "unknown table 'dibao' for department 'police'"),
        ({"table": "verification_tasks"}, "needs extract_type 'verification_return'"),
        ({"extract_type": "verification_return"}, "must have table 'verification_tasks'"),
        ({"extract_type": "delta"}, "unknown extract_type"),
        ({"format": "xls"}, "unknown format"),
        ({"encoding": "big5"}, "unknown encoding"),
        ({"rows": -1}, "rows must be a non-negative integer"),
        ({"sha256": "abc"}, "sha256 must be 64 hex digits"),
        ({"path": "../../etc/passwd"}, "outside the delivery folder"),
        ({"path": "absent.csv"}, "is missing"),
    ],
)
def test_malformed_file_entries(tmp_path, entry, expect):
    folder = _deliver(tmp_path / "landing", "police", files=[HUKOU])
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    m["files"][0].update(entry)
    (folder / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(DeliveryError, match=expect.replace("(", r"\(")) as ei:
        load_manifest(folder)
    assert ei.value.path.name in ("manifest.json", "absent.csv")


def test_lenient_spellings_are_canonicalised(tmp_path):
    folder = _deliver(tmp_path / "landing", "police", files=[HUKOU])
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    m["files"][0].update(encoding="utf8", format="CSV", rows="1", sha256=m["files"][0]["sha256"].upper())
    m["files"].append({"table": "temp", "extract_type": "incremental", "path": "hukou.csv", "format": "xlsx",
                       "rows": 0, "sha256": m["files"][0]["sha256"]})
    (folder / "manifest.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(m).encode())  # BOM tolerated
    man: Manifest = load_manifest(folder)
    f0, f1 = man.files
    assert (f0.encoding, f0.format, f0.rows) == ("UTF-8", "csv", 1)
    assert f0.sha256 == f0.sha256.lower() and verify(f0, folder)
    assert (f1.encoding, f1.format, f1.incremental) == ("", "xlsx", True)


def test_replayed_batch_in_later_folder_is_accepted(tmp_path):
    folder = _deliver(tmp_path / "landing", "police", date="20260305", files=[HUKOU],
                      manifest={"business_date": "20260301", "batch_id": "police-20260301-01"})
    (m,) = discover(tmp_path / "landing", "20260305")
    assert m.ok and m.business_date == "20260301" and m.folder_date == "20260305" and m.folder == folder
