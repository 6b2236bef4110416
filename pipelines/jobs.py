"""The daily job: every asset of a business date, staging to outputs."""
import dagster as dg

from pipelines.partitions import business_dates

daily_job = dg.define_asset_job(
    "popbase_daily",
    selection=dg.AssetSelection.groups("exchange", "base", "outputs"),
    partitions_def=business_dates,
    description="Process one business date (or a range, in order): stage, load+link+verify, write outputs.",
    op_retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
    # One process per run: the steps run one after the other anyway (population_base writes the
    # outputs under the run lock), so a process per step only costs start-up time.
    executor_def=dg.in_process_executor,
)
