"""Verification tasks (核查任务): stable task numbers, opening today's states, closing what no longer holds.

A task is one state on one record role; its number `RWBH` is a hash of both, so the same problem
keeps its number across runs and re-runs. Its deadline `HCQX` is the 10th working day after it was
issued (`verification.workdays.deadline`).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from catalog.base import TASK_COLUMNS
from verification.workdays import deadline


def task_number(bm, bh=None, ywzj=None, js=None, hczt=None):
    """Stable task number RWBH: `HC` + the first 16 upper-case hex digits of sha256("BM|BH|YWZJ|JS|HCZT").

    The same state on the same record role keeps its number across runs and re-runs. Call it with a
    frame holding those five columns (→ Series on the frame's index), with five Series / array-likes
    (→ Series), or with five strings (→ str).
    """
    if isinstance(bm, pd.DataFrame):
        frame = bm
        bm, bh, ywzj, js, hczt = (frame[c] for c in ("BM", "BH", "YWZJ", "JS", "HCZT"))
    parts = [bm, bh, ywzj, js, hczt]
    if all(isinstance(p, str) for p in parts):
        return "HC" + hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16].upper()
    index = next((p.index for p in parts if isinstance(p, pd.Series)), None)
    n = next(len(p) for p in parts if not isinstance(p, str))
    cols = [pd.Series(p, dtype=object).fillna("").astype(str).to_numpy() if not isinstance(p, str)
            else np.full(n, p, dtype=object) for p in parts]
    keys = cols[0] + "|" + cols[1] + "|" + cols[2] + "|" + cols[3] + "|" + cols[4]  # vectorised concatenation
    digests = [hashlib.sha256(k.encode("utf-8")).hexdigest() for k in keys]  # hashing has no vector form
    out = pd.Series(digests, index=index, dtype=object).str[:16].str.upper()
    return "HC" + out


def update_tasks(tasks: pd.DataFrame, states: pd.DataFrame, roles: pd.DataFrame, date: str,
                 suppressed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Open tasks for today's states, close those whose condition is gone (自动销号), keep RWBH stable."""
    keys = ["BM", "BH", "YWZJ", "JS"]
    st = states.copy()
    if len(suppressed):
        sup = suppressed[["BM", "BH", "YWZJ", "JS", "HCZT"]].drop_duplicates()
        st = st.merge(sup, on=keys + ["HCZT"], how="left", indicator=True)
        st = st[st["_merge"] == "left_only"].drop(columns="_merge")
    st["RWBH"] = task_number(st) if len(st) else pd.Series(dtype=object)
    st = st.drop_duplicates("RWBH")
    raw = roles[keys + ["XM", "GMSFHM", "XB", "CSRQ"]].drop_duplicates(keys)
    st = st.merge(raw, on=keys, how="left").fillna("")
    t = (tasks.copy().set_index("RWBH", drop=False) if len(tasks)
         else pd.DataFrame(columns=TASK_COLUMNS).set_index("RWBH", drop=False))
    st = st.set_index("RWBH", drop=False)
    raised = st.index
    is_open = t["status"] == "open"
    # close: open tasks not raised today (answered tasks were closed already by returns)
    gone = t.index[is_open & ~t.index.isin(raised)]
    t.loc[gone, "status"] = "closed"
    t.loc[gone, "closed_date"] = date
    t.loc[gone, "close_reason"] = "AUTO"
    audit = [_task_audit(t.loc[gone], date, "open", "closed", "condition no longer holds (自动销号)")]
    # new or reopened: raised today and not open now (closed by a return today stays closed today)
    closed_today = t.index[(t["status"] == "closed") & (t["closed_date"] == date) & (t["close_reason"] == "RETURN")]
    fresh = raised[~raised.isin(t.index[t["status"] == "open"]) & ~raised.isin(closed_today)]
    due = deadline(date)
    new_rows = st.loc[fresh].copy()
    new_rows["status"] = "open"
    new_rows["XFRQ"] = date
    new_rows["HCQX"] = due
    for c in ("closed_date", "close_reason", "HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ"):
        new_rows[c] = ""
    reopened = new_rows.index.isin(t.index)
    audit.append(_task_audit(new_rows[reopened], date, "closed", "open", "state raised again: " + new_rows.loc[reopened, "HCZT"]))
    audit.append(_task_audit(new_rows[~reopened], date, "", "open", "state raised: " + new_rows.loc[~reopened, "HCZT"]))
    # refresh descriptive columns of tasks still open
    still = raised[raised.isin(t.index[t["status"] == "open"])]
    for c in ("RKID", "WTMS", "DBXX", "XM", "GMSFHM", "XB", "CSRQ", "route"):
        t.loc[still, c] = st.loc[still, c].astype(str)
    t.loc[raised[raised.isin(t.index)], "last_raised"] = date
    new_rows["last_raised"] = date
    t = t[~t.index.isin(new_rows.index)]
    out = pd.concat([t, new_rows.reindex(columns=TASK_COLUMNS, fill_value="")], ignore_index=True)
    return out[TASK_COLUMNS].fillna("").astype(str), pd.concat(audit, ignore_index=True)


def _task_audit(rows: pd.DataFrame, date: str, old: str, new: str, cause) -> pd.DataFrame:
    """Audit rows for a status change of many tasks at once."""
    return pd.DataFrame({"business_date": date, "entity": "task", "entity_key": rows["RWBH"].to_numpy(),
                         "RKID": rows["RKID"].to_numpy(), "field": "status", "old": old, "new": new,
                         "cause": cause if isinstance(cause, str) else cause.to_numpy(), "actor": "popbase"})
