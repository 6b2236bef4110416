"""Field formats of the data item catalogue (spec section 1), as data: `C18` fixed 18 characters,
`C..50` at most 50, `N8,2` numeric with 2 decimals, `D8` date `CCYYMMDD`, `D14` timestamp.

`FORMATS[table][field]` is the format the spec gives; `field_format(table, field).max_length` is the
longest value a delivery may carry for it once whitespace is removed (longer is `FIELD_TOO_LONG` in
`exchange.parse`). Only a value no spelling can explain is too long, so the limit leaves room for the
dirty spellings the spec says arrive and the pipeline reads (`linkage.normalise`, `linkage.ids`,
`exchange.parse.d14_to_int`):

* dates and timestamps: 35 characters, the longest spelling the date/timestamp readers accept
  (`1985-03-02T00:00:00.123456789+08:00`; `1985年03月02日`, `2026年03月01日10时15分30秒` are shorter);
* ID numbers (`C18`, `C20`, `C..40`: `GMSFHM`, `ZJHM`, `*_ZJHM`, `ZF_GMSFHM`, `CJRZH`): 4 more than the
  format, for a float tail (`320102198503020011.0`) or a scientific spelling (`3.4112419861110118E+17`)
  that `linkage.ids` recognises as Excel damage: a wrong-length ID is the verification state
  `ID_FORMAT`, not a reject, unless it is longer than any ID could be;
* numbers: a sign and a point (`N8,2` → 10);
* `XB`: 6, the sex words `linkage.normalise` maps (`男性`, `FEMALE`, `未说明的性别`); `MZ`: 9, the
  GB 3304 names (`维吾尔族`, `外国血统中国籍人士`), carried as delivered;
* every other code field (`HKZT`, `ZJLX`, `CZLX`, region codes …) and text field: exactly its format.

`field_format(table, field).is_id` / `.kind == "D"` tell `exchange.parse` how to read an XLSX number
cell in that field; `code_format(field)` is the format a field code has in every table (used when the
table is not known).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from catalog.tables import INCREMENTAL_FIELDS, TABLES

# Fields every table shares, and the incremental ones (spec sections 1 and 2).
COMMON = {"XM": "C..50", "GMSFHM": "C18", "XB": "C1", "MZ": "C2", "CSRQ": "D8", "GXSJ": "D14",
          "CZLX": "C1", "CZSJ": "D14"}
_NAME, _ID, _DATE = "C..50", "C..40", "D8"
_REGION, _ADDRESS, _KEY = "C6", "C..200", "C..32"

FORMATS: dict[str, dict[str, str]] = {
    "hukou": {"RYBH": _KEY, "HJDZ_XZQH": _REGION, "HJDZ": _ADDRESS, "HH": "C..20", "HKZT": "C1", "ZXRQ": _DATE},
    "temp": {"ZZBH": _KEY, "ZJLX": "C3", "ZJHM": _ID, "GJ": "C3", "HJDZ_XZQH": _REGION, "HJDZ": _ADDRESS,
             "ZZDZ_XZQH": _REGION, "ZZDZ": _ADDRESS, "DJRQ": _DATE, "YXQZ": _DATE, "ZT": "C1"},
    "resident": {"JMBH": _KEY, "JZDZ_XZQH": _REGION, "JZDZ": _ADDRESS, "SQMC": "C..50", "JZZT": "C1", "CJRQ": _DATE},
    "dibao": {"DBRYBH": _KEY, "DBZH": "C..20", "JTDZ_XZQH": _REGION, "JTDZ": _ADDRESS, "BZZT": "C1", "QSRQ": _DATE,
              "YBZJE": "N8,2"},
    "marriage": {"DJBH": _KEY, "YWLX": "C1", "DJRQ": _DATE, "DJJG": "C..100",
                 "NF_XM": _NAME, "NF_ZJLX": "C3", "NF_ZJHM": _ID, "NF_CSRQ": _DATE,
                 "NV_XM": _NAME, "NV_ZJLX": "C3", "NV_ZJHM": _ID, "NV_CSRQ": _DATE},
    "women": {"FNBH": _KEY, "HYZK": "C2", "ZF_XM": _NAME, "ZF_GMSFHM": "C18", "HJDZ_XZQH": _REGION, "HJDZ": _ADDRESS,
              "XJZD_XZQH": _REGION, "XJZD": _ADDRESS, "ZNS": "N2"},
    "disabled": {"CJRZH": "C20", "CJLB": "C1", "CJDJ": "C1", "HJDZ_XZQH": _REGION, "HJDZ": _ADDRESS,
                 "JZDZ": _ADDRESS, "FZRQ": _DATE, "ZT": "C1", "ZXYY": "C1"},
}
for _name, _table in TABLES.items():  # every field of every table has a format, nothing else does
    FORMATS[_name] = {f: FORMATS[_name].get(f) or COMMON[f] for f in (*_table.fields, *INCREMENTAL_FIELDS)}
    assert set(FORMATS[_name]) == set(_table.fields) | set(INCREMENTAL_FIELDS), _name

_PATTERN = re.compile(r"^(C|N|D)(\.\.)?(\d+)(?:,(\d+))?$")
# the longest dirty spelling of a date or timestamp the pipeline reads (spec section 2): separators, a time
# part with up to 9 fraction digits and a zone offset, `1985-03-02T00:00:00.123456789+08:00`
_DATE_ROOM = 35
# ID numbers: formats of the fields holding one; room for `.0` or a scientific spelling (linkage.ids)
ID_FORMATS = frozenset({"C18", "C20", "C..40"})
_ID_ROOM = 4
# code fields whose words the pipeline reads or carries: XB (linkage.normalise sex words, `未说明的性别`),
# MZ (GB 3304 names, `外国血统中国籍人士`)
_WORD_ROOM = {"XB": 6, "MZ": 9}


@dataclass(frozen=True)
class Format:
    kind: str  # C text, N number, D date (8) or timestamp (14)
    length: int  # C: characters (fixed, or at most with `up_to`); N: digits; D: 8 or 14
    up_to: bool = False  # C..n
    decimals: int = 0  # N8,2
    text: str = ""  # the catalogue notation, `C..40`
    room: int = 0  # a field whose words the pipeline reads may be longer than its code (XB, MZ)

    @property
    def is_id(self) -> bool:
        """The field holds an ID number (digits that must never be rounded or completed)."""
        return self.text in ID_FORMATS

    @property
    def max_length(self) -> int:
        """The longest value (whitespace removed) that can still be this field, however dirty."""
        if self.kind == "D":
            return _DATE_ROOM
        if self.kind == "N":
            return self.length + (1 if self.decimals else 0) + 1  # a point and a sign
        if self.is_id:
            return self.length + _ID_ROOM
        return max(self.length, self.room)


def parse_format(text: str) -> Format:
    m = _PATTERN.match(text)
    if not m:
        raise ValueError(f"not a catalogue format: {text!r}")
    kind, up_to, n, dec = m.groups()
    return Format(kind, int(n), bool(up_to), int(dec or 0), text)


@lru_cache(maxsize=None)
def field_format(table: str, field: str) -> Format:
    """The format of `field` in `table` (KeyError for a field the table does not have)."""
    fmt = parse_format(FORMATS[table][field])
    return replace(fmt, room=_WORD_ROOM[field]) if field in _WORD_ROOM else fmt


@lru_cache(maxsize=None)
def code_format(field: str) -> Format | None:
    """The format a field code has in every table that has it; None for an unknown code or one whose
    format differs between tables."""
    found = {FORMATS[t][field] for t in FORMATS if field in FORMATS[t]}
    if len(found) != 1:
        return None
    table = next(t for t in FORMATS if field in FORMATS[t])
    return field_format(table, field)
