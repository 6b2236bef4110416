"""Latin-script names as first-class names: tokens in any order, typos, blocking keys that survive them,
and the Chinese names' behaviour left as it was."""
from __future__ import annotations

import numpy as np
import pandas as pd

from linkage import fuzzy as fz
from linkage import names as nm
from linkage.blocks import role_blocks
from linkage.link import _canonical, link_roles, load_config
from linkage.base import role_keys
from tests.test_link import BD, dibao, hukou, link, mkid, rk, roles_of


def test_latin_levels():
    f = nm.feature_level
    assert f("JOHN SMITH", "JOHN SMITH") == nm.EXACT
    assert f("JOSÉ GARCÍA", "JOSE GARCIA") == nm.EXACT  # accents folded
    assert f("O'BRIEN PAT", "OBRIEN PAT") == nm.EXACT
    assert f("SMITH JOHN", "JOHN SMITH") == nm.LATIN_REORDERED
    assert f("ZHANG WEI", "ZHANGWEI") == nm.LATIN_REORDERED  # the same letters spaced otherwise
    assert f("JOHN SMITH", "JON SMITH") == nm.LATIN_TYPO_HIGH
    assert f("SMITH JOHN", "JON SMITH") == nm.LATIN_TYPO_HIGH  # a typo and the tokens swapped
    assert f("BOULTER HAR RISN", "BOULTER HARRISON") == nm.LATIN_TYPO_HIGH  # a space inside a token
    assert f("JOHN SMITH", "JOHN SMYTH") == nm.LATIN_TYPO_MEDIUM
    assert f("JOHN SMITH", "SMITH") == nm.LATIN_PART_MISSING
    assert f("J SMITH", "JOHN SMITH") == nm.LATIN_INITIALS
    assert f("JANE SMITH", "JOHN SMITH") == nm.LATIN_ONE_PART
    assert f("JOHN SMITH", "PETER JONES") == nm.DIFFERENT
    assert f("JOHN SMITH", "") == nm.MISSING
    # every level is declared with a label
    assert {lvl for lvl, _, _ in nm.LATIN_LEVELS} == {nm.EXACT, nm.DIFFERENT, *range(nm.EXACT + 1, nm.N_NAME_LEVELS)}
    assert len(fz.LEVEL_LABELS["name"]) == fz.N_LEVELS["name"] == nm.N_NAME_LEVELS
    # the ordinal scale the ID rules use: swapped tokens are the same name, a typo stays SIMILAR
    assert nm.compare("SMITH JOHN", "JOHN SMITH") == nm.EQUIVALENT
    assert nm.compare("JOHN SMITH", "JON SMITH") == nm.SIMILAR
    assert nm.compare("JOHN SMITH", "PETER JONES") == nm.DIFFERENT


def test_chinese_names_keep_their_levels_and_keys():
    a = ["张伟", "张□", "买买提·艾力", "张伟", "曾伟", "张伟", "张小伟", "张小伟", "张伟", "王芳", "", "□□"]
    b = ["张伟", "张伟", "买买提艾力", "ZHANG WEI", "ZENG WEI", "张玮", "张小强", "张伟小", "张强", "李明", "张伟", "张伟"]
    ordinal = nm.name_levels(a, b)
    assert ordinal.tolist() == [5, 4, 4, 4, 4, 3, 2, 2, 1, 0, -1, -1]
    assert nm.name_feature_levels(a, b).tolist() == ordinal.tolist()  # the model weighs Chinese names as before
    keys = nm.name_blocking_keys(pd.Series(["曾伟", "□伟", "欧阳娜娜", "JOHN SMITH", "SMITH"]))
    assert keys["surname"].tolist() == ["曾", "", "欧阳", "JOHN", "SMITH"]
    assert keys["given"].tolist() == ["伟", "伟", "娜娜", "SMITH", "SMITH"]
    assert keys["pinyin"].tolist() == ["zengwei", "", "ouyangnana", "johnsmith", "smith"]
    for c in ("tokens", "initials", "phonetic", "latin"):  # Latin-only keys: Chinese names are in no such block
        assert keys[c].tolist()[:3] == ["", "", ""]
    assert keys["tokens"].tolist()[3:] == ["JOHN SMITH", "SMITH"]
    assert keys["initials"].tolist()[3:] == ["JS", "S"]


