"""The task file's xlsx is written column at a time (`_write_xlsx`); a clerk must get the same workbook as
from the per-cell xlsxwriter writer it replaced (`_write_xlsx_per_cell`, kept as the reference): same
sheets, texts, styles, row heights, column widths, validations, panes, filter and print setup."""
from __future__ import annotations

import zipfile

import numpy as np
import openpyxl
import pandas as pd
import pytest

import exchange.taskfile as taskfile
from exchange.returns import task_number
from exchange.taskfile import TASK_CODES, _row_heights, _task_frame, _write_xlsx, _write_xlsx_per_cell, write_task_files

BD = "20260301"
FAKE_ID = "999999198503021230"  # region 999999 does not exist

AWKWARD = [
    "", "&<>\"'", "a & b < c > d ]]>", "=1+1", "+8613800000000", "-1", "@SUM(A1)", "'=already", "''+x",
    "=HYPERLINK(\"http://x\")", "two\nlines", "\r\nCR first", "\tTAB", "line\r\nbreak", " lead", "trail ", "  both  ",
    "\u3000全角空格\u3000", "\x85NEL", "\n", " ", "ctl \x00\x01\x08\x0b\x0c\x1f end", "\x0bvertical tab", "end\x1c",
    "_x0041_ literal escape", "_x005F_x0041_", "\ufffe\uffff", "陈小明", "阿依古丽·买买提", "𠀀𠀁 astral",
    FAKE_ID, "00123", "该人员身份证号码校验位错误，请核对证件原件后更正。" * 9,
    "x" * 40_000,  # beyond Excel's 32,767: truncated
    "长" * 20_000,  # past half the limit, not truncated
    "𠀀" * 17_000,  # 34,000 UTF-16 units: truncated without splitting a character
]


def awkward_tasks(rows: int) -> pd.DataFrame:
    """Every awkward value in every column (rotated), as a task frame before `_task_frame`."""
    t = pd.DataFrame({code: [AWKWARD[(r + c) % len(AWKWARD)] for r in range(rows)] for c, code in enumerate(TASK_CODES)})
    t["HCZTMC"] = t["HCZTMC"].where(t.index % 4 != 0, "")  # filled from the state code
    t.loc[t.index % 3 == 0, "HCZT"] = "NAME_DIFF"
    if rows > 3:  # the separator of a column's values: that column is escaped a value at a time
        t.loc[3, "BZ"] = "sep \ufdd0 inside"
    t["RWBH"] = task_number(t)
    return t


def cell_view(cell) -> tuple:
    font, fill, al, b = cell.font, cell.fill, cell.alignment, cell.border
    return (cell.value, cell.data_type, cell.number_format, font.b, font.sz, font.name,
            fill.fill_type, fill.fgColor.rgb, fill.bgColor.rgb,
            al.wrap_text, al.vertical, al.horizontal,
            tuple((s.style, s.color.rgb if s.color is not None else None) for s in (b.left, b.right, b.top, b.bottom)))


def sheet_view(ws) -> dict:
    ps, pm = ws.page_setup, ws.page_margins
    return {
        "dimensions": (ws.max_row, ws.max_column, ws.dimensions),
        "cells": [[cell_view(c) for c in row] for row in ws.iter_rows()],
        "heights": {r: (d.height, d.customHeight) for r, d in ws.row_dimensions.items()},
        "widths": {k: (d.min, d.max, d.width, d.customWidth) for k, d in ws.column_dimensions.items()},
        "validations": sorted((dv.type, dv.formula1, str(dv.sqref), dv.promptTitle, dv.prompt, dv.errorTitle,
                               dv.error, dv.errorStyle, dv.showDropDown, dv.allow_blank)
                              for dv in ws.data_validations.dataValidation),
        "merged": sorted(str(m) for m in ws.merged_cells.ranges),
        "freeze": ws.freeze_panes,
        "filter": ws.auto_filter.ref,
        "print": (ps.orientation, ps.paperSize, ps.fitToWidth, ps.fitToHeight, ws.sheet_properties.pageSetUpPr.fitToPage,
                  ws.print_title_rows, ws.print_options.gridLines, pm.left, pm.right, pm.top, pm.bottom),
        "header": (ws.oddHeader.left.text, ws.oddHeader.center.text, ws.oddHeader.right.text, ws.oddFooter.center.text),
    }


def workbook_view(path) -> dict:
    wb = openpyxl.load_workbook(path)
    return {"sheets": wb.sheetnames, **{name: sheet_view(wb[name]) for name in wb.sheetnames}}


def parts(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist() if i.filename != "docProps/core.xml"}  # core: creation time


