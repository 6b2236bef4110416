"""Citizen ID numbers (公民身份号码, GB 11643-1999): normalisation, validation, damage, repair variants.

Everything here is vectorised over pandas Series (millions of rows): the per-character work runs on
numpy code-point matrices (`U18` arrays viewed as `uint32`), never in a per-row Python loop.

Spec (section 4, "Precisely"): IDs are judged after normalisation (NFKC, whitespace removed, `x`→`X`).
An embedded birth date is impossible when it is not a real date, is before 19000101 or after the
business date. A record is in at most one of FORMAT / CHECKSUM / VALID15; a 15-digit number with an
impossible date is FORMAT.

Decisions (see also docs in the functions):

* `id_norm` = NFKC, then every whitespace character removed (Python's Unicode whitespace, which
  includes U+3000 and NBSP, plus the zero-width characters U+200B–U+200D, U+2060, U+FEFF), then
  upper-cased (so `x`→`X`; upper-casing the rest only matters for passport-like numbers, which are
  matched case-insensitively too). Nothing else is stripped: a leading apostrophe or a `.0` tail stays
  in `id_norm` and makes the ID FORMAT, as the spec's definition of normalisation says.
* `OTHER_DOC`: `doc_type` (NFKC, whitespace removed) given and neither `""` nor `111`, and the number
  not empty (an empty number is `EMPTY` whatever its document type). `OTHER_DOC` rows get no
  `id18`/`id_birth`/`id_sex`/`id_damage`/`id_prefix`.
* Excel damage (`id_damage`, `id_prefix`):
  - `EXCEL_SCI`: a scientific-notation number (`3.20102E+17`, `3.20102e+17`, `320102E12`,
    `3.20102199001011E+17`) whose integer value has 15 or 18 digits. `id_prefix` = the mantissa
    digits, at most 15 (what a spreadsheet or float keeps). Status FORMAT.
    Caveat for repair: a *displayed* mantissa (`3.20102E+17`) is rounded, so its last digit may be
    one too high (…5-9 rounded up); a consumer that wants certainty can drop the last digit.
  - `.0` tail: a pure 15- or 18-digit number followed by `.0` (`320102199001011234.0`) has been
    through a float. Status stays FORMAT (spec-literal); `id_damage` = `EXCEL_SCI` (same family:
    the number was converted to a floating-point number), `id_prefix` = the first 15 digits (float64
    keeps 15 significant digits exactly; later digits may be garbage).
  - `EXCEL_000`: 18 digits ending in `000`, embedded date possible, check digit wrong (so status
    CHECKSUM). `id_prefix` = the first 15 digits. (An ID whose truncated form happens to pass the
    check — 1 in 11 — is indistinguishable from a valid one and stays VALID18.)
  - `id_prefix` is always a prefix of the *18-digit* form of the ID: for a damaged 15-digit legacy
    number the century `19` is inserted after the 6-digit region (`3.2010290E+14` → `3201021990`).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = [
    "WEIGHTS",
    "CHECK_CHARS",
    "check_digit",
    "upgrade_15",
    "analyse_ids",
    "normalise_id_text",
    "mask_id",
    "mask_ids",
    "id_variants",
    "ID_COLUMNS",
]

# GB 11643-1999: W_i = 2^(17-i) mod 11 for the 17 body digits; the check character has weight 1.
WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_WEIGHTS18 = np.append(WEIGHTS, 1)
# check character indexed by (sum of weighted body digits) mod 11
CHECK_CHARS = "10X98765432"
_CHECK_CODES = np.array([ord(c) for c in CHECK_CHARS], dtype=np.uint32)

ID_COLUMNS = ["id_norm", "id_status", "id18", "id_damage", "id_prefix", "id_birth", "id_sex"]

_ZERO, _NINE, _X = ord("0"), ord("9"), ord("X")
_WS_RE = r"[\s\u200b-\u200d\u2060\ufeff]+"
# scientific notation after normalisation (upper-cased): mantissa, optional fraction, exponent
_SCI_RE = r"^([0-9]+)(?:\.([0-9]*))?E\+?([0-9]{1,3})$"
_DOT0_RE = r"^([0-9]{15}|[0-9]{18})\.0+$"

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


# --------------------------------------------------------------------------------------------- helpers
def as_str(raw: pd.Series) -> pd.Series:
    """Object Series of Python str, `""` for missing (None/NaN/NA)."""
    arr = raw.to_numpy(dtype=object) if raw.dtype != object else raw.to_numpy()
    if pd.api.types.infer_dtype(arr, skipna=False) == "string":  # C-level scan: already clean
        return pd.Series(arr, index=raw.index, dtype=object, copy=True)
    s = pd.Series(arr, index=raw.index, dtype=object, copy=True)
    s = s.where(s.notna(), "")
    return s.astype(str).astype(object)


def _char_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint32 code points of strings that all have exactly `width` characters."""
    if len(values) == 0:
        return np.zeros((0, width), dtype=np.uint32)
    return np.asarray(values, dtype=f"U{width}").view(np.uint32).reshape(-1, width)


