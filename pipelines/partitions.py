"""Daily business-date partitions in Asia/Shanghai, from the first business date of the home
(`settings.first_date`: kept under POPBASE_HOME once a date is processed, else the earliest landed date)."""
import dagster as dg

from settings import Settings


def business_dates(settings: Settings) -> dg.DailyPartitionsDefinition:
    """A partition key is the business date CCYYMMDD."""
    return dg.DailyPartitionsDefinition(start_date=settings.first_date, fmt="%Y%m%d", timezone="Asia/Shanghai")
