"""link_roles on small hand-made cases: each link method, DUP_ID, ID_MISMATCH, decisions, RKID continuity."""
from __future__ import annotations

import pandas as pd
import pytest

from catalog import TABLES
from linkage.base import rkid_for
from linkage.ids import check_digit
from linkage.link import EVENT_COLUMNS, LINK_COLUMNS, link_roles, load_config
from linkage.roles import build_roles

BD = "20260301"


def mkid(region: str, birth: str, seq: str) -> str:
    body = region + birth + seq
    return body + check_digit(pd.Series([body]))[0]


def src(table: str, rows: list[dict]) -> pd.DataFrame:
    t = TABLES[table]
    df = pd.DataFrame([{f: str(r.get(f, "")) for f in t.fields} for r in rows], columns=list(t.fields))
    df["_key"] = df[t.key]
    df["_ts"] = "20260101000000"
    df["_deleted"] = "0"
    df["_batch"] = "b"
    df["_bdate"] = BD
    return df


def hukou(key, xm, gm, csrq, xb="1", region="320102", addr="玄武区中山路1号", hkzt="1"):
    return dict(RYBH=key, XM=xm, GMSFHM=gm, XB=xb, MZ="01", CSRQ=csrq, HJDZ_XZQH=region, HJDZ=addr, HH="1", HKZT=hkzt)


def resident(key, xm, gm, csrq, xb="1", region="320102", addr="玄武区中山路1号"):
    return dict(JMBH=key, XM=xm, GMSFHM=gm, XB=xb, CSRQ=csrq, JZDZ_XZQH=region, JZDZ=addr, JZZT="1")


def dibao(key, xm, gm, csrq, xb="1", region="320102", addr="中山路1号"):
    return dict(DBRYBH=key, DBZH="D", XM=xm, GMSFHM=gm, XB=xb, CSRQ=csrq, JTDZ_XZQH=region, JTDZ=addr, BZZT="1")


def roles_of(**tables) -> pd.DataFrame:
    return build_roles({t: src(t, rows) for t, rows in tables.items()}, BD)


def link(roles, persons=None, links=None, decisions=None, cfg=None):
    return link_roles(roles, persons, links, decisions, BD, cfg or load_config())


def rk(res, bh, key, js="SELF"):
    ln = res.links
    row = ln[(ln["BH"] == bh) & (ln["YWZJ"] == key) & (ln["JS"] == js)]
    assert len(row) == 1, (bh, key)
    return row.iloc[0]


ID_A = mkid("320102", "19850302", "123")
ID_B = mkid("320102", "19900101", "456")
ID_C = mkid("320104", "19700515", "781")


def base_case():
    return roles_of(
        hukou=[hukou("H1", "张伟", ID_A, "19850302"),
               hukou("H2", "李娜", ID_B, "19900101", xb="2", addr="玄武区中山路2号"),
               hukou("H3", "王强", ID_C, "19700515", region="320104", addr="秦淮区长江路3号")],
        dibao=[dibao("D1", "张伟", ID_A[:10] + str((int(ID_A[10]) + 1) % 10) + ID_A[11:], "19850302"),  # one digit off
               dibao("D2", "李娜", ID_B[:-1] + ID_B[-1].lower() + " ", "1990-1-1", xb="女")],
        resident=[resident("R1", "王□", "", "1970年5月15日", region="320104", addr="秦淮区长江路3号"),
                  resident("R2", "赵六", "", "19600101", region="320104", addr="秦淮区长江路9号"),
                  resident("R3", "王强", ID_A, "19700515", region="320104", addr="秦淮区长江路3号")],
    )


