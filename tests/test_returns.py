"""Verification returns (spec section 5): task numbers, row-by-row validation, effects."""
from __future__ import annotations

from types import SimpleNamespace

import openpyxl
import pandas as pd
import pytest

from exchange.returns import ACCEPTED_COLUMNS, REJECT_REASONS, return_effects, task_number, validate_returns
from exchange.taskfile import TASK_CODES, read_return, write_task_files

BD = "20260305"


def register() -> pd.DataFrame:
    rows = [
        ("civil", "dibao", "D1", "SELF", "NAME_DIFF", "civil", "RK1", "open", "", "", ""),
        ("civil", "dibao", "D2", "SELF", "DEATH_ACTIVE", "civil", "RK2", "open", "", "", ""),
        ("civil", "resident", "J1", "SELF", "FUZZY_CANDIDATE", "civil", "RK3", "open", "", "", ""),
        ("civil", "resident", "J2", "SELF", "PRESENT_NOT_REGISTERED", "police", "RK4", "open", "", "", ""),
        ("civil", "dibao", "D3", "SELF", "BIRTH_CONFLICT", "civil", "RK5", "closed", "RETURN", "20260303", "2"),
        ("civil", "dibao", "D4", "SELF", "SEX_CONFLICT", "civil", "RK6", "closed", "AUTO", "20260302", ""),
        ("civil", "marriage", "M1", "NV", "ID_CHECKSUM", "civil", "RK7", "open", "", "", ""),
    ]
    t = pd.DataFrame(rows, columns=["BM", "BH", "YWZJ", "JS", "HCZT", "route", "RKID", "status", "close_reason",
                                    "closed_date", "HCJG"])
    t["RWBH"] = task_number(t)
    return t


def answer(tasks: pd.DataFrame, key: str, hczt: str, **kw) -> dict:
    rwbh = tasks.loc[(tasks["YWZJ"] == key) & (tasks["HCZT"] == hczt), "RWBH"].iloc[0]
    return {"RWBH": rwbh, **kw}


def ret_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows).reindex(columns=list(TASK_CODES)).fillna("").astype(str)
    df["_line"] = range(2, 2 + len(df))
    return df


def reasons(rejected: pd.DataFrame, line: int) -> set[str]:
    r = rejected.loc[rejected["_line"] == line, "reason"]
    assert len(r) == 1, rejected
    return set(r.iloc[0].split(";"))


def test_task_number_stable_and_vectorised():
    one = task_number("civil", "dibao", "D1", "SELF", "NAME_DIFF")
    assert one.startswith("HC") and len(one) == 18 and one == one.upper()
    assert one == task_number("civil", "dibao", "D1", "SELF", "NAME_DIFF")
    f = pd.DataFrame({"BM": ["civil", "civil"], "BH": ["dibao", "dibao"], "YWZJ": ["D1", "D1"], "JS": ["SELF", "SELF"],
                      "HCZT": ["NAME_DIFF", "MISSING"]}, index=[7, 9])
    got = task_number(f)
    assert list(got.index) == [7, 9] and got[7] == one and got[9] != one
    assert list(task_number(f["BM"], f["BH"], f["YWZJ"], f["JS"], f["HCZT"])) == list(got)
    assert task_number(f.iloc[0:0]).empty


