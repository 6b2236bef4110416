"""Incremental linking: re-link only the roles a day's changes can reach, with the same result as a rebuild.

`link_incremental(roles, old_roles, persons_prev, links_prev, decisions, business_date, cfg, model)`

`link_roles` clusters every role of the city. Its result for a role depends only on a neighbourhood:
the role's ID group (stage 1), its person's other roles (RKID continuity), its record's other role
(spouse evidence), the IDs its damaged ID could be repaired to and, if it has no usable ID, its kept
candidate pairs: the pairs of its fuzzy blocks whose Bayes factor reaches the keep threshold
(`fuzzy.score_queries`; pairs below it are dropped before the posterior is normalised, so they change
nothing). That holds because the model is fixed (the base keeps the model of its first date) and so
are the blocks it skips (`FSModel.skip_blocks`, also from the first date). So a date's run:

1. **Seeds**: roles that are new, gone, or whose content changed (role fingerprint), and roles with a
   decision taken today.
2. **Work set W**: the seeds closed under "shares an ID group, a previous person, a record, or a
   repair candidate", and under reachable pairs with the rows that may be fuzzy queries (not ID-linked
   yesterday): a query joins when it reaches a row of W or a query of W reaches it. Reachable
   (`_Reach`) is a superset of "kept in a whole-city run, yesterday or today": every form a row can
   take as a target (trusted or not, each ID it could be repaired to) is scored with the kept model.
   The old versions of changed and removed roles take part with their old values.
3. **Context C**: the rows W's queries reach, the holders of the IDs their damaged IDs could be
   repaired to, the spouses' persons; closed under ID group, person, record and decisions so that
   their own links come out as they were. The possible queries among them keep yesterday's links
   without searching their candidates (`_kept`): none of those changed, or they would be in W.
4. `link_roles` on W ∪ C (`kept=`: the context's possible queries). The run is accepted when every
   other context row kept its RKID, method and score,
   every fuzzy query of the sub-run had searched its candidates, every spouse person it used was there
   and no person of the sub-run has roles outside it; otherwise the offending rows join W or C and the
   sub-run is repeated.
5. Rows outside W ∪ C keep yesterday's links; W's come from the sub-run.

When W or W ∪ C grows past `max_share` of the roles, or the checks do not settle within `max_rounds`,
the whole city is linked (the same function as a rebuild), so the answer is always a rebuild's answer;
`tests/test_incremental.py` compares the two on every date of a generated city.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from linkage import fuzzy as fz
from linkage.blocks import reach_bits, spouse_keys, spouses_can_agree
from linkage.base import LINK_KEY, PERSON_COLUMNS, id_group_keys, rkid_for, role_keys, usable_ids
from linkage.link import (DEFAULT_TABLE_ORDER, LinkResult, _canonical, _isin, _partner_rows, borrowed_place, link_roles,
                          query_id_evidence)
from linkage.repair import repair_candidates, repairable

FUZZY_METHODS = ("FUZZY", "POSSIBLE", "UNMATCHED")
QUERY_METHODS = FUZZY_METHODS + ("MANUAL",)
# what the neighbourhood reads of a role (`_canonical` guarantees them, without NaN)
NEIGHBOURHOOD_COLUMNS = LINK_KEY + ["ZJLX", "name_key", "id_norm", "id_status", "id18", "id_damage", "id_prefix",
                                   "id_birth", "id_sex", "sex", "birth", "region", "address"]
FINGERPRINT_COLUMNS = [
    "XM", "ZJLX", "GMSFHM", "XB", "CSRQ", "MZ", "name", "name_key", "id_norm", "id_status", "id18", "id_damage",
    "id_prefix", "id_birth", "id_sex", "sex", "birth", "region", "address", "ZT", "active", "_ts",
]


# columns with a handful of distinct values: hashed per distinct value (pandas `categorize`), the
# others string by string, which is faster when nearly every value is distinct (IDs, names, addresses)
_FEW_VALUES = {"ZJLX", "XB", "MZ", "id_status", "id_damage", "id_prefix", "id_sex", "sex", "region", "ZT", "active",
               "CSRQ", "birth", "id_birth"}


def role_fingerprints(roles: pd.DataFrame) -> np.ndarray:
    """A hash of every value of a role the linker reads: it changes exactly when the role's content does.

    Column by column, without copying the frame (at 2.1 M roles: 12.4 s as one hashed frame, 3-4 s so).
    Roles hold strings, never NaN (build_roles)."""
    if not len(roles):
        return np.zeros(0, dtype=object)
    h = np.zeros(len(roles), dtype=np.uint64)
    for c in FINGERPRINT_COLUMNS:
        if c not in roles.columns:
            continue
        v = roles[c].to_numpy()
        if c == "active":
            v = np.where(v.astype(bool), "True", "False").astype(object)
        elif v.dtype != object:
            v = v.astype(str).astype(object)
        h = (h * np.uint64(0x100000001B3)) ^ pd.util.hash_array(v, categorize=c in _FEW_VALUES)
    return h.astype(str).astype(object)


# ------------------------------------------------------------------------------------ reachable pairs
class _Reach:
    """Which rows can form a kept candidate pair (`fuzzy.score_queries`) in a whole-city run, on
    yesterday's values or today's: a superset computed without knowing the run's ID stage.

    As a fuzzy query a row's comparison values are fixed by the row itself (no trusted ID; ID evidence
    from its broken ID or a damaged one's prefix). As a target they depend on what the ID stage makes
    of it, so each row stands here in every form it can take: untrusted with its query evidence, trusted
    with its valid citizen ID, trusted with each ID its damaged one could be repaired to, trusted with
    its other document. A pair is reachable when it shares a block of some pass (the model's skip list
    applied to the query, as in `candidate_pairs`) and its Bayes factor, with the spouse feature counted
    at its best when both have a spouse, reaches the keep threshold; since the real pair is one of the
    forms compared, every pair a whole-city run keeps is reachable.
    """

    def __init__(self, U: pd.DataFrame, n: int, partner: np.ndarray, spouse_person: np.ndarray, citizen_id: np.ndarray,
                 other_doc: np.ndarray, repair_row: np.ndarray, repair_ids: np.ndarray, pq: np.ndarray,
                 decided: np.ndarray, cfg: dict, model: fz.FSModel):
        t = time.perf_counter()
        N = len(U)
        self.n, self.N = n, N
        self.model = model
        fzc = cfg["fuzzy"]
        self.passes = [(spec.get("name", f"pass{i}"), list(spec["keys"]), list(spec.get("queries_missing", ())))
                       for i, spec in enumerate(fzc["blocking"])]
        self.chunk = int(fzc["chunk_pairs"])
        self.cuts = fz.address_declaration(fzc)
        self.keep_min = fz.keep_min_bits(fzc) - model.log2_prior_odds
        idk_q, idv_q = query_id_evidence(U)  # the ID evidence of a row as a query
        # the forms a row can take as a target
        rows_v = np.flatnonzero(citizen_id != "")
        rows_d = np.flatnonzero(other_doc)
        trusted = np.concatenate([rows_v, repair_row, rows_d]).astype(np.int64)
        src = np.concatenate([np.arange(N), trusted])
        idk = np.concatenate([np.full(len(rows_v) + len(repair_row), "V", dtype=object),
                              np.full(len(rows_d), "", dtype=object)])
        idv = np.concatenate([citizen_id[rows_v], np.asarray(repair_ids, dtype=object),
                              np.full(len(rows_d), "", dtype=object)])
        # every row untrusted (its form as a query), then the trusted forms
        frame = U[["name_key", "birth", "id_birth", "sex", "id_sex", "region", "address"]]
        base = fz.prepare(frame, np.zeros(N, dtype=bool), idk_q, idv_q, overrides=borrowed_place(U, partner))
        self.P = base.with_forms(trusted, U["id_birth"].to_numpy(dtype=object)[trusted],
                                 U["id_sex"].to_numpy(dtype=object)[trusted], idk, idv)
        pc, _ = pd.factorize(spouse_person)
        pc = pc.astype(np.int64)
        pc[spouse_person == ""] = -1
        self.P.set_partner(pc[src])
        self.src = src
        self.spouse = spouse_keys(U, partner)[src]
        self.pq = pq
        self.is_pq_form = pq[src]
        self.current_form = src < n
        self.trusted_form = np.arange(len(src)) >= N
        self.decided = decided
        self._index: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._keys: dict[str, np.ndarray] = {}
        self.timings = {"prepare": round(time.perf_counter() - t, 2)}
        self.pairs_scored = 0

    # -- blocks
    def _key(self, name: str, keys: list[str]) -> np.ndarray:
        """int64 block key of every form in a pass (-1: not in it)."""
        got = self._keys.get(name)
        if got is None:
            P = self.P
            key = np.zeros(len(P), dtype=np.int64)
            ok = np.ones(len(P), dtype=bool)
            for k in keys:
                c, m = P.codes(k)
                ok &= c >= 0
                key = key * (m + 1) + (c + 1)
            got = np.where(ok, key, -1)
            self._keys[name] = got
        return got

    def _query_ok(self, rows: np.ndarray, name: str, keys: list[str], missing: list[str]) -> np.ndarray:
        """Query forms `rows` that take part in a pass: in a block, lacking the fields the pass is for,
        and not in a block the model skips."""
        ok = self._key(name, keys)[rows] >= 0
        for k in missing:
            ok &= self.P.cols[k][rows] == ""
        skip = self.model.skip_blocks.get(name) if self.model.skip_blocks is not None else None
        if keys != ["partner"] and skip is not None and len(skip) and ok.any():
            sel = np.flatnonzero(ok)
            ok[sel[np.isin(fz.block_hash(self.P, rows[sel], keys), skip)]] = False
        return ok

    def _sorted(self, tag: str, name: str, rows) -> tuple[np.ndarray, np.ndarray]:
        """(sorted block keys, their forms) of the forms `rows` (or `rows()`) in a pass: an index to look
        blocks up in, built once per tag."""
        got = self._index.get((tag, name))
        if got is None:
            rows = rows() if callable(rows) else rows
            kr = self._keys[name][rows]  # `_key` has built it
            rows = rows[kr >= 0]
            kr = kr[kr >= 0]
            o = np.argsort(kr, kind="stable")
            got = (kr[o], rows[o])
            self._index[(tag, name)] = got
        return got

    def _expand(self, probe: np.ndarray, probe_keys: np.ndarray, idx: tuple[np.ndarray, np.ndarray]):
        """(probe form, indexed form) pairs sharing a block, in chunks of about `chunk_pairs`."""
        sk, sr = idx
        lo = np.searchsorted(sk, probe_keys, side="left")
        hi = np.searchsorted(sk, probe_keys, side="right")
        cnt = (hi - lo).astype(np.int64)
        has = cnt > 0
        probe, lo, cnt = probe[has], lo[has], cnt[has]
        if not len(probe):
            return
        csum = np.cumsum(cnt)
        start = 0
        while start < len(probe):
            base = csum[start - 1] if start else 0
            stop = int(np.searchsorted(csum, base + self.chunk, side="right"))
            stop = max(stop, start + 1)
            c = cnt[start:stop]
            tot = int(c.sum())
            owner = np.repeat(np.arange(start, stop), c)
            off = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)
            yield probe[owner], sr[lo[owner] + off]
            start = stop

    def _score(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mask, left, right): which pairs (query form, target form), self pairs left out, can reach the
        keep threshold at best."""
        m, P = self.model, self.P
        keep = self.src[left] != self.src[right]
        left, right = left[keep], right[keep]
        self.pairs_scored += len(left)
        if not len(left):
            return np.zeros(0, dtype=bool), left, right
        both = spouses_can_agree(self.spouse[left], self.spouse[right])
        return reach_bits(m, P, left, right, both, self.cuts, self.keep_min), left, right

    def _pairs(self, queries: np.ndarray, target_forms: np.ndarray, tag: str, by_target: bool = False):
        """Reachable (query row, target row) pairs of U between query rows `queries` and target forms
        `target_forms` (rows of P). `by_target`: look the targets' blocks up among the queries (when
        the queries are many and the targets few)."""
        out_q, out_t = [], []
        for name, keys, missing in self.passes:
            key = self._key(name, keys)
            if by_target:
                idx = self._sorted(tag + ":q", name,
                                   lambda: queries[self._query_ok(queries, name, keys, missing)])
                probe = target_forms[key[target_forms] >= 0]
                gen = ((lq, lt) for lt, lq in self._expand(probe, key[probe], idx))
            else:
                q = queries[self._query_ok(queries, name, keys, missing)]
                idx = self._sorted(tag + ":t", name, target_forms)
                gen = self._expand(q, key[q], idx)
            for left, right in gen:
                hit, left, right = self._score(left, right)
                out_q.append(self.src[left[hit]])
                out_t.append(self.src[right[hit]])
        if not out_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_q), np.concatenate(out_t)

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Possible queries whose result can depend on the rows `rows` (mask over U): those with a
        reachable pair to one of them, and those one of them (as a query) reaches."""
        out = np.zeros(self.N, dtype=bool)
        sel = np.flatnonzero(rows)
        if not len(sel):
            return out
        forms = np.flatnonzero(rows[self.src])
        q, _ = self._pairs(self.query_forms(self.pq), forms, "pq", by_target=True)
        out[q] = True
        mine = self.query_forms(rows & self.pq)
        if len(mine):
            _, t = self._pairs(mine, np.flatnonzero(self.is_pq_form & self.current_form), "pq")
            out[t] = True
        return out & self.pq

    def query_forms(self, rows: np.ndarray) -> np.ndarray:
        """The forms the rows `rows` (mask over U) can be fuzzy queries in: untrusted, and for a role
        with a decision also trusted (a NOT_SAME decision re-scores an ID-linked role as it stands,
        `link_roles` step 5)."""
        return np.flatnonzero(rows[self.src] & (~self.trusted_form | self.decided[self.src]))

    def targets(self, rows: np.ndarray) -> np.ndarray:
        """Current rows the query rows `rows` (mask over U) reach: a superset of their candidates."""
        out = np.zeros(self.N, dtype=bool)
        q = self.query_forms(rows)
        if len(q):
            _, t = self._pairs(q, np.flatnonzero(self.current_form), "all")
            out[t] = True
        out[self.n:] = False
        return out


def _nonempty(values: np.ndarray) -> set:
    return set(pd.unique(values[values != ""])) if len(values) else set()


def _dense(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of `values` ('' and -1 are "no value": code -1) and the distinct values."""
    codes, uniq = pd.factorize(values)
    codes = codes.astype(np.int64)
    empty = (values == "") if values.dtype == object else (values < 0)
    codes[empty] = -1
    return codes, np.asarray(uniq)