def _ascii_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8 matrix of the first `width` characters; non-ASCII characters become 0xFF
    (never a digit, `X` or padding), missing tail characters 0. A quarter of the memory of code points."""
    if len(values) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    out = np.empty((len(values), width), dtype=np.uint8)
    step = 262_144  # chunked so the uint32 intermediate stays small
    for start in range(0, len(values), step):
        u = _char_matrix(values[start:start + step], width)
        np.minimum(u, 0xFF, out=u)
        out[start:start + step] = u
    return out


def _matrix_to_str(m: np.ndarray) -> np.ndarray:
    """(n, w) uint32 code points → object array of str."""
    n, w = m.shape
    if n == 0:
        return np.empty(0, dtype=object)
    return np.ascontiguousarray(m, dtype=np.uint32).view(f"U{w}").reshape(n).astype(object)


def _is_digit(m: np.ndarray) -> np.ndarray:
    return (m >= _ZERO) & (m <= _NINE)


def _valid_date(y: np.ndarray, mo: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Real Gregorian calendar date (vectorised over int arrays)."""
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    mo_c = np.clip(mo, 0, 12)
    dim = _DAYS_IN_MONTH[mo_c] + ((mo_c == 2) & leap)
    return (y >= 1) & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= dim)


def _digits_to_int(m: np.ndarray) -> np.ndarray:
    """(n, k) matrix of ASCII digit code points → int64 value per row."""
    out = np.zeros(m.shape[0], dtype=np.int64)
    for j in range(m.shape[1]):  # k ≤ 8 columns, vectorised over rows
        out = out * 10 + (m[:, j].astype(np.int64) - _ZERO)
    return out


def id_shaped(values: np.ndarray) -> np.ndarray:
    """Which strings have a citizen ID's shape: 17 digits and a digit or X, or 15 digits, nothing more."""
    m = _ascii_matrix(np.asarray(values, dtype=object), 19)
    digit = _is_digit(m)
    ok18 = digit[:, :17].all(axis=1) & (digit[:, 17] | (m[:, 17] == _X)) & (m[:, 18] == 0)
    ok15 = digit[:, :15].all(axis=1) & (m[:, 15] == 0)
    return ok18 | ok15


def _possible_birth(ccyymmdd: np.ndarray, business_date: int | None) -> np.ndarray:
    """(n, 8) CCYYMMDD code points → bool: real date, ≥ 19000101 and (if given) ≤ business date."""
    y = _digits_to_int(ccyymmdd[:, 0:4])
    mo = _digits_to_int(ccyymmdd[:, 4:6])
    d = _digits_to_int(ccyymmdd[:, 6:8])
    ok = _valid_date(y, mo, d)
    val = y * 10000 + mo * 100 + d
    ok &= val >= 19000101
    if business_date is not None:
        ok &= val <= business_date
    return ok


def _check_codes(body: np.ndarray) -> np.ndarray:
    """(n, 17) digit code points → (n,) code point of the GB 11643 check character."""
    total = np.zeros(body.shape[0], dtype=np.int32)
    for j in range(17):  # 17 column operations, vectorised over rows (integer matmul is not BLAS)
        total += (body[:, j].astype(np.int32) - _ZERO) * int(WEIGHTS[j])
    return _CHECK_CODES[total % 11]


