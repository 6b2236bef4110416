"""Verification task files (核查任务文件, spec section 5): writing them for a department and reading
them back when the department returns them filled in.

Layout: one row per open task, the columns of `TASK_COLUMNS` in that order, header cells
`中文名(CODE)`. Two twins per department and business date, under
`<out_root>/tasks/<dept>/<D>/verification_tasks_<dept>_<D>.{xlsx,csv}`:

- the xlsx is for a clerk: frozen, bold header row; every cell a text cell (an ID can never become
  `3.20102E+17`; the fill-in columns are text-formatted too, so an ID typed into `GZZ` stays
  intact); a dropdown on `HCJG` (核查结果) with the six result codes and an input message giving
  their meanings; a dropdown on `GZZD` with the department's correctable field codes; autofilter;
  fill-in columns shaded; print setup (landscape A3, fit to width, header row repeated); a second
  sheet `说明` explaining columns, result codes and state codes.
- the csv (UTF-8 with BOM, CRLF, RFC 4180 quoting) is for systems.

Receipts (`write_receipt`): the rejected rows of a department's returns, in Chinese (拒收原因, 处理办法),
beside the task file of the date: `receipt_<dept>_<D>.{xlsx,csv}`, same conventions.

Formula injection (OWASP "CSV injection"): a value that starts with `=`, `+`, `-`, `@`, tab or CR
gets a leading `'` in BOTH files (in the xlsx it is also a plain string cell, never a formula).
The prefix is literal, so a file re-saved as CSV by a spreadsheet stays neutral. To keep the escape
reversible, a value that already starts with one or more `'` followed by such a character gets one
more `'`; `read_return` removes exactly one leading `'` from such values, so every value
round-trips.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from catalog import DEPARTMENT_NAMES, DEPT_TABLES, ROLE_NAMES, TABLES
from catalog.codes import RESULT_CODES
from catalog.states import STATE_NAMES, STATE_WHEN
from exchange.files import publish
from verification.workdays import HCQX_WORKING_DAYS

# (code, Chinese name), in file order (spec section 5).
TASK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("RWBH", "任务编号"),
    ("HCZT", "核查状态代码"),
    ("HCZTMC", "核查状态名称"),
    ("BM", "部门"),
    ("BH", "表"),
    ("YWZJ", "业务主键"),
    ("JS", "角色"),
    ("XM", "姓名"),
    ("GMSFHM", "公民身份号码"),
    ("XB", "性别"),
    ("CSRQ", "出生日期"),
    ("WTMS", "问题描述"),
    ("DBXX", "比对信息"),
    ("RKID", "人口编号"),
    ("XFRQ", "下发日期"),
    ("HCQX", "核查期限"),
    ("XZBZ", "新增标志"),
    ("HCJG", "核查结果"),
    ("GZZD", "更正字段"),
    ("GZZ", "更正值"),
    ("HCR", "核查人"),
    ("HCRQ", "核查日期"),
    ("BZ", "备注"),
)
TASK_CODES: tuple[str, ...] = tuple(c for c, _ in TASK_COLUMNS)
TASK_HEADERS: tuple[str, ...] = tuple(f"{n}({c})" for c, n in TASK_COLUMNS)
# Columns the department fills in.
FILL_CODES: tuple[str, ...] = ("HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ")

TASK_FILE_STEM = "verification_tasks_{dept}_{date}"

# A leading character that makes a spreadsheet read a cell as a formula, possibly behind quotes we added.
_FORMULA_START = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"^'('*[=+\-@\t\r])")
_HEADER_CODE = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9_]*)\s*\)\s*$")
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_BARE_CODE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*$")

# Column widths in the xlsx, in characters (a CJK character counts about 2).
_WIDTHS = {
    "RWBH": 19, "HCZT": 22, "HCZTMC": 14, "BM": 14, "BH": 9, "YWZJ": 21, "JS": 6, "XM": 10,
    "GMSFHM": 20, "XB": 5, "CSRQ": 10, "WTMS": 34, "DBXX": 46, "RKID": 19, "XFRQ": 10,
    "HCQX": 10, "XZBZ": 7, "HCJG": 9, "GZZD": 9, "GZZ": 18, "HCR": 9, "HCRQ": 10, "BZ": 18,
}
_WRAP = ("HCZTMC", "WTMS", "DBXX", "BZ")
_LINE_HEIGHT = 13.5  # points per line at font size 10
_MAX_LINES = 15


def escape_formulas(values: pd.Series) -> pd.Series:
    """Prefix `'` to values a spreadsheet would take for a formula (reversible, see module doc)."""
    return values.str.replace(_FORMULA_START, lambda m: "'" + m.group(0), regex=True)


def unescape_formulas(values: pd.Series) -> pd.Series:
    """Undo `escape_formulas`."""
    return values.str.replace(_ESCAPED, r"\1", regex=True)


def correctable_fields(table_name: str) -> tuple[str, ...]:
    """Fields a department may name in GZZD for a record of this table: all but the key and GXSJ."""
    t = TABLES[table_name]
    return tuple(f for f in t.fields if f not in (t.key, "GXSJ"))


def task_file_paths(out_root, dept: str, business_date: str) -> tuple[Path, Path]:
    folder = Path(out_root) / "tasks" / dept / business_date
    stem = TASK_FILE_STEM.format(dept=dept, date=business_date)
    return folder / f"{stem}.xlsx", folder / f"{stem}.csv"


def _task_frame(tasks: pd.DataFrame) -> pd.DataFrame:
    """The tasks in file column order, every value a string, formulas neutralised."""
    out = pd.DataFrame(index=range(len(tasks)))
    tasks = tasks.reset_index(drop=True)
    for code in TASK_CODES:
        col = tasks[code] if code in tasks.columns else pd.Series("", index=tasks.index)
        out[code] = col.fillna("").astype(str)
    if "HCZTMC" not in tasks.columns or out["HCZTMC"].eq("").any():
        missing = out["HCZTMC"].eq("")
        out.loc[missing, "HCZTMC"] = out.loc[missing, "HCZT"].map(STATE_NAMES).fillna("")
    return out.apply(escape_formulas)


def _row_heights(frame: pd.DataFrame) -> pd.Series:
    """Row height in points that shows every wrapped cell whole (spreadsheets do not re-measure
    rows of a generated file reliably: LibreOffice keeps one line)."""
    lines = pd.Series(1, index=frame.index)
    for code in _WRAP:
        text = frame[code]
        width = text.str.len() + text.str.count(r"[^\x00-\x7f]")  # CJK characters are about twice as wide
        lines = np.maximum(lines, np.ceil(width / (_WIDTHS[code] - 1)).astype(int))
    return lines.clip(1, _MAX_LINES) * _LINE_HEIGHT + 3


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh, lineterminator="\r\n")
            w.writerow(TASK_HEADERS)
            w.writerows(frame.itertuples(index=False, name=None))
        publish(Path(tmp), path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_explanation(wb, ws, dept: str, business_date: str, fmt: dict) -> None:
    ws.set_column(0, 0, 24)
    ws.set_column(1, 1, 28)
    ws.set_column(2, 2, 90)
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.fit_to_pages(1, 0)
    ws.set_margins(left=0.5, right=0.5, top=0.6, bottom=0.6)
    r = 0
    ws.write_string(r, 0, f"{DEPARTMENT_NAMES.get(dept, dept)} 核查任务 {business_date} 填写说明", fmt["title"])
    r += 2
    lines = [
        "1. 每行是一条待核查任务。请按“问题描述”“比对信息”核对原始档案，在黄色列填写核查结果后整表回传（xlsx 或 csv 均可）。",
        "2. 前面各列为下发信息，请勿修改，也不要删除或调换列；不需回复的行保持“核查结果”为空即可。",
        f"3. 核查期限为下发日期后第 {HCQX_WORKING_DAYS} 个工作日（法定节假日顺延、调休上班日计入）。",
        "4. 核查结果为 1（属实已更正）时，可填写更正字段（字段代码，如 XM、GMSFHM、CSRQ）和更正值，由人口库按更正值更正；"
        "若已在本部门系统中更正，两者都可留空。更正字段和更正值须同时填写；一行只填一个字段，同一任务需更正多个字段时可将该任务行复制多行。",
        "5. 更正值须符合字段格式：日期为8位数字（如 19850302），代码字段填代码（如性别 1、2），身份证号码为有效的18位号码，"
        "区划为6位代码；不能以 =、+、-、@ 开头，不能含换行等控制字符。不符合的行会被拒收。",
        "6. 结果 4、5 仅用于“疑似同一人(FUZZY_CANDIDATE)”任务：4 表示本记录与人口编号所指人员为同一人，5 表示不是同一人。",
        "7. 以 ' 开头的内容是为防止被表格软件当作公式而加的前缀，系统读取时会自动去掉。",
        "8. 被拒收的回填行会列在同一目录的回执 receipt_部门_日期 中，该任务仍在本表中，备注写明“回填被拒(日期)：原因”；"
        "请按处理办法改正后重新回填。",
    ]
    for line in lines:
        ws.set_row(r, 2 * _LINE_HEIGHT + 3 if len(line) > 75 else None)
        ws.merge_range(r, 0, r, 2, line, fmt["text"])
        r += 1
    r += 1

    def section(title, header, rows):
        nonlocal r
        ws.write_string(r, 0, title, fmt["title"])
        r += 1
        for c, h in enumerate(header):
            ws.write_string(r, c, h, fmt["head"])
        r += 1
        for row in rows:
            for c, v in enumerate(row):
                ws.write_string(r, c, v, fmt["cell"])
            r += 1
        r += 1

    section("核查结果代码(HCJG)", ("代码", "含义", "效果"), [
        ("1", RESULT_CODES["1"], "填了更正字段/更正值的，按更正值更正人口库；本问题在该记录下次变动前不再下发"),
        ("2", RESULT_CODES["2"], "维持原数据；本问题在该记录下次变动前不再下发"),
        ("3", RESULT_CODES["3"], "该记录标记为核查注销，直到该记录下次变动"),
        ("4", RESULT_CODES["4"], "本记录永久关联到人口编号所指人员（仅疑似同一人任务）"),
        ("5", RESULT_CODES["5"], "本记录永不再自动关联到该人员（仅疑似同一人任务）"),
        ("9", RESULT_CODES["9"], "其他情况，请在备注中说明；本问题在该记录下次变动前不再下发"),
    ])
    section("核查状态(HCZT)", ("代码", "名称", "含义"),
            [(code, name, STATE_WHEN[code]) for code, name in STATE_NAMES.items()])
    section("列说明", ("表头", "代码", "说明"), [
        (h, c, "由核查部门填写" if c in FILL_CODES else "下发信息，请勿修改")
        for h, c in zip(TASK_HEADERS, TASK_CODES)
    ])
    section("本部门各表及可更正字段(GZZD)", ("表(BH)", "表名", "可更正字段代码"), [
        (t, TABLES[t].title, "、".join(correctable_fields(t))) for t in DEPT_TABLES.get(dept, ())
    ])
    section("角色(JS)", ("代码", "含义", ""), [(k, v, "") for k, v in ROLE_NAMES.items()])


def _write_xlsx(frame: pd.DataFrame, path: Path, dept: str, business_date: str) -> None:
    import xlsxwriter

    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        wb = xlsxwriter.Workbook(tmp, {"constant_memory": True, "strings_to_formulas": False,
                                       "strings_to_numbers": False, "strings_to_urls": False})
        base = {"num_format": "@", "valign": "top", "font_size": 10, "border": 1, "border_color": "#BFBFBF"}
        f_head = wb.add_format({**base, "bold": True, "bg_color": "#DDEBF7", "text_wrap": True,
                                "valign": "vcenter", "align": "center"})
        f_head_fill = wb.add_format({**base, "bold": True, "bg_color": "#FFE699", "text_wrap": True,
                                     "valign": "vcenter", "align": "center"})
        f_cell = wb.add_format(base)
        f_wrap = wb.add_format({**base, "text_wrap": True})
        f_fill = wb.add_format({**base, "bg_color": "#FFF9E0"})
        f_fill_wrap = wb.add_format({**base, "bg_color": "#FFF9E0", "text_wrap": True})
        explain_fmt = {
            "title": wb.add_format({"bold": True, "font_size": 12}),
            "text": wb.add_format({"num_format": "@", "font_size": 10, "text_wrap": True, "valign": "top"}),
            "head": f_head,
            "cell": wb.add_format({**base, "text_wrap": True}),
        }

        ws = wb.add_worksheet("核查任务")
        formats = []
        for c, code in enumerate(TASK_CODES):
            fill = code in FILL_CODES
            wrap = code in _WRAP
            f = (f_fill_wrap if wrap else f_fill) if fill else (f_wrap if wrap else f_cell)
            formats.append(f)
            ws.set_column(c, c, _WIDTHS[code], f)
        ws.set_row(0, 30)
        for c, (code, header) in enumerate(zip(TASK_CODES, TASK_HEADERS)):
            ws.write_string(0, c, header, f_head_fill if code in FILL_CODES else f_head)
        heights = _row_heights(frame).tolist()
        for r, row in enumerate(frame.itertuples(index=False, name=None), start=1):
            ws.set_row(r, heights[r - 1])
            for c, value in enumerate(row):
                ws.write_string(r, c, value, formats[c])

        last = max(len(frame), 1)
        ncols = len(TASK_CODES)
        col = TASK_CODES.index("HCJG")
        ws.data_validation(1, col, last, col, {
            "validate": "list",
            "source": list(RESULT_CODES),
            "input_title": "核查结果(HCJG)",
            "input_message": "\n".join(f"{k} {v}" for k, v in RESULT_CODES.items())
            + "\n(4、5 仅用于疑似同一人)",
            "error_title": "核查结果代码无效",
            "error_message": "请从下拉列表中选择 1、2、3、4、5 或 9。",
        })
        fields = sorted({f for t in DEPT_TABLES.get(dept, ()) for f in correctable_fields(t)})
        if fields and len(",".join(fields)) <= 255:
            col = TASK_CODES.index("GZZD")
            ws.data_validation(1, col, last, col, {
                "validate": "list",
                "source": fields,
                "input_title": "更正字段(GZZD)",
                "input_message": "核查结果为1时可填要更正的字段代码，如 XM、GMSFHM、CSRQ；一行一个字段，须同时填更正值。",
                "error_type": "warning",
                "error_title": "字段代码不在本部门表中",
                "error_message": "请选择本部门表的字段代码（见“说明”页）。",
            })
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, last, ncols - 1)
        ws.set_landscape()
        ws.set_paper(8)  # A3
        ws.fit_to_pages(1, 0)
        ws.repeat_rows(0)
        ws.set_margins(left=0.3, right=0.3, top=0.5, bottom=0.5)
        ws.set_header(f"&L{DEPARTMENT_NAMES.get(dept, dept)} 核查任务 {business_date}&R第 &P 页 / 共 &N 页")

        _write_explanation(wb, wb.add_worksheet("说明"), dept, business_date, explain_fmt)
        wb.close()
        publish(Path(tmp), path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_task_files(tasks: pd.DataFrame, dept: str, business_date: str, out_root) -> tuple[Path, Path]:
    """Write the department's task file twins for the date; returns (xlsx_path, csv_path).

    `tasks` carries task columns by code (missing columns are written empty; an empty `HCZTMC` is
    filled from the state code). Rows are written in the order given. An empty frame writes the
    header row only. Each file is written to a temporary name in its folder and renamed into place.
    """
    xlsx_path, csv_path = task_file_paths(out_root, dept, business_date)
    frame = _task_frame(tasks)
    _write_csv(frame, csv_path)
    _write_xlsx(frame, xlsx_path, dept, business_date)
    return xlsx_path, csv_path


# ----------------------------------------------------------------------------------------------------
# Receipts (回填拒收回执): the rows of a department's returns that were rejected, in Chinese

RECEIPT_STEM = "receipt_{dept}_{date}"
# (column of `rejected`, header), in file order
RECEIPT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("RWBH", "任务编号(RWBH)"),
    ("line", "行号"),
    ("reason", "拒收原因代码"),
    ("problem", "拒收原因"),
    ("action", "处理办法"),
    ("raw", "原始内容"),
)
RECEIPT_HEADERS: tuple[str, ...] = tuple(h for _, h in RECEIPT_COLUMNS)
_RECEIPT_WIDTHS = {"RWBH": 20, "line": 7, "reason": 22, "problem": 48, "action": 48, "raw": 70}
_RECEIPT_WRAP = ("problem", "action", "raw")


def receipt_paths(out_root, dept: str, business_date: str) -> tuple[Path, Path]:
    folder = Path(out_root) / "tasks" / dept / business_date
    stem = RECEIPT_STEM.format(dept=dept, date=business_date)
    return folder / f"{stem}.xlsx", folder / f"{stem}.csv"


def _receipt_frame(rejected: pd.DataFrame) -> pd.DataFrame:
    """The receipt's columns, every value a string, formulas neutralised. Without `problem`/`action`,
    `reason_text` (else `detail`) is split at its last `。` (exchange.returns: problem。action)."""
    rejected = rejected.reset_index(drop=True)

    def col(name: str) -> pd.Series:
        if name in rejected.columns:
            return rejected[name].fillna("").astype(str)
        return pd.Series("", index=rejected.index, dtype=object)

    out = pd.DataFrame({c: col(c) for c, _ in RECEIPT_COLUMNS}, index=rejected.index)
    if "problem" not in rejected.columns or "action" not in rejected.columns:
        text = col("reason_text") if "reason_text" in rejected.columns else col("detail")
        parts = text.str.rpartition("。")
        split = parts[1] != ""
        out["problem"] = parts[0].where(split, text)
        out["action"] = parts[2].where(split, "")
    return out.apply(escape_formulas)


def _write_receipt_csv(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh, lineterminator="\r\n")
            w.writerow(RECEIPT_HEADERS)
            w.writerows(frame.itertuples(index=False, name=None))
        publish(Path(tmp), path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_receipt_xlsx(frame: pd.DataFrame, path: Path, dept: str, business_date: str) -> None:
    import xlsxwriter

    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        wb = xlsxwriter.Workbook(tmp, {"strings_to_formulas": False, "strings_to_numbers": False,
                                       "strings_to_urls": False})
        base = {"num_format": "@", "valign": "top", "font_size": 10, "border": 1, "border_color": "#BFBFBF"}
        f_head = wb.add_format({**base, "bold": True, "bg_color": "#FDE9D9", "text_wrap": True,
                                "valign": "vcenter", "align": "center"})
        f_cell = wb.add_format(base)
        f_wrap = wb.add_format({**base, "text_wrap": True})
        ws = wb.add_worksheet("回填拒收回执")
        codes = [c for c, _ in RECEIPT_COLUMNS]
        formats = [f_wrap if c in _RECEIPT_WRAP else f_cell for c in codes]
        for c, code in enumerate(codes):
            ws.set_column(c, c, _RECEIPT_WIDTHS[code], formats[c])
        ws.set_row(0, 24)
        for c, header in enumerate(RECEIPT_HEADERS):
            ws.write_string(0, c, header, f_head)
        for r, row in enumerate(frame.itertuples(index=False, name=None), start=1):
            lines = max([1] + [int(np.ceil((len(v) + sum(ord(ch) > 0x7F for ch in v)) / (_RECEIPT_WIDTHS[k] - 1)))
                               for k, v in zip(codes, row) if k in _RECEIPT_WRAP])
            ws.set_row(r, min(lines, _MAX_LINES) * _LINE_HEIGHT + 3)
            for c, value in enumerate(row):
                ws.write_string(r, c, value, formats[c])
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, max(len(frame), 1), len(codes) - 1)
        ws.set_landscape()
        ws.set_paper(9)  # A4
        ws.fit_to_pages(1, 0)
        ws.repeat_rows(0)
        ws.set_header(f"&L{DEPARTMENT_NAMES.get(dept, dept)} 核查回填拒收回执 {business_date}&R第 &P 页 / 共 &N 页")
        wb.close()
        publish(Path(tmp), path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_receipt(rejected: pd.DataFrame, dept: str, date: str, out_root: Path) -> tuple[Path, Path] | None:
    """Write the department's receipt of rejected return rows (回填拒收回执) beside its task file of the date:
    `<out_root>/tasks/<dept>/<date>/receipt_<dept>_<date>.xlsx` and `.csv` (UTF-8 with BOM, CRLF); returns
    (xlsx_path, csv_path), or None when `rejected` is None or empty (nothing is written).

    `rejected`: one row per rejected return row, in the order to show them, with `RWBH` (task number as
    returned, normalised), `line` (row in the returned file), `reason` (codes, `;`-separated), `problem`
    (拒收原因) and `action` (处理办法), `raw` (the returned row); without `problem`/`action`, `reason_text`
    (else `detail`) is used, split at its last `。`. Missing columns are written empty. Headers
    `任务编号(RWBH)`, `行号`, `拒收原因代码`, `拒收原因`, `处理办法`, `原始内容`. Values are neutralised
    against formula injection as in the task files (`escape_formulas`), every xlsx cell is a text cell.
    """
    if rejected is None or not len(rejected):
        return None
    xlsx_path, csv_path = receipt_paths(out_root, dept, date)
    frame = _receipt_frame(rejected)
    _write_receipt_csv(frame, csv_path)
    _write_receipt_xlsx(frame, xlsx_path, dept, date)
    return xlsx_path, csv_path


def header_code(header) -> str:
    """The field code of a header cell: the code in the last (...) / （...）, or a bare code; else ""."""
    text = unicodedata.normalize("NFKC", "" if header is None else str(header))
    m = _HEADER_CODE.search(text) or _BARE_CODE.match(text)
    return m.group(1).upper() if m else ""


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.strftime("%Y%m%d")
    return str(value)


def _xlsx_unescape(text: str) -> str:
    """Decode OOXML `_xHHHH_` escapes (a CR is stored as `_x000D_`, a literal `_x` as `_x005F_x`);
    openpyxl leaves them in the text, Excel does not."""
    return _OOXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


def _read_xlsx_rows(path) -> list[tuple[int, list[str]]]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb.worksheets[0]
        return [(i, [_xlsx_unescape(_cell_text(v)) for v in row])
                for i, row in enumerate(ws.iter_rows(values_only=True), start=1)]
    finally:
        wb.close()


def _read_csv_rows(path, encoding: str | None) -> list[tuple[int, list[str]]]:
    data = Path(path).read_bytes()
    if encoding:
        text = data.decode("utf-8-sig" if encoding.upper().replace("_", "-") in ("UTF-8", "UTF8") else encoding)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, start = [], 1
    for row in reader:
        rows.append((start, row))
        start = reader.line_num + 1
    return rows


def read_return(path, fmt: str, encoding: str | None = None) -> pd.DataFrame:
    """A returned task file as a frame of field codes (every value a string) plus `_line`.

    `fmt` is `xlsx` (first sheet) or `csv` (UTF-8 with or without BOM, else GB18030, unless
    `encoding` is given). Columns are found by the code inside `(...)` / `（...）` of each header
    cell, or a bare code; columns without a code are ignored, a repeated code keeps its first column.
    Every task column is present (empty when the file lacks it). Wholly empty rows are dropped.
    Number cells read as their digits (`1.0` → `"1"`), date cells as CCYYMMDD. The formula escape
    added on writing is removed. `_line` is the row's line number in the file (header = 1).
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "xlsx":
        rows = _read_xlsx_rows(path)
    elif fmt == "csv":
        rows = _read_csv_rows(path, encoding)
    else:
        raise ValueError(f"unknown return format {fmt!r} (xlsx or csv)")
    if not rows:
        return pd.DataFrame({**{c: pd.Series(dtype=object) for c in TASK_CODES}, "_line": pd.Series(dtype=int)})
    header = [header_code(h) for h in rows[0][1]]
    positions: dict[str, int] = {}
    for i, code in enumerate(header):
        if code and code not in positions:
            positions[code] = i
    data = {code: [r[i] if i < len(r) else "" for _, r in rows[1:]] for code, i in positions.items()}
    frame = pd.DataFrame(data, index=range(len(rows) - 1), dtype=object)
    for code in TASK_CODES:
        if code not in frame.columns:
            frame[code] = ""
    frame = frame.fillna("").astype(str).apply(unescape_formulas) if len(frame) else frame
    frame["_line"] = [line for line, _ in rows[1:]]
    values = frame.drop(columns="_line")
    keep = values.apply(lambda s: s.str.strip().ne("")).any(axis=1) if len(frame) else pd.Series(dtype=bool)
    return frame[keep].reset_index(drop=True)
