"""Daily business-date partitions in Asia/Shanghai; a partition key is the business date CCYYMMDD."""
import os

import dagster as dg

FIRST_BUSINESS_DATE = os.environ.get("POPBASE_FIRST_DATE", "20200101")

business_dates = dg.DailyPartitionsDefinition(
    start_date=FIRST_BUSINESS_DATE, fmt="%Y%m%d", timezone="Asia/Shanghai"
)
