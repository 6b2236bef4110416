"""One business date, the one way: the CLI, the Dagster job, the tests and the benchmarks all call
`run_dates(settings, dates)` (or `run_date`).

A date goes through four named steps (`run_one`):

1. `stage`   verify checksums and parse every delivery to Parquet + rejects (`exchange.staging`); files only
2. `check`   the Great Expectations quality gates; a structural error blocks the date (`DateBlocked`)
3. `commit`  read the base, process the date (`exchange.process.process_date`, pure), write what
             changed, all in ONE transaction: a run that dies leaves the base as it was
4. `outputs` exports, task files and reports of spec section 6 from the committed base

Dates are applied in order under the run lock: asked for a date, `run_dates` first processes every
earlier landed date that is not processed yet, and it stops at a blocked date (nothing after it runs).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from catalog import RETURN_TABLE
from catalog.base import REJECT_COLUMNS, BaseState
from day import binned, exceptions, jobs, scoped, workers
from day.clock import Clock
from exchange import outputs, staging
from exchange.process import ScopeTooSmall, process_date
from exchange.files import clean_temporaries, publish, temporary_for
from exchange.staging import StageResult
from linkage.link import load_config
from quality.suites import QualityResult, validate_delivery
from quality.thresholds import load_thresholds
from settings import FIRST_DATE_FILE, Settings
from store import base, db
from store.lock import run_lock

log = logging.getLogger("popbase")

# Arrow allocates from the C library's heap rather than its own pool: the memory pandas frees during a date is
# then reused by Arrow's buffers (staging's Parquet, the exports merged at the end) instead of adding to it (the
# 1M daily date's peak 1.62 -> 1.43 GiB with `outputs.MERGE_ROWS` at 100k, docs/benchmarks.md)
pa.set_memory_pool(pa.system_memory_pool())


@dataclass
class Gates:
    """What the quality gates found in a date's deliveries."""

    errors: list[str] = field(default_factory=list)  # structural: the date is blocked
    warnings: list[str] = field(default_factory=list)  # content and rates below their thresholds
    rates: dict[str, dict] = field(default_factory=dict)  # per delivered file


@dataclass
class DateResult:
    """What one business date did."""

    business_date: str
    staged: StageResult
    gates: Gates
    summary: dict = field(default_factory=dict)  # the run summary in the base (reconciliation, totals, rates)
    committed: bool = False  # False: blocked, or a re-run with nothing new
    outputs: dict[str, Path] = field(default_factory=dict)  # files written ({} when kept as they were)
    exceptions: list[dict] = field(default_factory=list)  # 交换异常: what did not go as delivered, and what to do
    rows_read: dict[str, int] = field(default_factory=dict)  # rows of the base the date read, per table
    commit_rows_read: dict[str, int] = field(default_factory=dict)  # of those, before its outputs
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step (logged "<D> in steps: ...")
    step_peaks: dict[str, float] = field(default_factory=dict)  # the process's memory high-water mark after each step, GiB


class LateDelivery(RuntimeError):
    """A business date earlier than the last processed one was asked for: dates are applied strictly in
    order, so a late delivery is refused (docs/decisions.md), never applied after a later date."""


class DateBlocked(RuntimeError):
    """A date whose deliveries fail a structural gate: nothing of it reaches the base, nor any later date."""

    def __init__(self, result: DateResult, done: dict[str, DateResult] | None = None):
        self.result = result
        self.done = done or {}  # dates processed before the blocked one in the same call
        reasons = "; ".join(result.gates.errors)
        super().__init__(f"business date {result.business_date} is blocked, nothing of it was loaded: {reasons}")


def engine_of(settings: Settings) -> sa.Engine:
    return db.engine_for(settings.db_url)


def pending_before(settings: Settings, engine: sa.Engine, date: str) -> list[str]:
    """Landed dates before `date` that are not processed yet."""
    done = set(base.processed_dates(engine))
    return [d for d in settings.landed_dates() if d < date and d not in done]


OUTPUTS_MARKER = "outputs.json"  # reports/<D>/outputs.json: written last, lists every output of the date


def outputs_complete(settings: Settings, date: str) -> bool:
    """Whether every output of a date was written (its marker exists and names only files that exist)."""
    marker = settings.out / "reports" / date / OUTPUTS_MARKER
    if not marker.exists():
        return False
    try:
        listed = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError):
        return False
    return all((settings.out / rel).exists() for rel in listed)


