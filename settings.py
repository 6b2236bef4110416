"""The settings of a deployment, read once from the environment and passed down explicitly.

This module (and the CLI entry point, for `DAGSTER_HOME`) is the only place that reads `os.environ`.
`Settings.from_env()` is called by the Dagster code location, the CLI and the benchmarks; tests build
`Settings(home=...)` themselves. Nothing below `day/` and `pipelines/` sees the environment: it gets
the values it needs as arguments.

| variable | setting |
|---|---|
| `POPBASE_HOME` | `home`: `landing/`, `out/`, the SQLite base and the first business date (default `./popbase_home`) |
| `POPBASE_DB_URL` | `db_url`: SQLAlchemy URL (default SQLite at `<home>/popbase.db`) |
| `POPBASE_FIRST_DATE` | `first_date`: the first Dagster partition (default: see below the table) |
| `POPBASE_INCREMENTAL_LINKING` | `incremental_linking`: `1` on, `0` off, unset = `config/linkage.json` decides |
| `POPBASE_FULL_RELINK` | `full_relink`: `1` re-links and re-checks the whole city every date |
| `POPBASE_SCOPED_DATES` | `scoped_dates`: daily dates read what their deliveries reach (default on; `0`: the whole base) |
| `POPBASE_QUALITY_CONFIG` | `quality_config`: the quality thresholds file (default `config/quality.json`) |
| `POPBASE_BIN_ROLES` | `bin_roles`: a first date of more rows runs in bins of about this many roles (`day/binned.py`; 0: never) |

Without `POPBASE_FIRST_DATE`, `first_date` is the date kept in `<home>/first_business_date`, else the earliest
landed date.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_QUALITY_CONFIG = ROOT / "config" / "quality.json"
DEFAULT_LINKAGE_CONFIG = ROOT / "config" / "linkage.json"
FIRST_DATE_FILE = "first_business_date"  # under POPBASE_HOME, written when the first date is processed
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"  # the CLI's log lines, and a worker process's (`day.workers.spawned`)
DEFAULT_BIN_ROLES = 500_000  # roles per bin of a large first date: about 3 GiB of linking and checking


def _flag(value: str | None) -> bool | None:
    """`1/true/yes` -> True, `0/false/no` -> False, unset or empty -> None."""
    v = (value or "").strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    return None


def _count(value: str | None, default: int, name: str) -> int:
    """A whole number of the environment (unset or empty: `default`); anything else is a clear error."""
    v = (value or "").strip().replace(",", "").replace("_", "")
    if not v:
        return default
    if not v.isdigit():
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(v)


def landed_dates(home: Path) -> list[str]:
    """Business dates with at least one complete delivery folder (`landing/<dept>/<D>/manifest.json`)."""
    root = Path(home) / "landing"
    if not root.exists():
        return []
    return sorted({p.parent.name for p in root.glob("*/*/manifest.json") if p.parent.name.isdigit()})


def first_business_date(home: Path) -> str:
    """The first business date of a home: kept in `<home>/first_business_date` once a date has been
    processed, else the earliest landed date, else yesterday (Asia/Shanghai has no partition for today yet)."""
    kept = Path(home) / FIRST_DATE_FILE
    if kept.exists():
        text = kept.read_text(encoding="utf-8").strip()
        if len(text) == 8 and text.isdigit():
            return text
    landed = landed_dates(home)
    if landed:
        return landed[0]
    return (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")


@dataclass(frozen=True)
class Settings:
    """Where the base lives and how a date is run. Frozen: a run never changes its settings."""

    home: Path
    db_url: str = ""  # "" = SQLite at <home>/popbase.db
    first_date: str = ""  # "" = first_business_date(home)
    incremental_linking: bool | None = None  # None = config/linkage.json `incremental.enabled`
    full_relink: bool = False
    scoped_dates: bool = True  # a daily date reads only what its deliveries reach (day/scoped.py)
    quality_config: Path = DEFAULT_QUALITY_CONFIG
    linkage_config: Path = DEFAULT_LINKAGE_CONFIG
    bin_roles: int = DEFAULT_BIN_ROLES  # a first date larger than this runs in bins of it (day/binned.py); 0: never

    def __post_init__(self):
        object.__setattr__(self, "home", Path(self.home).resolve())
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{self.home / 'popbase.db'}")
        if not self.first_date:
            object.__setattr__(self, "first_date", first_business_date(self.home))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        return cls(
            home=Path(env.get("POPBASE_HOME") or "./popbase_home"),
            db_url=env.get("POPBASE_DB_URL", ""),
            first_date=env.get("POPBASE_FIRST_DATE", ""),
            incremental_linking=_flag(env.get("POPBASE_INCREMENTAL_LINKING")),
            full_relink=bool(_flag(env.get("POPBASE_FULL_RELINK"))),
            scoped_dates=_flag(env.get("POPBASE_SCOPED_DATES")) is not False,
            quality_config=Path(env.get("POPBASE_QUALITY_CONFIG") or DEFAULT_QUALITY_CONFIG),
            bin_roles=_count(env.get("POPBASE_BIN_ROLES"), DEFAULT_BIN_ROLES, "POPBASE_BIN_ROLES"),
        )

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def out(self) -> Path:
        return self.home / "out"

    def landed_dates(self) -> list[str]:
        return landed_dates(self.home)


def quiet_libraries() -> None:
    """Library switches that must be set before those libraries load: no Great Expectations analytics."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
