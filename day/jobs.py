"""Pieces of a date that a worker process runs beside the date's own process (`day.workers`). Module level,
so that a spawned worker finds them by name, and light: a worker imports this module, not the whole date
(`day.run` takes about twice as long to import), so that it starts working within a second or so."""
from __future__ import annotations

from pathlib import Path


def task_files(home: str, db_url: str, date: str) -> dict[str, tuple[Path, Path]]:
    """Every department's task file of `date`, from the open tasks in the store (committed: the worker reads
    them on a connection of its own while the date's process merges the exports)."""
    from exchange import outputs
    from store import base, db

    engine = db.engine_for(db_url)
    with engine.connect() as conn:
        tasks = base.open_tasks(conn)
    return outputs.write_task_outputs(Path(home), tasks, date)
