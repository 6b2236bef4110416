"""A daily date on the part of the base its deliveries reach (issue 15, docs/scale.md 2.3).

`scoped_state` finds the seeds of a date (the records delivered, the tasks answered, the roles whose
states the date alone can change), works out today's version of the delivered records on just those
records, finds the scope by lookups (`store.scope.find_scope`) and reads the base restricted to it.
`exchange.process.process_date(..., scoped=True)` then runs on that as on the whole base, and
`finish_scoped` writes the role index of the scope and counts the city's figures in the database.

A full extract (a re-baseline) is compared with its whole table, which is read for it
(`whole_table_files`): the records it changes are the seeds, the rest of the base is not read.

Not scoped (the date reads the whole base, as before): the first date, a base whose role index was built
for another configuration, a scope past `incremental.max_share` of the roles, and a date on which the
linker needed more than the scope (`ScopeTooSmall`) even after the scope was widened with the rows it
flagged (`widen`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
import numpy as np
import pandas as pd
import sqlalchemy as sa

from catalog import RETURN_TABLE, TABLES
from catalog.base import MEASURE_FLAGS, BaseState
from exchange.apply import Applied
from exchange.overlays import live_overlays, overlay_sources
from exchange.process import ProcessResult, apply_extracts, apply_file, apply_returns, in_apply_order, stored_model
from exchange.role_index import role_index
from linkage.base import rkid_for, role_keys
from linkage.blocks import (COMPARE_COLUMNS, block_columns, block_ints, block_passes, form_reach,
                            query_empty_columns, role_blocks)
from linkage.ids import NearIDs, id_variants
from linkage.incremental import QUERY_METHODS
from linkage.link import _canonical
from linkage.repair import _variants15, names_could_confirm
from linkage.roles import build_roles
from quality.rates import NOT_LINKED, rates_from_counts
from store import base, db
from store.scope import ScopeSearch, find_scope
from day import workers
from verification.states import WOMEN_AGE

log = logging.getLogger("popbase")


INDEX_LAYOUT = 6  # raised when the role index's columns change meaning: an older index is rebuilt


def index_stamp(cfg: dict) -> str:
    """What the role index depends on: the configuration version, its blocking passes and the index's
    own layout."""
    return json.dumps({"version": cfg.get("version", ""), "passes": block_passes(cfg), "layout": INDEX_LAYOUT},
                      sort_keys=True)


def index_of(roles: pd.DataFrame, keys: np.ndarray, view: dict, cfg: dict,
             method_of: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index and form rows of `roles` (`exchange.role_index`, `linkage.blocks`); `method_of`: the
    roles' link methods now (`_method_of`; a form's `pq`: its role has no link, or one by a fuzzy method)."""
    filled = _canonical(roles, [])
    order = pd.Index(role_keys(filled)).get_indexer(keys)  # _canonical sorts: back to the roles' order
    filled = filled.iloc[order].reset_index(drop=True)
    forms = role_blocks(filled, keys, cfg)
    ppfs = forms["role_key"].map(method_of)
    forms.insert(3 + len(COMPARE_COLUMNS), "pq", np.where(ppfs.isna() | ppfs.isin(QUERY_METHODS), "1", ""))
    return role_index(filled, keys, view), forms


def _years_before(day: str, years: int) -> str:
    """CCYYMMDD `years` before `day`, as text: born after it = not yet `years` old on `day` (the
    comparison `verification.states._age` makes, 29 February included)."""
    return f"{int(day[:4]) - years:04d}{day[4:]}"


def _repair_targets(broken: list[str]) -> pd.DataFrame:
    """The citizen IDs broken numbers could be repaired to, one keystroke away (`linkage.repair`): one
    row (broken, variant) per pair."""
    if not broken:
        return pd.DataFrame({"broken": pd.Series(dtype=object), "variant": pd.Series(dtype=object)})
    s = pd.Series(broken, dtype=object)
    v18, v15 = id_variants(s), _variants15(s)
    v15 = v15[v15["variant"] != ""]
    src = np.concatenate([v18["src"].to_numpy(np.int64), v15["src"].to_numpy(np.int64)])
    return pd.DataFrame({"broken": s.to_numpy(dtype=object)[src],
                         "variant": np.concatenate([v18["variant"].to_numpy(dtype=object),
                                                    v15["variant"].to_numpy(dtype=object)])})


