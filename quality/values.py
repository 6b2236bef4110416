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
    v = normalise_id(value)
    if len(v) == 18 and v[:17].isdigit() and v[:17].isascii():
        birth = v[6:14]
        total = sum(int(c) * w for c, w in zip(v[:17], _WEIGHTS))
        if v[17] != _CHECK[total % 11]:
            return False
    elif len(v) == 15 and v.isdigit() and v.isascii():
        birth = "19" + v[6:12]
    else:
        return False
    real = _real_date(birth[:4], birth[4:6], birth[6:8])
    if not real or real < "19000101":
        return False
    return not (business_date and real > business_date)


def ids_valid(s: pd.Series, business_date: str = "") -> pd.Series:
    """`id_valid` over a column (computed once per distinct value); a bool Series."""
    return _map_unique(as_str(s), lambda v: id_valid(v, business_date)).astype(bool)
