"""Hostile deliveries and faults: nothing already in the base is lost, nothing is lost in silence.

Each case starts from a small generated city (three business dates: the historical load and two days
of increments), spoils one delivery or one step, and asserts the outcome an operator must see (an
exception with its reason, a refused date, a non-zero exit) and that the base holds what it held.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from day import DateBlocked, run_dates
from day.run import LateDelivery, outputs_complete
from settings import Settings, landed_dates
from store import db
from store.base import processed_dates, run_summary
from tests.conftest import copy_city, settings_for
from tests.test_pipeline import assert_same, snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(city_factory, tmp_path):
    return copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")


def replace_file(folder: Path, name: str, data: bytes, rows: int | None = None) -> None:
    """Replace a delivered file and update its checksum (and, if given, its rows) in the manifest."""
    (folder / name).write_bytes(data)
    m = _manifest(folder)
    for f in m["files"]:
        if f["path"] == name:
            f["sha256"] = hashlib.sha256(data).hexdigest()
            if rows is not None:
                f["rows"] = rows
    _write_manifest(folder, m)


def live_keys(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        frame = db.read_frame(conn, db.SOURCE_TABLES[table])
    return set(frame.loc[frame["_deleted"] != "1", "_key"])


def full_hukou_as_short_delivery(home: Path, d0: str, d1: str, keep_rows: int) -> int:
    """Day d1's police delivery becomes a full hukou extract holding only `keep_rows` rows of d0's,
    while its manifest still says all of them. Returns the manifest's row count."""
    src = home / "landing" / "police" / d0
    hukou = next(f for f in _manifest(src)["files"] if f["table"] == "hukou")
    lines = (src / hukou["path"]).read_bytes().splitlines(keepends=True)
    folder = home / "landing" / "police" / d1
    for f in _manifest(folder)["files"]:
        (folder / f["path"]).unlink()
    data = b"".join(lines[: 1 + keep_rows])
    (folder / "hukou_full.csv").write_bytes(data)
    m = _manifest(folder)
    m["files"] = [{**hukou, "path": "hukou_full.csv", "rows": hukou["rows"], "sha256": hashlib.sha256(data).hexdigest()}]
    _write_manifest(folder, m)
    return hukou["rows"]


@pytest.mark.parametrize("keep", ["half", "header_only"])
def test_a_short_or_empty_full_extract_is_held_and_deletes_nothing(home, db_url, keep):
    d0, d1, d2 = landed_dates(home)
    settings = settings_for(home, db_url)
    run_dates(settings, [d0])
    engine = db.engine_for(db_url)
    before = live_keys(engine, "hukou")
    total = full_hukou_as_short_delivery(home, d0, d1, len(before) // 2 if keep == "half" else 0)
    result = run_dates(settings, [d1])[d1]
    assert live_keys(engine, "hukou") == before  # nothing deleted, nothing of the held file applied
    held = [e for e in result.exceptions if e["kind"] == "held"]
    assert len(held) == 1 and held[0]["department"] == "police"
    assert f"of the {total:,} rows" in held[0]["cause"] or "holds no data rows" in held[0]["cause"]
    summary = run_summary(engine, d1)
    assert [e["kind"] for e in summary["exceptions"]] == ["held"]
    html = (home / "out" / "reports" / d1 / "summary.html").read_text(encoding="utf-8")
    assert "交换异常" in html and "全量文件行数不足" in html
    hukou = summary["departments"]["police"]["tables"]["hukou"]
    assert hukou["loaded_rows"] == 0 and hukou["deleted"] == 0


def test_a_late_delivery_for_an_earlier_date_is_refused(home, db_url, city_factory, tmp_path):
    d0, d1, d2 = landed_dates(home)
    settings = settings_for(home, db_url)
    run_dates(settings, [d0, d1])
    # a disability delivery for the day before the first date lands after d1 was processed
    late_date = "20260228"
    late = home / "landing" / "disability" / late_date
    shutil.copytree(home / "landing" / "disability" / d1, late)
    m = _manifest(late)
    m["business_date"], m["batch_id"] = late_date, "disability-20260228-late"
    _write_manifest(late, m)
    result = run_dates(settings, [d2])[d2]
    engine = db.engine_for(db_url)
    assert processed_dates(engine) == [d0, d1, d2]
    late_exceptions = [e for e in result.exceptions if e["kind"] == "late"]
    assert len(late_exceptions) == 1 and late_date in late_exceptions[0]["cause"]
    assert late_exceptions[0]["department"] == "disability"
    # the base is what the dates in order give without the late folder
    ref = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "ref")
    ref_url = f"sqlite:///{ref / 'popbase.db'}"
    run_dates(Settings(home=ref, db_url=ref_url), [d0, d1, d2])
    a, b = snapshot(engine), snapshot(db.engine_for(ref_url))
    for name in a:
        if name not in ("runs", "rejects"):
            pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)
    # asked for by name it is refused with the reason
    with pytest.raises(LateDelivery, match="applied strictly in order"):
        run_dates(settings, [late_date])