def test_frames_and_methods():
    res = link(base_case())
    assert list(res.links.columns) == LINK_COLUMNS
    assert list(res.events.columns) == EVENT_COLUMNS
    assert res.links["RKID"].str.fullmatch(r"RK[0-9A-F]{16}").all()
    assert not res.links.isna().any().any() and not res.persons.isna().any().any()
    h1, h2, h3 = rk(res, "hukou", "H1"), rk(res, "hukou", "H2"), rk(res, "hukou", "H3")
    assert h1["PPFS"] == "ID_EXACT" and h1["PPDF"] == 1.0
    assert h1["RKID"] == rkid_for("police", "hukou", "H1", "SELF")
    d1 = rk(res, "dibao", "D1")
    assert (d1["PPFS"], d1["RKID"]) == ("ID_REPAIRED", h1["RKID"]) and 0 < d1["PPDF"] <= 1
    d2 = rk(res, "dibao", "D2")
    assert (d2["PPFS"], d2["RKID"]) == ("ID_NORMALIZED", h2["RKID"])
    r1 = rk(res, "resident", "R1")
    assert r1["RKID"] == h3["RKID"] and r1["PPFS"] in ("FUZZY", "POSSIBLE")
    assert rk(res, "resident", "R2")["PPFS"] == "UNMATCHED"
    r3 = rk(res, "resident", "R3")  # 王强 with 张伟's ID: ID_MISMATCH, not linked by ID
    assert r3["RKID"] != h1["RKID"]
    assert r3["PPFS"] not in ("ID_EXACT", "ID_NORMALIZED")
    p = res.persons.set_index("RKID")
    assert p.loc[h1["RKID"], "GMSFHM"] == ID_A and p.loc[h1["RKID"], "XM"] == "张伟"
    assert (res.persons["status"] == "live").all()
    assert set(res.events["kind"]) == {"ISSUED"}


def test_order_independent_and_rerun_identical():
    roles = base_case()
    a = link(roles)
    b = link(roles.sample(frac=1.0, random_state=7).reset_index(drop=True))
    pd.testing.assert_frame_equal(a.links, b.links)
    pd.testing.assert_frame_equal(a.persons, b.persons)
    # second run on the same data with yesterday's state: nothing changes
    c = link(roles, a.persons, a.links)
    pd.testing.assert_frame_equal(a.links, c.links)
    pd.testing.assert_frame_equal(a.persons, c.persons)
    assert c.events.empty


def test_fifteen_digit_and_other_documents():
    id15 = ID_B[:6] + ID_B[8:17]
    roles = roles_of(
        hukou=[hukou("H2", "李娜", ID_B, "19900101", xb="2")],
        resident=[resident("R9", "李娜", id15, "19900101", xb="2")],
        temp=[dict(ZZBH="T1", XM="JOHN SMITH", ZJLX="414", ZJHM="E1234567", XB="1", CSRQ="19800101", ZT="1"),
              dict(ZZBH="T2", XM="JOHN SMITH", ZJLX="414", ZJHM="e 1234567", XB="1", CSRQ="19800101", ZT="0")],
    )
    res = link(roles)
    assert rk(res, "resident", "R9")["PPFS"] == "ID_NORMALIZED"
    assert rk(res, "resident", "R9")["RKID"] == rk(res, "hukou", "H2")["RKID"]
    assert rk(res, "temp", "T1")["RKID"] == rk(res, "temp", "T2")["RKID"]
    assert rk(res, "temp", "T1")["PPFS"] == "ID_EXACT" and rk(res, "temp", "T2")["PPFS"] == "ID_NORMALIZED"


def test_dup_id_split():
    roles = roles_of(
        hukou=[hukou("H1", "张伟", ID_A, "19850302"), hukou("H5", "刘芳", ID_A, "19850302", xb="2", addr="鼓楼区1号")],
        dibao=[dibao("D5", "刘芳", ID_A, "19850302", xb="2", addr="鼓楼区1号"), dibao("D1", "張偉", ID_A, "19850302")],
    )
    res = link(roles)
    h1, h5 = rk(res, "hukou", "H1")["RKID"], rk(res, "hukou", "H5")["RKID"]
    assert h1 != h5
    assert rk(res, "dibao", "D5")["RKID"] == h5
    assert rk(res, "dibao", "D1")["RKID"] == h1


