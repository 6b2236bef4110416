"""A large city's first date in bins (day/binned.py) writes the base the whole-city date writes, and the
dates after it run on that base as on the other (issue 15, docs/scale.md 2.7)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from day import binned, run_dates
from day.run import OUTPUTS_MARKER
from linkage.blocks import block_columns
from linkage.link import load_config
from settings import landed_dates
from store import db
from tests.conftest import copy_city, database, settings_for
from tests.test_backfill_cli import assert_same_outputs
from tests.test_pipeline import assert_same, snapshot


def _forms(engine) -> pd.DataFrame:
    """The role index's form rows, sorted (they live beside the catalogue's tables)."""
    with engine.connect() as conn:
        frame = db.read_frame(conn, db.forms_table(block_columns(load_config())))
    return frame.sort_values("form_key").reset_index(drop=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_homes(request, city_factory, tmp_path_factory):
    """One city run twice, date by date: its first date whole, and in bins of 1,500 roles."""
    city = city_factory(persons=3000, days=3, seed=7)
    folder = tmp_path_factory.mktemp(f"binned_{request.param}")
    (folder / "whole").mkdir()
    (folder / "bins").mkdir()
    with database(request.param, folder / "whole") as whole_url, database(request.param, folder / "bins") as bins_url:
        homes = {"whole": (copy_city(city, folder / "whole" / "home"), whole_url, 0),
                 "bins": (copy_city(city, folder / "bins" / "home"), bins_url, 1500)}
        made = {name: (home, db.make_engine(url), settings_for(home, url, bin_roles=n))
                for name, (home, url, n) in homes.items()}
        yield made
        for _, engine, _ in made.values():
            engine.dispose()


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_first_date_in_bins_writes_the_base_the_whole_city_date_writes(two_homes):
    (home_w, engine_w, settings_w), (home_b, engine_b, settings_b) = two_homes["whole"], two_homes["bins"]
    dates = landed_dates(home_w)
    lines, logger = _Lines(), logging.getLogger("popbase")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        run_dates(settings_w, dates[:1])
        run_dates(settings_b, dates[:1])
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    cut = [x for x in lines.lines if "cut into" in x]
    assert len(cut) == 1 and int(cut[0].split(" bins")[0].rsplit(" ", 1)[1]) >= 4  # one of the two ran in bins
    bins = [x for x in lines.lines if ": bin " in x]
    assert len(bins) >= 4
    whole, parts = snapshot(engine_w), snapshot(engine_b)
    assert len(whole["links"]) > 5000 and (whole["links"]["PPFS"] == "FUZZY").sum() > 0
    assert len(whole["tasks"]) > 0
    assert_same(whole, parts)  # every table: sources, persons, links, tasks, audit, rejects, batches, runs, meta
    pd.testing.assert_frame_equal(_forms(engine_w), _forms(engine_b))
    assert_same_outputs(home_w, home_b)
    assert (home_b / "out" / "reports" / dates[0] / OUTPUTS_MARKER).exists()


def test_the_dates_after_a_first_date_in_bins_run_as_after_the_whole(two_homes):
    (home_w, engine_w, settings_w), (home_b, engine_b, settings_b) = two_homes["whole"], two_homes["bins"]
    dates = landed_dates(home_w)
    for settings in (settings_w, settings_b):
        results = run_dates(settings, dates)
        assert all(r.committed for d, r in results.items() if d != dates[0])
    assert_same(snapshot(engine_w), snapshot(engine_b))
    pd.testing.assert_frame_equal(_forms(engine_w), _forms(engine_b))
    assert_same_outputs(home_w, home_b)


def test_bins_take_each_row_of_a_record_together_and_returns_in_the_first(tmp_path):
    """Rows of one record share its bin (keys trimmed, as applying trims them); a record without roles goes by
    its key's hash; every return to bin 0; each bin's rows come back from its spill file as staged."""
    from types import SimpleNamespace

    key = binned.TABLES["hukou"].key
    pd.DataFrame({key: ["A", "B", " A", "C"], "XM": ["x", "y", "z", "w"]}).to_parquet(tmp_path / "h.parquet")
    pd.DataFrame({"RWBH": ["1", "2"]}).to_parquet(tmp_path / "r.parquet")
    pd.DataFrame({"key": ["D"]}).to_parquet(tmp_path / "h.parquet.rejects")
    staged = SimpleNamespace(files=[
        SimpleNamespace(status="staged", table="hukou", batch_id="b", line_in_manifest=1, parquet="h.parquet"),
        SimpleNamespace(status="staged", table=binned.RETURN_TABLE, batch_id="b", line_in_manifest=2, parquet="r.parquet"),
        SimpleNamespace(status="replay", table="hukou", batch_id="c", line_in_manifest=1, parquet="gone.parquet")])
    rows = binned.StagedRows(tmp_path, staged)
    assert sorted(rows) == ["b__1", "b__1#rejects", "b__2"] and "c__1" not in rows
    assert list(rows["b__1"]["XM"]) == ["x", "y", "z", "w"]  # read when asked for
    bin_of_record = pd.Series([3, 1], index=["hukou|A", "hukou|B"])
    bins = binned.row_bins(np.array(["A", "B", "A", "C"], dtype=object), "hukou", bin_of_record, 5)
    assert list(bins[:3]) == [3, 1, 3] and 0 <= bins[3] < 5
    rows.spill(bin_of_record, 5)
    got = {b: rows.of_bin(b) for b in range(5)}
    assert list(got[3]["b__1"]["XM"]) == ["x", "z"] and list(got[1]["b__1"]["XM"]) == ["y"]
    assert list(got[int(bins[3])]["b__1"]["XM"])[-1] == "w"
    assert sum(len(g["b__1"]) for g in got.values()) == 4
    assert list(got[0]["b__2"]["RWBH"]) == ["1", "2"] and all(len(got[b]["b__2"]) == 0 for b in range(1, 5))
    assert all(list(g["b__1#rejects"]["key"]) == ["D"] for g in got.values())
    rows.drop_spill()
    assert not (tmp_path / "bins").exists()
