"""link_roles on a generated city with ground truth: quality targets, link methods where the generator
put their cases, RKID stability across re-runs and days, decisions."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from linkage_quality import KEY, anomaly_recall, load_sources, pair_metrics, truth_roles  # noqa: E402

from linkage.link import link_roles, load_config  # noqa: E402
from linkage.roles import build_roles  # noqa: E402


@pytest.fixture(scope="module")
def city(city_factory):
    root = city_factory(persons=3000, days=3, seed=7)  # shared with the pipeline tests
    dates = sorted({p.parent.name for p in (root / "landing").glob("*/*/manifest.json")})
    cfg = load_config()
    seen: set = set()
    src0 = load_sources(root, dates[0], {}, seen)
    roles0 = build_roles(src0, dates[0])
    res0 = link_roles(roles0, None, None, None, dates[0], cfg)
    src1 = load_sources(root, dates[1], src0, seen)
    roles1 = build_roles(src1, dates[1])
    res1 = link_roles(roles1, res0.persons, res0.links, None, dates[1], cfg)
    return {"root": root, "dates": dates, "cfg": cfg, "roles0": roles0, "res0": res0, "roles1": roles1, "res1": res1,
            "truth0": truth_roles(root, dates[0]), "truth1": truth_roles(root, dates[1])}


def test_quality_targets(city):
    for res, truth in ((city["res0"], city["truth0"]), (city["res1"], city["truth1"])):
        m = pair_metrics(res.links, truth)
        assert m["roles"] == len(res.links) == len(truth)
        assert m["precision"] >= 0.999, m
        assert m["recall"] >= 0.995, m
        assert m["possible_share"] <= 0.01, m


def _by_code(links, truth, code):
    t = truth[truth["anomalies"].str.split(";").apply(lambda c: code in c)]
    return links.merge(t, on=KEY)


def test_methods_where_the_generator_put_their_cases(city):
    links, truth = city["res0"].links, city["truth0"]
    clean = links.merge(truth[truth["anomalies"] == ""], on=KEY)
    assert (clean["PPFS"] == "ID_EXACT").mean() > 0.97
    for code in ("ID_15", "ID_LOWER_X", "ID_FULLWIDTH", "ID_SPACE"):
        got = _by_code(links, truth, code)
        assert len(got) and (got["PPFS"] == "ID_NORMALIZED").all(), code
    for code in ("ID_TYPO", "ID_TRANSPOSE", "ID_EXCEL_000", "ID_EXCEL_SCI"):
        got = _by_code(links, truth, code)
        assert len(got) and (got["PPFS"] == "ID_REPAIRED").mean() >= 0.8, (code, got["PPFS"].value_counts())
    got = _by_code(links, truth, "ID_MISSING")
    assert (got["PPFS"] == "FUZZY").mean() >= 0.9
    got = _by_code(links, truth, "ID_MISMATCH")
    assert len(got) and got["PPFS"].isin(["FUZZY", "POSSIBLE", "UNMATCHED"]).all()
    # every damaged role sits with its true person
    ar = anomaly_recall(links, truth).set_index("anomaly")
    missed = ar["roles"] - ar["with_person"]
    assert (missed <= (0.05 * ar["roles"]).clip(lower=1)).all(), ar  # small samples: one miss allowed
    assert ar["with_person"].sum() / ar["roles"].sum() >= 0.99, ar
    # 重号: the two police persons sharing one number are two RKIDs
    dup = _by_code(links, truth, "DUP_ID")
    assert len(dup) >= 2
    assert dup.groupby("person_id")["RKID"].nunique().max() == 1
    assert dup["RKID"].nunique() == dup["person_id"].nunique()
    # a role founds a person without an ID link only when it has no usable ID of its own
    roles = city["roles0"].merge(links, on=KEY)
    un = roles[roles["PPFS"].isin(["UNMATCHED", "FUZZY", "POSSIBLE"])]
    assert len(un) and (~un["id_status"].isin(["VALID18", "VALID15", "OTHER_DOC"])
                        | un["YWZJ"].isin(_by_code(links, truth, "ID_MISMATCH")["YWZJ"])).all()
    assert {"ID_EXACT", "ID_NORMALIZED", "ID_REPAIRED", "FUZZY"} <= set(links["PPFS"])


def test_rerun_and_next_day_keep_rkids(city):
    cfg, d0 = city["cfg"], city["dates"][0]
    res0 = city["res0"]
    shuffled = city["roles0"].sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = link_roles(shuffled, None, None, None, d0, cfg)
    pd.testing.assert_frame_equal(res0.links, again.links)
    pd.testing.assert_frame_equal(res0.persons, again.persons)
    # the next day: a role still there keeps its RKID unless its true person changed
    res1 = city["res1"]
    both = res1.links.merge(res0.links, on=KEY, suffixes=("", "_0"))
    t0 = city["truth0"][KEY + ["person_id"]]
    t1 = city["truth1"][KEY + ["person_id"]]
    both = both.merge(t0, on=KEY).merge(t1, on=KEY, suffixes=("_0", ""))
    same_person = both[both["person_id"] == both["person_id_0"]]
    assert (same_person["RKID"] == same_person["RKID_0"]).mean() >= 0.999
    # no RKID of day 0 disappears: every one is still in persons (live or retired with a pointer)
    p1 = res1.persons.set_index("RKID")
    assert set(res0.persons["RKID"]) <= set(p1.index)
    retired = p1[p1["status"] == "retired"]
    assert retired["merged_into"].isin(p1.index[p1["status"] == "live"]).all()
    # a re-run of day 1 on day 0's state changes nothing
    rerun = link_roles(city["roles1"], res0.persons, res0.links, None, city["dates"][1], cfg)
    pd.testing.assert_frame_equal(res1.links, rerun.links)


def test_decisions_on_the_city(city):
    cfg, d1 = city["cfg"], city["dates"][1]
    res1 = city["res1"]
    links = res1.links
    fuzzy = links[links["PPFS"] == "FUZZY"].iloc[0]
    exact = links[(links["PPFS"] == "ID_EXACT") & (links["BH"] == "resident")].iloc[0]
    other = links[(links["RKID"] != exact["RKID"]) & (links["BH"] == "hukou")].iloc[0]
    decisions = pd.DataFrame([
        {**{k: fuzzy[k] for k in KEY}, "RKID": fuzzy["RKID"], "decision": "NOT_SAME", "RWBH": "R1", "decided": d1},
        {**{k: exact[k] for k in KEY}, "RKID": other["RKID"], "decision": "SAME", "RWBH": "R2", "decided": d1},
    ])
    res = link_roles(city["roles1"], res1.persons, res1.links, decisions, d1, cfg)
    ln = res.links.set_index(KEY)
    assert ln.loc[tuple(fuzzy[k] for k in KEY), "RKID"] != fuzzy["RKID"]
    row = ln.loc[tuple(exact[k] for k in KEY)]
    assert (row["RKID"], row["PPFS"], row["PPDF"]) == (other["RKID"], "MANUAL", 1.0)
    # everybody else is where they were
    rest = res.links.merge(links, on=KEY, suffixes=("", "_prev"))
    moved = rest[rest["RKID"] != rest["RKID_prev"]]
    assert len(moved) == 2