def _business_int(business_date: str | int | None) -> int | None:
    if business_date is None or str(business_date).strip() == "":
        return None
    bd = re.sub(r"[^0-9]", "", str(business_date))
    if len(bd) < 8:
        raise ValueError(f"business_date must be CCYYMMDD, got {business_date!r}")
    return int(bd[:8])


# ------------------------------------------------------------------------------------------ public API
def normalise_id_text(raw: pd.Series) -> pd.Series:
    """NFKC, all whitespace (incl. inner, ideographic, NBSP and zero-width) removed, upper-cased."""
    s = as_str(raw)
    if len(s) == 0:
        return s
    index = s.index
    s = s.reset_index(drop=True).str.normalize("NFKC")  # positional while we patch subsets
    # only strings that are not purely alphanumeric can contain whitespace: regex on those only
    odd = np.flatnonzero(~s.str.isalnum().astype(bool).to_numpy())
    if len(odd):
        s.iloc[odd] = s.iloc[odd].str.replace(_WS_RE, "", regex=True).to_numpy(dtype=object)
    # upper-case only where something other than digits is present
    lower = np.flatnonzero(~s.str.isdigit().astype(bool).to_numpy())
    if len(lower):
        s.iloc[lower] = s.iloc[lower].str.upper().to_numpy(dtype=object)
    s.index = index
    return s


def check_digit(id17: pd.Series) -> pd.Series:
    """GB 11643 (ISO 7064 MOD 11-2) check character for 17-digit bodies; `""` for anything else.

    Input is taken as is (no normalisation); values that are not exactly 17 ASCII digits give `""`.
    """
    return _map_digit_rows(id17, 17, lambda m: _matrix_to_str(_check_codes(m)[:, None]))


def upgrade_15(id15: pd.Series) -> pd.Series:
    """15-digit legacy ID → 18 digits: `19` inserted before the YYMMDD, check digit appended.

    Values that are not exactly 15 ASCII digits give `""`. The embedded date is not checked here
    (`analyse_ids` does that).
    """
    return _map_digit_rows(id15, 15, lambda m: _matrix_to_str(_upgrade_matrix(m)))


def _map_digit_rows(raw: pd.Series, width: int, fn) -> pd.Series:
    """`fn` applied to the digit matrix of the values that are exactly `width` ASCII digits; `""` elsewhere."""
    s = as_str(raw)
    out = np.full(len(s), "", dtype=object)
    cand = (s.str.len() == width).to_numpy()
    if cand.any():
        m = _char_matrix(s.to_numpy()[cand], width)
        ok = _is_digit(m).all(axis=1)
        out[np.flatnonzero(cand)[ok]] = fn(m[ok])
    return pd.Series(out, index=s.index, dtype=object)


def _upgrade_matrix(m15: np.ndarray) -> np.ndarray:
    n = m15.shape[0]
    m18 = np.empty((n, 18), dtype=np.uint32)
    m18[:, 0:6] = m15[:, 0:6]
    m18[:, 6] = ord("1")
    m18[:, 7] = ord("9")
    m18[:, 8:17] = m15[:, 6:15]
    m18[:, 17] = _check_codes(m18[:, :17])
    return m18


def _id_lengths(m19: np.ndarray) -> np.ndarray:
    """Each ID's length from its (n, 19) code-point matrix (19: 19 characters or more)."""
    nz = m19 != 0
    lengths = np.where(nz[:, 18], 19, 19 - np.argmax(nz[:, ::-1], axis=1))
    lengths[~nz.any(axis=1)] = 0
    return lengths


def _other_documents(doc_type: pd.Series | None, empty: np.ndarray) -> np.ndarray:
    """Rows with a number whose document type is given and is not a citizen ID (`""` or `111`)."""
    n = len(empty)
    if doc_type is None:
        return np.zeros(n, dtype=bool)
    if len(doc_type) != n:
        raise ValueError("doc_type must have one value per ID")
    dt = normalise_id_text(doc_type)  # aligned by position
    return (~dt.isin(["", "111"])).to_numpy() & ~empty


