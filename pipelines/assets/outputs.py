"""Outputs of spec section 6, written from the database once the date has committed."""


import dagster as dg
from dagster import AssetExecutionContext

from exchange import outputs, runner
from pipelines.partitions import business_dates
from pipelines.resources import PopbaseResource


def _dates_to_write(context, popbase) -> list[str]:
    """An earlier date's outputs are left alone once later dates are processed (they would show later data)."""
    latest = max(runner.processed_dates(popbase.engine()), default="")
    keys = sorted(context.partition_keys)
    keep = [d for d in keys if d >= latest or not (popbase.home_path / "out" / "exports" / d).exists()]
    for d in set(keys) - set(keep):
        context.log.info(f"{d}: later dates were processed since; its outputs are kept as they were written")
    return keep


_COMMON = dict(partitions_def=business_dates, backfill_policy=dg.BackfillPolicy.single_run(),
               deps=["population_base"], group_name="outputs")


@dg.asset(description="exports/<D>/persons.parquet and links.parquet", **_COMMON)
def exports(context: AssetExecutionContext, popbase: PopbaseResource):
    engine, written = popbase.engine(), {}
    for d in _dates_to_write(context, popbase):
        with engine.connect() as conn:
            written[d] = {k: str(v) for k, v in outputs.write_exports(popbase.home_path, conn, d).items()}
    return dg.MaterializeResult(metadata={"files": dg.MetadataValue.json(written)})


@dg.asset(description="tasks/<dept>/<D>/verification_tasks_<dept>_<D>.xlsx and .csv for every department", **_COMMON)
def verification_task_files(context: AssetExecutionContext, popbase: PopbaseResource):
    engine, written = popbase.engine(), {}
    for d in _dates_to_write(context, popbase):
        with engine.connect() as conn:
            written[d] = {dept: str(x) for dept, (x, _c) in outputs.write_task_outputs(popbase.home_path, conn, d).items()}
    return dg.MaterializeResult(metadata={"files": dg.MetadataValue.json(written)})


@dg.asset(description="reports/<D>/reconciliation_<dept>.json/.xlsx and summary.html", **_COMMON)
def reconciliation_reports(context: AssetExecutionContext, popbase: PopbaseResource):
    import json

    import sqlalchemy as sa

    from store import db

    engine, written = popbase.engine(), {}
    for d in _dates_to_write(context, popbase):
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.runs.c.summary).where(db.runs.c.business_date == d)).first()
            history = outputs.run_history(conn, d)
        paths = outputs.write_reports(popbase.home_path, json.loads(row.summary), d, history)
        written[d] = str(paths["summary"])
    return dg.MaterializeResult(metadata={"summary": dg.MetadataValue.json(written)})
