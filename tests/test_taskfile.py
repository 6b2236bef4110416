"""Task files (spec section 5): layout for a clerk, text cells, dropdown, formula neutralising, round trip."""
from __future__ import annotations

import csv

import openpyxl
import pandas as pd
import pytest

from exchange.returns import task_number
from exchange.taskfile import (
    RESULT_CODES, TASK_CODES, TASK_COLUMNS, TASK_HEADERS, escape_formulas, header_code, read_return,
    unescape_formulas, write_task_files,
)

BD = "20260301"
ID = "320102198503021233"

EXPECTED = [
    ("RWBH", "任务编号"), ("HCZT", "核查状态代码"), ("HCZTMC", "核查状态名称"), ("BM", "部门"), ("BH", "表"),
    ("YWZJ", "业务主键"), ("JS", "角色"), ("XM", "姓名"), ("GMSFHM", "公民身份号码"), ("XB", "性别"),
    ("CSRQ", "出生日期"), ("WTMS", "问题描述"), ("DBXX", "比对信息"), ("RKID", "人口编号"), ("XFRQ", "下发日期"),
    ("HCQX", "核查期限"), ("XZBZ", "新增标志"), ("HCJG", "核查结果"), ("GZZD", "更正字段"), ("GZZ", "更正值"),
    ("HCR", "核查人"), ("HCRQ", "核查日期"), ("BZ", "备注"),
]


def tasks_frame() -> pd.DataFrame:
    rows = [
        {"HCZT": "ID_CHECKSUM", "BM": "civil", "BH": "dibao", "YWZJ": "D1", "JS": "SELF", "XM": "陈小明",
         "GMSFHM": ID[:17] + "0", "XB": "1", "CSRQ": "19850302", "WTMS": "该人员身份证号码校验位错误，请核对证件原件后更正。",
         "DBXX": f"本表身份证号码(GMSFHM):{ID[:17]}0; 若前17位无误，建议更正为:{ID}", "RKID": "RK0000000000000001"},
        {"HCZT": "NAME_DIFF", "BM": "civil", "BH": "resident", "YWZJ": "00123", "JS": "SELF", "XM": "=HYPERLINK(\"http://x\")",
         "GMSFHM": "+8613800000000", "XB": "-1", "CSRQ": "@SUM(A1)", "WTMS": "\tTAB", "DBXX": "\rCR",
         "RKID": "'=already"},
        {"HCZT": "FUZZY_CANDIDATE", "BM": "civil", "BH": "marriage", "YWZJ": "M1", "JS": "NV", "XM": "阿依古丽·买买提",
         "GMSFHM": "", "XB": "", "CSRQ": "", "WTMS": "请核实是否同一人。", "DBXX": "匹配得分 0.81", "RKID": "RK0000000000000002"},
    ]
    t = pd.DataFrame(rows)
    t["RWBH"] = task_number(t)
    t["XFRQ"], t["HCQX"], t["XZBZ"] = BD, "20260313", "1"
    return t


@pytest.fixture
def written(tmp_path):
    t = tasks_frame()
    xlsx, csv_path = write_task_files(t, "civil", BD, tmp_path)
    return t, xlsx, csv_path


def test_columns_exactly_as_spec():
    assert list(TASK_COLUMNS) == EXPECTED
    assert TASK_HEADERS[0] == "任务编号(RWBH)" and TASK_HEADERS[-1] == "备注(BZ)"


def test_paths_and_csv(written, tmp_path):
    t, xlsx, csv_path = written
    assert xlsx == tmp_path / "tasks" / "civil" / BD / f"verification_tasks_civil_{BD}.xlsx"
    assert csv_path == xlsx.with_suffix(".csv")
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == list(TASK_HEADERS)
    assert len(rows) == 4
    # formulas neutralised in CSV
    for row in rows[1:]:
        for value in row:
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), value
    got = dict(zip(TASK_CODES, rows[2]))
    assert got["XM"] == "'=HYPERLINK(\"http://x\")" and got["GMSFHM"] == "'+8613800000000"
    assert got["RKID"] == "''=already"  # a quote before a formula character gets one more quote
    assert got["HCZTMC"] == "姓名不一致"  # filled from the state code
    assert dict(zip(TASK_CODES, rows[1]))["GMSFHM"] == ID[:17] + "0"
    # no temporary files left behind
    assert sorted(p.name for p in xlsx.parent.iterdir()) == sorted([xlsx.name, csv_path.name])