def _judge_18(m19: np.ndarray, vals: np.ndarray, c18: np.ndarray, bdate: int | None, out: dict) -> None:
    """18 characters (17 digits + digit/X): VALID18 with its birth date and sex, or CHECKSUM; a wrong
    check digit after a `000` tail is EXCEL_000. Writes the rows `c18` of the `out` columns."""
    if not c18.any():
        return
    rows = np.flatnonzero(c18)
    m = m19[rows, :18]
    kind_ok = _is_digit(m[:, :17]).all(axis=1) & (_is_digit(m[:, 17]) | (m[:, 17] == _X))
    date_ok = _possible_birth(m[:, 6:14], bdate)
    check_ok = _check_codes(m[:, :17]) == m[:, 17]
    well = kind_ok & date_ok
    valid = well & check_ok
    bad_check = well & ~check_ok
    out["id_status"][rows[valid]] = "VALID18"
    out["id_status"][rows[bad_check]] = "CHECKSUM"
    out["id18"][rows[valid]] = vals[rows[valid]]
    out["id_birth"][rows[valid]] = _matrix_to_str(m[valid, 6:14])
    out["id_sex"][rows[valid]] = np.where((m[valid, 16] - _ZERO) % 2 == 1, "1", "2")
    # Excel: 15 significant digits kept, tail turned to 000
    e000 = bad_check & (m[:, 15] == _ZERO) & (m[:, 16] == _ZERO) & (m[:, 17] == _ZERO)
    out["id_damage"][rows[e000]] = "EXCEL_000"
    out["id_prefix"][rows[e000]] = _matrix_to_str(m[e000, :15])


def _judge_15(m19: np.ndarray, c15: np.ndarray, bdate: int | None, out: dict) -> None:
    """15 digits with a possible birth date: a legacy number, VALID15, with its 18-digit form, birth
    date and sex. Writes the rows `c15` of the `out` columns."""
    if not c15.any():
        return
    rows = np.flatnonzero(c15)
    m = m19[rows, :15]
    kind_ok = _is_digit(m).all(axis=1)
    rows, m = rows[kind_ok], m[kind_ok]
    up = _upgrade_matrix(m)
    ok = _possible_birth(up[:, 6:14], bdate)
    rows, up, m = rows[ok], up[ok], m[ok]
    out["id_status"][rows] = "VALID15"
    out["id18"][rows] = _matrix_to_str(up)
    out["id_birth"][rows] = _matrix_to_str(up[:, 6:14])
    out["id_sex"][rows] = np.where((m[:, 14] - _ZERO) % 2 == 1, "1", "2")


def _sci_prefix(sub: pd.Series) -> pd.Series | None:
    """The known 18-digit-form prefix of each scientific-notation number whose integer value has 15 or
    18 digits (None: no such number)."""
    sci = sub.str.extract(_SCI_RE)
    sci = sci[sci[0].notna()]
    if not len(sci):
        return None
    frac = sci[1].fillna("")
    mant = (sci[0] + frac).str.lstrip("0")  # significant digits as written
    # value = mant × 10^(exp − len(frac)): digits of its integer part
    int_digits = mant.str.len() + sci[2].astype(int) - frac.str.len()
    ok = (int_digits.isin([15, 18]) & (mant.str.len() > 0)).to_numpy()
    mant, int_digits = mant[ok], int_digits[ok]
    if not len(mant):
        return None
    return _prefix18(mant.str[:15], int_digits == 15)


def _dot0_prefix(sub: pd.Series) -> pd.Series | None:
    """The known 18-digit-form prefix of each 15- or 18-digit number with a float's `.0` tail (None: none)."""
    dot0 = sub.str.extract(_DOT0_RE)[0]
    dot0 = dot0[dot0.notna()]
    if not len(dot0):
        return None
    return _prefix18(dot0.str[:15], dot0.str.len() == 15)


def _excel_damage(vals: np.ndarray, rest: np.ndarray, out: dict) -> None:
    """Excel scientific notation and float `.0` tails among the rows `rest` (still FORMAT): EXCEL_SCI
    and the digits known. Works on a Series indexed by row position so results map straight back."""
    if not rest.any():
        return
    rest_pos = np.flatnonzero(rest)
    sub = pd.Series(vals[rest_pos], index=rest_pos, dtype=object)
    # cheap pre-filter: only strings containing E or . can be numbers in these forms
    maybe = (sub.str.contains("E", regex=False) | sub.str.contains(".", regex=False)).to_numpy()
    sub = sub[maybe]
    if not len(sub):
        return
    for known_prefix in (_sci_prefix, _dot0_prefix):
        pre = known_prefix(sub)
        if pre is not None:
            out["id_damage"][pre.index.to_numpy()] = "EXCEL_SCI"
            out["id_prefix"][pre.index.to_numpy()] = pre.to_numpy(dtype=object)


