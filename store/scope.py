"""What a daily date reaches in the base, found by indexed lookups (issue 15, docs/scale.md 2.3).

`find_scope` starts from the roles a date's deliveries touch (seeds) and closes them under every
relation the linker (`linkage.incremental`) and the rules (`verification.recheck`) follow: the same
record, the same person (`links.RKID`), the same ID group (`role_index.id_key`) or rule ID
(`state_id`), decisions, ID repair both ways, and the fuzzy blocks of `role_forms` (per pass of
`config/linkage.json`). Rows that may be fuzzy queries (`pq`: no link, or a link by a fuzzy method)
carry the closure on through their blocks; the others are taken in with their person, ID and record,
as the linker's context. The result is a superset of what the linker and the rules read, so running
the pure day (`exchange.process.process_date`) on it gives what a run over the whole base gives;
`tests/test_incremental.py` holds it to that on every date.

Every lookup goes through `_select`, so the rows it hands out count in `store.db.READ`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from store import db

QUERY_METHODS = ("FUZZY", "POSSIBLE", "UNMATCHED", "MANUAL")  # linkage.incremental.QUERY_METHODS
CHUNK = 5000  # keys per query (SQLite allows 32,766 parameters)


def _select(conn: sa.Connection, table: sa.Table, column: str, values: Iterable[str], cols: list[str],
            equal: tuple[str, str] | None = None) -> pd.DataFrame:
    """Rows of `table` whose `column` is one of `values` (and, given `equal` = (column, value), that column
    equal to that value), columns `cols`, in chunks of `CHUNK` keys. The condition `column <> ''` is
    spelled out: it lets SQLite use a partial index (`store.db._partial`), which it does not infer from
    an IN list (without it each chunk scanned the whole table). Driver SQL: compiling an IN list of
    thousands of values through SQLAlchemy cost more than running it."""
    values = sorted({v for v in values if v})
    q = '"'
    ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    head = (f"SELECT {', '.join(q + c + q for c in cols)} FROM {q}{table.name}{q} "
            f"WHERE {q}{column}{q} <> ''" + (f" AND {q}{equal[0]}{q} = {ph}" if equal else "") + f" AND {q}{column}{q} ")
    tail = (equal[1],) if equal else ()
    parts = []
    for start in range(0, len(values), CHUNK):
        chunk = values[start:start + CHUNK]
        if conn.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(head + f"= ANY({ph})", (*tail, chunk)).all()
        else:
            rows = conn.exec_driver_sql(head + f"IN ({', '.join([ph] * len(chunk))})", (*tail, *chunk)).all()
        if rows:
            parts.append(pd.DataFrame(rows, columns=cols, dtype=object))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols, dtype=object)
    db.READ.add(table.name, len(frame))
    return frame


@dataclass
class Scope:
    roles: set[str] = field(default_factory=set)  # role keys
    records: set[str] = field(default_factory=set)  # BH|YWZJ
    rounds: int = 0
    lookups: dict[str, int] = field(default_factory=dict)

    def by_table(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in self.records:
            bh, ywzj = r.split("|", 1)
            out.setdefault(bh, set()).add(ywzj)
        return out


def _reach(reach, pairs: pd.DataFrame, query: str, target: str, compare_cols: list[str]):
    """`reach(queries, targets)` on the pairs' columns with the suffixes `query` and `target`."""
    if not len(pairs):
        return pd.Series(dtype=bool).to_numpy()
    q = pairs[[c + query for c in compare_cols]].set_axis(compare_cols, axis=1)
    t = pairs[[c + target for c in compare_cols]].set_axis(compare_cols, axis=1)
    return reach(q.reset_index(drop=True), t.reset_index(drop=True))


