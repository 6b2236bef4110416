"""Whole-city work in bins (linkage/bins.py): components keep what reads together, bins keep components whole."""
from __future__ import annotations

import numpy as np

from linkage.bins import components, pack


def test_rows_sharing_any_grouping_are_one_component_transitively():
    person = np.array(["P1", "P1", "", "P2", "", ""], dtype=object)
    record = np.array(["", "R1", "R1", "", "", "R2"], dtype=object)
    ids = np.array(["", "", "", "X", "X", ""], dtype=object)
    comp = components(person, record, ids)
    assert comp[0] == comp[1] == comp[2]  # P1 joins rows 0-1, record R1 joins 1-2
    assert comp[3] == comp[4] != comp[0]  # ID X
    assert len(set(comp)) == 3  # "" joins nothing: row 5 alone
    joined = components(person, record, ids, pairs=(np.array([2]), np.array([4])))
    assert len(set(joined)) == 2 and joined[0] == joined[3]


def test_bins_hold_whole_components_and_stay_near_their_limit():
    rng = np.random.default_rng(5)
    comp = rng.integers(0, 400, 5_000)  # 400 components of about 12 rows
    comp[:300] = 999  # and one of 300+ rows
    bins = pack(comp, limit=500)
    for c in np.unique(comp):
        assert len(set(bins[comp == c])) == 1  # a component is never cut
    sizes = np.bincount(bins)
    assert sizes.min() > 0 and len(sizes) >= len(comp) // 500
    largest_part = np.bincount(comp).max()
    assert sizes.max() <= 500 + largest_part
    assert (pack(comp, limit=10**9) == 0).all()
    assert len(pack(np.zeros(0, dtype=np.int64), 10)) == 0