def test_repairs_transposition_and_excel():
    t = list(ID_A)
    i = next(k for k in range(6, 16) if t[k] != t[k + 1])
    t[i], t[i + 1] = t[i + 1], t[i]
    roles = roles_of(
        hukou=[hukou("H1", "张伟", ID_A, "19850302"), hukou("H2", "李娜", ID_B, "19900101", xb="2")],
        dibao=[dibao("D1", "张□", "".join(t), "19850302"),
               dibao("D2", "李娜", ID_B[:15] + "000", "19900101", xb="2"),
               dibao("D3", "李娜", f"{int(ID_B[:6]) / 1e5:.5f}E+17", "19900101", xb="2"),
               dibao("D4", "王五", "".join(t), "19990101")],  # same broken ID, nothing confirms it
    )
    res = link(roles)
    h1, h2 = rk(res, "hukou", "H1")["RKID"], rk(res, "hukou", "H2")["RKID"]
    assert (rk(res, "dibao", "D1")["PPFS"], rk(res, "dibao", "D1")["RKID"]) == ("ID_REPAIRED", h1)
    assert (rk(res, "dibao", "D2")["PPFS"], rk(res, "dibao", "D2")["RKID"]) == ("ID_REPAIRED", h2)
    assert (rk(res, "dibao", "D3")["PPFS"], rk(res, "dibao", "D3")["RKID"]) == ("ID_REPAIRED", h2)
    assert rk(res, "dibao", "D4")["RKID"] not in (h1, h2)


def test_decisions_win():
    roles = base_case()
    first = link(roles)
    h1 = rk(first, "hukou", "H1")["RKID"]
    h3 = rk(first, "hukou", "H3")["RKID"]
    r2 = rk(first, "resident", "R2")["RKID"]
    decisions = pd.DataFrame([
        dict(BM="civil", BH="resident", YWZJ="R2", JS="SELF", RKID=h1, decision="SAME", RWBH="T1", decided=BD),
        dict(BM="civil", BH="resident", YWZJ="R1", JS="SELF", RKID=h3, decision="NOT_SAME", RWBH="T2", decided=BD),
        dict(BM="civil", BH="dibao", YWZJ="D1", JS="SELF", RKID=h1, decision="NOT_SAME", RWBH="T3", decided=BD),
    ])
    res = link(roles, first.persons, first.links, decisions)
    r = rk(res, "resident", "R2")
    assert (r["RKID"], r["PPFS"], r["PPDF"]) == (h1, "MANUAL", 1.0)
    assert rk(res, "resident", "R1")["RKID"] != h3
    assert rk(res, "dibao", "D1")["RKID"] != h1
    # the person R2 founded lost its only role but stays live
    p = res.persons.set_index("RKID")
    assert p.loc[r2, "status"] == "live"
    assert {"RELINKED"} <= set(res.events["kind"])
    # decisions are stable: a further run gives the same links
    again = link(roles, res.persons, res.links, decisions)
    pd.testing.assert_frame_equal(res.links, again.links)
    assert again.events[again.events["kind"] != "ATTRIBUTE"].empty


def test_merge_retires_younger_and_never_reuses():
    day1 = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302")],
                    resident=[resident("R1", "孙悟空", "", "19000101", region="110101", addr="北京")])
    r1 = link(day1)
    x = rk(r1, "resident", "R1")["RKID"]
    y = rk(r1, "hukou", "H1")["RKID"]
    assert x != y
    # next day the resident record gets the ID: both RKIDs meet in one cluster -> one survives
    persons = r1.persons.copy()
    persons.loc[persons["RKID"] == x, "issued"] = "20260101"  # x is older
    day2 = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302")],
                    resident=[resident("R1", "张伟", ID_A, "19850302")])
    r2 = link(day2, persons, r1.links)
    assert rk(r2, "hukou", "H1")["RKID"] == x and rk(r2, "resident", "R1")["RKID"] == x
    p = r2.persons.set_index("RKID")
    assert p.loc[y, "status"] == "retired" and p.loc[y, "merged_into"] == x
    merged = r2.events[r2.events["kind"] == "MERGED"]
    assert merged[["old", "new"]].values.tolist() == [[y, x]]
    # the record that founded y appears alone again: y is never reused
    day3 = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302")],
                    resident=[resident("R1", "张伟", ID_A, "19850302")],
                    dibao=[dibao("D9", "钱七", "", "19500101")])
    r3 = link(day3, r2.persons, r2.links)
    assert y not in set(r3.links["RKID"])
    assert len(r3.persons) == len(r2.persons) + 1


def test_role_that_disappears_keeps_person_live():
    r1 = link(base_case())
    fewer = base_case()
    fewer = fewer[fewer["YWZJ"] != "R2"]
    r2 = link(fewer, r1.persons, r1.links)
    gone = rk(r1, "resident", "R2")["RKID"]
    p = r2.persons.set_index("RKID")
    assert p.loc[gone, "status"] == "live"
    assert len(r2.links) == len(fewer)


