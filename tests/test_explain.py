"""Every fuzzy link explained (issue 14, item 4): the comparisons behind a FUZZY/POSSIBLE link's score are
kept with the link (`PPMX`), told to a clerk in the FUZZY_CANDIDATE task's DBXX and drawn as a waterfall
by `popbase explain`."""
from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from catalog.base import LINK_COLUMNS
from linkage import explain as ex
from linkage import fuzzy as fz
from linkage.base import role_keys
from tests.test_link import ID_A, ID_B, hukou, link, load_config, mkid, resident, rk, roles_of
from verification.states import evaluate_states


def _log2_odds(p: float) -> float:
    return math.log2(p) - math.log2(1.0 - p)


def _adds_up(total: float, ppdf: float) -> bool:
    """`total` bits are the log2 odds of the score `ppdf` within rounding: of the score (6 decimals) and
    of the bits (2 decimals, up to 9 terms)."""
    lo, hi = _log2_odds(max(ppdf - 5e-7, 1e-12)), _log2_odds(min(ppdf + 5e-7, 1 - 1e-12))
    return lo - 0.05 <= total <= hi + 0.05


def _grey(lower: float = 0.5) -> dict:
    """The configuration with nothing sure enough: every fuzzy link is POSSIBLE (a FUZZY_CANDIDATE task)."""
    cfg = copy.deepcopy(load_config())
    cfg["fuzzy"]["thresholds"] = {"upper": 1.01, "lower": lower}
    return cfg


def _one_candidate():
    """A resident record without an ID: the same name as a police record, its birth date one digit off,
    another address in the same county. Nobody else comes near."""
    return roles_of(
        hukou=[hukou("H1", "张伟", ID_A, "19850302"),
               hukou("H2", "李娜", ID_B, "19900101", xb="2", addr="玄武区中山路2号"),
               hukou("H3", "王强", mkid("320104", "19700515", "781"), "19700515", region="320104", addr="秦淮区长江路3号")],
        resident=[resident("R1", "张伟", "", "19850312", addr="玄武区北京东路40号")],
    )


def test_every_level_of_every_comparison_is_labelled_in_both_languages():
    for f in fz.FEATURES:
        assert len(fz.LEVEL_LABELS[f]) == len(fz.LEVEL_LABELS_ZH[f]) == fz.N_LEVELS[f], f
        assert all(fz.LEVEL_LABELS_ZH[f]) and f in fz.FEATURE_LABELS
    # a clerk's label names its comparison, so that a list of them reads as a sentence
    assert fz.LEVEL_LABELS_ZH["birth"][2].startswith("出生日期差一位") and fz.LEVEL_LABELS_ZH["name"][5] == "姓名相同"


def test_a_candidate_person_is_weighed_by_its_best_pair_ties_to_the_first_record():
    cand = pd.DataFrame({"q": [7, 7, 7, 7, 3], "entity": [1, 1, 1, 2, 1], "t": [12, 10, 11, 20, 10],
                         "bits": [4.0, 4.0, 1.0, -2.0, 0.5]})
    got = fz.best_pairs(cand)
    assert got[["q", "entity", "t", "bits"]].values.tolist() == [[3, 1, 10, 0.5], [7, 1, 10, 4.0], [7, 2, 20, -2.0]]