def test_xlsx_for_a_clerk(written):
    t, xlsx, _ = written
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["核查任务", "说明"]
    ws = wb["核查任务"]
    assert [c.value for c in ws[1]] == list(TASK_HEADERS)
    assert all(c.font.b for c in ws[1])
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref and ws.auto_filter.ref.startswith("A1:")
    for row in ws.iter_rows(min_row=1, max_row=ws.max_row):
        for cell in row:
            if cell.value is None:
                continue
            assert cell.data_type == "s", (cell.coordinate, cell.value)  # every cell a text cell
            assert not str(cell.value).startswith("="), cell.coordinate  # no formula anywhere
    id_col = TASK_CODES.index("GMSFHM") + 1
    assert ws.cell(row=2, column=id_col).value == ID[:17] + "0"
    assert ws.cell(row=2, column=id_col).number_format == "@"
    assert ws.cell(row=3, column=TASK_CODES.index("YWZJ") + 1).value == "00123"  # leading zeros kept
    hcjg = openpyxl.utils.get_column_letter(TASK_CODES.index("HCJG") + 1)
    dvs = [dv for dv in ws.data_validations.dataValidation if hcjg + "2" in dv.sqref]
    assert len(dvs) == 1
    dv = dvs[0]
    assert dv.type == "list" and dv.formula1.strip('"').split(",") == list(RESULT_CODES)
    for code, meaning in RESULT_CODES.items():
        assert f"{code} {meaning}" in dv.prompt
    assert ws.column_dimensions["M"].width > 30  # DBXX is wide
    text = " ".join(str(c.value) for row in wb["说明"].iter_rows() for c in row if c.value)
    for code, meaning in RESULT_CODES.items():
        assert meaning in text
    assert "FUZZY_CANDIDATE" in text and "疑似同一人" in text


def test_empty_tasks_write_headers_only(tmp_path):
    xlsx, csv_path = write_task_files(pd.DataFrame(columns=["RWBH", "HCZT"]), "police", BD, tmp_path)
    ws = openpyxl.load_workbook(xlsx).active
    assert [c.value for c in ws[1]] == list(TASK_HEADERS) and ws.max_row == 1
    assert csv_path.read_text(encoding="utf-8-sig").strip() == ",".join(TASK_HEADERS)
    back = read_return(xlsx, "xlsx")
    assert back.empty and set(TASK_CODES) <= set(back.columns)


def test_rewrite_replaces_atomically(written, tmp_path):
    t, xlsx, csv_path = written
    write_task_files(t.iloc[:1], "civil", BD, tmp_path)
    assert len(read_return(csv_path, "csv")) == 1 and len(read_return(xlsx, "xlsx")) == 1


def test_round_trip_xlsx(written):
    t, xlsx, _ = written
    wb = openpyxl.load_workbook(xlsx)
    ws = wb["核查任务"]
    col = {code: i + 1 for i, code in enumerate(TASK_CODES)}
    ws.cell(row=2, column=col["HCJG"], value=1)  # typed as a number
    ws.cell(row=2, column=col["GZZD"], value="GMSFHM")
    ws.cell(row=2, column=col["GZZ"], value=ID)
    ws.cell(row=2, column=col["HCRQ"], value=pd.Timestamp("2026-03-05").to_pydatetime())
    ws.cell(row=3, column=col["HCJG"], value="2")
    ws.cell(row=10, column=1, value=None)  # trailing emptiness
    wb.save(xlsx)
    back = read_return(xlsx, "xlsx")
    assert len(back) == 3
    assert list(back["_line"]) == [2, 3, 4]
    assert back.loc[0, "HCJG"] == "1" and back.loc[0, "GZZ"] == ID and back.loc[0, "HCRQ"] == "20260305"
    assert back.loc[1, "HCJG"] == "2" and back.loc[2, "HCJG"] == ""
    for code in ("RWBH", "XM", "GMSFHM", "XB", "CSRQ", "WTMS", "DBXX", "RKID", "YWZJ"):
        assert list(back[code]) == list(t[code]), code  # formula escapes removed again


def test_round_trip_csv_utf8_and_gb18030(written, tmp_path):
    t, _, csv_path = written
    back = read_return(csv_path, "csv")
    for code in ("RWBH", "XM", "GMSFHM", "XB", "CSRQ", "WTMS", "DBXX", "RKID"):
        assert list(back[code]) == list(t[code]), code
    # a department re-saves it in GB18030 with full-width parentheses and bare codes in the header
    text = csv_path.read_bytes().decode("utf-8-sig")
    header, rest = text.split("\r\n", 1)
    header = header.replace("(RWBH)", "（RWBH）").replace("核查结果(HCJG)", "HCJG")
    rows = list(csv.reader([rest.split("\r\n")[0]]))
    rows[0][TASK_CODES.index("HCJG")] = "9"
    out = tmp_path / "gb.csv"
    with open(out, "w", encoding="gb18030", newline="") as fh:
        fh.write(header + "\r\n")
        csv.writer(fh, lineterminator="\r\n").writerows(rows)
    back = read_return(out, "csv")
    assert back.loc[0, "RWBH"] == t.loc[0, "RWBH"] and back.loc[0, "HCJG"] == "9"
    assert back.loc[0, "XM"] == "陈小明" and back.loc[0, "_line"] == 2


