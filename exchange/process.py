"""The pure heart of a business date: frames in, frames out; no database, no environment, no Dagster.

`process_date` takes the base as it was (`catalog.base.BaseState`), the staged deliveries of the date,
and returns the base as it must become, the audit rows, the batch reports and the run summary.
`day.run` reads the base from the store, calls this, and writes the result back in one transaction.
Named steps, in the order of spec sections 2–5: `apply_extracts` (per department, batch, file) →
`apply_returns` → roles with the departments' answers laid over them (`exchange.overlays`) →
`link_date` → person attributes → `date_states` → tasks (`verification.tasks`) → `build_summary`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from catalog import DEPARTMENTS, RETURN_TABLE
from catalog.base import AUDIT_COLUMNS, DECISION_COLUMNS, LINK_COLUMNS, OVERLAY_COLUMNS, PERSON_COLUMNS, BaseState
from catalog.states import STATE_COLUMNS
from exchange.apply import Applied, apply_delivery
from exchange.overlays import live_overlays, overlay_sources, record_fp
from exchange.returns import REJECTED_EXTRA, return_effects, validate_returns
from linkage.base import person_attributes, role_keys
from linkage.explain import EXPLAINED
from linkage.fuzzy import FSModel
from linkage.incremental import Unsettled, link_incremental, role_fingerprints
from linkage.link import link_roles, load_config
from linkage.normalise import normalise_date
from linkage.roles import build_roles
from quality.rates import quality_rates
from verification.recheck import recheck_rows
from verification.states import evaluate_states, evaluate_states_in_bins, in_state_order, records_view
from verification.tasks import update_tasks

log = logging.getLogger("popbase")


@dataclass
class ProcessResult:
    state: BaseState
    audit: pd.DataFrame
    batches: list[dict]
    summary: dict
    rejects: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (dept, table, rejects)
    roles: pd.DataFrame | None = None
    role_key: np.ndarray | None = None  # the role key of each row of `roles`
    view: dict | None = None  # the sources with the departments' answers laid over (what `roles` came from)

    def summary_line(self) -> str:
        t = self.summary.get("totals", {})
        return ", ".join(f"{k}={v}" for k, v in t.items())


def _audit(entity, key, rkid="", fld="", old="", new="", cause="", actor="popbase", date=""):
    return {"business_date": date, "entity": entity, "entity_key": key, "RKID": rkid, "field": fld,
            "old": old, "new": new, "cause": cause, "actor": actor}


def _file_report(sf) -> dict:
    return {
        "table": sf.table, "path": sf.path, "extract_type": sf.extract_type, "status": sf.status,
        "message": sf.message, "manifest_rows": sf.manifest_rows,
        "received_rows": sf.received_rows if sf.status not in ("quarantined", "missing", "replay") else 0,
        "loaded_rows": 0, "rejected_rows": sf.rejected_rows if sf.status == "staged" else 0,
        **{c: 0 for c in ("inserted", "updated", "deleted", "unchanged", "ignored_stale")},
        "checksum_ok": bool(sf.checksum_ok),
    }


def in_apply_order(files) -> list:
    """Staged files in the order a date applies them: by department (catalogue order), batch, line."""
    order = {d: i for i, d in enumerate(DEPARTMENTS)}
    return sorted(files, key=lambda f: (order.get(f.department, 9), f.batch_id, f.line_in_manifest))


def apply_file(current: pd.DataFrame, staged: dict[str, pd.DataFrame], sf, date: str) -> Applied:
    """One staged extract `sf` applied to its table's rows `current`; the keys of the rows its parser
    rejected are protected (a full file must not delete what it failed to deliver)."""
    name = f"{sf.batch_id}__{sf.line_in_manifest}"
    rejected = staged.get(name + "#rejects")
    protected = rejected["key"] if rejected is not None and "key" in rejected.columns else None
    return apply_delivery(current, staged[name], sf.table, sf.extract_type, date, sf.batch_id, protected_keys=protected)


def apply_extracts(state, stage_result, staged: dict[str, pd.DataFrame], date: str,
                   pre_applied: dict[str, Applied] | None = None):
    """Apply every staged extract; returns new sources, per-batch reports and rows rejected while applying.
    `pre_applied`: files (by `<batch_id>__<line>`) applied already, on the whole table, by the caller
    (`day.scoped`: a full extract on a scoped date); each holds its table's new rows for `state`'s records."""
    sources = dict(state.sources)
    reports: dict[str, dict] = {}
    rejects = []
    for sf in in_apply_order(stage_result.files):
        if sf.status in ("replay", "processed"):
            continue
        rep = reports.setdefault(sf.batch_id, {"batch_id": sf.batch_id, "department": sf.department, "files": []})
        fr = _file_report(sf)
        rep["files"].append(fr)
        if sf.status != "staged" or sf.table == RETURN_TABLE:
            continue
        applied = (pre_applied or {}).get(f"{sf.batch_id}__{sf.line_in_manifest}")
        if applied is None:
            applied = apply_file(sources[sf.table], staged, sf, date)
        sources[sf.table] = applied.current
        for k, v in applied.counts.items():
            fr[k] = int(v)
        extra = len(applied.rejects)
        fr["rejected_rows"] += extra
        fr["loaded_rows"] = fr["received_rows"] - fr["rejected_rows"]
        if extra:
            rejects.append((sf.department, sf.table, applied.rejects))
    return sources, reports, rejects


# ----------------------------------------------------------------------------------------------------
# Verification returns and the overlays they leave


REJECTED_PREFIX = "回填被拒("
REJECTED_NOTE = REJECTED_PREFIX + "{date})：{text}"  # BZ of a task whose answer was rejected (it stays open)


def _return_rejects(rejected: pd.DataFrame) -> pd.DataFrame:
    """The rejects frame of a return: `RWBH` (normalised), `line`, `reason`, `reason_text` (also as `detail`,
    the rejects' readable column), `problem`, `action`, `raw` (the returned row, `|`-joined)."""
    own = [c for c in rejected.columns if c not in REJECTED_EXTRA and c not in ("_line", "line")]
    return pd.DataFrame({
        "RWBH": rejected["task_rwbh"], "line": rejected.get("_line", ""), "reason": rejected["reason"],
        "reason_text": rejected["reason_text"], "detail": rejected["reason_text"], "problem": rejected["problem"],
        "action": rejected["action"], "raw": rejected[own].astype(str).agg("|".join, axis=1) if own else "",
    }).fillna("").astype(str).reset_index(drop=True)


def _answerers(rows: pd.DataFrame, dept: str, date: str) -> pd.DataFrame:
    """Per task number: who answered (`HCR`, else the department) and when (`HCRQ` read as a date, else
    the business date)."""
    last = rows.drop_duplicates("RWBH", keep="last").set_index("RWBH")
    hcr = last["HCR"].fillna("").astype(str).str.strip() if "HCR" in last.columns else pd.Series("", index=last.index)
    hcrq = last["HCRQ"] if "HCRQ" in last.columns else pd.Series("", index=last.index)
    when = normalise_date(hcrq.fillna("").astype(str)) if len(last) else hcrq
    return pd.DataFrame({"actor": hcr.where(hcr != "", dept), "when": when.where(when != "", date)}, index=last.index)


def _record_values(sources: dict[str, pd.DataFrame], frame: pd.DataFrame) -> pd.Series:
    """The department's own value of `field` in each row's record (`BH`, `YWZJ`), before any answer is laid
    over it ('' if the record or field is gone)."""
    out = pd.Series("", index=frame.index, dtype=object)
    for (bh, fld), part in frame[frame["field"] != ""].groupby(["BH", "field"]):
        src = sources.get(bh)
        if src is None or not len(src) or fld not in src.columns:
            continue
        live = src[src["_deleted"] != "1"] if "_deleted" in src.columns else src
        current = live.drop_duplicates("_key", keep="last").set_index("_key")[fld].astype(str)
        out[part.index] = part["YWZJ"].map(current).fillna("").to_numpy()
    return out


def apply_returns(state, stage_result, staged, date, reports, sources):
    """Validate and apply every return of the date; returns (tasks, overlays, decisions, audit rows, rejects).

    Every accepted answer leaves audit rows (old value, new value, cause: the return file, task number,
    result and answer date (`核查日期`, from `HCRQ`, else the business date); actor: the clerk `HCR`, else the
    department). A rejected row of an open task of the returning department leaves its task open with
    the reason in `BZ` (`回填被拒(<date>)：…`), so the next task file shows it. Rejects frames:
    `_return_rejects`."""
    tasks = state.tasks.copy()
    overlays = state.overlays.copy()
    decisions = state.decisions.copy()
    audit_rows: list[dict] = []
    rejects = []
    for sf in stage_result.files:
        if sf.table != RETURN_TABLE or sf.status != "staged":
            continue
        dept = sf.department
        ret = staged[f"{sf.batch_id}__{sf.line_in_manifest}"]
        accepted, rejected = validate_returns(ret, tasks, dept, date, sources)
        fr = next(f for f in reports[sf.batch_id]["files"] if f["path"] == sf.path)
        fr["rejected_rows"] += len(rejected)
        fr["loaded_rows"] = fr["received_rows"] - fr["rejected_rows"]
        fr["accepted_returns"] = len(accepted)
        cause = f"return {sf.batch_id}/{sf.path}"
        if len(rejected):
            rj = _return_rejects(rejected)
            codes = rj["reason"].str.split(";").explode()
            fr["rejected_reasons"] = {k: int(v) for k, v in codes.value_counts().sort_index().items()}
            rejects.append((dept, RETURN_TABLE, rj))
            # the task stays open and says why in BZ (the last rejected row of a task speaks for it)
            mine = tasks["RWBH"].isin(rj["RWBH"]) & tasks["route"].eq(dept) & tasks["status"].eq("open")
            if mine.any():
                last = rj.drop_duplicates("RWBH", keep="last").set_index("RWBH")
                who = _answerers(rejected.assign(RWBH=rejected["task_rwbh"]), dept, date)
                notes = tasks.loc[mine, "RWBH"].map(
                    lambda k: REJECTED_NOTE.format(date=date, text=last.at[k, "reason_text"]))
                for r, note in zip(tasks[mine].itertuples(index=False), notes):
                    audit_rows.append(_audit("task", r.RWBH, rkid=r.RKID, fld="BZ", old=r.BZ, new=note,
                                             cause=f"{cause} {r.RWBH} 回填被拒 {last.at[r.RWBH, 'reason']}"
                                                   f" 核查日期 {who.at[r.RWBH, 'when']}",
                                             actor=who.at[r.RWBH, "actor"], date=date))
                tasks.loc[mine, "BZ"] = notes.to_numpy()
        if "repeat" in accepted.columns:  # the same answer again: accepted, but it changes nothing
            accepted = accepted[accepted["repeat"] != "1"]
        if not len(accepted):
            continue
        who = _answerers(accepted, dept, date)
        rkid_of = tasks.drop_duplicates("RWBH", keep="last").set_index("RWBH")["RKID"]
        hcjg_of = accepted.drop_duplicates("RWBH", keep="last").set_index("RWBH")["HCJG"]

        def why(rwbh: str) -> str:
            return f"{cause} {rwbh} HCJG={hcjg_of.get(rwbh, '')} 核查日期 {who.at[rwbh, 'when']}"

        effects = return_effects(accepted, tasks)
        new_ov = []
        for kind, frame in (("CORRECT", effects["corrections"]), ("SUPPRESS", effects["suppressions"]),
                            ("CANCEL", effects["cancellations"])):
            if frame is None or frame.empty:
                continue
            f = frame.copy()
            for c in OVERLAY_COLUMNS:
                if c not in f.columns:
                    f[c] = ""
            f["kind"] = kind
            f["decided"] = date
            f["record_fp"] = record_fp(sources, f)
            f["overlay_key"] = (kind + "|" + f["BM"] + "|" + f["BH"] + "|" + f["YWZJ"] + "|" + f["JS"] + "|" + f["HCZT"]
                                + "|" + f["field"])
            new_ov.append(f[OVERLAY_COLUMNS])
            old = _record_values(sources, f) if kind == "CORRECT" else pd.Series("", index=f.index)
            for r, was in zip(f.itertuples(index=False), old):  # one audit row per accepted answer: a handful a day
                audit_rows.append(_audit("record", f"{r.BM}|{r.BH}|{r.YWZJ}", rkid=rkid_of.get(r.RWBH, ""),
                                         fld=r.field or r.HCZT or kind, old=was, new=r.value or kind,
                                         cause=why(r.RWBH), actor=who.at[r.RWBH, "actor"], date=date))
        if new_ov:
            ov = pd.concat(new_ov, ignore_index=True).drop_duplicates("overlay_key", keep="last")
            # a field has one corrected value per record: the new correction replaces any earlier one,
            # whichever task it answered
            corrected = ov.loc[ov["kind"] == "CORRECT", ["BH", "YWZJ", "field"]].agg("|".join, axis=1)
            earlier = (overlays["kind"] == "CORRECT") & (
                overlays["BH"] + "|" + overlays["YWZJ"] + "|" + overlays["field"]).isin(corrected)
            overlays = pd.concat([overlays[~overlays["overlay_key"].isin(ov["overlay_key"]) & ~earlier], ov],
                                 ignore_index=True)
        dec = effects["decisions"]
        if dec is not None and len(dec):
            dec = dec.copy()
            dec["decided"] = date
            dec["decision_key"] = role_keys(dec) + "|" + dec["RKID"]
            decisions = pd.concat([decisions[~decisions["decision_key"].isin(dec["decision_key"])],
                                   dec[DECISION_COLUMNS]], ignore_index=True)
            for r in dec.itertuples(index=False):
                audit_rows.append(_audit("link", f"{r.BM}|{r.BH}|{r.YWZJ}|{r.JS}", rkid=r.RKID, fld="decision",
                                         new=r.decision, cause=why(r.RWBH), actor=who.at[r.RWBH, "actor"], date=date))
        answered = accepted.drop_duplicates("RWBH", keep="last").set_index("RWBH")
        idx = tasks["RWBH"].isin(answered.index)
        # a BZ handed back unchanged is our own rejection note, not the clerk's remark
        stored_bz = tasks.loc[idx, "BZ"].fillna("").astype(str)
        given_bz = tasks.loc[idx, "RWBH"].map(answered["BZ"]).fillna("").astype(str)
        ours = (given_bz == stored_bz) & stored_bz.str.startswith(REJECTED_PREFIX)
        for col in ("HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ"):
            if col in answered.columns:
                tasks.loc[idx, col] = tasks.loc[idx, "RWBH"].map(answered[col]).fillna("").astype(str)
        tasks.loc[ours[ours].index, "BZ"] = ""
        was_open = idx & tasks["status"].eq("open")
        for r in tasks[was_open].itertuples(index=False):  # one row per answered task
            audit_rows.append(_audit("task", r.RWBH, rkid=r.RKID, fld="status", old="open", new="closed",
                                     cause=why(r.RWBH), actor=who.at[r.RWBH, "actor"], date=date))
        tasks.loc[idx, "status"] = "closed"
        tasks.loc[idx, "closed_date"] = date
        tasks.loc[idx, "close_reason"] = "RETURN"
    return tasks, overlays, decisions, audit_rows, rejects


# ----------------------------------------------------------------------------------------------------


def _links_from_db(links: pd.DataFrame, keep_keys: bool = False) -> pd.DataFrame:
    """The stored links as the linker takes them (`keep_keys`: with their `role_key`)."""
    out = links.drop(columns=[] if keep_keys else [c for c in ("role_key",) if c in links.columns])
    out = out.assign(PPDF=pd.to_numeric(out["PPDF"], errors="coerce").fillna(0.0) if len(out) else pd.Series(dtype=float))
    return out


def _explained(links: pd.DataFrame) -> bool:
    """Every fuzzy link carries its explanation (`PPMX`). A base from before explanations has none: its
    first date links the whole city once, so that no link keeps an empty one a rebuild would fill."""
    if "PPMX" not in links:
        return False
    return not (links["PPFS"].isin(EXPLAINED) & (links["PPMX"] == "")).any()


def stored_model(payload: str, cfg: dict):
    """The linking model kept in the base, if it was trained under the current configuration version."""
    if not payload:
        return None
    model = FSModel.from_payload(payload)
    return model if model.meta.get("config_version") == cfg.get("version") else None


def peak_gib() -> float:
    """The process's resident-memory high-water mark in GiB (0 where the platform cannot tell)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def old_roles_of_changes(state, fingerprints: pd.Series, date: str) -> pd.DataFrame:
    """Yesterday's version of every role that changed or disappeared since it was linked (for the
    neighbourhood of incremental linking: an old value can have been some other role's candidate).
    `fingerprints`: today's role fingerprints by role key."""
    prev = state.links.set_index("role_key")["role_fp"] if len(state.links) else pd.Series(dtype=object)
    old_keys = prev.index[~prev.index.isin(fingerprints.index)
                          | (fingerprints.reindex(prev.index).fillna("") != prev).to_numpy()]
    if not len(old_keys):
        return build_roles({}, date)
    parts = pd.Series(old_keys).str.split("|", expand=True)
    subset = {}
    for bh, grp in parts.groupby(1):
        src = state.sources.get(bh)
        if src is not None and len(src):
            subset[bh] = src[src["_key"].isin(set(grp[2]))]
    view = overlay_sources(subset, live_overlays(state.overlays, subset))
    old = build_roles(view, date)
    return old[pd.Index(role_keys(old)).isin(old_keys)].reset_index(drop=True) if len(old) else old


def incremental_on(cfg: dict, incremental: bool = True, linking: bool | None = None) -> bool:
    """Whether a date re-links only what its changes reach: config `incremental.enabled`, unless
    `linking` (settings `incremental_linking`) says on or off; never when `incremental` is False (a
    full re-link, settings `full_relink`)."""
    if not incremental:
        return False
    if linking is not None:
        return linking
    return bool(cfg.get("incremental", {}).get("enabled", False))


def recheck_on(cfg: dict, incremental: bool = True, linking: bool | None = None) -> bool:
    """Whether a date re-checks only the states its changes can alter (config `incremental.recheck_states`,
    on by default; also whenever incremental linking is on; never on a full re-link)."""
    if not incremental:
        return False
    return bool(cfg.get("incremental", {}).get("recheck_states", False)) or incremental_on(cfg, incremental, linking)


def role_changes(state, roles: pd.DataFrame, date: str, with_old: bool = True) -> tuple[pd.Series, pd.DataFrame | None]:
    """Today's role fingerprints (by role key) and, `with_old`, yesterday's version of the roles that
    changed or disappeared."""
    fingerprints = pd.Series(role_fingerprints(roles), index=role_keys(roles))
    return fingerprints, (old_roles_of_changes(state, fingerprints, date) if with_old else None)


class ScopeTooSmall(RuntimeError):
    """A date run on the part of the base its deliveries reach (`day.scoped`) needed more than that part:
    the linker did not settle in the rounds the scope allows, or the states could not be re-checked
    incrementally. `role_keys`: the rows the linker flagged (`linkage.incremental.Unsettled`); the
    caller widens the scope with them and tries again with a round more, or runs the date on the whole
    base (the same transaction, nothing written yet)."""

    def __init__(self, message: str, role_keys: set[str] | None = None):
        super().__init__(message)
        self.role_keys = role_keys or set()


def link_date(state, roles: pd.DataFrame, decisions: pd.DataFrame, date: str, link_config=None,
              incremental: bool = True, changes: tuple | None = None, linking: bool | None = None,
              scoped: bool = False, scoped_rounds: int = 1):
    """Link the date's roles: incrementally when switched on and the base has what that needs (a stored
    model and the fingerprints of yesterday's roles), else the whole city. `changes`: `role_changes(...)`
    if the caller has them. `scoped`: the roles are a scope's (`ScopeTooSmall` when the linker does not
    settle in `scoped_rounds` rounds). Returns (LinkResult, model payload)."""
    cfg = link_config or load_config()
    model = stored_model(state.model, cfg)
    prev_links = _links_from_db(state.links, keep_keys=True)
    on = incremental_on(cfg, incremental, linking)
    can = (on and model is not None and model.skip_blocks is not None and len(prev_links) > 0
           and bool((prev_links["role_fp"] != "").all()) and _explained(prev_links))
    if changes is None or (can and changes[1] is None):
        changes = role_changes(state, roles, date, with_old=can)
    fingerprints, old = changes
    if can:
        ic = cfg.get("incremental", {})
        try:
            res = link_incremental(roles, old, state.persons, prev_links, decisions, date, cfg, model, fingerprints,
                                   max_share=2.0 if scoped else float(ic.get("max_share", 0.35)),
                                   max_rounds=scoped_rounds if scoped else int(ic.get("max_rounds", 8)),
                                   fall_back=not scoped)
        except Unsettled as exc:
            raise ScopeTooSmall(f"linking needed more than the scope: {exc}", exc.role_keys) from exc
    elif scoped:
        raise ScopeTooSmall("incremental linking is not possible on this base")
    else:
        res = link_roles(roles, state.persons, prev_links.drop(columns=["role_fp", "role_key"], errors="ignore"),
                         decisions, date, config=cfg, model=model)
        res.stats["incremental"] = {"mode": "full", "relinked": len(roles)}
    payload = state.model
    if model is None:
        res.model.meta["config_version"] = cfg.get("version", "")
        payload = res.model.to_payload()
    if res.link_keys is None:
        res.link_keys = role_keys(res.links)
    res.links["role_fp"] = fingerprints.reindex(res.link_keys).fillna("").to_numpy(dtype=object)
    return res, payload


def date_states(state, roles: pd.DataFrame, links: pd.DataFrame, view: dict, tasks: pd.DataFrame,
                overlays: pd.DataFrame, date: str, changes: tuple | None,
                link_key: np.ndarray | None = None, role_key: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """The date's states: re-checking only the roles today's changes reach (verification/recheck.py) when
    yesterday's states are known (the tasks raised on the last run) and `changes` are given; else
    every role. `link_key`, `role_key`: `role_keys` of `links` and of `roles` when the caller has them.
    Returns (states, figures for the log)."""
    prev_links = state.links
    known = (changes is not None and changes[1] is not None and state.last_run != "" and state.last_run < date
             and len(prev_links) > 0 and bool((prev_links["role_fp"] != "").all()))
    if not known:
        return (evaluate_states_in_bins(roles, links, view, date, role_key=role_key, link_key=link_key),
                {"mode": "full", "rechecked": len(roles)})
    fingerprints = changes[0]  # indexed by the role keys of `roles`, in their order (role_changes)
    if len(fingerprints) != len(roles):
        raise ValueError("the role fingerprints are not those of today's roles")
    kindex = fingerprints.index  # one hash table of the role keys serves every lookup below
    if not kindex.is_unique:  # roles are unique by key (build_roles); if not, evaluate everything
        return evaluate_states(roles, links, view, date), {"mode": "full", "rechecked": len(roles)}
    keys, link_keys = kindex.to_numpy(dtype=object), (role_keys(links) if link_key is None else link_key)
    affected, frame = recheck_rows(roles, keys, links, link_keys, prev_links, fingerprints.to_numpy(dtype=object),
                                   changes[1], tasks, overlays, view, date, state.last_run)
    # the frame alone: its links and its records (the rules read no others), so the cost follows the frame
    sub = roles[frame]
    sub_links = links[pd.Index(link_keys).isin(keys[frame])]
    part = evaluate_states(sub, sub_links, records_view(view, sub), date)

    def where(frame_: pd.DataFrame) -> np.ndarray:
        return kindex.get_indexer(role_keys(frame_)) if len(frame_) else np.zeros(0, dtype=np.int64)

    at = where(part)
    part = part[(at >= 0) & affected[np.maximum(at, 0)]]
    # the other roles' states are yesterday's: the tasks raised on the last run (a role gone since is
    # not among today's roles at all)
    raised = tasks[(tasks["last_raised"] == state.last_run)] if len(tasks) else tasks
    at = where(raised)
    kept = raised[(at >= 0) & ~affected[np.maximum(at, 0)]]
    states = pd.concat([part, kept.reindex(columns=STATE_COLUMNS)], ignore_index=True)
    states = in_state_order(states, kindex)[STATE_COLUMNS].fillna("").astype(str)
    return states, {"mode": "incremental", "rechecked": int(affected.sum()), "frame": int(frame.sum())}


def process_date(state: BaseState, stage_result, staged: dict[str, pd.DataFrame], date: str, link_config=None,
                 prior_reports: dict | None = None, incremental: bool = True,
                 linking: bool | None = None, scoped: bool = False, scoped_rounds: int = 1,
                 pre_applied: dict[str, Applied] | None = None, city_figures_later: bool = False) -> ProcessResult:
    """`incremental=False` re-links and re-checks the whole city (the rebuild the incremental run must
    equal); `linking` switches incremental linking on or off over the configuration (None: as configured).

    `scoped`: `state` is the part of the base the date's deliveries reach (`day.scoped`), not the whole
    base: linking and re-checking must stay incremental (`ScopeTooSmall` otherwise), and the city-wide
    figures (quality rates, task and link counts) are left to the caller, who counts them in the
    database once the date is written (`ProcessResult.summary` then holds only what the scope knows);
    `scoped_rounds`: the linker's rounds the scope was widened for (`day.scoped.widen`); `pre_applied`:
    the scope's full extracts, applied on their whole tables (`apply_extracts`, `day.scoped.whole_table_files`);
    `city_figures_later`: a whole base, but the caller counts the city-wide figures in the database as for a
    scoped date (it writes the role index and its running totals: counting them here too is a second pass
    over every role)."""
    phases: dict[str, float] = {}
    clock = [time.perf_counter()]

    peaks: dict[str, float] = {}

    def done(phase: str) -> None:  # seconds per phase, logged at the end (where a long date goes)
        now = time.perf_counter()
        phases[phase] = phases.get(phase, 0.0) + now - clock[0]
        clock[0] = now
        peaks[phase] = peak_gib()  # the process's memory high-water mark after the phase

    sources, reports, rejects = apply_extracts(state, stage_result, staged, date, pre_applied)
    done("apply")
    tasks, overlays, decisions, audit_rows, ret_rejects = apply_returns(state, stage_result, staged, date, reports, sources)
    rejects += ret_rejects
    overlays = live_overlays(overlays, sources)
    view = overlay_sources(sources, overlays)
    done("returns")
    roles = build_roles(view, date)
    done("roles")

    dec = decisions.drop(columns=["decision_key"], errors="ignore")
    link_config = link_config or load_config()
    recheck = recheck_on(link_config, incremental, linking)
    changes = role_changes(state, roles, date, with_old=recheck or incremental_on(link_config, incremental, linking))
    done("changes")
    res, model_payload = link_date(state, roles, dec, date, link_config, incremental, changes, linking, scoped,
                                   scoped_rounds)
    done("link")
    inc = res.stats.get("incremental", {})
    log.info("linking %s: %s, re-linked %s of %s roles (context %s of which %s kept their links, %s round(s), %s s; "
             "keys %s s, sub-runs %s s)",
             date, inc.get("mode"), f"{inc.get('relinked', 0):,}", f"{len(roles):,}", f"{inc.get('context', 0):,}",
             f"{inc.get('kept', 0):,}", inc.get("rounds", 0), inc.get("seconds", ""), inc.get("keys_s", ""),
             inc.get("sub_run_s", ""))
    links = res.links.copy()
    # the role keys of today's roles (role_changes indexed the fingerprints by them, in roles order) and
    # of the links, built once and handed to every whole-city step below (~2 s each at 2 M roles)
    role_key = changes[0].index.to_numpy(dtype=object) if len(changes[0]) == len(roles) else role_keys(roles)
    link_key = res.link_keys if res.link_keys is not None and len(res.link_keys) == len(links) else role_keys(links)
    persons = person_attributes(res.persons, roles, links, role_key, link_key)
    done("persons")
    ev = res.events
    link_audit = None
    if len(ev):
        ev = ev.fillna("").astype(str)
        key = np.where(ev.get("BM", "") != "",
                       ev.get("BM", "") + "|" + ev.get("BH", "") + "|" + ev.get("YWZJ", "") + "|" + ev.get("JS", ""),
                       ev["RKID"])
        link_audit = pd.DataFrame({
            "business_date": date, "entity": np.where(ev["kind"].isin(["RELINKED"]), "link", "person"),
            "entity_key": key, "RKID": ev["RKID"], "field": ev.get("field", ev["kind"]), "old": ev.get("old", ""),
            "new": ev.get("new", ""), "cause": "linking " + ev["kind"], "actor": "popbase",
        })

    states, checked = date_states(state, roles, links, view, tasks, overlays, date, changes if recheck else None,
                                  link_key, role_key)
    if scoped and checked["mode"] != "incremental":
        raise ScopeTooSmall("the states could not be re-checked incrementally")
    done("states")
    log.info("states %s: %s, re-checked %s of %s roles (evaluated %s)", date, checked["mode"],
             f"{checked['rechecked']:,}", f"{len(roles):,}", f"{checked.get('frame', len(roles)):,}")
    suppressed = overlays[overlays["kind"] == "SUPPRESS"] if len(overlays) else overlays
    tasks, task_audit = update_tasks(tasks, states, roles, date, suppressed)
    done("tasks")

    links_db = links.copy()
    links_db["role_key"] = link_key  # the same "BM|BH|YWZJ|JS" as store.db.role_key
    links_db["PPDF"] = np.char.mod("%.4f", links_db["PPDF"].to_numpy(dtype=float))
    persons_db = persons.reindex(columns=PERSON_COLUMNS, fill_value="").fillna("").astype(str)

    new_state = replace(state, sources=sources, persons=persons_db, links=links_db[LINK_COLUMNS],
                        decisions=decisions.reindex(columns=DECISION_COLUMNS, fill_value=""),
                        tasks=tasks, overlays=overlays.reindex(columns=OVERLAY_COLUMNS, fill_value=""),
                        model=model_payload)
    batches = [{"batch_id": b, "department": r["department"], "folder_date": date, "run_date": date,
                "report": json.dumps(r, ensure_ascii=False)} for b, r in reports.items()]
    if scoped or city_figures_later:
        rates = {}
        summary = build_summary(stage_result, reports, tasks, links["PPFS"].value_counts().to_dict(), rates, date,
                                prior_reports)
    else:
        rates = quality_rates(roles, links, role_key=role_key, link_key=link_key)
        done("quality rates")
        summary = build_summary(stage_result, reports, tasks, links["PPFS"].value_counts().to_dict() if len(links) else {},
                                rates, date, prior_reports)
        summary["totals"]["persons"] = int((persons_db["status"] == "live").sum())
    audit = pd.DataFrame(audit_rows, columns=[c for c in AUDIT_COLUMNS if c != "at"])
    audit = pd.concat([audit] + [a[audit.columns] for a in (link_audit, task_audit) if a is not None and len(a)],
                      ignore_index=True)
    done("frames for the base")
    log.info("%s in phases: %s", date, ", ".join(
        f"{k} {v:.1f} s" + (f" (peak {peaks[k]:.1f} GiB)" if peaks.get(k) else "") for k, v in phases.items()))
    return ProcessResult(new_state, audit, batches, summary, rejects, roles, role_key=role_key, view=view)


RETURN_FIGURES = ("accepted", "rejected", "closed", "overdue", "rejected_by_reason")


def _count(frame: pd.DataFrame, mask) -> int:
    """Rows of `frame` where `mask` holds; a frame of counted rows (`n`) counts each row `n` times."""
    if "n" in frame.columns:
        return int(pd.to_numeric(frame.loc[mask, "n"]).sum())
    return int(mask.sum())


def _return_figures(all_reports: dict, mine: pd.DataFrame, dept: str, date: str) -> dict:
    """A department's verification returns of the date: rows `accepted` and `rejected` (every return file
    of the date's batches), `rejected_by_reason` (reason code → rows), tasks `closed` by a return on the
    date, open tasks `overdue` (past HCQX)."""
    out = {"accepted": 0, "rejected": 0, "closed": 0, "overdue": 0, "rejected_by_reason": {}}
    for rep in all_reports.values():
        if rep["department"] != dept:
            continue
        for fr in rep["files"]:
            if fr["table"] != RETURN_TABLE:
                continue
            out["accepted"] += int(fr.get("accepted_returns", 0))
            out["rejected"] += int(fr.get("rejected_rows", 0))
            for code, n in (fr.get("rejected_reasons") or {}).items():
                out["rejected_by_reason"][code] = out["rejected_by_reason"].get(code, 0) + int(n)
    if len(mine):
        out["closed"] = _count(mine, (mine["status"] == "closed") & (mine["closed_date"] == date)
                               & (mine["close_reason"] == "RETURN"))
        out["overdue"] = _count(mine, (mine["status"] == "open") & (mine["HCQX"] < date))
    out["rejected_by_reason"] = dict(sorted(out["rejected_by_reason"].items()))
    return out


def _by_count(counts: dict) -> dict[str, int]:
    """Counts, the largest first (ties by name): the same order however they were counted."""
    return {k: int(v) for k, v in sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0]))) if int(v)}