class _Group:
    """Rows sharing a value (a person, an ID, a record, a block): membership by table lookup, not by
    sorting, so that the closure below costs a few passes over integer arrays per step."""

    def __init__(self, *variants: np.ndarray):
        n = len(variants[0])
        codes, self.values = _dense(np.concatenate(variants))
        self.codes = [codes[i * n:(i + 1) * n] for i in range(len(variants))]  # one per variant
        self.size = len(self.values)

    def only(self, rows: np.ndarray) -> "_Group":
        """The same groups restricted to the rows `rows` (the others in none); same code space."""
        out = object.__new__(_Group)
        out.values, out.size = self.values, self.size
        out.codes = [np.where(rows, c, -1) for c in self.codes]
        return out

    def code_of(self, values: np.ndarray) -> np.ndarray:
        """The group code of each value (-1: no row has it)."""
        code = pd.Index(self.values).get_indexer(values).astype(np.int64)
        if self.values.dtype == object:
            code[values == ""] = -1
        return code

    def table(self, sel: np.ndarray, variants=None) -> np.ndarray:
        """Which groups the rows `sel` are in (index code + 1; slot 0 is "no group")."""
        t = np.zeros(self.size + 1, dtype=bool)
        for c in (self.codes if variants is None else [self.codes[v] for v in variants]):
            t[c[sel] + 1] = True
        t[0] = False
        return t

    def hit(self, table: np.ndarray, variants=None) -> np.ndarray:
        """Rows in one of the groups marked in `table`."""
        out = np.zeros(len(self.codes[0]), dtype=bool)
        for c in (self.codes if variants is None else [self.codes[v] for v in variants]):
            out |= table[c + 1]
        return out