def test_read_return_multiline_csv_lines(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text('任务编号(RWBH),核查结果(HCJG),备注(BZ)\r\nHC1,1,"two\nlines"\r\nHC2,2,x\r\n', encoding="utf-8")
    back = read_return(p, "csv")
    assert list(back["_line"]) == [2, 4] and back.loc[0, "BZ"] == "two\nlines"


def test_header_code():
    assert header_code("任务编号(RWBH)") == "RWBH"
    assert header_code("任务编号（RWBH）") == "RWBH"
    assert header_code(" hcjg ") == "HCJG"
    assert header_code("备注") == ""
    assert header_code(None) == ""


def test_escape_round_trip():
    values = pd.Series(["=1+1", "+1", "-1", "@x", "\tx", "\rx", "'=x", "''+x", "'abc", "abc", "", "a=b", "'"])
    esc = escape_formulas(values)
    assert not esc.str.match(r"^[=+\-@\t\r]").any()
    assert list(unescape_formulas(esc)) == list(values)


# ----------------------------------------------------------------------------------------------------
# Receipts: rejected return rows back to the department, in Chinese, beside its task file


def rejected_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "RWBH": ["HC00D961340BF903A7", "=HYPERLINK(\"http://x\")"],
        "line": ["3", "7"],
        "reason": ["BAD_CORRECTION_VALUE", "UNKNOWN_TASK"],
        "reason_text": ["更正值“19991340”不是有效的日期(CCYYMMDD)。请核实后重新填写更正值(GZZ)再回传",
                        "任务编号不存在。请核对任务编号(RWBH)"],
        "problem": ["更正值“19991340”不是有效的日期(CCYYMMDD)", "任务编号不存在"],
        "action": ["请核实后重新填写更正值(GZZ)再回传", "请核对任务编号(RWBH)"],
        "raw": ["HC00D961340BF903A7|1|CSRQ|19991340", "-1|@SUM(A1)|=cmd|' /C calc'!A0"],
    })


def test_write_receipt(tmp_path):
    from exchange.taskfile import RECEIPT_HEADERS, write_receipt

    got = write_receipt(rejected_rows(), "civil", BD, tmp_path)
    assert got is not None
    xlsx, csv_path = got
    folder = tmp_path / "tasks" / "civil" / BD
    assert (xlsx, csv_path) == (folder / f"receipt_civil_{BD}.xlsx", folder / f"receipt_civil_{BD}.csv")
    assert RECEIPT_HEADERS == ("任务编号(RWBH)", "行号", "拒收原因代码", "拒收原因", "处理办法", "原始内容")
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == list(RECEIPT_HEADERS) and len(rows) == 3
    assert rows[1] == ["HC00D961340BF903A7", "3", "BAD_CORRECTION_VALUE", "更正值“19991340”不是有效的日期(CCYYMMDD)",
                       "请核实后重新填写更正值(GZZ)再回传", "HC00D961340BF903A7|1|CSRQ|19991340"]
    assert rows[2][0] == "'=HYPERLINK(\"http://x\")" and rows[2][5] == "'-1|@SUM(A1)|=cmd|' /C calc'!A0"
    wb = openpyxl.load_workbook(xlsx)
    ws = wb.worksheets[0]
    assert [c.value for c in ws[1]] == list(RECEIPT_HEADERS) and ws.freeze_panes == "A2"
    assert ws.max_row == 3
    for row in ws.iter_rows(min_row=1, max_row=ws.max_row):
        for cell in row:
            assert cell.value is None or cell.data_type == "s", cell.coordinate
            assert not str(cell.value or "").startswith(("=", "+", "-", "@")), cell.coordinate
    assert ws.cell(row=2, column=4).value == "更正值“19991340”不是有效的日期(CCYYMMDD)"
    assert ws.cell(row=3, column=1).value == "'=HYPERLINK(\"http://x\")"
    assert sorted(p.name for p in folder.iterdir()) == sorted([xlsx.name, csv_path.name])  # no temporaries left


def test_write_receipt_splits_reason_text_and_writes_nothing_for_nothing(tmp_path):
    from exchange.taskfile import write_receipt

    assert write_receipt(rejected_rows().iloc[0:0], "civil", BD, tmp_path) is None
    assert write_receipt(None, "civil", BD, tmp_path) is None
    assert not (tmp_path / "tasks").exists()
    # rows as kept in the base: the text in one column (reason_text, or detail), problem。action
    kept = rejected_rows().drop(columns=["problem", "action", "reason_text"]).assign(
        detail=["更正值“1。2”超过50个字符。请核实后重新填写更正值(GZZ)再回传", "没有处理办法"])
    _, csv_path = write_receipt(kept, "police", BD, tmp_path)
    rows = list(csv.reader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    assert rows[1][3:5] == ["更正值“1。2”超过50个字符", "请核实后重新填写更正值(GZZ)再回传"]
    assert rows[2][3:5] == ["没有处理办法", ""]
