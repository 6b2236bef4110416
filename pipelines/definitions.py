"""The Dagster code location: assembles the business-date assets, job, schedule, sensor and resource
from one `Settings` (`build_definitions`); `defs` is what workspace.yaml loads."""
import dagster as dg

from pipelines.assets import business_date_assets
from pipelines.jobs import JOB_NAME, daily_job
from pipelines.partitions import business_dates
from pipelines.resources import PopbaseResource
from pipelines.schedules import daily_schedule
from pipelines.sensors import manifest_sensor
from settings import Settings, quiet_libraries


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = business_dates(settings)
    job = daily_job(partitions)
    return dg.Definitions(
        assets=[business_date_assets(partitions)],
        jobs=[job],
        schedules=[daily_schedule(job)],
        sensors=[manifest_sensor(job, partitions)],
        resources={"popbase": PopbaseResource.from_settings(settings)},
    )


quiet_libraries()
defs = build_definitions(Settings.from_env())

__all__ = ["JOB_NAME", "build_definitions", "defs"]