def test_new_batches_in_a_processed_earlier_date_are_refused(home, db_url):
    d0, d1, d2 = landed_dates(home)
    settings = settings_for(home, db_url)
    run_dates(settings, [d0, d1])
    engine = db.engine_for(db_url)
    before = snapshot(engine)
    folder = home / "landing" / "disability" / d0
    m = _manifest(folder)
    m["batch_id"] = "disability-20260301-02"
    _write_manifest(folder, m)
    result = run_dates(settings, [d0])[d0]
    assert not result.committed
    assert {e["kind"] for e in result.exceptions} == {"late"}
    assert_same(before, snapshot(engine))


@pytest.mark.parametrize("batch_id", ["../../../../../x", "police/20260301", ".hidden"])
def test_a_batch_id_that_names_a_path_blocks_the_date_and_writes_nothing_outside(home, batch_id):
    d0 = landed_dates(home)[0]
    folder = home / "landing" / "police" / d0
    m = _manifest(folder)
    m["batch_id"] = batch_id
    _write_manifest(folder, m)
    (folder / m["files"][0]["path"]).write_bytes(b"spoilt")  # a checksum mismatch would be quarantined
    outside = sorted(p.name for p in home.parent.iterdir())
    with pytest.raises(DateBlocked, match="is not a batch id"):
        run_dates(Settings(home=home), [d0])
    assert sorted(p.name for p in home.parent.iterdir()) == outside
    assert not (home / "out" / "quarantine").exists()


def test_a_blocked_date_stays_blocked(home, db_url):
    d0, d1, d2 = landed_dates(home)
    settings = settings_for(home, db_url)
    run_dates(settings, [d0])
    (home / "landing" / "civil" / d1 / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DateBlocked, match=d1):
        run_dates(settings, [d1])
    with pytest.raises(DateBlocked, match=d1):  # a later date does not run past it
        run_dates(settings, [d2])
    assert processed_dates(db.engine_for(db_url)) == [d0]


def test_outputs_missing_after_a_commit_are_written_again(home, db_url, monkeypatch):
    """A failure after the commit (here: the rejects cannot be written) fails the run; the next run
    writes the missing outputs before anything else, from the base right after that date."""
    from exchange import outputs

    d0, d1, d2 = landed_dates(home)
    settings = settings_for(home, db_url)

    def unwritable(*a, **k):
        raise PermissionError("out/rejects is not writable")

    run_dates(settings, [d0, d1])
    monkeypatch.setattr(outputs, "write_rejects_files", unwritable)
    with pytest.raises(PermissionError):
        run_dates(settings, [d2])  # the generated city has unreadable rows on this date
    engine = db.engine_for(db_url)
    assert processed_dates(engine) == [d0, d1, d2] and not outputs_complete(settings, d2)
    assert not (home / "out" / "rejects" / d2).exists()
    monkeypatch.undo()
    run_dates(settings, [d2])  # nothing new arrives, but the outputs of d2 are written
    assert outputs_complete(settings, d2)
    rejects = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False, encoding="utf-8-sig")
                         for f in (home / "out" / "rejects" / d2).glob("*_rejects.csv")])
    assert len(rejects) == sum(t["rejected_rows"] for d in run_summary(engine, d2)["departments"].values()
                               for t in d["tables"].values())