def outputs_due(settings: Settings, date: str, latest_processed: str) -> bool:
    """Whether to (re)write a date's outputs. They show the base right after the date, so once a later
    date has been processed (`latest_processed`, read before this date's commit) an earlier date's
    outputs are left as they were written (`mend_outputs` completes the latest date's after a kill)."""
    return date >= latest_processed or not (settings.out / "exports" / date).exists()


def mend_outputs(settings: Settings, engine: sa.Engine) -> str:
    """Write the outputs of the latest processed date again when a run died after its commit and before
    its last output (the base still is the base right after that date). Returns the date mended, or ""."""
    latest = max(base.processed_dates(engine), default="")
    if latest and not outputs_complete(settings, latest):
        log.warning("outputs of %s are incomplete (a run died after its commit): writing them again", latest)
        write_date_outputs(settings, engine, latest)
        return latest
    return ""


# ----------------------------------------------------------------------------------------------------
# The steps of one date


GATES_IN_WORKERS_FROM_ROWS = 200_000  # a date delivering this many rows gates its files in worker processes
GATES_BESIDE_FROM_ROWS = 2_000  # a daily date delivering this many rows gates them beside its commit (`gates_beside`)
# open tasks from which a scoped date writes its task files in a worker while it merges its exports (both take
# seconds at 1M persons, 58k open tasks; a small base's would not pay for the worker's start)
TASK_FILES_BESIDE_FROM = 20_000


def _gate(parquet: Path, table: str, incremental: bool, thresholds: dict) -> QualityResult:
    """The quality gate of one staged file (module level: a worker process runs it by name)."""
    return validate_delivery(pd.read_parquet(parquet), table, incremental=incremental, thresholds=thresholds)


STAGE_APART_FROM_BYTES = 256 * 2**20  # a date's delivered files of this many bytes are parsed in a worker process
LOG_STEPS_FROM_SECONDS = 30.0  # a date's step that took this long is logged as it ends (`day.clock.Clock`)


def stage(settings: Settings, date: str, guards: staging.Guards) -> StageResult:
    """`staging.stage`; a large delivery (a city's first date) in a worker process (`workers.apart`): parsing
    holds a file whole, about eleven times its size (3.3 GiB for the 3M city's 288 MB household file), and the
    date's process would otherwise keep what that took while the cut and the bins run after it."""
    if staging.delivered_bytes(settings.home, date) >= STAGE_APART_FROM_BYTES:
        return workers.apart(staging.stage, settings.home, date, guards)
    return staging.stage(settings.home, date, guards)


def check(settings: Settings, staged: StageResult) -> Gates:
    """The quality gates of every staged extract (GX suites and rate thresholds, config/quality.json); a
    large delivery's files are gated side by side in worker processes (the historical date's take minutes)."""
    gates = Gates(errors=[f"manifest: {e}" for e in staged.errors])
    gates.errors += [f"{f.department}/{f.path}: {f.message}" for f in staged.files if f.status == "structural_error"]
    thresholds = load_thresholds(settings.quality_config)
    folder = staging.staging_dir(settings.home, staged.business_date)
    files = [f for f in staged.files if f.status == "staged" and f.table != RETURN_TABLE]
    jobs = [(folder / f.parquet, f.table, f.extract_type == "incremental", thresholds) for f in files]
    big = sum(f.received_rows for f in files) >= GATES_IN_WORKERS_FROM_ROWS and len(files) > 1
    spare = workers.spare_cores()  # this process waits meanwhile: its core works too
    results = workers.side_by_side(_gate, jobs, min(spare + 1, len(files))) if big and spare else [_gate(*j) for j in jobs]
    for f, q in zip(files, results):
        name = f"{f.department}/{f.path}"
        if not q.structural_ok:
            gates.errors += [f"{name}: {m}" for m in q.structural_messages]
        gates.warnings += [f"{name}: {m}" for m in q.content_messages]
        gates.warnings += [f"{name}: {w}" for w in q.warnings]
        gates.rates[name] = q.rates
    return gates