def analyse_ids(raw: pd.Series, business_date: str, doc_type: pd.Series | None = None) -> pd.DataFrame:
    """Normalise and judge citizen ID numbers; one output row per input row, same index.

    Columns (all str, `""` when not applicable): `id_norm`, `id_status` (`EMPTY`, `VALID18`,
    `VALID15`, `CHECKSUM`, `FORMAT`, `OTHER_DOC`), `id18`, `id_damage` (`EXCEL_SCI`, `EXCEL_000`),
    `id_prefix`, `id_birth` (CCYYMMDD), `id_sex` (`1`/`2`). See the module docstring for the rules.
    """
    bdate = _business_int(business_date)
    norm = normalise_id_text(raw)
    n = len(norm)
    index = norm.index
    vals = norm.to_numpy()
    out = {"id_norm": vals, "id_status": np.full(n, "FORMAT", dtype=object)}  # the columns, filled in below
    out.update({c: np.full(n, "", dtype=object) for c in ID_COLUMNS if c not in out})

    # one (n, 19) code-point matrix: truncation at 19 is harmless, only lengths 15 and 18 matter
    m19 = _ascii_matrix(vals, 19)
    lengths = _id_lengths(m19)
    empty = (vals == "") if n else np.zeros(0, dtype=bool)
    other = _other_documents(doc_type, empty)
    c18 = (lengths == 18) & ~other
    c15 = (lengths == 15) & ~other
    _judge_18(m19, vals, c18, bdate, out)
    _judge_15(m19, c15, bdate, out)
    _excel_damage(vals, ~c18 & ~c15 & ~empty & ~other, out)
    out["id_status"][empty] = "EMPTY"
    out["id_status"][other] = "OTHER_DOC"
    return pd.DataFrame({c: pd.Series(out[c], index=index, dtype=object) for c in ID_COLUMNS}, index=index)


def _prefix18(pre: pd.Series, legacy: pd.Series) -> pd.Series:
    """Digits known for a 15-digit legacy number, expressed as a prefix of its 18-digit form."""
    legacy = legacy & (pre.str.len() > 6)
    if legacy.any():
        pre = pre.copy()
        pre[legacy] = pre[legacy].str[:6] + "19" + pre[legacy].str[6:]
    return pre


def mask_id(s: str) -> str:
    """For logs: first 4 + `*` × (len − 8) + last 4 (`3201**********123X`); shorter than 9 → all `*`."""
    s = "" if s is None else str(s)
    if len(s) <= 8:
        return "*" * len(s)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_ids(series: pd.Series) -> pd.Series:
    """Vectorised `mask_id` (one slice-replace per distinct length)."""
    s = as_str(series)
    out = pd.Series(np.full(len(s), "", dtype=object), index=s.index, dtype=object)
    if len(s) == 0:
        return out
    lengths = s.str.len()
    for length in pd.unique(lengths.to_numpy()):
        sel = (lengths == length).to_numpy()
        if length <= 8:
            out[sel] = "*" * int(length)
        else:
            out[sel] = s[sel].str.slice_replace(4, int(length) - 4, "*" * (int(length) - 8))
    return out


