"""The base's index of record roles: what a daily date looks roles up by, so that it reads only what its
deliveries reach (issue 15, docs/scale.md 2.1-2.4). Pure: frames in, frames out.

One row per role of `build_roles` (every role of every live record), computed when its record changes:

- `record` (`BH|YWZJ`), `id_key` (the linker's ID group: a valid citizen ID, or `DOC:<ZJLX>|<number>`),
  `state_id` (`verification.states.state_id_keys`: who else holds the ID, for the rules);
- for ID repair both ways: `broken_id` (a well-formed-looking but broken number, `id_norm`) with the
  keys it shares with the valid IDs one keystroke away (`near_a`..`near_c`, `linkage.ids.near_keys`), and
  `repair_prefix` (the digits an Excel-damaged number kept, or the first 15 of a valid ID ending in
  `000`, `linkage.repair.excel_tail`) with `repair_birth` where they are too few
  to find the ID without the birth date (`linkage.repair`: EXCEL_SCI);
- the business-date sensitivity of `verification.states.date_sensitive`: `format_birth` (the birth date
  inside a FORMAT number), `women_birth` (a family-planning woman's birth date), `marriage_date`;
- the role's contribution to the quality rates (`quality.rates.role_measures`), so the city's rates are a
  GROUP BY in the database.

The blocks of each role's forms are `linkage.blocks.role_blocks` (table `role_forms`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from linkage.base import id_group_keys
from linkage.ids import NEAR_COLUMNS, near_keys
from linkage.repair import excel_tail
from linkage.normalise import normalise_date
from catalog.base import MEASURE_FLAGS, ROLE_INDEX_COLUMNS
from quality.rates import role_measures
from verification.states import state_id_keys


def role_index(roles: pd.DataFrame, role_key: np.ndarray, sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The index rows of `roles` (row-aligned `role_key`); `sources`: the records behind them (overlays
    laid over), for the marriage registration date."""
    if not len(roles):
        return pd.DataFrame(columns=ROLE_INDEX_COLUMNS, dtype=object)
    r = roles.reset_index(drop=True)
    s = {c: r[c].fillna("").astype(str).to_numpy(dtype=object) if c in r else np.full(len(r), "", dtype=object)
         for c in ("BM", "BH", "YWZJ", "JS", "id_status", "id_damage", "id_norm", "id_prefix", "birth", "id_birth")}
    out = pd.DataFrame({"role_key": np.asarray(role_key, dtype=object), "record": s["BH"] + "|" + s["YWZJ"],
                        "BM": s["BM"], "BH": s["BH"]})
    out["id_key"] = id_group_keys(r)
    out["state_id"] = state_id_keys(r)
    broken = np.isin(s["id_status"], ["CHECKSUM", "FORMAT"]) | (s["id_damage"] != "")
    out["broken_id"] = np.where(broken, s["id_norm"], "")
    near = [near_keys(b) if b else ("", "", "") for b in out["broken_id"]]
    for k, col in enumerate(NEAR_COLUMNS):
        out[col] = [n[k] for n in near]
    tail = excel_tail(r)  # a valid ID ending in 000 may be Excel's too: its first 15 digits
    out["repair_prefix"] = np.where(s["id_damage"] != "", s["id_prefix"],
                                    np.where(tail, r["id18"].astype(str).str[:15].to_numpy(dtype=object), ""))
    out["repair_birth"] = np.where((s["id_damage"] != "") & (np.char.str_len(s["id_prefix"].astype(str)) < 15),
                                   s["birth"], "")  # Excel's 3.2E+17 keeps too few digits: the birth date must agree
    emb = np.where(np.char.str_len(s["id_norm"].astype(str)) == 18, [v[6:14] for v in s["id_norm"]],
                   ["19" + v[6:12] for v in s["id_norm"]])
    out["format_birth"] = np.where(s["id_status"] == "FORMAT", emb, "")
    women = (s["BH"] == "women") & (s["JS"] == "SELF")
    out["women_birth"] = np.where(women, np.where(s["birth"] != "", s["birth"], s["id_birth"]), "")
    out["marriage_date"] = ""
    m = s["BH"] == "marriage"
    src = sources.get("marriage")
    if m.any() and src is not None and len(src) and "DJRQ" in src.columns:
        live = src[src["_deleted"] != "1"] if "_deleted" in src.columns else src
        djrq = live.drop_duplicates("_key", keep="last").set_index("_key")["DJRQ"].astype(str)
        got = pd.Series(s["YWZJ"][m]).map(djrq).fillna("").astype(str)
        out.loc[m, "marriage_date"] = normalise_date(got).fillna("").astype(str).to_numpy(dtype=object)
    meas = role_measures(r)
    out["q_dept"] = meas["dept"].to_numpy(dtype=object)
    for f in MEASURE_FLAGS:
        out[f"q_{f}"] = np.where(meas[f].to_numpy(dtype=bool), "1", "0")
    return out[ROLE_INDEX_COLUMNS].astype(str)
