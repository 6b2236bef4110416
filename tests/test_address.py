"""Token-level address comparison (issue 14, item 3): declared levels read from the configuration, words of
Latin and Chinese addresses, a typo or words in another order keep the evidence, and a record links through
`link_roles` thanks to it."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from linkage import address as ad
from linkage import explain as ex
from linkage import fuzzy as fz
from linkage.link import link_roles, load_config
from tests.test_latin_names import FAMILY, GIVEN
from tests.test_link import BD, dibao, hukou, rk, roles_of

EXACT, SAME, MOST, SOME, ELSE = 4, 3, 2, 1, 0


def lvl(x: str, y: str, declared=None) -> int:
    return int(ad.address_levels(np.array([ad.normalise(x)], dtype=object), np.array([ad.normalise(y)], dtype=object),
                                 declared)[0])


def test_words_of_chinese_and_latin_addresses():
    assert ad.tokens(ad.normalise("江苏省南京市玄武区中山路123号5幢1203室")) == (
        ("江苏省", "南京市", "玄武区"), ("中山路", "123号", "5幢", "1203室"))
    assert ad.tokens(ad.normalise("鼓楼区中山北路5号楼2单元301室")) == (("鼓楼区",), ("中山北路", "5号楼", "2单元", "301室"))
    assert ad.tokens(ad.normalise("新疆维吾尔自治区乌鲁木齐市天山区城关镇前进村12号"))[0] == (
        "新疆维吾尔自治区", "乌鲁木齐市", "天山区")
    assert ad.tokens(ad.normalise("阳光小区５幢")) == ((), ("阳光小区", "5幢"))  # a 小区 is a place; full width folded
    assert ad.tokens(ad.normalise("12 Pinkerton  Circuit, Sec1 Café")) == ((), ("12", "PINKERTON", "CIRCUIT", "SEC", "1", "CAFE"))
    assert ad.first_word(ad.normalise("12 HIGH STREET 2000")) == "HIGH"
    assert ad.first_word(ad.normalise("江苏省南京市玄武区中山路1号")) == "中山路"


def test_levels_of_latin_addresses():
    a = "12 HIGH STREET NEWTOWN 2000 NSW"
    assert lvl(a, "12 high  street newtown 2000 nsw") == EXACT  # case and spacing aside
    assert lvl(a, "12 HIHG STREET NEWTOWN 2000 NSW") == SAME  # one misspelt word
    assert lvl(a, "NEWTOWN 12 HIGH STREET 2000 NSW") == SAME  # words in another order
    assert lvl(a, "12 HIGHSTREET NEWTOWN 2000 NSW") == SAME  # a space lost
    assert lvl(a, "12 HIGH STREET NEWTOWN 0200 NSW") == SAME  # a long number's adjacent digits swapped
    assert lvl(a, "12 HIGH STREET NEWTOWN 2001 NSW") == MOST  # another number is another number
    assert lvl(a, "12 HIGH STREET 2000") == MOST  # a part left out
    assert lvl(a, "40 HIGH STREET OLDTOWN 3000 NSW") == SOME
    assert lvl(a, "7 PARK ROAD RIVERSIDE 4000 QLD") == ELSE  # different addresses
    assert lvl(a, "7 PARK ROAD RIVERSIDE 4000 NSW") == ELSE  # sharing the state alone is not "some"
    assert lvl(a, "") == -1
    # symmetric, as the pairs are compared once whichever side is the query
    for b in ("12 HIHG STREET 2000", "40 HIGH STREET OLDTOWN 3000 NSW", "NEWTOWN 12 HIGH"):
        assert lvl(a, b) == lvl(b, a)


def test_levels_of_chinese_addresses():
    a = "江苏省南京市玄武区中山路123号5幢1203室"
    assert lvl(a, "江苏省南京市玄武区中山路123号5幢1203室") == EXACT
    assert lvl(a, "玄武区中山路123号5幢1203室") == SAME  # the province and city left out
    assert lvl(a, "江苏省南京市玄武区中山路123号5幢1230室") == SAME  # a keying slip in the room number
    assert lvl("珠江路5号", "朱江路5号") == SAME  # an input-method slip: the same sound
    assert lvl(a, "江苏省南京市玄武区中山路123号5幢1204室") == MOST  # the next door is another flat
    assert lvl(a, "江苏省南京市玄武区中山路123号") == MOST  # building and room left out
    assert lvl(a, "江苏省南京市玄武区中山路40号") == SOME  # the same street
    assert lvl(a, "江苏省南京市玄武区北京东路40号2幢301室") == ELSE  # the city and district alone do not count
    assert lvl(a, "安徽省阜阳市临泉县城关镇前进村12号") == ELSE
    # the same street and number in another district is another address: at most "some"
    assert lvl("玄武区中山路1号", "中山路1号") == SAME
    assert lvl("玄武区中山路1号", "秦淮区中山路1号") == SOME
    assert lvl("中山路1号", "中山北路1号") == SOME  # 中山北路 is another road than 中山路


def test_the_comparison_is_the_declared_one():
    cfg = load_config()
    declared = cfg["fuzzy"]["address_levels"]
    assert [d["level"] for d in declared] == [EXACT, SAME, MOST, SOME, ELSE] and declared[-1]["rule"] == "else"
    # the labels of the explanations are the declaration's, in both languages
    assert fz.LEVEL_LABELS["address"] == [next(d["label"] for d in declared if d["level"] == i) for i in range(5)]
    assert fz.LEVEL_LABELS_ZH["address"] == ["地址不同", "地址部分相同", "地址相近(大部分相同)",
                                             "地址基本相同(仅词序、错字、空格或省市区写法不同)", "地址相同"]
    assert fz.N_LEVELS["address"] == len(cfg["fuzzy"]["default_m"]["address"]) == 5
    # the engine reads it: another threshold in the configuration changes the level
    strict = copy.deepcopy(declared)
    strict[2]["min"] = 0.95
    a, b = "12 HIGH STREET NEWTOWN 2000 NSW", "12 HIGH STREET 2000"
    assert lvl(a, b, tuple(declared)) == MOST and lvl(a, b, tuple(strict)) == SOME
    with pytest.raises(ValueError):
        ad.compile_levels([{"level": 0, "rule": "nearby"}])
    with pytest.raises(ValueError):
        ad.compile_levels((0.7, 0.4))  # the bigram cuts of configuration 1.2.0 are not a declaration


def _people(seed: int, n: int = 1200):
    """n persons without IDs in the police register; half of them again in dibao (FEBRL-like): the name
    tokens swapped, now and then a name word replaced, a misspelt or reordered address word, the birth
    date missing."""
    rng = np.random.default_rng(seed)
    hk, db = [], []
    for i in range(n):
        birth = f"{rng.integers(1940, 2005)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
        sur, giv = FAMILY[rng.integers(len(FAMILY))], GIVEN[rng.integers(len(GIVEN))]
        street = FAMILY[rng.integers(len(FAMILY))]
        num, town, post = rng.integers(1, 300), GIVEN[rng.integers(len(GIVEN))] + "VALE", rng.integers(1000, 9999)
        addr = f"{num} {street} STREET {town} {post}"
        hk.append(hukou(f"H{i}", f"{sur} {giv}", "", birth, xb="", region="", addr=addr))
        if i % 2 == 0:
            r = rng.random(3)
            if r[2] < 0.15:
                giv = GIVEN[rng.integers(len(GIVEN))]
            if r[0] < 0.2:
                addr = f"{num} {street[0] + street[2] + street[1] + street[3:]} STREET {town} {post}"
            elif r[0] < 0.3:
                addr = f"{town} {num} {street} STREET {post}"
            db.append(dibao(f"D{i}", f"{giv} {sur}", "", "" if r[1] < 0.1 else birth, xb="", region="", addr=addr))
    return hk, db


def test_a_record_links_through_its_misspelt_address():
    """One name word replaced and no birth date: the name alone does not link the record. With its
    address misspelt and its words reordered it still links, by the address's "same words" level; at
    another address it does not."""
    hk, db = _people(17)
    sur, _ = hk[1]["XM"].split()
    num, street, _, town, post = hk[1]["HJDZ"].split()
    misspelt = f"{town} {num} {street[0] + street[2] + street[1] + street[3:]} STREET {post}"
    assert lvl(hk[1]["HJDZ"], misspelt) == SAME
    near = dibao("N1", f"{sur} ZEBEDEE", "", "", xb="", region="", addr=misspelt)
    far = dibao("N2", f"{sur} ZEBEDEE", "", "", xb="", region="", addr="7 NOWHERE ROAD OTHERVALE 1234")
    res = link_roles(roles_of(hukou=hk, dibao=db + [near, far]), None, None, None, BD, load_config())
    assert res.stats["model"]["source"] == "em"
    n1 = rk(res, "dibao", "N1")
    assert n1["RKID"] == rk(res, "hukou", "H1")["RKID"] and n1["PPFS"] in ("FUZZY", "POSSIBLE"), n1
    assert rk(res, "dibao", "N2")["RKID"] != rk(res, "hukou", "H1")["RKID"]
    # the explanation says so, in both languages
    e = ex.decode(n1["PPMX"])
    assert e["with"].endswith("|H1|SELF") and e["address"][0] == SAME and e["address"][1] > 0
    assert e["birth"] == [-1, 0.0]
    assert "地址基本相同(仅词序、错字、空格或省市区写法不同)(+" in ex.basis_zh(n1["PPMX"])
    step = next(s for s in ex.waterfall(n1["PPMX"]) if s["step"] == "address")
    assert step["label"].startswith("same words") and step["label_zh"].startswith("地址基本相同")