# ------------------------------------------------------------------------------------------- repair
def id_variants(id_norm: pd.Series, business_date: str | None = None) -> pd.DataFrame:
    """Valid IDs one keystroke away from each invalid 18-character candidate.

    For every value of `id_norm` that has 18 characters of the right kind (17 digits + digit/X) but
    is not a valid ID, returns every single-character substitution (17 body positions × 9 other
    digits, and the check position × the 10 other check characters) and every adjacent
    transposition (including body digit 17 ↔ check digit) that is a valid ID: correct check digit
    and a possible embedded birth date (real date, ≥ 19000101, and ≤ `business_date` if given).

    Columns: `src` (index label of the input row), `variant` (the 18-character ID), `kind`
    (`DIGIT` / `TRANSPOSE`). Rows ordered by input position, then changed position, DIGIT before
    TRANSPOSE. Valid inputs produce nothing (MOD 11-2 detects every single substitution and every
    adjacent transposition, so no valid ID is one keystroke from another).

    Vectorised: instead of enumerating 170 candidates per ID, the one digit per position that
    fixes the weighted sum is solved for directly (mod 11 arithmetic) on the whole matrix.
    """
    bdate = _business_int(business_date)
    s = as_str(id_norm)
    empty = pd.DataFrame({"src": pd.Series(dtype=object), "variant": pd.Series(dtype=object),
                          "kind": pd.Series(dtype=object)})
    if len(s) == 0:
        return empty
    cand = (s.str.len() == 18).to_numpy()
    if not cand.any():
        return empty
    rows = np.flatnonzero(cand)
    m = _char_matrix(s.to_numpy()[rows], 18)
    kind_ok = _is_digit(m[:, :17]).all(axis=1) & (_is_digit(m[:, 17]) | (m[:, 17] == _X))
    rows, m = rows[kind_ok], m[kind_ok]
    a = m.astype(np.int64) - _ZERO
    a[:, 17] = np.where(m[:, 17] == _X, 10, a[:, 17])
    total = (a * _WEIGHTS18).sum(axis=1) % 11
    bad = total != 1
    rows, m, a, total = rows[bad], m[bad], a[bad], total[bad]
    if len(rows) == 0:
        return empty

    inv_w = np.array([pow(int(w), -1, 11) for w in WEIGHTS], dtype=np.int64)
    need = (1 - total) % 11  # what the weighted sum must change by, 1..10

    # substitutions in the 17 body positions: W_i (d - a_i) ≡ need  →  d - a_i ≡ need · W_i⁻¹
    r = (need[:, None] * inv_w[None, :]) % 11  # (n, 17), 1..10
    d = a[:, :17] + r
    d = np.where(d <= 9, d, d - 11)
    sub_ok = (d >= 0) & (d <= 9)
    si, sp = np.nonzero(sub_ok)
    v_sub = m[si].copy()
    v_sub[np.arange(len(si)), sp] = (d[si, sp] + _ZERO).astype(np.uint32)

    # substitution of the check character: always exactly one other value fixes the sum
    v_chk = m.copy()
    v_chk[:, 17] = _check_codes(m[:, :17])
    ci, cp = np.arange(len(rows)), np.full(len(rows), 17)

    # adjacent transpositions i ↔ i+1 (i = 0..16; 16 ↔ 17 needs a digit check character)
    delta = (a[:, 1:] - a[:, :-1]) * (_WEIGHTS18[:-1] - _WEIGHTS18[1:])[None, :]  # (n, 17)
    tr_ok = (a[:, 1:] != a[:, :-1]) & ((total[:, None] + delta) % 11 == 1)
    tr_ok[:, 16] &= a[:, 17] != 10
    ti, tp = np.nonzero(tr_ok)
    v_tr = m[ti].copy()
    k = np.arange(len(ti))
    v_tr[k, tp], v_tr[k, tp + 1] = m[ti, tp + 1], m[ti, tp]

    variants = np.concatenate([v_sub, v_chk, v_tr])
    which = np.concatenate([si, ci, ti])
    pos = np.concatenate([sp, cp, tp])
    kind_code = np.concatenate([np.zeros(len(si), np.int8), np.zeros(len(ci), np.int8), np.ones(len(ti), np.int8)])

    keep = _possible_birth(variants[:, 6:14], bdate)
    variants, which, pos, kind_code = variants[keep], which[keep], pos[keep], kind_code[keep]
    order = np.lexsort((kind_code, pos, which))
    variants, which, kind_code = variants[order], which[order], kind_code[order]

    labels = s.index.to_numpy()[rows[which]]
    return pd.DataFrame(
        {
            "src": pd.Series(labels),
            "variant": pd.Series(_matrix_to_str(variants), dtype=object),
            "kind": pd.Series(np.where(kind_code == 1, "TRANSPOSE", "DIGIT").astype(object), dtype=object),
        }
    )


