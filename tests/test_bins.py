"""Whole-city work in bins (linkage/bins.py): components keep what reads together, bins keep components whole."""
from __future__ import annotations

import numpy as np
import pytest

from linkage.bins import components, group_codes, pack


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
    codes = [group_codes(g) for g in (person, record, ids)]  # the cut's groupings, held as codes
    assert list(codes[0] == -1) == [False, False, True, False, True, True] and codes[0][0] == codes[0][1]
    assert (components(*codes) == comp).all()


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


def test_a_city_cut_into_bins_before_linking_links_as_the_whole(city_factory):
    """The components found before linking (ID groups, records, repair candidates, reachable pairs of the
    ID stage's unanchored roles) hold every person whole, and bins of them linked apart with the city's
    model give every role the whole-city link: the premise of the binned historical date (docs/scale.md 2.7)."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from linkage_quality import load_sources

    from linkage.base import role_keys
    from linkage.bins import components_before_linking
    from linkage.link import _canonical, link_roles, load_config
    from linkage.roles import build_roles

    root = city_factory(persons=3000, days=3, seed=7)
    date = sorted({p.parent.name for p in (root / "landing").glob("*/*/manifest.json")})[0]
    cfg = load_config()
    roles = build_roles(load_sources(root, date), date)
    whole = link_roles(roles, None, None, None, date, cfg)
    R = _canonical(roles, cfg["table_order"]).reset_index(drop=True)
    comp = components_before_linking(R, cfg, whole.model, date)
    w = whole.links.set_index(pd.Index(role_keys(whole.links))).reindex(role_keys(R))
    fuzzy = w["PPFS"].isin(["FUZZY", "POSSIBLE"]).to_numpy()
    assert fuzzy.sum() >= 20  # the city has ID-less roles linked by fuzzy evidence, across records
    per_person = pd.Series(comp).groupby(w["RKID"].to_numpy()).nunique()
    assert (per_person == 1).all()  # no person is cut
    assert len(set(comp)) > len(R) // 4  # and the components are small: bins can be cut

    bins = pack(comp, limit=len(R) // 6)
    assert bins.max() >= 5
    parts = [link_roles(R[roles.columns].iloc[np.flatnonzero(bins == b)].reset_index(drop=True), None, None, None,
                        date, cfg, model=whole.model).links for b in range(bins.max() + 1)]
    binned = pd.concat(parts, ignore_index=True)
    b = binned.set_index(pd.Index(role_keys(binned))).reindex(w.index)
    assert (b["RKID"].to_numpy() == w["RKID"].to_numpy()).all()
    assert (b["PPFS"].to_numpy() == w["PPFS"].to_numpy()).all()
    assert np.allclose(b["PPDF"].to_numpy(dtype=float), w["PPDF"].to_numpy(dtype=float))


def test_the_roles_made_a_table_at_a_time_are_the_city_in_founding_order(city_factory):
    """`canonical_roles_by_table` (the binned date's cut: each table's roles sorted as they come, joined a
    column at a time) gives the frame `canonical_roles` gives on all the tables at once, whatever order the
    tables and their rows come in, and its equal strings are one object."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from linkage_quality import load_sources

    from linkage.link import canonical_roles, canonical_roles_by_table, load_config
    from linkage.roles import build_roles

    root = city_factory(persons=3000, days=3, seed=7)
    date = sorted({p.parent.name for p in (root / "landing").glob("*/*/manifest.json")})[0]
    cfg = load_config()
    sources = load_sources(root, date)
    per_table = [build_roles({t: f}, date) for t, f in sources.items()]
    assert len(per_table) >= 5
    whole = canonical_roles(pd.concat(per_table, ignore_index=True), cfg)
    rng = np.random.default_rng(5)
    shuffled = [per_table[i].sample(frac=1.0, random_state=i) for i in rng.permutation(len(per_table))]
    got = canonical_roles_by_table(iter(shuffled), cfg)
    pd.testing.assert_frame_equal(got, whole)
    birth = got["birth"].to_numpy(dtype=object)
    assert len({id(v) for v in birth}) == len(set(birth))  # one object per distinct birth date
    mixed = pd.concat(per_table[:2], ignore_index=True)
    with pytest.raises(ValueError, match="one table per part"):
        canonical_roles_by_table(iter([mixed]), cfg)
