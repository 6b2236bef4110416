"""Reading delivered files (spec section 2): CSV (RFC 4180, UTF-8 / GB18030) and XLSX, into string
frames plus a rejects frame.

Public API:

* :func:`read_delivery` → :class:`Parsed` (``frame``, ``rejects``, ``received_rows``, ``header``).
* :class:`StructuralError`: the file as a whole cannot be used (no header, duplicate header codes,
  a required column missing, unsupported encoding/format, unreadable xlsx). Nothing of it is loaded.
* :data:`REJECT_REASONS`: reject code → readable text. :data:`REJECT_COLUMNS`: layout of rejects frames.
* :func:`normalise_d14` / :func:`d14_to_int`: timestamps (``CZSJ``/``GXSJ``) to ``CCYYMMDDhhmmss``.

Decisions:

* Values are kept exactly as delivered (no stripping): the department's bytes are the record.
  Only header cells are cleaned: whitespace and BOM stripped; a cell ``中文名(CODE)`` (the task file
  layout of section 5, ASCII or full-width brackets) becomes ``CODE``; ASCII codes are upper-cased;
  an empty header cell becomes ``_col<N>`` (1-based). Duplicate codes are a :class:`StructuralError`.
* ``_line`` is the 1-based physical line of the row's first line (header = line 1 when it is the
  first line). Line breaks are ``\\r\\n``, ``\\n`` or a lone ``\\r`` (Python's universal newlines, as
  the ``csv`` module reads them). XLSX: the sheet row number.
* Blank lines (empty or whitespace only) anywhere are not rows: not loaded, not rejected, not counted.
  The header is the first non-blank line/row.
* The field count of a row must equal the header's (empty header cells included); otherwise
  ``FIELD_COUNT``. XLSX: a row may be shorter (missing cells are ``""``); a non-empty cell beyond the
  header is ``FIELD_COUNT``.
* Values checked at the edge, row by row (every delivered row is loaded or rejected with a reason,
  never altered or dropped silently):

  - ``TRUNCATED_ROW`` (CSV): the file does not end with a line break, its last record is a data row
    and that row's last field is empty (its header cell is not): a transfer cut off right after the
    last comma. A cut inside a value cannot be told from data and loads; a cut that loses fields is
    ``FIELD_COUNT``. XLSX has no such state (a zip cut short does not open).
  - ``CONTROL_CHARACTER``: a value (any column) holding a C0 control character (U+0000–U+0008,
    U+000B, U+000C, U+000E–U+001F), DEL (U+007F) or a C1 control (U+0080–U+009F). Tab, CR and LF
    are allowed (quoted line breaks are data). NUL cannot be stored in PostgreSQL (COPY fails and
    with it the whole date); the others are never part of a name, an address or a code.
  - ``FIELD_TOO_LONG`` (only when ``read_delivery`` is given ``table``): a value of one of the
    table's catalogue fields, ``CZLX``/``CZSJ`` included, longer once whitespace is removed than
    ``catalog.formats.field_format(table, field).max_length`` (the format with room for the dirty
    spellings the pipeline reads; see that module). Other columns are not checked.
  - ``FUTURE_TIMESTAMP`` (only when given ``business_date``): ``CZSJ`` or ``GXSJ`` (normalised by
    :func:`d14_to_int`, so ``2026-03-03 08:00:00`` counts) later than the business date plus
    ``future_margin_days`` (default 1) at 23:59:59. Such a timestamp would make every later real
    change of the record look stale. An unreadable one is not this check's business (``CZSJ``:
    ``BAD_OPERATION``; ``GXSJ``: loaded as before).

  ``detail`` names the field, the length and limit, the character's code point or the timestamp and
  limit, never the value itself (no ID number in logs or reports).
* Reject priority (a row gets the first reason it fails): ``UNDECODABLE`` > ``FIELD_COUNT`` (both by
  the readers) > ``TRUNCATED_ROW`` > ``CONTROL_CHARACTER`` > ``FIELD_TOO_LONG`` > ``EMPTY_KEY`` (key
  empty or whitespace) > ``BAD_OPERATION`` (incremental: ``CZLX`` not I/U/D after trim and
  upper-casing, or a non-empty ``CZSJ`` that is not a readable timestamp; an empty ``CZSJ`` is
  allowed, apply then falls back to ``GXSJ``, else the business date) > ``FUTURE_TIMESTAMP``.
* ``raw`` of a reject is the record's physical text (all its lines, joined, without the final line
  break), undecodable bytes written as ``\\xNN``, control characters as ``\\x00`` … ``\\x1f``, ``\\x7f``
  (C0, DEL) and ``\\u0080`` … ``\\u009f`` (C1), so a rejects file or table never holds a NUL; XLSX: the
  row's cells (as loaded, see below) as one CSV line. ``key`` is the best guess of the record key of a
  rejected row (the cell at the key column when the row has one, else ``""``, escaped the same way):
  a full-file caller passes these to ``apply_delivery(protected_keys=...)`` so an unreadable row
  does not delete its record.
* XLSX cells: text cells are kept as they are. Other cells are written as the text a clerk typed
  (:func:`cell_to_str`), except in fields whose catalogue format gives the number a meaning (the
  table's format, or without ``table`` the code's format, which is the same in every table); these
  converted values are what is loaded:

  - ID fields (``C18``, ``C20``, ``C..40``: ``GMSFHM``, ``ZJHM``, ``*_ZJHM``, ``ZF_GMSFHM``,
    ``CJRZH``): a spreadsheet number keeps 15 significant digits, and reading its float back
    exactly invents the rest (``341124198611101161`` typed → ``3.41124198611101E+17`` stored →
    ``341124198611100992``, or ``…101184`` for a float written by a program). The number is written
    as the digits it kept followed by zeros to its length (``341124198611101000``), which
    ``linkage.ids`` recognises as Excel damage (``EXCEL_000``) and repairs from name and birth date.
    An integer literal in the file that no float can hold keeps every digit (it never was a float).
    See :func:`id_number_text`.
  - ``D8`` fields: a date cell is its date ``CCYYMMDD`` (a time part dropped); a whole number is an
    Excel serial day (the workbook's date system; 1900: Excel's nonexistent 1900-02-29, serial 60,
    is left as delivered) when the date is in 1900–2099 and the number is not a bare year 1900–2099
    (``31726`` → ``19861110``; ``1985`` and ``19850302`` stay). See :func:`serial_date_text`.
  - ``D14`` fields: a date cell is always the full ``CCYYMMDDhhmmss`` (midnight included).
  - ``N`` fields: a fractional number is written with the 15 significant digits a spreadsheet shows
    (``1050.3`` rather than the float's ``1050.3000000000002``).
* Speed: a clean CSV is parsed with pyarrow (multi-threaded) and the result is checked to be exactly
  what the ``csv`` module would give (one record per physical line, no blank lines, no bad rows, valid
  encoding); anything else goes through ``csv.reader`` (C) with the rows classified by numpy/pandas.
  The edge checks cost little on a clean file: one scan of the whole text for control characters
  (``bytes.translate``) decides whether columns are searched at all; the fast path's Arrow table gives
  each column's longest value in bytes, so only a column that may be too long has its lengths taken;
  the future check compares the timestamp column as text and parses only values that can be late.
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import gc
import io
import operator
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from catalog import INCREMENTAL_FIELDS, TABLES
from catalog.formats import FORMATS, Format, code_format, field_format
from exchange.landing import canonical_encoding

REJECT_REASONS: dict[str, str] = {
    "FIELD_COUNT": "字段个数与表头不符 (wrong number of fields)",
    "UNDECODABLE": "含有按声明编码无法解码的字节 (bytes not valid in the declared encoding)",
    "EMPTY_KEY": "记录主键为空 (record key is empty)",
    "BAD_OPERATION": "操作类型或操作时间无效 (CZLX not I/U/D, or CZSJ unreadable)",
    "DUPLICATE_KEY": "全量文件中记录主键重复 (duplicate record key in a full extract)",
    "TRUNCATED_ROW": "文件末行不完整: 无结尾换行且最后一个字段为空, 疑似传输中断 "
                     "(last row cut off: no final line break and its last field is empty)",
    "CONTROL_CHARACTER": "字段值含有控制字符(如 NUL) (a value holds a control character such as NUL)",
    "FIELD_TOO_LONG": "字段值长度超过数据项目录的规定 (a value is longer than the catalogue allows)",
    "FUTURE_TIMESTAMP": "操作时间或更新时间晚于业务日期 (CZSJ or GXSJ is later than the business date allows)",
}
# line (int), reason (code of REJECT_REASONS), detail (readable sentence), raw (the line), key (best guess)
REJECT_COLUMNS = ("line", "reason", "detail", "raw", "key")

CZLX, CZSJ = INCREMENTAL_FIELDS
OPERATIONS = ("I", "U", "D")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a stray quote must not raise "field larger than limit"


class StructuralError(Exception):
    """The delivered file as a whole is unusable; ``path`` and ``problem`` say why."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Parsed:
    frame: pd.DataFrame  # header codes (str columns) + "_line" (int64)
    rejects: pd.DataFrame  # REJECT_COLUMNS
    received_rows: int  # data rows found = len(frame) + len(rejects)
    header: list[str]  # cleaned header codes, file order
    missing_fields: tuple[str, ...] = ()  # expected fields absent from the header (filled by apply)
    extra_fields: tuple[str, ...] = ()  # header codes that are neither expected nor CZLX/CZSJ
    raw_header: list[str] = field(default_factory=list)


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "line" else object) for c in REJECT_COLUMNS})