# ----------------------------------------------------------------------------------------------------
# One keystroke apart: a broken number and the valid ID it was typed from (`linkage.repair` repairs
# one digit replaced, or the final X, and two adjacent characters swapped). A daily date looks, for
# every valid ID it reaches, for the broken numbers near it (store/scope.py); listing every neighbour
# (some 300 per ID) was its slowest lookup at 1M, so the role index keeps for each broken number three
# keys, and two numbers one keystroke apart share one of them unless the keystroke straddles a cut,
# which `_straddling_swaps` lists.

NEAR_COLUMNS = ("near_a", "near_b", "near_c")  # = catalog.base.ROLE_INDEX_COLUMNS
_CUTS = {18: (9, 13), 15: (7, 11)}  # the three parts: [0, i), [i, j), [j, n)


def keystroke_neighbours(number: str) -> list[str]:
    """Every string one keystroke from `number`: one digit (or the final X of 18) replaced, or two
    adjacent characters swapped (the damage `linkage.repair` repairs, looked at from the valid side)."""
    out = []
    chars = "0123456789X" if len(number) == 18 else "0123456789"
    for i, ch in enumerate(number):
        for d in (chars if i == len(number) - 1 else "0123456789"):
            if d != ch:
                out.append(number[:i] + d + number[i + 1:])
    for i in range(len(number) - 1):
        if number[i] != number[i + 1]:
            out.append(number[:i] + number[i + 1] + number[i] + number[i + 2:])
    return out


def near_keys(number: str) -> tuple[str, str, str]:
    """The keys (`NEAR_COLUMNS`) a number of 15 or 18 characters shares with every number one keystroke
    away that is not a swap across a cut: the number without its first, middle or last part."""
    cuts = _CUTS.get(len(number))
    if cuts is None:
        return "", "", ""
    i, j = cuts
    return number[i:], number[:j], number[:i] + number[j:]


def _straddling_swaps(number: str) -> list[str]:
    cuts = _CUTS.get(len(number), ())
    return [number[:c - 1] + number[c] + number[c - 1] + number[c + 1:] for c in cuts if number[c - 1] != number[c]]


def _one_keystroke(valid: str, other: str) -> bool:
    """Whether `other` is in `keystroke_neighbours(valid)`."""
    if len(valid) != len(other) or valid == other:
        return False
    diff = [k for k in range(len(valid)) if valid[k] != other[k]]
    if len(diff) == 1:
        k = diff[0]
        return other[k].isdigit() or (other[k] == "X" and len(valid) == 18 and k == 17)
    return (len(diff) == 2 and diff[1] == diff[0] + 1 and valid[diff[0]] == other[diff[1]]
            and valid[diff[1]] == other[diff[0]])


class NearIDs:
    """The valid IDs `ids` (18 digits) and, for those born in the 1900s, their 15-digit forms, as the broken
    numbers one keystroke from them can be looked up: `keys()` per column of the role index (`near_a`,
    `near_b`, `near_c`, and `broken_id` for the swaps across a cut), `near(broken)` to keep exactly
    the numbers `keystroke_neighbours` lists."""

    def __init__(self, ids):
        self.forms: set[str] = set()
        for v in ids:
            self.forms.add(v)
            if v[6:8] == "19":
                self.forms.add(v[:6] + v[8:17])
        self.by_key: dict[tuple[str, str], set[str]] = {}
        for f in self.forms:
            for col, key in zip(NEAR_COLUMNS, near_keys(f)):
                self.by_key.setdefault((col, key), set()).add(f)
            for s in _straddling_swaps(f):
                self.by_key.setdefault(("broken_id", s), set()).add(f)

    def keys(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {c: set() for c in (*NEAR_COLUMNS, "broken_id")}
        for col, key in self.by_key:
            out[col].add(key)
        return out

    def near(self, broken: str) -> bool:
        cands = set().union(*(self.by_key.get((c, k), ()) for c, k in zip(NEAR_COLUMNS, near_keys(broken))),
                            self.by_key.get(("broken_id", broken), ()))
        return any(_one_keystroke(v, broken) for v in cands)
