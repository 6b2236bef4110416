"""Running business dates: the one path of a date (`day.run`), above every other package but `pipelines/`."""
from day.run import DateBlocked, DateResult, Gates, LateDelivery, run_date, run_dates

__all__ = ["DateBlocked", "DateResult", "Gates", "LateDelivery", "run_date", "run_dates"]
