"""The blocks a role sits in, as data: one stable hash per blocking pass of `config/linkage.json` and per
form the role can take, so that the base can index them and a daily date can find a role's fuzzy
neighbourhood by lookups instead of building the blocks of the whole city (issue 15, docs/scale.md 2.2).

The forms are those of `linkage.incremental._Reach`: `Q`, the role untrusted with its query ID evidence
(the form it is a fuzzy query in, and a target in); `T`, the role trusted with its valid citizen ID or
its other document (birth date and sex filled from the ID). A `T` row is kept only where one of its
blocks differs from the `Q` row's. The hash of a block is `fuzzy.block_hash`, the value the model's skip
list holds; a pass whose fields are not all filled gives no block (""). Passes come from the
configuration, so a new pass needs no code: its column appears in `block_columns(cfg)`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from linkage import fuzzy as fz
from linkage.base import id_group_keys, usable_ids
from linkage.link import _partner_rows, borrowed_place, query_id_evidence
from linkage.repair import repairable

FORM_COLUMNS = ["form_key", "role_key", "form"]
# what a form is compared on (the values `fuzzy.prepare` gives it), so that the scope can tell which
# pairs of a block can be kept candidates (`reachable`) without building the roles behind them
COMPARE_COLUMNS = ["p_name_key", "p_birth", "p_sex", "p_region", "p_address", "p_idk", "p_idv", "p_spouse"]  # = store.db


def block_passes(cfg: dict) -> list[tuple[str, list[str]]]:
    """(name, fields) of every blocking pass that can be indexed: all but the spouse pass, whose keys are
    a run's own entity numbers."""
    out = []
    for i, spec in enumerate(cfg["fuzzy"]["blocking"]):
        keys = list(spec["keys"])
        if "partner" in keys:
            continue
        name = str(spec.get("name", f"pass{i}"))
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ValueError(f"blocking pass name {name!r}: use letters, digits and _ only")
        out.append((name, keys))
    return out


def query_empty_columns(cfg: dict) -> dict[str, list[str]]:
    """Per block column, the compare columns a form must have empty to be a query of that pass (the
    pass's `queries_missing`: `name_without_birth` serves queries without a birth date only). A field
    with no compare column puts no condition (the scope then takes in more, never less)."""
    out = {}
    for spec in cfg["fuzzy"]["blocking"]:
        missing = [f"p_{f}" for f in spec.get("queries_missing", ())]
        if missing and all(c in COMPARE_COLUMNS for c in missing) and "partner" not in spec["keys"]:
            out[f"bk_{spec['name']}"] = missing
    return out


def block_columns(cfg: dict) -> list[str]:
    return [f"bk_{name}" for name, _ in block_passes(cfg)]


def role_blocks(roles: pd.DataFrame, role_key: np.ndarray, cfg: dict) -> pd.DataFrame:
    """One row per (role, form): `form_key` (`<role_key>|<form>`), `role_key`, `form`, and `bk_<pass>` (the
    block hash as a Python int, the signed 64-bit view of `fuzzy.block_hash`; None when the role is in no
    block of the pass: stored as NULL in an INTEGER column, which halves the rows and index entries
    against decimal text). `roles` come from `build_roles` with the linker's columns (`_canonical`);
    `role_key` row-aligned."""
    passes = block_passes(cfg)
    cols = FORM_COLUMNS + COMPARE_COLUMNS + [f"bk_{n}" for n, _ in passes]
    n = len(roles)
    if not n:
        return pd.DataFrame(columns=cols, dtype=object)
    R = roles.reset_index(drop=True)
    partner = _partner_rows(R[["BH", "YWZJ", "JS"]])
    idk_q, idv_q = query_id_evidence(R)
    citizen_id, doc = usable_ids(R)
    citizen = citizen_id != ""
    P = fz.prepare(R[["name_key", "birth", "id_birth", "sex", "id_sex", "region", "address"]], np.zeros(n, dtype=bool),
                   idk_q, idv_q, overrides=borrowed_place(R, partner))
    trusted = np.concatenate([np.flatnonzero(citizen), np.flatnonzero(doc)]).astype(np.int64)
    idk = np.concatenate([np.full(int(citizen.sum()), "V", dtype=object), np.full(int(doc.sum()), "", dtype=object)])
    idv = np.concatenate([citizen_id[citizen], np.full(int(doc.sum()), "", dtype=object)])
    P = P.with_forms(trusted, R["id_birth"].to_numpy(dtype=object)[trusted], R["id_sex"].to_numpy(dtype=object)[trusted],
                     idk, idv)
    src = np.concatenate([np.arange(n), trusted])
    rows = np.arange(len(src))
    out = {"role_key": np.asarray(role_key, dtype=object)[src],
           "form": np.where(rows < n, "Q", "T").astype(object)}
    address = borrowed_place(R, partner).get("address", R["address"].astype(str).to_numpy(dtype=object))
    for c in ("name_key", "birth", "sex", "region", "idk", "idv"):
        out[f"p_{c}"] = np.asarray(P.cols[c], dtype=object)
    out["p_address"] = np.asarray(address, dtype=object)[src]
    out["p_spouse"] = spouse_keys(R, partner)[src]
    differs = np.zeros(len(src), dtype=bool)
    for name, keys in passes:
        ok = np.ones(len(src), dtype=bool)
        for k in keys:
            ok &= P.codes(k)[0] >= 0
        h = block_ints(fz.block_hash(P, rows, keys))
        h[~ok] = None
        out[f"bk_{name}"] = h
        differs[n:] |= h[n:] != h[src[n:]]
    frame = pd.DataFrame(out)
    frame = frame[(rows < n) | differs]
    frame.insert(0, "form_key", frame["role_key"] + "|" + frame["form"])
    return frame[cols].reset_index(drop=True)


