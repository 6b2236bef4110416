"""Working days for verification deadlines (spec section 5: 10 working days, Chinese public holidays
and make-up working days respected).

`chinese_calendar` knows the State Council's yearly schedule (法定节假日 and 调休上班日) for the years
it ships data for. For a year it does not cover, a working day is Monday–Friday, and a warning is
logged once per such year.

"After" is exclusive of the start date: `add_working_days(d, n)` is the n-th working day following
`d`, whatever `d` itself is. So a task issued on Wednesday 20260930 (`XFRQ`) is due (`HCQX`) on the
10th working day after it: 1–7 October are the National Day holiday and Saturday 10 October is a
make-up working day, so the deadline is 20261020 (8, 9, 10, 12–16, 19, 20 October).
"""
from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache

import chinese_calendar

log = logging.getLogger("popbase")

# Deadline of a verification task: the HCQX-th working day after the issue date XFRQ.
HCQX_WORKING_DAYS = 10

_warned_years: set[int] = set()


def _parse(date: str) -> dt.date:
    try:
        return dt.datetime.strptime(str(date), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"expected a date CCYYMMDD, got {date!r}") from None


@lru_cache(maxsize=4096)
def _is_working_day(day: dt.date) -> bool:
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        if day.year not in _warned_years:
            _warned_years.add(day.year)
            log.warning(
                "chinese_calendar has no holiday schedule for %d: counting Monday-Friday as working days",
                day.year,
            )
        return day.weekday() < 5


def is_working_day(date: str) -> bool:
    """True when `date` (CCYYMMDD) is a working day (make-up Saturdays/Sundays included)."""
    return _is_working_day(_parse(date))


@lru_cache(maxsize=4096)
def add_working_days(date: str, n: int) -> str:
    """The n-th working day after `date` (CCYYMMDD), as CCYYMMDD.

    n > 0 counts forward from the day after `date`; n < 0 counts backward from the day before;
    n == 0 returns `date` unchanged.
    """
    day = _parse(date)
    step = dt.timedelta(days=1 if n > 0 else -1)
    remaining = abs(n)
    while remaining:
        day += step
        if _is_working_day(day):
            remaining -= 1
    return day.strftime("%Y%m%d")


def deadline(xfrq: str) -> str:
    """Verification deadline HCQX of a task issued on `xfrq`."""
    return add_working_days(xfrq, HCQX_WORKING_DAYS)
