"""The population base: apply, link, verify, in one database transaction per business date."""


import dagster as dg
from dagster import AssetExecutionContext

from exchange import daily, outputs, runner
from pipelines.partitions import business_dates
from pipelines.resources import PopbaseResource
from store.lock import run_lock


@dg.asset(
    partitions_def=business_dates,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["staged_deliveries"],
    group_name="base",
    check_specs=[dg.AssetCheckSpec("link_rate", asset="population_base",
                                   description="Share of record roles linked to a person without waiting for a clerk.")],
    description="Source tables, persons (RKID), links and verification tasks after the business date, committed atomically.",
)
def population_base(context: AssetExecutionContext, popbase: PopbaseResource):
    home, engine = popbase.home_path, popbase.engine()
    dates = sorted(context.partition_keys)
    summaries = {}
    with run_lock(engine, home):  # dates are applied in order even if Dagster launches runs at once
        for earlier in runner.pending_before(home, engine, dates[0]):
            context.log.info(f"processing earlier business date {earlier} first")
            runner.process_one(home, engine, earlier)
        for date in dates:
            if not (daily.staging_dir(home, date) / "stage.json").exists():
                daily.stage(home, date)  # materialised on its own, without staged_deliveries
            latest_before = max(runner.processed_dates(engine), default="")
            summaries[date] = daily.commit(home, engine, date)
            # The outputs show the base right after this date, so they are written before the lock is
            # released: a concurrent run of a later date (a backfill launched as one run per date)
            # could otherwise commit before this run's output steps start. Same rule as runner.process_one.
            if runner.outputs_due(home, date, latest_before):
                outputs.write_all(home, engine, date)
            context.log.info(f"{date}: base and outputs up to date")
    last = summaries[dates[-1]]
    rate = float(last.get("quality", {}).get("link_rate") or 0.0)
    yield dg.MaterializeResult(metadata={
        "persons": last["totals"].get("persons", 0), "record_roles": last["totals"].get("roles", 0),
        "open_tasks": last["totals"].get("open_tasks", 0), "link_rate": rate,
        "link_methods": dg.MetadataValue.json(last.get("link_methods", {})),
    })
    yield dg.AssetCheckResult(check_name="link_rate", passed=rate >= 0.95 or last["totals"].get("roles", 0) == 0,
                              severity=dg.AssetCheckSeverity.WARN, metadata={"link_rate": rate})
