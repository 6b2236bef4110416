"""The daily job: every asset of a business date, staging to outputs, in one step."""
import dagster as dg

JOB_NAME = "popbase_daily"


def daily_job(partitions: dg.PartitionsDefinition):
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.groups("exchange", "base", "outputs"),
        partitions_def=partitions,
        description="Process one business date (or a range, in order): stage, check, load+link+verify, write outputs.",
        op_retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
        # One step (the business_date multi-asset): a process per step would only cost start-up time.
        executor_def=dg.in_process_executor,
    )