def make_rejects(records: list[dict]) -> pd.DataFrame:
    if not records:
        return empty_rejects()
    df = pd.DataFrame.from_records(records, columns=list(REJECT_COLUMNS))
    df["line"] = df["line"].astype("int64")
    for c in REJECT_COLUMNS[1:]:
        df[c] = df[c].fillna("").astype(object)
    return df.sort_values("line", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# timestamps
_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_SEP_RE = (
    r"^(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"(?:\s+(?P<H>\d{1,2}):(?P<M>\d{1,2})(?::(?P<S>\d{1,2})(?:\.\d+)?)?:?)?$"
)
_COMPACT_RE = r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?:\s*(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})?(?:\.\d+)?)?$"


def _valid_d14(v: np.ndarray) -> np.ndarray:
    y = v // 10**10
    mo = v // 10**8 % 100
    d = v // 10**6 % 100
    hh = v // 10**4 % 100
    mi = v // 100 % 100
    ss = v % 100
    ok = (y >= 1) & (mo >= 1) & (mo <= 12) & (d >= 1) & (hh < 24) & (mi < 60) & (ss < 60)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = _DAYS[np.clip(mo, 1, 12) - 1] + ((mo == 2) & leap)
    return ok & (d <= dim)


def d14_to_int(values) -> np.ndarray:
    """Timestamps → int64 ``CCYYMMDDhhmmss``; ``-1`` for empty, ``-2`` for unreadable.

    Accepted (after NFKC and trimming): ``20260302101500``, ``202603021015``, ``20260302``,
    ``2026-03-02 10:15:00`` (``-`` ``/`` ``.`` separators, 1–2 digit parts, ``T`` or spaces before
    the time, optional seconds and fractions), ``2026年3月2日 10时15分30秒``. The calendar is checked.
    """
    a = np.asarray(values, dtype=object)
    if a.ndim != 1:
        a = a.ravel()
    n = len(a)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    try:
        lens = np.fromiter(map(len, a), dtype=np.int64, count=n)
    except TypeError:  # None / NaN / numbers: compare as text
        a = pd.Series(a, dtype=object).fillna("").astype(str).to_numpy(dtype=object)
        lens = np.fromiter(map(len, a), dtype=np.int64, count=n)
    # fast path: plain 14-digit values (C-level int conversion, then a numeric calendar check)
    try:
        v = a.astype(np.int64)  # succeeds when every value is an integer literal
        fast = (lens == 14) & (v >= 10**13) & (v < 10**14)
    except (ValueError, TypeError, OverflowError):
        fast = (lens == 14) & np.fromiter(map(str.isdigit, a), dtype=bool, count=n) & np.fromiter(
            map(str.isascii, a), dtype=bool, count=n
        )
        v = np.zeros(n, dtype=np.int64)
        if fast.any():
            v[fast] = a[fast].astype(np.int64)
    if fast.any():
        out[fast] = np.where(_valid_d14(v[fast]), v[fast], -2)
    if fast.all():
        return out
    rest = np.flatnonzero(~fast)
    s = pd.Series(a[rest], dtype=object).str.strip()
    nonempty = (s != "").to_numpy(dtype=bool)
    rest, s = rest[nonempty], s[nonempty]
    if len(rest):
        r = s.str.normalize("NFKC").str.strip()
        r = (
            r.str.replace(r"[年月]", "-", regex=True)
            .str.replace("日", " ", regex=False)
            .str.replace(r"[时分]", ":", regex=True)
            .str.replace("秒", "", regex=False)
            .str.replace(r"(?<=\d)T(?=\d)", " ", regex=True)
            .str.strip()
        )
        parts = r.str.extract(_SEP_RE)
        miss = parts["y"].isna()
        if miss.any():
            parts.loc[miss] = r[miss].str.extract(_COMPACT_RE).to_numpy()
        good = parts["y"].notna().to_numpy()
        res = np.full(len(r), -2, dtype=np.int64)
        if good.any():
            p = parts[good].fillna("0").astype(np.int64).to_numpy()
            v = (p[:, 0] * 10**10 + p[:, 1] * 10**8 + p[:, 2] * 10**6 + p[:, 3] * 10**4 + p[:, 4] * 100 + p[:, 5])
            ok = (
                _valid_d14(v) & (p[:, 1] <= 12) & (p[:, 2] <= 31) & (p[:, 3] < 24) & (p[:, 4] < 60) & (p[:, 5] < 60)
            )
            res[good] = np.where(ok, v, -2)
        out[rest] = res
    return out


