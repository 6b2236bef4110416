"""Data quality: Great Expectations 1.x suites per delivered table and rate metrics (no Dagster).

- `quality.suites.validate_delivery(df, table, incremental) -> QualityResult` (GX, imported lazily)
- `quality.rates.quality_rates(roles, links)`, `quality.rates.delivery_rates(df, table)` (pandas)
- `quality.thresholds.load_thresholds()`, `rate_warnings(rates, table)` (`config/quality.json`)
"""
from quality.rates import delivery_rates, quality_rates
from quality.suites import QualityResult, validate_delivery
from quality.thresholds import load_thresholds, rate_warnings

__all__ = [
    "QualityResult",
    "delivery_rates",
    "load_thresholds",
    "quality_rates",
    "rate_warnings",
    "validate_delivery",
]
