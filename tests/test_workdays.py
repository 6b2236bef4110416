"""Working days with the official holiday schedule (chinese_calendar), deadline HCQX."""
from __future__ import annotations

import logging

import pytest

from verification import workdays
from verification.workdays import HCQX_WORKING_DAYS, add_working_days, deadline, is_working_day


def test_national_day_2026():
    # 2026: 1–7 October off; Sunday 20 September and Saturday 10 October are make-up working days
    for day in range(1, 8):
        assert not is_working_day(f"202610{day:02d}")
    assert is_working_day("20260920") and is_working_day("20261010")
    assert not is_working_day("20261011")
    assert add_working_days("20260930", 1) == "20261008"
    assert add_working_days("20260930", 3) == "20261010"
    assert add_working_days("20260930", 10) == "20261020"
    assert add_working_days("20261008", -1) == "20260930"


def test_make_up_sunday_and_mid_autumn_2026():
    assert add_working_days("20260918", 1) == "20260920"  # Friday → make-up Sunday
    assert add_working_days("20260924", 1) == "20260928"  # Mid-Autumn 25–27 September


def test_deadline_is_tenth_working_day_after_issue():
    assert HCQX_WORKING_DAYS == 10
    assert deadline("20260301") == "20260313"  # Sunday issue: Mon 2 … Fri 13 March
    assert deadline("20260302") == "20260316"
    assert deadline("20260930") == "20261020"
    assert add_working_days("20260302", 0) == "20260302"


def test_uncovered_year_falls_back_to_weekdays_and_warns_once(caplog):
    workdays._warned_years.discard(2099)
    workdays._is_working_day.cache_clear()
    workdays.add_working_days.cache_clear()
    with caplog.at_level(logging.WARNING, logger="popbase"):
        assert add_working_days("20990102", 1) == "20990105"  # Friday → Monday
        assert is_working_day("20990106") and not is_working_day("20990110")
        assert add_working_days("20990102", 5) == "20990109"
    warnings = [r for r in caplog.records if "2099" in r.getMessage()]
    assert len(warnings) == 1


def test_bad_date():
    with pytest.raises(ValueError):
        add_working_days("2026-03-01", 1)
