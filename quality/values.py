"""Small, pure value checks shared by the GX suites and the rate metrics (no GX, no Dagster).

These judge *delivered* values (strings, `""` for missing) for quality metrics only; the pipeline's
own normalisation for matching lives in `linkage/` and may be stricter or more forgiving. Everything
works on unique values and maps back, so a column of a million rows costs what its distinct values
cost.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date

import numpy as np
import pandas as pd

# The shape of a citizen ID after trimming (brief / spec section 1): 18 characters (17 digits and a
# digit or X) or a legacy 15-digit number.
ID_PATTERN = r"^[0-9]{17}[0-9Xx]$|^[0-9]{15}$"

# GB 11643-1999 check digit weights and characters (ISO 7064 MOD 11-2).
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"

# A real calendar date written CCYYMMDD (years 1000-9999, Gregorian leap years), as one regex so a
# GX regex expectation can judge it vectorised; `TIMESTAMP_REGEX` is the same followed by hhmmss.
_COMMON_DAY = (
    r"(?:(?:0[13578]|1[02])(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)(?:0[1-9]|[12][0-9]|30)"
    r"|02(?:0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR = r"(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[13579][26]|[2468][048])00)"
_DATE_BODY = rf"(?:[1-9][0-9]{{3}}{_COMMON_DAY}|{_LEAP_YEAR}0229)"
DATE_REGEX = rf"^{_DATE_BODY}$"
TIMESTAMP_REGEX = rf"^{_DATE_BODY}(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]$"

_WS = re.compile(r"\s+")
_TIME_TAIL = re.compile(r"[ T]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_D8 = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_D14 = re.compile(r"^(\d{4})(\d{2})(\d{2})\d{6}$")
_SEP = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")


def as_str(s: pd.Series) -> pd.Series:
    """A column as strings with `""` for missing (NaN/None never leak into comparisons)."""
    return s.astype(object).where(s.notna(), "").astype(str)


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """`df[name]` as strings, or a column of `""` when the frame has no such column."""
    if name and name in df.columns:
        return as_str(df[name])
    return pd.Series("", index=df.index, dtype=object)


def _map_unique(s: pd.Series, fn) -> pd.Series:
    uniq = pd.unique(s)
    return s.map(dict(zip(uniq, (fn(v) for v in uniq))))


def stripped(s: pd.Series) -> pd.Series:
    """`s.str.strip()` computed once per distinct value (delivered columns repeat a lot)."""
    return _map_unique(as_str(s), str.strip)


def _real_date(y: str, m: str, d: str) -> str:
    try:
        return date(int(y), int(m), int(d)).strftime("%Y%m%d") if int(y) >= 1000 else ""
    except ValueError:
        return ""


def parse_date(value: str) -> str:
    """`CCYYMMDD` for a delivered date in any layout the spec says occurs, else `""`.

    Accepted: `19850302`, a D14 timestamp, `1985-3-2`, `1985/03/02`, `1985.3.2`, `1985年3月2日`,
    full-width digits, surrounding or inner spaces, an Excel-style trailing time (`1985-03-02 00:00:00`).
    The date must exist in the calendar.
    """
    v = unicodedata.normalize("NFKC", str(value)).strip()
    if not v:
        return ""
    v = _TIME_TAIL.sub("", v)
    m = _SEP.match(v)
    if m:
        return _real_date(*m.groups())
    v = _WS.sub("", v)
    m = _D8.match(v) or _D14.match(v)
    return _real_date(*m.groups()) if m else ""


def parse_dates(s: pd.Series) -> pd.Series:
    """`parse_date` over a column (computed once per distinct value)."""
    return _map_unique(as_str(s), parse_date)


def normalise_id(value: str) -> str:
    """NFKC, whitespace removed, `x` → `X` (spec section 4, how IDs are judged)."""
    return _WS.sub("", unicodedata.normalize("NFKC", str(value))).upper()


def id_valid(value: str, business_date: str = "") -> bool:
    """Well formed per spec section 4: a valid 18-digit ID (check digit right) or a 15-digit one,
    with a real embedded birth date not before 19000101 (nor after `business_date` when given)."""
    return bool(ids_valid(pd.Series([value], dtype=object), business_date).iloc[0])


_SHAPED = re.compile(r"[0-9]{17}[0-9X]|[0-9]{15}")
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) digits of ASCII strings of exactly `width` characters (`X` gives 40)."""
    return (np.array(values.tolist(), dtype=f"S{width}").view(np.uint8).reshape(-1, width).astype(np.int64)
            - ord("0")) if len(values) else np.zeros((0, width), dtype=np.int64)


def _real_birth(y: np.ndarray, m: np.ndarray, d: np.ndarray, business_date: str) -> np.ndarray:
    """Whether CCYY MM DD is a real calendar date from 19000101 (to `business_date` when given)."""
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_ok = (m >= 1) & (m <= 12)
    days = np.where((m == 2) & ~leap, 28, _DAYS[np.where(month_ok, m, 0)])
    ok = month_ok & (d >= 1) & (d <= days)
    value = y * 10000 + m * 100 + d
    ok &= value >= 19000101
    bd = re.sub(r"[^0-9]", "", business_date or "")[:8]
    return ok & (value <= int(bd)) if len(bd) == 8 else ok


def ids_valid(s: pd.Series, business_date: str = "") -> pd.Series:
    """`id_valid` over a column, in array operations: most IDs of a delivery are distinct, and one Python
    call per value took about 20 s of a 1M-person historical date's quality gates (py-spy)."""
    raw = as_str(s)
    vals = raw.to_numpy(dtype=object).copy()
    shaped = raw.str.fullmatch(_SHAPED.pattern).to_numpy(dtype=bool)
    for i in np.flatnonzero(~shaped):  # spaces, full-width digits, lower-case x: normalised one by one
        vals[i] = normalise_id(vals[i])
        shaped[i] = _SHAPED.fullmatch(vals[i]) is not None
    out = np.zeros(len(vals), dtype=bool)
    lengths = np.zeros(len(vals), dtype=np.int64)
    lengths[shaped] = [len(v) for v in vals[shaped]]
    for width in (18, 15):
        rows = np.flatnonzero(shaped & (lengths == width))
        m = _digit_matrix(vals[rows], width)
        if width == 18:
            total = (m[:, :17] * np.array(_WEIGHTS)).sum(axis=1)
            check_ok = np.array(list(_CHECK))[total % 11] == np.array([v[17] for v in vals[rows]], dtype=object)
            y, mo, d = (m[:, 6:10] * [1000, 100, 10, 1]).sum(1), m[:, 10] * 10 + m[:, 11], m[:, 12] * 10 + m[:, 13]
        else:
            check_ok = np.ones(len(rows), dtype=bool)
            y, mo, d = 1900 + m[:, 6] * 10 + m[:, 7], m[:, 8] * 10 + m[:, 9], m[:, 10] * 10 + m[:, 11]
        out[rows] = check_ok & _real_birth(y, mo, d, business_date)
    return pd.Series(out, index=s.index, dtype=bool)
