"""One business date at a time: runs that Dagster launches together wait for each other.

PostgreSQL: a session advisory lock (works across hosts). SQLite: an exclusive file lock beside the
database file (the embedded default runs on one machine).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger("popbase")
LOCK_ID = 0x706F70  # "pop"


@contextlib.contextmanager
def run_lock(engine: sa.Engine, home: Path):
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
                conn.commit()
        return
    path = Path(home) / ".popbase.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
