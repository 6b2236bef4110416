"""The deployment's settings as a Dagster resource: built from `settings.Settings`, never from code edits."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from settings import DEFAULT_BIN_ROLES, Settings


class PopbaseResource(dg.ConfigurableResource):
    """The base's home folder (landing/, out/), its database URL and the linking switches; `settings`
    gives them back as the one `Settings` the code below Dagster takes."""

    home: str
    db_url: str
    first_date: str
    incremental_linking: bool | None = None
    full_relink: bool = False
    scoped_dates: bool = True
    quality_config: str
    linkage_config: str
    bin_roles: int = DEFAULT_BIN_ROLES

    @classmethod
    def from_settings(cls, s: Settings) -> "PopbaseResource":
        return cls(home=str(s.home), db_url=s.db_url, first_date=s.first_date, incremental_linking=s.incremental_linking,
                   full_relink=s.full_relink, scoped_dates=s.scoped_dates, quality_config=str(s.quality_config),
                   linkage_config=str(s.linkage_config), bin_roles=s.bin_roles)

    @property
    def settings(self) -> Settings:
        return Settings(home=Path(self.home), db_url=self.db_url, first_date=self.first_date,
                        incremental_linking=self.incremental_linking, full_relink=self.full_relink,
                        scoped_dates=self.scoped_dates, quality_config=Path(self.quality_config),
                        linkage_config=Path(self.linkage_config), bin_roles=self.bin_roles)
