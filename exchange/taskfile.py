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

xlsxwriter writes the xlsx but for its data rows, which are built as XML a column at a time
(`_write_xlsx`): the same workbook, every part byte for byte once unzipped, as writing them cell by
cell (`_write_xlsx_per_cell`, tests/test_taskfile_fast.py), 7 to 10 times faster.

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
        lengths, points = _code_points(frame[code].tolist())
        wide = np.concatenate(([0], np.cumsum(points > 0x7F, dtype=np.int64)))  # non-ASCII characters before each position
        ends = np.cumsum(lengths)
        width = lengths + wide[ends] - wide[ends - lengths]  # CJK characters are about twice as wide
        lines = np.maximum(lines, np.ceil(width / (_WIDTHS[code] - 1)).astype(int))
    return lines.clip(1, _MAX_LINES) * _LINE_HEIGHT + 3


def _code_points(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The length of each value, and the code points of all values end to end."""
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    return lengths, np.frombuffer("".join(values).encode("utf-32-le", "surrogatepass"), np.uint32)


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


def _write_workbook(target, frame: pd.DataFrame, rows: pd.DataFrame, dept: str, business_date: str) -> list:
    """The task workbook through xlsxwriter into `target` (a path or a binary file object): both sheets,
    sized for the tasks of `frame` (validations, autofilter), with the data rows of `rows` (a head of
    `frame`) written cell by cell. Returns the formats of the data columns, in column order."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(target, {"constant_memory": True, "strings_to_formulas": False,
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
    heights = _row_heights(rows).tolist()
    for r, row in enumerate(rows.itertuples(index=False, name=None), start=1):
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
    return formats


def _write_xlsx_per_cell(frame: pd.DataFrame, path, dept: str, business_date: str) -> None:
    """The task workbook with every data row written through xlsxwriter, cell by cell (how task files
    were written up to this change; 3,500 to 5,500 rows/s): the reference `_write_xlsx` is tested
    (tests/test_taskfile_fast.py) and timed (benchmarks/taskfile_xlsx.py) against. Nothing else
    calls it."""
    _write_workbook(path, frame, frame, dept, business_date)


# ---- data rows as XML, a column at a time (what xlsxwriter writes for `write_string` in constant_memory mode)

_SHEET_XML = "xl/worksheets/sheet1.xml"  # the first sheet, 核查任务
_DIMENSION = re.compile(r'<dimension ref="[^"]*"/>')
_ROWS_PER_CHUNK = 5000
# Deflate level of the data sheet: 1, not zlib's default 6 that xlsxwriter uses. At 58,000 tasks the
# sheet is 97 MiB of XML: level 6 spends about 1.5 s on it (more than building it) and gives an
# 11.0 MiB file, level 1 about 0.5 s and 14.0 MiB. The other members keep the default.
_SHEET_COMPRESSLEVEL = 1
_STR_MAX = 32767  # xlsxwriter truncates a longer string (in UTF-16 units)
_DEFAULT_ROW_PIXELS = 20  # xlsxwriter's default row height (15 pt): such a row gets no `ht`
# What xlsxwriter escapes in a string (xmlwriter._escape_control_characters): a literal `_xHHHH_`
# gets its `_` escaped, control characters but tab and newline become `_xHHHH_`.
_LITERAL_ESCAPE = re.compile(r"(_x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")
# Joins a column's values so that they are escaped in one pass: a Unicode noncharacter, which no
# escape touches and which is not whitespace; a column holding it is escaped a value at a time.
_SEP = "\ufdd0"
_SPACE_BEFORE = re.compile(f"{_SEP}(?<=\\s{_SEP})")  # both start with the separator: a fast search
_SPACE_AFTER = re.compile(f"{_SEP}(?=\\s)")


def _xml_text(text: str, controls: bool = True) -> str:
    """`text` as xlsxwriter writes it inside `<t>`: a literal `_xHHHH_` as `_x005F_xHHHH_`, control
    characters (unless `controls` is False: there are none) as `_xHHHH_`, U+FFFE/U+FFFF as
    `_xFFFE_`/`_xFFFF_`, then `&`, `<`, `>` as entities."""
    text = _LITERAL_ESCAPE.sub(r"_x005F\1", text)
    if controls:
        text = _CONTROL.sub(lambda m: f"_x{ord(m.group()):04X}_", text)
    text = text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_texts(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The values of a column as `_xml_text` (longer ones first truncated as xlsxwriter does), and the
    positions of those that start or end with whitespace (xlsxwriter writes them with
    `xml:space="preserve"`), perhaps repeated."""
    from xlsxwriter.utility import _utf16_len, _utf16_truncate

    n = len(values)
    lengths, points = _code_points(values)
    if lengths.max() > _STR_MAX // 2:
        values = [_utf16_truncate(v, _STR_MAX) if len(v) > _STR_MAX // 2 and _utf16_len(v) > _STR_MAX else v
                  for v in values]
        lengths = np.fromiter(map(len, values), np.int64, n)
    low = points[points < 0x20]
    controls = bool(((low != 0x09) & (low != 0x0A)).any())  # but tab and newline
    joined = _SEP.join(values)
    if joined.count(_SEP) != n - 1:  # a value holds the separator
        texts = [_xml_text(v) for v in values]
        return texts, np.flatnonzero([t[:1].isspace() or t[-1:].isspace() for t in texts])
    escaped = _xml_text(joined, controls)
    texts = escaped.split(_SEP)
    if len(escaped) != len(joined):
        lengths = np.fromiter(map(len, texts), np.int64, n)
    seps = np.cumsum(lengths + 1)[:-1] - 1  # where the separator after each text is
    return texts, np.concatenate((
        np.searchsorted(seps, [m.start() for m in _SPACE_BEFORE.finditer(escaped)]),
        np.searchsorted(seps, [m.start() for m in _SPACE_AFTER.finditer(escaped)]) + 1,
        [0] if escaped[:1].isspace() else [],
        [n - 1] if escaped[-1:].isspace() else [],
    )).astype(np.intp)


def _row_start(points: float) -> str:
    """What follows `<row r="N` for a row of this height (set_row: whole pixels, `ht` in points)."""
    pixels = int(points * 4.0 / 3.0 + 0.5)
    return '">' if pixels == _DEFAULT_ROW_PIXELS else f'" ht="{pixels * 0.75:.16g}" customHeight="1">'


def _rows_xml(frame: pd.DataFrame, xf: list[int]):
    """The `<row>` elements of the data rows (sheet rows 2…), a string per chunk of rows, as xlsxwriter
    writes them in constant_memory mode: every value an inline string cell with its column's format
    index `xf`, each row as high as `_row_heights`. A chunk is one join of a list of pieces, filled a
    column at a time."""
    from xlsxwriter.utility import xl_col_to_name

    ncols = len(TASK_CODES)
    width = 3 + 4 * ncols  # pieces a row: <row r=", number, height and <c r="A, then per cell: number, <t>, text, </t>…
    opens = [f'" s="{i}" t="inlineStr"><is><t>' for i in xf]
    opens_preserve = [f'" s="{i}" t="inlineStr"><is><t xml:space="preserve">' for i in xf]
    closes = [f'</t></is></c><c r="{xl_col_to_name(c + 1)}' for c in range(ncols - 1)] + ["</t></is></c></row>"]
    for first in range(0, len(frame), _ROWS_PER_CHUNK):
        part = frame.iloc[first:first + _ROWS_PER_CHUNK]
        n = len(part)
        numbers = [str(r) for r in range(first + 2, first + 2 + n)]
        pieces: list = [None] * (n * width)
        pieces[0::width] = ['<row r="'] * n
        pieces[1::width] = numbers
        heights, which = np.unique(_row_heights(part).to_numpy(), return_inverse=True)
        starts = [_row_start(h) + '<c r="A' for h in heights.tolist()]
        pieces[2::width] = [starts[i] for i in which.tolist()]
        for c, code in enumerate(TASK_CODES):
            texts, preserve = _xml_texts(part[code].tolist())
            opened = [opens[c]] * n
            for i in preserve.tolist():
                opened[i] = opens_preserve[c]
            pieces[3 + 4 * c::width] = numbers
            pieces[4 + 4 * c::width] = opened
            pieces[5 + 4 * c::width] = texts
            pieces[6 + 4 * c::width] = [closes[c]] * n
        yield "".join(pieces)


def _with_rows(workbook: io.BytesIO, target, frame: pd.DataFrame, xf: list[int]) -> None:
    """Copy the xlsxwriter `workbook` (its members in order, with their names, times, attributes and
    deflate) to `target`, the data rows of its first sheet replaced by `_rows_xml` of every row of
    `frame` and its dimension fixed. Each chunk of rows is compressed in a second thread (zlib lets go
    of the GIL) while the next one is built."""
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    from xlsxwriter.utility import xl_col_to_name

    with zipfile.ZipFile(workbook) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.compress_type, member.create_system = info.compress_type, info.create_system
            member.external_attr = info.external_attr
            if info.filename != _SHEET_XML:
                out.writestr(member, src.read(info))
                continue
            member._compresslevel = _SHEET_COMPRESSLEVEL  # `compress_level` from Python 3.13 on
            xml = src.read(info).decode("utf-8")
            cut, end = xml.index('<row r="2"'), xml.index("</sheetData>")
            dimension = f'<dimension ref="A1:{xl_col_to_name(len(TASK_CODES) - 1)}{len(frame) + 1}"/>'
            # No Zip64, as xlsxwriter: a sheet of more than 2 GiB of XML fails (RuntimeError), as it did there.
            with out.open(member, "w") as fh, ThreadPoolExecutor(1) as pool:
                fh.write(_DIMENSION.sub(dimension, xml[:cut], count=1).encode("utf-8"))
                pending = None
                for chunk in _rows_xml(frame, xf):
                    data = chunk.encode("utf-8")
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(fh.write, data)
                if pending is not None:
                    pending.result()
                fh.write(xml[end:].encode("utf-8"))


def _write_xlsx(frame: pd.DataFrame, path: Path, dept: str, business_date: str) -> None:
    """The task workbook: xlsxwriter writes it with the first two data rows only (constant_memory writes
    a row out when the next one starts: so every format gets the index it gets in a full write), then
    the data rows of all tasks are built a column at a time and put in place of those: the same
    workbook as `_write_xlsx_per_cell`, 7 to 10 times faster (benchmarks/taskfile_xlsx.py)."""
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        workbook = io.BytesIO()
        formats = _write_workbook(workbook, frame, frame.iloc[:2], dept, business_date)
        if len(frame):
            _with_rows(workbook, tmp, frame, [f._get_xf_index() for f in formats])
        else:
            Path(tmp).write_bytes(workbook.getvalue())
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