@pytest.mark.parametrize("cfg", [None, _grey()], ids=["fuzzy", "possible"])
def test_a_fuzzy_link_lists_every_comparison_and_its_bits_add_up_to_the_score(cfg):
    res = link(_one_candidate(), cfg=cfg)
    r1 = rk(res, "resident", "R1")
    assert r1["RKID"] == rk(res, "hukou", "H1")["RKID"] and r1["PPFS"] in ("FUZZY", "POSSIBLE")
    e = ex.decode(r1["PPMX"])
    assert e["with"] == "police|hukou|H1|SELF"
    for f in fz.FEATURES:  # every comparison of the model, with a level it has a label for, and bits
        level, bits = e[f]
        assert -1 <= level < fz.N_LEVELS[f] and isinstance(bits, float), f
    assert (e["name"][0], e["birth"][0], e["sex"][0], e["region"][0]) == (5, 2, 1, 2)
    assert e["id"] == [-1, 0.0] and e["partner"] == [-1, 0.0]  # nothing to compare: no bits
    # the bits are the model's: the level's weight (no term frequencies in so small a city)
    for f in ("birth", "sex", "region", "address"):
        assert e[f][1] == pytest.approx(res.model.level_bits(f)[e[f][0]], abs=0.005), f
    # one candidate: nobody takes a share, and prior + bits are the score's log2 odds
    assert e["others"] == 0.0
    total = e["prior"] + sum(e[f][1] for f in fz.FEATURES)
    assert 0.6 < r1["PPDF"] < 0.999999
    assert _adds_up(total, r1["PPDF"]), (total, r1["PPDF"])
    steps = ex.waterfall(r1["PPMX"])
    assert [s["step"] for s in steps] == ["prior", *fz.FEATURES, "others"]
    assert steps[-1]["p"] == pytest.approx(r1["PPDF"], abs=1e-3)
    # ID links, unmatched roles: no explanation
    assert (res.links["PPMX"] == "").to_numpy().tolist() == (~res.links["PPFS"].isin(ex.EXPLAINED)).tolist()


def test_other_candidates_take_their_share_and_it_is_said():
    """Two police records of twins on paper (one name, one birth date, other IDs): a record without an ID
    matches both equally; the explanation's `others` is what the second takes away."""
    roles = roles_of(
        hukou=[hukou("H1", "张伟", ID_A, "19850302"),
               hukou("H2", "张伟", mkid("320102", "19850302", "457"), "19850302", addr="玄武区中山路9号")],
        resident=[resident("R1", "张伟", "", "19850302", addr="玄武区北京东路40号")],
    )
    res = link(roles, cfg=_grey(lower=0.3))
    r1 = rk(res, "resident", "R1")
    assert r1["PPFS"] == "POSSIBLE" and r1["PPDF"] <= 0.5
    e = ex.decode(r1["PPMX"])
    assert e["others"] < -0.5
    total = e["prior"] + sum(e[f][1] for f in fz.FEATURES) + e["others"]
    assert _adds_up(total, r1["PPDF"]), (total, r1["PPDF"])


def test_the_fuzzy_candidate_task_says_the_comparisons_in_chinese():
    from exchange.taskfile import _task_frame

    roles = _one_candidate()
    res = link(roles, cfg=_grey())
    states = evaluate_states(roles, res.links, {}, "20260301")
    task = states[states["HCZT"] == "FUZZY_CANDIDATE"]
    assert len(task) == 1 and task.iloc[0]["YWZJ"] == "R1"
    dbxx = task.iloc[0]["DBXX"]
    assert "疑似人员" in dbxx and "姓名 张伟" in dbxx  # the candidate's values, as before
    assert "比对依据(与户籍人口 RYBH=H1比对" in dbxx
    for label in ("姓名相同(+", "出生日期差一位或相邻两位颠倒(+", "性别相同(+", "所在地区划相同(+", "地址不同(\u2212"):
        assert label in dbxx, dbxx
    assert "证件号码" not in dbxx.split("比对依据")[1]  # a comparison nobody could make is not listed
    # the task file writes it as it is: it starts with no formula character
    assert _task_frame(task.reset_index(drop=True))["DBXX"].iloc[0] == dbxx


@pytest.mark.parametrize("addr, level, label", [
    ("玄武区中山路1号", 4, "地址相同(+"),
    ("江苏省南京市中山路1号", 3, "地址基本相同(仅词序、错字、空格或省市区写法不同)(+"),  # H1's, written otherwise
    ("玄武区中山路1号3幢", 2, "地址相近(大部分相同)(+"),
    ("玄武区中山路7号", 1, "地址部分相同("),
], ids=["same", "same-words", "most", "some"])
def test_the_clerk_reads_how_the_addresses_agree(addr, level, label):
    """The address comparison's levels (token-level, `linkage.address`) reach the clerk's 比对依据 in
    Chinese: H1 lives at 玄武区中山路1号, the record without an ID gives its address as below."""
    roles = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302"), hukou("H2", "李娜", ID_B, "19900101", xb="2")],
                     resident=[resident("R1", "张伟", "", "19850312", addr=addr)])
    res = link(roles, cfg=_grey())
    r1 = rk(res, "resident", "R1")
    assert r1["RKID"] == rk(res, "hukou", "H1")["RKID"] and r1["PPFS"] == "POSSIBLE"
    assert ex.decode(r1["PPMX"])["address"][0] == level
    states = evaluate_states(roles, res.links, {}, "20260301")
    dbxx = states[states["HCZT"] == "FUZZY_CANDIDATE"].iloc[0]["DBXX"]
    assert label in dbxx.split("比对依据")[1], dbxx