def test_each_reject_reason():
    t = register()
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明", HCR="张"),  # 2 ok
        {"RWBH": "HC0000000000000000", "HCJG": "2"},  # 3 unknown
        answer(t, "J2", "PRESENT_NOT_REGISTERED", HCJG="2"),  # 4 routed to police
        answer(t, "D2", "DEATH_ACTIVE", HCJG="7"),  # 5 invalid result
        answer(t, "D2", "DEATH_ACTIVE", HCJG="属实"),  # 6 invalid result
        answer(t, "D2", "DEATH_ACTIVE", HCJG="4"),  # 7 not applicable
        answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="HYZK", GZZ="20"),  # 8 field not in marriage
        answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="NV_ZJHM", GZZ=""),  # 9 empty value
        answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="", GZZ="x"),  # 10 empty field
        answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="DJBH", GZZ="x"),  # 11 the key is not correctable
        answer(t, "D4", "SEX_CONFLICT", HCJG="2"),  # 12 closed automatically
        answer(t, "D3", "BIRTH_CONFLICT", HCJG="1", GZZD="CSRQ", GZZ="19850302"),  # 13 closed, other answer
        answer(t, "D3", "BIRTH_CONFLICT", HCJG="2"),  # 14 closed, same answer: accepted idempotently
        answer(t, "J1", "FUZZY_CANDIDATE", HCJG=""),  # 15 not answered
        answer(t, "J1", "FUZZY_CANDIDATE", HCJG="4-确认为同一人"),  # 16 ok
    ]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert reasons(rej, 3) == {"UNKNOWN_TASK"}
    assert reasons(rej, 4) == {"WRONG_DEPARTMENT"}
    assert reasons(rej, 5) == {"INVALID_RESULT"} and reasons(rej, 6) == {"INVALID_RESULT"}
    assert reasons(rej, 7) == {"NOT_APPLICABLE"}
    for line in (8, 9, 10, 11):
        assert reasons(rej, line) == {"BAD_CORRECTION"}, line
    assert reasons(rej, 12) == {"TASK_CLOSED"} and reasons(rej, 13) == {"TASK_CLOSED"}
    assert "20260302自动销号" in rej.loc[rej["_line"] == 12, "reason_text"].iloc[0]
    assert rej.loc[rej["_line"] == 3, "reason_text"].iloc[0] == REJECT_REASONS["UNKNOWN_TASK"]
    assert rej.loc[rej["_line"] == 6, "HCJG"].iloc[0] == "属实"  # the row as returned
    assert sorted(acc["_line"]) == [2, 14, 16]
    assert 15 not in set(rej["_line"])  # unanswered rows are neither
    assert list(acc.columns) == ACCEPTED_COLUMNS
    a = acc.set_index("_line")
    assert a.loc[16, "HCJG"] == "4" and a.loc[16, "RKID"] == "RK3" and a.loc[16, "repeat"] == "0"
    assert a.loc[14, "repeat"] == "1"
    assert a.loc[2, "BH"] == "dibao" and a.loc[2, "accepted_on"] == BD


def test_several_reasons_on_one_row():
    t = register()
    acc, rej = validate_returns(ret_frame([answer(t, "J2", "PRESENT_NOT_REGISTERED", HCJG="5")]), t, "civil", BD)
    assert acc.empty and reasons(rej, 2) == {"WRONG_DEPARTMENT", "NOT_APPLICABLE"}


def test_conflicting_and_duplicate_rows():
    t = register()
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明"),
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="CSRQ", GZZ="19850302"),  # a second field: fine
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明"),  # identical duplicate
        answer(t, "D2", "DEATH_ACTIVE", HCJG="2"),
        answer(t, "D2", "DEATH_ACTIVE", HCJG="3"),  # contradicts
    ]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert sorted(acc["_line"]) == [2, 3, 4]
    assert list(acc.sort_values("_line")["repeat"]) == ["0", "0", "1"]
    assert reasons(rej, 5) == {"CONFLICTING_ANSWERS"} and reasons(rej, 6) == {"CONFLICTING_ANSWERS"}
    eff = return_effects(acc, t)
    assert sorted(eff["corrections"]["field"]) == ["CSRQ", "XM"]