def gates_beside(settings: Settings, engine: sa.Engine, staged: StageResult) -> bool:
    """Whether the gates run in a worker process beside the date's commit instead of before it: on a daily
    date (the base has dates), when a spare core exists and this process has not imported GX yet. Most of
    what a daily date's gates cost is then importing GX (about 2.5 s: the 1M daily date's `gates` step),
    which the worker pays while the date reads its scope. Only from `GATES_BESIDE_FROM_ROWS` rows: a
    worker's start costs about as much, so it pays only where the commit outlasts it (a small city's
    date does not); a large delivery is gated side by side in workers already (`check`)."""
    rows = sum(f.received_rows for f in staged.files if f.status == "staged")
    return (settings.scoped_dates and GATES_BESIDE_FROM_ROWS <= rows < GATES_IN_WORKERS_FROM_ROWS
            and workers.spare_cores() > 0
            and "great_expectations" not in sys.modules and bool(base.processed_dates(engine)))


class GatesLater:
    """The gates of a date running in a worker process (`gates_beside`) while its commit proceeds. `due()`
    waits for them and raises `DateBlocked` on a structural error; the commit calls it before it writes
    anything, so a blocked date leaves the base as it was (its transaction is rolled back)."""

    def __init__(self, settings: Settings, staged: StageResult, result: DateResult):
        self.result = result
        self.pool = workers.spawned(1)
        self.future = self.pool.submit(check, settings, staged)

    def due(self) -> None:
        self.result.gates = self.future.result()
        if self.result.gates.errors:
            raise DateBlocked(self.result)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def refuse_late_files(staged: StageResult, latest_processed: str) -> None:
    """New batches in the folder of a date before the latest processed one are refused: applied now they
    would act after a later date (closing its tasks, re-baselining to an older state)."""
    if staged.business_date >= latest_processed:
        return
    for f in staged.files:
        if f.status == "staged":
            f.status = "late"
            f.message = (f"batch {f.batch_id} arrived for {staged.business_date} after {latest_processed} was "
                         "processed; dates are applied in order, so it was not loaded")
            log.error("%s/%s: %s", f.department, f.path, f.message)


def commit(settings: Settings, engine: sa.Engine, staged: StageResult,
           exceptions: list[dict] | None = None, clock: Clock | None = None,
           before_write=None) -> tuple[dict, BaseState | scoped.Touched | binned.InBins | None]:
    """Apply, link and verify the date's new batches and write it all, with the rows rejected and the
    date's exceptions, in one transaction. `staged` is classified already (replays, re-runs and late
    batches are not "staged"). Returns (run summary, the base as written, None when nothing changed,
    `scoped.Touched` when the date read only what its deliveries reach: what its outputs must replace;
    `binned.InBins` when a large first date ran in bins: its outputs are read from the store).
    `clock`: told the end of each of its parts (scope or whole-base read, process, write, index).
    `before_write`: called before anything is written (gates still running: `GatesLater.due`); it may raise,
    and the transaction is then rolled back."""
    date = staged.business_date
    clock = clock or Clock({}, {})
    new_files = [f for f in staged.files if f.status == "staged"]
    done_before = base.run_summary(engine, date)
    if done_before is not None and not new_files:
        log.info("business date %s was already processed and nothing new arrived: nothing to do", date)
        return done_before, None
    folder = staging.staging_dir(settings.home, date)
    cfg = load_config(settings.linkage_config)
    first = not base.processed_dates(engine)
    if binned.due(settings, staged, first):  # a large city's first date, bin by bin (day/binned.py)
        return _commit_in_bins(settings, engine, staged, binned.StagedRows(folder, staged), cfg, exceptions, clock,
                               before_write)
    frames = {f"{f.batch_id}__{f.line_in_manifest}": pd.read_parquet(folder / f.parquet) for f in new_files}
    for f in new_files:  # keys of rejected rows: a full file must not delete what it failed to deliver
        rejected = folder / (f.parquet + ".rejects")
        if rejected.exists():
            frames[f"{f.batch_id}__{f.line_in_manifest}#rejects"] = pd.read_parquet(rejected)
    clock.step("read staged")
    with db.one_transaction(engine, whole_base=first) as conn:
        prior = base.batch_reports(conn, date)
        index_current = settings.scoped_dates and scoped.index_is_current(conn, cfg)
        sc = scoped.scoped_state(conn, staged, frames, date, cfg, settings) if settings.scoped_dates else None
        clock.step("scope")
        res = None
        while sc is not None and res is None:
            try:
                res = process_date(sc.state, staged, frames, date, link_config=cfg, prior_reports=prior,
                                   incremental=not settings.full_relink, linking=settings.incremental_linking,
                                   scoped=True, scoped_rounds=sc.rounds, pre_applied=sc.pre_applied())
                clock.step("process")
            except ScopeTooSmall as exc:
                clock.step("process")
                log.info("%s: the scope is widened: %s", date, exc)
                sc = scoped.widen(conn, sc, exc.role_keys, date)
                clock.step("scope")
                if sc is None:
                    log.info("%s reads the whole base: %s", date, exc)
        if sc is None:
            state = base.read_base(conn)
            clock.step("read base")
            res = process_date(state, staged, frames, date, link_config=cfg, prior_reports=prior,
                               incremental=not settings.full_relink, linking=settings.incremental_linking,
                               city_figures_later=settings.scoped_dates)
            clock.step("process")
        else:
            sc.drop_search()  # the scope is final: what its lookups read and kept goes before the writes
            state = sc.state
            state = replace(state, tasks=base.bump_raised(conn, state.last_run, date, state.tasks))
        if before_write is not None:
            before_write()
            clock.step("gates (waited)")
        rejected = _rejected_rows(date, new_files, folder, frames, res.rejects)
        base.write_base(conn, state, res.state, res.audit, res.batches, date, res.summary, rejects=rejected)
        clock.step("write")
        if sc is not None:
            scoped.finish_scoped(conn, sc, res, date, cfg)
        else:  # the date read the whole base
            if settings.scoped_dates and index_current and res.roles is not None:
                n = scoped.update_index(conn, state, res, cfg)
                log.info("%s: role index of %s changed records written", date, f"{n:,}")
            elif settings.scoped_dates:
                scoped.write_full_index(conn, res, cfg)
            else:
                base.forget_role_index(conn)
            base.refresh_statistics(conn)
        if settings.scoped_dates:  # the index's running totals are written: the city's figures are counted there
            res.summary = scoped.city_figures(conn, res.batches, date, prior, staged)
        res.summary["exceptions"] = (done_before or {}).get("exceptions", []) + list(exceptions or [])
        base.write_run(conn, date, res.summary)
        clock.step("index")
    clock.step("commit")  # the transaction's commit
    log.info("business date %s committed: %s", date, res.summary_line())
    return res.summary, (res.state if sc is None else scoped.touched(sc, res))