@dataclass
class Scoped:
    state: BaseState
    roles: set[str]
    records: set[str]
    stamp: str
    forms: sa.Table
    block_cols: list[str]
    search: ScopeSearch | None = None  # the lookups behind `roles`, to widen them (`widen`)
    rounds: int = 1  # the linker's rounds the scope allows (one more per widening)
    whole: "WholeTables | None" = None  # the date's full extracts, applied on their whole tables

    def drop_search(self) -> None:
        """Let go of the lookups' caches (every block form and index row the scope read: 0.1-0.5 GiB at 1M-3M
        persons) once the scope will not be widened again, so that they are not held through the writes and
        outputs. The search and its scope refer to each other: the cycle is cut, so the memory goes now."""
        if self.search is not None:
            self.search.scope.search = None
            self.search = None

    def pre_applied(self) -> dict[str, Applied]:
        """The full extracts' results for the records of the scope (`exchange.process.apply_extracts`)."""
        return self.whole.for_records(self.state.sources) if self.whole is not None else {}


@dataclass
class WholeTables:
    """The date's files of every table that receives a full extract, applied in order on the whole table
    (a full extract says which records it changes only against all of them: the absent ones are
    deleted). Kept: each file's counts and rejects, and the new rows of the records the files changed;
    the other records of the table are as stored."""

    applied: dict[str, Applied]  # by `<batch_id>__<line>`; `current` dropped
    table_of: dict[str, str]  # by `<batch_id>__<line>`: the file's table
    changed: dict[str, pd.DataFrame]  # per table: the rows of its changed records after the date's files

    def records(self) -> set[str]:
        """`BH|YWZJ` of the records the files changed (new, updated or deleted)."""
        return {f"{t}|{k}" for t, rows in self.changed.items() for k in rows["_key"]}

    def for_records(self, sources: dict[str, pd.DataFrame]) -> dict[str, Applied]:
        """Each file's result with `current` = the table's rows in `sources` (records of a scope, as
        stored) with the changed ones replaced: what applying the files on the whole table gives for those
        records, since a full extract leaves an unchanged record as it was."""
        current = {}
        for t, rows in self.changed.items():
            kept = sources[t]
            kept = kept[~kept["_key"].isin(set(rows["_key"])).to_numpy()].reindex(columns=rows.columns)
            current[t] = pd.concat([kept, rows], ignore_index=True) if len(rows) else kept.reset_index(drop=True)
        return {k: replace(a, current=current[self.table_of[k]]) for k, a in self.applied.items()}


def whole_table_files(conn: sa.Connection, new_files, frames: dict, date: str) -> WholeTables | None:
    """Apply the date's files of every table that receives a full extract on the whole stored table, in
    the order `apply_extracts` applies them (None: no full extract). The table is read whole: a full
    extract delivers the whole table, so this follows the delivery, not the city."""
    files = in_apply_order(f for f in new_files if f.table != RETURN_TABLE)
    full_tables = {f.table for f in files if f.extract_type != "incremental"}
    if not full_tables:
        return None
    applied: dict[str, Applied] = {}
    table_of: dict[str, str] = {}
    changed: dict[str, pd.DataFrame] = {}
    for t in sorted(full_tables):
        current = base.source_table(conn, t)
        keys: set[str] = set()
        for f in (f for f in files if f.table == t):
            name = f"{f.batch_id}__{f.line_in_manifest}"
            a = apply_file(current, frames, f, date)
            current = a.current
            keys |= set(a.changes["_key"])
            applied[name], table_of[name] = replace(a, current=pd.DataFrame()), t
        changed[t] = current[current["_key"].isin(keys).to_numpy()].reset_index(drop=True)
    return WholeTables(applied=applied, table_of=table_of, changed=changed)