def test_latin_blocking_keys_ignore_token_order():
    k = nm.name_blocking_keys(pd.Series(["JOHN SMITH", "SMITH JOHN", "Smith  John", "SMITH JOHM"]))
    for c in ("surname", "given", "tokens", "initials", "phonetic"):
        assert k[c].iloc[0] == k[c].iloc[1] == k[c].iloc[2], c
    # a typo past the first letter keeps the initials and one of the two tokens
    assert k["initials"].iloc[3] == "JS" and k["given"].iloc[3] == "SMITH"


def test_prepared_forms_keep_the_latin_keys():
    roles = pd.DataFrame({"name_key": ["JOHN SMITH", "张伟"], "birth": ["19800101", ""], "id_birth": ["", "19850302"],
                          "sex": ["1", ""], "id_sex": ["", "1"], "region": ["", ""], "address": ["12 HIGH ST 2000", ""]})
    P = fz.prepare(roles, np.zeros(2, bool), np.full(2, "", object), np.full(2, "", object))
    assert P.cols["anum"].tolist() == ["12 2000", ""] and P.cols["bym"].tolist() == ["198001", ""]
    Q = P.with_forms(np.array([1]), np.array(["19850302"], dtype=object), np.array(["1"], dtype=object),
                     np.array(["V"], dtype=object), np.array(["x"], dtype=object))
    assert Q.cols["tokens"].tolist() == ["JOHN SMITH", "", ""] and Q.cols["bym"].tolist() == ["198001", "", "198503"]
    for f in ("tokens", "initials", "latin", "anum"):
        c, _ = Q.codes(f)
        assert (c[2] == c[1]) and (c[0] >= 0) == (f != "") and c[1] == -1


def test_swapped_passport_name_is_one_person():
    """Two police records with one passport, the name once written surname first: one person, not DUP_ID."""
    roles = roles_of(temp=[dict(ZZBH="T1", XM="JOHN SMITH", ZJLX="414", ZJHM="E1234567", XB="1", CSRQ="19800101", ZT="1"),
                           dict(ZZBH="T2", XM="Smith John", ZJLX="414", ZJHM="E1234567", XB="1", CSRQ="19800101", ZT="1")])
    res = link(roles)
    assert rk(res, "temp", "T1")["RKID"] == rk(res, "temp", "T2")["RKID"]


GIVEN = ("JOHN MICHAEL DAVID JAMES ROBERT EMILY SARAH JESSICA MARY LINDA OLIVER GEORGE HARRY THOMAS AMELIA ISLA "
         "OLIVIA GRACE LOUIS GABRIEL HUGO JULES JADE LOUISE EMMA ALICE CHLOE IVAN OLGA ELENA IRINA LUKAS ANNA "
         "SOPHIE LAURA LENA MARIE").split()
FAMILY = ("SMITH JOHNSON WILLIAMS BROWN JONES MUELLER SCHMIDT SCHNEIDER FISCHER WEBER TAYLOR DAVIES EVANS WILSON "
          "ROBERTS MARTIN BERNARD DUBOIS PETIT IVANOV SMIRNOV KUZNETSOV POPOV ROSSI RUSSO FERRARI ESPOSITO TREMBLAY "
          "ROY KOWALSKI NOWAK LEWIS WALKER HALL ALLEN YOUNG KING WRIGHT SCOTT GREEN BAKER ADAMS NELSON HILL CAMPBELL "
          "MITCHELL CARTER PHILLIPS TURNER PARKER COLLINS EDWARDS STEWART MORRIS MURPHY COOK ROGERS MORGAN").split()