def normalise_d14(values) -> pd.Series:
    """Timestamps → ``CCYYMMDDhhmmss`` strings; ``""`` for empty or unreadable (see :func:`d14_to_int`)."""
    v = d14_to_int(values)
    out = v.astype(str).astype(object)
    out[v < 0] = ""
    return pd.Series(out, dtype=object)


# --------------------------------------------------------------------------------------------
# header
_LABELLED = re.compile(r"^.*?[(（]\s*([A-Za-z][A-Za-z0-9_]*)\s*[)）]$")


def clean_header(cells: list[str]) -> list[str]:
    out = []
    for i, c in enumerate(cells, 1):
        c = (c or "").replace("\ufeff", "").strip()
        m = _LABELLED.match(c)
        if m:
            c = m.group(1)
        if c.isascii():
            c = c.upper()
        out.append(c if c else f"_col{i}")
    return out


# C0 controls but tab, LF and CR; DEL; C1 controls (U+0080–U+009F)
_CONTROL_CLASS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_CONTROL_RE = re.compile(f"[{_CONTROL_CLASS}]")
_INVISIBLE_RE = re.compile(f"[{_CONTROL_CLASS}\udc80-\udcff]")
_NOT_C0_BYTES = bytes(b for b in range(256) if not ((b < 0x20 and b not in (9, 10, 13)) or b == 0x7F))
_C1_UTF8_RE = re.compile(rb"\xc2[\x80-\x9f]")


def _escape_char(m: re.Match) -> str:
    o = ord(m.group())
    if o >= 0xDC80:  # an undecodable byte (surrogateescape)
        return "\\x%02x" % (o - 0xDC00)
    return "\\x%02x" % o if o < 0x80 else "\\u%04x" % o  # C0/DEL as \x00, C1 as \u0085


def _visible(s: str) -> str:
    """Text for a rejects file or a database: undecodable bytes as ``\\xNN``, control characters as
    ``\\x00`` (C0, DEL) or ``\\u0085`` (C1). Tab, CR and LF are kept."""
    return _INVISIBLE_RE.sub(_escape_char, s)


def _utf8_has_control(buf: bytes) -> bool:
    """Cheap scan of a whole UTF-8 buffer (about 1 ms per 2 MB): may any value hold a control character?"""
    if buf.translate(None, _NOT_C0_BYTES):  # what is left are the C0 controls and DEL
        return True
    return b"\xc2" in buf and _C1_UTF8_RE.search(buf) is not None  # U+0080–U+009F are C2 80 … C2 9F


# --------------------------------------------------------------------------------------------
# the two readers produce this
@dataclass
class _Raw:
    header: list[str]  # raw header cells
    columns: list[np.ndarray]  # good-shape rows, one object array per header column
    lines: np.ndarray  # int64 line of each good-shape row
    pre_rejects: list[tuple[int, str, str, list[str] | None, str]]  # line, reason, detail, cells, raw
    raw_of: Callable[[np.ndarray], list[str]]  # raw text of good-shape rows given their positions
    maybe_control: bool = True  # False when a scan of the whole text found no control character
    open_end: bool = False  # the last good-shape row is the file's last record and no line break follows it
    max_len: list[int] | None = None  # per column, a bound on the length of its values (None: unknown)


def _codec(path: Path, encoding: str | None) -> str:
    enc = canonical_encoding(encoding)
    if enc is None:
        raise StructuralError(path, f"unsupported encoding {encoding!r} (UTF-8 or GB18030)")
    return {"UTF-8": "utf-8", "GB18030": "gb18030"}[enc]


def _count_lines(buf) -> int:
    """Physical lines of text/bytes (universal newlines); a final terminator does not start a line."""
    nl, cr, crlf = ("\n", "\r", "\r\n") if isinstance(buf, str) else (b"\n", b"\r", b"\r\n")
    n = buf.count(nl) + buf.count(cr) - buf.count(crlf)
    if buf and not (buf.endswith(nl) or buf.endswith(cr)):
        n += 1
    return n