def scoped_state(conn: sa.Connection, staged, frames: dict, date: str, cfg: dict, settings) -> Scoped | None:
    """The base restricted to what the date's deliveries reach, or None when the date must read it whole
    (the module docstring says when)."""
    last_run = conn.execute(sa.select(sa.func.max(db.runs.c.business_date))).scalar() or ""
    model = stored_model(db.read_meta(conn, db.MODEL_KEY), cfg)
    stamp = index_stamp(cfg)
    new_files = [f for f in staged.files if f.status == "staged"]
    why = ("first date" if not last_run or last_run >= date else
           "full re-link asked for" if settings.full_relink or settings.incremental_linking is False else
           "incremental linking is off" if not (settings.incremental_linking or cfg.get("incremental", {}).get("enabled")) else
           "no model with its skip list" if model is None or model.skip_blocks is None else
           "the role index was built for another configuration" if db.read_meta(conn, db.ROLE_INDEX_KEY) != stamp
           else "")
    if why:
        log.info("%s reads the whole base: %s", date, why)
        return None
    # seeds: the delivered records (of a table with a full extract, those its files changed), the answered
    # tasks' records, the date-sensitive roles
    whole = whole_table_files(conn, new_files, frames, date)
    seed_records: set[str] = whole.records() if whole is not None else set()
    answered: set[str] = set()
    for f in new_files:
        frame = frames[f"{f.batch_id}__{f.line_in_manifest}"]
        if f.table == RETURN_TABLE:
            answered |= set(frame["RWBH"].astype(str).str.strip()) if "RWBH" in frame.columns else set()
        elif whole is None or f.table not in whole.changed:
            key = TABLES[f.table].key
            seed_records |= {f"{f.table}|{k}" for k in frame[key].astype(str).str.strip()} if key in frame.columns else set()
    answered_tasks = base.tasks_by_number(conn, answered)
    seed_records |= set(answered_tasks["BH"] + "|" + answered_tasks["YWZJ"])
    lo, hi = WOMEN_AGE
    seed_roles = base.date_sensitive_roles(conn, last_run, date, young_after=_years_before(last_run, lo),
                                           old_until=_years_before(date, hi + 1))
    # today's version of the delivered records, on those records alone
    mini = base.read_scoped_base(conn, seed_records, set(), set())
    mini = replace(mini, tasks=pd.concat([mini.tasks, answered_tasks], ignore_index=True).drop_duplicates("RWBH"))
    sources, reports, _ = apply_extracts(mini, staged, frames, date,
                                         whole.for_records(mini.sources) if whole is not None else None)
    _, overlays, _, _, _ = apply_returns(mini, staged, frames, date, reports, sources)
    view = overlay_sources(sources, live_overlays(overlays, sources))
    roles = build_roles(view, date)
    forms = db.ensure_forms(conn, block_columns(cfg))
    cols = block_columns(cfg)
    seed_index, seed_forms = index_of(roles, role_keys(roles), view, cfg, _method_of(mini.links))
    skip = {f"bk_{name}": set(block_ints(v)) for name, v in (model.skip_blocks or {}).items()}
    total = int(conn.execute(sa.select(sa.func.count()).select_from(db.role_index)).scalar() or 0)
    max_share = float(cfg.get("incremental", {}).get("max_share", 0.35))
    scope = find_scope(conn, forms, cols, COMPARE_COLUMNS, skip, seed_records, seed_roles, seed_index, seed_forms,
                       _repair_targets, NearIDs, lambda forms_: form_reach(forms_, model, cfg),
                       max_roles=max(int(max_share * total), 1000), query_empty=query_empty_columns(cfg),
                       names_confirm=lambda a, b: names_could_confirm(a, b, cfg))
    if scope is None:
        log.info("%s reads the whole base: its changes reach past %.0f%% of the roles", date, 100 * max_share)
        return None
    rkids = _rkid_claims(conn, scope.roles)
    state = base.read_scoped_base(conn, scope.records, scope.roles, rkids)
    log.info("%s: scope of %s roles in %s records (%s lookup rounds) for %s delivered records (%s)",
             date, f"{len(scope.roles):,}", f"{len(scope.records):,}", scope.rounds, f"{len(seed_records):,}",
             ", ".join(f"{k} {v:,}" for k, v in scope.lookups.items()))
    return Scoped(state=state, roles=scope.roles, records=scope.records, stamp=stamp, forms=forms, block_cols=cols,
                  search=scope.search, whole=whole)


