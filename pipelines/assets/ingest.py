"""Staging: verify and parse each business date's deliveries, with the GX quality gates as asset checks."""


from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext
import pandas as pd

from exchange import daily
from exchange.tables import RETURN_TABLE
from pipelines.partitions import business_dates
from pipelines.resources import PopbaseResource

STRUCTURE = "delivery_structure"
RATES = "delivery_quality_rates"


def _validate(home: Path, result: daily.StageResult) -> tuple[list[str], list[str], dict]:
    """Run the GX suite of every staged extract: (structural errors, rate warnings, rates per file)."""
    from quality.rates import rate_warnings
    from quality.suites import validate_delivery

    errors = [f"manifest: {e}" for e in result.errors]
    errors += [f"{f.department}/{f.path}: {f.message}" for f in result.files if f.status == "structural_error"]
    warnings, rates = [], {}
    out = daily.staging_dir(home, result.business_date)
    for f in result.files:
        if f.status != "staged" or f.table == RETURN_TABLE:
            continue
        frame = pd.read_parquet(out / f.parquet)
        q = validate_delivery(frame, f.table, incremental=f.extract_type == "incremental")
        if not q.structural_ok:
            errors += [f"{f.department}/{f.path}: {m}" for m in q.structural_messages]
        warnings += [f"{f.department}/{f.path}: {m}" for m in q.content_messages]
        rates[f"{f.department}/{f.path}"] = q.rates
        warnings += [f"{f.department}/{f.path}: {w}" for w in rate_warnings(q.rates, f.table)]
    return errors, warnings, rates


@dg.asset(
    partitions_def=business_dates,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="exchange",
    check_specs=[
        dg.AssetCheckSpec(STRUCTURE, asset="staged_deliveries", blocking=True,
                          description="Manifests readable, required columns present, tables known (blocks the load)."),
        dg.AssetCheckSpec(RATES, asset="staged_deliveries",
                          description="Valid-ID rate and key-field completeness of each delivery against config/quality.json."),
    ],
    description="Verified (sha256) and parsed deliveries of the business date, staged as Parquet; unreadable rows go to rejects.",
)
def staged_deliveries(context: AssetExecutionContext, popbase: PopbaseResource):
    home = popbase.home_path
    all_errors, all_warnings, files = [], [], []
    for date in sorted(context.partition_keys):
        result = daily.stage(home, date)
        errors, warnings, rates = _validate(home, result)
        all_errors += [f"{date} {e}" for e in errors]
        all_warnings += [f"{date} {w}" for w in warnings]
        for f in result.files:
            files.append({"date": date, "department": f.department, "table": f.table, "status": f.status,
                          "received": f.received_rows, "rejected": f.rejected_rows, "manifest_rows": f.manifest_rows})
            if f.status == "quarantined":
                context.log.warning(f"{date}: {f.message}")
        context.log.info(f"{date}: {len(result.files)} files in {len(set(f.batch_id for f in result.files))} batches")
    yield dg.MaterializeResult(metadata={
        "files": dg.MetadataValue.md(pd.DataFrame(files).to_markdown(index=False) if files else "no deliveries"),
        "quarantined": sum(f["status"] == "quarantined" for f in files),
        "rejected_rows": sum(f["rejected"] for f in files),
    })
    yield dg.AssetCheckResult(check_name=STRUCTURE, passed=not all_errors,
                              metadata={"errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in all_errors) or "none")},
                              description="; ".join(all_errors)[:1000] or None)
    yield dg.AssetCheckResult(check_name=RATES, passed=not all_warnings, severity=dg.AssetCheckSeverity.WARN,
                              metadata={"warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in all_warnings) or "none")})
