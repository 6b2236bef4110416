"""A large city's first date in bins (issue 15, docs/scale.md 2.7): the memory of linking, checking and
indexing is set by the bin, not the city.

The first date of a base (历史数据建库) delivers the whole city at once. Whole, it is linked, checked and
indexed as one set of frames, and that grows with the city (about 5.7 GiB per million persons). Here the
city is first cut (`cut`): the model is trained on the whole city as `linkage.link.link_roles` trains it,
its candidate pairs are scored once, and the records are put into bins of components that hold every
person, every query with all it reads, and every rule's inputs whole (`linkage.bins`). Each bin's rows of
the date's files are then processed as a date of their own (`exchange.process.process_date` with the
city's model) in a worker process, one bin ahead of this process, which writes each bin's rows while the
worker links the next (`process_bin`, `workers.made_ahead`); the role index is written bin by bin and its
indexes built once at the end. The base equals the one the whole-city date writes (tests/test_binned.py);
only the order of rows in the tables differs.

The cut runs in a worker process (`cut_and_spill`, `workers.apart`) and reads the staged files a table at a
time; it still holds the city's roles (the columns linking reads, once), then their prepared values, and
trains and scores on them: that is the peak of a binned date, and what the next steps of docs/scale.md 2.7
(the cut from the role index a block range at a time, the model from samples) take away.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from catalog import RETURN_TABLE, TABLES
from catalog.base import BaseState
from exchange.process import apply_file, in_apply_order, peak_gib, process_date
from linkage.base import id_group_keys
from linkage.bins import components, group_codes, pack, repair_edges
from linkage.blocks import block_columns
from linkage.fuzzy import FSModel
from linkage.link import LINKING_COLUMNS, canonical_roles_by_table, city_model_and_pairs, prepare_city
from linkage.memory import release_memory
from linkage.roles import build_roles
from store import base, db
from day import scoped, workers
from day.clock import Clock
from verification.states import state_id_keys

log = logging.getLogger("popbase")

BINS_AHEAD = 1  # bins processed in the worker before this process writes them: one (two bins held at once)
REPORT_COUNTS = ("inserted", "updated", "deleted", "unchanged", "ignored_stale", "accepted_returns")


@dataclass
class InBins:
    """What a date processed in bins leaves for its outputs: nothing in memory (they are read from the
    store), its batch rows (the reports of every bin summed) and the rows its bins rejected."""

    bins: int
    batches: list[dict]
    rejects: list


def due(settings, staged, first: bool) -> bool:
    """Whether a date runs in bins: the base's first date, scoped dates on (the bins write the role index
    and the running totals the summary is counted from) and more rows delivered than a bin holds."""
    rows = sum(int(f.received_rows) for f in staged.files if f.status == "staged")
    return first and settings.scoped_dates and settings.bin_roles > 0 and rows > settings.bin_roles


def cut(empty: BaseState, staged, frames: Mapping, date: str, cfg: dict, bin_roles: int) -> tuple[FSModel, pd.Series, int]:
    """The city of the date's files applied to `empty` (the first date's base), its roles, the model
    `link_roles` trains on them, and the bin of each record (`BH|YWZJ`, a Series); and how many roles.
    Components of ID group, record, the rules' ID groups (`state_id_keys`), the damaged IDs' repair
    candidates and every candidate pair kept with that model: a bin of whole components linked and checked
    with the model gives its roles what the whole city gives them (`benchmarks/bins.py` measured it at 1M:
    every role's RKID, method and score). The roles are made a table at a time with what linking reads."""
    clock = Clock(log_as=f"{date}: the cut's")
    R = canonical_roles_by_table(_linking_roles(empty, staged, frames, date), cfg)
    clock.step("roles")
    record, records, groupings, (broken, holder) = cut_relations(R, cfg, date)
    n_roles = len(R)
    clock.step("groupings and repair candidates")
    city = prepare_city(R, date, cfg, consume=True)  # R's columns go as they are read
    del R  # the prepared values are what training and scoring read
    clock.step("prepared")
    model, q, t = city_model_and_pairs(city, cfg)
    del city
    clock.step(f"model and {len(q):,} kept pairs")
    comp = components(*groupings, pairs=(np.concatenate([broken, q]), np.concatenate([holder, t])))
    per_record = pd.Series(pack(comp, bin_roles)).groupby(record).first()  # a record's roles share a component
    clock.step("components and bins")
    return model, pd.Series(per_record.to_numpy(), index=np.asarray(records, dtype=object)[per_record.index]), n_roles


def cut_relations(R: pd.DataFrame, cfg: dict, date: str):
    """What joins roles of `R` (canonical roles) into one component before the kept pairs: each role's record
    code and the records, the groupings (ID group, record, the rules' ID groups: int64 codes) and the repair
    edges (damaged rows, holder rows). `cut` adds the kept pairs; `benchmarks/components.py` measures each."""
    record, records = pd.factorize(R["BH"].astype(str) + "|" + R["YWZJ"].astype(str))
    broken, holder, _ = repair_edges(R, cfg, date)
    groupings = (group_codes(id_group_keys(R)), record.astype(np.int64), group_codes(state_id_keys(R)))
    return record, records, groupings, (broken, holder)


def cut_and_spill(empty: BaseState, staged, frames: StagedRows, date: str, cfg: dict,
                  bin_roles: int) -> tuple[str, int, int]:
    """`cut`, then each staged file's rows spilled into the files of their bins (`StagedRows.spill`). Returns
    the city's model (its payload), the number of bins and of roles. Run in a worker process: the memory
    the city's frames took is the worker's, returned when it exits, so that the date's own process holds a
    bin at a time (in the same process, the 1M bins ran on top of what the cut's frames had left: a peak of
    4.8 GiB after the cut's 3.7)."""
    model, bin_of_record, n_roles = cut(empty, staged, frames, date, cfg, bin_roles)
    n_bins = int(bin_of_record.max()) + 1 if len(bin_of_record) else 1
    model.meta["config_version"] = cfg.get("version", "")
    frames.spill(bin_of_record, n_bins)
    return model.to_payload(), n_bins, n_roles


def _linking_roles(empty: BaseState, staged, frames: Mapping, date: str):
    """Each table's roles from the date's files applied to the empty base, with the columns linking reads
    (`LINKING_COLUMNS`), one table at a time: the sources of one table are held at once, not the city's. A
    first date has no answers laid over its records."""
    files = [sf for sf in in_apply_order(staged.files) if sf.status == "staged" and sf.table != RETURN_TABLE]
    for table in dict.fromkeys(sf.table for sf in files):
        current = empty.sources[table]
        for sf in files:
            if sf.table == table:
                current = apply_file(current, frames, sf, date).current
        yield build_roles({table: current}, date)[LINKING_COLUMNS]


def row_bins(keys: np.ndarray, table: str, bin_of_record: pd.Series, n_bins: int) -> np.ndarray:
    """The bin of each staged row of `table` with record keys `keys` (trimmed, as applying trims them): its
    record's; a row of a record without roles (rejected, or deleted) by a hash of its key (it only needs
    applying, and a key's rows stay together)."""
    got = bin_of_record.reindex(table + "|" + keys).to_numpy(dtype=np.float64)
    hashed = (pd.util.hash_array(keys) % np.uint64(n_bins)).astype(np.float64)
    return np.where(np.isnan(got), hashed, got).astype(np.int64)


class StagedRows(Mapping):
    """The date's staged files by name (`<batch>__<line>`, and `#rejects` for the keys their parse rejected),
    read when asked for, not held: the cut reads a table's files while it applies them, and once the bins are
    known `spill` writes each file's rows into one file per bin (`<staging>/bins/`), which `of_bin` reads. A
    return's rows all go to bin 0 (its tasks are answered there, once)."""

    SPILL_ROWS = 200_000  # rows of a staged file read at a time while spilling

    def __init__(self, folder: Path, staged):
        self.folder, self.spill_dir = folder, folder / "bins"
        self.files = {f"{f.batch_id}__{f.line_in_manifest}": f for f in staged.files if f.status == "staged"}
        self.rejects = {f"{name}#rejects": pd.read_parquet(folder / (f.parquet + ".rejects"))
                        for name, f in self.files.items() if (folder / (f.parquet + ".rejects")).exists()}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name in self.rejects:
            return self.rejects[name]
        return pd.read_parquet(self.folder / self.files[name].parquet)

    def __iter__(self):
        return iter([*self.files, *self.rejects])

    def __len__(self) -> int:
        return len(self.files) + len(self.rejects)

    def spill(self, bin_of_record: pd.Series, n_bins: int) -> None:
        """Each file's rows into the file of their bin, read and written `SPILL_ROWS` at a time in Arrow (the
        staged types kept)."""
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        self.spill_dir.mkdir(parents=True)
        for name, f in self.files.items():
            source = pq.ParquetFile(self.folder / f.parquet)
            writers = [pq.ParquetWriter(self._spilled(name, b), source.schema_arrow) for b in range(n_bins)]
            try:
                for batch in source.iter_batches(batch_size=self.SPILL_ROWS):
                    if f.table == RETURN_TABLE:
                        writers[0].write_batch(batch)
                        continue
                    keys = pc.utf8_trim_whitespace(pc.cast(batch.column(TABLES[f.table].key), pa.string()))
                    bins = row_bins(keys.to_numpy(zero_copy_only=False).astype(object), f.table, bin_of_record, n_bins)
                    for b in np.unique(bins):
                        writers[b].write_batch(batch.filter(pa.array(bins == b)))
            finally:
                for w in writers:
                    w.close()

    def _spilled(self, name: str, b: int) -> Path:
        return self.spill_dir / f"{name}.{b}.parquet"

    def of_bin(self, b: int) -> dict[str, pd.DataFrame]:
        """Bin `b`'s rows of every file (the rejects' keys whole: they only protect)."""
        return {**{name: pd.read_parquet(self._spilled(name, b)) for name in self.files}, **self.rejects}

    def drop_spill(self) -> None:
        shutil.rmtree(self.spill_dir, ignore_errors=True)


def process_bin(state: BaseState, staged, frames: StagedRows, b: int, date: str, cfg: dict, prior: dict,
                incremental: bool, linking: bool | None):
    """Bin `b` of the date processed (`process_date` on its rows, with the city's model in `state`), in a
    worker or here: the result, its seconds and the process's peak memory after it."""
    release_memory()  # the last bin's frames, gone to the caller, leave this process's heap first
    t = time.perf_counter()
    res = process_date(state, staged, frames.of_bin(b), date, link_config=cfg, prior_reports=prior,
                       incremental=incremental, linking=linking, city_figures_later=True)
    return res, time.perf_counter() - t, peak_gib()


def merge_batches(per_bin: list[list[dict]], staged) -> list[dict]:
    """The batch rows of the date: each file's report with the counts of every bin summed (a bin's
    report repeats what staging counted, the rows received and rejected while parsing)."""
    parsed = {f.path: (int(f.rejected_rows) if f.status == "staged" else 0) for f in staged.files}
    merged: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    for rows in per_bin:
        for row in rows:
            rep = json.loads(row["report"])
            if row["batch_id"] not in reports:
                merged[row["batch_id"]], reports[row["batch_id"]] = row, rep
                continue
            for into, fr in zip(reports[row["batch_id"]]["files"], rep["files"]):
                for k in REPORT_COUNTS:
                    if k in fr:
                        into[k] = int(into.get(k, 0)) + int(fr[k])
                into["rejected_rows"] += int(fr["rejected_rows"]) - parsed.get(fr["path"], 0)
                for code, n in (fr.get("rejected_reasons") or {}).items():
                    reasons = into.setdefault("rejected_reasons", {})
                    reasons[code] = reasons.get(code, 0) + int(n)
    for batch_id, rep in reports.items():
        for fr in rep["files"]:
            if fr["status"] == "staged":
                fr["loaded_rows"] = fr["received_rows"] - fr["rejected_rows"]
            if "rejected_reasons" in fr:
                fr["rejected_reasons"] = dict(sorted(fr["rejected_reasons"].items()))
        merged[batch_id] = {**merged[batch_id], "report": json.dumps(rep, ensure_ascii=False)}
    return list(merged.values())


def commit_in_bins(conn: sa.Connection, staged, frames: StagedRows, date: str, cfg: dict, prior: dict, settings,
                   before_write=None, clock=None) -> InBins:
    """Process and write the first date bin by bin, inside the caller's transaction: the cut, then each
    bin (`process_date` on its rows, its base rows written, its role index rows made), then the role
    index's indexes and the running totals. `before_write`: called before anything is written (the quality
    gates still running). The caller writes the batches, the rejects and the run summary."""
    empty = base.read_base(conn)  # the first date: every table empty
    t0 = time.perf_counter()
    payload, n_bins, n_roles = workers.apart(cut_and_spill, empty, staged, frames, date, cfg, settings.bin_roles)
    state = replace(empty, model=payload)
    log.info("%s: %s roles cut into %s bins of at most about %s roles in %.1f s", date, f"{n_roles:,}", n_bins,
             f"{settings.bin_roles:,}", time.perf_counter() - t0)
    if clock is not None:
        clock.step("cut")
    if before_write is not None:
        before_write()
    db.write_meta(conn, db.MODEL_KEY, state.model)
    batches: list[list[dict]] = []
    rejects: list = []
    totals: list[dict] = []

    jobs = ((state, staged, frames, b, date, cfg, prior, not settings.full_relink, settings.incremental_linking)
            for b in range(n_bins))
    # the next bin linked and checked in a worker while this process writes the last one (1M: a bin's
    # processing 25 s beside its writing 36 s); one core: one after the other, here
    if n_bins > 1 and workers.spare_cores():
        processed = workers.made_ahead(process_bin, jobs, BINS_AHEAD)
    else:
        processed = (process_bin(*job) for job in jobs)

    def bins():
        for b, (res, seconds, worker_peak) in enumerate(processed):
            t = time.perf_counter()
            base.write_base(conn, state, res.state, res.audit, [], date, {})
            batches.append(res.batches)
            rejects.extend(res.rejects)
            yield from scoped.index_chunks(res, cfg, totals)
            roles_in_bin = len(res.roles)
            del res
            release_memory()  # the bin's frames, freed, go back before the next bin is taken
            log.info("%s: bin %s of %s, %s roles, processed in %.1f s (peak %.1f GiB), written in %.1f s (peak %.1f GiB)",
                     date, b + 1, n_bins, f"{roles_in_bin:,}", seconds, worker_peak, time.perf_counter() - t,
                     peak_gib())

    base.rebuild_index(conn, db.forms_table(block_columns(cfg)), bins(), scoped.index_stamp(cfg))
    frames.drop_spill()
    base.write_city_counts(conn, scoped.add_counts(*totals))
    base.refresh_statistics(conn)
    return InBins(n_bins, merge_batches(batches, staged), rejects)