MAX_ROUNDS = 3  # a scope is widened at most twice; then the date reads the whole base


def widen(conn: sa.Connection, sc: Scoped, flagged: set[str], date: str) -> Scoped | None:
    """The scope with the rows the linker flagged (`exchange.process.ScopeTooSmall.role_keys`) in its
    work set and the linker allowed a round more, or None (the date reads the whole base) when nothing
    was flagged, the rounds are spent or the scope grows past its limit. At 1M persons a date's first
    sub-run once failed on one context row: widening costs the lookups of that row, not the whole base."""
    if not flagged or sc.search is None or sc.rounds >= MAX_ROUNDS:
        return None
    scope = sc.search.widen(flagged)
    if scope is None:
        return None
    new_roles = scope.roles - sc.roles  # only what the widening added is read; the rest is in hand
    extra = base.read_scoped_base(conn, scope.records - sc.records, new_roles, _rkid_claims(conn, new_roles))
    state = _union(sc.state, extra)
    log.info("%s: scope widened by %s flagged role(s) to %s roles in %s records", date, f"{len(flagged):,}",
             f"{len(scope.roles):,}", f"{len(scope.records):,}")
    return replace(sc, state=state, roles=scope.roles, records=scope.records, rounds=sc.rounds + 1)


def _union(a: BaseState, b: BaseState) -> BaseState:
    """Two scoped reads of disjoint records and roles as one (`read_scoped_base` of their union: every frame
    but `persons` is per record or per role; persons are deduplicated and kept in RKID order)."""
    def cat(x: pd.DataFrame, y: pd.DataFrame) -> pd.DataFrame:
        return x if not len(y) else y if not len(x) else pd.concat([x, y], ignore_index=True)

    persons = (cat(a.persons, b.persons).drop_duplicates("RKID").sort_values("RKID", kind="stable")
               .reset_index(drop=True))
    return replace(a, sources={k: cat(v, b.sources[k]) for k, v in a.sources.items()}, persons=persons,
                   links=cat(a.links, b.links), decisions=cat(a.decisions, b.decisions), tasks=cat(a.tasks, b.tasks),
                   overlays=cat(a.overlays, b.overlays))


@dataclass
class Touched:
    """What a scoped date can have changed in the exports: the persons and link roles it read or wrote
    (everything else is as `previous`, the date processed before it, left it)."""

    previous: str
    rkids: set[str]
    role_keys: set[str]


def touched(sc: Scoped, res: ProcessResult) -> Touched:
    before, after = sc.state, res.state
    return Touched(previous=before.last_run,
                   rkids=set(before.persons["RKID"]) | set(after.persons["RKID"]),
                   role_keys=set(before.links["role_key"]) | set(after.links["role_key"]))


def _rkid_claims(conn: sa.Connection, keys: set[str]) -> set[str]:
    """The issued RKIDs a role of the scope would be given if it founded a person (`rkid_for`, then the
    next salt while issued): the linker must see them to never issue one twice."""
    out: set[str] = set()
    todo = [k.split("|", 3) for k in keys]
    salt = 0
    while todo:
        cand = {rkid_for(*k, salt): k for k in todo}
        hit = base.issued_rkids(conn, set(cand))
        out |= hit
        todo = [cand[c] for c in hit]
        salt += 1
    return out