def find_scope(conn: sa.Connection, forms_table: sa.Table, block_cols: list[str], compare_cols: list[str],
               skip: dict[str, set[str]], seed_records: set[str], seed_roles: set[str], seed_index: pd.DataFrame,
               seed_forms: pd.DataFrame, variants, near_ids, reach, max_roles: int) -> Scope | None:
    """The scope of a date (module docstring); None when it grows past `max_roles` (the date then reads
    the whole base). `seed_index` / `seed_forms`: index and form rows of today's versions of the seed
    records (their old versions are read from the base); `skip`: per block column, the hashes of the
    blocks the model skips; `variants(broken_ids)`: the citizen IDs a broken number could be repaired
    to (`linkage.repair` candidates); `near_ids(valid_ids)`: how to look up the broken numbers one
    keystroke from them (`linkage.ids.NearIDs`); `reach(queries, targets)`: which row-aligned pairs of forms (columns
    `compare_cols`) can be kept candidates (`linkage.blocks.reachable`).

    Two kinds of roles: the work set (seeds and the possible queries sharing a block with the work set:
    they may be re-linked) and the context (roles the work set's queries can reach, and everything
    sharing a person, ID, record or decision with either). Only the work set's blocks bring in more
    possible queries; a possible query of either kind brings in its whole blocks."""
    ix = db.role_index
    icols = ["role_key", "record", "id_key", "state_id", "broken_id", "repair_prefix", "repair_birth"]
    scope = Scope()
    seen: dict[str, set] = {k: set() for k in ("record", "person", "id_key", "state_id", "broken", "prefix",
                                                "valid", "bk")}
    work: set[str] = set()  # roles of the work set (their blocks probed for possible queries)
    probed_w: set[str] = set()  # roles whose blocks were probed as the work set's
    probed_p: set[str] = set()  # ... as a possible query's
    is_pq: set[str] = set()
    checked: set[str] = set()  # roles outside the scope whose link method was read (is_pq known)
    extra_rows = seed_index.reindex(columns=icols) if len(seed_index) else None
    extra_forms = seed_forms.reindex(columns=["role_key", *compare_cols, *block_cols]) if len(seed_forms) else None
    records, roles = set(seed_records), set(seed_roles)
    first = True
    while True:
        records -= seen["record"]
        roles -= scope.roles
        pending = ((work & scope.roles) - probed_w) | ((is_pq & scope.roles) - probed_p)
        if not records and not roles and not pending and extra_rows is None:
            break
        scope.rounds += 1
        seen["record"] |= records
        parts = [_select(conn, ix, "record", records, icols), _select(conn, ix, "role_key", roles, icols)]
        if extra_rows is not None:
            parts.append(extra_rows)
            extra_rows = None
        if first:  # the delivered records' roles, old and new, are the work set; the other seeds need
            # re-checking only (their states can change with the date), so they are context
            work |= set(parts[0]["role_key"]) | (set(parts[2]["role_key"]) if len(parts) > 2 else set())
            first = False
        rows = pd.concat(parts, ignore_index=True).drop_duplicates()
        fresh_keys = set(rows["role_key"]) - scope.roles
        scope.roles |= fresh_keys
        scope.records |= set(rows["record"]) | records
        if len(scope.roles) > max_roles:
            return None
        nxt_roles: set[str] = set()
        nxt_records = set(rows["record"]) - seen["record"]
        # persons, and the decisions naming them or their roles
        lk = _select(conn, db.links, "role_key", fresh_keys, ["role_key", "RKID", "PPFS"])
        linked = set(lk["role_key"])
        is_pq |= set(lk.loc[lk["PPFS"].isin(QUERY_METHODS), "role_key"]) | (fresh_keys - linked)
        persons = set(lk["RKID"]) - {""}
        dec = _decisions(conn, persons, set(rows["record"]))
        persons |= set(dec["RKID"])
        nxt_roles |= set(dec["BM"] + "|" + dec["BH"] + "|" + dec["YWZJ"] + "|" + dec["JS"])
        persons -= seen["person"]
        seen["person"] |= persons
        persons |= _merged_into(conn, persons, seen["person"])
        nxt_roles |= set(_select(conn, db.links, "RKID", persons, ["role_key"])["role_key"])
        # ID groups and rule IDs
        for col in ("id_key", "state_id"):
            vals = set(rows[col]) - seen[col] - {""}
            seen[col] |= vals
            nxt_roles |= set(_select(conn, ix, col, vals, ["role_key"])["role_key"])
        # ID repair: a broken number to the IDs it could be, a valid ID to the broken numbers near it
        broken = set(rows["broken_id"]) - seen["broken"] - {""}
        seen["broken"] |= broken
        nxt_roles |= set(_select(conn, ix, "id_key", variants(sorted(broken)), ["role_key"])["role_key"])
        prefixes = set(zip(rows["repair_prefix"], rows["repair_birth"])) - seen["prefix"] - {("", "")}
        seen["prefix"] |= prefixes
        for p, birth in sorted(prefixes):
            head = p[:-1] if len(p) > 6 else p  # Excel's last shown digit may be rounded
            cond = [ix.c.id_key >= head, ix.c.id_key < head + ":", ix.c.id_key != ""]  # != "": the partial index
            if len(p) < 15:  # too few digits: the holder must also be born that day (`linkage.repair`)
                if not birth:
                    continue
                cond.append(sa.func.substr(ix.c.id_key, 7, 8) == birth)
            hit = conn.execute(sa.select(ix.c.role_key).where(*cond)).all()
            db.READ.add(ix.name, len(hit))
            nxt_roles |= {h[0] for h in hit}
        valid = {v for v in rows["id_key"] if len(v) == 18 and v.isalnum()} - seen["valid"]
        seen["valid"] |= valid
        if valid:
            index = near_ids(valid)
            hits = pd.concat([_select(conn, ix, col, keys, ["role_key", "broken_id"])
                              for col, keys in index.keys().items()], ignore_index=True)
            nxt_roles |= {r for r, b in zip(hits["role_key"], hits["broken_id"]) if index.near(b)}
        heads = {v[:k] for v in valid for k in range(6, 18)}
        nxt_roles |= set(_select(conn, ix, "repair_prefix", heads, ["role_key"])["role_key"])
        # fuzzy blocks: a possible query sharing a block with the work set joins it; a possible query
        # takes in every role of its blocks (its candidates)
        want_w = (work & scope.roles) - probed_w
        want_p = (is_pq & scope.roles) - probed_p
        probed_w |= want_w
        probed_p |= want_p
        fcols = ["role_key", *compare_cols, *block_cols]
        forms = _select(conn, forms_table, "role_key", want_w | want_p, fcols)
        if extra_forms is not None:
            forms = pd.concat([forms, extra_forms], ignore_index=True)
            extra_forms = None
        for col in block_cols:
            skipped = skip.get(col, set()) | {""}
            fw = {v for v in set(forms.loc[forms["role_key"].isin(want_w), col]) - skipped if ("w", col, v) not in seen["bk"]}
            fp = {v for v in set(forms.loc[forms["role_key"].isin(want_p), col]) - skipped if ("p", col, v) not in seen["bk"]}
            seen["bk"].update(("w", col, v) for v in fw)
            seen["bk"].update(("p", col, v) for v in fp)
            if not fw and not fp:
                continue
            mates = _select(conn, forms_table, col, fw | fp, ["role_key", *compare_cols, col])
            if not len(mates):
                continue
            unknown = set(mates["role_key"]) - scope.roles - checked  # whether a possible query: not known yet
            checked |= unknown
            ml = _select(conn, db.links, "role_key", unknown, ["role_key", "PPFS"])
            is_pq |= set(ml.loc[ml["PPFS"].isin(QUERY_METHODS), "role_key"]) | (unknown - set(ml["role_key"]))
            # a possible query's candidates: the mates its forms can reach
            q = forms[forms["role_key"].isin(want_p) & forms[col].isin(fp)]
            pairs = q.merge(mates, on=col, suffixes=("", "_t"))
            pairs = pairs[pairs["role_key"] != pairs["role_key_t"]]
            nxt_roles |= set(pairs.loc[_reach(reach, pairs, "", "_t", compare_cols), "role_key_t"])
            # possible queries joining the work set: a mate reaching a work form, a work query reaching a mate
            w = forms[forms["role_key"].isin(want_w) & forms[col].isin(fw)]
            pq_mates = mates[mates["role_key"].isin(is_pq)]
            pairs = w.merge(pq_mates, on=col, suffixes=("", "_t"))
            pairs = pairs[pairs["role_key"] != pairs["role_key_t"]]
            hit = _reach(reach, pairs, "_t", "", compare_cols)
            hit |= pairs["role_key"].isin(is_pq).to_numpy() & _reach(reach, pairs, "", "_t", compare_cols)
            joins = set(pairs.loc[hit, "role_key_t"])
            work |= joins
            nxt_roles |= joins
        roles = nxt_roles
        records = nxt_records
    scope.lookups = {k: len(v) for k, v in seen.items()} | {"work": len(work), "possible_queries": len(is_pq)}
    return scope


def _decisions(conn: sa.Connection, persons: set[str], records: set[str]) -> pd.DataFrame:
    """Decisions naming one of `persons` or taken on a role of one of `records`."""
    cols = ["BM", "BH", "YWZJ", "JS", "RKID"]
    parts = [_select(conn, db.decisions, "RKID", persons, cols)]
    by_table: dict[str, set[str]] = {}
    for r in records:
        bh, ywzj = r.split("|", 1)
        by_table.setdefault(bh, set()).add(ywzj)
    for bh, keys in by_table.items():
        parts.append(_select(conn, db.decisions, "YWZJ", keys, cols, equal=("BH", bh)))
    return pd.concat(parts, ignore_index=True).drop_duplicates()


def _merged_into(conn: sa.Connection, persons: set[str], seen: set[str]) -> set[str]:
    """The persons the retired ones of `persons` were merged into, and so on (adds them to `seen`)."""
    out: set[str] = set()
    frontier = set(persons)
    while frontier:
        got = _select(conn, db.persons, "RKID", frontier, ["RKID", "merged_into"])
        nxt = set(got["merged_into"]) - seen - {""}
        seen |= nxt
        out |= nxt
        frontier = nxt
    return out