def _commit_in_bins(settings: Settings, engine: sa.Engine, staged: StageResult, frames: binned.StagedRows, cfg: dict,
                    exceptions: list[dict] | None, clock: Clock, before_write) -> tuple[dict, binned.InBins]:
    """`commit` for a date processed in bins (`binned.due`): the bins, then the date's rejected rows, batches
    and summary, in one transaction."""
    date = staged.business_date
    new_files = [f for f in staged.files if f.status == "staged"]
    with db.one_transaction(engine, whole_base=True) as conn:
        prior = base.batch_reports(conn, date)
        done = binned.commit_in_bins(conn, staged, frames, date, cfg, prior, settings, before_write, clock)
        clock.step("bins")
        rejected = _rejected_rows(date, new_files, staging.staging_dir(settings.home, date), frames, done.rejects)
        base.write_date_rows(conn, done.batches, date, {}, rejected)
        summary = scoped.city_figures(conn, done.batches, date, prior, staged)
        summary["exceptions"] = list(exceptions or [])
        base.write_run(conn, date, summary)
        clock.step("summary")
    clock.step("commit")
    log.info("business date %s committed in %s bins", date, done.bins)
    return summary, done


def _rejected_rows(date: str, new_files, folder: Path, frames: dict, late_rejects) -> pd.DataFrame:
    """Every row of the date's new files that was not loaded: unreadable when parsed, or refused when
    applied (duplicate keys, bad operations, rejected answers), in the layout the base keeps them."""
    parts = [staging.reject_rows(date, f.department, f.table, f.batch_id,
                                 frames[f"{f.batch_id}__{f.line_in_manifest}#rejects"])
             for f in new_files if f"{f.batch_id}__{f.line_in_manifest}#rejects" in frames]
    parts += [staging.reject_rows(date, dept, table, "", frame) for dept, table, frame in late_rejects]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REJECT_COLUMNS)