MEASURE_KEYS = ["table", "dept", *MEASURE_FLAGS, "linked"]  # = store.base.role_measure_counts' columns but n


def _method_of(links: pd.DataFrame) -> pd.Series:
    """PPFS by role key."""
    return links.drop_duplicates("role_key").set_index("role_key")["PPFS"] if len(links) else pd.Series(dtype=object)


def _measures(index: pd.DataFrame, method_of: pd.Series, sign: int) -> list[list]:
    """Roles (their `role_index` rows) counted per table, department, quality flags and linked-or-not, as
    `store.base.role_measure_counts` counts them."""
    ppfs = index["role_key"].map(method_of).fillna("").astype(str).str.strip()
    frame = pd.DataFrame({"table": index["BH"].astype(str), "dept": index["q_dept"].astype(str),
                          **{f: index[f"q_{f}"].astype(str) == "1" for f in MEASURE_FLAGS},
                          "linked": (ppfs != "") & ~ppfs.isin(NOT_LINKED)})
    if not len(frame):
        return []
    measures = frame.groupby(MEASURE_KEYS).size().rename("n").reset_index()
    return [[*r[:-1], sign * int(r[-1])] for r in measures.itertuples(index=False, name=None)]


def city_counts(index: pd.DataFrame, links: pd.DataFrame, persons: pd.DataFrame, sign: int = 1) -> dict:
    """What roles (their `role_index` rows and links) and persons add to the city's figures: roles per
    table, department, quality flags and linked-or-not, links per method, live persons. `sign` -1: what
    they take away."""
    return {"measures": _measures(index, _method_of(links), sign), **_links_and_persons(links, persons, sign)}


def _links_and_persons(links: pd.DataFrame, persons: pd.DataFrame, sign: int) -> dict:
    """Links per method and live persons, times `sign`."""
    live = int((persons["status"] == "live").sum()) if len(persons) else 0
    return {"methods": {k: sign * int(v) for k, v in links["PPFS"].value_counts().items()} if len(links) else {},
            "persons": sign * live}


def add_counts(*parts: dict) -> dict:
    """The sum of `city_counts` results (rows that come to zero dropped)."""
    rows = [r for p in parts for r in p["measures"]]
    m = pd.DataFrame(rows, columns=[*MEASURE_KEYS, "n"])
    m = m.groupby(MEASURE_KEYS)["n"].sum().reset_index() if len(m) else m
    methods: dict[str, int] = {}
    for p in parts:
        for k, v in p["methods"].items():
            methods[k] = methods.get(k, 0) + v
    return {"measures": [[*r[:-1], int(r[-1])] for r in m[m["n"] != 0].itertuples(index=False, name=None)],
            "methods": {k: v for k, v in sorted(methods.items()) if v},
            "persons": sum(p["persons"] for p in parts)}


def finish_scoped(conn: sa.Connection, scoped: Scoped, res: ProcessResult, date: str, cfg: dict) -> None:
    """Write the index rows of the scope's records that changed (`changed_records`: an index or form row
    depends only on its record, its role's fingerprint and its link method) and bring the city's running
    totals up to date: what they and the scope's links and persons counted before the date is taken
    away, what they count now added (only the scope was written, so the totals stay those of the whole
    base; tests/test_reads.py). At 1M persons indexing the whole scope anew took 13 s a date."""
    before, now = scoped.state, res.state
    _, old, index = _reindex_changed(conn, scoped.forms, before, res, cfg, scoped.stamp)
    base.write_city_counts(conn, add_counts(base.read_city_counts(conn), city_counts(old[0], before.links, before.persons, -1),
                                            city_counts(index, now.links, now.persons)))


