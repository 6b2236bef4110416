"""Linking record roles to persons (比对关联, spec section 3) and keeping RKIDs stable.

`link_roles(roles, persons_prev, links_prev, decisions, business_date, config=None) -> LinkResult`

Each run clusters ALL current roles deterministically, then maps clusters to RKIDs:

1. ID clusters: roles with a well-formed citizen ID (`VALID18`/`VALID15`) group by `id18`; other
   documents by (`ZJLX`, `id_norm`). Police records sharing an ID whose names clearly differ are
   different people (重号, DUP_ID): the group is split and each non-police role joins the police
   sub-cluster it agrees with best. A non-police role whose ID is held by police records none of which
   agrees on name or birth date (ID_MISMATCH) is not linked by ID; nor is a role of a police-less
   group that clearly differs from the group's most trusted record. `ID_EXACT` when the raw
   `GMSFHM` is the canonical ID itself, `ID_NORMALIZED` otherwise.
2. ID repair (`linkage.repair`): `ID_REPAIRED`. Also a valid ID ending in `000` (Excel kept 15 digits
   and the tail happens to pass the check digit) moves to the known ID of its first 15 digits that name
   and birth date confirm, unless police records hold both numbers.
3. Fuzzy fallback (`linkage.fuzzy`) for every role still without a cluster. Round 1 weighs each query
   against the ID clusters only: posterior ≥ upper joins (`FUZZY`). Round 2 lets those stand for their
   clusters: ≥ upper to a cluster joins it (`FUZZY`); strong matches between remaining queries form new
   persons (founder `UNMATCHED`, the others `FUZZY`); the grey zone (lower ≤ p < upper) joins its best
   candidate (`POSSIBLE`); the rest are new persons (`UNMATCHED`).
4. RKID continuity: a cluster takes the RKID its roles had in `links_prev`; when it carries several,
   the oldest issued (ties: lowest RKID) survives and the others are retired (`merged_into`, MERGED);
   an RKID carried by several clusters stays with the one holding most of its roles (ties: earliest
   role). A cluster without an RKID gets `rkid_for(founding role)`. Retired RKIDs are never reused.
5. Decisions: `SAME` pins the role to the RKID (`MANUAL`, 1.0); `NOT_SAME` detaches the role from
   that RKID and re-links it to its best other candidate (or a person of its own). Decisions always win.

Everything is a function of the data sorted canonically (table order, `YWZJ`, `JS`), so the result
does not depend on input row order and a re-run reproduces it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from linkage import explain
from linkage import fuzzy as fz
from linkage import names as nm
from linkage.base import (CORE_ATTRIBUTES, LINK_KEY, PERSON_COLUMNS, attributes_for, empty_persons, id_group_keys, rkid_for,
                           role_keys, usable_ids)
from linkage.ids import id_shaped
from linkage.repair import excel_tail, repair_ids

CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "linkage.json"
LINK_COLUMNS = ["BM", "BH", "YWZJ", "JS", "RKID", "PPFS", "PPDF", "PPMX"]
EVENT_COLUMNS = ["kind", "RKID", "BM", "BH", "YWZJ", "JS", "field", "old", "new"]
POLICE_TABLES = ("hukou", "temp")
DEFAULT_TABLE_ORDER = ("hukou", "temp", "disabled", "dibao", "women", "resident", "marriage")


@dataclass
class LinkResult:
    links: pd.DataFrame
    persons: pd.DataFrame
    events: pd.DataFrame
    stats: dict = field(default_factory=dict)
    model: fz.FSModel | None = None  # the Fellegi–Sunter model the run used (trained or given)
    link_keys: np.ndarray | None = None  # role_keys(links), when the run has them anyway (incremental)


def load_config(path: str | Path | None = None) -> dict:
    """The linking configuration (`config/linkage.json` unless `path`), validated."""
    with open(path or CONFIG_PATH, encoding="utf-8") as f:
        cfg = json.load(f)
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    """Raise ValueError when the configuration cannot drive a run."""
    problems = []
    if not cfg.get("version"):
        problems.append("version missing")
    for section in ("ppdf", "id_link", "repair", "fuzzy"):
        if section not in cfg:
            problems.append(f"section {section!r} missing")
    f = cfg.get("fuzzy", {})
    th = f.get("thresholds", {})
    if not (0.0 < float(th.get("lower", -1)) <= float(th.get("upper", -1))):
        problems.append("fuzzy.thresholds must satisfy 0 < lower <= upper")
    for b in f.get("blocking", []):
        bad = [k for k in list(b.get("keys", [])) + list(b.get("queries_missing", [])) if k not in fz.BLOCK_FIELDS]
        if not b.get("keys") or bad:
            problems.append(f"blocking pass {b.get('name', '?')!r}: keys must be among {fz.BLOCK_FIELDS}, got {bad or 'none'}")
    for kind in ("default_m", "default_u"):
        for feat in fz.LEARNED:
            v = f.get(kind, {}).get(feat)
            if v is None or len(v) != fz.N_LEVELS[feat]:
                problems.append(f"fuzzy.{kind}.{feat} needs {fz.N_LEVELS[feat]} values")
    for kind, feat in (("id_bits", "id"), ("partner_bits", "partner")):
        if len(f.get(kind, {})) != fz.N_LEVELS[feat]:
            problems.append(f"fuzzy.{kind} needs {fz.N_LEVELS[feat]} levels")
    if problems:
        raise ValueError("invalid linkage configuration: " + "; ".join(problems))


def _empty_links() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64 if c == "PPDF" else object) for c in LINK_COLUMNS})


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})


def _canonical(roles: pd.DataFrame, table_order) -> pd.DataFrame:
    """Roles sorted in founding order: police hukou, police temp, other tables; then YWZJ, JS."""
    r = roles.reset_index(drop=True)
    for c in LINK_KEY + ["XM", "GMSFHM", "name", "name_key", "id_norm", "id_status", "id18", "id_damage",
                         "id_prefix", "id_birth", "id_sex", "sex", "birth", "region", "address", "ZJLX", "MZ", "_ts"]:
        if c not in r:
            r[c] = ""
        elif r[c].hasnans:
            r[c] = r[c].fillna("")
    order = {t: i for i, t in enumerate(table_order)}
    tord = r["BH"].map(order).fillna(len(order)).to_numpy(np.int64)
    codes = [pd.factorize(r[c].to_numpy(dtype=object), sort=True)[0] for c in ("BH", "YWZJ", "JS")]
    idx = np.lexsort((codes[2], codes[1], codes[0], tord))
    r = r.iloc[idx].reset_index(drop=True)
    r["_tord"] = tord[idx]
    if "active" not in r:
        r["active"] = True
    r["active"] = r["active"].astype(bool)
    return r


def _isin(values, universe) -> np.ndarray:
    """Hash-based membership (np.isin sorts or loops on object arrays)."""
    u = list(universe) if isinstance(universe, (set, frozenset)) else universe
    return pd.Series(np.asarray(values, dtype=object)).isin(u).to_numpy(dtype=bool)


def _labels_by_first(keys: pd.Series | np.ndarray) -> np.ndarray:
    """Integer labels numbered by first occurrence (rows are in canonical order)."""
    codes, _ = pd.factorize(np.asarray(keys, dtype=object))
    return codes.astype(np.int64)


# ------------------------------------------------------------------------------------ ID clusters
def _clearly_other(nl: np.ndarray, bl: np.ndarray, ic: dict) -> np.ndarray:
    """A record is clearly not the holder of the ID: its name disagrees and so does its birth date;
    without a birth date to compare (a husband's role), its name must differ outright (at most the
    surname agrees)."""
    with_birth = (bl >= 0) & (nl >= 0) & (nl < int(ic["compatible_name_level"])) & (bl < int(ic["compatible_birth_level"]))
    without = (bl < 0) & (nl >= 0) & (nl < int(ic.get("compatible_name_level_without_birth", 2)))
    return with_birth | without


def _clearly_other_rows(R: pd.DataFrame, cfg: dict):
    """`_clearly_other` for pairs of rows of `R` (name and birth levels computed on demand)."""
    name_key = R["name_key"].to_numpy(dtype=object)
    bmat = fz._fixed_bytes(R["birth"].astype(str).to_numpy(dtype=object), 8)

    def clearly_other(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _clearly_other(nm.name_levels(name_key[a], name_key[b]), fz.birth_levels(bmat[a], bmat[b]),
                              cfg["id_link"])
    return clearly_other


def _id_clusters(R: pd.DataFrame, cfg: dict) -> dict:
    """Stage 1. Returns cluster (-1 = none), ppfs, split flags, mismatch flags, labelled pairs."""
    ic = cfg["id_link"]
    n = len(R)
    id18 = R["id18"].to_numpy(dtype=object)
    id_norm = R["id_norm"].to_numpy(dtype=object)
    bh = R["BH"].to_numpy(dtype=object)
    police = np.isin(bh, POLICE_TABLES)
    usable = usable_ids(R)
    citizen = usable[0] != ""
    key = id_group_keys(R, usable)
    has = key != ""
    gid = np.full(n, -1, dtype=np.int64)
    gid[has] = _labels_by_first(key[has])
    sub = np.zeros(n, dtype=np.int64)  # sub-cluster within the group (DUP_ID)
    detached = np.zeros(n, dtype=bool)  # ID not trusted for this role (mismatch / clearly other person)
    split_groups = np.zeros(0, dtype=np.int64)

    name_key = R["name_key"].to_numpy(dtype=object)
    birth = R["birth"].astype(str).to_numpy(dtype=object)
    bmat = fz._fixed_bytes(birth, 8)

    def levels(a: np.ndarray, b: np.ndarray):
        return nm.name_levels(name_key[a], name_key[b]), fz.birth_levels(bmat[a], bmat[b])

    # --- DUP_ID: police records of one ID that are clearly different people
    pol_rows = np.flatnonzero(has & police)
    if len(pol_rows):
        pg = pd.DataFrame({"row": pol_rows, "g": gid[pol_rows], "nk": name_key[pol_rows]})
        multi = pg.groupby("g")["nk"].transform("nunique") > 1
        pg = pg[multi]
        if len(pg):
            pairs = pg.merge(pg, on="g", suffixes=("_a", "_b"))
            pairs = pairs[pairs["row_a"] < pairs["row_b"]]
            a = pairs["row_a"].to_numpy(np.int64)
            b = pairs["row_b"].to_numpy(np.int64)
            nl, bl = levels(a, b)
            differ = (nl >= 0) & (nl <= int(ic["split_name_level"]))
            if ic.get("split_requires_birth_diff", False):
                differ &= bl < 4
            same = ~differ
            # police sub-clusters: connected components of "same person" pairs within the group
            rows_u = pg["row"].to_numpy(np.int64)
            pos = {r: i for i, r in enumerate(rows_u)}
            ia = np.array([pos[x] for x in a[same]], dtype=np.int64)
            ib = np.array([pos[x] for x in b[same]], dtype=np.int64)
            g = coo_matrix((np.ones(len(ia)), (ia, ib)), shape=(len(rows_u), len(rows_u)))
            _, comp = connected_components(g, directed=False)
            # number sub-clusters within each group by their first row
            cdf = pd.DataFrame({"row": rows_u, "g": pg["g"].to_numpy(), "comp": comp})
            cdf["first"] = cdf.groupby("comp")["row"].transform("min")
            cdf["sub"] = cdf.groupby("g")["first"].rank(method="dense").astype(np.int64) - 1
            sub[cdf["row"].to_numpy()] = cdf["sub"].to_numpy()
            nsub = cdf.groupby("g")["sub"].nunique()
            split_groups = nsub[nsub > 1].index.to_numpy(np.int64)

    # --- non-police roles of groups held by police: agree with a police record, or ID_MISMATCH
    grp_has_police = np.zeros(gid.max() + 2 if n else 1, dtype=bool)
    grp_has_police[gid[has & police]] = True
    np_rows = np.flatnonzero(has & ~police & grp_has_police[np.maximum(gid, 0)] & (gid >= 0))
    if len(np_rows):
        left = pd.DataFrame({"row": np_rows, "g": gid[np_rows]})
        right = pd.DataFrame({"prow": pol_rows, "g": gid[pol_rows]})
        pr = left.merge(right, on="g")
        a = pr["row"].to_numpy(np.int64)
        b = pr["prow"].to_numpy(np.int64)
        nl, bl = levels(a, b)
        clear_diff = _clearly_other(nl, bl, ic)
        pr["ok"] = ~clear_diff
        pr["score"] = np.where(nl < 0, 0, nl) * 10 + np.where(bl < 0, 0, bl)
        pr = pr.sort_values(["row", "ok", "score", "prow"], ascending=[True, False, False, True], kind="mergesort")
        best = pr.drop_duplicates("row")
        ok_rows = best["row"].to_numpy(np.int64)
        sub[ok_rows] = sub[best["prow"].to_numpy(np.int64)]
        bad = ok_rows[~best["ok"].to_numpy(dtype=bool)]
        detached[bad] = True

    # --- groups without police: roles clearly different from the group's most trusted record
    np_groups = has & ~grp_has_police[np.maximum(gid, 0)]
    rows_np = np.flatnonzero(np_groups)
    if len(rows_np):
        # the holder is the record that agrees with the birth date and sex embedded in the ID; then the
        # most trusted table (rows are in trust order)
        id_birth = R["id_birth"].astype(str).to_numpy(dtype=object)
        id_sex = R["id_sex"].astype(str).to_numpy(dtype=object)
        sex = R["sex"].astype(str).to_numpy(dtype=object)
        score = (2 * ((birth == id_birth) & (birth != "")) + ((sex == id_sex) & (sex != ""))).astype(np.int64)
        df = pd.DataFrame({"row": rows_np, "g": gid[rows_np], "score": score[rows_np]})
        ref = df.sort_values(["g", "score", "row"], ascending=[True, False, True], kind="mergesort").drop_duplicates("g")
        df["ref"] = df["g"].map(ref.set_index("g")["row"])
        df = df[df["row"] != df["ref"]]
        if len(df):
            a = df["row"].to_numpy(np.int64)
            b = df["ref"].to_numpy(np.int64)
            nl, bl = levels(a, b)
            detached[a[_clearly_other(nl, bl, ic)]] = True

    anchored = has & ~detached
    cluster = np.full(n, -1, dtype=np.int64)
    if anchored.any():
        ck = pd.Series(gid[anchored]).astype(str) + ":" + pd.Series(sub[anchored]).astype(str)
        cluster[anchored] = _labels_by_first(ck.to_numpy(dtype=object))
    canon = np.where(citizen, id18, id_norm)
    raw = R["GMSFHM"].astype(str).to_numpy(dtype=object)
    ppfs = np.full(n, "", dtype=object)
    ppfs[anchored] = np.where(raw[anchored] == canon[anchored], "ID_EXACT", "ID_NORMALIZED")
    in_split = np.isin(gid, split_groups) & has
    return {"cluster": cluster, "ppfs": ppfs, "anchored": anchored, "detached": detached, "citizen": citizen,
            "in_split": in_split, "gid": gid}


SPOUSES = {("women", "SELF"): "ZF", ("women", "ZF"): "SELF", ("marriage", "NF"): "NV", ("marriage", "NV"): "NF"}


def _partner_rows(R: pd.DataFrame) -> np.ndarray:
    """Row of each role's spouse in the same record (women SELF/ZF, marriage NF/NV), -1 if none."""
    n = len(R)
    out = np.full(n, -1, dtype=np.int64)
    bh = R["BH"].to_numpy(dtype=object)
    sel = np.flatnonzero(np.isin(bh, ["women", "marriage"]))
    if len(sel) == 0:
        return out
    df = pd.DataFrame({"row": sel, "BH": bh[sel], "YWZJ": R["YWZJ"].to_numpy(dtype=object)[sel],
                       "JS": R["JS"].to_numpy(dtype=object)[sel]})
    df["other"] = [SPOUSES.get((b, j), "") for b, j in zip(df["BH"], df["JS"])]
    hit = df.merge(df[["BH", "YWZJ", "JS", "row"]].rename(columns={"JS": "other", "row": "prow"}),
                   on=["BH", "YWZJ", "other"])
    out[hit["row"].to_numpy(np.int64)] = hit["prow"].to_numpy(np.int64)
    return out