def test_empty_inputs():
    roles = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302")]).iloc[:0]
    res = link(roles)
    assert res.links.empty and res.persons.empty and res.events.empty


def test_not_same_on_a_lone_role_is_stable():
    roles = roles_of(hukou=[hukou("H1", "张伟", ID_A, "19850302")],
                     resident=[resident("R1", "张伟", "", "19850302"), resident("R7", "周八", "", "19770707")])
    first = link(roles)
    h1 = rk(first, "hukou", "H1")["RKID"]
    r7 = rk(first, "resident", "R7")["RKID"]
    assert rk(first, "resident", "R1")["RKID"] == h1
    decisions = pd.DataFrame([
        dict(BM="civil", BH="resident", YWZJ="R1", JS="SELF", RKID=h1, decision="NOT_SAME", RWBH="T1", decided=BD),
        dict(BM="civil", BH="resident", YWZJ="R7", JS="SELF", RKID=h1, decision="NOT_SAME", RWBH="T2", decided=BD),
    ])
    second = link(roles, first.persons, first.links, decisions)
    r1 = rk(second, "resident", "R1")
    assert r1["RKID"] != h1 and r1["PPFS"] == "UNMATCHED"
    assert rk(second, "resident", "R7")["RKID"] == r7  # a role alone keeps its own person
    third = link(roles, second.persons, second.links, decisions)
    pd.testing.assert_frame_equal(second.links, third.links)
    pd.testing.assert_frame_equal(second.persons, third.persons)
    assert third.events.empty


def test_grey_zone_is_possible_and_attribute_events():
    import copy

    cfg = copy.deepcopy(load_config())
    cfg["fuzzy"]["thresholds"] = {"upper": 1.01, "lower": 0.5}  # nothing is sure enough: grey zone
    res = link(base_case(), cfg=cfg)
    r1 = rk(res, "resident", "R1")
    assert (r1["PPFS"], r1["RKID"]) == ("POSSIBLE", rk(res, "hukou", "H3")["RKID"])
    assert 0.5 <= r1["PPDF"] <= 1.0
    assert set(res.links["PPFS"]) <= {"ID_EXACT", "ID_NORMALIZED", "ID_REPAIRED", "FUZZY", "MANUAL", "POSSIBLE", "UNMATCHED"}
    assert res.links["PPDF"].between(0, 1).all()
    # the police record changes a name: the person keeps its RKID, the change is an ATTRIBUTE event
    first = link(base_case())
    day2 = roles_of(hukou=[hukou("H1", "张伟伟", ID_A, "19850302")])
    second = link(day2, first.persons, first.links)
    h1 = rk(second, "hukou", "H1")["RKID"]
    assert h1 == rk(first, "hukou", "H1")["RKID"]
    ev = second.events[second.events["kind"] == "ATTRIBUTE"]
    assert ev[["RKID", "field", "old", "new"]].values.tolist() == [[h1, "XM", "张伟", "张伟伟"]]
    assert len(second.persons) == len(first.persons)  # persons whose roles went away stay live
    assert (second.persons["status"] == "live").all()


def test_config_is_versioned_and_validated():
    import copy

    from linkage.link import validate_config

    cfg = load_config()
    assert cfg["version"]
    bad = copy.deepcopy(cfg)
    bad["fuzzy"]["blocking"].append({"name": "x", "keys": ["shoe_size"]})
    with pytest.raises(ValueError, match="shoe_size"):
        validate_config(bad)
    bad = copy.deepcopy(cfg)
    bad["fuzzy"]["thresholds"] = {"upper": 0.5, "lower": 0.9}
    with pytest.raises(ValueError):
        link(base_case(), cfg=bad)
    assert link(base_case()).stats["config_version"] == cfg["version"]