def _phys_lines_reader(text: str):
    cache: list = []

    def get() -> list[str]:
        if not cache:
            cache.append(io.StringIO(text, newline="").readlines())
        return cache[0]

    return get


def _record_text(lines: list[str], start: int, span: int) -> str:
    raw = "".join(lines[start - 1 : start - 1 + span])
    if raw.endswith("\r\n"):
        raw = raw[:-2]
    elif raw.endswith(("\n", "\r")):
        raw = raw[:-1]
    return _visible(raw)


def _csv_fast(buf: bytes, begin: int) -> _Raw | None:
    """pyarrow path. ``buf[begin:]`` is UTF-8 text (BOM skipped). Returns ``None`` unless the result is
    exactly what the careful path would produce: no invalid UTF-8, every row has the header's field
    count, and the rows account for every physical line (so no blank line was skipped)."""
    end = len(buf)
    while end > begin and buf[end - 1] in (10, 13):  # trailing line breaks end the last line
        end -= 1
    if end == begin:
        return None
    n_cr = buf.count(b"\r", begin, end)
    nlines = buf.count(b"\n", begin, end) + (n_cr - buf.count(b"\r\n", begin, end) if n_cr else 0) + 1
    body = memoryview(buf)[begin:]  # trailing line breaks included: an unterminated quote swallows them too
    first = re.split(rb"\r\n|\r|\n", bytes(body[:65536]), maxsplit=1)[0]
    try:
        ncols = len(next(csv.reader([first.decode("utf-8")])))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        return None
    if ncols == 0:
        return None
    names = [f"c{i}" for i in range(ncols)]

    def bad_row(_row):
        return "error"

    try:
        tb = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, ignore_empty_lines=True, invalid_row_handler=bad_row
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
    except (pa.lib.ArrowException, ValueError):
        return None
    nrows = tb.num_rows
    if nrows and any(tb.column(i)[nrows - 1].as_py().endswith(("\n", "\r")) for i in range(ncols)):
        return None  # an unterminated quote swallowed the trailing line breaks: line accounting unsure
    if nrows == nlines:  # one record per physical line, nothing skipped
        spans = np.ones(nrows, dtype=np.int64)
    elif nrows > nlines:  # pragma: no cover - cannot happen
        return None
    else:  # records with quoted line breaks span 1 + (line breaks inside their values) lines
        brk = np.zeros(nrows, dtype=np.int64)
        for i in range(ncols):
            col = tb.column(i)
            brk += pc.count_substring(col, "\n").to_numpy().astype(np.int64)
            if n_cr:
                brk += pc.count_substring(col, "\r").to_numpy().astype(np.int64)
                brk -= pc.count_substring(col, "\r\n").to_numpy().astype(np.int64)
        spans = 1 + brk
        if int(spans.sum()) != nlines:  # blank lines were skipped: line numbers unknown
            return None
    starts = np.cumsum(spans) - spans + 1
    # UTF-8 bytes of the longest value of each column (header row excluded): a bound on its characters
    max_len = [int(pc.max(pc.binary_length(tb.column(i).slice(1))).as_py() or 0) for i in range(ncols)]
    cols = [tb.column(i).to_numpy(zero_copy_only=False) for i in range(ncols)]
    del tb
    header = [str(c[0]) for c in cols]
    cols = [c[1:] for c in cols]
    if ncols == 1 and (header[0].strip() == "" or (pd.Series(cols[0], dtype=object).str.strip() == "").any()):
        return None  # whitespace-only lines are blank, not rows: leave 1-column files to the careful path
    lines, spans = starts[1:], spans[1:]

    def raw_of(pos: np.ndarray) -> list[str]:
        pl = io.StringIO(bytes(body).decode("utf-8"), newline="").readlines()
        return [_record_text(pl, int(lines[p]), int(spans[p])) for p in pos]

    return _Raw(header, cols, lines, [], raw_of, maybe_control=_utf8_has_control(buf),
                open_end=end == len(buf), max_len=max_len)


