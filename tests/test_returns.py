"""Verification returns (spec section 5): task numbers, row-by-row validation, effects."""
from __future__ import annotations

import openpyxl
import pandas as pd

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
        answer(t, "D1", "NAME_DIFF", HCJG="4"),  # 7 not applicable
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
