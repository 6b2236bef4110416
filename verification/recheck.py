"""Re-check only what a day's changes can reach: the roles whose pending-verification states may differ
from yesterday's, and the rows the rules need to evaluate them.

Every rule of `verification.states` decides a role's states from the role itself, the other roles of its
record, of its person and of its ID number (`state_id_keys`), the department records behind them, and
the business date. So when yesterday's states are known (the base keeps them as the tasks raised on
the last run), a date needs to evaluate only:

- **seeds**: roles that are new or whose content changed (role fingerprint), whose link (RKID, method,
  score, explanation) changed, of records answered today (any overlay decided today), of tasks closed by a return
  on the last run or today (a state that still holds reopens such a task), and the date-sensitive
  roles (`verification.states.date_sensitive`); plus, for roles that disappeared, their old person, ID and
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
from verification.states import date_sensitive, state_id_keys


def _sharing(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rows whose value (not "") is among `chosen`."""
    chosen = chosen[chosen != ""]
    if not len(chosen):
        return np.zeros(len(values), dtype=bool)
    return pd.Series(values, dtype=object).isin(set(chosen)).to_numpy(dtype=bool) & (values != "")


def _positions(index_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each of `keys` among `index_keys` (the last one if repeated), -1 where absent."""
    index = pd.Index(index_keys)
    if index.is_unique:
        return index.get_indexer(keys)
    last = ~pd.Series(index_keys).duplicated(keep="last").to_numpy()  # the last row of each key
    pos = np.flatnonzero(last)
    i = pd.Index(index_keys[last]).get_indexer(keys)
    return np.where(i >= 0, pos[np.maximum(i, 0)], -1)


def _take(values: np.ndarray, pos: np.ndarray, empty="") -> np.ndarray:
    out = np.full(len(pos), empty, dtype=object)
    out[pos >= 0] = values[pos[pos >= 0]]
    return out


def recheck_rows(roles: pd.DataFrame, keys: np.ndarray, links: pd.DataFrame, link_keys: np.ndarray,
                 prev_links: pd.DataFrame, fingerprints: np.ndarray, old_roles: pd.DataFrame, tasks: pd.DataFrame,
                 overlays: pd.DataFrame, sources: dict, business_date: str, since: str) -> tuple[np.ndarray, np.ndarray]:
    """(affected, frame): boolean masks over `roles` (see the module docstring).

    `keys`, `link_keys`: the role keys of `roles` and of `links` (today's links); `prev_links`:
    yesterday's, with `role_key` and `role_fp`; `fingerprints`: today's role fingerprints, row by row;
    `old_roles`: yesterday's version of the roles that changed or disappeared; `tasks`: the tasks after
    today's returns; `since`: the last date processed before.
    """
    at = _positions(link_keys, keys)
    prev_keys = prev_links["role_key"].to_numpy(dtype=object)
    was = _positions(prev_keys, keys)

    def today(col):
        return _take(links[col].astype(str).to_numpy(dtype=object), at)

    def before(col):
        return _take(prev_links[col].astype(str).to_numpy(dtype=object), was)

    person = today("RKID")
    id_key = state_id_keys(roles)
    record = (roles["BH"].astype(str) + "|" + roles["YWZJ"].astype(str)).to_numpy(dtype=object)
    prev_person = before("RKID")
    seeds = (before("role_fp") != fingerprints) | (prev_person != person) | (before("PPFS") != today("PPFS"))
    prev_score = pd.to_numeric(pd.Series(before("PPDF")), errors="coerce").fillna(-1).to_numpy(dtype=float)
    score = pd.to_numeric(pd.Series(today("PPDF")), errors="coerce").fillna(-1).to_numpy(dtype=float)
    seeds |= np.abs(prev_score - score) >= 5e-5
    if "PPMX" in links and "PPMX" in prev_links:  # the explanation a FUZZY_CANDIDATE task shows
        seeds |= before("PPMX") != today("PPMX")
    if len(overlays):
        answered = overlays[overlays["decided"].astype(str) == str(business_date)]
        seeds |= _sharing(record, (answered["BH"].astype(str) + "|" + answered["YWZJ"].astype(str)).to_numpy(dtype=object))
    if len(tasks):
        reopen = tasks[(tasks["close_reason"] == "RETURN")
                       & tasks["closed_date"].astype(str).isin([str(since), str(business_date)])]
        seeds |= _sharing(keys, role_keys(reopen))
    seeds |= date_sensitive(roles, sources, business_date, since)

    # the values the seeds had and have: persons, IDs and records whose roles may now read differently
    persons = [person[seeds], prev_person[seeds]]
    ids = [id_key[seeds]]
    records = [record[seeds]]
    still = np.zeros(len(prev_keys), dtype=bool)
    still[was[was >= 0]] = True
    gone = prev_links[~still]
    if len(gone):
        persons.append(gone["RKID"].astype(str).to_numpy(dtype=object))
        records.append(pd.Series(gone["role_key"].to_numpy(dtype=object)).str.split("|").str[1:3].str.join("|")
                       .to_numpy(dtype=object))
    if old_roles is not None and len(old_roles):
        ids.append(state_id_keys(old_roles))
        records.append((old_roles["BH"].astype(str) + "|" + old_roles["YWZJ"].astype(str)).to_numpy(dtype=object))
    affected = seeds | _sharing(person, np.concatenate(persons)) | _sharing(id_key, np.concatenate(ids)) \
        | _sharing(record, np.concatenate(records))
    frame = affected | _sharing(person, person[affected]) | _sharing(id_key, id_key[affected]) \
        | _sharing(record, record[affected])
    return affected, frame