def _csv_careful(text: str, path: Path) -> _Raw:
    """csv.reader path for anything the fast path declines; ``text`` decoded with surrogateescape."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        text.encode("utf-8")
        has_bad = False
    except UnicodeEncodeError:
        has_bad = True
    was = gc.isenabled()
    gc.disable()  # millions of small lists: the cyclic GC would rescan them over and over
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        n = len(rows)
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=n)
        if n == _count_lines(text):
            starts = np.arange(1, n + 1, dtype=np.int64)
            spans = np.ones(n, dtype=np.int64)
        else:  # quoted line breaks: a record spans 1 + (line breaks inside its fields) lines
            joined = list(map("\x1f".join, rows))
            spans = 1 + np.fromiter(map(str.count, joined, repeat("\n")), dtype=np.int64, count=n)
            if "\r" in text:
                spans += np.fromiter(map(str.count, joined, repeat("\r")), dtype=np.int64, count=n)
                spans -= np.fromiter(map(str.count, joined, repeat("\r\n")), dtype=np.int64, count=n)
            starts = 1 + np.cumsum(spans) - spans
            del joined
        arr = np.fromiter(rows, dtype=object, count=n)
        del rows
        blank = lens == 0
        one = np.flatnonzero(lens == 1)
        if len(one):
            firsts = pd.Series(list(map(operator.itemgetter(0), arr[one])), dtype=object)
            blank[one[(firsts.str.strip() == "").to_numpy(dtype=bool)]] = True
        nonblank = np.flatnonzero(~blank)
        if len(nonblank) == 0:
            raise StructuralError(path, "the file is empty: no header row")
        h = nonblank[0]
        header = list(arr[h])
        ncols = len(header)
        data_idx = nonblank[1:]
        bad = np.zeros(len(data_idx), dtype=bool)
        reason = np.full(len(data_idx), "", dtype=object)
        if has_bad and len(data_idx):
            bad_char = re.compile("[\udc80-\udcff]").search
            j = map("\x1f".join, arr[data_idx])
            und = np.fromiter(map(bool, map(bad_char, j)), dtype=bool, count=len(data_idx))
            bad |= und
            reason[und] = "UNDECODABLE"
        fc = (lens[data_idx] != ncols) & ~bad
        bad |= fc
        reason[fc] = "FIELD_COUNT"
        good_idx = data_idx[~bad]
        good_rows = arr[good_idx].tolist()
        if good_rows:
            columns = [np.array(c, dtype=object) for c in zip(*good_rows)]
        else:
            columns = [np.empty(0, dtype=object) for _ in range(ncols)]
        del good_rows
    finally:
        if was:
            gc.enable()
    get = _phys_lines_reader(text)
    pre: list = []
    bad_idx = data_idx[bad]
    if len(bad_idx):
        pl = get()
        for i, r in zip(bad_idx, reason[bad]):
            cells = list(arr[i])
            if r == "FIELD_COUNT":
                detail = f"表头 {ncols} 个字段, 本行 {len(cells)} 个 (expected {ncols} fields, got {len(cells)})"
            else:
                detail = "本行含有按声明编码无法解码的字节 (undecodable bytes, shown as \\xNN)"
            pre.append((int(starts[i]), r, detail, cells, _record_text(pl, int(starts[i]), int(spans[i]))))
    g_starts, g_spans = starts[good_idx], spans[good_idx]

    def raw_of(pos: np.ndarray) -> list[str]:
        pl = get()
        return [_record_text(pl, int(g_starts[p]), int(g_spans[p])) for p in pos]

    open_end = bool(len(good_idx)) and int(good_idx[-1]) == n - 1 and not text.endswith(("\n", "\r"))
    return _Raw(header, columns, g_starts, pre, raw_of, maybe_control=_CONTROL_RE.search(text) is not None,
                open_end=open_end)


# --------------------------------------------------------------------------------------------
# xlsx
def cell_to_str(v) -> str:
    """An xlsx cell value as the text a clerk typed (see module doc)."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return ""
    if t is bool:
        return "TRUE" if v else "FALSE"
    if t is int:
        return str(v)
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v.is_integer():
            return str(int(v))
        r = repr(v)
        if "e" in r or "E" in r:
            r = format(Decimal(r), "f")
        return r
    if isinstance(v, dt.datetime):
        if (v.hour, v.minute, v.second, v.microsecond) == (0, 0, 0, 0):
            return v.strftime("%Y%m%d")
        return v.strftime("%Y%m%d%H%M%S")
    if isinstance(v, dt.date):
        return v.strftime("%Y%m%d")
    if isinstance(v, dt.time):
        return v.strftime("%H%M%S")
    if isinstance(v, dt.timedelta):
        return str(v)
    return str(v)


# Number and date cells of fields whose catalogue format gives them a meaning (module doc, "XLSX cells")
_EXCEL_DIGITS = 15  # significant digits a spreadsheet number keeps
_DAY = dt.timedelta(days=1)
_SERIAL_DATES = (dt.date(1900, 1, 1), dt.date(2099, 12, 31))  # a number in a date field read as a serial day
_EPOCH_1904 = dt.datetime(1904, 1, 1)


def id_number_text(v) -> str | None:
    """An XLSX number in an ID field as the digits a spreadsheet kept; ``None``: not such a number (the
    cell is rendered by :func:`cell_to_str`).

    A float keeps 15 significant digits: its shortest decimal form (``repr``) when that has at most 15,
    else its first 15 digits followed by zeros to the number's length (``341124198611101161`` read
    back as ``3.4112419861110118e+17`` → ``341124198611101000``). An integer of more than 15 digits
    that a float can hold exactly may have been through one and is read the same way; one no float
    can hold (an exact literal in the file) keeps every digit.
    """
    t = type(v)
    if t is int:
        if -10**_EXCEL_DIGITS < v < 10**_EXCEL_DIGITS or v <= 0 or v >= 2**1023 or float(v) != v:
            return None
        v = float(v)
    elif t is not float or not v.is_integer() or v <= 0:  # (inf and nan are not integers)
        return None
    digits = str(int(Decimal(repr(v))))
    if len(digits.rstrip("0")) <= _EXCEL_DIGITS:
        return digits
    return digits[:_EXCEL_DIGITS] + "0" * (len(digits) - _EXCEL_DIGITS)


def serial_date_text(v, epoch_1904: bool = False) -> str | None:
    """An XLSX cell of a D8 field as ``CCYYMMDD``: a date/datetime cell (its date), or a whole number
    that is a serial day of the workbook's date system giving a date in 1900–2099. Not converted
    (``None``): bare years 1900–2099 (``1985`` is not 1905-06-07), 0 and negatives, serial 60 of the
    1900 system (Excel's nonexistent 1900-02-29), fractions, and anything outside 1900–2099."""
    if isinstance(v, (dt.datetime, dt.date)):
        return v.strftime("%Y%m%d")
    t = type(v)
    if t is float and v.is_integer() and abs(v) < 1e9:
        n = int(v)
    elif t is int:
        n = v
    else:
        return None
    if n < 1 or 1900 <= n <= 2099 or n > 10**6:
        return None
    if epoch_1904:
        day = _EPOCH_1904.date() + n * _DAY
    elif n == 60:
        return None
    else:  # 1900 system: serial 1 = 1900-01-01; Excel counts a 1900-02-29, so from 61 on one day less
        day = dt.date(1899, 12, 31 if n < 60 else 30) + n * _DAY
    if not _SERIAL_DATES[0] <= day <= _SERIAL_DATES[1]:
        return None
    return day.strftime("%Y%m%d")


def _timestamp_cell_text(v, epoch_1904: bool = False) -> str | None:
    """A date/datetime cell of a D14 field: always the full ``CCYYMMDDhhmmss`` (midnight included)."""
    if isinstance(v, dt.datetime):
        return v.strftime("%Y%m%d%H%M%S")
    if isinstance(v, dt.date):
        return v.strftime("%Y%m%d") + "000000"
    return None