def _base_with_links(tmp_path, links: pd.DataFrame) -> str:
    """A SQLite base holding only these links (as `exchange.process` writes them)."""
    from store import db

    url = f"sqlite:///{tmp_path / 'popbase.db'}"
    frame = links.assign(role_key=role_keys(links), role_fp="x",
                         PPDF=links["PPDF"].map(lambda x: f"{x:.4f}")).reindex(columns=LINK_COLUMNS)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        db.sync_frame(conn, db.links, pd.DataFrame(), frame)
    engine.dispose()
    return url


def test_popbase_explain_draws_the_waterfall_or_says_id(tmp_path, monkeypatch):
    from pipelines.cli import main

    card = ID_B + "11"  # a disability card number: the citizen ID and two digits
    roles = pd.concat([_one_candidate(), roles_of(disabled=[dict(
        CJRZH=card, XM="李娜", GMSFHM=ID_B, XB="2", MZ="01", CSRQ="19900101", CJLB="1", CJDJ="1",
        HJDZ_XZQH="320102", HJDZ="玄武区中山路2号", JZDZ="玄武区中山路2号", ZT="1")])], ignore_index=True)
    res = link(roles)
    url = _base_with_links(tmp_path, res.links)
    monkeypatch.setenv("POPBASE_HOME", str(tmp_path))
    monkeypatch.setenv("POPBASE_DB_URL", url)
    runner = CliRunner()

    got = runner.invoke(main, ["explain", "--role", "civil|resident|R1|SELF"])
    assert got.exit_code == 0, got.output
    out = got.output
    r1 = rk(res, "resident", "R1")
    assert f"person   {r1['RKID']}" in out and "method   FUZZY" in out
    for f in ("prior", *fz.FEATURES, "others"):  # one line per step, with its label
        assert any(line.startswith(f + " ") for line in out.splitlines()), f
    assert "exact (姓名相同)" in out and "one digit off" in out and "出生日期差一位" in out
    assert "match probability" in out and ID_A not in out

    got = runner.invoke(main, ["explain", "--role", f"disability|disabled|{card}|SELF"])
    assert got.exit_code == 0, got.output
    assert "linked by ID number" in got.output and "prior" not in got.output
    assert ID_B not in got.output and card not in got.output  # the card number holds the citizen ID: masked

    got = runner.invoke(main, ["explain", "--role", "civil|resident|NOPE|SELF"])
    assert got.exit_code != 0 and "no link" in got.output


def test_a_base_from_before_explanations_gets_the_column_and_relinks_once(tmp_path):
    """An old base: `links` without PPMX gets the column (empty) when it is opened, and its first date
    links the whole city (`exchange.process._explained`), so that no fuzzy link keeps an empty one."""
    import sqlalchemy as sa

    from exchange.process import _explained
    from store import db

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE links (role_key TEXT PRIMARY KEY, BM TEXT, BH TEXT, YWZJ TEXT, JS TEXT, "
                             "RKID TEXT, PPFS TEXT, PPDF TEXT, role_fp TEXT)")
        conn.exec_driver_sql("INSERT INTO links VALUES ('civil|resident|R1|SELF', 'civil', 'resident', 'R1', 'SELF', "
                             "'RK1', 'FUZZY', '0.9700', 'f')")
    old.dispose()
    engine = db.make_engine(url)
    with engine.connect() as conn:
        links = db.read_frame(conn, db.links)
    engine.dispose()
    assert links["PPMX"].tolist() == [""]
    assert not _explained(links) and not _explained(links.drop(columns="PPMX"))
    assert _explained(links.assign(PPMX='{"prior":-1.0}')) and _explained(links.assign(PPFS="ID_EXACT"))