def city_figures(conn: sa.Connection, batches: list[dict], date: str, prior_reports: dict, staged) -> dict:
    """The run summary with its city-wide figures from the running totals (tasks counted in the database);
    `batches`: the date's batch rows (`ProcessResult.batches`)."""
    from exchange.process import build_summary  # the summary's one definition

    reports = {b["batch_id"]: json.loads(b["report"]) for b in batches}
    counts = base.read_city_counts(conn)
    measures = pd.DataFrame(counts["measures"], columns=[*MEASURE_KEYS, "n"])
    summary = build_summary(staged, reports, base.task_counts(conn, date), counts["methods"],
                            rates_from_counts(measures), date, prior_reports)
    summary["totals"]["persons"] = counts["persons"]
    return summary


def index_is_current(conn: sa.Connection, cfg: dict) -> bool:
    """Whether the stored role index and running totals are those of the base as it stands (kept by every
    date since they were built, for this configuration)."""
    return db.read_meta(conn, db.ROLE_INDEX_KEY) == index_stamp(cfg) and base.read_city_counts(conn) is not None


def _view_hashes(view: dict[str, pd.DataFrame], name: str, cols: list[str]) -> pd.Series:
    """A hash of each live record of table `name` in `view` over `cols`, by record key."""
    frame = view.get(name)
    if frame is None or not len(frame):
        return pd.Series(dtype=np.uint64)
    values = frame.reindex(columns=cols).fillna("").astype(str)
    return pd.Series(pd.util.hash_pandas_object(values, index=False).to_numpy(), index=frame["_key"].astype(str))


def changed_records(before: BaseState, res: ProcessResult) -> set[str]:
    """`BH|YWZJ` of the records whose index rows may differ from the stored ones: a record whose live row
    (answers laid over) is new, gone or different, and a record one of whose roles has another
    fingerprint (an ID's status can change with the business date alone) or another link method (its
    forms' `pq`)."""
    old_view = overlay_sources(before.sources, live_overlays(before.overlays, before.sources))
    out: set[str] = set()
    for name in sorted(set(old_view) | set(res.view)):
        cols = sorted(set(old_view.get(name, pd.DataFrame()).columns) | set(res.view.get(name, pd.DataFrame()).columns))
        old, new = _view_hashes(old_view, name, cols), _view_hashes(res.view, name, cols)
        both = old.index.intersection(new.index)
        keys = old.index.symmetric_difference(new.index).union(both[old[both].to_numpy() != new[both].to_numpy()])
        out |= {f"{name}|{k}" for k in keys}
    cols = ["role_fp", "PPFS"]
    old_l = before.links.set_index("role_key")[cols] if len(before.links) else pd.DataFrame(columns=cols)
    new_l = res.state.links.set_index("role_key")[cols]
    both = old_l.index.intersection(new_l.index)
    moved = both[(old_l.loc[both].to_numpy() != new_l.loc[both].to_numpy()).any(axis=1)]
    out |= set(moved.str.split("|", n=1).str[1].str.rsplit("|", n=1).str[0])
    return out