def _amount_cell_text(v, epoch_1904: bool = False) -> str | None:
    """A fractional number of an N field as a spreadsheet shows it: 15 significant digits, no exponent
    (``350.1 * 3`` stored as ``1050.3000000000002`` → ``1050.3``)."""
    if type(v) is not float or v.is_integer() or v != v or v in (float("inf"), float("-inf")):
        return None
    r = format(v, ".15g")
    return format(Decimal(r), "f") if "e" in r else r


def _cell_converter(fmt: Format | None) -> Callable | None:
    if fmt is None:
        return None
    if fmt.is_id:
        return lambda v, epoch_1904=False: id_number_text(v)
    if fmt.kind == "D":
        return serial_date_text if fmt.length == 8 else _timestamp_cell_text
    if fmt.kind == "N":
        return _amount_cell_text
    return None


def _xlsx_read(path: Path, format_of: Callable[[str], Format | None] = lambda code: None) -> _Raw:
    """First sheet; ``format_of(code)`` gives the catalogue format of a header code, which decides how a
    number or date cell of that column is written as text (see :func:`_cell_converter`)."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException …
        raise StructuralError(path, f"cannot open as xlsx: {type(e).__name__}: {e}") from None
    try:
        if not wb.worksheets:
            raise StructuralError(path, "the workbook has no sheet")
        ws = wb.worksheets[0]
        ws.reset_dimensions()  # some writers record wrong dimensions; read what is there
        typed = list(ws.iter_rows(values_only=True))
        epoch_1904 = getattr(wb, "epoch", None) == _EPOCH_1904
    finally:
        wb.close()
    rows = [tuple(map(cell_to_str, r)) for r in typed]
    # trim trailing empty cells; a row with nothing left is blank
    trimmed = []
    for r in rows:  # openpyxl already iterates per cell in Python; xlsx holds at most 1,048,576 rows
        k = len(r)
        while k and r[k - 1] == "":
            k -= 1
        trimmed.append(r[:k])
    lens = np.fromiter(map(len, trimmed), dtype=np.int64, count=len(trimmed))
    nonblank = np.flatnonzero(lens > 0)
    if len(nonblank) == 0:
        raise StructuralError(path, "the first sheet is empty: no header row")
    h = nonblank[0]
    header = list(trimmed[h])
    ncols = len(header)
    data_idx = nonblank[1:]
    fc = lens[data_idx] > ncols
    pre = []
    for i in data_idx[fc]:
        cells = list(trimmed[i])
        pre.append((int(i) + 1, "FIELD_COUNT",
                    f"表头 {ncols} 列, 本行 {len(cells)} 列有内容 (expected {ncols} columns, got {len(cells)})",
                    cells, _csv_line(cells)))
    good = data_idx[~fc]
    padded = [trimmed[i] + ("",) * (ncols - len(trimmed[i])) for i in good]
    if padded:
        columns = [np.array(c, dtype=object) for c in zip(*padded)]
    else:
        columns = [np.empty(0, dtype=object) for _ in range(ncols)]
    for j, code in enumerate(clean_header(header)):
        convert = _cell_converter(format_of(code))
        if convert is None:
            continue
        col = columns[j]
        for k, i in enumerate(good):  # the cells that were not text in the sheet
            r = typed[i]
            v = r[j] if j < len(r) else None
            if v is not None and type(v) is not str:
                text = convert(v, epoch_1904=epoch_1904)
                if text is not None:
                    col[k] = text
    del typed

    def raw_of(pos: np.ndarray) -> list[str]:
        return [_csv_line([c[p] for c in columns]) for p in pos]

    return _Raw(header, columns, (good + 1).astype(np.int64), pre, raw_of, open_end=False)


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
def _key_for(expected_fields, key):
    if key is not None:
        return key
    if expected_fields is None:
        return None
    for t in TABLES.values():
        if tuple(t.fields) == tuple(expected_fields):
            return t.key
    return None


def _read_csv(path: Path, encoding: str | None) -> _Raw:
    """Read a CSV by the fast pyarrow path when it is exact, else by the careful csv.reader path."""
    codec = _codec(path, encoding)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StructuralError(path, f"cannot read file ({e.strerror or e})") from None
    if codec == "gb18030":  # the fast path reads UTF-8: transcode (strictly) first
        try:
            buf = data.decode("gb18030").lstrip("\ufeff").encode("utf-8")
        except UnicodeDecodeError:
            buf = None
        raw = _csv_fast(buf, 0) if buf is not None else None
        del buf  # (kept alive by raw.raw_of while needed)
    else:
        raw = _csv_fast(data, 3 if data.startswith(codecs.BOM_UTF8) else 0)
    if raw is None:
        raw = _csv_careful(data.decode(codec, errors="surrogateescape"), path)
    return raw


def _check_header(path: Path, codes: list[str], key: str | None, incremental: bool) -> dict[str, int]:
    """Column index of each header code; duplicate codes or a missing required column are StructuralErrors."""
    seen: dict[str, int] = {}
    for i, c in enumerate(codes):
        if c in seen:
            raise StructuralError(path, f"header column {c!r} appears twice (columns {seen[c] + 1} and {i + 1})")
        seen[c] = i
    required = ([key] if key else []) + ([CZLX] if incremental else [])
    missing_req = [c for c in required if c not in seen]
    if missing_req:
        raise StructuralError(
            path,
            f"required column(s) {', '.join(missing_req)} missing from the header "
            f"({', '.join(codes) or 'empty'})",
        )
    return seen


def _pre_reject_records(raw: _Raw, kidx: int | None) -> list[dict]:
    """Reject records of the rows the reader already rejected (UNDECODABLE, FIELD_COUNT)."""
    records = []
    for line, reason, detail, cells, rawtext in raw.pre_rejects:
        kguess = cells[kidx] if (kidx is not None and cells is not None and kidx < len(cells)) else ""
        records.append(
            {"line": line, "reason": reason, "detail": detail, "raw": rawtext, "key": _visible(kguess)}
        )
    return records


# whitespace as linkage/ removes it (Unicode whitespace and the zero-width characters)
_WS_RE = r"[\s\u200b-\u200d\u2060\ufeff]+"


class _Verdicts:
    """Reject flag, reason and detail of each good-shape row; the first reason a row gets is kept."""

    def __init__(self, n: int):
        self.rej = np.zeros(n, dtype=bool)
        self.why = np.full(n, "", dtype=object)
        self.detail = np.full(n, "", dtype=object)

    def add(self, mask: np.ndarray, reason: str, detail) -> np.ndarray:
        """Reject the rows of ``mask`` not rejected yet; ``detail`` is a text, or a function of the new
        rows' positions giving one text each. Returns the newly rejected positions."""
        pos = np.flatnonzero(mask & ~self.rej)
        if len(pos):
            self.rej[pos] = True
            self.why[pos] = reason
            self.detail[pos] = detail if isinstance(detail, str) else np.array(list(detail(pos)), dtype=object)
        return pos