def test_effects():
    t = register()
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="xm", GZZ=" 陈小明 ", HCR="张三", HCRQ="20260304"),
        answer(t, "D2", "DEATH_ACTIVE", HCJG="3"),
        answer(t, "J1", "FUZZY_CANDIDATE", HCJG="5"),
        answer(t, "M1", "ID_CHECKSUM", HCJG="9", BZ="证件遗失"),
        answer(t, "D3", "BIRTH_CONFLICT", HCJG="2"),  # repeat of a closed answer: no effect
    ]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert rej.empty
    eff = return_effects(acc, t)
    corr = eff["corrections"]
    assert corr.to_dict("records") == [{"BM": "civil", "BH": "dibao", "YWZJ": "D1", "JS": "SELF", "HCZT": "NAME_DIFF",
                                        "field": "XM", "value": "陈小明", "RWBH": t.loc[0, "RWBH"], "HCR": "张三",
                                        "HCRQ": "20260304"}]
    sup = eff["suppressions"]
    assert sorted(zip(sup["YWZJ"], sup["HCZT"], sup["result"])) == [("D1", "NAME_DIFF", "1"), ("M1", "ID_CHECKSUM", "9")]
    assert sup.loc[sup["YWZJ"] == "M1", "JS"].iloc[0] == "NV"
    assert eff["cancellations"][["BM", "BH", "YWZJ"]].to_dict("records") == [{"BM": "civil", "BH": "dibao", "YWZJ": "D2"}]
    dec = eff["decisions"]
    assert dec.to_dict("records") == [{"BM": "civil", "BH": "resident", "YWZJ": "J1", "JS": "SELF", "RKID": "RK3",
                                       "decision": "NOT_SAME", "RWBH": t.loc[2, "RWBH"], "decided": BD}]
    assert set(eff["closed"]["RWBH"]) == set(acc["RWBH"])
    for frame in eff.values():
        assert frame.notna().all().all()


def test_effects_of_nothing():
    t = register()
    acc, rej = validate_returns(ret_frame([]), t, "civil", BD)
    assert acc.empty and rej.empty
    eff = return_effects(acc, t)
    assert set(eff) == {"corrections", "suppressions", "cancellations", "decisions", "closed"}
    assert all(f.empty for f in eff.values())
    assert list(eff["decisions"].columns) == ["BM", "BH", "YWZJ", "JS", "RKID", "decision", "RWBH", "decided"]


def test_write_fill_read_validate(tmp_path):
    t = register()
    open_civil = t[(t["status"] == "open") & (t["route"] == "civil")]
    xlsx, _ = write_task_files(open_civil, "civil", "20260304", tmp_path)
    wb = openpyxl.load_workbook(xlsx)
    ws = wb["核查任务"]
    col = {code: i + 1 for i, code in enumerate(TASK_CODES)}
    for r in range(2, ws.max_row + 1):
        if ws.cell(row=r, column=col["HCZT"]).value == "FUZZY_CANDIDATE":
            ws.cell(row=r, column=col["HCJG"], value=4)  # a number cell
        if ws.cell(row=r, column=col["HCZT"]).value == "NAME_DIFF":
            ws.cell(row=r, column=col["HCJG"], value="1")
            ws.cell(row=r, column=col["GZZD"], value="XM")
            ws.cell(row=r, column=col["GZZ"], value="陈小明")
    wb.save(xlsx)
    acc, rej = validate_returns(read_return(xlsx, "xlsx"), t, "civil", BD)
    assert rej.empty and sorted(acc["HCZT"]) == ["FUZZY_CANDIDATE", "NAME_DIFF"]
    eff = return_effects(acc, t)
    assert eff["decisions"]["decision"].tolist() == ["SAME"]
    assert eff["corrections"]["value"].tolist() == ["陈小明"]


# ----------------------------------------------------------------------------------------------------
# The clerks' loop closes: answer 1 without a correction, corrections checked against the catalogue,
# every rejected row explained in Chinese and its task kept open, the answer's trace, the run's figures


def reason_row(rejected: pd.DataFrame, line: int) -> pd.Series:
    r = rejected[rejected["_line"] == line]
    assert len(r) == 1, rejected
    return r.iloc[0]


def test_result_1_without_correction_closes_like_2():
    t = register()
    rows = [answer(t, "D1", "NAME_DIFF", HCJG="1"),  # corrected in the department's own system
            answer(t, "M1", "ID_CHECKSUM", HCJG="1-属实已更正", GZZD=" ", GZZ="")]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert rej.empty, rej[["_line", "reason"]]
    assert sorted(acc["_line"]) == [2, 3] and set(acc["HCJG"]) == {"1"}
    eff = return_effects(acc, t)
    assert eff["corrections"].empty
    sup = eff["suppressions"]
    assert sorted(zip(sup["YWZJ"], sup["HCZT"], sup["result"])) == [("D1", "NAME_DIFF", "1"), ("M1", "ID_CHECKSUM", "1")]
    assert set(eff["closed"]["RWBH"]) == set(acc["RWBH"])


