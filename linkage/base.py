"""The person base (实有人口基础库): RKIDs and each person's core attributes.

`derive_person_attributes(roles, links)` gives one row per RKID that has roles: `GMSFHM`, `XM`, `XB`,
`CSRQ`, `MZ` follow the person's reference record — police hukou (active before cancelled), else
police temp (active before cancelled), else the most trusted other source (disabled, dibao, women,
resident, marriage); within one rank the most recently changed record (`_ts`), then the smallest
record key. An attribute the reference record lacks is taken from the next record in that order that
has it, except `XB`/`CSRQ`, which first fall back to the values embedded in the person's ID.

Values: `GMSFHM` is the normalised 18-digit ID (`id18`; a 15-digit number upgraded) of the first
record in that order with a well-formed ID, else its normalised document number; `XM` the normalised
name (whitespace removed, dots unified; traditional characters kept — the register keeps them);
`XB` `1`/`2`/`0`/`9`; `CSRQ` `CCYYMMDD`; `MZ` the 2-digit code as sent. The residence columns
(`JZXZ`, `HJDZ_XZQH`, `SJJZD_XZQH`, `RHZT`, `SWBZ`, `LYBM`) follow the statuses of the person's
records (`person_attributes`, spec section 6).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from catalog import DEPARTMENTS
from catalog.base import PERSON_COLUMNS

CORE_ATTRIBUTES = ["GMSFHM", "XM", "XB", "CSRQ", "MZ"]
RESIDENCE_ATTRIBUTES = ["JZXZ", "HJDZ_XZQH", "SJJZD_XZQH", "RHZT", "SWBZ", "LYBM"]
LINK_KEY = ["BM", "BH", "YWZJ", "JS"]


def role_keys(frame: pd.DataFrame) -> np.ndarray:
    """`BM|BH|YWZJ|JS` of every row: one string per record role (as `store.db.role_key` writes it)."""
    k = frame[LINK_KEY].astype(str)
    return (k["BM"] + "|" + k["BH"] + "|" + k["YWZJ"] + "|" + k["JS"]).to_numpy(dtype=object)


def usable_ids(roles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(the citizen ID of each role, "" for none; whether it carries another document's number): the two
    kinds of number the linker groups roles by (`linkage.link._id_clusters`), one definition for the ID
    stage, the blocks, the daily neighbourhood and the bins. A citizen ID is a well-formed one
    (`VALID18`/`VALID15`) with its 18-digit form; another document is `OTHER_DOC` with a number."""
    status = roles["id_status"].astype(str).to_numpy(dtype=object)
    id18 = roles["id18"].astype(str).to_numpy(dtype=object)
    id_norm = roles["id_norm"].astype(str).to_numpy(dtype=object)
    citizen = np.isin(status, ["VALID18", "VALID15"]) & (id18 != "")
    return np.where(citizen, id18, "").astype(object), (status == "OTHER_DOC") & (id_norm != "")


