"""Outputs of spec section 6, written from the database once the date has committed.

In a run that also materialises population_base, that step has already written the outputs of its
dates under the run lock (a later date's run may commit before these steps start), so these assets
only rewrite outputs when materialised on their own.
"""
import contextlib

import dagster as dg
from dagster import AssetExecutionContext

from exchange import outputs, runner
from pipelines.partitions import business_dates
from pipelines.resources import PopbaseResource
from store.lock import run_lock


def _population_base_in_this_run(context) -> bool:
    run = context.run
    return ((run.asset_selection is None or dg.AssetKey("population_base") in run.asset_selection)
            and (run.step_keys_to_execute is None or "population_base" in run.step_keys_to_execute))


@contextlib.contextmanager
def _dates_to_write(context, popbase):
    """The dates whose outputs to write, decided and written under the run lock. An earlier date's
    outputs are left alone once later dates are processed (they would show later data)."""
    keys = sorted(context.partition_keys)
    if _population_base_in_this_run(context):
        context.log.info(f"{', '.join(keys)}: outputs written by population_base in this run")
        yield []
        return
    engine, home = popbase.engine(), popbase.home_path
    with run_lock(engine, home):
        latest = max(runner.processed_dates(engine), default="")
        keep = [d for d in keys if runner.outputs_due(home, d, latest)]
        for d in set(keys) - set(keep):
            context.log.info(f"{d}: later dates were processed since; its outputs are kept as they were written")
        yield keep


_COMMON = dict(partitions_def=business_dates, backfill_policy=dg.BackfillPolicy.single_run(),
               deps=["population_base"], group_name="outputs")


@dg.asset(description="exports/<D>/persons.parquet and links.parquet", **_COMMON)
def exports(context: AssetExecutionContext, popbase: PopbaseResource):
    engine, written = popbase.engine(), {}
    with _dates_to_write(context, popbase) as dates:
        for d in dates:
            with engine.connect() as conn:
                written[d] = {k: str(v) for k, v in outputs.write_exports(popbase.home_path, conn, d).items()}
    return dg.MaterializeResult(metadata={"files": dg.MetadataValue.json(written)})


@dg.asset(description="tasks/<dept>/<D>/verification_tasks_<dept>_<D>.xlsx and .csv for every department", **_COMMON)
def verification_task_files(context: AssetExecutionContext, popbase: PopbaseResource):
    engine, written = popbase.engine(), {}
    with _dates_to_write(context, popbase) as dates:
        for d in dates:
            with engine.connect() as conn:
                written[d] = {dept: str(x) for dept, (x, _c) in outputs.write_task_outputs(popbase.home_path, conn, d).items()}
    return dg.MaterializeResult(metadata={"files": dg.MetadataValue.json(written)})


@dg.asset(description="reports/<D>/reconciliation_<dept>.json/.xlsx and summary.html", **_COMMON)
def reconciliation_reports(context: AssetExecutionContext, popbase: PopbaseResource):
    import json

    import sqlalchemy as sa

    from store import db

    engine, written = popbase.engine(), {}
    with _dates_to_write(context, popbase) as dates:
        for d in dates:
            with engine.connect() as conn:
                row = conn.execute(sa.select(db.runs.c.summary).where(db.runs.c.business_date == d)).first()
                history = outputs.run_history(conn, d)
            paths = outputs.write_reports(popbase.home_path, json.loads(row.summary), d, history)
            written[d] = str(paths["summary"])
    return dg.MaterializeResult(metadata={"summary": dg.MetadataValue.json(written)})