def build_summary(stage_result, reports: dict, tasks: pd.DataFrame, methods: dict, rates: dict, date: str,
                  prior_reports: dict | None = None) -> dict:
    """The run's figures per department (spec section 6: reconciliation) and city-wide. Per department:
    `batches`, `tables`, `returns` (`_return_figures`: `accepted`, `rejected`, `closed`, `overdue`,
    `rejected_by_reason`), `tasks` (`new`, `open`, `closed`, `overdue`), `quality`. `tasks`: every task,
    or counted rows of them (a column `n`, `store.base.task_counts`); `methods`: links per `PPFS`."""
    all_reports = dict(prior_reports or {})
    all_reports.update(reports)
    by_dept: dict[str, dict] = {}
    for d in DEPARTMENTS:
        by_dept[d] = {"department": d, "business_date": date, "batches": [], "tables": {}, "tasks": {}}
    for sf in stage_result.files:
        if sf.status == "replay":
            by_dept[sf.department]["batches"].append({"batch_id": sf.batch_id, "status": "replay", "message": sf.message})
    for b, rep in all_reports.items():
        dept = by_dept[rep["department"]]
        dept["batches"].append({"batch_id": b, "status": "processed", "files": rep["files"]})
        for fr in rep["files"]:
            tab = dept["tables"].setdefault(fr["table"], {k: 0 for k in (
                "manifest_rows", "received_rows", "loaded_rows", "rejected_rows", "inserted", "updated", "deleted",
                "unchanged", "ignored_stale")} | {"checksum_ok": True, "deviation": 0})
            for k in ("manifest_rows", "received_rows", "loaded_rows", "rejected_rows", "inserted", "updated",
                      "deleted", "unchanged", "ignored_stale"):
                tab[k] += int(fr.get(k, 0))
            tab["checksum_ok"] = tab["checksum_ok"] and bool(fr["checksum_ok"])
            if fr["status"] == "staged":
                tab["deviation"] += int(fr["received_rows"]) - int(fr["manifest_rows"])
    for d in DEPARTMENTS:
        mine = tasks[tasks["route"] == d] if len(tasks) else tasks
        by_dept[d]["returns"] = _return_figures(all_reports, mine, d, date)
        by_dept[d]["tasks"] = {
            "new": _count(mine, (mine["XFRQ"] == date) & (mine["last_raised"] == date)) if len(mine) else 0,
            "open": _count(mine, mine["status"] == "open") if len(mine) else 0,
            "closed": _count(mine, (mine["status"] == "closed") & (mine["closed_date"] == date)) if len(mine) else 0,
            "overdue": _count(mine, (mine["status"] == "open") & (mine["HCQX"] < date)) if len(mine) else 0,
        }
        by_dept[d]["quality"] = rates.get("by_department", {}).get(d, {})
    if len(tasks) and "n" in tasks.columns:
        open_ = tasks[tasks["status"] == "open"]
        states = pd.to_numeric(open_["n"]).groupby(open_["HCZT"]).sum().to_dict()
    else:
        states = tasks[tasks["status"] == "open"]["HCZT"].value_counts().to_dict() if len(tasks) else {}
    totals = {
        "roles": int(sum(methods.values())),
        "persons": 0,
        "loaded_rows": sum(t["loaded_rows"] for d in by_dept.values() for t in d["tables"].values()),
        "rejected_rows": sum(t["rejected_rows"] for d in by_dept.values() for t in d["tables"].values()),
        "open_tasks": int(sum(d["tasks"]["open"] for d in by_dept.values())),
    }
    return {"business_date": date, "departments": by_dept, "link_methods": _by_count(methods),
            "open_tasks_by_state": _by_count(states), "quality": rates, "totals": totals,
            "errors": stage_result.errors, "waiting": stage_result.waiting}