def test_stale_temporaries_are_removed_and_files_are_readable(home):
    d0 = landed_dates(home)[0]
    settings = Settings(home=home)
    run_dates(settings, [d0])
    exports = home / "out" / "exports" / d0
    (exports / ".persons.parquet.x1y2.tmp").write_bytes(b"half a file")
    (exports / ".tmp-abc.parquet").write_bytes(b"half a file")  # the name an earlier version used
    run_dates(settings, [d0])
    assert sorted(p.name for p in exports.iterdir()) == ["links.parquet", "persons.parquet"]
    assert len(pd.read_parquet(exports)) > 0
    mask = os.umask(0)
    os.umask(mask)
    for path in (exports / "persons.parquet", next((home / "out" / "tasks").rglob("*.csv")),
                 home / "out" / "reports" / d0 / "summary.html"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_the_cli_refuses_a_home_without_landing(tmp_path, monkeypatch):
    from pipelines.cli import main

    monkeypatch.setenv("POPBASE_HOME", str(tmp_path / "mistyped"))
    result = CliRunner().invoke(main, ["run", "--date", "20260301"])
    assert result.exit_code != 0
    assert "no landing/ folder" in result.output
    assert not (tmp_path / "mistyped" / "popbase.db").exists()


# ----------------------------------------------------------------------------------------------------
# kill -9 at several points of a date: the base and the outputs equal an uninterrupted run

KILL_AT = {
    "before the commit": "store.base:write_base",
    "after the commit, before the outputs": "exchange.outputs:_export_persons",  # both ways of writing the exports
    "between two outputs": "exchange.outputs:write_task_outputs",
    "while an output file is renamed into place": "exchange.files:publish",
    "before the outputs marker": "exchange.outputs:write_reports#after",
}

CHILD = """
import importlib, os, signal, sys
sys.path.insert(0, {root!r})
import day.run, exchange.outputs
from settings import Settings
mod, _, name = {target!r}.partition(":")
name, _, when = name.partition("#")
real = getattr(importlib.import_module(mod), name)

def killer(*a, **k):
    if when == "after":
        real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)

# every module that calls it, by the name it calls it
for m in (importlib.import_module(mod), day.run, exchange.outputs):
    if getattr(m, name, None) is real:
        setattr(m, name, killer)
day.run.run_dates(Settings(home={home!r}), {dates!r})
"""


def _outputs(home: Path) -> dict[str, bytes]:
    out = home / "out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "staging" not in p.parts and p.suffix != ".xlsx" and p.name != "outputs.json"}


@pytest.fixture(scope="module")
def uninterrupted(city_factory, tmp_path_factory):
    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path_factory.mktemp("ref") / "home")
    dates = landed_dates(home)
    run_dates(Settings(home=home), dates[:2])
    return home, dates, snapshot(db.engine_for(f"sqlite:///{home / 'popbase.db'}"))


@pytest.mark.parametrize("point", list(KILL_AT))
def test_a_run_killed_at_any_point_reruns_to_the_uninterrupted_base_and_outputs(uninterrupted, city_factory, tmp_path,
                                                                                  point):
    ref_home, dates, ref_base = uninterrupted
    home = copy_city(city_factory(persons=500, days=2, seed=11), tmp_path / "home")
    run_dates(Settings(home=home), dates[:1])
    child = CHILD.format(root=str(ROOT), target=KILL_AT[point], home=str(home), dates=dates[1:2])
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GX_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run_dates(Settings(home=home), dates[1:2])  # the operator runs the date again
    assert_same(ref_base, snapshot(db.engine_for(f"sqlite:///{home / 'popbase.db'}")))
    got, want = _outputs(home), _outputs(ref_home)
    assert sorted(got) == sorted(want)
    for name in want:
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(home / "out" / name), pd.read_parquet(ref_home / "out" / name))
        elif not name.endswith(".html"):  # summary.html is drawn from the same summary; CSV/JSON compared as bytes
            assert got[name] == want[name], name


def _table_file(home: Path, dept: str, date: str, table: str) -> tuple[Path, dict]:
    folder = home / "landing" / dept / date
    return folder, next(f for f in _manifest(folder)["files"] if f["table"] == table)


def set_cell(folder: Path, name: str, field: str, value: str) -> str:
    """Set one field of the first data row of a delivered GB18030 CSV (checksum updated); returns its key."""
    data = (folder / name).read_bytes()
    newline = "\r\n" if b"\r\n" in data else "\n"
    lines = data.decode("gb18030").split(newline)
    header, cells = lines[0].split(","), lines[1].split(",")
    cells[header.index(field)] = value
    lines[1] = ",".join(cells)
    replace_file(folder, name, newline.join(lines).encode("gb18030"))
    return cells[0]


def test_a_huge_value_is_rejected_and_the_rest_loads(home, db_url):
    d0 = landed_dates(home)[0]
    folder, f = _table_file(home, "police", d0, "hukou")
    key = set_cell(folder, f["path"], "HJDZ", "路" * 10_000_000)  # 10 M characters in a C..200 field
    summary = run_dates(settings_for(home, db_url), [d0])[d0].summary
    engine = db.engine_for(db_url)
    assert key not in live_keys(engine, "hukou") and len(live_keys(engine, "hukou")) == f["rows"] - 1
    assert summary["departments"]["police"]["tables"]["hukou"]["rejected_rows"] == 1
    rejects = pd.read_csv(home / "out" / "rejects" / d0 / "police_hukou_rejects.csv", dtype=str,
                          keep_default_na=False, encoding="utf-8-sig")
    assert rejects["reason"].tolist() == ["FIELD_TOO_LONG"]
    assert len(rejects["raw"].iloc[0]) < 5000 and "characters in all" in rejects["raw"].iloc[0]


