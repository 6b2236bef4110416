"""Departments answer their task files; the answers come back as returns and change the base for good."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from day import run_dates
from linkage.link import load_config
from settings import Settings, landed_dates
from store import db
from tests.conftest import copy_city, run


def task_file(home: Path, dept: str, date: str, ext="xlsx") -> Path:
    return home / "out" / "tasks" / dept / date / f"verification_tasks_{dept}_{date}.{ext}"


def answer_xlsx(src: Path, dst: Path, answers: dict[str, dict[str, str]], extra_rows: list[dict] | None = None) -> int:
    """Fill HCJG etc. in a copy of a task file as a clerk would in Excel; returns the data row count."""
    wb = openpyxl.load_workbook(src)
    ws = wb.worksheets[0]
    header = {c.value.split("(")[-1].rstrip(")"): c.column for c in ws[1] if c.value}
    rows = 0
    for r in range(2, ws.max_row + 1):
        rwbh = ws.cell(r, header["RWBH"]).value
        if not rwbh:
            continue
        rows += 1
        for code, value in answers.get(rwbh, {}).items():
            cell = ws.cell(r, header[code])
            cell.value = value
            if isinstance(value, str) and value.startswith("="):
                cell.data_type = "s"  # typed into a text-formatted cell: Excel keeps it as text, not a formula
    for extra in extra_rows or []:
        r = ws.max_row + 1
        rows += 1
        for code, value in extra.items():
            ws.cell(r, header[code]).value = value
    wb.save(dst)
    return rows


def deliver_return(home: Path, dept: str, date: str, path: Path, rows: int) -> None:
    """Add the return to the department's delivery of `date` (one manifest per department and date)."""
    folder = home / "landing" / dept / date
    folder.mkdir(parents=True, exist_ok=True)
    mpath = folder / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else {
        "department": dept, "business_date": date, "batch_id": f"{dept}-{date}-ret", "files": []}
    manifest["files"].append({"table": "verification_tasks", "extract_type": "verification_return", "path": path.name,
                              "format": "xlsx", "rows": rows, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    mpath.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")


def open_tasks(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return db.read_frame(conn, db.tasks)


@pytest.fixture(scope="module")
def answered(city_factory, tmp_path_factory):
    city = city_factory(persons=3000, days=3, seed=7)
    home = copy_city(city, tmp_path_factory.mktemp("ret") / "home")
    engine = db.make_engine(f"sqlite:///{home / 'popbase.db'}")
    dates = landed_dates(home)
    d0, d1, d2 = dates[0], dates[1], dates[2]
    # nothing fuzzy is sure enough (every fuzzy link POSSIBLE, a FUZZY_CANDIDATE task), so that the clerks have
    # candidates to answer `4` and `5` to, however well the linker does on this city
    cfg = load_config()
    cfg["fuzzy"]["thresholds"]["upper"] = 1.01
    config = home.parent / "linkage.json"
    config.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")

    def run_grey(dates):
        run_dates(Settings(home=home, db_url=f"sqlite:///{home / 'popbase.db'}", linkage_config=config), dates)

    run_grey([d0])
    tasks = open_tasks(engine)
    tasks = tasks[tasks["status"] == "open"]

    def pick(state=None, dept=None, exclude=()):
        t = tasks[~tasks["RWBH"].isin(exclude)]
        if state:
            t = t[t["HCZT"] == state]
        if dept:
            t = t[t["route"] == dept]
        assert len(t), f"the generated city has no open {state or ''} task for {dept or 'any department'}"
        return t.iloc[0]

    chosen = {}
    sex = pick("SEX_CONFLICT")
    chosen["correct"] = sex
    suppress = pick("NAME_DIFF")
    chosen["suppress"] = suppress
    cancel = pick("NOT_IN_POLICE")  # routed to police; police says 3: the record should be cancelled
    chosen["other"] = pick(dept="civil", exclude=[sex.RWBH, suppress.RWBH, cancel.RWBH])
    fuzzy = tasks[tasks["HCZT"] == "FUZZY_CANDIDATE"]
    answers: dict[str, dict[str, dict]] = {}

    def add(dept, rwbh, **kw):
        answers.setdefault(dept, {})[rwbh] = {"HCR": "张三", "HCRQ": d1, **kw}

    # the sex digit of the ID decides the correct sex
    from linkage.ids import analyse_ids

    correct_sex = analyse_ids(pd.Series([sex.GMSFHM]), d0)["id_sex"].iloc[0]
    add(sex.route, sex.RWBH, HCJG="1", GZZD="XB", GZZ=correct_sex)
    add(suppress.route, suppress.RWBH, HCJG="2")
    add(chosen["other"].route, chosen["other"].RWBH, HCJG="9", BZ="已电话核实")
    add(cancel.route, cancel.RWBH, HCJG="3")
    chosen["cancel"] = cancel
    if len(fuzzy) >= 1:
        f = fuzzy.iloc[0]
        add(f.route, f.RWBH, HCJG="5")
        chosen["not_same"] = f
    if len(fuzzy) >= 2:
        f = fuzzy.iloc[1]
        add(f.route, f.RWBH, HCJG="4")
        chosen["same"] = f
    bad = {
        "UNKNOWN_TASK": {"RWBH": "HC0000000000000000", "HCJG": "2"},
        "INVALID_RESULT": {"RWBH": pick(dept="civil", exclude=list(answers.get("civil", {}))).RWBH, "HCJG": "7"},
    }
    police_task = pick(dept="police")
    bad["WRONG_DEPARTMENT"] = {"RWBH": police_task.RWBH, "HCJG": "2"}
    other_civil = pick(dept="civil", exclude=list(answers.get("civil", {})) + [bad["INVALID_RESULT"]["RWBH"]])
    bad["BAD_CORRECTION"] = {"RWBH": other_civil.RWBH, "HCJG": "1", "GZZD": "NO_SUCH_FIELD", "GZZ": "x"}
    for dept in ("police", "civil", "family_planning", "disability"):
        src = task_file(home, dept, d0)
        dst = src.parent / f"return_{dept}_{d1}.xlsx"
        extra = list(bad.values()) if dept == "civil" else []
        if dept not in answers and not extra:
            continue
        n = answer_xlsx(src, dst, answers.get(dept, {}), extra)
        target = home / "landing" / dept / d1 / dst.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dst.read_bytes())
        deliver_return(home, dept, d1, target, n)
    run_grey([d1])
    after_d1 = open_tasks(engine)
    run_grey([d2])
    yield {"home": home, "engine": engine, "dates": dates, "chosen": chosen, "answers": answers, "bad": bad,
           "after_d1": after_d1}
    engine.dispose()


def test_answered_tasks_are_closed_and_stay_closed(answered):
    tasks = open_tasks(answered["engine"]).set_index("RWBH")
    for dept, ans in answered["answers"].items():
        for rwbh, a in ans.items():
            assert tasks.loc[rwbh, "status"] == "closed", (rwbh, a)
            assert tasks.loc[rwbh, "close_reason"] == "RETURN"
            assert tasks.loc[rwbh, "HCJG"] == a["HCJG"]


def test_correction_is_applied_and_its_state_goes_away(answered):
    t = answered["chosen"]["correct"]
    with answered["engine"].connect() as conn:
        ov = db.read_frame(conn, db.overlays)
    hit = ov[(ov["kind"] == "CORRECT") & (ov["YWZJ"] == t.YWZJ) & (ov["field"] == "XB")]
    assert len(hit) == 1
    open_now = open_tasks(answered["engine"])
    same_role = open_now[(open_now["YWZJ"] == t.YWZJ) & (open_now["HCZT"] == "SEX_CONFLICT") & (open_now["status"] == "open")]
    assert same_role.empty


def test_decisions_are_kept_by_later_runs(answered):
    links = pd.read_parquet(answered["home"] / "out" / "exports" / answered["dates"][2] / "links.parquet")
    key = ["BM", "BH", "YWZJ", "JS"]
    assert {"same", "not_same"} <= set(answered["chosen"]), "the city raised fewer than two FUZZY_CANDIDATE tasks"
    t = answered["chosen"]["same"]
    row = links[(links[key] == [t.BM, t.BH, t.YWZJ, t.JS]).all(axis=1)].iloc[0]
    assert (row.RKID, row.PPFS) == (t.RKID, "MANUAL")
    t = answered["chosen"]["not_same"]
    row = links[(links[key] == [t.BM, t.BH, t.YWZJ, t.JS]).all(axis=1)].iloc[0]
    assert row.RKID != t.RKID


def test_bad_return_rows_are_rejected_with_reasons(answered):
    d1 = answered["dates"][1]
    rejects = pd.read_csv(answered["home"] / "out" / "rejects" / d1 / "civil_verification_tasks_rejects.csv",
                          dtype=str, keep_default_na=False, encoding="utf-8-sig")
    reasons = ";".join(rejects["reason"])
    for code in answered["bad"]:
        assert code in reasons
    assert len(rejects) == len(answered["bad"])


def test_audit_entries_are_present_per_person(answered):
    with answered["engine"].connect() as conn:
        audit = db.read_frame(conn, db.audit)
    d1 = answered["dates"][1]
    for dept, ans in answered["answers"].items():
        for rwbh in ans:
            rows = audit[(audit["entity"] == "task") & (audit["entity_key"] == rwbh) & (audit["new"] == "closed")]
            assert len(rows) == 1 and rows.iloc[0]["cause"].startswith("return") and rows.iloc[0]["old"] == "open"
            assert rows.iloc[0]["actor"] == "张三"  # the clerk (HCR), not just the department
            assert rwbh in rows.iloc[0]["cause"] and f"核查日期 {d1}" in rows.iloc[0]["cause"]
    t = answered["chosen"]["correct"]
    corr = audit[(audit["entity"] == "record") & audit["entity_key"].str.endswith(t.YWZJ) & (audit["field"] == "XB")]
    assert len(corr) == 1 and corr.iloc[0]["actor"] == "张三" and corr.iloc[0]["RKID"] == t.RKID
    # old value: the department's own value before the correction; new value: the correction
    assert (corr.iloc[0]["old"], corr.iloc[0]["new"]) == (t.XB, answered["answers"][t.route][t.RWBH]["GZZ"])
    assert t.RWBH in corr.iloc[0]["cause"]


def test_cancelled_record_leaves_the_base_until_it_changes(answered):
    t = answered["chosen"]["cancel"]
    links = pd.read_parquet(answered["home"] / "out" / "exports" / answered["dates"][2] / "links.parquet")
    assert links[(links["BH"] == t.BH) & (links["YWZJ"] == t.YWZJ)].empty


def test_suppressed_state_is_not_raised_again(answered):
    t = answered["chosen"]["suppress"]
    tasks = open_tasks(answered["engine"])
    again = tasks[(tasks["RWBH"] == t.RWBH)]
    assert (again["status"] == "closed").all() and len(again) == 1


def test_audit_trail_can_be_queried_per_person(answered):
    t = answered["chosen"]["correct"]
    with answered["engine"].connect() as conn:
        trail = db.audit_for_person(conn, t.RKID)
    assert {"task", "record"} <= set(trail["entity"])
    assert (trail["entity_key"] == t.RWBH).any()
    assert ((trail["entity"] == "record") & (trail["field"] == "XB") & (trail["actor"] == "张三")).any()


# ----------------------------------------------------------------------------------------------------
# The clerks' loop closes, on SQLite and PostgreSQL: an answer 1 without a correction is taken like a 2;
# a correction whose value does not fit its field is rejected with a reason in Chinese, its task stays
# open and shows the reason in the next task file; the run summary counts the returns.


def test_the_clerks_loop_closes(db_url, city_factory, tmp_path):
    city = city_factory(persons=3000, days=3, seed=7)
    home = copy_city(city, tmp_path / "home")
    engine = db.engine_for(db_url)
    d0, d1, d2 = landed_dates(home)[:3]
    run(home, db_url, [d0])
    tasks = open_tasks(engine)
    civil = tasks[(tasks["status"] == "open") & (tasks["route"] == "civil") & (tasks["HCZT"] != "FUZZY_CANDIDATE")]
    with_birth = civil[civil["BH"].isin(["dibao", "resident"])]
    assert len(with_birth) >= 2 and len(civil) >= 4, "the generated city has too few open civil tasks"
    b, c = with_birth.iloc[0], with_birth.iloc[1]
    rest = civil[~civil["RWBH"].isin([b.RWBH, c.RWBH])]
    a, d = rest.iloc[0], rest.iloc[1]
    answers = {
        a.RWBH: {"HCJG": "1", "HCR": "李四", "HCRQ": d1},  # corrected in the department's own system
        b.RWBH: {"HCJG": "1", "GZZD": "CSRQ", "GZZ": "19991340", "HCR": "李四"},  # month 13
        c.RWBH: {"HCJG": "1", "GZZD": "XM", "GZZ": "=cmd|' /C calc'!A0"},  # a spreadsheet formula
        d.RWBH: {"HCJG": "1", "GZZD": "CSRQ"},  # a field without its value
    }
    src = task_file(home, "civil", d0)
    target = home / "landing" / "civil" / d1 / f"return_civil_{d1}.xlsx"
    target.parent.mkdir(parents=True, exist_ok=True)
    n = answer_xlsx(src, target, answers)
    deliver_return(home, "civil", d1, target, n)
    summary = run(home, db_url, [d1])[d1]

    after = open_tasks(engine).set_index("RWBH")
    assert (after.loc[a.RWBH, "status"], after.loc[a.RWBH, "close_reason"], after.loc[a.RWBH, "HCJG"]) == (
        "closed", "RETURN", "1")
    with engine.connect() as conn:
        ov = db.read_frame(conn, db.overlays)
        audit = db.read_frame(conn, db.audit)
    mine = ov[(ov["BH"] == a.BH) & (ov["YWZJ"] == a.YWZJ) & (ov["HCZT"] == a.HCZT)]
    assert set(mine["kind"]) == {"SUPPRESS"}
    texts = {b.RWBH: "不是有效的日期(CCYYMMDD)", c.RWBH: "会被表格软件当作公式", d.RWBH: "没有填写更正值"}
    for rwbh, words in texts.items():
        assert after.loc[rwbh, "status"] == "open", rwbh
        assert after.loc[rwbh, "BZ"].startswith(f"回填被拒({d1})："), after.loc[rwbh, "BZ"]
        assert words in after.loc[rwbh, "BZ"]
    assert ov[(ov["kind"] == "CORRECT") & ov["YWZJ"].isin([b.YWZJ, c.YWZJ, d.YWZJ])].empty
    # the next task file shows the open tasks with the reason in BZ
    from exchange.taskfile import read_return

    nxt = read_return(task_file(home, "civil", d1, "csv"), "csv").set_index("RWBH")
    for rwbh in texts:
        assert nxt.loc[rwbh, "BZ"] == after.loc[rwbh, "BZ"]
    assert a.RWBH not in nxt.index
    rejects = pd.read_csv(home / "out" / "rejects" / d1 / "civil_verification_tasks_rejects.csv", dtype=str,
                          keep_default_na=False, encoding="utf-8-sig")
    assert sorted(rejects["reason"]) == ["BAD_CORRECTION", "BAD_CORRECTION_VALUE", "BAD_CORRECTION_VALUE"]
    # the receipt beside the civil task file says each rejection in Chinese, with the task number
    receipt = pd.read_csv(home / "out" / "tasks" / "civil" / d1 / f"receipt_civil_{d1}.csv", dtype=str,
                          keep_default_na=False, encoding="utf-8-sig")
    assert sorted(receipt["任务编号(RWBH)"]) == sorted([b.RWBH, c.RWBH, d.RWBH])
    assert receipt["拒收原因"].str.contains("更正").all() and (receipt["处理办法"] != "").all()
    assert not (home / "out" / "tasks" / "police" / d1 / f"receipt_police_{d1}.csv").exists()
    returns = summary["departments"]["civil"]["returns"]
    assert {k: returns[k] for k in ("accepted", "rejected", "closed")} == {"accepted": 1, "rejected": 3, "closed": 1}
    assert returns["rejected_by_reason"] == {"BAD_CORRECTION": 1, "BAD_CORRECTION_VALUE": 2}
    assert isinstance(returns["overdue"], int)
    # the trace of the answer: the clerk, the task, the answer date
    closing = audit[(audit["entity"] == "task") & (audit["entity_key"] == a.RWBH) & (audit["new"] == "closed")]
    assert len(closing) == 1 and closing.iloc[0]["actor"] == "李四" and closing.iloc[0]["old"] == "open"
    assert a.RWBH in closing.iloc[0]["cause"] and f"核查日期 {d1}" in closing.iloc[0]["cause"]
    note = audit[(audit["entity"] == "task") & (audit["entity_key"] == b.RWBH) & (audit["field"] == "BZ")]
    assert len(note) == 1 and note.iloc[0]["actor"] == "李四"

    # the answer 1 holds like a 2: the state is not raised again while the record stays as it was
    run(home, db_url, [d2])
    final = open_tasks(engine).set_index("RWBH")
    assert final.loc[a.RWBH, "status"] == "closed" and final.loc[a.RWBH, "close_reason"] == "RETURN"