def _future_limit(business_date: str, margin_days: int) -> int:
    """``CCYYMMDDhhmmss`` of the last second a CZSJ/GXSJ may carry: the end of business date + margin."""
    try:
        day = dt.datetime.strptime(str(business_date), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"business_date must be CCYYMMDD, not {business_date!r}") from None
    if int(margin_days) < 0:
        raise ValueError(f"future_margin_days must not be negative ({margin_days})")
    return int((day + dt.timedelta(days=int(margin_days))).strftime("%Y%m%d") + "235959")


def _future_mask(values: np.ndarray, limit: int) -> np.ndarray:
    """``d14_to_int(values) > limit``, parsing only the values that can be later than ``limit``.

    Every spelling ``d14_to_int`` reads starts (after trimming and NFKC) with the 4-digit year, then a
    separator (``-/.`` below ``0``, ``年`` above ``9``) or the rest of an 8-digit date. So a value later
    than ``limit`` (``L``) sorts after ``L`` as text, or starts with L's year and a character below ``0``,
    or starts with something below ``0`` (leading whitespace); full-width digits and other leading
    characters sort after ``L``. Two comparisons over the column (two more over the values before L's
    year) pick those few values; a clean column costs no parsing at all (property-tested against the
    plain definition).
    """
    lim = str(limit)
    year, year0 = lim[:4], lim[:4] + "0"
    cand = values > lim
    low = np.flatnonzero(values < year0)  # earlier years, L's year with a separator, leading whitespace, ""
    if len(low):
        sub = values[low]
        cand[low] = (sub >= year) | ((sub < "0") & (sub != ""))
    out = np.zeros(len(values), dtype=bool)
    idx = np.flatnonzero(cand)
    if len(idx):
        out[idx] = d14_to_int(values[idx]) > limit
    return out


def _row_checks(raw: _Raw, codes: list[str], seen: dict[str, int], kidx: int | None, key: str | None,
                incremental: bool, table: str | None = None, future_limit: int | None = None):
    """Reject flag, reason and detail of each good-shape row, in the priority of the module doc:
    TRUNCATED_ROW, CONTROL_CHARACTER, FIELD_TOO_LONG, EMPTY_KEY, BAD_OPERATION, FUTURE_TIMESTAMP."""
    n = len(raw.lines)
    v = _Verdicts(n)
    if not n:
        return v.rej, v.why, v.detail
    # TRUNCATED_ROW: the file ends inside its last row, right after a comma (CSV only: open_end)
    if raw.open_end and raw.columns[-1][n - 1] == "" and str(raw.header[-1]).strip():
        last = np.zeros(n, dtype=bool)
        last[n - 1] = True
        v.add(last, "TRUNCATED_ROW", f"文件在最后一行之后没有换行符, 且最后一个字段 {codes[-1]} 为空, 疑似传输中断, 请重新发送 "
                                     f"(no line break after the last row and its last field {codes[-1]} is empty: "
                                     "the transfer was probably cut off; please deliver the file again)")
    # CONTROL_CHARACTER: any column (a scan of the whole text said whether any value can hold one)
    if raw.maybe_control:
        for j, col in enumerate(raw.columns):
            hit = pd.Series(col, dtype=object, copy=False).str.contains(_CONTROL_RE).to_numpy(dtype=bool)
            if hit.any():
                code = codes[j]

                def said(pos, col=col, code=code):
                    for p in pos:
                        m = _CONTROL_RE.search(col[p])
                        u = f"U+{ord(m.group()):04X}"
                        yield (f"字段 {code} 第 {m.start() + 1} 个字符是控制字符 {u} (field {code} holds the control "
                               f"character {u} at position {m.start() + 1})")
                v.add(hit, "CONTROL_CHARACTER", said)
    # FIELD_TOO_LONG: catalogue fields of the table, whitespace removed
    if table is not None:
        formats = FORMATS[table]
        for j, code in enumerate(codes):
            if code not in formats:
                continue
            limit = field_format(table, code).max_length
            if raw.max_len is not None and raw.max_len[j] <= limit:
                continue  # no value of the column is longer than this many bytes
            col = raw.columns[j]
            over = np.fromiter(map(len, col), dtype=np.int64, count=n) > limit
            if not over.any():
                continue
            pos = np.flatnonzero(over)
            lens = pd.Series(col[pos], dtype=object).str.replace(_WS_RE, "", regex=True).str.len().to_numpy()
            over[pos] = lens > limit
            size = dict(zip(pos.tolist(), lens.tolist()))

            def said(pos, code=code, limit=limit, size=size):
                for p in pos:
                    yield (f"字段 {code} 长 {size[p]} 个字符(不计空白), 超过目录规定的 {limit} 个字符 "
                           f"(field {code} is {size[p]} characters long without whitespace; at most {limit} allowed)")
            v.add(over, "FIELD_TOO_LONG", said)
    if kidx is not None:
        e = np.fromiter(map(str.strip, raw.columns[kidx]), dtype=object, count=n) == ""
        v.add(e, "EMPTY_KEY", f"主键 {key} 为空 (record key {key} is empty)")
    if incremental:
        op = np.fromiter(map(str.upper, map(str.strip, raw.columns[seen[CZLX]])), dtype=object, count=n)
        b = ~pd.Series(op, dtype=object).isin(OPERATIONS).to_numpy(dtype=bool)
        v.add(b, "BAD_OPERATION", "操作类型 CZLX 不是 I/U/D (CZLX is not I, U or D)")
        if CZSJ in seen:
            ts = d14_to_int(raw.columns[seen[CZSJ]])
            v.add(ts == -2, "BAD_OPERATION", "操作时间 CZSJ 无法识别 (CZSJ is not a readable timestamp)")
    # FUTURE_TIMESTAMP: CZSJ, then GXSJ, after the end of business date + margin
    if future_limit is not None:
        for code in (CZSJ, "GXSJ"):
            if code not in seen:
                continue
            col = raw.columns[seen[code]]
            late = _future_mask(col, future_limit)
            if late.any():
                def said(pos, col=col, code=code):
                    for p, t in zip(pos, d14_to_int(col[pos])):
                        yield (f"{code} 为 {t}, 晚于业务日期加宽限后的 {future_limit} "
                               f"({code} is {t}, later than {future_limit}, the end of the business date plus margin)")
                v.add(late, "FUTURE_TIMESTAMP", said)
    return v.rej, v.why, v.detail


