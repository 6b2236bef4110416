"""Re-check only what a day's changes can reach: the roles whose pending-verification states may differ
from yesterday's, and the rows the rules need to evaluate them.

Every rule of `linkage.states` decides a role's states from the role itself, the other roles of its
record, of its person and of its ID number (`state_id_keys`), the department records behind them, and
the business date. So when yesterday's states are known (the base keeps them as the tasks raised on
the last run), a date needs to evaluate only:

- **seeds**: roles that are new or whose content changed (role fingerprint), whose link (RKID, method,
  score) changed, of records answered today (any overlay decided today), of tasks closed by a return
  on the last run or today (a state that still holds reopens such a task), and the date-sensitive
  roles (`linkage.states.date_sensitive`); plus, for roles that disappeared, their old person, ID and
  record;
- **affected**: every role sharing a person, an ID or a record with a seed (old or new value): only
  these can have other states than yesterday;
- **frame**: the affected roles and every role sharing a person, an ID or a record with them: what the
  rules read to decide the affected ones.

States of the other roles are yesterday's. `tests/test_incremental.py` compares the tasks (and every
other table) with re-checking everything, on every date of a generated city.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from linkage.base import role_keys
from linkage.states import date_sensitive, state_id_keys


def _sharing(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rows whose value (not "") is among `chosen`."""
    chosen = chosen[chosen != ""]
    if not len(chosen):
        return np.zeros(len(values), dtype=bool)
    return pd.Series(values, dtype=object).isin(set(chosen)).to_numpy(dtype=bool) & (values != "")


def recheck_rows(roles: pd.DataFrame, links: pd.DataFrame, prev_links: pd.DataFrame, fingerprints: pd.Series,
                 old_roles: pd.DataFrame, tasks: pd.DataFrame, overlays: pd.DataFrame, sources: dict,
                 business_date: str, since: str) -> tuple[np.ndarray, np.ndarray]:
    """(affected, frame): boolean masks over `roles` (see the module docstring).

    `links`: today's links; `prev_links`: yesterday's, with `role_key` and `role_fp`; `fingerprints`:
    today's role fingerprints by role key; `old_roles`: yesterday's version of the roles that changed or
    disappeared; `tasks`: the tasks after today's returns; `since`: the last date processed before.
    """
    keys = role_keys(roles)
    cols = ["RKID", "PPFS", "PPDF"]

    def by_key(frame: pd.DataFrame, index: np.ndarray) -> pd.DataFrame:
        f = frame[cols + [c for c in ("role_fp",) if c in frame.columns]].set_axis(pd.Index(index))
        return f[~f.index.duplicated(keep="last")]

    today = by_key(links, role_keys(links)) if len(links) else pd.DataFrame(columns=cols)
    prev = by_key(prev_links, prev_links["role_key"].to_numpy(dtype=object)) if len(prev_links) \
        else pd.DataFrame(columns=cols + ["role_fp"])
    t = today.reindex(keys)
    p = prev.reindex(keys)
    person = t["RKID"].fillna("").astype(str).to_numpy(dtype=object)
    id_key = state_id_keys(roles)
    record = (roles["BH"].astype(str) + "|" + roles["YWZJ"].astype(str)).to_numpy(dtype=object)
    fp = fingerprints.reindex(keys).fillna("").to_numpy(dtype=object)
    seeds = p["role_fp"].fillna("").astype(str).to_numpy(dtype=object) != fp
    seeds |= p["RKID"].fillna("").astype(str).to_numpy(dtype=object) != person
    seeds |= p["PPFS"].fillna("").astype(str).to_numpy(dtype=object) != t["PPFS"].fillna("").astype(str).to_numpy(dtype=object)
    prev_score = pd.to_numeric(p["PPDF"], errors="coerce").fillna(-1).to_numpy(dtype=float)
    score = pd.to_numeric(t["PPDF"], errors="coerce").fillna(-1).to_numpy(dtype=float)
    seeds |= np.abs(prev_score - score) >= 5e-5
    if len(overlays):
        answered = overlays[overlays["decided"].astype(str) == str(business_date)]
        seeds |= _sharing(record, (answered["BH"].astype(str) + "|" + answered["YWZJ"].astype(str)).to_numpy(dtype=object))
    if len(tasks):
        reopen = tasks[(tasks["close_reason"] == "RETURN")
                       & tasks["closed_date"].astype(str).isin([str(since), str(business_date)])]
        seeds |= _sharing(keys, role_keys(reopen))
    seeds |= date_sensitive(roles, sources, business_date, since)

    # the values the seeds had and have: persons, IDs and records whose roles may now read differently
    persons = [person[seeds], p["RKID"].fillna("").astype(str).to_numpy(dtype=object)[seeds]]
    ids = [id_key[seeds]]
    records = [record[seeds]]
    gone = prev[~prev.index.isin(keys)]
    if len(gone):
        persons.append(gone["RKID"].astype(str).to_numpy(dtype=object))
        records.append(pd.Series(gone.index, dtype=object).str.split("|").str[1:3].str.join("|").to_numpy(dtype=object))
    if old_roles is not None and len(old_roles):
        ids.append(state_id_keys(old_roles))
        records.append((old_roles["BH"].astype(str) + "|" + old_roles["YWZJ"].astype(str)).to_numpy(dtype=object))
    affected = seeds | _sharing(person, np.concatenate(persons)) | _sharing(id_key, np.concatenate(ids)) \
        | _sharing(record, np.concatenate(records))
    frame = affected | _sharing(person, person[affected]) | _sharing(id_key, id_key[affected]) \
        | _sharing(record, record[affected])
    return affected, frame