def id_group_keys(roles: pd.DataFrame, usable: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The ID group of each role, as the linker groups roles: its citizen ID, or `DOC:<ZJLX>|<number>` for
    another document, "" for none. `usable`: `usable_ids(roles)`, when the caller has it already."""
    citizen_id, doc = usable if usable is not None else usable_ids(roles)
    out = citizen_id.copy()
    if doc.any():
        zjlx = roles["ZJLX"].astype(str).str.strip().to_numpy(dtype=object)
        out[doc] = "DOC:" + zjlx[doc] + "|" + roles["id_norm"].astype(str).to_numpy(dtype=object)[doc]
    return out


# reference-record rank: police hukou active, hukou cancelled, temp active, temp cancelled, then others
OTHER_TRUST = ("disabled", "dibao", "women", "resident", "marriage")


def rkid_for(bm: str, bh: str, ywzj: str, js: str, salt: int = 0) -> str:
    """`RK` + 16 upper-case hex digits of sha256("BM|BH|YWZJ|JS") (salted `#n` only on a collision)."""
    text = f"{bm}|{bh}|{ywzj}|{js}" + (f"#{salt}" if salt else "")
    return "RK" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16].upper()


def empty_persons() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PERSON_COLUMNS})


def reference_rank(roles: pd.DataFrame) -> np.ndarray:
    """Rank of each role as a source of person attributes (0 = best)."""
    bh = roles["BH"].to_numpy(dtype=object)
    active = roles["active"].to_numpy(dtype=bool) if "active" in roles else np.ones(len(roles), bool)
    rank = np.full(len(roles), 99, dtype=np.int64)
    rank[(bh == "hukou") & active] = 0
    rank[(bh == "hukou") & ~active] = 1
    rank[(bh == "temp") & active] = 2
    rank[(bh == "temp") & ~active] = 3
    for i, t in enumerate(OTHER_TRUST):
        rank[bh == t] = 4 + i
    return rank


def _order_codes(values: np.ndarray) -> np.ndarray:
    """Integer codes that sort like the values."""
    codes, _ = pd.factorize(np.asarray(values, dtype=object), sort=True)
    return codes.astype(np.int64)


def derive_person_attributes(roles: pd.DataFrame, links: pd.DataFrame, sources=None) -> pd.DataFrame:
    """Core attributes of every person that has roles (see module docstring); `PERSON_COLUMNS` minus
    status/merged_into/issued, residence columns empty. `sources` is accepted for symmetry and unused."""
    if roles.empty or links.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ["RKID"] + CORE_ATTRIBUTES + RESIDENCE_ATTRIBUTES})
    r = roles.merge(links[LINK_KEY + ["RKID"]], on=LINK_KEY, how="inner")
    return attributes_for(r, r["RKID"].to_numpy(dtype=object))


def attributes_for(roles: pd.DataFrame, rkid: np.ndarray, canonical: bool = False) -> pd.DataFrame:
    """`derive_person_attributes` for roles already aligned with their RKIDs (vectorised).
    `canonical`: the rows are already sorted by table, YWZJ, JS (saves sorting the keys again)."""
    cols = ["RKID"] + CORE_ATTRIBUTES + RESIDENCE_ATTRIBUTES
    n = len(roles)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})

    def col(c):
        return roles[c].to_numpy(dtype=object) if c in roles else np.full(n, "", dtype=object)

    rk_codes, rk_uniq = pd.factorize(np.asarray(rkid, dtype=object))  # grouping only: no string sort
    rank = reference_rank(roles)
    ts = _order_codes(col("_ts"))
    if canonical:
        order = np.lexsort((np.arange(n), -ts, rank, rk_codes))
    else:
        order = np.lexsort((_order_codes(col("JS")), _order_codes(col("YWZJ")), -ts, rank, rk_codes))
    g = rk_codes[order]
    m = len(rk_uniq)

    id18 = col("id18")
    ident = np.where(id18 != "", id18, np.where(col("id_status") == "OTHER_DOC", col("id_norm"), ""))
    mz = pd.Series(col("MZ")).str.strip().fillna("").to_numpy(dtype=object)
    values = {"_id": ident, "_xm": col("name"), "_xb": col("sex"), "_csrq": col("birth"), "_mz": mz}
    first_pos = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # reference record of each person

    def ref(c):
        return values[c][order][first_pos]

    def coalesce(c):
        """First non-empty value in reference order ("" if none)."""
        v = values[c][order]
        ok = v != ""
        out = np.full(m, "", dtype=object)
        gg, vv = g[ok], v[ok]
        if len(gg):
            _, first = np.unique(gg, return_index=True)
            out[gg[first]] = vv[first]
        return out

    gm = coalesce("_id")
    xm = ref("_xm")
    xm = np.where(xm != "", xm, coalesce("_xm"))
    mzv = ref("_mz")
    mzv = np.where(mzv != "", mzv, coalesce("_mz"))
    gms = pd.Series(gm, dtype=object)
    is18 = gms.str.fullmatch(r"[0-9]{17}[0-9X]").fillna(False).to_numpy(dtype=bool)
    id_sex = np.where(is18, np.where(gms.str[16:17].isin(list("13579")).to_numpy(), "1", "2"), "")
    id_birth = np.where(is18, gms.str[6:14].fillna("").to_numpy(dtype=object), "")
    xb = ref("_xb")
    xb = np.where(np.isin(xb, ["1", "2"]), xb, "")
    xb = np.where(xb != "", xb, id_sex)
    xb = np.where(xb != "", xb, coalesce("_xb"))
    cs = ref("_csrq")
    cs = np.where(cs != "", cs, id_birth)
    cs = np.where(cs != "", cs, coalesce("_csrq"))
    out = pd.DataFrame({"RKID": np.asarray(rk_uniq, dtype=object), "GMSFHM": gm, "XM": xm, "XB": xb.astype(object),
                        "CSRQ": cs.astype(object), "MZ": mzv})
    for c in RESIDENCE_ATTRIBUTES:
        out[c] = ""
    out = out.iloc[np.argsort(out["RKID"].to_numpy(dtype=str), kind="stable")].reset_index(drop=True)
    return out[cols].astype(object)


def person_attributes(persons: pd.DataFrame, roles: pd.DataFrame, links: pd.DataFrame,
                      role_key: np.ndarray | None = None, link_key: np.ndarray | None = None) -> pd.DataFrame:
    """JZXZ, HJDZ_XZQH, SJJZD_XZQH, RHZT, SWBZ, LYBM of every live person, from its linked roles.
    `role_key` / `link_key`: `role_keys(roles)` / `role_keys(links)` when the caller has them."""
    p = persons.copy()
    # each role's person, by role key (a merge on four object columns costs ~10 s at 2 M roles)
    lk = pd.Series(links["RKID"].to_numpy(dtype=object), index=role_keys(links) if link_key is None else link_key)
    rkid = lk[~lk.index.duplicated(keep="last")].reindex(role_keys(roles) if role_key is None else role_key)
    rkid = rkid.to_numpy(dtype=object)
    has = pd.notna(rkid)
    r = roles.loc[has, ["BM", "BH", "active", "ZT", "ZJLX", "region"]].reset_index(drop=True)
    r["RKID"] = rkid[has]
    # one factorisation of the person ids; every flag below is a bincount over those codes
    codes = pd.Index(p["RKID"]).get_indexer(r["RKID"])
    r = r[codes >= 0]
    codes = codes[codes >= 0]
    n = len(p)

    def flag(mask: pd.Series) -> np.ndarray:
        return np.bincount(codes[mask.to_numpy()], minlength=n) > 0

    def region_of(*masks: pd.Series) -> np.ndarray:
        """The first non-empty region among the person's roles matching the masks, in mask order."""
        out = np.full(n, "", dtype=object)
        for mask in masks:
            sel = (mask & (r["region"] != "")).to_numpy()
            first = pd.Series(r["region"].to_numpy()[sel]).groupby(codes[sel]).first()
            todo = out[first.index.to_numpy()] == ""
            out[first.index.to_numpy()[todo]] = first.to_numpy()[todo]
        return out

    is_ = {bh: (r["BH"] == bh) for bh in ("hukou", "temp", "resident")}
    h = flag(is_["hukou"] & r["active"])
    t = flag(is_["temp"] & r["active"])
    tf = flag(is_["temp"] & r["active"] & ~r["ZJLX"].isin(["111", ""]))
    dead = flag(is_["hukou"] & (r["ZT"] == "3"))
    rin = flag(is_["resident"] & (r["ZT"] == "1"))
    rout = flag(is_["resident"] & (r["ZT"] == "2"))
    p["JZXZ"] = np.select([h, tf, t], ["1", "4", "2"], "3")
    p["HJDZ_XZQH"] = region_of(is_["hukou"] & r["active"])
    p["SJJZD_XZQH"] = region_of(is_["resident"] & (r["ZT"] == "1"), is_["temp"] & r["active"],
                                is_["hukou"] & r["active"], r["BH"] != "")
    p["RHZT"] = np.select([h & rin, ~h & rin, h & rout & ~rin], ["1", "2", "3"], "9")
    p["SWBZ"] = np.where(dead, "1", "0")
    # source departments, in catalogue order, comma separated (one flag per department)
    lybm = pd.Series("", index=p.index, dtype=object)
    for d in DEPARTMENTS:
        lybm = lybm + np.where(flag(r["BM"] == d), d + ",", "")
    p["LYBM"] = lybm.str.rstrip(",")
    return p