def _reindex_changed(conn: sa.Connection, forms: sa.Table, before: BaseState, res: ProcessResult, cfg: dict,
                     stamp: str) -> tuple[set[str], tuple[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    """Write the index and form rows of the records that changed (`changed_records`) over their stored
    ones; returns the records, their stored (index, form) rows and their new index rows."""
    records = changed_records(before, res)
    roles = res.roles.reset_index(drop=True)
    sel = np.flatnonzero((roles["BH"].astype(str) + "|" + roles["YWZJ"].astype(str)).isin(records).to_numpy())
    index, form_rows = index_of(roles.iloc[sel], np.asarray(res.role_key, dtype=object)[sel], res.view, cfg,
                                _method_of(res.state.links))
    old = base.index_rows_of_records(conn, forms, records)
    base.write_index(conn, forms, old, index, form_rows, stamp)
    return records, old, index


def update_index(conn: sa.Connection, before: BaseState, res: ProcessResult, cfg: dict) -> int:
    """On a date that read the whole base while the stored index was current: write the index rows of the
    records that changed only (`changed_records`; rewriting the whole index took ~280 s at 1M persons),
    and count the city's running totals in the database. Returns the records re-indexed."""
    forms = db.ensure_forms(conn, block_columns(cfg))
    records, _, _ = _reindex_changed(conn, forms, before, res, cfg, index_stamp(cfg))
    counted = base.role_measure_counts(conn)
    measures = [[*r[:-1], int(r[-1])] for r in counted[counted["n"] > 0].itertuples(index=False, name=None)]
    base.write_city_counts(conn, add_counts({"measures": measures,
                                             **_links_and_persons(res.state.links, res.state.persons, 1)}))
    return len(records)


# The whole index is made and written this many roles at a time. At 200k roles a chunk, the chunks in flight
# (made ahead, being written, sorted for writing) raised the 1M historical date's peak from 7.4 to 7.9-8.1 GiB
# (8.6 on PostgreSQL); at 100k they stay below the rest of the date, in the same time (docs/benchmarks.md)
ROLES_PER_CHUNK = 100_000
CHUNKS_AHEAD = 2  # chunks of index rows the worker may make before the written ones are taken (bounds memory)


def write_full_index(conn: sa.Connection, res: ProcessResult, cfg: dict) -> None:
    """The whole role index anew, from a date that read the whole base, and the city's running totals
    counted from it."""
    totals: list[dict] = []
    base.rebuild_index(conn, db.forms_table(block_columns(cfg)), index_chunks(res, cfg, totals), index_stamp(cfg))
    base.write_city_counts(conn, add_counts(*totals))


def index_chunks(res: ProcessResult, cfg: dict, totals: list[dict]):
    """The index and form rows of every role of `res` (a date, or a bin of one: `day.binned`), chunk by
    chunk of whole records (a record's roles are indexed together: spouses in one record borrow each
    other's place); what they and `res`'s links and persons add to the city's running totals is appended
    to `totals` (`add_counts` sums them). With more than one chunk, a worker process makes the rows of the
    next chunks while the caller writes the last (`_index_rows`): the two halves take about as long."""
    roles = res.roles.reset_index(drop=True)
    keys = np.asarray(res.role_key, dtype=object)
    n_chunks = max(1, -(-len(roles) // ROLES_PER_CHUNK))
    bucket = pd.factorize(roles["BH"].astype(str) + "|" + roles["YWZJ"].astype(str))[0] % n_chunks
    method_of = _method_of(res.state.links)
    marriage = res.view.get("marriage")
    totals.append({"measures": [], **_links_and_persons(res.state.links, res.state.persons, 1)})

    def job(b: int) -> tuple:
        """The arguments of `index_of` for chunk `b`, cut to what its roles need (they travel to the worker)."""
        sel = np.flatnonzero(bucket == b)
        chunk, chunk_keys = roles.iloc[sel], keys[sel]
        view = {}
        if marriage is not None and len(marriage):
            mine = chunk.loc[chunk["BH"].astype(str) == "marriage", "YWZJ"].astype(str)
            view["marriage"] = marriage[marriage["_key"].astype(str).isin(mine)]
        return chunk, chunk_keys, view, cfg, method_of[method_of.index.isin(chunk_keys)]

    for index, form_rows in _index_rows(job, n_chunks):
        totals.append({"measures": _measures(index, method_of, 1), "methods": {}, "persons": 0})
        yield index, form_rows


def _index_rows(job, n_chunks: int):
    """`index_of(*job(b))` for b = 0 .. n_chunks-1, in order. One chunk (or one core): made here. Several:
    made in a worker process at most `CHUNKS_AHEAD` chunks ahead of the caller, so that making the rows
    (Python) and writing them (the database driver) run side by side instead of taking turns."""
    if n_chunks == 1 or not workers.spare_cores():
        return (index_of(*job(b)) for b in range(n_chunks))
    return workers.made_ahead(index_of, (job(b) for b in range(n_chunks)), CHUNKS_AHEAD)
