"""Quality thresholds (`config/quality.json`, versioned) and the warnings they raise.

The file has a `version`, `min_base` (rates measured on fewer roles never warn), `rates` (per
table, over a `default`, plus `city` for city-wide totals: `{rate: {"warn_below": x}}`) and
`expectations.mostly` (per table over a `default`: the `mostly` of each kind of GX content
expectation). Another file is named by the settings (`POPBASE_QUALITY_CONFIG`) and passed in as `path`.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "quality.json"
CITY = "city"

# How each rate is named in a warning (a clerk reads these in reports and Dagster check metadata).
RATE_LABELS = {
    "valid_id_rate": "valid ID rate (有效身份证号码率)",
    "valid_id_rate_filled": "valid ID rate among filled IDs",
    "link_rate": "link rate (比对关联率)",
    "key_field_completeness": "key field completeness (关键字段完整率)",
    "completeness_XM": "name (XM) completeness",
    "completeness_ID": "ID field completeness",
    "completeness_CSRQ": "birth date (CSRQ) completeness",
}


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if "version" not in cfg or "rates" not in cfg:
        raise ValueError(f"{path}: a quality config needs 'version' and 'rates'")
    return cfg


def load_thresholds(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole quality config (cached; re-read when the file changes). Do not mutate it."""
    p = Path(path) if path else DEFAULT_PATH
    return _load(str(p), p.stat().st_mtime)


def rate_thresholds(table: str, cfg: dict[str, Any] | None = None) -> dict[str, float]:
    """`{rate: warn_below}` for a table (or `"city"`), the table's entries over the defaults."""
    cfg = cfg if cfg is not None else load_thresholds()
    rates = cfg["rates"]
    merged: dict[str, float] = {}
    for section in (rates.get("default", {}), rates.get(table, {})):
        for rate, spec in section.items():
            value = spec.get("warn_below") if isinstance(spec, dict) else spec
            if value is not None:
                merged[rate] = float(value)
    return merged


# Used when the config file does not say (it normally does).
DEFAULT_MOSTLY = {"id_format": 0.95, "sex_code": 0.99, "date": 0.98, "code": 0.99, "timestamp": 0.99}


def mostly_for(table: str, cfg: dict[str, Any] | None = None) -> dict[str, float]:
    """`{expectation kind: mostly}` for a table, the table's entries over the defaults."""
    cfg = cfg if cfg is not None else load_thresholds()
    mostly = cfg.get("expectations", {}).get("mostly", {})
    sections = (DEFAULT_MOSTLY, mostly.get("default", {}), mostly.get(table, {}))
    return {k: float(v) for section in sections for k, v in section.items()}


def rate_warnings(rates: dict[str, Any], table: str | None = None, cfg: dict[str, Any] | None = None) -> list[str]:
    """A sentence for each rate in `rates` below its `warn_below` for `table`.

    `rates` is a flat dict of rates (`delivery_rates`, one entry of `quality_rates()["by_table"]`) or
    the whole `quality_rates` result. With `table=None` the top-level rates are judged against the
    `city` thresholds and, when present, each table of `by_table` against its own.
    Rates that are `None` (nothing to measure) never warn, nor do rates whose `<rate>_base` is
    below the config's `min_base`.
    """
    cfg = cfg if cfg is not None else load_thresholds()
    label = table or CITY
    out: list[str] = []
    min_base = int(cfg.get("min_base", 0) or 0)
    for rate, warn_below in rate_thresholds(label, cfg).items():
        value = rates.get(rate)
        if value is None or isinstance(value, (dict, list, str)):
            continue
        base = rates.get(f"{rate}_base")
        if isinstance(base, (int, float)) and base < min_base:
            continue  # too few roles to judge
        if float(value) < warn_below:
            base = _base_count(rates, rate)
            out.append(
                f"{label}: {RATE_LABELS.get(rate, rate)} is {float(value):.2%}{base}, "
                f"below the warning threshold {warn_below:.2%} (quality config v{cfg['version']})"
            )
    if table is None:
        for name, sub in (rates.get("by_table") or {}).items():
            out.extend(rate_warnings(sub, name, cfg))
    return out


def _base_count(rates: dict[str, Any], rate: str) -> str:
    n = rates.get(f"{rate}_base")
    return f" of {int(n)}" if isinstance(n, (int, float)) and n else ""