def assert_same_workbook(frame: pd.DataFrame, tmp_path, dept: str = "civil", written=None):
    reference, fast = tmp_path / "reference.xlsx", written or tmp_path / "fast.xlsx"
    _write_xlsx_per_cell(frame, reference, dept, BD)
    if written is None:
        _write_xlsx(frame, fast, dept, BD)
    got, want = workbook_view(fast), workbook_view(reference)
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], dict):
            for part in want[key]:
                assert got[key][part] == want[key][part], (key, part)
        assert got[key] == want[key], key
    assert list(parts(fast)) == list(parts(reference))  # same members in the same order
    assert parts(fast) == parts(reference)  # and the same XML, to the byte
    return got


@pytest.mark.parametrize("chunk", [5000, 7])  # one chunk of rows; many, the last one short
def test_awkward_values_same_workbook(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(taskfile, "_ROWS_PER_CHUNK", chunk)
    frame = _task_frame(awkward_tasks(2 * len(AWKWARD) + 3))
    view = assert_same_workbook(frame, tmp_path)
    cells = view["核查任务"]["cells"]
    assert len(cells) == len(frame) + 1
    values = {c[0] for row in cells[1:] for c in row}
    assert "'=1+1" in values and "'@SUM(A1)" in values and "'''+x" in values  # neutralised before the writers
    assert "ctl _x0000__x0001__x0008__x000B__x000C__x001F_ end" in values  # invalid in XML: escaped as by xlsxwriter
    assert "_x005F_x0041_ literal escape" in values and " lead" in values and "\u3000全角空格\u3000" in values
    assert "x" * 32_767 in values and "长" * 20_000 in values and "𠀀" * 16_383 in values
    xml = parts(tmp_path / "fast.xlsx")["xl/worksheets/sheet1.xml"].decode("utf-8")
    assert '<t xml:space="preserve"> lead</t>' in xml and "<t>a &amp; b &lt; c &gt; d ]]&gt;</t>" in xml


def test_realistic_tasks_same_workbook(tmp_path, monkeypatch):
    monkeypatch.setattr(taskfile, "_ROWS_PER_CHUNK", 50)
    rng = np.random.default_rng(1)
    n = 120
    t = pd.DataFrame({
        "HCZT": rng.choice(["ID_CHECKSUM", "NAME_DIFF", "FUZZY_CANDIDATE", "DEATH_ACTIVE"], n),
        "BM": "police", "BH": rng.choice(["hukou", "temp"], n),
        "YWZJ": [f"HJ{i:09d}" for i in range(n)], "JS": "SELF",
        "XM": rng.choice(["陈小明", "王芳", "欧阳娜娜", "阿依古丽·买买提"], n), "GMSFHM": FAKE_ID, "XB": "1", "CSRQ": "19850302",
        "WTMS": "该人员姓名与公安户籍登记的姓名不一致，请核对证件原件后更正。",
        "DBXX": ["本表姓名:陈小明; 公安户籍姓名:陈晓明; " * int(k) for k in rng.integers(1, 12, n)],
        "RKID": [f"RK{i:016X}" for i in range(n)], "XFRQ": BD, "HCQX": "20260313", "XZBZ": "1",
    })
    t["RWBH"] = task_number(t)
    assert_same_workbook(_task_frame(t), tmp_path, dept="police")


@pytest.mark.parametrize("rows", [0, 1, 2, 3])
def test_few_rows_same_workbook(tmp_path, rows):
    view = assert_same_workbook(_task_frame(awkward_tasks(rows)), tmp_path, dept="family_planning")
    assert len(view["核查任务"]["cells"]) == rows + 1
    assert view["核查任务"]["filter"] == f"A1:W{max(rows, 1) + 1}"


def test_write_task_files_writes_the_fast_workbook(tmp_path):
    tasks = awkward_tasks(len(AWKWARD))
    xlsx, csv_path = write_task_files(tasks, "disability", BD, tmp_path)
    assert_same_workbook(_task_frame(tasks), tmp_path, dept="disability", written=xlsx)
    assert sorted(p.name for p in xlsx.parent.iterdir()) == sorted([xlsx.name, csv_path.name])  # no temporaries


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(taskfile, "_rows_xml", broken)
    target = tmp_path / "tasks.xlsx"
    with pytest.raises(RuntimeError):
        _write_xlsx(_task_frame(awkward_tasks(5)), target, "civil", BD)
    assert list(tmp_path.iterdir()) == []


def test_row_heights_as_measured_before():
    frame = _task_frame(awkward_tasks(2 * len(AWKWARD)))
    frame.loc[1, "WTMS"] = "\ud800 lone surrogate"
    lines = pd.Series(1, index=frame.index)
    for code in taskfile._WRAP:
        width = frame[code].str.len() + frame[code].str.count(r"[^\x00-\x7f]")
        lines = np.maximum(lines, np.ceil(width / (taskfile._WIDTHS[code] - 1)).astype(int))
    pd.testing.assert_series_equal(_row_heights(frame), lines.clip(1, taskfile._MAX_LINES) * taskfile._LINE_HEIGHT + 3)
