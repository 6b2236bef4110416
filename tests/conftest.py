"""Shared fixtures: generated cities and database backends (SQLite always, PostgreSQL when reachable).

PostgreSQL tests run against 127.0.0.1:5432 (trust auth). With CI=true an unreachable server is a
failure, not a skip.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from settings import Settings, quiet_libraries

quiet_libraries()

PG_ADMIN_URL = os.environ.get("POPBASE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def city_factory(tmp_path_factory):
    """Generate (once per size/seed) a synthetic city; returns its folder (landing/ and truth/)."""
    from fixtures.city import generate_city

    made: dict[tuple, Path] = {}

    def make(persons: int = 3000, days: int = 3, seed: int = 7, **kw) -> Path:
        key = (persons, days, seed, tuple(sorted(kw.items())))
        if key not in made:
            root = tmp_path_factory.mktemp(f"city{persons}_{days}_{seed}")
            generate_city(root, persons=persons, days=days, seed=seed, **kw)
            made[key] = root
        return made[key]

    return make


def settings_for(home: Path, db: sa.Engine | str = "", **switches) -> Settings:
    """The settings of a test's home and database (an engine or a URL; "" = SQLite under home)."""
    url = db.url.render_as_string(hide_password=False) if isinstance(db, sa.Engine) else db
    return Settings(home=home, db_url=url, **switches)


def run(home: Path, db: sa.Engine | str, dates: list[str], **kw) -> dict[str, dict]:
    """`day.run_dates` on a home and database; returns the run summary of each date processed."""
    from day import run_dates

    switches = {k: kw.pop(k) for k in ("incremental_linking", "full_relink", "scoped_dates") if k in kw}
    return {d: r.summary for d, r in run_dates(settings_for(home, db, **switches), dates, **kw).items()}


def copy_city(city: Path, home: Path) -> Path:
    """A fresh POPBASE_HOME holding the city's landing folder (tests never write into the shared city)."""
    shutil.copytree(city / "landing", home / "landing")
    return home


@contextlib.contextmanager
def database(backend: str, folder: Path):
    """A fresh, empty database of the backend: SQLite in `folder`, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'popbase.db'}"
        return
    reason = _pg_available()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {PG_ADMIN_URL}: {reason}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({reason})")
    name = f"popbase_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from store import db

        db.dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database of each backend."""
    with database(request.param, tmp_path) as url:
        yield url
