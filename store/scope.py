"""What a daily date reaches in the base, found by indexed lookups (issue 15, docs/scale.md 2.3).

`find_scope` starts from the roles a date's deliveries touch (seeds) and closes them under every
relation the linker (`linkage.incremental`) and the rules (`verification.recheck`) follow: the same
record, the same person (`links.RKID`), the same ID group (`role_index.id_key`) or rule ID
(`state_id`), decisions, ID repair both ways, and the fuzzy blocks of `role_forms` (per pass of
`config/linkage.json`). The work set (the roles the linker may re-link: the delivered records' roles,
closed as `linkage.incremental` closes W, under person, record, ID group, decisions, repair candidates
and fuzzy pairs with possible queries) carries the closure on through its blocks: its possible queries
(`pq`: no link, or a link by a fuzzy method) take in their candidates. Everything else is context, taken
in with its person, ID and record; a possible query of the context keeps its link without its
candidates (`linkage.incremental._kept`), so the context does not chain through blocks. The result is a
superset of what the linker and the rules read, so running the pure day
(`exchange.process.process_date`) on it gives what a run over the whole base gives;
`tests/test_incremental.py` holds it to that on every date.

Every lookup goes through `store.db.select_in`, so the rows it hands out count in `store.db.READ`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from store import db

QUERY_METHODS = ("FUZZY", "POSSIBLE", "UNMATCHED", "MANUAL")  # linkage.incremental.QUERY_METHODS


@dataclass
class Scope:
    roles: set[str] = field(default_factory=set)  # role keys
    records: set[str] = field(default_factory=set)  # BH|YWZJ
    rounds: int = 0
    lookups: dict[str, int] = field(default_factory=dict)
    # per relation, the roles it brought into the scope first (a role found two ways counts once, in
    # the order `_relations` then `_blocks`; "seeds": the first round's; "record": another role of a
    # record in the scope), and per block column the form rows read: where a scope's
    # size and reads come from (benchmarks/scope_lookup.py prints them)
    found_by: dict[str, int] = field(default_factory=dict)
    read_by_pass: dict[str, int] = field(default_factory=dict)
    search: "ScopeSearch | None" = field(default=None, repr=False)  # to widen it (`ScopeSearch.widen`)


def find_scope(conn: sa.Connection, forms_table: sa.Table, block_cols: list[str], compare_cols: list[str],
               skip: dict[str, set[int]], seed_records: set[str], seed_roles: set[str], seed_index: pd.DataFrame,
               seed_forms: pd.DataFrame, variants, near_ids, reach, max_roles: int,
               query_empty: dict[str, list[str]] | None = None, names_confirm=None) -> Scope | None:
    """The scope of a date (module docstring); None when it grows past `max_roles` (the date then reads
    the whole base). `seed_index` / `seed_forms`: index and form rows of today's versions of the seed
    records (their old versions are read from the base); `skip`: per block column, the hashes of the
    blocks the model skips; `variants(broken_ids)`: the citizen IDs broken numbers could be repaired
    to (`linkage.repair` candidates), a frame of (broken, variant) pairs; `near_ids(valid_ids)`: how to
    look up the broken numbers one keystroke from them (`linkage.ids.NearIDs`); `reach(forms)`: the forms
    (columns `compare_cols`) prepared,
    a function of (query positions, target positions) telling which pairs can be kept candidates
    (`linkage.blocks.form_reach`); `query_empty`: per block column, the compare columns a form must have
    empty to be a query of that pass (`linkage.blocks.query_empty_columns`); `names_confirm(a, b)`: pair by
    pair, whether a damaged number's holder named `a` could be repaired to the ID of a holder named `b`
    (`linkage.repair.names_could_confirm`; None: every holder of the ID range counts).

    Two kinds of roles: the work set (seeds, closed like the linker's W: `ScopeSearch._close_work`, and
    the possible queries sharing a block with it that reach it or that its queries reach) and the context
    (roles the work set's queries can reach, and everything sharing a person, ID, record or decision with
    either). Only the work set's blocks bring in more roles: its possible queries' whole blocks, and the
    possible queries of its other rows' blocks. `ScopeSearch.widen` carries the same search on when the
    linker needs more (`Scope.search`)."""
    search = ScopeSearch(conn, forms_table, block_cols, compare_cols, skip, variants, near_ids, reach, max_roles,
                         query_empty, names_confirm)
    return search.grow(seed_records, seed_roles, seed_index, seed_forms)


class ScopeSearch:
    """The lookups of `find_scope`, with what they have found and read so far kept, so that `widen` adds
    to a scope without reading again what it read."""

    def __init__(self, conn: sa.Connection, forms_table: sa.Table, block_cols: list[str], compare_cols: list[str],
                 skip: dict[str, set[int]], variants, near_ids, reach, max_roles: int,
                 query_empty: dict[str, list[str]] | None = None, names_confirm=None):
        self.conn, self.forms_table, self.block_cols, self.compare_cols = conn, forms_table, block_cols, compare_cols
        self.skip, self.variants, self.near_ids, self.reach, self.max_roles = skip, variants, near_ids, reach, max_roles
        self.query_empty = query_empty or {}
        self.names_confirm = names_confirm
        self.today_names: dict[str, str] = {}  # role -> name of today's version of a delivered role
        # per block column, the frames of forms read (`_mates`), and where each block's forms are in them:
        # block -> (frame, positions of its forms held, positions of its possible queries among them)
        self.block_parts: dict[str, list[pd.DataFrame]] = {}
        self.block_at: dict[str, dict[int, tuple[int, np.ndarray, np.ndarray]]] = {}
        self.read_all: dict[str, set[str]] = {}  # ... the blocks read whole
        self.read_pq: dict[str, set[str]] = {}  # ... the blocks of which only the possible queries were read
        self.scope = Scope(search=self)
        self.seen: dict[str, set] = {k: set() for k in ("record", "person", "id_key", "state_id", "broken", "prefix",
                                                        "valid", "bk")}
        self.work: set[str] = set()  # roles of the work set (their blocks probed for possible queries)
        self.probed_w: set[str] = set()  # roles whose blocks were probed as the work set's
        self.probed_p: set[str] = set()  # ... as a possible query's
        self.is_pq: set[str] = set()  # may be fuzzy queries: a fuzzy link, or none yet (new roles)
        # ... of which those that search their candidates, as the linker's Q does: a fuzzy link, or a new
        # role without an ID (a new role with an ID that turns out a query is flagged by the linker's
        # checks and the scope widened with it, `widen`)
        self.searches: set[str] = set()
        self.first = True
        self.closure = _WorkClosure()  # the index rows, decisions and repair pairs read (`_close_work`)
        self.decided_roles: set[str] = set()  # roles with a decision (fuzzy queries in every form)

    def widen(self, work_roles: set[str]) -> Scope | None:
        """The scope with `work_roles` (the rows the linker flagged) in the work set, closed again."""
        self.work |= set(work_roles)
        self.searches |= set(work_roles)
        return self.grow(set(), set(work_roles), None, None)

    def grow(self, records: set[str], roles: set[str], seed_index: pd.DataFrame | None,
             seed_forms: pd.DataFrame | None) -> Scope | None:
        """Close the scope over `records`, `roles` and the seed rows (`find_scope`); None past `max_roles`."""
        conn, ix, scope, seen, compare_cols, block_cols = (self.conn, db.role_index, self.scope, self.seen,
                                                          self.compare_cols, self.block_cols)
        icols = ["role_key", "record", "id_key", "state_id", "broken_id", "repair_prefix", "repair_birth"]
        extra_rows = seed_index.reindex(columns=icols) if seed_index is not None and len(seed_index) else None
        extra_forms = (seed_forms.reindex(columns=["form_key", "role_key", *compare_cols, *block_cols])
                       if seed_forms is not None and len(seed_forms) else None)
        if extra_forms is not None:
            self.today_names.update(zip(extra_forms["role_key"], extra_forms["p_name_key"].fillna("").astype(str)))
        records, roles = set(records), set(roles)
        while True:
            records -= seen["record"]
            roles -= scope.roles
            pending = ((self.work & scope.roles) - self.probed_w) | ((self.searches & self.work & scope.roles) - self.probed_p)
            if not records and not roles and not pending and extra_rows is None:
                break
            scope.rounds += 1
            seen["record"] |= records
            parts = [db.select_in(conn, ix, "record", records, icols), db.select_in(conn, ix, "role_key", roles, icols)]
            if extra_rows is not None:
                parts.append(extra_rows)
                extra_rows = None
            first = self.first
            if first:  # the delivered records' roles, old and new, are the work set; the other seeds
                # need re-checking only (their states can change with the date), so they are context
                self.work |= set(parts[0]["role_key"]) | (set(parts[2]["role_key"]) if len(parts) > 2 else set())
                self.first = False
            rows = pd.concat(parts, ignore_index=True).drop_duplicates()
            fresh_keys = set(rows["role_key"]) - scope.roles
            how, count = ("seeds", len(fresh_keys)) if first else ("record", len(fresh_keys - roles))
            scope.found_by[how] = scope.found_by.get(how, 0) + count
            scope.roles |= fresh_keys
            scope.records |= set(rows["record"]) | records
            if len(scope.roles) > self.max_roles:
                return None
            found = self._relations(rows, fresh_keys)
            self._close_work()
            found |= self._blocks(extra_forms)
            extra_forms = None
            roles = set()
            for how, got in found.items():
                new = got - scope.roles - roles
                scope.found_by[how] = scope.found_by.get(how, 0) + len(new)
                roles |= new
            records = set(rows["record"]) - seen["record"]
        scope.lookups = {k: len(v) for k, v in seen.items()} | {"work": len(self.work), "possible_queries": len(self.is_pq)}
        return scope

    def _relations(self, rows: pd.DataFrame, fresh_keys: set[str]) -> dict[str, set[str]]:
        """The roles sharing a person, decision, ID group, rule ID or repair candidate with `rows` (the
        index rows read this round; `fresh_keys`: those new to the scope), per relation."""
        conn, ix, seen = self.conn, db.role_index, self.seen
        found: dict[str, set[str]] = {}
        # persons, and the decisions naming them or their roles
        lk = db.select_in(conn, db.links, "role_key", fresh_keys, ["role_key", "RKID", "PPFS"])
        linked = set(lk["role_key"])
        fuzzy = set(lk.loc[lk["PPFS"].isin(QUERY_METHODS), "role_key"])
        self.is_pq |= fuzzy | (fresh_keys - linked)
        self.searches |= fuzzy | ((fresh_keys - linked) & set(rows.loc[rows["id_key"] == "", "role_key"]))
        fresh = rows[rows["role_key"].isin(fresh_keys).to_numpy()].drop_duplicates("role_key")
        self.closure.add_rows(fresh.assign(RKID=fresh["role_key"].map(lk.drop_duplicates("role_key")
                                                                      .set_index("role_key")["RKID"])
                                           .fillna("").to_numpy(dtype=object)))
        persons = set(lk["RKID"]) - {""}
        dec = _decisions(conn, persons, set(rows["record"]))
        self.closure.add_decisions(dec)
        found["decision"] = set(db.role_key(dec))
        self.decided_roles |= found["decision"]
        persons |= set(dec["RKID"])
        persons -= seen["person"]
        seen["person"] |= persons
        persons |= _merged_into(conn, persons, seen["person"])
        found["person"] = set(db.select_in(conn, db.links, "RKID", persons, ["role_key"])["role_key"])
        # ID groups and rule IDs
        for col in ("id_key", "state_id"):
            vals = set(rows[col]) - seen[col] - {""}
            seen[col] |= vals
            found[col] = set(db.select_in(conn, ix, col, vals, ["role_key"])["role_key"])
        # ID repair: a broken number to the IDs it could be, a valid ID to the broken numbers near it
        broken = set(rows["broken_id"]) - seen["broken"] - {""}
        seen["broken"] |= broken
        repairs = self.variants(sorted(broken))
        self.closure.add_repairs(repairs)
        found["repair"] = set(db.select_in(conn, ix, "id_key", set(repairs["variant"]), ["role_key"])["role_key"])
        excel = rows[rows["repair_prefix"] != ""]
        names = self._names_of(set(excel["role_key"]))
        prefixes = {(p, b, n) for k, p, b in zip(excel["role_key"], excel["repair_prefix"], excel["repair_birth"])
                    for n in names.get(k, {""})} - seen["prefix"]
        seen["prefix"] |= prefixes
        found["repair_range"] = self._repair_holders(prefixes)
        valid = {v for v in rows["id_key"] if len(v) == 18 and v.isalnum()} - seen["valid"]
        seen["valid"] |= valid
        if valid:
            index = self.near_ids(valid)
            hits = pd.concat([db.select_in(conn, ix, col, keys, ["role_key", "broken_id"])
                              for col, keys in index.keys().items()], ignore_index=True)
            found["near_id"] = {r for r, b in zip(hits["role_key"], hits["broken_id"]) if index.near(b)}
        # the Excel-damaged numbers whose kept digits head one of these IDs, and that could be repaired to one
        # of them (`_repairable_to`: a short head needs the birth date too), as the linker closes W; Excel may
        # have rounded the last digit it kept up (3.2010219880|5... shows as 3.2010219881E+17)
        heads = {v[:k] for v in valid for k in range(6, 18)}
        heads |= {v[:k - 1] + str(int(v[k - 1]) + 1) for v in valid for k in range(7, 16) if v[k - 1] < "9"}
        damaged = db.select_in(conn, ix, "repair_prefix", heads, ["role_key", "repair_prefix", "repair_birth"])
        if len(damaged):
            ok = _repairable_to(damaged[["repair_prefix", "repair_birth"]].to_numpy(dtype=object), valid)
            found["damaged_head"] = set(damaged.loc[ok, "role_key"])
        return found

    def _close_work(self) -> None:
        """The work set closed over the roles read so far as the linker closes W (`linkage.incremental`,
        `_Neighbourhood.close`): a role sharing a record, an ID group or a person with it, a role a
        decision pins to (or declares not to be) one of its persons, and a role whose damaged ID could be
        repaired to one of its citizen IDs. The lookups have read every role related so to a role of the
        scope, so closing over what was read is closing over the base. (Fuzzy pairs with possible
        queries: `_blocks`.)"""
        self.work |= self.closure.close(self.work)

    def _mates(self, col: str, fw: set, fp: set, mcols: list[str]) -> pd.DataFrame:
        """The forms of the blocks `fp` (all) and `fw` (possible queries only) of block column `col`. Each
        block is read once and kept (a chain of possible queries comes back to the same block round after
        round): all its forms for a query's block, its possible queries for the work set's. A round finds
        its blocks' forms by position (`block_at`), not by scanning all that earlier rounds read."""
        parts = self.block_parts.setdefault(col, [])
        at = self.block_at.setdefault(col, {})
        read_all = self.read_all.setdefault(col, set())
        read_pq = self.read_pq.setdefault(col, set())
        new_all, new_pq = fp - read_all, (fw - fp) - read_all - read_pq
        got = pd.concat([db.select_in(self.conn, self.forms_table, col, new_all, [*mcols, col]),
                         db.select_in(self.conn, self.forms_table, col, new_pq, [*mcols, col], equal=("pq", "1"))],
                        ignore_index=True)
        self.is_pq |= set(got.loc[got["pq"] == "1", "role_key"])  # (whether they search: `_relations`)
        self.scope.read_by_pass[col] = self.scope.read_by_pass.get(col, 0) + len(got)
        if len(got):  # a block read whole now replaces its possible queries read before
            parts.append(got)
            codes, blocks = pd.factorize(got[col].to_numpy(dtype=object))
            order = np.argsort(codes, kind="stable")
            edges = np.searchsorted(codes[order], np.arange(len(blocks) + 1))
            pq = (got["pq"] == "1").to_numpy()
            for i, b in enumerate(blocks):
                pos = order[edges[i]:edges[i + 1]]
                at[b] = (len(parts) - 1, pos, pos[pq[pos]])
        read_all |= new_all
        read_pq -= new_all
        read_pq |= new_pq
        want: dict[int, list[np.ndarray]] = {}
        for b in fp:
            if b in at:
                want.setdefault(at[b][0], []).append(at[b][1])
        for b in fw - fp:
            if b in at:
                want.setdefault(at[b][0], []).append(at[b][2])
        if not want:
            return pd.DataFrame(columns=[*mcols, col], dtype=object)
        return pd.concat([parts[p].iloc[np.concatenate(pos)] for p, pos in want.items()], ignore_index=True)

    def held_forms(self, col: str) -> pd.DataFrame:
        """The forms of block column `col` read so far (for `benchmarks/scope_lookup.py`)."""
        parts, at = self.block_parts.get(col, []), self.block_at.get(col, {})
        if not at:
            return pd.DataFrame(columns=["form_key", "role_key", "pq", col], dtype=object)
        return pd.concat([parts[p].iloc[pos] for p, pos, _ in at.values()], ignore_index=True)

    def _query_of(self, forms: pd.DataFrame, col: str) -> pd.Series:
        """Which of `forms` can be a query of the pass of block column `col` (`query_empty`)."""
        ok = pd.Series(True, index=forms.index)
        for c in self.query_empty.get(col, ()):
            ok &= forms[c].fillna("").astype(str) == ""
        return ok

    def _names_of(self, roles: set[str]) -> dict[str, set[str]]:
        """The names of `roles` as stored (their `Q` form's) and, for delivered roles, as delivered today."""
        out: dict[str, set[str]] = {}
        if not roles:
            return out
        got = db.select_in(self.conn, self.forms_table, "form_key", {f"{r}|Q" for r in roles}, ["role_key", "p_name_key"])
        for r, n in zip(got["role_key"], got["p_name_key"].fillna("").astype(str)):
            out.setdefault(r, set()).add(n)
        for r in roles & self.today_names.keys():
            out.setdefault(r, set()).add(self.today_names[r])
        return out

    def _repair_holders(self, prefixes: set[tuple[str, str, str]]) -> set[str]:
        """The roles holding a citizen ID that an Excel-damaged number's kept digits (and, when they are too
        few, its holder's birth date) could be (`linkage.repair`), one index range each: the digits less
        the last shown (it may be rounded); with a birth date, the region's six digits and the birth date
        (positions 7-14 of the ID), so the range is one day's holders, not the region's. `prefixes`: (kept
        digits, birth date, name of the damaged number's holder); of a range's holders only those whose
        name could confirm the repair count (`names_confirm`): the others cannot change it, and a range
        grows with the city (at 3M, 39,288 roles of a daily scope came in so)."""
        ranges: dict[tuple[str, str], set[str]] = {}
        for p, birth, name in prefixes:
            r = _repair_range(p, birth)
            if r is not None:
                ranges.setdefault(r, set()).add(name)
        ph = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        forms = self.forms_table.name
        sql = (f'SELECT i.role_key, f.p_name_key FROM role_index i LEFT JOIN "{forms}" f ON f.form_key = i.role_key || {ph} '
               f"WHERE i.id_key <> '' AND i.id_key >= {ph} AND i.id_key < {ph}")
        out: set[str] = set()
        for (start, birth), names in sorted(ranges.items()):
            hit = self.conn.exec_driver_sql(sql + (f" AND substr(i.id_key, 7, 8) = {ph}" if birth else ""),
                                            ("|Q", start, start + ":", birth) if birth else ("|Q", start, start + ":")).all()
            db.READ.add(db.role_index.name, len(hit))
            if not hit:
                continue
            keys = np.asarray([h[0] for h in hit], dtype=object)
            if self.names_confirm is None:
                out |= set(keys)
                continue
            held = np.asarray([h[1] or "" for h in hit], dtype=object)
            ok = np.zeros(len(hit), dtype=bool)
            for name in names:
                ok |= self.names_confirm(np.full(len(held), name, dtype=object), held)
            out |= set(keys[ok])
        return out

    def _blocks(self, extra_forms: pd.DataFrame | None) -> dict[str, set[str]]:
        """Fuzzy blocks: a possible query sharing a block with the work set joins it; a possible query
        takes in every role of its blocks that it can reach (its candidates). `extra_forms`: the seeds'
        form rows of today, probed with the stored ones. A block of the work set alone is asked for its
        possible queries only (`pq`); every form met is read and prepared once for all passes (`reach`)."""
        conn, scope, seen, compare_cols = self.conn, self.scope, self.seen, self.compare_cols
        want_w = (self.work & scope.roles) - self.probed_w
        want_p = (self.searches & self.work & scope.roles) - self.probed_p
        self.probed_w |= want_w
        self.probed_p |= want_p
        fcols = ["form_key", "role_key", *compare_cols, *self.block_cols]
        forms = db.select_in(conn, self.forms_table, "role_key", want_w | want_p, fcols)
        if extra_forms is not None:  # today's version of a stored form is another form
            forms = pd.concat([forms, extra_forms.assign(form_key="today|" + extra_forms["form_key"])], ignore_index=True)
        # a role is a fuzzy query in its untrusted form `Q` only; with a decision, in every form
        # (`linkage.incremental._Reach.query_forms`)
        qf = (forms["form_key"].str.endswith("|Q") | forms["role_key"].isin(self.decided_roles)).to_numpy()
        in_w, in_p = forms["role_key"].isin(want_w), forms["role_key"].isin(want_p) & qf
        mcols = ["form_key", "role_key", "pq"]  # the compare columns are read once per form, below
        read = []  # (column, work keys, query keys, mates)
        for col in self.block_cols:
            skipped = self.skip.get(col, set())
            # the blocks of the forms new this round, even when an earlier round read them: each new
            # form must be paired with its block's mates (a block is not done once its first forms were);
            # a form in no block of the pass has None there
            fw = set(forms.loc[in_w, col].dropna()) - skipped
            fp = set(forms.loc[in_p & self._query_of(forms, col), col].dropna()) - skipped
            seen["bk"].update((col, v) for v in fw | fp)
            mates = self._mates(col, fw, fp, mcols)
            if len(mates):
                read.append((col, fw, fp, mates))
        if not read:
            return {}
        # every form met, once (a form sits in a block of each pass): the own forms, and the mates' read by key
        mate_keys = set().union(*(set(m["form_key"]) for _, _, _, m in read)) - set(forms["form_key"])
        pool = pd.concat([forms[["form_key", *compare_cols]],
                          db.select_in(conn, self.forms_table, "form_key", mate_keys, ["form_key", *compare_cols])],
                         ignore_index=True).drop_duplicates("form_key")
        reach = self.reach(pool.reset_index(drop=True))
        where = pd.Index(pool["form_key"])
        pos_forms = where.get_indexer(forms["form_key"])
        # every pass's pairs first, then each distinct (query form, target form) pair tested once: a query and
        # its candidate share blocks of several passes
        ask_l, ask_r, ask_k, ask_join = [], [], [], []  # (query form, target form, role brought in, joins the work set)
        for col, fw, fp, mates in read:
            pos_mates = where.get_indexer(mates["form_key"])
            # qq / tq: whether the form can be a query of this pass (`query_empty`)
            left = pd.DataFrame({"q": pos_forms, "qk": forms["role_key"].to_numpy(dtype=object),
                                 "b": forms[col].to_numpy(dtype=object),
                                 "qq": self._query_of(forms, col).to_numpy() & qf})
            right = pd.DataFrame({"t": pos_mates, "tk": mates["role_key"].to_numpy(dtype=object),
                                  "b": mates[col].to_numpy(dtype=object),
                                  "tq": self._query_of(pool, col).to_numpy()[pos_mates]})
            # a possible query's candidates: the mates its forms can reach
            pairs = left[in_p.to_numpy() & left["qq"].to_numpy() & left["b"].isin(fp).to_numpy()].merge(right, on="b")
            pairs = pairs[pairs["qk"] != pairs["tk"]]
            ask_l.append(pairs["q"].to_numpy())
            ask_r.append(pairs["t"].to_numpy())
            ask_k.append(pairs["tk"].to_numpy(dtype=object))
            ask_join.append(np.zeros(len(pairs), dtype=bool))
            # possible queries joining the work set: a mate reaching a work form, a work query reaching a mate
            pq_right = right[right["tk"].isin(self.is_pq).to_numpy()]
            pairs = left[in_w.to_numpy() & left["b"].isin(fw).to_numpy()].merge(pq_right, on="b")
            pairs = pairs[pairs["qk"] != pairs["tk"]]
            q, t, tk = pairs["q"].to_numpy(), pairs["t"].to_numpy(), pairs["tk"].to_numpy(dtype=object)
            fwd = pairs["tq"].to_numpy(dtype=bool)
            back = pairs["qk"].isin(self.is_pq).to_numpy() & pairs["qq"].to_numpy(dtype=bool)
            ask_l += [t[fwd], q[back]]
            ask_r += [q[fwd], t[back]]
            ask_k += [tk[fwd], tk[back]]
            ask_join.append(np.ones(int(fwd.sum()) + int(back.sum()), dtype=bool))
        ask = np.concatenate(ask_l).astype(np.int64) * len(pool) + np.concatenate(ask_r).astype(np.int64)
        uniq, inverse = np.unique(ask, return_inverse=True)
        ok = reach(uniq // len(pool), uniq % len(pool))[inverse]
        brought, join = np.concatenate(ask_k), np.concatenate(ask_join)
        candidates = set(brought[ok & ~join])
        joins = set(brought[ok & join])
        self.work |= joins
        return {"pq_joins_work": joins, "candidates": candidates}


class _WorkClosure:
    """The work set's closure over the rows a scope has read (`ScopeSearch._close_work`), kept from round to
    round: each round adds the rows, decisions and repair pairs it read, and `close` follows only what is
    new (a breadth-first walk over values: records, ID groups, persons, repairable numbers), so that a
    round costs what it read, not everything read before it (at 3M the whole re-scan each round was 14 s
    of a 134 s scope)."""

    def __init__(self):
        self.rows: dict[str, tuple[str, str, str, str]] = {}  # role -> (record, id_key, person, broken_id)
        self.by: dict[str, dict[str, list[str]]] = {"record": {}, "id": {}, "person": {}, "broken": {}}
        self.prefix_roles: list[str] = []  # roles with an Excel-damaged number, and its (prefix, birth)
        self.prefixes: list[tuple[str, str]] = []
        self.pinned: dict[str, set[str]] = {}  # role -> persons its decisions name
        self.pinning: dict[str, set[str]] = {}  # person -> roles whose decisions name it
        self.repairable: dict[str, set[str]] = {}  # citizen ID -> broken numbers that could be repaired to it
        self.closed: set[str] = set()  # roles of the work set, among those read
        self.values: dict[str, set[str]] = {"record": set(), "id": set(), "person": set(), "broken": set()}
        self.fresh: list[str] = []  # roles added since the last `close`
        self.prefixes_closed = 0  # `prefixes` before this position were there at the last `close`
        self.repinned: list[str] = []  # roles with a decision read since the last `close`

    def add_rows(self, rows: pd.DataFrame) -> None:
        """Index rows (role_key record id_key RKID broken_id repair_prefix repair_birth), each role once."""
        cols = ("role_key", "record", "id_key", "RKID", "broken_id", "repair_prefix", "repair_birth")
        for key, record, id_key, person, broken, prefix, birth in zip(*(rows[c].to_numpy(dtype=object) for c in cols)):
            if key in self.rows:
                continue
            self.rows[key] = (record, id_key, person, broken)
            for kind, value in (("record", record), ("id", id_key), ("person", person), ("broken", broken)):
                if value:
                    self.by[kind].setdefault(value, []).append(key)
            if prefix:
                self.prefix_roles.append(key)
                self.prefixes.append((prefix, birth))
            self.fresh.append(key)

    def add_decisions(self, dec: pd.DataFrame) -> None:
        if not len(dec):
            return
        for role, person in zip(db.role_key(dec).to_numpy(dtype=object), dec["RKID"].to_numpy(dtype=object)):
            self.pinned.setdefault(role, set()).add(person)
            self.pinning.setdefault(person, set()).add(role)
            self.fresh.append(role)  # (a role in the work set pins a new person; a new one meets a work person)
            self.repinned.append(role)

    def add_repairs(self, repairs: pd.DataFrame) -> None:
        for broken, variant in zip(repairs["broken"].to_numpy(dtype=object), repairs["variant"].to_numpy(dtype=object)):
            self.repairable.setdefault(variant, set()).add(broken)
            if variant in self.values["id"]:
                self.values["broken"].add(broken)
                self.fresh += self.by["broken"].get(broken, [])

    def close(self, work: set[str]) -> set[str]:
        """The roles read that the work set `work` reaches (itself among them)."""
        values, by = self.values, self.by
        todo = [k for k in self.fresh if k in self.rows and self._joins(k, work)]
        todo += [k for k in work - self.closed if k in self.rows]
        fresh_prefix = range(self.prefixes_closed, len(self.prefixes))
        self.prefixes_closed = len(self.prefixes)
        if fresh_prefix and values["id"]:  # new damaged numbers repairable to an ID of the work set
            ok = _repairable_to(np.asarray([self.prefixes[i] for i in fresh_prefix], dtype=object), values["id"])
            todo += [self.prefix_roles[i] for i, hit in zip(fresh_prefix, ok) if hit]
        # a role of the work set whose decision was read only now: the persons it names join
        reopened = [k for k in self.repinned if k in self.closed]
        self.closed -= set(reopened)
        todo += reopened
        self.fresh, self.repinned = [], []
        while todo:
            new_ids: set[str] = set()
            nxt: list[str] = []
            for key in todo:
                if key in self.closed:
                    continue
                self.closed.add(key)
                record, id_key, person, _ = self.rows[key]
                persons = {person} | self.pinned.get(key, set())
                for kind, value in (("record", record), ("id", id_key)):
                    if value and value not in values[kind]:
                        values[kind].add(value)
                        nxt += by[kind].get(value, [])
                        if kind == "id":
                            new_ids.add(value)
                for p in persons - {""} - values["person"]:
                    values["person"].add(p)
                    nxt += by["person"].get(p, [])
                    nxt += [r for r in self.pinning.get(p, ()) if r in self.rows]
            for v in new_ids:  # broken numbers that could be repaired to a new ID of the work set
                for b in self.repairable.get(v, ()):
                    if b not in values["broken"]:
                        values["broken"].add(b)
                        nxt += by["broken"].get(b, [])
            open_prefix = [i for i, k in enumerate(self.prefix_roles) if k not in self.closed] if new_ids else []
            if open_prefix:
                ok = _repairable_to(np.asarray([self.prefixes[i] for i in open_prefix], dtype=object), new_ids)
                nxt += [self.prefix_roles[i] for i, hit in zip(open_prefix, ok) if hit]
            todo = [k for k in nxt if k not in self.closed]
        return set(self.closed)

    def _joins(self, key: str, work: set[str]) -> bool:
        """Whether a role read since the last `close` joins the work set through what it already holds."""
        record, id_key, person, broken = self.rows[key]
        v = self.values
        return (key in work or record in v["record"] or (id_key != "" and id_key in v["id"])
                or (person != "" and person in v["person"]) or (broken != "" and broken in v["broken"])
                or bool(self.pinned.get(key, set()) & v["person"]))


def _repair_range(prefix: str, birth: str) -> tuple[str, str] | None:
    """(start of the ID, birth date to check; "" none) of the citizen IDs an Excel-damaged number's kept
    digits `prefix` could be (`linkage.repair`): the digits less the last shown (it may be rounded);
    with a birth date, the region's six digits and the birth date (positions 7-14 of the ID). None: too
    few digits and no birth date, no candidate."""
    head = prefix[:-1] if len(prefix) > 6 else prefix
    if len(prefix) >= 15:
        return head, ""
    if not birth:
        return None
    if len(head) >= 6:
        return (head[:6] + birth, "") if head[6:] == birth[:len(head) - 6] else None
    return head, birth


def _repairable_to(prefixes: np.ndarray, ids: set[str]) -> np.ndarray:
    """Which rows of `prefixes` (repair_prefix, repair_birth) could be repaired to one of the citizen IDs
    `ids` (`_repair_range`)."""
    valid = np.sort(np.asarray([v for v in ids if len(v) == 18], dtype=object))
    out = np.zeros(len(prefixes), dtype=bool)
    if not len(valid):
        return out
    for i, (p, birth) in enumerate(prefixes):
        rng = _repair_range(p, birth)
        if rng is None:
            continue
        start, b = rng
        lo, hi = np.searchsorted(valid, start), np.searchsorted(valid, start + ":")
        out[i] = any(v[6:14] == b for v in valid[lo:hi]) if b else hi > lo
    return out


def _decisions(conn: sa.Connection, persons: set[str], records: set[str]) -> pd.DataFrame:
    """Decisions naming one of `persons` or taken on a role of one of `records`."""
    cols = ["BM", "BH", "YWZJ", "JS", "RKID"]
    parts = [db.select_in(conn, db.decisions, "RKID", persons, cols)]
    for bh, keys in db.records_by_table(records).items():
        parts.append(db.select_in(conn, db.decisions, "YWZJ", keys, cols, equal=("BH", bh)))
    return pd.concat(parts, ignore_index=True).drop_duplicates()


def _merged_into(conn: sa.Connection, persons: set[str], seen: set[str]) -> set[str]:
    """The persons the retired ones of `persons` were merged into, and so on (adds them to `seen`)."""
    out: set[str] = set()
    frontier = set(persons)
    while frontier:
        got = db.select_in(conn, db.persons, "RKID", frontier, ["RKID", "merged_into"])
        nxt = set(got["merged_into"]) - seen - {""}
        seen |= nxt
        out |= nxt
        frontier = nxt
    return out
