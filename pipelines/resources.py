"""Where the base lives, from the environment (POPBASE_HOME, POPBASE_DB_URL), never from code edits."""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from store.db import default_db_url, make_engine

_ENGINES: dict[str, sa.Engine] = {}


def popbase_home() -> Path:
    return Path(os.environ.get("POPBASE_HOME", "./popbase_home")).resolve()


class PopbaseResource(dg.ConfigurableResource):
    """The base's home folder (landing/, out/) and its database URL ("" = SQLite under home)."""

    home: str = ""
    db_url: str = ""

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else popbase_home()

    @property
    def url(self) -> str:
        return self.db_url or default_db_url(self.home_path)

    def engine(self) -> sa.Engine:
        url = self.url
        if url not in _ENGINES:  # one pool per process and URL
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]


def default_resource() -> PopbaseResource:
    return PopbaseResource(home=os.environ.get("POPBASE_HOME", ""), db_url=os.environ.get("POPBASE_DB_URL", ""))