def test_bad_correction_says_what_is_wrong():
    t = register()
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="NO_SUCH", GZZ="x"),  # 2 not a field of dibao
        answer(t, "D2", "DEATH_ACTIVE", HCJG="1", GZZD="DBRYBH", GZZ="D9"),  # 3 the record key
        answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="NV_ZJHM"),  # 4 a field without a value
        answer(t, "J1", "FUZZY_CANDIDATE", HCJG="1", GZZ="陈小明"),  # 5 a value without a field
    ]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert acc.empty
    for line in (2, 3, 4, 5):
        assert reasons(rej, line) == {"BAD_CORRECTION"}, line
    assert reason_row(rej, 2)["problem"] == "更正字段“NO_SUCH”不是低保对象(dibao)的字段"
    assert reason_row(rej, 3)["problem"] == "更正字段“DBRYBH”是低保对象(dibao)的业务主键，不能通过回填更正"
    assert reason_row(rej, 4)["problem"] == "填写了更正字段“NV_ZJHM”但没有填写更正值(GZZ)"
    assert reason_row(rej, 5)["problem"] == "填写了更正值“陈小明”但没有填写更正字段(GZZD)"
    for line in (2, 3, 4, 5):
        row = reason_row(rej, line)
        assert row["action"].startswith("请填写本表可更正的字段代码") and "都留空即可" in row["action"]
        assert row["reason_text"] == row["problem"] + "。" + row["action"]


# (table, field, value as typed, stored value or None when rejected, words the reason must hold)
VALUES = [
    ("dibao", "CSRQ", "19850302", "19850302", ""),
    ("dibao", "CSRQ", "１９８５０３０２", "19850302", ""),
    ("dibao", "CSRQ", "19991340", None, "不是有效的日期(CCYYMMDD)"),
    ("dibao", "CSRQ", "19990229", None, "不是有效的日期(CCYYMMDD)"),
    ("dibao", "CSRQ", "1985-03-02", None, "不是有效的日期(CCYYMMDD)"),
    ("dibao", "CSRQ", "20270101", None, "晚于业务日期20260305"),
    ("dibao", "QSRQ", "18991231", None, "不是有效的日期(CCYYMMDD)"),
    ("dibao", "BZZT", "0", "0", ""),
    ("dibao", "BZZT", "2", None, "只能填1、0"),
    ("dibao", "XB", "男", "1", ""),
    ("dibao", "XB", "3", None, "不是有效的性别代码"),
    ("dibao", "JTDZ_XZQH", "320102", "320102", ""),
    ("dibao", "JTDZ_XZQH", "32010", None, "行政区划代码"),
    ("dibao", "JTDZ_XZQH", "990102", None, "行政区划代码"),
    ("dibao", "GMSFHM", "320102198503021233", "320102198503021233", ""),
    ("dibao", "GMSFHM", "32010219850302123x", None, "校验位错误"),
    ("dibao", "GMSFHM", "32010219850302002x", "32010219850302002X", ""),
    ("dibao", "GMSFHM", "320102850302123", "320102850302123", ""),
    ("dibao", "GMSFHM", "3.20102E+17", None, "不是有效的公民身份号码"),
    ("dibao", "GMSFHM", "320102202712011230", None, "不是有效的公民身份号码"),
    ("dibao", "YBZJE", "1234.5", "1234.5", ""),
    ("dibao", "YBZJE", "123.456", None, "不是有效的数值"),
    ("dibao", "YBZJE", "1234567", None, "不是有效的数值"),
    ("dibao", "YBZJE", "-5", None, "公式"),
    ("dibao", "XM", "=cmd|' /C calc'!A0", None, "以“=”开头"),
    ("dibao", "XM", "+1", None, "以“+”开头"),
    ("dibao", "XM", "@SUM(A1)", None, "以“@”开头"),
    ("dibao", "XM", "陈\x07小明", None, "控制字符"),
    ("dibao", "XM", "陈\u200b小明", None, "控制字符"),
    ("dibao", "XM", "阿依古丽·买买提", "阿依古丽·买买提", ""),
    ("dibao", "XM", "陈" * 51, None, "超过50个字符"),
    ("dibao", "JTDZ", "南京市玄武区 中山路1号", "南京市玄武区 中山路1号", ""),
    ("marriage", "NV_ZJLX", "414", "414", ""),
    ("marriage", "NV_ZJLX", "415", None, "只能填111、414、516、990"),
    ("marriage", "NV_CSRQ", "19900101", "19900101", ""),
    ("marriage", "NV_ZJHM", "E12345678", None, "不是有效的公民身份号码"),  # the record holds a citizen ID
]


