"""Incremental linking: re-link only the roles a day's changes can reach, with the same result as a rebuild.

`link_incremental(roles, old_roles, persons_prev, links_prev, decisions, business_date, cfg, model)`

`link_roles` clusters every role of the city. Its result for a role depends only on a neighbourhood:
the role's ID group (stage 1), its person's other roles (RKID continuity), its record's other role
(spouse evidence), the rows in its fuzzy blocks (if it has no usable ID) and the IDs its damaged ID
could be repaired to. With the Fellegi–Sunter model fixed (the base keeps the model of its first date,
`docs/linkage.md`), nothing else matters. So a date's run:

1. **Seeds**: roles that are new, gone, or whose content changed (role fingerprint), and roles with a
   decision taken today.
2. **Work set W**: the seeds closed under "shares an ID group, a previous person, a record, a fuzzy
   block (for rows that may be fuzzy queries: not ID-linked yesterday), or a repair candidate".
   The old versions of changed and removed roles take part with their old values.
3. **Context C**: the rows W's fuzzy queries compare against (everything in their blocks, the IDs their
   damaged IDs could be repaired to, the spouses' persons), closed under ID group, person and record
   so that their own clusters and RKIDs come out as they were.
4. `link_roles` on W ∪ C. The run is accepted when every context row kept its RKID, method and score
   and no role of W turned into a fuzzy query whose blocks were not in the context; otherwise the
   offending rows join W or the context and the sub-run is repeated.
5. Rows outside W ∪ C keep yesterday's links; W's come from the sub-run.

When W grows past `max_share` of the roles, or the checks do not settle within `max_rounds`, the
whole city is linked (the same function as a rebuild), so the answer is always a rebuild's answer;
`tests/test_incremental.py` compares the two on every date of a generated city.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd

from linkage import fuzzy as fz
from linkage import names as nm
from linkage.base import LINK_KEY, role_keys
from linkage.ids import id_shaped, leading_digits
from linkage.link import DEFAULT_TABLE_ORDER, LinkResult, _canonical, _isin, _partner_rows, link_roles
from linkage.repair import repair_candidates

FUZZY_METHODS = ("FUZZY", "POSSIBLE", "UNMATCHED")
QUERY_METHODS = FUZZY_METHODS + ("MANUAL",)
# what the neighbourhood reads of a role (`_canonical` guarantees them, without NaN)
NEIGHBOURHOOD_COLUMNS = LINK_KEY + ["ZJLX", "name_key", "id_norm", "id_status", "id18", "id_damage", "id_prefix",
                                   "id_birth", "id_sex", "sex", "birth", "region"]
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


# ------------------------------------------------------------------------------------ neighbourhood keys
def _field_variants(U: pd.DataFrame, partner: np.ndarray, person_id: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Every value each blocking field of `linkage.fuzzy.prepare` can take for each row, whatever the
    linker decides about the row's ID (trusted or not, repaired or not). Digit fields are int64 (-1: none)."""
    col = {c: U[c].fillna("").astype(str).to_numpy(dtype=object) for c in
           ("name_key", "birth", "id_birth", "sex", "id_sex", "region", "id18", "id_norm", "id_prefix", "BH", "JS")}
    parts = nm.name_blocking_keys(pd.Series(col["name_key"]))
    birth = leading_digits(col["birth"], 8, exact=True)
    birth_t = np.where(birth < 0, leading_digits(col["id_birth"], 8, exact=True), birth)
    sex = np.where(np.isin(col["sex"], ["1", "2"]), col["sex"], "")
    sex_t = np.where((sex == "") & np.isin(col["id_sex"], ["1", "2"]), col["id_sex"], sex)
    codes, uniq = pd.factorize(col["region"])  # few distinct regions: strip each once
    region_raw = pd.Series(uniq, dtype=object).str.strip().to_numpy(dtype=object)[codes]
    zf = np.flatnonzero((col["BH"] == "women") & (col["JS"] == "ZF") & (partner >= 0))
    if len(zf):  # a husband borrows his wife's region when he has none (as in link_roles)
        empty = region_raw[zf] == ""
        region_raw[zf[empty]] = region_raw[partner[zf[empty]]]
    region = leading_digits(region_raw, 6, exact=True)
    idr = [leading_digits(v, 6, exact=False) for v in (col["id18"], col["id_norm"], col["id_prefix"], person_id)]
    # as a fuzzy query a role has no trusted ID: its ID evidence is a broken ID or a damaged one's
    # prefix (link_roles: idk B / P), never its own or its person's valid ID
    status = U["id_status"].fillna("").astype(str).to_numpy(dtype=object)
    damage = U["id_damage"].fillna("").astype(str).to_numpy(dtype=object)
    q_idr = np.where(np.isin(status, ["CHECKSUM", "FORMAT"]) & (damage == "") & id_shaped(col["id_norm"]), idr[1],
                     np.where((damage != "") & (col["id_prefix"] != ""), idr[2], -1))
    out = {
        "name_key": [col["name_key"]],
        "surname": [parts["surname"].to_numpy(dtype=object)],
        "given": [parts["given"].to_numpy(dtype=object)],
        "pinyin": [parts["pinyin"].to_numpy(dtype=object)],
        "birth": [birth, birth_t],
        "byear": [np.where(b >= 0, b // 10000, -1) for b in (birth, birth_t)],
        "bmd": [np.where(b >= 0, b % 10000, -1) for b in (birth, birth_t)],
        "sex": [sex, sex_t],
        "region": [region],
        "region4": [np.where(region >= 0, region // 100, -1)],
        "idregion": idr + [q_idr],
    }
    # the value each field has when the role is a query: first variant, except the ID region
    query = {f: 0 for f in out}
    query["idregion"] = len(idr)
    return out, query


def _codes(variants: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Shared integer codes of a field's variants (-1 for empty)."""
    codes, uniq = _dense(np.concatenate(variants))
    n = len(variants[0])
    return [codes[i * n:(i + 1) * n] for i in range(len(variants))], len(uniq)


def block_keys(U: pd.DataFrame, partner: np.ndarray, person_id: np.ndarray, spouse_person: np.ndarray,
               passes: list[dict]) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """int64 block key of every row for every pass and every variant of its values (-1: not in the
    pass), and the one key each row has as a fuzzy query (same codes).

    The `queries_missing` restriction is ignored here: a superset of blocks is safe (more context)."""
    fields, query = _field_variants(U, partner, person_id)
    coded = {f: _codes(v) for f, v in fields.items()}
    pc, _ = pd.factorize(spouse_person)
    pc = pc.astype(np.int64)
    pc[spouse_person == ""] = -1
    out: dict[str, list[np.ndarray]] = {}
    qout: dict[str, np.ndarray] = {}

    def combine(keys, combo):
        key = np.zeros(len(U), dtype=np.int64)
        ok = np.ones(len(U), dtype=bool)
        for k, c in zip(keys, combo):
            m = coded[k][1]
            ok &= c >= 0
            key = key * (m + 1) + (c + 1)
        return np.where(ok, key, -1)

    for i, spec in enumerate(passes):
        name = spec.get("name", f"pass{i}")
        keys = list(spec["keys"])
        if keys == ["partner"]:
            out[name] = [pc]
            qout[name] = pc
            continue
        out[name] = [combine(keys, combo) for combo in itertools.product(*[coded[k][0] for k in keys])]
        qout[name] = combine(keys, [coded[k][0][query[k]] for k in keys])
    return out, qout


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
    """Keys of every row of U = current roles (first n) + old versions of changed roles."""

    def __init__(self, U: pd.DataFrame, n: int, prev_rkid: np.ndarray, prev_ppfs: np.ndarray, seeds: np.ndarray,
                 person_id: np.ndarray, cfg: dict, business_date: str, decisions: pd.DataFrame, merged: dict,
                 row_keys: np.ndarray):
        self.n = n
        self.N = len(U)
        self.prev_rkid = prev_rkid
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        status = U["id_status"].astype(str).to_numpy(dtype=object)
        id18 = U["id18"].astype(str).to_numpy(dtype=object)
        id_norm = U["id_norm"].astype(str).to_numpy(dtype=object)
        zjlx = U["ZJLX"].astype(str).str.strip().to_numpy(dtype=object)
        citizen = np.isin(status, ["VALID18", "VALID15"]) & (id18 != "")
        doc = (status == "OTHER_DOC") & (id_norm != "")
        self.id_key = np.where(citizen, id18, np.where(doc, "DOC:" + zjlx + "|" + id_norm, ""))
        self.citizen_id = np.where(citizen, id18, "")
        self.record = (U["BH"].astype(str) + "|" + U["YWZJ"].astype(str)).to_numpy(dtype=object)
        # spouses within the same frame part (current with current, old with old)
        partner = np.full(self.N, -1, dtype=np.int64)
        spouse_cols = ["BH", "YWZJ", "JS"]
        partner[:n] = _partner_rows(U[spouse_cols].iloc[:n])
        if self.N > n:
            old = _partner_rows(U[spouse_cols].iloc[n:].reset_index(drop=True))
            partner[n:] = np.where(old >= 0, old + n, -1)
        self.partner = partner
        spouse_person = np.where(partner >= 0, prev_rkid[np.maximum(partner, 0)], "")
        self.spouse_person = spouse_person
        self.timings["ids_records"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        blocks, query_blocks = block_keys(U, partner, person_id, spouse_person, cfg["fuzzy"]["blocking"])
        # one code space per pass for its variants and its query key (the last one)
        self.blocks = {name: _Group(*arrs, query_blocks[name]) for name, arrs in blocks.items()}
        fields = {"birth": leading_digits(U["birth"].fillna("").astype(str).to_numpy(dtype=object), 8, exact=True) < 0}
        self.query_filter = {}
        for i, spec in enumerate(cfg["fuzzy"]["blocking"]):
            missing = [f for f in spec.get("queries_missing", ()) if f in fields]
            if missing and len(missing) == len(spec.get("queries_missing", ())):
                self.query_filter[spec.get("name", f"pass{i}")] = np.logical_and.reduce([fields[f] for f in missing])
        # rows that may be fuzzy queries: not ID-linked yesterday, new, changed, or old versions
        self.pq = _isin(prev_ppfs, QUERY_METHODS) | (prev_rkid == "") | seeds
        self.person = _Group(prev_rkid)
        self.id_group = _Group(self.id_key)
        self.record_group = _Group(self.record)
        self.citizen = _Group(self.citizen_id)
        self.timings["blocks_groups"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        # damaged IDs of current rows and the IDs they could be repaired to
        damage = U["id_damage"].astype(str).to_numpy(dtype=object)
        broken = np.flatnonzero((np.isin(status[:n], ["CHECKSUM", "FORMAT"]) | (damage[:n] != "")))
        known = self.citizen.values[self.citizen.values != ""]
        cand = repair_candidates(U, broken, list(known), cfg, business_date)  # `broken` are current rows
        code = self.citizen.code_of(cand["id18"].to_numpy(dtype=object)) if len(cand) else np.zeros(0, np.int64)
        self.repair_row = cand["row"].to_numpy(np.int64)[code >= 0] if len(cand) else np.zeros(0, np.int64)
        self.repair_id = code[code >= 0]  # the citizen ID each could be repaired to
        self.timings["repairs"] = round(time.perf_counter() - t, 2)
        # roles pinned to a person by a decision: the decision's row (-1: no current role) and person
        if len(decisions):
            dr = pd.Series(decisions["RKID"].astype(str).to_numpy(dtype=object)).map(lambda r: merged.get(r, r))
            self.decision_row = pd.Index(row_keys).get_indexer(role_keys(decisions)).astype(np.int64)
            self.decision_person = self.person.code_of(dr.to_numpy(dtype=object))
        else:
            self.decision_row = np.zeros(0, np.int64)
            self.decision_person = np.zeros(0, np.int64)

    def pass_keys(self, sel: np.ndarray, as_queries: bool = False) -> dict[str, np.ndarray]:
        """The blocks of the rows `sel`, per pass; `as_queries`: only the blocks each row queries in
        (a pass with `queries_missing` serves only rows lacking those fields, judged on their untrusted
        values)."""
        out = {}
        for name, g in self.blocks.items():
            if as_queries:
                s = sel & self.query_filter[name] if name in self.query_filter else sel
                out[name] = g.table(s, variants=[-1])
            else:
                out[name] = g.table(sel, variants=range(len(g.codes) - 1))
        return out

    def in_blocks(self, keys: dict[str, np.ndarray], as_queries: bool = False) -> np.ndarray:
        """Rows in a block marked in `keys` (any variant; `as_queries`: with their key as a query)."""
        hit = np.zeros(self.N, dtype=bool)
        for name, g in self.blocks.items():
            t = keys.get(name)
            if t is None or not t.any():
                continue
            if as_queries:
                s = self.query_filter.get(name)
                q = g.hit(t, variants=[-1])
                hit |= q if s is None else (q & s)
            else:
                hit |= g.hit(t, variants=range(len(g.codes) - 1))
        return hit

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

    def close(self, mask: np.ndarray, blocks: bool = False, decisions: bool = False) -> np.ndarray:
        """`mask` closed under shared person, ID group and record; with `decisions`, under the persons
        decisions pin roles to; with `blocks` (and decisions), under fuzzy blocks for possible queries
        and repair candidates."""
        mask = mask.copy()
        while True:
            sel = mask
            grow = self.person.hit(self.person.table(sel))
            grow |= self.id_group.hit(self.id_group.table(sel))
            grow |= self.record_group.hit(self.record_group.table(sel))
            if blocks:
                # possible queries whose blocks hold a row of the set, or in whose block a row of the
                # set queries (round 2 weighs queries against each other)
                grow |= self.pq & (self.in_blocks(self.pass_keys(sel), as_queries=True)
                                   | self.in_blocks(self.pass_keys(sel, as_queries=True)))
                grow |= self.repaired_to(sel)
            if (blocks or decisions) and len(self.decision_row):
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


def link_incremental(roles: pd.DataFrame, old_roles: pd.DataFrame, persons_prev: pd.DataFrame,
                     links_prev: pd.DataFrame, decisions: pd.DataFrame, business_date: str, cfg: dict,
                     model: fz.FSModel, fingerprints: pd.Series | None = None, max_share: float = 0.5,
                     max_rounds: int = 8) -> LinkResult:
    """Link `roles` as `link_roles` would, re-linking only what the changes since `links_prev` reach.

    `links_prev` must carry `role_fp` (the fingerprint of each role as it was linked); `old_roles`:
    the roles of changed or removed records as they were; `fingerprints`: today's, by role key, if the
    caller has them already. See the module docstring.
    """
    t0 = time.perf_counter()
    order = cfg.get("table_order", DEFAULT_TABLE_ORDER)
    R = _canonical(roles, order)
    n = len(R)
    keys = role_keys(R)
    fp = (fingerprints.reindex(keys).fillna("").to_numpy(dtype=object) if fingerprints is not None
          else role_fingerprints(R))
    lp = links_prev.copy()
    lpk = role_keys(lp) if len(lp) else np.zeros(0, dtype=object)
    lp.index = pd.Index(lpk)
    lp = lp[~lp.index.duplicated(keep="last")]
    prev = lp.reindex(keys)
    prev_rkid = prev["RKID"].fillna("").astype(str).to_numpy(dtype=object)
    prev_ppfs = prev["PPFS"].fillna("").astype(str).to_numpy(dtype=object)
    prev_fp = prev["role_fp"].fillna("").astype(str).to_numpy(dtype=object)
    dec = decisions if decisions is not None else pd.DataFrame()
    seeds = (prev_fp != fp) | (prev_rkid == "")
    if len(dec):
        today = dec[dec["decided"].astype(str) == str(business_date)]
        seeds |= _isin(keys, set(role_keys(today)))
    # old versions: changed and removed roles as they were (their old keys matter too)
    O = _canonical(old_roles, order) if old_roles is not None and len(old_roles) else R.iloc[:0]
    ok = role_keys(O) if len(O) else np.zeros(0, dtype=object)
    O_rkid = lp["RKID"].reindex(ok).fillna("").astype(str).to_numpy(dtype=object)
    removed = ~lp.index.isin(keys)
    removed_rkids = set(lp.loc[removed, "RKID"].astype(str))
    U = pd.concat([R[NEIGHBOURHOOD_COLUMNS], O[NEIGHBOURHOOD_COLUMNS]], ignore_index=True)
    N = len(U)
    u_rkid = np.concatenate([prev_rkid, O_rkid])
    u_ppfs = np.concatenate([prev_ppfs, np.full(len(O), "", dtype=object)])
    u_seeds = np.concatenate([seeds, np.ones(len(O), dtype=bool)])
    pp = persons_prev
    merged = dict(zip(pp.loc[pp["status"] == "retired", "RKID"], pp.loc[pp["status"] == "retired", "merged_into"]))
    person_gmsfhm = pp.set_index("RKID")["GMSFHM"] if len(pp) else pd.Series(dtype=object)
    person_id = pd.Series(u_rkid).map(person_gmsfhm).fillna("").astype(str).to_numpy(dtype=object)
    nb = _Neighbourhood(U, n, u_rkid, u_ppfs, u_seeds, person_id, cfg, business_date, dec, merged, keys)
    t_keys = time.perf_counter() - t0

    W = u_seeds.copy()
    if removed_rkids:
        W[:n] |= _isin(prev_rkid, removed_rkids)
    W = nb.close(W, blocks=True, decisions=True)
    info = {"roles": n, "seeds": int(seeds.sum()), "old_versions": len(O), "removed": int(removed.sum()),
            "rounds": 0, "mode": "incremental", "keys_s": round(t_keys, 2), "keys_parts_s": nb.timings,
            "work_set_s": round(time.perf_counter() - t0 - t_keys, 2), "work_set": int(W[:n].sum())}
    # the context follows the rows that can be fuzzy queries: fuzzy (or pinned) yesterday, or without an
    # ID key and without a known ID their damaged one could be repaired to (most damaged IDs are repaired,
    # and a query with a broken ID blocks on surname x ID region, which holds thousands of roles). A role
    # that turns out to be a query anyway (a repair not confirmed, an ID now held by someone else) is
    # added below and the sub-run repeated.
    repairable = np.zeros(N, dtype=bool)
    repairable[nb.repair_row] = True
    Q = W & (_isin(u_ppfs, QUERY_METHODS) | ((nb.id_key == "") & ~repairable))
    Q[n:] = False
    extra_partner: set = set()
    extra_ctx = np.zeros(N, dtype=bool)
    for rnd in range(1, max_rounds + 1):
        info["rounds"] = rnd
        if W[:n].sum() > max_share * max(n, 1):
            break
        qk = nb.pass_keys(Q, as_queries=True)
        C = ~W & nb.in_blocks(qk)
        if rnd == 1:  # what each blocking pass brings (for the log: which blocks make the context)
            info["context_by_pass"] = {k: int((~W & nb.in_blocks({k: v}))[:n].sum()) for k, v in qk.items()}
        wb = W.copy()
        wb[n:] = True
        C |= nb.holding_repairs_of(wb)
        if extra_partner:
            C |= _isin(nb.spouse_person, extra_partner)
        C |= extra_ctx
        C[n:] = False
        info.setdefault("context_direct", []).append(int(C[:n].sum()))  # before the closure
        C = nb.close(C, decisions=True) & ~W
        C[n:] = False
        S = (W | C)[:n]
        if S.sum() > max_share * max(n, 1):  # linking everything is cheaper
            info["context"] = int(C[:n].sum())
            break
        rows = np.flatnonzero(S)
        sub_roles = R.iloc[rows]
        sub_links = lp.loc[lp.index.isin(keys[rows])].reset_index(drop=True)
        t_sub = time.perf_counter()
        res = link_roles(sub_roles, persons_prev, sub_links, decisions, business_date, config=cfg, model=model)
        info["sub_run_s"] = round(info.get("sub_run_s", 0) + time.perf_counter() - t_sub, 2)
        got = res.links.set_index(role_keys(res.links))
        # checks: context rows unchanged; fuzzy queries of W inside the Q used for the context
        crow = np.flatnonzero(C[:n])
        g = got.reindex(keys[crow])
        p = lp.reindex(keys[crow])
        same = ((g["RKID"].to_numpy(dtype=object) == p["RKID"].astype(str).to_numpy(dtype=object))
                & (g["PPFS"].to_numpy(dtype=object) == p["PPFS"].astype(str).to_numpy(dtype=object))
                & (np.abs(g["PPDF"].to_numpy(dtype=float) - pd.to_numeric(p["PPDF"], errors="coerce").fillna(-1).to_numpy()) < 5e-5))
        bad_c = crow[~same]
        wrow = np.flatnonzero(W[:n])
        gw = got.reindex(keys[wrow])
        actual_q = wrow[_isin(gw["PPFS"].to_numpy(dtype=object), FUZZY_METHODS)]
        missing_q = actual_q[~Q[actual_q]]
        sp = nb.partner[actual_q]
        sp = sp[sp >= 0]
        covered = _nonempty(nb.spouse_person[np.flatnonzero(Q)]) | extra_partner
        new_partner = set(got["RKID"].reindex(keys[sp]).dropna().astype(str)) - covered
        # a person of the sub-run must not have roles outside it (its attributes come from its roles)
        shared = ~np.concatenate([S, np.ones(N - n, dtype=bool)]) & _isin(u_rkid, set(got["RKID"]))
        if not len(bad_c) and not len(missing_q) and not new_partner and not shared.any():
            info.update(relinked=int(W[:n].sum()), context=int(C[:n].sum()), sub_run=len(rows))
            return _merge(R, keys, lp, rows, res, info, t0)
        if len(bad_c):
            W[bad_c] = True
            W = nb.close(W, blocks=True, decisions=True)
        extra_ctx |= shared
        Q[missing_q] = True
        Q[bad_c] = True
        extra_partner |= new_partner
    info.update(mode="full (the changes reach too far)", relinked=n, sub_run=n)
    res = link_roles(roles, persons_prev, links_prev.drop(columns=["role_fp"], errors="ignore"), decisions,
                     business_date, config=cfg, model=model)
    res.stats["incremental"] = info | {"seconds": round(time.perf_counter() - t0, 2)}
    return res


def _merge(R: pd.DataFrame, keys: np.ndarray, lp: pd.DataFrame, rows: np.ndarray, res: LinkResult, info: dict,
           t0: float) -> LinkResult:
    """Yesterday's links for the rows outside the sub-run, the sub-run's for the rest."""
    outside = np.ones(len(R), dtype=bool)
    outside[rows] = False
    keep = lp.reindex(keys[outside])
    kept = pd.DataFrame({c: R[c].to_numpy(dtype=object)[outside] for c in LINK_KEY})
    kept["RKID"] = keep["RKID"].astype(str).to_numpy(dtype=object)
    kept["PPFS"] = keep["PPFS"].astype(str).to_numpy(dtype=object)
    kept["PPDF"] = pd.to_numeric(keep["PPDF"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    links = pd.concat([kept, res.links[kept.columns]], ignore_index=True)
    stats = dict(res.stats)
    stats["ppfs"] = {k: int(v) for k, v in links["PPFS"].value_counts().sort_index().items()}
    stats["incremental"] = info | {"seconds": round(time.perf_counter() - t0, 2)}
    return LinkResult(links=links, persons=res.persons, events=res.events, stats=stats, model=res.model)
