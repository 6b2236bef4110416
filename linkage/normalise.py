"""Normalisation of names, sex codes and dates for matching (spec section 2, "Values arrive dirty").

Never overwrites what a department sent: every function returns new Series/frames with the same index.
All outputs are object Series of `str`, `""` for missing or unreadable, never NaN.

Vectorised with pandas string methods. Sex codes and dates have few distinct values, so they are
normalised on the distinct values (`pd.factorize`) and mapped back with `take` (8- and 14-digit dates
straight from a numpy code-point matrix, the other layouts by regex). Names: only those that are not
purely letters go through the regex path; `name_key` for names of up to 8 characters is a numpy
lookup on a code-point matrix (t2s + upper-case table, built once), longer ones use `str.translate`.

Decisions:
* Names: NFKC; zero-width/format characters (U+200B–U+200D, U+2060, U+FEFF, U+00AD) removed. A name
  containing a CJK character (incl. extensions, compatibility ideographs, `〇`, private-use "造字"
  characters and `□`) loses all whitespace; any other name (Latin script) has whitespace runs
  collapsed to one space and is stripped. Lookalike dots `・ • ‧ ∙ ⋅ ⸱ ꞏ ㆍ ᛫` (and, through
  NFKC, `･ ·(U+0387)`) become U+00B7 `·` anywhere; ASCII `.` (also from NFKC of `．` `․` `﹒`) and
  `。` become `·` only between two CJK characters (a Latin `J. SMITH` keeps its full stop); a run of
  dots between CJK characters becomes one `·`. `□` (unknown character) is kept.
* `name_key`: `name` folded traditional→simplified with a one-character table built from OpenCC's
  `TSCharacters.txt` (first candidate), then upper-cased. Characters that are themselves valid
  simplified characters are *not* folded: those listed among their own candidates (`乾 於 覆 藉 徵
  瞭 祇 麽 …`, which OpenCC's t2s would otherwise turn into `干 于 复 借 征 了 只 么`, wrongly merging
  surnames like 於/于) and those that are keys of `STCharacters.txt`.
* Sex: `1 2 0 9` kept (also `1.0` from numeric spreadsheet cells); `男 男性 M MALE` → `1`,
  `女 女性 F FEMALE` → `2`, GB/T 2261.1 names `未知的性别`/`未知` → `0`, `未说明的性别`/`未说明` → `9`;
  case-insensitive after NFKC and whitespace removal; anything else `""`.
* Dates: see `normalise_date`.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache

import numpy as np
import opencc  # opencc-python-reimplemented: only its dictionary files are used
import pandas as pd

from linkage.ids import as_str

__all__ = [
    "normalise_name",
    "normalise_sex",
    "normalise_date",
    "is_blank",
    "t2s_table",
    "fold_t2s",
    "LOOKALIKE_DOTS",
    "MIDDLE_DOT",
]

MIDDLE_DOT = "\u00b7"
# always mapped to U+00B7 (after NFKC; U+FF65 and U+0387 are already turned into U+30FB / U+00B7 by NFKC)
LOOKALIKE_DOTS = "\u30fb\u2022\u2027\u2219\u22c5\u2e31\ua78f\u318d\u16eb\uff65\u0387"

_CJK_CLASS = (
    "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ue000-\uf8ff\u25a1"
    "\U00020000-\U0003ffff"
)
_CJK_RE = f"[{_CJK_CLASS}]"
_FORMAT_CHARS_RE = "[\u200b-\u200d\u2060\ufeff\u00ad]"
_WS_RE = r"\s+"
_DOTS_BETWEEN_CJK_RE = re.compile(f"(?<=[{_CJK_CLASS}])[.\u3002{MIDDLE_DOT}]+(?=[{_CJK_CLASS}])")
_DOT_TABLE = str.maketrans({c: MIDDLE_DOT for c in LOOKALIKE_DOTS})


def _on_distinct(raw: pd.Series, fn) -> pd.Series:
    """Apply a vectorised Series→Series function to the distinct values and map back."""
    s = as_str(raw)
    if len(s) == 0:
        return pd.Series([], index=s.index, dtype=object)
    codes, uniques = pd.factorize(s.to_numpy(), use_na_sentinel=False)
    done = fn(pd.Series(uniques, dtype=object)).to_numpy(dtype=object)
    return pd.Series(done.take(codes), index=s.index, dtype=object)


# ----------------------------------------------------------------------------------------- t2s fold
def _opencc_dictionary(name: str) -> str:
    """Path of one of the dictionary files shipped with OpenCC."""
    return os.path.join(os.path.dirname(opencc.__file__), "dictionary", name)


@lru_cache(maxsize=1)
def t2s_table() -> dict[int, str]:
    """`str.translate` table traditional → simplified, one character each (built once)."""

    def read(name: str) -> dict[str, list[str]]:
        out = {}
        with open(_opencc_dictionary(name), encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if not line or line.startswith("#") or "\t" not in line:
                    continue
                key, vals = line.split("\t", 1)
                out[key] = vals.split()
        return out

    ts = read("TSCharacters.txt")
    simplified = set(read("STCharacters.txt"))
    table: dict[int, str] = {}
    for key, cands in ts.items():
        if len(key) != 1 or not cands or len(cands[0]) != 1:
            continue
        if key in cands or key in simplified or cands[0] == key:
            continue  # a valid simplified character in its own right: keep it
        table[ord(key)] = cands[0]
    return table


def fold_t2s(s: pd.Series) -> pd.Series:
    """Traditional → simplified, character by character (vectorised `str.translate`)."""
    return as_str(s).str.translate(t2s_table())


# -------------------------------------------------------------------------------------------- names
def normalise_name(raw: pd.Series) -> pd.DataFrame:
    """`name` (normalised name) and `name_key` (t2s-folded, upper-cased); same index as `raw`."""
    s = as_str(raw)
    if len(s) == 0:
        empty = pd.Series([], index=s.index, dtype=object)
        return pd.DataFrame({"name": empty, "name_key": empty.copy()}, index=s.index)
    s = s.str.normalize("NFKC")
    # names made only of letters (CJK or Latin, one word) have no whitespace, dots or format
    # characters: only the rest go through the regex path
    special = ~s.str.isalpha().astype(bool).to_numpy()
    if special.any():
        s.iloc[np.flatnonzero(special)] = _clean_special(s[special]).to_numpy(dtype=object)
    key = _name_key(s)
    return pd.DataFrame({"name": s.astype(object), "name_key": key.astype(object)}, index=s.index)


_KEY_WIDTH = 8  # names up to this length (nearly all Chinese names) are keyed on a code-point matrix
_LUT_SIZE = 0x40000  # BMP + SIP + TIP (CJK extensions B..H)


_COMPLEX = np.uint32(0xFFFFFFFF)  # key LUT marker: the table cannot key this code point


@lru_cache(maxsize=1)
def _key_lut() -> np.ndarray:
    """Code point → key code point (t2s fold + simple upper-case), `_COMPLEX` where the table cannot
    handle it (upper-case is not one character); index `_LUT_SIZE` (anything beyond) is `_COMPLEX`."""
    lut = np.arange(_LUT_SIZE + 1, dtype=np.uint32)
    lut[_LUT_SIZE] = _COMPLEX
    for cp in range(_LUT_SIZE):
        ch = chr(cp)
        up = ch.upper()
        if up != ch:
            lut[cp] = ord(up) if len(up) == 1 else _COMPLEX
    for cp, simp in t2s_table().items():
        if cp < _LUT_SIZE and len(simp.upper()) == 1:
            lut[cp] = ord(simp.upper())
    return lut


def _name_key(name: pd.Series) -> pd.Series:
    """t2s fold + upper-case; short names through a numpy lookup table, the rest with str methods."""
    vals = name.to_numpy(dtype=object)
    key = vals.copy()
    n = len(vals)
    if n == 0:
        return pd.Series(key, index=name.index, dtype=object)
    lut = _key_lut()
    # truncating to width+1 tells the short names from the long ones
    m = np.asarray(vals, dtype=f"U{_KEY_WIDTH + 1}").view(np.uint32).reshape(n, _KEY_WIDTH + 1)
    mapped = lut.take(np.minimum(m[:, :_KEY_WIDTH], _LUT_SIZE))  # padding 0 maps to 0
    short = (m[:, _KEY_WIDTH] == 0) & ~(mapped == _COMPLEX).any(axis=1)
    if short.all():
        key = mapped.view(f"U{_KEY_WIDTH}").reshape(n).astype(object)
    else:
        rows = np.flatnonzero(short)
        key[rows] = mapped[rows].view(f"U{_KEY_WIDTH}").reshape(-1).astype(object)
        rows = np.flatnonzero(~short)
        key[rows] = pd.Series(vals[rows], dtype=object).str.translate(t2s_table()).str.upper().to_numpy(dtype=object)
    return pd.Series(key, index=name.index, dtype=object)


def _clean_special(s: pd.Series) -> pd.Series:
    s = s.reset_index(drop=True).str.replace(_FORMAT_CHARS_RE, "", regex=True)
    s = s.str.translate(_DOT_TABLE)
    cjk = s.str.contains(_CJK_RE, regex=True).astype(bool)
    out = s.copy()
    if cjk.any():
        c = s[cjk].str.replace(_WS_RE, "", regex=True)
        out[cjk] = c.str.replace(_DOTS_BETWEEN_CJK_RE, MIDDLE_DOT, regex=True)
    if (~cjk).any():
        out[~cjk] = s[~cjk].str.replace(_WS_RE, " ", regex=True).str.strip()
    return out


# ---------------------------------------------------------------------------------------------- sex
_SEX_MAP = {
    "1": "1", "2": "2", "0": "0", "9": "9",
    "男": "1", "男性": "1", "M": "1", "MALE": "1",
    "女": "2", "女性": "2", "F": "2", "FEMALE": "2",
    "未知": "0", "未知的性别": "0",
    "未说明": "9", "未说明的性别": "9",
}


def _sex_distinct(u: pd.Series) -> pd.Series:
    u = u.str.normalize("NFKC").str.replace(r"[\s\u200b-\u200d\u2060\ufeff]+", "", regex=True).str.upper()
    u = u.str.replace(r"^([0129])\.0+$", r"\1", regex=True)
    return u.map(_SEX_MAP).fillna("").astype(object)


def normalise_sex(raw: pd.Series) -> pd.Series:
    """GB/T 2261.1 sex code `1`/`2`/`0`/`9`, or `""`."""
    return _on_distinct(raw, _sex_distinct)


# -------------------------------------------------------------------------------------------- dates
_TIME = r"(?:[T\s]+[0-9]{1,2}(?::[0-9]{1,2}){1,2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
_DATE_PATTERNS = [
    # 19850302, D14 19850302123456, numeric-cell tails 19850302.0
    re.compile(r"^(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})(?:[0-9]{6})?(?:\.0+)?$"),
    # 1985-3-2, 1985/03/02, 1985.3.2, 1985年3月2日, with an optional time part
    re.compile(
        r"^(?P<y>[0-9]{4})\s*[-/.年]\s*(?P<m>[0-9]{1,2})\s*[-/.月]\s*(?P<d>[0-9]{1,2})\s*[日号]?" + _TIME + r"$"
    ),
]
_SERIAL_RE = re.compile(r"^(?P<s>[0-9]{5})(?:\.[0-9]+)?$")
_EXCEL_EPOCH = np.datetime64("1899-12-30", "D")  # 1900 system, serial ≥ 61 (5 digits always are)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _date_distinct(u: pd.Series) -> pd.Series:
    u = u.str.normalize("NFKC").str.replace(r"[\u200b-\u200d\u2060\ufeff]+", "", regex=True).str.strip()
    n = len(u)
    y = np.full(n, -1, dtype=np.int64)
    m = np.full(n, -1, dtype=np.int64)
    d = np.full(n, -1, dtype=np.int64)
    todo = np.ones(n, dtype=bool)
    # fast path: 8 or 14 ASCII digits (CCYYMMDD, D14) straight from a code-point matrix
    if n:
        vals = u.to_numpy(dtype=object)
        cp = np.asarray(vals, dtype="U15").view(np.uint32).reshape(n, 15)
        isd = (cp >= 48) & (cp <= 57)
        nz = cp != 0
        plain8 = isd[:, :8].all(axis=1) & ~nz[:, 8:].any(axis=1)
        plain14 = isd[:, :14].all(axis=1) & ~nz[:, 14]
        fast = plain8 | plain14
        if fast.any():
            dg = cp[fast, :8].astype(np.int64) - 48
            y[fast] = dg[:, 0] * 1000 + dg[:, 1] * 100 + dg[:, 2] * 10 + dg[:, 3]
            m[fast] = dg[:, 4] * 10 + dg[:, 5]
            d[fast] = dg[:, 6] * 10 + dg[:, 7]
            todo &= ~fast
    for pat in _DATE_PATTERNS:
        if not todo.any():
            break
        ex = u[todo].str.extract(pat)
        hit = ex["y"].notna().to_numpy()
        rows = np.flatnonzero(todo)[hit]
        y[rows] = ex["y"][hit].astype(np.int64).to_numpy()
        m[rows] = ex["m"][hit].astype(np.int64).to_numpy()
        d[rows] = ex["d"][hit].astype(np.int64).to_numpy()
        todo[rows] = False
    if todo.any():
        ex = u[todo].str.extract(_SERIAL_RE)
        hit = ex["s"].notna().to_numpy()
        if hit.any():
            rows = np.flatnonzero(todo)[hit]
            days = _EXCEL_EPOCH + ex["s"][hit].astype(np.int64).to_numpy().astype("timedelta64[D]")
            ymd = pd.DatetimeIndex(days.astype("datetime64[s]"))
            y[rows], m[rows], d[rows] = ymd.year, ymd.month, ymd.day
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    mc = np.clip(m, 0, 12)
    ok = (y >= 1) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= _DAYS_IN_MONTH[mc] + ((mc == 2) & leap))
    out = np.full(n, "", dtype=object)
    if ok.any():
        val = pd.Series(y[ok] * 10000 + m[ok] * 100 + d[ok])
        out[ok] = val.astype(str).str.zfill(8).to_numpy(dtype=object)
    return pd.Series(out, index=u.index, dtype=object)


def normalise_date(raw: pd.Series) -> pd.Series:
    """`CCYYMMDD` or `""`.

    Accepts (after NFKC, so full-width digits too): `19850302`; D14 `19850302123456` (date part);
    `1985-3-2`, `1985/03/02`, `1985.3.2`, `1985年3月2日` (also `号`, mixed separators), each with an
    optional time part (`1985-03-02 00:00:00`, `1985-03-02T00:00:00+08:00`); `19850302.0` from a
    numeric spreadsheet cell; Excel serial day numbers of 5 digits (1900 date system, 1927-05-18 ..
    2173-10-14; a fractional time part is dropped). Not a real calendar date → `""`.
    Two-digit years, day-first orders and bare years are ambiguous and give `""`.
    """
    return _on_distinct(raw, _date_distinct)


def is_blank(series: pd.Series) -> pd.Series:
    """True where the value is missing or only whitespace (incl. ideographic/zero-width spaces)."""
    s = as_str(series)
    return s.str.replace(r"[\s\u200b-\u200d\u2060\ufeff]+", "", regex=True).eq("")