def query_id_evidence(R: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The ID evidence each role brings as a fuzzy query (no trusted ID): `B` and its broken ID (15/18
    characters, wrong checksum or format), `P` and a damaged ID's known prefix (Excel's 3.20102E+17
    keeps one rounded digit too many beyond 6), `""` none. Also `linkage.incremental`'s query forms."""
    n = len(R)
    status = R["id_status"].astype(str).to_numpy(dtype=object)
    damage = R["id_damage"].astype(str).to_numpy(dtype=object)
    id_norm = R["id_norm"].astype(str).to_numpy(dtype=object)
    prefix = R["id_prefix"].astype(str).to_numpy(dtype=object)
    idk = np.full(n, "", dtype=object)
    idv = np.full(n, "", dtype=object)
    b = np.isin(status, ["CHECKSUM", "FORMAT"]) & (damage == "") & id_shaped(id_norm)
    idk[b], idv[b] = "B", id_norm[b]
    pr = (damage != "") & (prefix != "")
    pv = pd.Series(prefix[pr], dtype=object)
    cut = (damage[pr] == "EXCEL_SCI") & (pv.str.len().to_numpy() > 6)
    idk[pr] = "P"
    idv[pr] = np.where(cut, pv.str[:-1].to_numpy(dtype=object), pv.to_numpy(dtype=object))
    return idk, idv