@pytest.mark.parametrize("table,fld,typed,stored,words", VALUES, ids=[f"{t}.{f}={v!r}" for t, f, v, *_ in VALUES])
def test_correction_values_are_checked_against_the_catalogue(table, fld, typed, stored, words):
    t = register()
    key, state = {"dibao": ("D1", "NAME_DIFF"), "marriage": ("M1", "ID_CHECKSUM")}[table]
    acc, rej = validate_returns(ret_frame([answer(t, key, state, HCJG="1", GZZD=fld, GZZ=typed)]), t, "civil", BD)
    if stored is not None:
        assert rej.empty, rej[["reason", "reason_text"]].to_dict("records")
        assert acc["GZZ"].tolist() == [stored]
        assert return_effects(acc, t)["corrections"]["value"].tolist() == [stored]
    else:
        assert acc.empty and reasons(rej, 2) == {"BAD_CORRECTION_VALUE"}
        row = reason_row(rej, 2)
        assert words in row["problem"], row["problem"]
        assert row["problem"].startswith("更正值“") and row["action"] == "请核实后重新填写更正值(GZZ)再回传"
        assert "\x07" not in row["reason_text"] and "\u200b" not in row["reason_text"]


def test_an_id_of_another_document_is_held_to_its_length_only():
    t = register()
    marriage = pd.DataFrame({"_key": ["M1"], "_deleted": ["0"], "NV_ZJLX": ["414"], "NV_ZJHM": ["E1234567"]})
    rows = [answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="NV_ZJHM", GZZ="E12345678")]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD, sources={"marriage": marriage})
    assert rej.empty and acc["GZZ"].tolist() == ["E12345678"]
    # the same return turning the document into a citizen ID: the number must be one
    rows.append(answer(t, "M1", "ID_CHECKSUM", HCJG="1", GZZD="NV_ZJLX", GZZ="111"))
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD, sources={"marriage": marriage})
    assert reasons(rej, 2) == {"BAD_CORRECTION_VALUE"} and reasons(rej, 3) == {"INCOMPLETE_ANSWER"}


