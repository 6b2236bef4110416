"""02:00 Asia/Shanghai every day, for the previous business date."""
import dagster as dg


def daily_schedule(job) -> dg.ScheduleDefinition:
    return dg.build_schedule_from_partitioned_job(
        job, name="popbase_daily_0200", hour_of_day=2, minute_of_hour=0,
        description="Processes yesterday's business date at 02:00 Asia/Shanghai.",
    )
