"""Code sets of the catalogue (spec sections 1 and 5): the value domains the quality suites check
deliveries against, and the result codes of a verification answer.

`catalog/tables.py` holds layouts (fields, keys, roles, status fields); the value domains of coded
fields are written here once, as the spec lists them.
"""
from __future__ import annotations

from catalog.tables import TABLES

# Document types (ZJLX): 111 居民身份证, 414 普通护照, 516 港澳居民来往内地通行证, 990 其他.
DOC_TYPES = ("111", "414", "516", "990")
CITIZEN_ID_DOC = "111"

# Sex (XB): GB/T 2261.1 codes plus the raw characters some departments send.
SEX_CODES = ("1", "2", "0", "9", "男", "女")

# Coded fields per table: field -> allowed codes.
CODE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "hukou": {"HKZT": ("1", "2", "3", "4", "5", "9")},
    "temp": {"ZJLX": DOC_TYPES, "ZT": ("1", "0")},
    "resident": {"JZZT": ("1", "2")},
    "dibao": {"BZZT": ("1", "0")},
    "marriage": {"YWLX": ("1", "2"), "NF_ZJLX": DOC_TYPES, "NV_ZJLX": DOC_TYPES},
    "women": {"HYZK": ("10", "20", "21", "22", "23", "30", "40", "90")},
    "disabled": {
        "CJLB": ("1", "2", "3", "4", "5", "6", "7"),
        "CJDJ": ("1", "2", "3", "4"),
        "ZT": ("1", "0"),
        "ZXYY": ("1", "2", "9"),
    },
}

# Coded fields that must be filled on every row (an empty value counts against the expectation):
# each table's status field and the marriage business type. Other coded fields may be empty
# (e.g. ZXYY is empty while the certificate is valid) and are judged on their filled values only.
CODES_REQUIRED: dict[str, tuple[str, ...]] = {
    name: tuple(f for f in (t.status_field, "YWLX" if name == "marriage" else "") if f)
    for name, t in TABLES.items()
}

# Date fields (D8) and timestamp fields (D14) per table, from the spec's field list.
DATE_FIELDS: dict[str, tuple[str, ...]] = {
    "hukou": ("CSRQ", "ZXRQ"),
    "temp": ("CSRQ", "DJRQ", "YXQZ"),
    "resident": ("CSRQ", "CJRQ"),
    "dibao": ("CSRQ", "QSRQ"),
    "marriage": ("DJRQ", "NF_CSRQ", "NV_CSRQ"),
    "women": ("CSRQ",),
    "disabled": ("CSRQ", "FZRQ"),
}
TIMESTAMP_FIELDS = ("GXSJ",)
INCREMENTAL_OPS = ("I", "U", "D")

# The catalogue knows every field; make sure nothing here names a field the catalogue lacks.
for _name, _sets in CODE_SETS.items():
    assert set(_sets) <= set(TABLES[_name].fields), (_name, _sets)
for _name, _fields in DATE_FIELDS.items():
    assert set(_fields) <= set(TABLES[_name].fields), (_name, _fields)
assert set(CODE_SETS) == set(TABLES) == set(DATE_FIELDS)


# HCJG 核查结果 (spec section 5).
RESULT_CODES: dict[str, str] = {
    "1": "属实已更正",
    "2": "原数据无误",
    "3": "查无此人/应注销",
    "4": "确认为同一人",
    "5": "确认非同一人",
    "9": "其他",
}