def test_a_task_is_answered_whole_or_stays_open():
    t = register()
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明"),  # fine on its own
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="CSRQ", GZZ="19991340"),  # a bad value
        answer(t, "D2", "DEATH_ACTIVE", HCJG="2"),
    ]
    acc, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert acc["_line"].tolist() == [4]
    assert reasons(rej, 2) == {"INCOMPLETE_ANSWER"} and reasons(rej, 3) == {"BAD_CORRECTION_VALUE"}
    assert "另有被拒收的行" in reason_row(rej, 2)["reason_text"]
    # two tasks of one record giving one field two values conflict
    t2 = pd.concat([t, t.iloc[[0]].assign(HCZT="ID_MISMATCH")], ignore_index=True)
    t2["RWBH"] = task_number(t2)
    rows = [answer(t2, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明"),
            answer(t2, "D1", "ID_MISMATCH", HCJG="1", GZZD="XM", GZZ="陈晓明")]
    acc, rej = validate_returns(ret_frame(rows), t2, "civil", BD)
    assert acc.empty and reasons(rej, 2) == reasons(rej, 3) == {"CONFLICTING_ANSWERS"}


def test_rejected_rows_carry_chinese_text_and_task_number():
    t = register()
    rows = [{"RWBH": "hc0000000000000000 ", "HCJG": "2"},
            answer(t, "J2", "PRESENT_NOT_REGISTERED", HCJG="5")]
    _, rej = validate_returns(ret_frame(rows), t, "civil", BD)
    assert {"reason", "reason_text", "problem", "action", "task_rwbh"} <= set(rej.columns)
    assert reason_row(rej, 2)["task_rwbh"] == "HC0000000000000000"
    assert reason_row(rej, 2)["reason_text"] == "任务编号不存在。请核对任务编号(RWBH)，按下发的任务文件原样回传，不要改动前面各列"
    two = reason_row(rej, 3)
    assert two["problem"] == "该任务不是下发给本部门的，本部门的回复无效；核查结果4、5只适用于“疑似同一人”任务"
    assert two["action"].count("；") == 1 and "。" not in two["action"]


# --- apply_returns and build_summary on a small base


BATCH = "civil-20260305-ret"


def small_base():
    from catalog.base import DECISION_COLUMNS, OVERLAY_COLUMNS, TASK_COLUMNS as BASE_TASKS

    t = register()
    t["XFRQ"], t["HCQX"] = "20260220", "20260306"
    t.loc[t["YWZJ"] == "D2", "HCQX"] = "20260304"  # overdue on BD
    t = t.reindex(columns=BASE_TASKS, fill_value="").fillna("").astype(str)
    dibao = pd.DataFrame({"_key": ["D1", "D2"], "_deleted": ["0", "0"], "DBRYBH": ["D1", "D2"], "XM": ["陈晓明", "王五"],
                          "CSRQ": ["19850302", "19600101"], "GMSFHM": ["", ""]})
    state = SimpleNamespace(tasks=t, overlays=pd.DataFrame(columns=OVERLAY_COLUMNS),
                            decisions=pd.DataFrame(columns=DECISION_COLUMNS))
    return state, {"dibao": dibao}


def returned(rows: list[dict], date: str = BD, batch: str = BATCH):
    from catalog import RETURN_TABLE

    sf = SimpleNamespace(table=RETURN_TABLE, status="staged", batch_id=batch, line_in_manifest=1, path="return.xlsx",
                         department="civil", message="")
    report = {"table": RETURN_TABLE, "path": "return.xlsx", "extract_type": "verification_return", "status": "staged",
              "manifest_rows": len(rows), "received_rows": len(rows), "loaded_rows": 0, "rejected_rows": 0,
              "checksum_ok": True}
    return (SimpleNamespace(files=[sf], errors=[], waiting=[]), {f"{batch}__1": ret_frame(rows)},
            {batch: {"batch_id": batch, "department": "civil", "files": [report]}})


def test_apply_returns_keeps_rejected_tasks_open_and_traces_every_answer():
    from exchange.process import apply_returns

    state, sources = small_base()
    t = state.tasks
    rw = {k: t.loc[t["YWZJ"] == k, "RWBH"].iloc[0] for k in ("D1", "D2", "M1")}
    rows = [
        answer(t, "D1", "NAME_DIFF", HCJG="1", GZZD="XM", GZZ="陈小明", HCR="张三", HCRQ="2026-03-04"),
        answer(t, "D2", "DEATH_ACTIVE", HCJG="1", GZZD="CSRQ", GZZ="19991340"),
        answer(t, "M1", "ID_CHECKSUM", HCJG="1"),
        {"RWBH": "HC0000000000000000", "HCJG": "2"},
    ]
    stage, staged, reports = returned(rows)
    tasks, overlays, _, audit, rejects = apply_returns(state, stage, staged, BD, reports, sources)
    by = tasks.set_index("RWBH")
    # (3c) the rejected answer's task stays open and says why; answers 1 with and without correction close
    assert by.loc[rw["D2"], "status"] == "open"
    assert by.loc[rw["D2"], "BZ"] == ("回填被拒(20260305)：更正值“19991340”不是有效的日期(CCYYMMDD)，应为8位数字的真实日期，"
                                      "如19850302。请核实后重新填写更正值(GZZ)再回传")
    assert by.loc[rw["D1"], "status"] == by.loc[rw["M1"], "status"] == "closed"
    assert by.loc[rw["M1"], "HCJG"] == "1" and by.loc[rw["M1"], "close_reason"] == "RETURN"
    assert not (overlays["YWZJ"] == "D2").any()
    assert set(overlays.loc[overlays["YWZJ"] == "M1", "kind"]) == {"SUPPRESS"}
    # (3a) the rejects frame: task number and the Chinese text beside line, reason and raw
    [(dept, table, rj)] = rejects
    assert (dept, table) == ("civil", "verification_tasks")
    assert {"RWBH", "line", "reason", "reason_text", "raw"} <= set(rj.columns)
    r = rj.set_index("RWBH")
    assert r.loc[rw["D2"], "reason"] == "BAD_CORRECTION_VALUE" and r.loc[rw["D2"], "line"] == "3"
    assert r.loc[rw["D2"], "reason_text"].endswith("请核实后重新填写更正值(GZZ)再回传")
    assert "19991340" in r.loc[rw["D2"], "raw"] and r.loc["HC0000000000000000", "reason"] == "UNKNOWN_TASK"
    assert reports[BATCH]["files"][0]["rejected_reasons"] == {"BAD_CORRECTION_VALUE": 1, "UNKNOWN_TASK": 1}
    # (4) the trace: old value, new value, cause with task and answer date, the clerk
    a = pd.DataFrame(audit)
    corr = a[(a["entity"] == "record") & (a["field"] == "XM")].iloc[0]
    assert (corr["old"], corr["new"], corr["actor"], corr["RKID"]) == ("陈晓明", "陈小明", "张三", "RK1")
    assert corr["cause"].startswith(f"return {BATCH}/return.xlsx {rw['D1']}") and "核查日期 20260304" in corr["cause"]
    closed = a[(a["entity"] == "task") & (a["field"] == "status")].set_index("entity_key")
    assert (closed.loc[rw["D1"], "old"], closed.loc[rw["D1"], "new"]) == ("open", "closed")
    assert closed.loc[rw["D1"], "actor"] == "张三"
    assert closed.loc[rw["M1"], "actor"] == "civil" and closed.loc[rw["M1"], "cause"].endswith("核查日期 20260305")
    note = a[(a["entity"] == "task") & (a["field"] == "BZ")].iloc[0]
    assert note["entity_key"] == rw["D2"] and note["new"] == by.loc[rw["D2"], "BZ"] and note["actor"] == "civil"
    assert set(a["business_date"]) == {BD}

    # the next day the clerk answers the task again, BZ handed back as it was: accepted, BZ overwritten
    state.tasks, state.overlays = tasks, overlays
    again = [answer(tasks, "D2", "DEATH_ACTIVE", HCJG="2", BZ=by.loc[rw["D2"], "BZ"], HCR="李四")]
    stage, staged, reports = returned(again, "20260306", "civil-20260306-ret")
    tasks2, *_ = apply_returns(state, stage, staged, "20260306", reports, sources)
    row = tasks2.set_index("RWBH").loc[rw["D2"]]
    assert (row["status"], row["HCJG"], row["BZ"], row["HCR"]) == ("closed", "2", "", "李四")
    again = [answer(tasks, "D2", "DEATH_ACTIVE", HCJG="2", BZ="已电话核实")]
    stage, staged, reports = returned(again, "20260306", "civil-20260306-ret")
    tasks2, *_ = apply_returns(state, stage, staged, "20260306", reports, sources)
    assert tasks2.set_index("RWBH").loc[rw["D2"], "BZ"] == "已电话核实"


def test_summary_counts_returns_per_department():
    from exchange.process import apply_returns, build_summary

    state, sources = small_base()
    t = state.tasks
    rows = [answer(t, "D1", "NAME_DIFF", HCJG="2"), answer(t, "M1", "ID_CHECKSUM", HCJG="1"),
            answer(t, "D3", "BIRTH_CONFLICT", HCJG="2"),  # a repeat of the recorded answer: accepted, nothing new
            answer(t, "D2", "DEATH_ACTIVE", HCJG="1", GZZD="CSRQ", GZZ="1999"),
            {"RWBH": "HC0000000000000000", "HCJG": "2"}]
    stage, staged, reports = returned(rows)
    tasks, *_ = apply_returns(state, stage, staged, BD, reports, sources)
    summary = build_summary(stage, reports, tasks, {}, {}, BD)
    civil = summary["departments"]["civil"]["returns"]
    assert civil == {"accepted": 3, "rejected": 2, "closed": 2, "overdue": 1,
                     "rejected_by_reason": {"BAD_CORRECTION_VALUE": 1, "UNKNOWN_TASK": 1}}
    assert summary["departments"]["police"]["returns"] == {"accepted": 0, "rejected": 0, "closed": 0, "overdue": 0,
                                                           "rejected_by_reason": {}}