def borrowed_place(R: pd.DataFrame, partner: np.ndarray) -> dict[str, np.ndarray]:
    """Region and address columns where a husband named in his wife's family-planning record (`ZF`)
    lives in her household: he gets its place when he has none (`prepare` overrides; empty: nobody)."""
    zf = np.flatnonzero((R["BH"].to_numpy(dtype=object) == "women") & (R["JS"].to_numpy(dtype=object) == "ZF")
                        & (partner >= 0))
    out = {}
    if len(zf):
        for c in ("region", "address"):
            col = R[c].to_numpy(dtype=object).copy()
            empty = col[zf] == ""
            col[zf[empty]] = col[partner[zf[empty]]]
            out[c] = col
    return out


def _labelled_pairs(cluster: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(founder row, member row) of every ID cluster with several roles."""
    rows = np.flatnonzero(usable & (cluster >= 0))
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c = cluster[rows]
    first = pd.Series(rows).groupby(c).transform("min").to_numpy(np.int64)
    keep = first != rows
    return first[keep], rows[keep]


# ------------------------------------------------------------------------------- fuzzy assignment
def _posterior(cand: pd.DataFrame, log2_prior: float) -> pd.DataFrame:
    """p of each (q, entity): prior odds × Bayes factor, normalised over the query's candidates
    (the complement being "none of them"). Sorted by q, p desc, entity."""
    if cand.empty:
        return cand.assign(p=np.zeros(0))
    o = fz.pair_odds(log2_prior, cand["bits"].to_numpy())
    denom = 1.0 + pd.Series(o).groupby(cand["q"].to_numpy()).transform("sum").to_numpy()
    out = cand.assign(p=o / denom)
    return out.sort_values(["q", "p", "entity"], ascending=[True, False, True], kind="mergesort").reset_index(drop=True)


def _components(a: np.ndarray, b: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `nodes` in components of size > 1 of the graph (a, b), and each one's founder (min row)."""
    pos = pd.Series(np.arange(len(nodes)), index=nodes)
    ia = pos.reindex(a).to_numpy(np.int64)
    ib = pos.reindex(b).to_numpy(np.int64)
    g = coo_matrix((np.ones(len(ia)), (ia, ib)), shape=(len(nodes), len(nodes)))
    ncomp, comp = connected_components(g, directed=False)
    multi = np.bincount(comp, minlength=ncomp)[comp] > 1
    rows, comp = nodes[multi], comp[multi]
    founder = pd.Series(rows).groupby(comp).transform("min").to_numpy(np.int64) if len(rows) else rows
    return rows, founder


def _whole_components(rows: np.ndarray, founder: np.ndarray, qa: np.ndarray, qb: np.ndarray,
                      clearly_other) -> tuple[np.ndarray, np.ndarray]:
    """A person formed by strong pairs among ID-less roles is checked as a whole, not only pair by pair:
    a chain A~B~C can join two people whom no pair compares. A member clearly other than its component's
    founder (`_clearly_other`: name and birth date both disagree) and not strongly paired with it directly
    (a pair's own score outweighs the crude test) leaves the component; the members that
    left form components of their own from their pairs among themselves (the same check once more), and a
    member left alone becomes a person of its own (not a grey-zone candidate of the person it was cut from:
    the check says it is not that person)."""
    if clearly_other is None or not len(rows):
        return rows, founder
    width = int(max(qa.max(), qb.max())) + 1
    direct = np.isin(np.minimum(rows, founder) * width + np.maximum(rows, founder),
                     np.minimum(qa, qb) * width + np.maximum(qa, qb))
    out = (founder == rows) | direct  # founders stay, and so does a member its own strong pair joins to them
    out |= ~clearly_other(rows, founder)
    if out.all():
        return rows, founder
    cut = rows[~out]
    keep_edge = np.isin(qa, cut) & np.isin(qb, cut)
    r2, f2 = _components(qa[keep_edge], qb[keep_edge], cut) if keep_edge.any() else (rows[:0], founder[:0])
    if len(r2):
        ok2 = ((f2 == r2) | ~clearly_other(r2, f2)
               | np.isin(np.minimum(r2, f2) * width + np.maximum(r2, f2), np.minimum(qa, qb) * width + np.maximum(qa, qb)))
        r2, f2 = r2[ok2], f2[ok2]
    alone = np.setdiff1d(cut, r2)  # their own founders
    rows = np.concatenate([rows[out], r2, alone])
    founder = np.concatenate([founder[out], f2, alone])
    order = np.argsort(rows, kind="stable")
    return rows[order], founder[order]


def _assign_queries(cand: pd.DataFrame, queries: np.ndarray, entity: np.ndarray, n_anchor: int,
                    cluster: np.ndarray, upper: float, lower: float, log2_prior: float,
                    clearly_other=None) -> dict:
    """Turn scored candidates (q, entity, bits) into clusters and methods for the query rows.

    Round 1 weighs each query against the ID clusters only (they are distinct persons): p ≥ upper
    joins (FUZZY). Round 2 lets the queries joined in round 1 stand for their clusters and weighs
    the rest against ID clusters and the remaining queries: p ≥ upper to a cluster joins it (FUZZY),
    strong matches between remaining queries form new persons (founder UNMATCHED, others FUZZY),
    the grey zone joins its best candidate (POSSIBLE), and the rest become new persons (UNMATCHED).
    `clearly_other(a, b)`: whether rows a and b are clearly two people (checks a new person whole).
    """
    n = len(cluster)
    out = cluster.copy()
    ppfs = np.full(n, "", dtype=object)
    ppdf = np.zeros(n, dtype=np.float64)
    pair = np.full((n, 2), -1, dtype=np.int64)  # the scored pair (query row, target row) behind each p
    done = np.zeros(n, dtype=bool)
    qrow = pd.Series(queries, index=entity[queries])  # query entity -> row
    next_label = max(int(cluster.max()) + 1 if (cluster >= 0).any() else 0, n_anchor)

    def attach(rows, labels, method, p, left=None, right=None):
        out[rows] = labels
        ppfs[rows] = method
        ppdf[rows] = p
        if left is not None:
            pair[rows, 0], pair[rows, 1] = left, right
        done[rows] = True

    def attach_best(frame: pd.DataFrame, method: str, labels=None):
        q = frame["q"].to_numpy(np.int64)
        attach(q, frame["entity"].to_numpy(np.int64) if labels is None else labels, method, frame["p"].to_numpy(),
               q, frame["t"].to_numpy(np.int64))

    # round 1
    c1 = _posterior(cand[cand["entity"].to_numpy() < n_anchor], log2_prior)
    b1 = c1.drop_duplicates("q")
    attach_best(b1[b1["p"] >= upper], "FUZZY")

    # round 2: attached queries stand for their clusters
    ent = cand["entity"].to_numpy(np.int64).copy()
    is_q = ent >= n_anchor
    qr = qrow.reindex(ent[is_q]).to_numpy(np.int64)
    mapped = ent[is_q]
    mapped = np.where(done[qr], out[qr], mapped)
    ent[is_q] = mapped
    c2 = cand.assign(entity=ent)
    c2 = c2[~done[c2["q"].to_numpy(np.int64)]]
    c2 = _posterior(fz.best_pairs(c2.drop(columns="p", errors="ignore")), log2_prior)
    b2 = c2.drop_duplicates("q")
    e2 = b2["entity"].to_numpy(np.int64)
    attach_best(b2[(e2 < n_anchor) & (b2["p"].to_numpy() >= upper)], "FUZZY")

    # strong matches among the remaining queries, each pair weighed against "none" and the query's ID
    # clusters, not against its other queries: those may be the same person (three ID-less records of one
    # person would otherwise each see two equally good candidates, take 0.5 apiece and stay apart). What
    # pairs chain into a person is checked as a whole below (`_whole_components`).
    ce = c2["entity"].to_numpy(np.int64)
    odds = fz.pair_odds(log2_prior, c2["bits"].to_numpy())
    rivals = pd.Series(np.where(ce < n_anchor, odds, 0.0)).groupby(c2["q"].to_numpy()).transform("sum").to_numpy()
    p_pair = odds / (1.0 + odds + rivals)
    strong = (ce >= n_anchor) & (p_pair >= upper)
    qq = c2[strong].assign(p=p_pair[strong])
    if len(qq):
        other = qrow.reindex(qq["entity"].to_numpy(np.int64)).to_numpy(np.int64)
        keep = ~done[qq["q"].to_numpy(np.int64)] & ~done[other]
        qa, qb, qp = qq["q"].to_numpy(np.int64)[keep], other[keep], qq["p"].to_numpy()[keep]
        nodes = np.unique(np.concatenate([qa, qb]))
        rows, founder = _whole_components(*_components(qa, qb, nodes), qa, qb, clearly_other)
        if len(rows):
            labels = next_label + _labels_by_first(founder)
            next_label = int(labels.max()) + 1
            best = _pair_per_row(qa, qb, qp).reindex(rows)
            attach(rows, labels, np.where(rows == founder, "UNMATCHED", "FUZZY"), best["p"].to_numpy(),
                   best["left"].to_numpy(np.int64), best["right"].to_numpy(np.int64))

    # grey zone: first the best ID cluster as weighed in round 1 (other queries, which may be the same
    # person, do not compete there), then the best candidate of round 2
    g1 = b1[(b1["p"].to_numpy() >= lower) & ~done[b1["q"].to_numpy(np.int64)]]
    if len(g1):
        attach_best(g1, "POSSIBLE")
    g = b2[(b2["p"].to_numpy() >= lower) & ~done[b2["q"].to_numpy(np.int64)]]
    if len(g):
        gq = g["q"].to_numpy(np.int64)
        ge = g["entity"].to_numpy(np.int64)
        gp = g["p"].to_numpy()
        tgt_row = np.full(len(g), -1, dtype=np.int64)
        tgt_row[ge >= n_anchor] = qrow.reindex(ge[ge >= n_anchor]).to_numpy(np.int64)
        label = np.where(ge < n_anchor, ge, -1)
        resolved = (tgt_row >= 0) & done[np.maximum(tgt_row, 0)]
        label[resolved] = out[tgt_row[resolved]]
        a = label >= 0
        attach_best(g[a], "POSSIBLE", label[a])
        # grey pairs of unresolved queries: one new person per component, all POSSIBLE
        b = ~a
        if b.any():
            qa, qb = gq[b], tgt_row[b]
            ok = ~done[qa] & ~done[qb]
            qa, qb = qa[ok], qb[ok]
            nodes = np.unique(np.concatenate([qa, qb]))
            rows, founder = _components(qa, qb, nodes)
            if len(rows):
                labels = next_label + _labels_by_first(founder)
                next_label = int(labels.max()) + 1
                # a row's own best grey pair; a row that is only some query's target gets `lower`
                own = _pair_per_row(qa, qb, gp[b][ok], sides=1)
                best = own.combine_first(_pair_per_row(qa, qb, gp[b][ok]).assign(p=lower)).reindex(rows)
                attach(rows, labels, "POSSIBLE", best["p"].to_numpy(), best["left"].to_numpy(np.int64),
                       best["right"].to_numpy(np.int64))

    # new persons
    rem = queries[~done[queries]]
    if len(rem):
        attach(rem, next_label + np.arange(len(rem)), "UNMATCHED", 1.0)
    # PPDF of a founder: 1 - its best match probability to anyone outside its own person
    un = np.flatnonzero(ppfs == "UNMATCHED")
    ppdf[un] = 1.0
    if len(un) and len(c2):
        c3 = c2[np.isin(c2["q"].to_numpy(), un)]
        ce = c3["entity"].to_numpy(np.int64)
        tgt = np.where(ce < n_anchor, ce, -1)
        tgt[ce >= n_anchor] = out[qrow.reindex(ce[ce >= n_anchor]).to_numpy(np.int64)]
        outside = tgt != out[c3["q"].to_numpy(np.int64)]
        bp = c3[outside].groupby("q")["p"].max()
        ppdf[bp.index.to_numpy(np.int64)] = 1.0 - bp.to_numpy()
    return {"cluster": out, "ppfs": ppfs, "ppdf": ppdf, "pair": pair}


def _pair_per_row(qa: np.ndarray, qb: np.ndarray, p: np.ndarray, sides: int = 2) -> pd.DataFrame:
    """For each row of the scored pairs (qa[i] query, qb[i] target) with posterior p[i], as query only
    (`sides` 1) or on either side: its pair with the highest p (ties: the lowest other row). Columns p,
    left, right (the pair as it was scored), indexed by row."""
    both = sides == 2
    df = pd.DataFrame({"row": np.concatenate([qa, qb]) if both else qa, "other": np.concatenate([qb, qa]) if both else qb,
                       "p": np.concatenate([p, p]) if both else p, "left": np.concatenate([qa, qa]) if both else qa,
                       "right": np.concatenate([qb, qb]) if both else qb})
    df = df.sort_values(["row", "p", "other"], ascending=[True, False, True], kind="mergesort")
    return df.drop_duplicates("row").set_index("row")[["p", "left", "right"]]


# ---------------------------------------------------------------------------------- RKID handling
def _resolve_chain(rkids: pd.Series, merged: pd.Series) -> pd.Series:
    """Follow `merged_into` pointers to the live survivor."""
    out = rkids.copy()
    if merged.empty:
        return out
    for _ in range(64):
        nxt = out.map(merged)
        hit = nxt.notna() & (nxt != "")
        if not hit.any():
            break
        out = out.where(~hit, nxt)
    return out


def _prepare_prev(persons_prev: pd.DataFrame | None, links_prev: pd.DataFrame | None, decisions: pd.DataFrame | None):
    """Copies of yesterday's persons and links and of the decisions (empty frames for none); persons and
    decisions with every column they need, as text without NaN."""
    pp = empty_persons() if persons_prev is None or len(persons_prev) == 0 else persons_prev.copy()
    for c in PERSON_COLUMNS:
        if c not in pp:
            pp[c] = ""
    pp = pp[PERSON_COLUMNS].astype(object).fillna("")
    lp = _empty_links() if links_prev is None or len(links_prev) == 0 else links_prev.copy()
    dec = (pd.DataFrame({c: pd.Series(dtype=object) for c in LINK_KEY + ["RKID", "decision", "RWBH", "decided"]})
           if decisions is None or len(decisions) == 0 else decisions.copy())
    for c in ("RWBH", "decided"):
        if c not in dec:
            dec[c] = ""
    dec = dec.astype(object).fillna("")
    return pp, lp, dec


def _merged_map(pp: pd.DataFrame) -> pd.Series:
    """Retired RKID -> the RKID it was merged into, to follow yesterday's RKIDs to their survivors."""
    merged_map = pp.loc[pp["status"] == "retired"].set_index("RKID")["merged_into"]
    return merged_map[merged_map != ""]


# ------------------------------------------------------------------------------- stage 2: ID repair
def _repair_broken_ids(R: pd.DataFrame, s1: dict, cluster: np.ndarray, ppfs: np.ndarray, ppdf: np.ndarray,
                       cfg: dict, business_date: str) -> pd.Series:
    """Join roles with a broken or damaged ID to the ID cluster their ID repairs to (`ID_REPAIRED`).

    Updates `cluster`, `ppfs` and `ppdf` in place; returns the repaired ID of each repaired row."""
    status = R["id_status"].to_numpy(dtype=object)
    damage = R["id_damage"].astype(str).to_numpy(dtype=object)
    broken = (np.isin(status, ["CHECKSUM", "FORMAT"]) | (damage != "")) & (cluster < 0)
    ka = np.flatnonzero(s1["anchored"] & s1["citizen"])
    id18 = R["id18"].to_numpy(dtype=object)
    known = pd.DataFrame({"row": ka, "cluster": cluster[ka], "id18": id18[ka],
                          "name_key": R["name_key"].to_numpy(dtype=object)[ka],
                          "birth": R["birth"].astype(str).to_numpy(dtype=object)[ka]})
    known = known.drop_duplicates(["cluster", "id18", "name_key", "birth"])
    tail = excel_tail(R) & s1["anchored"]  # valid IDs ending in 000: Excel's, when another ID confirms
    rep = repair_ids(R, np.flatnonzero(broken | tail), known, cfg, business_date)
    if len(rep):
        # ... but not when police records hold both numbers: two registered persons, not one damaged ID
        rr = rep["row"].to_numpy(np.int64)
        if tail[rr].any():  # hash lookups: np.isin sorts object arrays (seconds at 1M roles)
            police = np.isin(R["BH"].to_numpy(dtype=object), POLICE_TABLES) & s1["anchored"]
            both = (tail[rr] & _isin(id18[rr], pd.unique(id18[police]))
                    & np.isin(rep["cluster"].to_numpy(np.int64), pd.unique(cluster[police])))
            rep = rep[~both]
    if not len(rep):
        return pd.Series(dtype=object)
    rr = rep["row"].to_numpy(np.int64)
    cluster[rr] = rep["cluster"].to_numpy(np.int64)
    ppfs[rr] = "ID_REPAIRED"
    ppdf[rr] = rep["ppdf"].to_numpy()
    return pd.Series(rep["id18"].to_numpy(dtype=object), index=rep["row"].to_numpy(np.int64))


# --------------------------------------------------------------------------- stage 3: fuzzy fallback
def _fuzzy_id_evidence(R: pd.DataFrame, s1: dict, anchored: np.ndarray,
                       repaired_id: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The ID each role compares with: anchored roles their valid (or repaired) ID, queries what their
    broken ID says (`query_id_evidence`)."""
    idk, idv = query_id_evidence(R)
    idk[anchored], idv[anchored] = "", ""
    id18 = R["id18"].to_numpy(dtype=object)
    cz = s1["anchored"] & s1["citizen"]
    idk[cz] = "V"
    idv[cz] = id18[cz]
    if len(repaired_id):
        ri = repaired_id.index.to_numpy()
        idk[ri] = "V"
        idv[ri] = repaired_id.to_numpy()
    return idk, idv


def _prepare_fuzzy(R: pd.DataFrame, s1: dict, cluster: np.ndarray, repaired_id: pd.Series,
                   consume: bool = False) -> tuple[fz.Prepared, np.ndarray, np.ndarray, int]:
    """The roles as fuzzy comparison values; the queries (roles without a cluster) and each role's
    entity (its cluster, or for a query an entity of its own numbered after the clusters). `consume`: the
    columns of `R` that the comparison values are not made from are dropped from it (in place) first."""
    anchored = cluster >= 0
    n_anchor = int(cluster.max()) + 1 if anchored.any() else 0
    queries = np.flatnonzero(~anchored)
    entity = cluster.copy()
    entity[queries] = n_anchor + np.arange(len(queries))
    trust = anchored & ~s1["detached"]
    idk, idv = _fuzzy_id_evidence(R, s1, anchored, repaired_id)
    partner = _partner_rows(R)
    overrides = borrowed_place(R, partner)
    if consume:
        for c in [c for c in R.columns if c not in fz.PREPARE_COLUMNS or c in overrides]:
            del R[c]
    P = fz.prepare(R, trust, idk, idv, overrides=overrides)
    P.set_partner(np.where(partner >= 0, entity[np.maximum(partner, 0)], -1))
    return P, queries, entity, n_anchor


def _train_model(P: fz.Prepared, s1: dict, queries: np.ndarray, entity: np.ndarray, cfg: dict) -> fz.FSModel:
    """Train the Fellegi–Sunter model on the ID clusters (unsplit ones), with EM on the queries'
    candidate pairs when there are too few labelled pairs."""
    fcfg = cfg["fuzzy"]
    usable = s1["anchored"] & ~s1["in_split"]
    lab = _labelled_pairs(np.where(usable, s1["cluster"], -1), usable)
    em_source = None
    if len(lab[0]) < int(fcfg["training"].get("min_labelled_pairs", 500)) and len(queries):
        em_source = fz.candidate_pairs(P, queries, np.arange(len(entity)), fcfg["blocking"], **fz.blocking_caps(fcfg))
    return fz.train_model(P, entity, lab, cfg, em_pairs=em_source)


def _score_candidates(P: fz.Prepared, queries: np.ndarray, entity: np.ndarray, model: fz.FSModel, cfg: dict,
                      fstats: dict) -> pd.DataFrame:
    """Scored candidates (q, entity, t, bits, p) of every query; `fstats` gets the blocking figures."""
    if not len(queries):
        return fz.empty_candidates()
    return fz.score_queries(P, queries, np.arange(len(entity)), entity, model, cfg, stats=fstats)


# Bits of room the training date's first scoring keeps below the threshold, so that the pairs the model with
# the estimated prior keeps are among them (`_model_and_candidates`): a prior estimated up to 2**3 times the
# configured one (0.99 on the generated cities, 0.76-2.54 on FEBRL1-4, against 0.5). Past it, the pairs are scored
# again. The room costs comparisons: at 100k, 3 bits compare 11.5 % more addresses than none, 6 bits 30 %.
PRIOR_SLACK_BITS = 3.0


def _model_and_candidates(P: fz.Prepared, s1: dict, queries: np.ndarray, entity: np.ndarray,
                          model: fz.FSModel | None, cfg: dict, fstats: dict,
                          timings: dict) -> tuple[fz.FSModel, pd.DataFrame]:
    """The model (`model`, or trained here when None) and every query's scored candidates with it; `fstats`
    gets the blocking figures of the last scoring, `timings` the seconds of training and scoring."""
    t = time.perf_counter()
    trained_here = model is None
    if trained_here:
        model = _train_model(P, s1, queries, entity, cfg)
    timings["fuzzy_train"] = time.perf_counter() - t
    t = time.perf_counter()
    # the prior from the data (`fuzzy.estimate_matches_per_query`), then the pairs weighed with it; not where
    # there are too few people to learn from (`train_model` keeps its defaults there too)
    if not (trained_here and model.n_entities >= int(cfg["fuzzy"]["training"].get("min_population", 1000))):
        cand = _score_candidates(P, queries, entity, model, cfg, fstats)
        timings["fuzzy_score"] = time.perf_counter() - t
        return model, cand
    keep_min = fz.keep_min_bits(cfg["fuzzy"])
    pairs = fz.scored_pairs(P, queries, np.arange(len(entity)), entity, model, cfg, fstats, slack=PRIOR_SLACK_BITS)
    prior, address_bits = model.log2_prior_odds, model.level_bits("address")
    cand = fz.candidates(pairs, prior, keep_min)
    configured = model.prior_has_match
    model.prior_has_match = fz.estimate_matches_per_query(cand, len(queries), model)
    model.meta["prior_has_match"] = {"configured": configured, "estimated": round(model.prior_has_match, 4)}
    fz.discount_matches(model, len(queries))
    # the most a kept pair's bits (with the prior) can rise: within the slack, every pair the new model keeps
    # was scored above and only needs weighing again; else every pair is scored again
    rise = model.log2_prior_odds - prior + max(float((model.level_bits("address") - address_bits).max()), 0.0)
    weighed_again = bool(rise + 1e-9 <= PRIOR_SLACK_BITS)
    model.meta["prior_has_match"]["weighed_again"] = weighed_again  # else every pair was scored again
    if weighed_again:
        cand = fz.candidates(fz.reweigh(P, pairs, model), model.log2_prior_odds, keep_min, stats=fstats)
    else:
        fstats.clear()
        cand = _score_candidates(P, queries, entity, model, cfg, fstats)
    timings["fuzzy_score"] = time.perf_counter() - t
    return model, cand


def _record_blocking(model: fz.FSModel, trained_here: bool, fstats: dict, stats: dict) -> None:
    """Keep a trained model's skipped blocks (later dates skip the same ones, `fuzzy.candidate_pairs`)
    and put the model and blocking figures in `stats`."""
    blocking = fstats.get("blocking", {})
    if trained_here:
        model.skip_blocks = {k: np.asarray(v.get("skip_hashes", []), dtype=np.uint64) for k, v in blocking.items()}
    for v in blocking.values():
        v.pop("skip_hashes", None)
    stats["model"] = model.describe()
    stats["blocking"] = blocking
    stats["candidates"] = fstats.get("candidates", 0)


# ------------------------------------------------------------------------------ stage 4: RKIDs
class _Issuer:
    """Fresh RKIDs: `rkid_for` of the founding role, salted past every RKID taken (never reused)."""

    def __init__(self, keys: pd.DataFrame, taken: set):
        self.kBM, self.kBH, self.kYW, self.kJS = (keys[c].to_numpy(dtype=object) for c in LINK_KEY)
        self.taken = taken
        self.issued: list[tuple[str, int]] = []  # (RKID, founding row), in issuing order

    def issue(self, row) -> str:
        """A new RKID founded by `row`, recorded in `issued`."""
        r = int(row)
        salt = 0
        rk = rkid_for(self.kBM[r], self.kBH[r], self.kYW[r], self.kJS[r])
        while rk in self.taken:  # only when the founding role already founded a person that was retired
            salt += 1
            rk = rkid_for(self.kBM[r], self.kBH[r], self.kYW[r], self.kJS[r], salt)
        self.taken.add(rk)
        self.issued.append((rk, row))
        return rk


def _previous_rkids(role_key: np.ndarray, lp: pd.DataFrame, pp: pd.DataFrame,
                    merged_map: pd.Series) -> tuple[np.ndarray, np.ndarray, set]:
    """Each role's RKID of yesterday as written (`""`: none) and as its live survivor (`""` when that
    person is gone), and the set of live RKIDs of yesterday."""
    prev_raw = pd.Series(lp["RKID"].astype(str).to_numpy(), index=role_keys(lp)) if len(lp) else pd.Series(dtype=object)
    prev_raw = prev_raw[~prev_raw.index.duplicated(keep="last")]
    prev_of_role = prev_raw.reindex(role_key).fillna("").to_numpy(dtype=object)
    prev_live = _resolve_chain(pd.Series(prev_of_role), merged_map).to_numpy(dtype=object)
    live_prev = set(pp.loc[pp["status"] != "retired", "RKID"])
    prev_live = np.where(_isin(prev_live, live_prev), prev_live, "")
    return prev_of_role, prev_live, live_prev


def _read_decisions(dec: pd.DataFrame, merged_map: pd.Series, role_key: np.ndarray,
                    live_prev: set) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The decisions on today's roles: which rows a `SAME` pins to which live RKID (the latest decision
    of a role wins), and the (row, RKID) pairs `NOT_SAME` forbids."""
    n = len(role_key)
    dec = dec.assign(_k=role_keys(dec) if len(dec) else [],
                     _r=_resolve_chain(dec["RKID"].astype(str), merged_map).to_numpy() if len(dec) else [])
    dec = dec.sort_values(["_k", "decided", "RWBH"], kind="mergesort")
    row_of_key = pd.Series(np.arange(n), index=role_key)
    same = dec[dec["decision"] == "SAME"].drop_duplicates("_k", keep="last")
    same = same[same["_k"].isin(row_of_key.index) & same["_r"].isin(live_prev)]
    pinned = np.zeros(n, dtype=bool)
    pin_rkid = np.full(n, "", dtype=object)
    if len(same):
        pr = row_of_key.reindex(same["_k"].to_numpy()).to_numpy(np.int64)
        pinned[pr] = True
        pin_rkid[pr] = same["_r"].to_numpy(dtype=object)
    notsame = dec[(dec["decision"] == "NOT_SAME") & dec["_k"].isin(row_of_key.index)]
    forbid = pd.DataFrame({
        "row": row_of_key.reindex(notsame["_k"].to_numpy()).to_numpy(np.int64) if len(notsame) else np.zeros(0, np.int64),
        "RKID": notsame["_r"].to_numpy(dtype=object) if len(notsame) else np.zeros(0, dtype=object),
    }).drop_duplicates()
    return pinned, pin_rkid, forbid


def _forbidden(forbid: pd.DataFrame, rkid: np.ndarray) -> np.ndarray:
    """Which rows carry an RKID a `NOT_SAME` decision forbids them."""
    fk = pd.MultiIndex.from_arrays([forbid["row"].to_numpy(np.int64), forbid["RKID"].to_numpy(dtype=object)])
    return pd.MultiIndex.from_arrays([np.arange(len(rkid)), rkid]).isin(fk)


def _claims(prev_live: np.ndarray, pinned: np.ndarray, forbid: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The RKID each role claims for its cluster (`""`: none) and which claims are weak.

    Pinned roles claim nothing (placed by hand). A role declared not to be some person may be about to
    leave its cluster: its claims (never on a forbidden RKID) only count for a cluster that has no other
    claim, on an RKID nobody else claims (so a role alone keeps its own person)."""
    claim_rkid = prev_live.copy()
    claim_rkid[pinned] = ""
    weak = np.zeros(len(prev_live), dtype=bool)
    if len(forbid):
        claim_rkid[_forbidden(forbid, claim_rkid)] = ""
        weak[forbid["row"].to_numpy(np.int64)] = True
    return claim_rkid, weak


def _claim_owners(rows: np.ndarray, cluster: np.ndarray, claim_rkid: np.ndarray) -> pd.DataFrame:
    """(rkid, cluster) for every RKID the rows `rows` claim: the cluster holding most of its claims
    (ties: the earliest row)."""
    cl = pd.DataFrame({"row": rows, "cluster": cluster[rows], "rkid": claim_rkid[rows]})
    cl = cl[cl["rkid"] != ""]
    claims = cl.groupby(["rkid", "cluster"], sort=True).agg(cnt=("row", "size"), first=("row", "min")).reset_index()
    claims = claims.sort_values(["rkid", "cnt", "first"], ascending=[True, False, True], kind="mergesort")
    return claims.drop_duplicates("rkid")[["rkid", "cluster"]]


def _continuing_rkids(cluster: np.ndarray, claim_rkid: np.ndarray, weak: np.ndarray,
                      issued_of: pd.Series) -> tuple[pd.Series, pd.DataFrame]:
    """The RKID each cluster keeps (cluster -> RKID) and the RKIDs retired into another (rkid, into):
    of a cluster's RKIDs the oldest issued survives (ties: lowest RKID)."""
    owner = _claim_owners(np.flatnonzero(~weak), cluster, claim_rkid)
    if weak.any():
        wr = np.flatnonzero(weak)
        wr = wr[~np.isin(cluster[wr], owner["cluster"].to_numpy()) & ~_isin(claim_rkid[wr], owner["rkid"].to_numpy())]
        if len(wr):
            owner = pd.concat([owner, _claim_owners(wr, cluster, claim_rkid)], ignore_index=True)
    owner = owner.assign(issued=issued_of.reindex(owner["rkid"].to_numpy()).fillna("").to_numpy())
    owner = owner.sort_values(["cluster", "issued", "rkid"], kind="mergesort")
    survivor = owner.drop_duplicates("cluster")
    retired = owner[~owner.index.isin(survivor.index)].merge(
        survivor[["cluster", "rkid"]].rename(columns={"rkid": "into"}), on="cluster")
    cluster_rkid = pd.Series(survivor["rkid"].to_numpy(dtype=object), index=survivor["cluster"].to_numpy(np.int64))
    return cluster_rkid, retired


def _issue_new_persons(cluster: np.ndarray, pinned: np.ndarray, cluster_rkid: pd.Series,
                       issuer: _Issuer) -> np.ndarray:
    """Each role's RKID: its cluster's, or for a cluster without one a new RKID founded by its first
    (non-pinned) role."""
    free = np.flatnonzero(~pinned)
    founders = pd.Series(free).groupby(cluster[free]).min()
    need = founders[~founders.index.isin(cluster_rkid.index)]
    new_rk = {}
    for c, r in zip(need.index.to_numpy(), need.to_numpy()):  # one hash per new person
        new_rk[c] = issuer.issue(r)
    if new_rk:
        cluster_rkid = pd.concat([cluster_rkid, pd.Series(new_rk, dtype=object)])
    return cluster_rkid.reindex(cluster).fillna("").to_numpy(dtype=object)


# --------------------------------------------------------------------------- stage 5: decisions
def _detached_entities(rkid: np.ndarray, vrows: np.ndarray,
                       forbid: pd.DataFrame) -> tuple[np.ndarray, int, pd.Series, pd.DataFrame]:
    """Entities to re-score the rows `vrows` against: one per person, one of its own for each of those
    rows; also the RKID of each entity and the (q, entity) pairs the decisions exclude."""
    ent2 = pd.Series(rkid).factorize()[0].astype(np.int64)
    base_lab = ent2.max() + 1
    ent2[vrows] = base_lab + np.arange(len(vrows))
    rk_of_ent = pd.Series(rkid, index=ent2).groupby(level=0).first()
    ex = forbid.merge(pd.DataFrame({"RKID": rk_of_ent.to_numpy(dtype=object), "entity": rk_of_ent.index.to_numpy()}), on="RKID")
    ex = ex.rename(columns={"row": "q"})[["q", "entity"]]
    return ent2, base_lab, rk_of_ent, ex


def _relink_forbidden(vrows: np.ndarray, rkid: np.ndarray, ppfs: np.ndarray, ppdf: np.ndarray, pair: np.ndarray,
                      forbid: pd.DataFrame, prev_live: np.ndarray, P: fz.Prepared, model: fz.FSModel, cfg: dict,
                      issuer: _Issuer, upper: float, lower: float) -> None:
    """Move the rows `vrows`, declared not to be the person they were linked to, to their best other
    candidate, or to a person of their own (the one they had, if free). Updates `rkid`, `ppfs`, `ppdf`
    and `pair` (the scored pair behind a new fuzzy link)."""
    n = len(rkid)
    ent2, base_lab, rk_of_ent, ex = _detached_entities(rkid, vrows, forbid)
    forbidden_of = forbid.groupby("row")["RKID"].agg(set).to_dict()
    in_use = set(rkid[np.setdiff1d(np.arange(n), vrows)])
    cand2 = fz.score_queries(P, vrows, np.arange(n), ent2, model, cfg, exclude=ex)
    best2 = cand2.drop_duplicates("q").set_index("q")
    for r in vrows:  # few: roles declared not to be their automatic person
        p = float(best2["p"].get(r, 0.0)) if r in best2.index else 0.0
        e = int(best2["entity"].get(r, -1)) if r in best2.index else -1
        if p >= lower and e >= 0 and e < base_lab:
            rkid[r] = rk_of_ent[e]
            ppfs[r] = "FUZZY" if p >= upper else "POSSIBLE"
            ppdf[r] = p
            pair[r] = (r, int(best2["t"].get(r)))
        else:
            own = prev_live[r]
            if own and own not in forbidden_of.get(r, ()) and own not in in_use:
                rk = own  # alone again: it keeps the person it had
            else:
                rk = issuer.issue(r)
            in_use.add(rk)
            rkid[r] = rk
            ppfs[r] = "UNMATCHED"
            ppdf[r] = 1.0 - p


def _apply_decisions(rkid: np.ndarray, ppfs: np.ndarray, ppdf: np.ndarray, pair: np.ndarray, pinned: np.ndarray,
                     pin_rkid: np.ndarray, forbid: pd.DataFrame, prev_live: np.ndarray, P: fz.Prepared,
                     model: fz.FSModel, cfg: dict, issuer: _Issuer, upper: float, lower: float) -> None:
    """Decisions always win: `SAME` pins a role to its RKID (`MANUAL`), `NOT_SAME` moves a role off a
    forbidden RKID. Updates `rkid`, `ppfs`, `ppdf`, `pair` in place."""
    rkid[pinned] = pin_rkid[pinned]
    ppfs[pinned] = "MANUAL"
    ppdf[pinned] = float(cfg["ppdf"]["MANUAL"])
    if len(forbid):
        vrows = np.flatnonzero(_forbidden(forbid, rkid) & ~pinned)
        if len(vrows):
            _relink_forbidden(vrows, rkid, ppfs, ppdf, pair, forbid, prev_live, P, model, cfg, issuer, upper, lower)


def _keep_links(fixed: np.ndarray, role_key: np.ndarray, lp: pd.DataFrame, rkid: np.ndarray, ppfs: np.ndarray,
                ppdf: np.ndarray) -> np.ndarray:
    """The links of the rows `fixed` as `lp` has them (`link_roles(kept=...)`), in place; returns their
    rows in `lp`."""
    rows = np.flatnonzero(fixed)
    at = pd.Index(role_keys(lp)).get_indexer(role_key[rows])
    if (at < 0).any():
        raise ValueError(f"{int((at < 0).sum())} kept role(s) have no link to keep")
    rkid[rows] = lp["RKID"].astype(str).to_numpy(dtype=object)[at]
    ppfs[rows] = lp["PPFS"].astype(str).to_numpy(dtype=object)[at]
    ppdf[rows] = pd.to_numeric(lp["PPDF"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)[at]
    return at


# ------------------------------------------------------------------------------------- outputs
def _links_frame(keys: pd.DataFrame, rkid: np.ndarray, ppfs: np.ndarray, ppdf: np.ndarray,
                 ppmx: np.ndarray) -> pd.DataFrame:
    """The links output: each role's key, RKID, method, score (6 decimals) and its explanation."""
    return pd.DataFrame({"BM": keys["BM"].to_numpy(dtype=object), "BH": keys["BH"].to_numpy(dtype=object),
                         "YWZJ": keys["YWZJ"].to_numpy(dtype=object), "JS": keys["JS"].to_numpy(dtype=object),
                         "RKID": rkid, "PPFS": ppfs, "PPDF": np.round(ppdf.astype(np.float64), 6), "PPMX": ppmx})


def _explanations(P: fz.Prepared, role_key: np.ndarray, ppfs: np.ndarray, ppdf: np.ndarray, pair: np.ndarray,
                  model: fz.FSModel, cfg: dict) -> np.ndarray:
    """`PPMX` of every row: the explanation of the scored pair behind each FUZZY and POSSIBLE link
    (`linkage.explain`), `""` for the others."""
    out = np.full(len(ppfs), "", dtype=object)
    rows = np.flatnonzero(np.isin(ppfs, explain.EXPLAINED) & (pair[:, 0] >= 0))
    if len(rows):
        cuts = fz.address_declaration(cfg["fuzzy"])
        left, right = pair[rows, 0], pair[rows, 1]
        terms = fz.explain_pairs(P, left, right, model, cuts)
        other = np.where(left == rows, right, left)
        out[rows] = explain.encode(terms, model.log2_prior_odds, ppdf[rows], role_key[other])
    return out


def _persons_frames(R: pd.DataFrame, rkid: np.ndarray, issued_rk: set, issued_of: pd.Series, pp: pd.DataFrame,
                    retired: pd.DataFrame, business_date: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The persons output (today's persons from their roles, yesterday's others with today's merges
    retired, sorted by RKID) and today's persons as derived from their roles."""
    derived = attributes_for(R, rkid, canonical=True)
    issued = derived["RKID"].map(issued_of).fillna(business_date).where(~derived["RKID"].isin(issued_rk), business_date)
    derived = derived.assign(status="live", merged_into="", issued=issued)
    retired_set = dict(zip(retired["rkid"], retired["into"]))
    prev_rest = pp[~pp["RKID"].isin(derived["RKID"])].copy()
    newly = prev_rest["RKID"].isin(retired_set.keys()) & (prev_rest["status"] != "retired")
    prev_rest.loc[newly, "status"] = "retired"
    prev_rest.loc[newly, "merged_into"] = prev_rest.loc[newly, "RKID"].map(retired_set)
    persons = pd.concat([derived[PERSON_COLUMNS], prev_rest[PERSON_COLUMNS]], ignore_index=True)
    persons = persons.astype(object).fillna("").sort_values("RKID", kind="mergesort").reset_index(drop=True)
    return persons, derived


def _attribute_events(pp: pd.DataFrame, derived: pd.DataFrame) -> list[pd.DataFrame]:
    """ATTRIBUTE events: a core attribute of a person that was live yesterday changed."""
    ev = []
    old = pp[pp["status"] != "retired"].set_index("RKID")[CORE_ATTRIBUTES]
    new = derived.set_index("RKID")[CORE_ATTRIBUTES]
    common = old.index.intersection(new.index)
    if len(common):
        o = old.loc[common].astype(str)
        nw = new.loc[common].astype(str)
        for c in CORE_ATTRIBUTES:  # five attributes, vectorised over persons
            d = o[c] != nw[c]
            if d.any():
                ev.append(pd.DataFrame({"kind": "ATTRIBUTE", "RKID": o.index[d].to_numpy(),
                                        "BM": "", "BH": "", "YWZJ": "", "JS": "",
                                        "field": c, "old": o[c][d].to_numpy(), "new": nw[c][d].to_numpy()}))
    return ev


def _events_frame(keys: pd.DataFrame, issued_now: list, retired: pd.DataFrame, prev_of_role: np.ndarray,
                  rkid: np.ndarray, pp: pd.DataFrame, derived: pd.DataFrame) -> pd.DataFrame:
    """The events output: RKIDs ISSUED, MERGED, roles RELINKED, ATTRIBUTE changes, in that order."""
    ev = []
    if issued_now:
        ir = np.array([r for _, r in issued_now], dtype=np.int64)
        ev.append(pd.DataFrame({"kind": "ISSUED", "RKID": [rk for rk, _ in issued_now],
                                "BM": keys["BM"].to_numpy()[ir], "BH": keys["BH"].to_numpy()[ir],
                                "YWZJ": keys["YWZJ"].to_numpy()[ir], "JS": keys["JS"].to_numpy()[ir],
                                "field": "RKID", "old": "", "new": [rk for rk, _ in issued_now]}))
    if len(retired):
        ev.append(pd.DataFrame({"kind": "MERGED", "RKID": retired["rkid"].to_numpy(), "BM": "", "BH": "", "YWZJ": "", "JS": "",
                                "field": "merged_into", "old": retired["rkid"].to_numpy(),
                                "new": retired["into"].to_numpy()}))
    moved = (prev_of_role != "") & (prev_of_role != rkid)
    if moved.any():
        mr = np.flatnonzero(moved)
        ev.append(pd.DataFrame({"kind": "RELINKED", "RKID": rkid[mr], "BM": keys["BM"].to_numpy()[mr],
                                "BH": keys["BH"].to_numpy()[mr], "YWZJ": keys["YWZJ"].to_numpy()[mr],
                                "JS": keys["JS"].to_numpy()[mr], "field": "RKID", "old": prev_of_role[mr], "new": rkid[mr]}))
    if len(pp):
        ev.extend(_attribute_events(pp, derived))
    events = pd.concat(ev, ignore_index=True) if ev else _empty_events()
    # deterministic without sorting: every part is built in canonical order (kinds in this order)
    kind_order = {"ISSUED": 0, "MERGED": 1, "RELINKED": 2, "ATTRIBUTE": 3}
    events = events[EVENT_COLUMNS].astype(object)
    return events.iloc[np.argsort(events["kind"].map(kind_order).to_numpy(), kind="stable")].reset_index(drop=True)


# ---------------------------------------------------------------------------------------- main API
# What the ID stage, the repairs and the fuzzy comparisons read of a role: not its raw values (the links'
# method and the persons' attributes read those), so that a city's roles can be held for the cut in less
# (`day.binned.cut`; `tests/test_binned.py` checks the cut gives what the whole date does)
LINKING_COLUMNS = [*LINK_KEY, "ZJLX", "name_key", "id_norm", "id_status", "id18", "id_damage", "id_prefix", "id_birth",
                   "id_sex", "sex", "birth", "region", "address", "active"]


def canonical_roles(roles: pd.DataFrame, config: dict | None = None) -> pd.DataFrame:
    """`roles` in the linker's founding order, with every column it reads (`city_model_and_pairs` takes them)."""
    return _canonical(roles, (config or load_config()).get("table_order", DEFAULT_TABLE_ORDER))


def canonical_roles_by_table(parts, config: dict | None = None) -> pd.DataFrame:
    """`canonical_roles` of a city's roles made one table at a time (`parts`: one frame a table), held once.
    Each table is sorted as it comes; the tables are then joined a column at a time in founding order, each
    column's equal strings made one object (`fuzzy.shared`: a birth date, a region or a name is repeated in
    many roles) and the tables' copies of it let go. A `pd.concat` of the tables and a sort of the whole held
    the roles three times over: the 1M cut's peak (docs/benchmarks.md, "The cut held once")."""
    table_order = (config or load_config()).get("table_order", DEFAULT_TABLE_ORDER)
    tables: list[dict[str, np.ndarray]] = []
    for part in parts:
        r = _canonical(part, table_order)
        del part
        if not len(r):
            continue
        if r["BH"].iat[0] != r["BH"].iat[-1]:  # sorted by table first: one table has one value at both ends
            raise ValueError("canonical_roles_by_table takes the roles of one table per part")
        tables.append({c: r[c].to_numpy(copy=True) for c in r.columns})  # a copy per column: freed one by one
        del r
    if not tables:
        return _canonical(pd.DataFrame(columns=LINK_KEY), table_order)
    tables.sort(key=lambda t: (int(t["_tord"][0]), str(t["BH"][0])))
    joined: dict[str, np.ndarray] = {}
    for c in list(tables[0]):
        column = np.concatenate([t.pop(c) for t in tables])
        joined[c] = fz.shared(column) if column.dtype == object else column
    return pd.DataFrame(joined, copy=False)  # a block per column: not copied into one


@dataclass
class CityForms:
    """A whole city's roles as training and scoring read them (`prepare_city`): the ID stage's results, the
    prepared comparison values, the queries and each row's entity; the roles themselves can be let go."""

    s1: dict
    P: fz.Prepared
    queries: np.ndarray
    entity: np.ndarray


def prepare_city(R: pd.DataFrame, business_date: str, config: dict | None = None, consume: bool = False) -> CityForms:
    """Stages 1 to 3's preparation of `link_roles` on the whole city `R` (`canonical_roles`). `consume`: `R` is
    the caller's to lose; its columns go once read (`_prepare_fuzzy`), so that the city's roles and their
    comparison values are not held whole at once (the binned date's cut, whose peak this is)."""
    cfg = config or load_config()
    s1 = _id_clusters(R, cfg)
    cluster, ppfs = s1["cluster"], s1["ppfs"]
    repaired_id = _repair_broken_ids(R, s1, cluster, ppfs, np.zeros(len(R), dtype=np.float64), cfg, business_date)
    P, queries, entity, _ = _prepare_fuzzy(R, s1, cluster, repaired_id, consume=consume)
    return CityForms(s1, P, queries, entity)


def city_model_and_pairs(city: CityForms, config: dict | None = None):
    """What a city linked in bins needs before it links (`day.binned`, docs/scale.md 2.7): the model
    `link_roles` trains on the whole city (`prepare_city`; its skip list recorded, so that a bin skips the
    blocks the whole city skips) and the kept candidate pairs it scores with it. Returns (the model, query
    rows, target rows): a pair's rows are positions in the city's canonical roles."""
    cfg = config or load_config()
    fstats: dict = {}
    model, cand = _model_and_candidates(city.P, city.s1, city.queries, city.entity, None, cfg, fstats, {})
    _record_blocking(model, True, fstats, {})
    return model, cand["q"].to_numpy(np.int64), cand["t"].to_numpy(np.int64)


def link_roles(roles: pd.DataFrame, persons_prev: pd.DataFrame | None, links_prev: pd.DataFrame | None,
               decisions: pd.DataFrame | None, business_date: str, config: dict | None = None,
               model: fz.FSModel | None = None, kept: set[str] | None = None) -> LinkResult:
    """Link every role of `roles` to a person; see the module docstring.

    `model`: a Fellegi–Sunter model to use as it is (the base keeps the one trained on its first date,
    so that a day's result depends only on the data near what changed: docs/linkage.md, incremental
    linking). Without it, the model is trained on `roles`.
    `kept`: role keys whose link of `links_prev` stands as it is (`linkage.incremental`: context rows that
    could be fuzzy queries but none of whose candidates changed). They take part in the ID stage and
    count in their persons' attributes, but are neither fuzzy queries nor claims on an RKID, so the
    sub-run need not hold their candidates.
    """
    cfg = config or load_config()
    if config is not None:
        validate_config(cfg)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict = {"config_version": cfg.get("version", ""), "timings": timings}
    pp, lp, dec = _prepare_prev(persons_prev, links_prev, decisions)
    merged_map = _merged_map(pp)
    R = _canonical(roles, cfg.get("table_order", DEFAULT_TABLE_ORDER))
    upper = float(cfg["fuzzy"]["thresholds"]["upper"])
    lower = float(cfg["fuzzy"]["thresholds"]["lower"])

    # ---- 1. ID clusters
    s1 = _id_clusters(R, cfg)
    cluster = s1["cluster"]
    ppfs = s1["ppfs"]
    ppdf = np.where(ppfs == "ID_EXACT", float(cfg["ppdf"]["ID_EXACT"]),
                    np.where(ppfs == "ID_NORMALIZED", float(cfg["ppdf"]["ID_NORMALIZED"]), 0.0))
    timings["id_clusters"] = time.perf_counter() - t0

    # ---- 2. ID repair
    t = time.perf_counter()
    repaired_id = _repair_broken_ids(R, s1, cluster, ppfs, ppdf, cfg, business_date)
    timings["repair"] = time.perf_counter() - t

    # ---- 3. fuzzy
    t = time.perf_counter()
    role_key = role_keys(R)
    fixed = _isin(role_key, kept) if kept else np.zeros(len(R), dtype=bool)
    if fixed.any():  # kept rows: anchored alone, so they are no queries (nothing reaches them, `kept`)
        free = fixed & (cluster < 0)
        cluster[free] = (int(cluster.max()) + 1 if len(cluster) else 0) + np.arange(int(free.sum()))
    P, queries, entity, n_anchor = _prepare_fuzzy(R, s1, cluster, repaired_id)
    timings["fuzzy_prepare"] = time.perf_counter() - t
    trained_here = model is None
    fstats: dict = {}
    model, cand = _model_and_candidates(P, s1, queries, entity, model, cfg, fstats, timings)
    t = time.perf_counter()
    asg = _assign_queries(cand, queries, entity, n_anchor, cluster, upper, lower, model.log2_prior_odds,
                          _clearly_other_rows(R, cfg))
    cluster = asg["cluster"]
    ppfs[queries] = asg["ppfs"][queries]
    ppdf[queries] = asg["ppdf"][queries]
    pair = asg["pair"]
    _record_blocking(model, trained_here, fstats, stats)

    # ---- 4. RKIDs
    keys = R[LINK_KEY].astype(str)
    prev_of_role, prev_live, live_prev = _previous_rkids(role_key, lp, pp, merged_map)
    pinned, pin_rkid, forbid = _read_decisions(dec, merged_map, role_key, live_prev)
    if fixed.any() and len(forbid):
        forbid = forbid[~fixed[forbid["row"].to_numpy(np.int64)]]
    claim_rkid, weak = _claims(prev_live, pinned | fixed, forbid)
    issued_of = pp.set_index("RKID")["issued"] if len(pp) else pd.Series(dtype=object)
    cluster_rkid, retired = _continuing_rkids(cluster, claim_rkid, weak, issued_of)
    issuer = _Issuer(keys, set(pp["RKID"]) | set(cluster_rkid.to_numpy()))
    rkid = _issue_new_persons(cluster, pinned | fixed, cluster_rkid, issuer)

    # ---- 5. decisions
    kept_at = _keep_links(fixed, role_key, lp, rkid, ppfs, ppdf) if fixed.any() else None
    _apply_decisions(rkid, ppfs, ppdf, pair, pinned, pin_rkid, forbid, prev_live, P, model, cfg, issuer, upper, lower)
    ppmx = _explanations(P, role_key, ppfs, ppdf, pair, model, cfg)
    del P, cand, asg, s1, repaired_id  # the comparison values and candidates are done with: not held past here
    if kept_at is not None:  # a link not re-linked keeps its explanation (a base from before them has none)
        ppmx[fixed] = lp["PPMX"].fillna("").astype(str).to_numpy(dtype=object)[kept_at] if "PPMX" in lp else ""
    timings["assign"] = time.perf_counter() - t

    # ---- outputs
    t = time.perf_counter()
    links = _links_frame(keys, rkid, ppfs, ppdf, ppmx)
    issued_rk = {rk for rk, _ in issuer.issued}
    persons, derived = _persons_frames(R, rkid, issued_rk, issued_of, pp, retired, business_date)
    events = _events_frame(keys, issuer.issued, retired, prev_of_role, rkid, pp, derived)
    timings["outputs"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    stats["ppfs"] = {k: int(v) for k, v in links["PPFS"].value_counts().sort_index().items()}
    stats["persons_live"] = int((persons["status"] == "live").sum())
    return LinkResult(links=links, persons=persons, events=events, stats=stats, model=model)