def _row_reject_records(raw: _Raw, kidx: int | None, rej: np.ndarray, why: np.ndarray, detail: np.ndarray):
    """Reject records of the good-shape rows the checks rejected, with their physical text."""
    if not rej.any():
        return []
    pos = np.flatnonzero(rej)
    raws = raw.raw_of(pos)
    keys = raw.columns[kidx][pos] if kidx is not None else np.full(len(pos), "", dtype=object)
    return [
        {"line": int(raw.lines[p]), "reason": why[p], "detail": detail[p], "raw": rt, "key": _visible(k)}
        for p, rt, k in zip(pos, raws, keys)
    ]


def _loaded_frame(raw: _Raw, codes: list[str], rej: np.ndarray) -> pd.DataFrame:
    """The rows not rejected as a frame of header codes plus ``_line`` (no copy when nothing was rejected)."""
    keep = ~rej
    if keep.all():
        frame = pd.DataFrame(dict(zip(codes, raw.columns)), copy=False)
        frame["_line"] = raw.lines
    else:
        frame = pd.DataFrame({c: col[keep] for c, col in zip(codes, raw.columns)})
        frame["_line"] = raw.lines[keep]
    return frame


def read_delivery(
    path: Path | str,
    fmt: str,
    encoding: str | None = "UTF-8",
    expected_fields: tuple[str, ...] | None = None,
    incremental: bool = False,
    key: str | None = None,
    *,
    table: str | None = None,
    business_date: str | None = None,
    future_margin_days: int = 1,
) -> Parsed:
    """Read one delivered file into a string frame plus rejects.

    ``expected_fields``: the table's catalogue fields (``TABLES[t].fields``) or ``None`` (e.g. a
    verification return); used to report missing/extra columns and, when ``key`` is not given, to
    find the table's key. ``key``: the record-key field (its column is required; empty values are
    ``EMPTY_KEY``); ``None`` and no catalogue match → no key check. ``incremental``: the ``CZLX``
    column is required and checked (``BAD_OPERATION``), ``CZSJ`` checked when present.
    ``table``: the catalogue table the file delivers (``hukou`` …): values of its fields (``CZLX`` and
    ``CZSJ`` included) longer than ``catalog.formats.field_format(table, field).max_length`` once
    whitespace is removed are ``FIELD_TOO_LONG``; ``None`` → no length check. It also picks the field
    formats that decide how XLSX number cells are read (without it, a field code's format in the
    catalogue). ``business_date`` (``CCYYMMDD``): a ``CZSJ`` or ``GXSJ`` later than the end of that
    date plus ``future_margin_days`` days (``20260302235959`` for ``20260301`` and 1) is
    ``FUTURE_TIMESTAMP``; ``None`` → no check. Control characters (``CONTROL_CHARACTER``) and a CSV's
    cut-off last row (``TRUNCATED_ROW``) are always checked.
    Raises :class:`StructuralError` when the file as a whole is unusable; ``ValueError`` for an
    unknown ``table``, a ``business_date`` that is not a date or a negative margin.
    """
    path = Path(path)
    fmt_l = (fmt or "").lower()
    key = _key_for(expected_fields, key)
    if table is not None and table not in FORMATS:
        raise ValueError(f"unknown table {table!r} (one of {', '.join(FORMATS)})")
    future_limit = _future_limit(business_date, future_margin_days) if business_date is not None else None
    if fmt_l == "csv":
        raw = _read_csv(path, encoding)
    elif fmt_l == "xlsx":
        raw = _xlsx_read(path, partial(_format_of, table))
    else:
        raise StructuralError(path, f"unsupported format {fmt!r} (csv or xlsx)")

    codes = clean_header(raw.header)
    seen = _check_header(path, codes, key, incremental)
    expected = tuple(expected_fields or ())
    missing = tuple(f for f in expected if f not in seen)
    extra = tuple(c for c in codes if expected and c not in expected and c not in INCREMENTAL_FIELDS)

    kidx = seen.get(key) if key else None
    rej, why, detail = _row_checks(raw, codes, seen, kidx, key, incremental, table, future_limit)
    reject_records = _pre_reject_records(raw, kidx) + _row_reject_records(raw, kidx, rej, why, detail)
    frame = _loaded_frame(raw, codes, rej)
    rejects = make_rejects(reject_records)
    return Parsed(
        frame=frame,
        rejects=rejects,
        received_rows=len(frame) + len(rejects),
        header=codes,
        missing_fields=missing,
        extra_fields=extra,
        raw_header=list(raw.header),
    )


def _format_of(table: str | None, code: str) -> Format | None:
    """The catalogue format of a header code: in ``table`` when given, else the code's in every table."""
    if table is not None:
        return field_format(table, code) if code in FORMATS[table] else None
    return code_format(code)