class _Neighbourhood:
    """Relations between the rows of U = current roles (first n) + old versions of changed roles."""

    def __init__(self, U: pd.DataFrame, n: int, prev_rkid: np.ndarray, prev_ppfs: np.ndarray, seeds: np.ndarray,
                 cfg: dict, model: fz.FSModel, business_date: str, decisions: pd.DataFrame, merged: dict,
                 row_keys: np.ndarray):
        self.n = n
        self.N = len(U)
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        usable = usable_ids(U)
        self.citizen_id, doc = usable
        self.id_key = id_group_keys(U, usable)
        # a record: table and business key, as one integer
        bh_code, bh_uniq = pd.factorize(U["BH"].astype(str).to_numpy(dtype=object))
        yw_code, yw_uniq = pd.factorize(U["YWZJ"].astype(str).to_numpy(dtype=object))
        record = bh_code.astype(np.int64) * (len(yw_uniq) + 1) + yw_code.astype(np.int64)
        # spouses within the same frame part (current with current, old with old)
        partner = np.full(self.N, -1, dtype=np.int64)
        spouse_cols = ["BH", "YWZJ", "JS"]
        partner[:n] = _partner_rows(U[spouse_cols].iloc[:n])
        if self.N > n:
            old = _partner_rows(U[spouse_cols].iloc[n:].reset_index(drop=True))
            partner[n:] = np.where(old >= 0, old + n, -1)
        self.partner = partner
        self.spouse_person = np.where(partner >= 0, prev_rkid[np.maximum(partner, 0)], "")
        # rows that may be fuzzy queries: not ID-linked yesterday, new, changed, or old versions
        self.pq = _isin(prev_ppfs, QUERY_METHODS) | (prev_rkid == "") | seeds
        self.person = _Group(prev_rkid)
        self.id_group = _Group(self.id_key)
        self.record_group = _Group(record)
        self.citizen = self.id_group.only(self.citizen_id != "")  # the citizen IDs among the ID keys
        self.timings["ids_records"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        # damaged IDs of current rows and the IDs they could be repaired to
        broken = np.flatnonzero(repairable(U))
        known = pd.unique(self.citizen_id[self.citizen_id != ""])
        cand = repair_candidates(U, broken, list(known), cfg, business_date)
        code = self.citizen.code_of(cand["id18"].to_numpy(dtype=object)) if len(cand) else np.zeros(0, np.int64)
        rrow = cand["row"].to_numpy(np.int64)[code >= 0] if len(cand) else np.zeros(0, np.int64)
        rid = code[code >= 0]
        current = rrow < n  # the closure follows today's rows; the old versions' repairs are forms to reach
        self.repair_row = rrow[current]
        self.repair_id = rid[current]  # the citizen ID each could be repaired to
        self.timings["repairs"] = round(time.perf_counter() - t, 2)
        # roles pinned to a person by a decision: the decision's row (-1: no current role) and person
        if len(decisions):
            dr = pd.Series(decisions["RKID"].astype(str).to_numpy(dtype=object)).map(lambda r: merged.get(r, r))
            self.decision_row = pd.Index(row_keys).get_indexer(role_keys(decisions)).astype(np.int64)
            self.decision_person = self.person.code_of(dr.to_numpy(dtype=object))
        else:
            self.decision_row = np.zeros(0, np.int64)
            self.decision_person = np.zeros(0, np.int64)
        decided = np.zeros(self.N, dtype=bool)
        decided[self.decision_row[self.decision_row >= 0]] = True
        self.reach = _Reach(U, n, partner, self.spouse_person, self.citizen_id, doc, rrow,
                            self.citizen.values[rid] if len(rid) else np.zeros(0, dtype=object), self.pq, decided,
                            cfg, model)
        self.timings["reach_prepare"] = self.reach.timings["prepare"]

    def repaired_to(self, sel: np.ndarray) -> np.ndarray:
        """Rows whose damaged ID could be repaired to a citizen ID held by a row of `sel`."""
        out = np.zeros(self.N, dtype=bool)
        if len(self.repair_row):
            out[self.repair_row[self.citizen.table(sel)[self.repair_id + 1]]] = True
        return out

    def holding_repairs_of(self, sel: np.ndarray) -> np.ndarray:
        """Rows holding a citizen ID that a damaged ID of a row of `sel` could be repaired to."""
        if not len(self.repair_row):
            return np.zeros(self.N, dtype=bool)
        t = np.zeros(self.citizen.size + 1, dtype=bool)
        t[self.repair_id[sel[self.repair_row]] + 1] = True
        return self.citizen.hit(t)

    def close(self, mask: np.ndarray, fuzzy: bool = False, decisions: bool = False) -> np.ndarray:
        """`mask` closed under shared person, ID group and record; with `decisions`, under the persons
        decisions pin roles to; with `fuzzy` (and decisions), under reachable fuzzy pairs with possible
        queries (either way: round 2 weighs queries against each other) and repair candidates."""
        mask = mask.copy()
        expanded = np.zeros(self.N, dtype=bool)  # rows whose fuzzy neighbours were added
        while True:
            sel = mask
            grow = self.person.hit(self.person.table(sel))
            grow |= self.id_group.hit(self.id_group.table(sel))
            grow |= self.record_group.hit(self.record_group.table(sel))
            if fuzzy:
                grow |= self.reach.neighbours(sel & ~expanded)
                expanded |= sel
                grow |= self.repaired_to(sel)
            if (fuzzy or decisions) and len(self.decision_row):
                # roles pinned to (or declared not to be) a person of the set, and the persons the
                # set's roles are pinned to
                persons = self.person.table(sel)
                pinned = self.decision_row[(self.decision_row >= 0) & persons[self.decision_person + 1]]
                grow[pinned] = True
                mine = (self.decision_row >= 0) & sel[np.maximum(self.decision_row, 0)] & (self.decision_person >= 0)
                if mine.any():
                    t = np.zeros(self.person.size + 1, dtype=bool)
                    t[self.decision_person[mine] + 1] = True
                    grow |= self.person.hit(t)
            grow[self.n:] = mask[self.n:]
            if not (grow & ~mask).any():
                return mask
            mask |= grow


# ------------------------------------------------------------------------------- today against yesterday
@dataclass
class _Delta:
    """Today's roles against yesterday's links and persons. U: today's roles (its first n rows), then the
    old versions of the changed and removed ones."""

    R: pd.DataFrame  # today's roles, the neighbourhood's columns without gaps
    keys: np.ndarray  # their role keys
    links_prev: pd.DataFrame
    lpk: np.ndarray  # the role key of each row of links_prev
    lp: pd.DataFrame  # yesterday's links by role key (RKID, PPFS, PPDF, role_fp)
    pos: np.ndarray  # each role's row in lp (-1: none)
    prev_rkid: np.ndarray  # each role's RKID of yesterday ("": none)
    seeds: np.ndarray  # roles new, changed, or with a decision taken today
    n_old: int  # old versions in U
    removed: np.ndarray  # rows of lp whose role is gone
    U: pd.DataFrame
    u_rkid: np.ndarray
    u_ppfs: np.ndarray
    u_seeds: np.ndarray
    pp: pd.DataFrame  # yesterday's persons
    pp_index: pd.Index  # their RKIDs
    merged: dict  # retired RKID -> the RKID it was merged into
    dec: pd.DataFrame  # the decisions (an empty frame for none)


def _filled_roles(roles: pd.DataFrame) -> pd.DataFrame:
    """The roles as they come (order does not matter here; the sub-run sorts its own), gaps filled; not
    copied when there is nothing to fill (a deep copy of every role for nothing)."""
    plain = isinstance(roles.index, pd.RangeIndex) and roles.index.start == 0 and roles.index.step == 1
    R = roles if plain else roles.reset_index(drop=True)
    fill = {c: (R[c].fillna("") if c in R else "") for c in NEIGHBOURHOOD_COLUMNS if c not in R or R[c].hasnans}
    if fill:
        R = R.assign(**fill)
    return R


def _keys_and_fingerprints(R: pd.DataFrame, roles: pd.DataFrame,
                           fingerprints: pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
    """Today's role keys and fingerprints, taken from `fingerprints` when it is by role key in the
    roles' order (`role_changes`), else computed."""
    n = len(R)
    sample = np.unique(np.linspace(0, max(n - 1, 0), min(n, 64)).astype(np.int64)) if n else np.zeros(0, np.int64)
    if (fingerprints is not None and len(fingerprints) == n  # by role key, in the roles' order (role_changes)?
            and (role_keys(R.iloc[sample]) == fingerprints.index.to_numpy(dtype=object)[sample]).all()):
        return fingerprints.index.to_numpy(dtype=object), fingerprints.to_numpy(dtype=object)
    keys = role_keys(R)
    fp = (fingerprints.reindex(keys).fillna("").to_numpy(dtype=object) if fingerprints is not None
          else role_fingerprints(roles.reset_index(drop=True)))  # as exchange.process.role_changes does
    return keys, fp


def _links_by_key(links_prev: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The role key of each of yesterday's links, and the links' RKID, PPFS, PPDF, PPMX and role_fp by role key."""
    lpk = (links_prev["role_key"].to_numpy(dtype=object) if "role_key" in links_prev
           else role_keys(links_prev) if len(links_prev) else np.zeros(0, dtype=object))
    lp = links_prev[[c for c in ("RKID", "PPFS", "PPDF", "PPMX", "role_fp") if c in links_prev]].set_axis(pd.Index(lpk), axis=0)
    if not lp.index.is_unique:
        lp = lp[~lp.index.duplicated(keep="last")]
    return lpk, lp


def _prev_of(lp: pd.DataFrame, pos: np.ndarray, c: str) -> np.ndarray:
    """Column `c` of each role's link of yesterday (`""`: none)."""
    v = lp[c].fillna("").astype(str).to_numpy(dtype=object)
    return np.where(pos >= 0, v[np.maximum(pos, 0)] if len(v) else "", "").astype(object)


def _seeds(keys: np.ndarray, fp: np.ndarray, prev_fp: np.ndarray, prev_rkid: np.ndarray, dec: pd.DataFrame,
           business_date: str) -> np.ndarray:
    """Roles that are new or whose content changed, and roles with a decision taken today."""
    seeds = (prev_fp != fp) | (prev_rkid == "")
    if len(dec):
        today = dec[dec["decided"].astype(str) == str(business_date)]
        seeds |= _isin(keys, set(role_keys(today)))
    return seeds


def _old_versions(old_roles: pd.DataFrame, R: pd.DataFrame, lp: pd.DataFrame,
                  cfg: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The old versions of changed and removed roles (sorted as `link_roles` sorts) and their RKIDs of
    yesterday (their old keys matter too)."""
    old = (_canonical(old_roles, cfg.get("table_order", DEFAULT_TABLE_ORDER))
           if old_roles is not None and len(old_roles) else R.iloc[:0])
    old_keys = role_keys(old) if len(old) else np.zeros(0, dtype=object)
    return old, lp["RKID"].reindex(old_keys).fillna("").astype(str).to_numpy(dtype=object)


def _delta(roles: pd.DataFrame, old_roles: pd.DataFrame, persons_prev: pd.DataFrame, links_prev: pd.DataFrame,
           decisions: pd.DataFrame | None, fingerprints: pd.Series | None, business_date: str, cfg: dict) -> _Delta:
    """Compare today's roles with yesterday's links: seeds, removed roles, and the frame U."""
    R = _filled_roles(roles)
    keys, fp = _keys_and_fingerprints(R, roles, fingerprints)
    lpk, lp = _links_by_key(links_prev)
    pos = lp.index.get_indexer(keys)  # each role's link of yesterday (-1: none); one hash lookup for all
    prev_rkid, prev_ppfs, prev_fp = _prev_of(lp, pos, "RKID"), _prev_of(lp, pos, "PPFS"), _prev_of(lp, pos, "role_fp")
    dec = decisions if decisions is not None else pd.DataFrame()
    seeds = _seeds(keys, fp, prev_fp, prev_rkid, dec, business_date)
    old, old_rkid = _old_versions(old_roles, R, lp, cfg)
    removed = np.ones(len(lp), dtype=bool)
    removed[pos[pos >= 0]] = False
    pp = persons_prev.reset_index(drop=True)
    retired = pp["status"] == "retired"
    return _Delta(
        R=R, keys=keys, links_prev=links_prev, lpk=lpk, lp=lp, pos=pos, prev_rkid=prev_rkid, seeds=seeds,
        n_old=len(old), removed=removed,
        U=pd.concat([R[NEIGHBOURHOOD_COLUMNS], old[NEIGHBOURHOOD_COLUMNS]], ignore_index=True),
        u_rkid=np.concatenate([prev_rkid, old_rkid]),
        u_ppfs=np.concatenate([prev_ppfs, np.full(len(old), "", dtype=object)]),
        u_seeds=np.concatenate([seeds, np.ones(len(old), dtype=bool)]),
        pp=pp, pp_index=pd.Index(pp["RKID"].astype(str).to_numpy(dtype=object)),
        merged=dict(zip(pp.loc[retired, "RKID"], pp.loc[retired, "merged_into"])), dec=dec)


# ------------------------------------------------------------------------------------- the rounds
def _work_set(d: _Delta, nb: _Neighbourhood) -> np.ndarray:
    """W: the seeds and the roles of removed roles' persons, closed under the neighbourhood (step 2)."""
    W = d.u_seeds.copy()
    removed_rkids = set(d.lp.loc[d.removed, "RKID"].astype(str))
    if removed_rkids:
        W[:len(d.R)] |= _isin(d.prev_rkid, removed_rkids)
    return nb.close(W, fuzzy=True, decisions=True)


def _possible_queries(d: _Delta, nb: _Neighbourhood, W: np.ndarray) -> np.ndarray:
    """The rows of W that can be fuzzy queries, whose reach makes the context.

    Fuzzy (or pinned) yesterday, or without an ID key, a damaged ID that could be repaired included: a
    repair the name and birth date do not confirm leaves a query, and finding that out after the sub-run
    costs a second sub-run (on a scoped date a second pass over the whole day: at 1M persons one such
    role a day did). A role that turns out to be a query anyway (an ID now held by someone else) is added
    by the checks and the sub-run repeated."""
    Q = W & (_isin(d.u_ppfs, QUERY_METHODS) | (nb.id_key == ""))
    Q[len(d.R):] = False
    return Q


def _kept(nb: _Neighbourhood, C: np.ndarray, Q: np.ndarray, prev_rkid: np.ndarray, n: int) -> np.ndarray:
    """The context rows that keep yesterday's link without searching their candidates: possible queries
    (yesterday's fuzzy roles) outside W with a link. None of their candidates changed: a possible query
    that reaches a row of W, or that a query of W reaches, is in W (`_Neighbourhood.close`), and so is
    every role of a person, ID group or record W touches; so a rebuild links them as yesterday's run
    did, and the sub-run keeps their links (`link_roles(kept=...)`) instead of searching their blocks,
    whose possible queries would bring in theirs, and so on."""
    K = C & nb.pq & ~Q
    K[n:] = False
    K[:n] &= prev_rkid != ""  # a role without a link is a seed, in W: none here, but nothing to keep
    return K


def _context(nb: _Neighbourhood, W: np.ndarray, Q: np.ndarray, searched: np.ndarray, reached: np.ndarray,
             extra_partner: set, extra_ctx: np.ndarray, n: int) -> np.ndarray:
    """C: the rows the queries reach, closed so that their own links come out as before (step 3).

    Only W's queries `Q` search their candidates: the possible queries among C keep their links
    (`_kept`). Updates `searched` (queries whose targets were looked up) and `reached` (those
    targets) in place."""
    C = np.zeros(len(W), dtype=bool)
    while True:
        frontier = Q & ~searched
        frontier[n:] = False
        if frontier.any():
            reached |= nb.reach.targets(frontier)
            searched |= frontier
        C_new = ~W & reached
        wb = W | C_new
        wb[n:] = True
        C_new |= nb.holding_repairs_of(wb)
        if extra_partner:
            C_new |= _isin(nb.spouse_person, extra_partner)
        C_new |= extra_ctx
        C_new[n:] = False
        C_new = nb.close(C_new | C, decisions=True) & ~W
        C_new[n:] = False
        settled = not (C_new & ~C).any() and not (Q & ~searched)[:n].any()
        C = C_new
        if settled:
            return C


def _sub_run(d: _Delta, rows: np.ndarray, decisions: pd.DataFrame | None, business_date: str, cfg: dict,
             model: fz.FSModel, info: dict, kept: np.ndarray) -> LinkResult:
    """`link_roles` on the roles `rows`, with their links and the persons it can read or change (step 4);
    the rows `kept` keep their links (`_kept`)."""
    sub_roles = d.R.iloc[rows]
    sub_links = d.links_prev[pd.Index(d.lpk).isin(d.keys[rows])].drop(columns=["role_key"], errors="ignore")
    t_sub = time.perf_counter()
    sub_persons = _persons_of(d.pp, d.pp_index, d.R, rows, d.prev_rkid, d.dec, d.merged)
    res = link_roles(sub_roles, sub_persons, sub_links, decisions, business_date, config=cfg, model=model,
                     kept=set(d.keys[kept]))
    info["sub_run_s"] = round(info.get("sub_run_s", 0) + time.perf_counter() - t_sub, 2)
    return res


def _context_changed(d: _Delta, got: pd.DataFrame, crow: np.ndarray) -> np.ndarray:
    """The context rows `crow` whose RKID, method or score the sub-run changed."""
    g = got.reindex(d.keys[crow])
    p = d.lp.reindex(d.keys[crow])
    same = ((g["RKID"].to_numpy(dtype=object) == p["RKID"].astype(str).to_numpy(dtype=object))
            & (g["PPFS"].to_numpy(dtype=object) == p["PPFS"].astype(str).to_numpy(dtype=object))
            & (np.abs(g["PPDF"].to_numpy(dtype=float) - pd.to_numeric(p["PPDF"], errors="coerce").fillna(-1).to_numpy()) < 5e-5))
    return crow[~same]


def _new_spouse_persons(d: _Delta, nb: _Neighbourhood, got: pd.DataFrame, wq: np.ndarray, S: np.ndarray,
                        searched: np.ndarray, extra_partner: set) -> set:
    """Persons the sub-run gave the spouses of the fuzzy queries `wq` of W that the context does not
    cover, among those some role outside the sub-run had as its spouse's person."""
    n = len(d.R)
    sp = nb.partner[wq]
    sp = sp[sp >= 0]
    covered = _nonempty(nb.spouse_person[np.flatnonzero(searched[:n])]) | extra_partner
    new_partner = set(got["RKID"].reindex(d.keys[sp]).dropna().astype(str)) - covered
    if new_partner:  # only a person some role outside the sub-run had as its spouse's can bring one in
        outside_sp = nb.spouse_person[:n][~S]
        new_partner &= set(pd.unique(outside_sp[_isin(outside_sp, new_partner)]))
    return new_partner


def _check_sub_run(d: _Delta, nb: _Neighbourhood, got: pd.DataFrame, W: np.ndarray, C: np.ndarray, S: np.ndarray,
                   searched: np.ndarray, extra_partner: set,
                   K: np.ndarray) -> tuple[np.ndarray, np.ndarray, set, np.ndarray]:
    """The checks a sub-run must pass (step 4): context rows it changed, fuzzy queries whose candidates
    were not searched (the rows `K` kept their links: `_kept`), spouse persons it used that were not
    there, rows outside it of its persons."""
    n = len(d.R)
    bad_c = _context_changed(d, got, np.flatnonzero((C & ~K)[:n]))
    srow = np.flatnonzero(S)
    gs = got.reindex(d.keys[srow])
    actual_q = srow[_isin(gs["PPFS"].to_numpy(dtype=object), FUZZY_METHODS)]
    missing_q = actual_q[~searched[actual_q] & ~K[actual_q]]
    new_partner = _new_spouse_persons(d, nb, got, actual_q[W[actual_q]], S, searched, extra_partner)
    # a person of the sub-run must not have roles outside it (its attributes come from its roles)
    shared = ~np.concatenate([S, np.ones(len(d.U) - n, dtype=bool)]) & _isin(d.u_rkid, set(got["RKID"]))
    return bad_c, missing_q, new_partner, shared


def _incremental_rounds(d: _Delta, nb: _Neighbourhood, W: np.ndarray, decisions: pd.DataFrame | None,
                        business_date: str, cfg: dict, model: fz.FSModel, info: dict, t0: float, max_share: float,
                        max_rounds: int, flagged: set[str]) -> tuple[LinkResult | None, float]:
    """Sub-runs on W ∪ C until one passes its checks (its result merged with yesterday's links), or None
    when W or W ∪ C grows past `max_share` or the checks do not settle; also the seconds spent on C.
    `flagged` collects the role keys the failed checks moved into W or Q (`Unsettled` hands them on)."""
    n, N = len(d.R), len(d.U)
    Q = _possible_queries(d, nb, W)
    searched = np.zeros(N, dtype=bool)
    reached = np.zeros(N, dtype=bool)
    extra_partner: set = set()
    extra_ctx = np.zeros(N, dtype=bool)
    t_ctx = 0.0
    for rnd in range(1, max_rounds + 1):
        info["rounds"] = rnd
        if W[:n].sum() > max_share * max(n, 1):
            break
        t_c = time.perf_counter()
        C = _context(nb, W, Q, searched, reached, extra_partner, extra_ctx, n)
        t_ctx += time.perf_counter() - t_c
        info.setdefault("context_direct", []).append(int((reached & ~W)[:n].sum()))
        S = (W | C)[:n]
        if S.sum() > max_share * max(n, 1):  # linking everything is cheaper
            info["context"] = int(C[:n].sum())
            break
        rows = np.flatnonzero(S)
        K = _kept(nb, C, Q, d.prev_rkid, n)
        res = _sub_run(d, rows, decisions, business_date, cfg, model, info, np.flatnonzero(K[:n]))
        got = res.links.set_index(role_keys(res.links))
        bad_c, missing_q, new_partner, shared = _check_sub_run(d, nb, got, W, C, S, searched, extra_partner, K)
        if not len(bad_c) and not len(missing_q) and not new_partner and not shared.any():
            info.update(relinked=int(W[:n].sum()), context=int(C[:n].sum()), kept=int(K[:n].sum()), sub_run=len(rows),
                        context_s=round(t_ctx, 2), pairs_scored=nb.reach.pairs_scored)
            return _merge(d.R, d.keys, d.lp, d.pos, rows, res, info, t0, d.pp, d.pp_index), t_ctx
        info.setdefault("failed_checks", []).append(
            {"context_changed": len(bad_c), "unsearched_queries": len(missing_q), "new_spouse_persons": len(new_partner),
             "persons_outside": int(shared.sum())})
        flagged.update(d.keys[np.concatenate([bad_c, missing_q])])
        if len(bad_c):
            W[bad_c] = True
            W = nb.close(W, fuzzy=True, decisions=True)
        extra_ctx |= shared
        Q[missing_q] = True
        Q[bad_c] = True
        extra_partner |= new_partner
    return None, t_ctx


class Unsettled(RuntimeError):
    """Incremental linking did not settle within its rounds and was told not to fall back to the whole
    city (`fall_back=False`: the roles it holds are not the whole city, `day.scoped`). `role_keys`: the
    rows the failed checks flagged (context rows the sub-run changed, queries it had not searched); a
    caller that can widen what it read takes them into its work set and tries again with a round more."""

    def __init__(self, message: str, role_keys: set[str]):
        super().__init__(message)
        self.role_keys = role_keys


# ---------------------------------------------------------------------------------------- main API
def link_incremental(roles: pd.DataFrame, old_roles: pd.DataFrame, persons_prev: pd.DataFrame,
                     links_prev: pd.DataFrame, decisions: pd.DataFrame, business_date: str, cfg: dict,
                     model: fz.FSModel, fingerprints: pd.Series | None = None, max_share: float = 0.5,
                     max_rounds: int = 8, fall_back: bool = True) -> LinkResult:
    """Link `roles` as `link_roles` would, re-linking only what the changes since `links_prev` reach.

    `links_prev` must carry `role_fp` (the fingerprint of each role as it was linked), and may carry
    `role_key`; `old_roles`: the roles of changed or removed records as they were; `fingerprints`:
    today's, by role key, if the caller has them already (in the roles' order, as
    `exchange.process.role_changes` gives them, saves building the keys); `model` must carry its skip
    list (`FSModel.skip_blocks`). See the module docstring. `fall_back=False`: raise `Unsettled` instead
    of linking the whole city.
    """
    t0 = time.perf_counter()
    d = _delta(roles, old_roles, persons_prev, links_prev, decisions, fingerprints, business_date, cfg)
    n = len(d.R)
    nb = _Neighbourhood(d.U, n, d.u_rkid, d.u_ppfs, d.u_seeds, cfg, model, business_date, d.dec, d.merged, d.keys)
    t_keys = time.perf_counter() - t0
    W = _work_set(d, nb)
    info = {"roles": n, "seeds": int(d.seeds.sum()), "old_versions": d.n_old, "removed": int(d.removed.sum()),
            "rounds": 0, "mode": "incremental", "keys_s": round(t_keys, 2), "keys_parts_s": nb.timings,
            "work_set_s": round(time.perf_counter() - t0 - t_keys, 2), "work_set": int(W[:n].sum())}
    flagged: set[str] = set()
    res, t_ctx = _incremental_rounds(d, nb, W, decisions, business_date, cfg, model, info, t0, max_share, max_rounds,
                                     flagged)
    if res is not None:
        return res
    if not fall_back:
        raise Unsettled(f"incremental linking did not settle in {info['rounds']} round(s) (work set "
                        f"{info['work_set']:,}, checks failed: {info.get('failed_checks')})", flagged)
    info.update(mode="full (the changes reach too far)", relinked=n, sub_run=n, context_s=round(t_ctx, 2),
                pairs_scored=nb.reach.pairs_scored)
    res = link_roles(roles, persons_prev, links_prev.drop(columns=["role_fp", "role_key"], errors="ignore"),
                     decisions, business_date, config=cfg, model=model)
    res.stats["incremental"] = info | {"seconds": round(time.perf_counter() - t0, 2)}
    return res


def _persons_of(pp: pd.DataFrame, pp_index: pd.Index, R: pd.DataFrame, rows: np.ndarray, prev_rkid: np.ndarray,
                decisions: pd.DataFrame, merged: dict) -> pd.DataFrame:
    """The persons a sub-run over the roles `rows` can read or change: the roles' persons, the persons
    decisions name, the survivors their merges lead to, and the persons whose RKID a role of the
    sub-run would be issued (a retired RKID is never reused, `link_roles` checks against these). The
    rest of the city's persons stay as they are (`_merge`), so the sub-run does not copy, sort and
    compare two million of them."""
    want = set(prev_rkid[rows]) - {""}
    if len(decisions):
        want |= set(decisions["RKID"].astype(str))
    frontier = set(want)
    while frontier:  # merge chains
        nxt = {merged[r] for r in frontier if r in merged} - want
        want |= nxt
        frontier = nxt
    pos = pp_index.get_indexer(np.asarray(sorted(want), dtype=object))
    hit = [pos[pos >= 0]]
    keys = R[LINK_KEY].to_numpy(dtype=object)[rows]
    salt = 0
    while len(keys):
        cand = np.asarray([rkid_for(*k, salt) for k in keys], dtype=object)
        at = pp_index.get_indexer(cand)
        hit.append(at[at >= 0])
        keys = keys[at >= 0]  # issued: the role would be given the next salt
        salt += 1
    return pp.iloc[np.unique(np.concatenate(hit))]


def _merge(R: pd.DataFrame, keys: np.ndarray, lp: pd.DataFrame, pos: np.ndarray, rows: np.ndarray, res: LinkResult,
           info: dict, t0: float, pp: pd.DataFrame, pp_index: pd.Index) -> LinkResult:
    """Yesterday's links and persons outside the sub-run, the sub-run's for the rest (as `link_roles`
    would write them: every column text, sorted by RKID). `pos`: each role's row in `lp`."""
    outside = np.ones(len(R), dtype=bool)
    outside[rows] = False
    at = pos[outside]  # roles outside the sub-run all had a link yesterday (the others are seeds)
    kept = pd.DataFrame({c: R[c].astype(str).to_numpy(dtype=object)[outside] for c in LINK_KEY})
    kept["RKID"] = lp["RKID"].astype(str).to_numpy(dtype=object)[at]
    kept["PPFS"] = lp["PPFS"].astype(str).to_numpy(dtype=object)[at]
    kept["PPDF"] = pd.to_numeric(lp["PPDF"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)[at]
    # a link not re-linked keeps its explanation (a base from before explanations has none: "")
    kept["PPMX"] = lp["PPMX"].fillna("").astype(str).to_numpy(dtype=object)[at] if "PPMX" in lp else ""
    links = pd.concat([kept, res.links[kept.columns]], ignore_index=True)
    # persons: yesterday's (sorted by RKID) with the sub-run's put in their places
    sub = res.persons[PERSON_COLUMNS].sort_values("RKID", kind="mergesort")
    rest = pp[~pp_index.isin(sub["RKID"])].reindex(columns=PERSON_COLUMNS)
    if any(rest[c].dtype != object or rest[c].hasnans for c in PERSON_COLUMNS):
        rest = rest.astype(object).fillna("")
    rest_rk = rest["RKID"].to_numpy(dtype=object)
    if len(rest_rk) > 1 and not rest["RKID"].is_monotonic_increasing:
        rest = rest.sort_values("RKID", kind="mergesort")
        rest_rk = rest["RKID"].to_numpy(dtype=object)
    at_rest = np.searchsorted(rest_rk, sub["RKID"].to_numpy(dtype=object))
    order = np.insert(np.arange(len(rest)), at_rest, len(rest) + np.arange(len(sub)))
    persons = pd.concat([rest, sub], ignore_index=True).iloc[order].reset_index(drop=True)
    stats = dict(res.stats)
    stats["persons_live"] = int((persons["status"] == "live").sum())
    stats["ppfs"] = {k: int(v) for k, v in links["PPFS"].value_counts().sort_index().items()}
    stats["incremental"] = info | {"seconds": round(time.perf_counter() - t0, 2)}
    link_keys = np.concatenate([keys[outside], role_keys(res.links)])
    return LinkResult(links=links, persons=persons, events=res.events, stats=stats, model=res.model,
                      link_keys=link_keys)
