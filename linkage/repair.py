"""ID repair (spec section 3, step 3): a damaged ID number is mapped to a known person's ID when the
record's name and birth date confirm it.

Candidates for a role whose ID is not well formed:

- `DIGIT` / `TRANSPOSE`: 18-character IDs one keystroke away (`linkage.ids.id_variants`: one digit
  wrong, or two adjacent digits swapped; MOD 11-2 guarantees no valid ID is one keystroke from another);
- `DIGIT15`: a 15-digit legacy number with an impossible date, one digit (or adjacent pair) away from
  a number whose upgrade (`upgrade_15`) is a known ID;
- `EXCEL_000`: 18 digits whose tail Excel turned to `000`: known IDs sharing the first 15 digits;
- `EXCEL_SCI`: `3.20102E+17` and `.0` tails: known IDs starting with the digits Excel kept (the last
  displayed digit may be rounded, so it is dropped) *and* carrying the record's birth date;
- `EXCEL_000` also for a *valid* ID ending in `000` (`excel_tail`): one truncated ID in 11 passes the
  check digit, so the tail is a suspicion, not a proof; known IDs sharing its first 15 digits are
  candidates like a checksum-failing tail's, and the linker adds one guard (`linkage.link`: not when
  police records hold both numbers, two registered persons).

A candidate is accepted only when name (`linkage.names` levels: □ wildcard and homophones
tolerated) and birth date confirm it (`config["repair"]`); when two different persons confirm
equally well, nothing is repaired (the role goes to the fuzzy step).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from linkage import names as nm
from linkage.fuzzy import _fixed_bytes, birth_levels
from linkage.ids import id_variants, upgrade_15

REPAIR_COLUMNS = ["row", "cluster", "id18", "how", "name_level", "birth_level", "ppdf"]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("row", "cluster", "name_level", "birth_level")
                                      else np.float64 if c == "ppdf" else object) for c in REPAIR_COLUMNS})


def _variants15(values: pd.Series) -> pd.DataFrame:
    """Single-digit substitutions and adjacent transpositions of 15-digit numbers, upgraded to 18."""
    vals = values[values.str.fullmatch(r"[0-9]{15}").fillna(False).astype(bool)]
    if vals.empty:
        return pd.DataFrame({"src": [], "variant": [], "kind": []})
    m = np.asarray(vals.to_numpy(), dtype="S15").view(np.uint8).reshape(-1, 15)
    srcs, outs = [], []
    lab = vals.index.to_numpy()
    for pos in range(15):  # loop over positions and digits, vectorised over rows
        for d in range(10):
            v = m.copy()
            changed = v[:, pos] != ord("0") + d
            v[:, pos] = ord("0") + d
            srcs.append(lab[changed])
            outs.append(v[changed])
    for pos in range(14):
        v = m.copy()
        changed = v[:, pos] != v[:, pos + 1]
        v[:, pos], v[:, pos + 1] = m[:, pos + 1], m[:, pos]
        srcs.append(lab[changed])
        outs.append(v[changed])
    src = np.concatenate(srcs)
    var = np.concatenate(outs)
    var15 = pd.Series(var.view("S15").reshape(-1).astype(str), dtype=object)
    up = upgrade_15(var15)
    return pd.DataFrame({"src": src, "variant": up.to_numpy(dtype=object), "kind": "DIGIT15"})


def excel_tail(roles: pd.DataFrame) -> np.ndarray:
    """Valid 18-digit IDs ending in `000`: maybe Excel's 15 kept digits with a tail that happens to pass
    the check digit (a genuine ID ends so once in about 1,100)."""
    id18 = roles["id18"].astype(str)
    return ((roles["id_status"].astype(str) == "VALID18") & (id18.str.len() == 18)
            & id18.str.endswith("000")).to_numpy(dtype=bool)


def repairable(roles: pd.DataFrame) -> np.ndarray:
    """Roles whose number the repair may map to another person's ID: broken (wrong check digit or format),
    damaged by Excel, or a valid ID with an Excel tail (`excel_tail`)."""
    status = roles["id_status"].astype(str).to_numpy(dtype=object)
    damage = roles["id_damage"].astype(str).to_numpy(dtype=object)
    return np.isin(status, ["CHECKSUM", "FORMAT"]) | (damage != "") | excel_tail(roles)


def repair_candidates(roles: pd.DataFrame, todo: np.ndarray, known_ids, cfg: dict,
                      business_date: str) -> pd.DataFrame:
    """Every (row, id18, how) a damaged ID of the rows `todo` could be repaired to: keystroke and 15-digit
    variants whatever is known, Excel-damaged prefixes completed from `known_ids` (for a valid ID with an
    `excel_tail`, the other known IDs of its first 15 digits)."""
    rc = cfg["repair"]
    none = pd.DataFrame({"row": pd.Series(dtype=np.int64), "id18": pd.Series(dtype=object), "how": pd.Series(dtype=object)})
    if len(todo) == 0:
        return none
    R = roles.iloc[todo]
    id_norm = R["id_norm"].astype(str)
    damage = R["id_damage"].astype(str)
    prefix = R["id_prefix"].astype(str)
    tail = excel_tail(R)

    cands = []
    # one keystroke away (18 characters; a valid ID has no valid neighbour: MOD 11-2)
    v18 = id_variants(pd.Series(id_norm.to_numpy()[~tail], index=todo[~tail]), business_date)
    if len(v18):
        cands.append(pd.DataFrame({"row": v18["src"].to_numpy(np.int64), "id18": v18["variant"].to_numpy(),
                                   "how": v18["kind"].to_numpy()}))
    v15 = _variants15(pd.Series(id_norm.to_numpy(), index=todo))
    if len(v15):
        v15 = v15[v15["variant"] != ""]
        cands.append(pd.DataFrame({"row": v15["src"].to_numpy(np.int64), "id18": v15["variant"].to_numpy(),
                                   "how": "DIGIT15"}))
    known_ids = pd.Series(np.asarray(known_ids, dtype=object), dtype=object).drop_duplicates()
    # Excel: the digits it kept
    minp = int(rc.get("excel_sci_min_prefix", 6))
    pre15 = np.where(tail, R["id18"].astype(str).str[:15].to_numpy(dtype=object), prefix.to_numpy(dtype=object))
    sel = ((damage == "EXCEL_000").to_numpy() & (prefix.str.len() == 15).to_numpy()) | tail
    if sel.any():
        k15 = pd.DataFrame({"pre": known_ids.str[:15].to_numpy(dtype=object), "id18": known_ids.to_numpy(dtype=object)})
        hit = pd.DataFrame({"row": todo[sel], "pre": pre15[sel],
                            "own": R["id18"].astype(str).to_numpy(dtype=object)[sel]}).merge(k15, on="pre")
        hit = hit[hit["id18"] != hit["own"]]  # a valid tail's own ID is no repair
        if len(hit):
            cands.append(pd.DataFrame({"row": hit["row"].to_numpy(np.int64), "id18": hit["id18"].to_numpy(), "how": "EXCEL_000"}))
    sel = (damage == "EXCEL_SCI").to_numpy() & (prefix != "").to_numpy()
    if sel.any():
        # the kept digits rarely pin the person down: the birth date must agree, which also keeps this small
        pre = np.array([p[:-1] if len(p) > minp else p for p in prefix.to_numpy(dtype=object)[sel]], dtype=object)
        df = pd.DataFrame({"row": todo[sel], "pre": pre, "birth": roles["birth"].to_numpy(dtype=object)[todo[sel]]})
        df = df[(df["pre"].str.len() >= minp) & (df["birth"] != "")]
        kb = pd.DataFrame({"id18": known_ids.to_numpy(dtype=object)})
        kb["birth"] = kb["id18"].str[6:14]
        kb = kb[kb["birth"].isin(set(df["birth"]))]
        for length, grp in df.groupby(df["pre"].str.len()):
            hit = grp.merge(kb.assign(pre=kb["id18"].str[:length]), on=["pre", "birth"])
            if len(hit):
                cands.append(pd.DataFrame({"row": hit["row"].to_numpy(np.int64), "id18": hit["id18"].to_numpy(),
                                           "how": "EXCEL_SCI"}))
    if not cands:
        return none
    return pd.concat(cands, ignore_index=True).drop_duplicates(["row", "id18"])


def names_could_confirm(a, b, cfg: dict) -> np.ndarray:
    """Pair by pair, whether a damaged number's holder named `a` could be repaired to a known ID whose
    holder is named `b` (`repair_ids` asks at least `min_name_level`, or `min_name_level_without_birth`
    when the record has no birth date), whatever the birth dates: the holders a daily scope must look at."""
    rc = cfg["repair"]
    return nm.name_levels(a, b) >= min(int(rc["min_name_level"]), int(rc["min_name_level_without_birth"]))


def repair_ids(roles: pd.DataFrame, todo: np.ndarray, known: pd.DataFrame, cfg: dict,
               business_date: str) -> pd.DataFrame:
    """Repairs for the role rows `todo` (positions in `roles`).

    `known`: one row per anchored role with columns `row`, `cluster`, `id18` (its person's ID),
    `name_key`, `birth` (the attributes the repair must be confirmed against).
    Returns `REPAIR_COLUMNS`: the accepted repair of each repaired row.
    """
    rc = cfg["repair"]
    if len(todo) == 0 or known.empty:
        return _empty()
    cand = repair_candidates(roles, todo, known["id18"], cfg, business_date)
    if cand.empty:
        return _empty()
    cand = cand.merge(known[["id18", "cluster", "name_key", "birth"]], on="id18")
    if cand.empty:
        return _empty()
    r = cand["row"].to_numpy(np.int64)
    q_name = roles["name_key"].to_numpy(dtype=object)[r]
    q_birth = roles["birth"].astype(str).to_numpy(dtype=object)[r]
    cand["name_level"] = nm.name_levels(q_name, cand["name_key"].to_numpy(dtype=object)).astype(np.int64)
    cand["birth_level"] = birth_levels(_fixed_bytes(q_birth, 8),
                                       _fixed_bytes(cand["birth"].to_numpy(dtype=object), 8)).astype(np.int64)
    # a role with no birth date of its own: the ID's embedded date proves nothing (it came with the ID)
    no_birth = q_birth == ""
    cand.loc[no_birth, "birth_level"] = -1
    ok = (cand["name_level"] >= int(rc["min_name_level"])) & (cand["birth_level"] >= int(rc["min_birth_level"]))
    ok |= (cand["birth_level"] == -1) & (cand["name_level"] >= int(rc["min_name_level_without_birth"]))
    cand = cand[ok]
    if cand.empty:
        return _empty()
    cand["score"] = cand["name_level"] * 10 + cand["birth_level"]
    best = (cand.sort_values(["row", "score", "cluster"], ascending=[True, False, True], kind="mergesort")
                .drop_duplicates(["row", "cluster"]))
    top = best.groupby("row")["score"].transform("max")
    best = best[best["score"] == top]
    nclus = best.groupby("row")["cluster"].transform("nunique")
    best = best[nclus == 1].drop_duplicates("row")  # ambiguous repairs are not made
    ppdf_map = rc.get("ppdf", {})
    default = float(ppdf_map.get("default", 0.9))
    keys = best["name_level"].astype(str) + "|" + best["birth_level"].astype(str)
    best["ppdf"] = keys.map(lambda k: float(ppdf_map.get(k, default))).astype(np.float64)
    return best[REPAIR_COLUMNS].reset_index(drop=True)
