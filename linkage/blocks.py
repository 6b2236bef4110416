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
from linkage.link import _partner_rows, borrowed_place, query_id_evidence

FORM_COLUMNS = ["form_key", "role_key", "form"]


def id_group_keys(roles: pd.DataFrame) -> np.ndarray:
    """The ID group of each role, as the linker groups roles (`linkage.incremental`): its valid citizen ID,
    or `DOC:<ZJLX>|<number>` for another document, "" for none."""
    status = roles["id_status"].astype(str).to_numpy(dtype=object)
    id18 = roles["id18"].astype(str).to_numpy(dtype=object)
    id_norm = roles["id_norm"].astype(str).to_numpy(dtype=object)
    zjlx = roles["ZJLX"].astype(str).str.strip().to_numpy(dtype=object)
    citizen = np.isin(status, ["VALID18", "VALID15"]) & (id18 != "")
    doc = (status == "OTHER_DOC") & (id_norm != "")
    out = np.where(citizen, id18, "").astype(object)
    if doc.any():
        out[doc] = "DOC:" + zjlx[doc] + "|" + id_norm[doc]
    return out


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


def block_columns(cfg: dict) -> list[str]:
    return [f"bk_{name}" for name, _ in block_passes(cfg)]


def role_blocks(roles: pd.DataFrame, role_key: np.ndarray, cfg: dict) -> pd.DataFrame:
    """One row per (role, form): `form_key` (`<role_key>|<form>`), `role_key`, `form`, and `bk_<pass>` (the
    block hash as decimal text, "" when the role is in no block of the pass). `roles` come from
    `build_roles` with the linker's columns (`_canonical`); `role_key` row-aligned."""
    passes = block_passes(cfg)
    cols = FORM_COLUMNS + [f"bk_{n}" for n, _ in passes]
    n = len(roles)
    if not n:
        return pd.DataFrame(columns=cols, dtype=object)
    R = roles.reset_index(drop=True)
    partner = _partner_rows(R[["BH", "YWZJ", "JS"]])
    idk_q, idv_q = query_id_evidence(R)
    status = R["id_status"].astype(str).to_numpy(dtype=object)
    id18 = R["id18"].astype(str).to_numpy(dtype=object)
    id_norm = R["id_norm"].astype(str).to_numpy(dtype=object)
    citizen = np.isin(status, ["VALID18", "VALID15"]) & (id18 != "")
    doc = (status == "OTHER_DOC") & (id_norm != "")
    P = fz.prepare(R[["name_key", "birth", "id_birth", "sex", "id_sex"]], np.zeros(n, dtype=bool), idk_q, idv_q,
                   overrides=borrowed_place(R, partner))
    trusted = np.concatenate([np.flatnonzero(citizen), np.flatnonzero(doc)]).astype(np.int64)
    idk = np.concatenate([np.full(int(citizen.sum()), "V", dtype=object), np.full(int(doc.sum()), "", dtype=object)])
    idv = np.concatenate([id18[citizen], np.full(int(doc.sum()), "", dtype=object)])
    P = P.with_forms(trusted, R["id_birth"].to_numpy(dtype=object)[trusted], R["id_sex"].to_numpy(dtype=object)[trusted],
                     idk, idv)
    src = np.concatenate([np.arange(n), trusted])
    rows = np.arange(len(src))
    out = {"role_key": np.asarray(role_key, dtype=object)[src],
           "form": np.where(rows < n, "Q", "T").astype(object)}
    differs = np.zeros(len(src), dtype=bool)
    for name, keys in passes:
        ok = np.ones(len(src), dtype=bool)
        for k in keys:
            ok &= P.codes(k)[0] >= 0
        h = fz.block_hash(P, rows, keys).view(np.int64)
        text = np.where(ok, h.astype(str).astype(object), "")
        out[f"bk_{name}"] = text
        differs[n:] |= text[n:] != text[src[n:]]
    frame = pd.DataFrame(out)
    frame = frame[(rows < n) | differs]
    frame.insert(0, "form_key", frame["role_key"] + "|" + frame["form"])
    return frame[cols].reset_index(drop=True)