def test_an_operation_dated_in_the_future_is_rejected(home, db_url):
    d0, d1, d2 = landed_dates(home)
    folder, f = _table_file(home, "police", d1, "hukou")
    set_cell(folder, f["path"], "CZSJ", "20991231235959")
    run_dates(settings_for(home, db_url), [d0, d1])
    with db.engine_for(db_url).connect() as conn:
        rej = db.read_frame(conn, db.rejects)
        hukou = db.read_frame(conn, db.SOURCE_TABLES["hukou"])
    assert "FUTURE_TIMESTAMP" in set(rej["reason"])
    assert (hukou["_ts"].str[:8] <= d1).all()  # no record carries a time after its date


def test_a_corrupt_return_file_blocks_the_date_and_names_the_file(home):
    d0, d1, _ = landed_dates(home)
    folder = home / "landing" / "police" / d1
    data = b"PK\x03\x04 this is not a workbook"
    (folder / "return_police.xlsx").write_bytes(data)
    m = _manifest(folder)
    m["files"].append({"table": "verification_tasks", "extract_type": "verification_return",
                       "path": "return_police.xlsx", "format": "xlsx", "rows": 3,
                       "sha256": hashlib.sha256(data).hexdigest()})
    _write_manifest(folder, m)
    settings = Settings(home=home)
    run_dates(settings, [d0])
    with pytest.raises(DateBlocked, match="return_police.xlsx"):
        run_dates(settings, [d1])


def test_the_cli_says_why_a_blocked_date_failed(home, tmp_path, monkeypatch):
    """popbase run on a date with a broken manifest exits non-zero with the reason, not 'step failed'
    (and the run is not retried: retrying cannot fix a delivery)."""
    from pipelines.cli import main

    d0 = landed_dates(home)[0]
    (home / "landing" / "civil" / d0 / "manifest.json").write_text("{not json", encoding="utf-8")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    monkeypatch.setenv("POPBASE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    result = CliRunner().invoke(main, ["run", "--date", d0])
    assert result.exit_code == 1
    assert f"business date {d0} is blocked" in result.output and "invalid JSON" in result.output
    assert "max_retries" not in result.output


def test_gates_run_beside_the_commit_block_a_bad_date_and_leave_the_base_as_it_was(home, db_url, monkeypatch):
    """Gates in a worker beside the commit (`gates_beside`, forced here: a test process has imported GX):
    a daily delivery GX finds structurally broken (a catalogue column left out, which staging lets pass)
    blocks the date after its scope and process ran, and the base is what it was; the same date delivered
    sound is committed with its gates' findings."""
    from day import run as day_run

    d0, d1, _ = landed_dates(home)
    sound = home.parent / "sound"
    shutil.copytree(home / "landing" / "police" / d1, sound)
    monkeypatch.setattr(day_run, "gates_beside", lambda settings, engine, staged: staged.business_date == d1)
    folder, f = _table_file(home, "police", d1, "hukou")
    spoilt = folder.parent / "spoilt"
    shutil.copytree(folder, spoilt)
    data = (spoilt / f["path"]).read_bytes()
    newline = "\r\n" if b"\r\n" in data else "\n"
    rows = [line.split(",") for line in data.decode("gb18030").split(newline)]
    left_out = rows[0].index("MZ")
    replace_file(spoilt, f["path"], newline.join(",".join(r[:left_out] + r[left_out + 1:]) if len(r) > left_out
                                                 else ",".join(r) for r in rows).encode("gb18030"))
    settings = settings_for(home, db_url)
    engine = db.engine_for(db_url)
    run_dates(settings, [d0])
    before = snapshot(engine)
    shutil.rmtree(folder)
    spoilt.rename(folder)
    with pytest.raises(DateBlocked, match=f["path"]) as blocked:
        run_dates(settings, [d1])
    assert any("MZ" in e for e in blocked.value.result.gates.errors)
    assert_same(before, snapshot(engine))
    assert processed_dates(engine) == [d0]
    # the same date delivered sound: gated beside its commit, it is committed with every file's rates
    shutil.rmtree(folder)
    shutil.copytree(sound, folder)
    beside = run_dates(settings, [d1])[d1]
    assert beside.committed and not beside.gates.errors
    assert set(beside.gates.rates) == {f"{x.department}/{x.path}" for x in beside.staged.files
                                       if x.status == "staged" and x.table != "verification_tasks"}