def _latin_city(n: int = 1500, seed: int = 5):
    """n persons with Latin names and citizen IDs in the police register; half of them again in dibao with
    their ID, now and then a typo or the tokens swapped, some at another address (the labelled pairs teach
    the model)."""
    rng = np.random.default_rng(seed)
    people = []
    for i in range(n):
        birth = f"{rng.integers(1940, 2005)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
        name = f"{FAMILY[rng.integers(len(FAMILY))]} {GIVEN[rng.integers(len(GIVEN))]}"
        people.append((f"H{i}", name, mkid("320102", birth, f"{i % 1000:03d}"), birth, str(1 + i % 2),
                       f"{rng.integers(1, 300)} {FAMILY[rng.integers(len(FAMILY))]} STREET {rng.integers(1000, 9999)}"))
    hk = [hukou(k, x, g, b, xb=s, addr=a) for k, x, g, b, s, a in people]
    db = []
    for k, x, g, b, s, a in people[: n // 2]:
        sur, giv = x.split()
        r = rng.random()
        if r < 0.2:
            x = f"{giv} {sur}"
        elif r < 0.4:
            j = int(rng.integers(1, len(giv) - 1))
            x = f"{sur} {giv[:j]}{giv[j + 1]}{giv[j]}{giv[j + 2:]}"
        if rng.random() < 0.3:  # moved since
            a = f"{rng.integers(1, 300)} {FAMILY[rng.integers(len(FAMILY))]} ROAD {rng.integers(1000, 9999)}"
        db.append(dibao("D" + k[1:], x, g, b, xb=s, addr=a))
    return people, hk, db


def test_swapped_tokens_and_typo_link_without_an_id():
    people, hk, db = _latin_city()
    k, name, _, birth, sex, _ = people[1400]  # not in dibao with its ID
    sur, giv = name.split()
    typo = giv[:1] + giv[2] + giv[1] + giv[3:] if len(giv) > 3 else giv + "E"
    # swapped tokens, a typo, no ID, and another address: the name has to carry it
    query = dibao("Q1", f"{typo.lower()} {sur.lower()}", "", birth, xb=sex, addr="77 OTHER ROAD 5555")
    other = dibao("Q2", f"{typo} {sur}", "", "19991231", xb=sex, addr="1 NOWHERE ROAD 1234")  # a namesake
    res = link(roles_of(hukou=hk, dibao=db + [query, other]))
    assert res.stats["model"]["source"] == "labelled"
    q = rk(res, "dibao", "Q1")
    assert q["RKID"] == rk(res, "hukou", k)["RKID"] and q["PPFS"] == "FUZZY", q
    assert rk(res, "dibao", "Q2")["RKID"] != rk(res, "hukou", k)["RKID"]
    # the ID-labelled Latin pairs: the dibao copies with their ID are linked by ID as before
    assert all(rk(res, "dibao", "D" + p[0][1:])["PPFS"] in ("ID_EXACT", "ID_NORMALIZED") for p in people[:10])


def _random_person(rng) -> tuple[str, str, str, str]:
    """(birth date, surname, given name, address) of a made-up person."""
    birth = f"{rng.integers(1940, 2005)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    sur, giv = FAMILY[rng.integers(len(FAMILY))], GIVEN[rng.integers(len(GIVEN))]
    addr = f"{rng.integers(1, 300)} {FAMILY[rng.integers(len(FAMILY))]} STREET {rng.integers(1000, 9999)}"
    return birth, sur, giv, addr


def test_latin_name_links_without_any_id():
    """No ID anywhere (FEBRL-like): the model is trained by EM, its prior estimated from the data, and a
    record with the tokens swapped and a typo still finds the other record of its person."""
    rng = np.random.default_rng(11)
    hk, db = [], []
    for i in range(1200):
        birth, sur, giv, addr = _random_person(rng)
        hk.append(hukou(f"H{i}", f"{sur} {giv}", "", birth, xb="", region="", addr=addr))
        if i == 7:
            giv = giv[:1] + giv[2] + giv[1] + giv[3:]
            db.append(dibao(f"D{i}", f"{giv} {sur}", "", birth, xb="", region="", addr=addr))
        elif i % 2 == 0:
            db.append(dibao(f"D{i}", f"{sur} {giv}", "", birth, xb="", region="", addr=addr))
    res = link(roles_of(hukou=hk, dibao=db))
    assert res.stats["model"]["source"] == "em"
    d7 = rk(res, "dibao", "D7")
    assert d7["RKID"] == rk(res, "hukou", "H7")["RKID"] and d7["PPFS"] in ("FUZZY", "POSSIBLE")
    same = [rk(res, "dibao", f"D{i}")["RKID"] == rk(res, "hukou", f"H{i}")["RKID"] for i in range(0, 1200, 2)]
    assert np.mean(same) > 0.99
    # the prior is the data's: every record is a query, and 2 x 601 of the 1,801 have one match each
    prior = res.stats["model"]["prior_has_match"]
    assert prior["configured"] == 0.5 and abs(prior["estimated"] - 2 * 601 / 1801) < 0.05


def test_latin_passes_index_like_the_others():
    """The new passes are plain configuration: the role index gets a block column for each, and a Chinese
    name is in none of the Latin-only blocks."""
    cfg = load_config()
    roles = _canonical(roles_of(hukou=[hukou("H1", "JOHN SMITH", "", "19800101", addr="12 HIGH ST 2000"),
                                       hukou("H2", "张伟", "", "19850302")]), [])
    frame = role_blocks(roles, role_keys(roles), cfg)
    q = frame[frame["form"] == "Q"].set_index("role_key")
    for name in ("initials_birth", "latin_birth", "tokens", "phonetic", "surname_initials", "latin_address_numbers"):
        col = q[f"bk_{name}"]
        assert col.loc[col.index.str.contains("H1")].iloc[0] is not None, name
        assert col.loc[col.index.str.contains("H2")].iloc[0] is None, name


def test_model_describes_its_levels():
    people, hk, db = _latin_city(1100)
    res = link_roles(roles_of(hukou=hk, dibao=db), None, None, None, BD, load_config())
    d = res.stats["model"]
    assert d["levels"]["name"][nm.LATIN_REORDERED] == "Latin: tokens reordered"
    assert len(d["bits"]["name"]) == nm.N_NAME_LEVELS
    again = fz.FSModel.from_payload(res.model.to_payload())
    assert again.m["name"].tolist() == res.model.m["name"].tolist()


def _idless_day(extra: list[dict] | None = None):
    """1 100 people in the police register without IDs, half of them again in dibao, FEBRL-like: the
    tokens swapped, now and then a typo, a token replaced, the birth date missing, another address."""
    rng = np.random.default_rng(13)
    hk, db = [], []
    for i in range(1100):
        birth, sur, giv, addr = _random_person(rng)
        hk.append(hukou(f"H{i}", f"{sur} {giv}", "", birth, xb="", region="", addr=addr))
        if i % 2 == 0:
            r = rng.random(4)
            if r[0] < 0.15:
                giv = giv[:1] + giv[2] + giv[1] + giv[3:]
            elif r[0] < 0.3:
                giv = GIVEN[rng.integers(len(GIVEN))]
            b = "" if r[1] < 0.1 else birth
            a = addr if r[2] < 0.8 else f"{rng.integers(1, 300)} OTHER ROAD {rng.integers(1000, 9999)}"
            db.append(dibao(f"D{i}", f"{giv} {sur}", "", b, xb="", region="", addr=a))
    return roles_of(hukou=hk, dibao=db + (extra or [])), hk


def test_incremental_day_with_idless_latin_records_equals_rebuild():
    from linkage.incremental import link_incremental, role_fingerprints

    day1, hk = _idless_day()
    res1 = link_roles(day1, None, None, None, BD, load_config())
    links1 = res1.links.copy()
    fp = pd.Series(role_fingerprints(day1), index=role_keys(day1))
    links1["role_fp"] = fp.reindex(role_keys(links1)).to_numpy()
    # day 2: a record of H1's person with one name token replaced, no birth date, at H1's address
    sur, giv = hk[1]["XM"].split()
    day2, _ = _idless_day([dibao("N1", f"{sur} ZEBEDEE", "", "", xb="", region="", addr=hk[1]["HJDZ"])])
    full = link_roles(day2, res1.persons, res1.links, None, "20260302", load_config(), model=res1.model)
    inc = link_incremental(day2, roles_of(), res1.persons, links1, None, "20260302", load_config(), res1.model)
    assert rk(full, "dibao", "N1")["RKID"] == rk(full, "hukou", "H1")["RKID"]  # linked (POSSIBLE) by the address
    k = ["BH", "YWZJ", "JS"]
    assert full.links.set_index(k)["RKID"].equals(inc.links.set_index(k)["RKID"].reindex(full.links.set_index(k).index))


def test_the_estimated_prior_weighs_again_what_was_scored_once(monkeypatch):
    """A training date scores its pairs once, with `PRIOR_SLACK_BITS` of room below the threshold, and weighs
    them again with the estimated prior and the discounted address u (here, FEBRL-like, both rise): the same
    links, scores and model as scoring every pair again, which is what happens when the rise passes the room."""
    from linkage import link as lk

    day, _ = _idless_day()
    calls = []
    real = fz.reweigh
    monkeypatch.setattr(fz, "reweigh", lambda *a: calls.append(1) or real(*a))
    once = link_roles(day, None, None, None, BD, load_config())
    assert calls, "weighed again, not scored again"
    monkeypatch.setattr(lk, "PRIOR_SLACK_BITS", 0.0)
    calls.clear()
    again = link_roles(day, None, None, None, BD, load_config())
    assert not calls, "no room: every pair scored again"
    assert once.stats["model"]["address_u_discounted"] > 0 and once.stats["model"]["prior_has_match"]["estimated"] > 0.5
    pd.testing.assert_frame_equal(once.links, again.links)
    assert once.stats["model"]["prior_has_match"].pop("weighed_again")
    assert not again.stats["model"]["prior_has_match"].pop("weighed_again")
    assert once.stats["model"] == again.stats["model"] and once.stats["candidates"] == again.stats["candidates"]
