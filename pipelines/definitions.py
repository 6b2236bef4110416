"""The Dagster code location: assembles assets, checks, job, schedule, sensor and resources."""
import dagster as dg

from pipelines.assets.base import population_base
from pipelines.assets.ingest import staged_deliveries
from pipelines.assets.outputs import exports, reconciliation_reports, verification_task_files
from pipelines.jobs import daily_job
from pipelines.resources import default_resource
from pipelines.schedules import daily_schedule
from pipelines.sensors import manifest_sensor

defs = dg.Definitions(
    assets=[staged_deliveries, population_base, exports, verification_task_files, reconciliation_reports],
    jobs=[daily_job],
    schedules=[daily_schedule],
    sensors=[manifest_sensor],
    resources={"popbase": default_resource()},
)