def write_date_outputs(settings: Settings, engine: sa.Engine, date: str,
                       after: BaseState | scoped.Touched | binned.InBins | None = None) -> dict[str, Path]:
    """Every output of a committed date, from the base as it is now: `after`, the base the date's commit
    wrote, still in memory (no whole table is read back); for a scoped date (`scoped.Touched`) the
    exports are the previous date's with the touched persons and links replaced, read by key (and with a
    large backlog the task files are written meanwhile by a worker, `jobs.task_files`); else everything is
    read from the store (mending outputs)."""
    summary = base.run_summary(engine, date)
    if summary is None:
        raise RuntimeError(f"business date {date} has not been processed: nothing to write")
    parts: dict[str, float] = {}
    clock = Clock(parts, {})
    merged = isinstance(after, scoped.Touched) and outputs_complete(settings, after.previous)
    beside = (merged and int(summary.get("totals", {}).get("open_tasks", 0)) >= TASK_FILES_BESIDE_FROM
              and workers.spare_cores() > 0)
    with contextlib.ExitStack() as stack, engine.connect() as conn:
        if beside:  # the task files in a worker while this process merges the exports
            pool = stack.enter_context(workers.spawned(1))
            task_files = pool.submit(jobs.task_files, str(settings.home), settings.db_url, date)
        if merged:
            exports = outputs.merge_exports(settings.home, after.previous, date, base.persons_of(conn, after.rkids),
                                            after.rkids, base.links_of(conn, after.role_keys), after.role_keys)
            tasks = None if beside else base.open_tasks(conn)
        elif isinstance(after, BaseState):
            exports = outputs.write_exports(settings.home, after.persons, after.links, date)
            tasks = after.tasks
        else:  # from the store, a part at a time (a date processed in bins, outputs mended)
            exports = outputs.write_exports_in_parts(settings.home, lambda name, order: base.export_parts(conn, name, order),
                                                     date)
            tasks = base.open_tasks(conn)
        clock.step("exports")
        tasks = task_files.result() if beside else outputs.write_task_outputs(settings.home, tasks, date)
        clock.step("task files" + (" (waited)" if beside else ""))
        rejected = base.date_rejects(conn, date)
        rejects = outputs.write_rejects_files(settings.home, rejected, date)
        receipts = outputs.write_receipts(settings.home, rejected, date)
        reports = outputs.write_reports(settings.home, summary, date, base.run_history(conn, date))
        clock.step("rejects/receipts/reports")
    log.info("outputs of %s in parts: %s", date, ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    paths = {f"exports/{k}": v for k, v in exports.items()}
    for dept, (xlsx, csv) in tasks.items():
        paths[f"tasks/{dept}.xlsx"], paths[f"tasks/{dept}.csv"] = xlsx, csv
    paths.update({f"rejects/{k}": v for k, v in rejects.items()})
    for dept, (xlsx, csv) in receipts.items():
        paths[f"receipts/{dept}.xlsx"], paths[f"receipts/{dept}.csv"] = xlsx, csv
    paths.update({f"reports/{k}": v for k, v in reports.items()})
    marker = settings.out / "reports" / date / OUTPUTS_MARKER  # last: the outputs of the date are complete
    tmp = temporary_for(marker)
    tmp.write_text(json.dumps({"business_date": date, "files": sorted(
        str(Path(v).relative_to(settings.out)) for v in paths.values())}, ensure_ascii=False, indent=1), encoding="utf-8")
    paths["reports/outputs"] = publish(tmp, marker)
    return paths


def run_one(settings: Settings, engine: sa.Engine, date: str, *, write_outputs: bool = True,
            quality_gates: bool = True, late_folders: list[str] = ()) -> DateResult:
    """Stage, check, commit and write the outputs of one date (no lock: the caller holds it).
    `late_folders`: earlier dates refused as late, reported with this date. The gates run before the
    commit, or beside it in a worker (`gates_beside`), awaited before it writes."""
    started = time.perf_counter()
    read_before = dict(db.READ.rows)
    thresholds = load_thresholds(settings.quality_config)
    steps: dict[str, float] = {}
    peaks: dict[str, float] = {}
    clock = Clock(steps, peaks, log_as=f"{date}:", log_from=LOG_STEPS_FROM_SECONDS)
    staged = stage(settings, date, staging.Guards.from_config(thresholds))
    clock.step("stage")
    result = DateResult(date, staged, Gates(), steps=steps, step_peaks=peaks)
    later = GatesLater(settings, staged, result) if quality_gates and gates_beside(settings, engine, staged) else None
    try:
        if quality_gates and later is None:
            result.gates = check(settings, staged)
        clock.step("gates")
        if result.gates.errors:
            raise DateBlocked(result)
        latest_before = max(base.processed_dates(engine), default="")
        late = [e for d in late_folders for e in exceptions.late_folder(settings.landing, d, latest_before)]
        staging.classify_batches(staged, base.processed_batches(engine), date)
        refuse_late_files(staged, latest_before)
        result.exceptions = exceptions.of_date(staged, thresholds) + late
        clock.step("classify")
        result.summary, after = commit(settings, engine, staged, result.exceptions, clock,
                                       before_write=later.due if later is not None else None)
        if later is not None:  # a re-run with nothing new wrote nothing, but its gates are still reported
            later.due()
    except DateBlocked:
        result.seconds = time.perf_counter() - started
        raise
    finally:
        if later is not None:
            later.close()
    clock.last = time.perf_counter()
    result.committed = after is not None
    result.commit_rows_read = db.READ.since(read_before)
    if not (settings.home / FIRST_DATE_FILE).exists():
        (settings.home / FIRST_DATE_FILE).write_text(min(base.processed_dates(engine)) + "\n", encoding="utf-8")
    for e in result.exceptions:
        log.warning("%s %s %s: %s. %s", date, e["department"], e.get("file") or e.get("batch_id"), e["cause"],
                    e["next_step"])
    checkpoint = db.Checkpoint(engine)  # the log the commit left, copied beside the outputs (`db.one_transaction`)
    try:
        if write_outputs and after is None and outputs_complete(settings, date):
            # a re-run with nothing new: the base is as the outputs show it (writing them again read the whole
            # base back: 44 s at 1M persons); an incomplete set is written again, as `mend_outputs` does
            log.info("outputs of %s kept as they are: nothing new arrived and they are complete", date)
        elif write_outputs and outputs_due(settings, date, latest_before):
            result.outputs = write_date_outputs(settings, engine, date, after)
        elif write_outputs:
            log.info("outputs of %s kept as they are: later dates have been processed since", date)
    finally:
        checkpoint.join()
    clock.step("outputs")
    log.info("%s in steps: %s", date, ", ".join(f"{k} {v:.1f} s (peak {peaks[k]:.1f} GiB)" for k, v in steps.items()))
    result.rows_read = db.READ.since(read_before)
    delivered = sum(f.received_rows for f in staged.files if f.status == "staged")
    log.info("%s read %s rows of the base for %s rows delivered (%s)", date, f"{sum(result.rows_read.values()):,}",
             f"{delivered:,}", ", ".join(f"{t} {n:,}" for t, n in sorted(result.rows_read.items())))
    result.seconds = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------------------------------
# The entry points


def run_dates(settings: Settings, dates: list[str], *, write_outputs: bool = True, quality_gates: bool = True,
              on_date=None) -> dict[str, DateResult]:
    """Process the given dates, and every earlier landed date not processed yet, in order, under the run
    lock. `on_date(result)` is called after each date (progress). A blocked date raises `DateBlocked`
    and no later date runs."""
    engine = engine_of(settings)
    results: dict[str, DateResult] = {}
    with run_lock(engine, settings.home):
        removed = clean_temporaries(settings.out)
        if removed:
            log.warning("removed %s temporary file(s) a killed run left under %s", removed, settings.out)
        if write_outputs:
            mend_outputs(settings, engine)
        latest = max(base.processed_dates(engine), default="")
        pending = pending_before(settings, engine, max(dates))
        late = [d for d in pending if d < latest]  # landed after a later date was processed: refused
        asked_late = sorted(d for d in dates if d < latest and d not in base.processed_dates(engine))
        if asked_late:
            raise LateDelivery(
                f"business date {asked_late[0]} arrived after {latest} was processed; dates are applied strictly "
                f"in order, so it is refused. Ask the department to deliver it again under the current business "
                f"date (a new batch id) and remove landing/*/{asked_late[0]}/ (docs/operations.md).")
        todo = sorted((set(dates) | set(pending)) - set(late))
        for i, d in enumerate(todo):
            try:
                results[d] = run_one(settings, engine, d, write_outputs=write_outputs, quality_gates=quality_gates,
                                     late_folders=late if i == 0 else [])
            except DateBlocked as blocked:
                blocked.done = results
                raise
            if on_date is not None:
                on_date(results[d])
    return results


def run_date(settings: Settings, date: str, **kw) -> DateResult:
    """One business date (after any earlier landed date not processed yet)."""
    return run_dates(settings, [date], **kw)[date]
