"""Record roles: one row per person mentioned in a live record (spec section 3).

A single-person table yields one role (`SELF`) per row; a marriage row yields `NF` and `NV`; a
family-planning row yields `SELF` and, when its husband's name or ID is filled, `ZF`. The roles frame
carries each role's raw values beside their normalised forms (docs/architecture.md, Roles frame).
"""
from __future__ import annotations

import pandas as pd

from catalog import ACTIVE_STATUS, TABLES, Role, Table
from linkage.ids import analyse_ids
from linkage.normalise import normalise_date, normalise_name, normalise_sex

ROLE_COLUMNS = [
    "BM", "BH", "YWZJ", "JS", "XM", "ZJLX", "GMSFHM", "XB", "CSRQ", "MZ",
    "name", "name_key", "id_norm", "id_status", "id18", "id_damage", "id_prefix", "id_birth", "id_sex",
    "sex", "birth", "region", "address", "ZT", "active", "_ts",
]

# Order in which tables found persons and are trusted for attributes: police first.
TABLE_ORDER = ("hukou", "temp", "disabled", "dibao", "women", "resident", "marriage")


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name and name in frame.columns:
        return frame[name].astype(str)
    return pd.Series("", index=frame.index, dtype=object)


def _raw_roles(frame: pd.DataFrame, tbl: Table, role: Role) -> pd.DataFrame:
    """The raw values of one role of one table, before normalisation."""
    out = pd.DataFrame(
        {
            "BM": tbl.dept,
            "BH": tbl.name,
            "YWZJ": _col(frame, tbl.key),
            "JS": role.code,
            "XM": _col(frame, role.name),
            "ZJLX": _col(frame, role.doc_type) if role.doc_type else "111",
            "GMSFHM": _col(frame, role.id),
            "XB": _col(frame, role.sex),
            "CSRQ": _col(frame, role.birth),
            "MZ": _col(frame, role.ethnicity),
            "region": _col(frame, role.region).str.strip(),
            "address": _col(frame, role.address),
            "ZT": _col(frame, tbl.status_field).str.strip(),
            "_ts": _col(frame, "_ts"),
        },
        index=frame.index,
    )
    if role.code == "ZF":  # a husband role exists only when its name or ID is filled
        filled = out["XM"].str.strip().ne("") | out["GMSFHM"].str.strip().ne("")
        out = out[filled]
    status = ACTIVE_STATUS[tbl.name]
    out["active"] = True if status is None else out["ZT"].eq(status)
    return out


def build_roles(sources: dict[str, pd.DataFrame], business_date: str) -> pd.DataFrame:
    """Every live record role of every table, raw and normalised (docs/architecture.md)."""
    parts = []
    for name in TABLE_ORDER:
        frame = sources.get(name)
        if frame is None or frame.empty:
            continue
        if "_deleted" in frame.columns:
            frame = frame[frame["_deleted"] != "1"]
        tbl = TABLES[name]
        for role in tbl.roles:
            parts.append(_raw_roles(frame, tbl, role))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "active" else object) for c in ROLE_COLUMNS})
    roles = pd.concat(parts, ignore_index=True)
    roles["ZJLX"] = roles["ZJLX"].str.strip()
    ids = analyse_ids(roles["GMSFHM"], business_date, doc_type=roles["ZJLX"])
    names = normalise_name(roles["XM"])
    roles = pd.concat([roles, ids, names], axis=1)
    roles["sex"] = normalise_sex(roles["XB"])
    roles["birth"] = normalise_date(roles["CSRQ"])
    return roles[ROLE_COLUMNS].reset_index(drop=True)