def block_ints(hashes) -> np.ndarray:
    """Block hashes (`fuzzy.block_hash`, uint64; or a model's skip list) as the role index stores them:
    Python ints of their signed 64-bit view (an SQL INTEGER / BIGINT), in an object array."""
    return np.asarray(hashes, dtype=np.uint64).view(np.int64).astype(object)


def spouse_keys(R: pd.DataFrame, partner: np.ndarray) -> np.ndarray:
    """What the spouse feature can make of each role's spouse, for bounding it: the feature agrees when the
    role's spouse (`partner`: its row in `R`, -1 none) and the candidate's spouse are in one ID cluster
    (`linkage.link._prepare_fuzzy`: a spouse's entity is its ID cluster, or one of its own), and a cluster
    holds one ID group. So: "" no spouse, or a spouse with no number (it joins no cluster); the spouse's ID
    group key (`id_group_keys`) when that group is the only one it can join; "*" when its number could be
    repaired to another (broken, damaged or an Excel tail: `linkage.repair`). Two roles' spouses can agree
    only when `spouses_can_agree` says so."""
    own = np.where(repairable(R), "*", id_group_keys(R)).astype(object)
    return np.where(partner >= 0, own[np.maximum(partner, 0)], "").astype(object)


def spouses_can_agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pair by pair, whether spouses with keys `a` and `b` (`spouse_keys`) can be in one ID cluster."""
    return (a != "") & (b != "") & ((a == b) | (a == "*") | (b == "*"))


def reach_bits(model: fz.FSModel, P: fz.Prepared, left: np.ndarray, right: np.ndarray, both_spouses: np.ndarray,
               cuts, keep_min: float) -> np.ndarray:
    """Which pairs (query form `left`, target form `right` of `P`) can reach the keep threshold at best:
    birth, sex, region and ID compared, the spouse feature at its best where the spouses can agree
    (`both_spouses`: `spouses_can_agree`), then name and address only while the pair can still reach it
    and might still miss it (`linkage.incremental._Reach`): a pair at the threshold whatever they say is
    not compared on them (`FSModel.min_bits`; the address comparison is most of the cost)."""
    lv = fz.compare_pairs(P, left, right, cuts, features=("birth", "sex", "region", "id"))
    b = np.zeros(len(left), dtype=np.float64)
    for f in ("birth", "sex", "region", "id"):
        b += model.feature_bits(P, left, f, lv[f])
    b += np.where(both_spouses, model.max_bits("partner"), 0.0)
    alive = np.ones(len(left), dtype=bool)
    sure = np.zeros(len(left), dtype=bool)
    for i, f in enumerate(("name", "address")):
        rest = ("name", "address")[i:]
        alive &= b + sum(model.max_bits(g) for g in rest) >= keep_min
        sure |= alive & (b + sum(model.min_bits(g) for g in rest) >= keep_min)
        alive &= ~sure
        sel = np.flatnonzero(alive)
        if not len(sel):
            break
        b[sel] += model.feature_bits(P, left[sel], f, fz.compare_pairs(P, left[sel], right[sel], cuts, features=(f,))[f])
    return sure | (alive & (b >= keep_min))


def form_reach(forms: pd.DataFrame, model: fz.FSModel, cfg: dict):
    """The forms `forms` (rows with `COMPARE_COLUMNS`, as `role_blocks` gives them) prepared once; returns
    `reach(left, right)`: row by row, whether the query form at position `left` and the target form at
    position `right` can be a kept candidate pair (the test the scope of a date filters a block with)."""
    both = forms[COMPARE_COLUMNS].fillna("").astype(str)
    n = len(both)
    frame = pd.DataFrame({"name_key": both["p_name_key"], "birth": both["p_birth"], "sex": both["p_sex"],
                          "region": both["p_region"], "address": both["p_address"]}).reset_index(drop=True)
    P = fz.prepare(frame, np.zeros(n, dtype=bool), both["p_idk"].to_numpy(dtype=object), both["p_idv"].to_numpy(dtype=object),
                   blocking=False)
    fzc = cfg["fuzzy"]
    keep_min = fz.keep_min_bits(fzc) - model.log2_prior_odds
    spouses = both["p_spouse"].to_numpy(dtype=object)
    cuts = fz.address_declaration(fzc)

    def reach(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if not len(left):
            return np.zeros(0, dtype=bool)
        return reach_bits(model, P, left, right, spouses_can_agree(spouses[left], spouses[right]), cuts, keep_min)

    return reach
