"""Process business dates in order: the entry point Dagster assets and tests share.

`process_dates` takes the run lock, then for every date not yet processed that has deliveries and
comes before the requested one, processes it first, so dates are applied in order even when
Dagster launches a backfill's runs at once.
"""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

from exchange import daily, outputs
from store import db
from store.lock import run_lock

log = logging.getLogger("popbase")


def landed_dates(home: Path) -> list[str]:
    """Business dates with at least one complete delivery folder."""
    root = Path(home) / "landing"
    if not root.exists():
        return []
    return sorted({p.parent.name for p in root.glob("*/*/manifest.json") if p.parent.name.isdigit()})


def processed_dates(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.select(db.runs.c.business_date)))


def pending_before(home: Path, engine: sa.Engine, date: str) -> list[str]:
    done = set(processed_dates(engine))
    return [d for d in landed_dates(home) if d < date and d not in done]


def outputs_due(home: Path, date: str, latest_processed: str) -> bool:
    """Whether to (re)write a date's outputs. They show the base right after the date, so once a later
    date has been processed (`latest_processed`, read before this date's commit) an earlier date's
    outputs are left as they were written, unless they are missing."""
    return date >= latest_processed or not (Path(home) / "out" / "exports" / date).exists()


def process_one(home: Path, engine: sa.Engine, date: str, write_outputs: bool = True) -> dict:
    """Stage, commit and write the outputs of one date (no lock: the caller holds it)."""
    staged = daily.stage(home, date)
    latest_before = max(processed_dates(engine), default="")
    summary = daily.commit(home, engine, date, staged)
    if write_outputs and outputs_due(home, date, latest_before):
        outputs.write_all(home, engine, date)
    else:
        log.info("outputs of %s kept as they are: later dates have been processed since", date)
    return summary


def process_dates(home: Path, engine: sa.Engine, dates: list[str]) -> dict[str, dict]:
    """Process the given dates (and any earlier unprocessed landed dates first), in order."""
    results = {}
    with run_lock(engine, home):
        todo = sorted(set(dates) | set(pending_before(home, engine, max(dates))))
        for d in todo:
            results[d] = process_one(home, engine, d)
    return results
