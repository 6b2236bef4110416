"""Quality rates (spec section 6: valid ID rate, link rate, key field completeness). Pure pandas.

Every rate `r` comes with `r_base`, the number of roles it was measured on; a rate whose base is 0
is `None` (nothing to measure), never 0 or 1.

Rates over record roles (`quality_rates`, on the roles frame of docs/architecture.md):

- `valid_id_rate`: share of roles with `id_status` `VALID18`/`VALID15` among the roles whose table
  requires an ID (every table but `resident`, `Table.id_required`). Roles holding another document
  (`OTHER_DOC`: passports, permits) are left out: a passport is not a bad citizen ID. An empty ID
  counts as not valid.
- `valid_id_rate_filled`: the same among roles with a filled citizen ID, in every table (this is
  the rate that says something about `resident`, where the ID may be empty).
- `link_rate`: share of roles whose link has `PPFS` other than `UNMATCHED`/`POSSIBLE`; a role with
  no link row counts as not linked. `None` when no links frame is given.
- `completeness_XM` / `completeness_ID` / `completeness_CSRQ`: share of roles whose delivered name /
  ID field / birth date is non-empty (after trimming). Birth counts only for roles whose table has a
  birth field for them (a family-planning husband `ZF` has none).
- `key_field_completeness`: share of roles with all three (those that apply) non-empty.

`by_table` holds the same rates per table (`BH`), `by_department` per department (`BM`), for the
reconciliation reports. `rate_warnings` (quality/thresholds.py) is re-exported here.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from catalog import DEPARTMENTS, TABLES
from catalog import table as catalogue_table
from catalog.base import MEASURE_FLAGS
from catalog.codes import CITIZEN_ID_DOC
from quality.thresholds import rate_warnings  # noqa: F401 - re-exported (callers import it from here)
from quality.values import column, ids_valid

VALID_ID_STATUSES = ("VALID18", "VALID15")
NOT_LINKED = ("UNMATCHED", "POSSIBLE")

# Tables whose ID field may be empty, and "table|role" pairs the catalogue gives no birth field.
_ID_OPTIONAL = [t.name for t in TABLES.values() if not t.id_required]
_NO_BIRTH = [f"{t.name}|{r.code}" for t in TABLES.values() for r in t.roles if not r.birth]


def _rate(hit: pd.Series, base: pd.Series, weight: pd.Series | None) -> tuple[float | None, int]:
    if weight is None:
        n, h = int(base.sum()), int((hit & base).sum())
    else:
        n, h = int(weight[base].sum()), int(weight[hit & base].sum())
    return (round(float(h) / n, 6) if n else None), n


def _rates_of(m: pd.DataFrame, with_links: bool) -> dict[str, Any]:
    """The rates of one set of measured roles (columns built by the callers below). With a column `n`,
    each row stands for `n` roles (`rates_from_counts`)."""
    weight = m["n"] if "n" in m.columns else None
    out: dict[str, Any] = {"roles": int(len(m)) if weight is None else int(weight.sum())}
    everyone = pd.Series(True, index=m.index)
    measures = {
        "valid_id_rate": (m["id_ok"], m["citizen"] & m["id_required"]),
        "valid_id_rate_filled": (m["id_ok"], m["citizen"] & m["has_id"]),
        "link_rate": (m["linked"], everyone) if with_links else None,
        "key_field_completeness": (m["has_name"] & m["has_id"] & (m["has_birth"] | ~m["birth_applies"]), everyone),
        "completeness_XM": (m["has_name"], everyone),
        "completeness_ID": (m["has_id"], everyone),
        "completeness_CSRQ": (m["has_birth"], m["birth_applies"]),
    }
    for name, measure in measures.items():
        if measure is None:
            out[name], out[f"{name}_base"] = None, 0
        else:
            out[name], out[f"{name}_base"] = _rate(*measure, weight)
    return out


def _with_breakdown(m: pd.DataFrame, with_links: bool) -> dict[str, Any]:
    out = _rates_of(m, with_links)
    present = set(m["table"])
    order = [t for t in TABLES if t in present] + sorted(present - set(TABLES))
    out["by_table"] = {t: _rates_of(m[m["table"] == t], with_links) for t in order}
    present = set(m["dept"])
    order = [d for d in DEPARTMENTS if d in present] + sorted(present - set(DEPARTMENTS))
    out["by_department"] = {d: _rates_of(m[m["dept"] == d], with_links) for d in order}
    return out


def role_measures(roles: pd.DataFrame) -> pd.DataFrame:
    """What each role contributes to the rates: `table`, `dept` and the flags `MEASURE_FLAGS` (the base
    keeps them per role, so the city's rates are a GROUP BY: `rates_from_counts`)."""
    tables = column(roles, "BH").str.strip()
    jobs = column(roles, "JS").str.strip()
    status = column(roles, "id_status").str.strip()
    m = pd.DataFrame(index=roles.index)
    m["table"] = tables
    dept = column(roles, "BM").str.strip()
    m["dept"] = dept.where(dept.ne(""), tables.map({t.name: t.dept for t in TABLES.values()}).fillna(""))
    m["id_required"] = ~tables.isin(_ID_OPTIONAL)
    m["citizen"] = status.ne("OTHER_DOC")
    m["id_ok"] = status.isin(VALID_ID_STATUSES)
    m["has_name"] = column(roles, "XM").str.strip().ne("")
    m["has_id"] = column(roles, "GMSFHM").str.strip().ne("")
    m["has_birth"] = column(roles, "CSRQ").str.strip().ne("")
    m["birth_applies"] = ~(tables + "|" + jobs).isin(_NO_BIRTH)
    return m


def rates_from_counts(counts: pd.DataFrame) -> dict[str, Any]:
    """The rates of `quality_rates` from counted roles: one row per distinct (`table`, `dept`, flags of
    `MEASURE_FLAGS`, `linked`) with `n` roles."""
    m = counts.copy()
    for c in MEASURE_FLAGS + ("linked",):
        m[c] = m[c].astype(bool)
    m["n"] = m["n"].astype("int64")
    return _with_breakdown(m, True)


def quality_rates(roles: pd.DataFrame, links: pd.DataFrame | None = None, role_key=None, link_key=None) -> dict[str, Any]:
    """City-wide rates over the roles frame, with a per-table breakdown (`by_table`). `role_key` /
    `link_key`: the `BM|BH|YWZJ|JS` strings of the roles / links (row-aligned) when the caller has them."""
    m = role_measures(roles)
    with_links = links is not None
    if with_links:
        m["linked"] = _linked(roles, links, role_key, link_key)
    return _with_breakdown(m, with_links)


def _linked(roles: pd.DataFrame, links: pd.DataFrame, role_key=None, link_key=None) -> pd.Series:
    """Per role: does it have a link whose PPFS counts as linked?"""
    if roles.empty:
        return pd.Series(False, index=roles.index, dtype=bool)
    def keys(frame: pd.DataFrame) -> pd.Series:  # one string per role: hashing it beats a MultiIndex
        return column(frame, "BM") + "|" + column(frame, "BH") + "|" + column(frame, "YWZJ") + "|" + column(frame, "JS")

    ppfs = column(links, "PPFS").str.strip()
    lk = keys(links) if link_key is None else pd.Series(link_key, index=links.index)
    good = lk[(ppfs.ne("") & ~ppfs.isin(NOT_LINKED)).to_numpy()]
    if good.empty:
        return pd.Series(False, index=roles.index, dtype=bool)
    rk = keys(roles) if role_key is None else pd.Series(role_key, index=roles.index)
    return pd.Series(rk.isin(good).to_numpy(dtype=bool), index=roles.index, dtype=bool)


def delivery_rates(df: pd.DataFrame, table: str, business_date: str = "") -> dict[str, Any]:
    """Valid ID rate and completeness of name / ID / birth of one parsed delivery.

    Measured per record role as the catalogue defines roles (a marriage row gives `NF` and `NV`; a
    family-planning husband counts only when his name or ID is filled), on `I`/`U` rows of an
    incremental file (a `D` row carries only the key). An ID counts as a citizen ID when the role
    has no document type field or its type is `111` or empty; it is valid when well formed per
    spec section 4 (check digit, real embedded birth date from 19000101, not after `business_date`
    when given). Same rate names as `quality_rates` (no `link_rate`), plus `rows`.
    Raises `KeyError` for a table the catalogue does not know.
    """
    tbl = catalogue_table(table)
    rows = df
    if "CZLX" in df.columns:
        rows = df[column(df, "CZLX").str.strip().str.upper().ne("D")]
    parts = []
    for role in tbl.roles:
        name = column(rows, role.name).str.strip()
        ident = column(rows, role.id)
        doc = column(rows, role.doc_type).str.strip() if role.doc_type else pd.Series(CITIZEN_ID_DOC, index=rows.index)
        part = pd.DataFrame(
            {
                "table": tbl.name,
                "id_required": tbl.id_required,
                "citizen": doc.isin([CITIZEN_ID_DOC, ""]),
                "id_ok": ids_valid(ident, business_date),
                "has_name": name.ne(""),
                "has_id": ident.str.strip().ne(""),
                "has_birth": column(rows, role.birth).str.strip().ne("") if role.birth else False,
                "birth_applies": bool(role.birth),
            },
            index=rows.index,
        )
        if role.code == "ZF":
            part = part[part["has_name"] | part["has_id"]]
        parts.append(part)
    m = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for c in ("id_required", "citizen", "id_ok", "has_name", "has_id", "has_birth", "birth_applies"):
        m[c] = m[c].astype(bool) if c in m else pd.Series(dtype=bool)
    out = {"rows": int(len(rows))}
    out.update(_rates_of(m, with_links=False))
    del out["link_rate"], out["link_rate_base"]
    return out