def test_fuzzy_evidence_never_merges_two_valid_ids():
    """Two police records alike in everything but their valid citizen IDs (twins, namesakes born the same
    day on one street) stay two persons, and an ID-less record that matches both joins at most one of
    them: it cannot chain them into one person."""
    twin_a, twin_b = mkid("320102", "19850302", "123"), mkid("320102", "19850302", "135")
    roles = roles_of(hukou=[hukou("T1", "张伟", twin_a, "19850302"), hukou("T2", "张伟", twin_b, "19850302")],
                     resident=[resident("R9", "张伟", "", "19850302")],
                     dibao=[dibao("D9", "张伟", twin_b[:-1], "19850302")])  # a broken number of the second
    res = link(roles)
    a, b = rk(res, "hukou", "T1")["RKID"], rk(res, "hukou", "T2")["RKID"]
    assert a != b
    persons = res.links.groupby("RKID")["YWZJ"].agg(set)
    assert not any({"T1", "T2"} <= keys for keys in persons), persons.to_dict()


def _tail_prefix(region: str, birth: str) -> str:
    """A 15-digit ID head whose `000` tail passes the check digit (one in 11 do): Excel's damage that
    looks valid."""
    for d in "0123456789":
        for r in (region, region[:5] + "1", region[:5] + "3", region[:5] + "4"):
            head = r + birth + d
            if check_digit(pd.Series([head + "00"]))[0] == "0":
                return head
    raise AssertionError("no head found")


def test_a_valid_id_with_an_excel_tail_is_repaired_when_name_and_birth_confirm():
    head = _tail_prefix("320102", "19880512")
    real = mkid(head[:6], head[6:14], head[14] + "37")
    damaged = head + "000"
    assert damaged != real and check_digit(pd.Series([damaged[:17]]))[0] == damaged[17]  # it passes the check
    roles = roles_of(
        hukou=[hukou("H1", "周敏", real, "19880512", xb="2", region=head[:6])],
        dibao=[dibao("D1", "周敏", damaged, "19880512", xb="2", region=head[:6]),  # Excel's: repaired
               dibao("D2", "吴刚", damaged, "19700101")],  # the same number, nothing confirms it
    )
    res = link(roles)
    h1 = rk(res, "hukou", "H1")["RKID"]
    assert (rk(res, "dibao", "D1")["PPFS"], rk(res, "dibao", "D1")["RKID"]) == ("ID_REPAIRED", h1)
    assert rk(res, "dibao", "D2")["RKID"] != h1


def test_an_excel_tail_held_by_police_beside_the_other_number_is_two_persons():
    """Police registering both numbers under one name and birth date: namesakes born the same day, not
    a damaged ID (a genuine ID ends in 000 about once in 1,100)."""
    head = _tail_prefix("320102", "19880512")
    real = mkid(head[:6], head[6:14], head[14] + "37")
    roles = roles_of(
        hukou=[hukou("H1", "周敏", real, "19880512", xb="2", region=head[:6]),
               hukou("H2", "周敏", head + "000", "19880512", xb="2", region=head[:6])],
        dibao=[dibao("D2", "周敏", head + "000", "19880512", xb="2", region=head[:6])],
    )
    res = link(roles)
    h1, h2 = rk(res, "hukou", "H1")["RKID"], rk(res, "hukou", "H2")["RKID"]
    assert h1 != h2
    assert (rk(res, "dibao", "D2")["PPFS"], rk(res, "dibao", "D2")["RKID"]) == ("ID_EXACT", h2)


def test_a_person_of_idless_roles_is_checked_as_a_whole():
    """A chain: A and C each match B strongly (B lacks what tells them apart) but are clearly two people.
    Pair by pair the three would be one person; checked as a whole C is cut from A's and B's person and is
    a person of its own, not a grey-zone candidate of theirs."""
    import numpy as np

    from linkage.link import _assign_queries

    cand = pd.DataFrame({"q": [0, 1, 1, 2], "t": [1, 0, 2, 1], "entity": [1, 0, 2, 1], "bits": [30.0] * 4})
    queries = np.arange(3)
    args = (cand, queries, queries.copy(), 0, np.full(3, -1), 0.9, 0.6, -10.0)
    chained = _assign_queries(*args)
    assert len(set(chained["cluster"])) == 1  # pair by pair: one person

    def clearly_other(a, b):
        return ((a == 2) & (b == 0)) | ((a == 0) & (b == 2))

    whole = _assign_queries(*args, clearly_other=clearly_other)
    c = whole["cluster"]
    assert c[0] == c[1] and c[2] != c[0]
    assert list(whole["ppfs"]) == ["UNMATCHED", "FUZZY", "UNMATCHED"]
