"""Pending-verification states (spec section 4) on small hand-made source frames.

Roles are built by `linkage.roles.build_roles` from the sources (so ID judging, name and date
normalisation are the real ones); links are assigned by hand: every row dict may carry `_rk`
(the RKID of its SELF/NF role), `_rk_NV`, `_rk_ZF` and `_ppfs`. Without `_rk` a role is its own person.
"""
from __future__ import annotations

import pandas as pd
import pytest

from catalog import TABLES
from linkage.ids import check_digit
from linkage.roles import build_roles
from verification.states import STATE_COLUMNS, STATE_NAMES, STATES, evaluate_states

BD = "20260301"


def make_id(birth="19850302", seq="123", region="320102") -> str:
    body = region + birth + seq
    return body + check_digit(pd.Series([body])).iloc[0]


MALE = make_id(seq="123")  # 3 odd → male
FEMALE = make_id(birth="19900515", seq="124")  # 4 even → female
MALE2 = make_id(birth="19700101", seq="311", region="320105")
FEMALE2 = make_id(birth="19880808", seq="222", region="320106")


def src(table: str, *rows: dict) -> pd.DataFrame:
    t = TABLES[table]
    recs = []
    for i, row in enumerate(rows):
        rec = {f: str(row.get(f, "")) for f in t.fields}
        rec[t.key] = rec[t.key] or f"{table[:2].upper()}{i + 1}"
        rec.update({"_key": rec[t.key], "_ts": row.get("_ts", "20260301000000"), "_deleted": "0",
                    "_batch": "b1", "_bdate": BD})
        for k, v in row.items():
            if k.startswith("_rk") or k == "_ppfs":
                rec[k] = v
        recs.append(rec)
    return pd.DataFrame(recs, dtype=object).fillna("")


def run(*frames: tuple[str, pd.DataFrame], bd: str = BD) -> pd.DataFrame:
    sources = {name: frame for name, frame in frames}
    roles = build_roles({k: v.drop(columns=[c for c in v.columns if c.startswith("_rk") or c == "_ppfs"])
                         for k, v in sources.items()}, bd)
    links = []
    for name, frame in sources.items():
        for _, row in frame.iterrows():  # a handful of hand-made rows
            for role in TABLES[name].roles:
                col = "_rk" if role.code in ("SELF", "NF") else f"_rk_{role.code}"
                rk = row.get(col, "") or f"RK-{name}-{row['_key']}-{role.code}"
                links.append({"BM": TABLES[name].dept, "BH": name, "YWZJ": row["_key"], "JS": role.code,
                              "RKID": rk, "PPFS": row.get("_ppfs", "") or "ID_EXACT", "PPDF": 0.73})
    return evaluate_states(roles, pd.DataFrame(links), sources, bd)


def states_of(out: pd.DataFrame, bh: str, key: str, js: str = "SELF") -> set[str]:
    hit = out[(out["BH"] == bh) & (out["YWZJ"] == key) & (out["JS"] == js)]
    return set(hit["HCZT"])


def row_of(out: pd.DataFrame, bh: str, key: str, state: str, js: str = "SELF") -> pd.Series:
    hit = out[(out["BH"] == bh) & (out["YWZJ"] == key) & (out["JS"] == js) & (out["HCZT"] == state)]
    assert len(hit) == 1, out
    return hit.iloc[0]


def hukou(key, xm="陈小明", id_=MALE, **kw):
    return {"RYBH": key, "XM": xm, "GMSFHM": id_, "XB": kw.pop("XB", "1"), "CSRQ": kw.pop("CSRQ", ""),
            "HKZT": kw.pop("HKZT", "1"), **kw}


def dibao(key, xm="陈小明", id_=MALE, **kw):
    return {"DBRYBH": key, "XM": xm, "GMSFHM": id_, "BZZT": kw.pop("BZZT", "1"), **kw}


# --------------------------------------------------------------------------------------- frame shape
def test_frame_columns_names_and_empty():
    assert len(STATES) == 17 and len(STATE_NAMES) == 17
    out = run(("hukou", src("hukou", hukou("R1"))))
    assert list(out.columns) == STATE_COLUMNS
    assert out.empty
    empty = evaluate_states(build_roles({}, BD), pd.DataFrame(), {}, BD)
    assert list(empty.columns) == STATE_COLUMNS and empty.empty


def test_no_nan_and_strings():
    out = run(("dibao", src("dibao", dibao("D1", xm="", id_="12345"))))
    assert out.notna().all().all()
    assert all(isinstance(v, str) for v in out.to_numpy().ravel())


# --------------------------------------------------------------------------------------------- MISSING
def test_missing():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="  "), hukou("R2", id_=""), hukou("R3"))),
        ("resident", src("resident", {"JMBH": "J1", "XM": "王五", "GMSFHM": "", "JZZT": "1", "_rk": "RK-hukou-R3-SELF"})),
        ("women", src("women",
                      {"FNBH": "F1", "XM": "李红", "GMSFHM": FEMALE, "ZF_XM": "张三", "ZF_GMSFHM": ""},
                      {"FNBH": "F2", "XM": "李青", "GMSFHM": FEMALE2, "ZF_XM": "", "ZF_GMSFHM": ""})),
    )
    assert "MISSING" in states_of(out, "hukou", "R1")
    assert "MISSING" in states_of(out, "hukou", "R2")
    assert "MISSING" not in states_of(out, "hukou", "R3")
    assert "MISSING" not in states_of(out, "resident", "J1")  # resident ID optional
    assert "MISSING" in states_of(out, "women", "F1", "ZF")  # husband named, no ID
    assert out[(out["YWZJ"] == "F2") & (out["JS"] == "ZF")].empty  # no husband role at all
    r = row_of(out, "hukou", "R2", "MISSING")
    assert r["route"] == "police" and "GMSFHM" in r["DBXX"]


# ------------------------------------------------------------------------------------ ID_FORMAT / …
def test_id_states_after_normalisation_and_exclusive():
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if ch.isdigit() else ch for ch in MALE)
    with_x = make_id(birth="19850302", seq="005")
    with_x = with_x if with_x.endswith("X") else make_id(birth="19850302", seq="010")
    bad_check = MALE[:17] + ("0" if MALE[17] != "0" else "1")
    out = run(("dibao", src(
        "dibao",
        dibao("D1", id_=f" {fullwidth[:6]} {fullwidth[6:]} "),  # full width + spaces → valid
        dibao("D2", id_=MALE[:17]),  # 17 characters
        dibao("D3", id_=MALE[:10] + "A" + MALE[11:]),  # a letter inside
        dibao("D4", id_="320102198502301230"),  # 30 February
        dibao("D5", id_="320102850230123"),  # 15 digits, impossible date → FORMAT not ID_15
        dibao("D6", id_="320102850302123"),  # legacy 15
        dibao("D7", id_=bad_check),
        dibao("D8", id_="3.20102E+17"),
        dibao("D9", id_=make_id(birth="20270101")),  # born after the business date
        dibao("D10", id_=with_x.lower()),  # lower-case x
    )))
    assert states_of(out, "dibao", "D1") == {"NOT_IN_POLICE"}  # no ID state, no MISSING
    assert states_of(out, "dibao", "D10") == {"NOT_IN_POLICE"}
    for key in ("D2", "D3", "D4", "D5", "D8", "D9"):
        assert states_of(out, "dibao", key) & {"ID_FORMAT", "ID_CHECKSUM", "ID_15"} == {"ID_FORMAT"}, key
    assert states_of(out, "dibao", "D6") & {"ID_FORMAT", "ID_CHECKSUM", "ID_15"} == {"ID_15"}
    assert states_of(out, "dibao", "D7") & {"ID_FORMAT", "ID_CHECKSUM", "ID_15"} == {"ID_CHECKSUM"}
    per_role = out[out["HCZT"].isin(["ID_FORMAT", "ID_CHECKSUM", "ID_15"])].groupby("YWZJ").size()
    assert per_role.max() == 1
    assert "17位" in row_of(out, "dibao", "D2", "ID_FORMAT")["DBXX"]
    assert "不存在" in row_of(out, "dibao", "D4", "ID_FORMAT")["WTMS"]
    assert "Excel" in row_of(out, "dibao", "D8", "ID_FORMAT")["WTMS"]
    assert "晚于业务日期" in row_of(out, "dibao", "D9", "ID_FORMAT")["DBXX"]
    chk = row_of(out, "dibao", "D7", "ID_CHECKSUM")
    assert chk["WTMS"] == "该人员身份证号码校验位错误，请核对证件原件后更正。"
    assert f"应为{MALE[17]}" in chk["DBXX"] and MALE in chk["DBXX"] and chk["route"] == "civil"
    up = row_of(out, "dibao", "D6", "ID_15")
    assert "320102198503021235"[:17] in up["DBXX"]
    assert up["DBXX"].endswith(build_roles({"dibao": src("dibao", dibao("X", id_="320102850302123"))}, BD)["id18"].iloc[0])


def test_id_states_not_for_other_documents():
    out = run(("temp", src("temp", {"ZZBH": "Z1", "XM": "JOHN SMITH", "ZJLX": "414", "ZJHM": "E1234567", "ZT": "1"})))
    assert states_of(out, "temp", "Z1") == set()


# ---------------------------------------------------------------------------------------- ID_MISMATCH
def test_id_mismatch():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="陈小明", CSRQ="19850302"),
                      hukou("R2", xm="刘备", id_=MALE2, CSRQ="19700101", HKZT="2"))),
        ("dibao", src("dibao",
                      dibao("D1", xm="王强", CSRQ="19990909"),  # both differ → mismatch
                      dibao("D2", xm="王强", CSRQ="19850302"),  # same birth date
                      dibao("D3", xm="陳小明", CSRQ="19990909"),  # same name after t2s
                      dibao("D4", xm="张飞", id_=MALE2, CSRQ="19990909"),  # a cancelled police record counts
                      dibao("D5", xm="张飞", id_=MALE2, CSRQ=""),  # own birth date unknown: cannot differ
                      )),
        ("women", src("women", {"FNBH": "F1", "XM": "李红", "GMSFHM": FEMALE, "ZF_XM": "孙权", "ZF_GMSFHM": MALE})),
        ("temp", src("temp", {"ZZBH": "Z1", "XM": "赵云", "ZJLX": "111", "ZJHM": MALE, "ZT": "0"})),
    )
    assert "ID_MISMATCH" in states_of(out, "dibao", "D1")
    assert "ID_MISMATCH" not in states_of(out, "dibao", "D2")
    assert "ID_MISMATCH" not in states_of(out, "dibao", "D3")
    assert "ID_MISMATCH" in states_of(out, "dibao", "D4")
    assert "ID_MISMATCH" not in states_of(out, "dibao", "D5")
    assert "ID_MISMATCH" not in states_of(out, "women", "F1", "ZF")  # not for husband roles
    assert "ID_MISMATCH" not in states_of(out, "temp", "Z1")  # not for police records
    r = row_of(out, "dibao", "D1", "ID_MISMATCH")
    assert "王强" in r["DBXX"] and "陈小明" in r["DBXX"] and r["route"] == "civil"


def test_id_mismatch_police_birth_from_its_id():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="陈小明", CSRQ=""))),  # birth only in the ID: 19850302
        ("dibao", src("dibao", dibao("D1", xm="王强", CSRQ="1985-03-02"), dibao("D2", xm="王强", CSRQ="19990909"))),
    )
    assert "ID_MISMATCH" not in states_of(out, "dibao", "D1")
    assert "ID_MISMATCH" in states_of(out, "dibao", "D2")


def test_id_mismatch_matches_any_police_holder():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="陈小明", CSRQ="19850302"))),
        ("temp", src("temp", {"ZZBH": "Z1", "XM": "王强", "ZJLX": "111", "ZJHM": MALE, "ZT": "0"})),
        ("dibao", src("dibao", dibao("D1", xm="王强", CSRQ="19990909"))),
    )
    assert "ID_MISMATCH" not in states_of(out, "dibao", "D1")


# ---------------------------------------------------------------------------------- DUP_ID / DUP_RECORD
def test_dup_id():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="陈小明"), hukou("R2", xm="王强"),
                      hukou("R3", xm="甲", id_=MALE2), hukou("R4", xm="乙", id_=MALE2, HKZT="2"),
                      hukou("R5", xm="丙", id_=FEMALE, _rk="P5"), hukou("R6", xm="丙", id_=FEMALE, _rk="P5"))),
        ("temp", src("temp", {"ZZBH": "Z1", "XM": "赵云", "ZJLX": "111", "ZJHM": MALE, "ZT": "1"})),
    )
    for bh, key in (("hukou", "R1"), ("hukou", "R2"), ("temp", "Z1")):
        r = row_of(out, bh, key, "DUP_ID")
        assert r["route"] == "police"
        assert "陈小明" in r["DBXX"] and "王强" in r["DBXX"] and "赵云" in r["DBXX"]
    assert "DUP_ID" not in states_of(out, "hukou", "R3")  # the other holder is cancelled
    assert "DUP_ID" not in states_of(out, "hukou", "R5")  # same person: DUP_RECORD, not DUP_ID
    assert "DUP_RECORD" in states_of(out, "hukou", "R5") and "DUP_RECORD" in states_of(out, "hukou", "R6")


def test_dup_record():
    out = run(
        ("dibao", src("dibao", dibao("D1", _rk="P1"), dibao("D2", _rk="P1"),
                      dibao("D3", _rk="P3"), dibao("D4", _rk="P3", BZZT="0"))),
        ("marriage", src("marriage",
                         {"DJBH": "M1", "YWLX": "1", "DJRQ": "20100101", "NF_XM": "甲", "NF_ZJHM": MALE2,
                          "NV_XM": "乙", "NV_ZJHM": FEMALE2, "_rk": "PM", "_rk_NV": "PW"},
                         {"DJBH": "M2", "YWLX": "2", "DJRQ": "20150101", "NF_XM": "甲", "NF_ZJHM": MALE2,
                          "NV_XM": "乙", "NV_ZJHM": FEMALE2, "_rk": "PM", "_rk_NV": "PW"})),
        ("women", src("women",
                      {"FNBH": "F1", "XM": "丙", "GMSFHM": FEMALE, "ZF_XM": "丁", "ZF_GMSFHM": MALE, "_rk_ZF": "PH"},
                      {"FNBH": "F2", "XM": "戊", "GMSFHM": make_id("19920101", "226"), "ZF_XM": "丁",
                       "ZF_GMSFHM": MALE, "_rk_ZF": "PH"})),
    )
    r = row_of(out, "dibao", "D1", "DUP_RECORD")
    assert "DUP_RECORD" in states_of(out, "dibao", "D2") and "D1" in r["DBXX"] and "D2" in r["DBXX"]
    assert r["route"] == "civil"
    assert "DUP_RECORD" not in states_of(out, "dibao", "D3")  # the other record is stopped
    assert "DUP_RECORD" not in states_of(out, "marriage", "M1", "NF")
    assert "DUP_RECORD" not in states_of(out, "women", "F1", "ZF")  # husband roles are not SELF


# ------------------------------------------------------------------------------------------ NAME_DIFF
def test_name_diff_and_reference_choice():
    out = run(
        ("hukou", src("hukou",
                      hukou("R1", xm="陈小明", _rk="P1"),
                      hukou("R2", xm="阿卜杜·热合曼", id_=MALE2, _rk="P2"),
                      hukou("R3", xm="张三", id_=FEMALE, HKZT="2", _rk="P3"))),
        ("temp", src("temp",
                     {"ZZBH": "Z1", "XM": "陈晓明", "ZJLX": "111", "ZJHM": MALE, "ZT": "1", "_rk": "P1"},
                     {"ZZBH": "Z3", "XM": "张山", "ZJLX": "111", "ZJHM": FEMALE, "ZT": "1", "_rk": "P3"})),
        ("dibao", src("dibao",
                      dibao("D1", xm="陳 小明", _rk="P1"),  # t2s + whitespace: same
                      dibao("D2", xm="陈小红", _rk="P1"),  # differs
                      dibao("D3", xm="阿卜杜・热合曼", id_=MALE2, _rk="P2"),  # lookalike dot: same
                      dibao("D4", xm="李四", id_=MALE2[:16] + "99", _rk="P2"),  # different ID (fuzzy link)
                      dibao("D5", xm="", _rk="P1"),  # empty name never differs
                      dibao("D6", xm="张山", id_=FEMALE, _rk="P3"))),  # reference = cancelled hukou, not active temp
    )
    assert "NAME_DIFF" not in states_of(out, "dibao", "D1")
    r = row_of(out, "dibao", "D2", "NAME_DIFF")
    assert r["DBXX"].startswith("本表姓名:陈小红; 公安户籍姓名:陈小明") and r["route"] == "civil"
    assert "NAME_DIFF" not in states_of(out, "dibao", "D3")
    assert "NAME_DIFF" not in states_of(out, "dibao", "D4")
    assert "NAME_DIFF" not in states_of(out, "dibao", "D5")
    assert "NAME_DIFF" in states_of(out, "dibao", "D6")
    assert "NAME_DIFF" in states_of(out, "temp", "Z1")  # temp compared with the hukou reference
    assert "NAME_DIFF" not in states_of(out, "hukou", "R1")  # the reference itself


def test_name_diff_reference_prefers_active_hukou_then_temp():
    out = run(
        ("hukou", src("hukou", hukou("R1", xm="旧名", HKZT="2", _rk="P1"), hukou("R2", xm="新名", _rk="P1"))),
        ("temp", src("temp", {"ZZBH": "Z9", "XM": "王五", "ZJLX": "111", "ZJHM": MALE2, "ZT": "1", "_rk": "P9"},
                     {"ZZBH": "Z8", "XM": "王六", "ZJLX": "111", "ZJHM": MALE2, "ZT": "0", "_rk": "P9"})),
        ("dibao", src("dibao", dibao("D1", xm="新名", _rk="P1"), dibao("D2", xm="王五", id_=MALE2, _rk="P9"))),
    )
    assert "NAME_DIFF" not in states_of(out, "dibao", "D1")
    assert "NAME_DIFF" in states_of(out, "hukou", "R1")
    assert "NAME_DIFF" not in states_of(out, "dibao", "D2")
    assert "NAME_DIFF" in states_of(out, "temp", "Z8")


# ------------------------------------------------------------------------------- SEX / BIRTH conflicts
def test_sex_conflict():
    out = run(("hukou", src(
        "hukou",
        hukou("R1", XB="2"), hukou("R2", XB="女"), hukou("R3", XB="0"), hukou("R4", XB="9"), hukou("R5", XB=""),
        hukou("R6", XB="男"), hukou("R7", id_=MALE[:17] + ("0" if MALE[17] != "0" else "1"), XB="2"),
        hukou("R8", id_="320102850302124", XB="1"),  # 15-digit female, XB male
    )))
    for key in ("R1", "R2", "R8"):
        assert "SEX_CONFLICT" in states_of(out, "hukou", key), key
    for key in ("R3", "R4", "R5", "R6", "R7"):
        assert "SEX_CONFLICT" not in states_of(out, "hukou", key), key
    r = row_of(out, "hukou", "R2", "SEX_CONFLICT")
    assert "女" in r["DBXX"] and "男" in r["DBXX"] and "XB=1" in r["DBXX"] and r["route"] == "police"


def test_birth_conflict():
    out = run(("dibao", src(
        "dibao",
        dibao("D1", CSRQ="19850303"), dibao("D2", CSRQ="1985-3-2"), dibao("D3", CSRQ="1985年3月2日"),
        dibao("D4", CSRQ="不详"), dibao("D5", CSRQ=""),
        dibao("D6", id_="320102198502301230", CSRQ="19850302"),  # malformed ID never conflicts
        dibao("D7", id_="320102850302123", CSRQ="19860302"),
    )))
    assert "BIRTH_CONFLICT" in states_of(out, "dibao", "D1")
    assert "BIRTH_CONFLICT" in states_of(out, "dibao", "D7")
    for key in ("D2", "D3", "D4", "D5", "D6"):
        assert "BIRTH_CONFLICT" not in states_of(out, "dibao", key), key
    assert "CSRQ=19850302" in row_of(out, "dibao", "D1", "BIRTH_CONFLICT")["DBXX"]


# -------------------------------------------------------------------------------------- DEATH_ACTIVE
def test_death_active_routes_to_holder():
    out = run(
        ("hukou", src("hukou", hukou("R1", HKZT="3", ZXRQ="20260115", _rk="P1"),
                      hukou("R2", id_=MALE2, HKZT="2", _rk="P2"))),
        ("temp", src("temp", {"ZZBH": "Z1", "XM": "陈小明", "ZJLX": "111", "ZJHM": MALE, "ZT": "1", "_rk": "P1"})),
        ("dibao", src("dibao", dibao("D1", _rk="P1"), dibao("D2", _rk="P1", BZZT="0"), dibao("D3", id_=MALE2, _rk="P2"))),
        ("disabled", src("disabled", {"CJRZH": MALE + "41", "XM": "陈小明", "GMSFHM": MALE, "CJLB": "4", "CJDJ": "1",
                                      "ZT": "0", "_rk": "P1"})),
        ("resident", src("resident", {"JMBH": "J1", "XM": "陈小明", "GMSFHM": MALE, "JZZT": "1", "_rk": "P1"},
                         {"JMBH": "J2", "XM": "陈小明", "GMSFHM": MALE, "JZZT": "2", "_rk": "P1"})),
        ("women", src("women", {"FNBH": "F1", "XM": "陈小明", "GMSFHM": MALE, "_rk": "P1"})),
    )
    expect = {("temp", "Z1"): "police", ("dibao", "D1"): "civil", ("resident", "J1"): "civil",
              ("women", "F1"): "family_planning"}
    for (bh, key), route in expect.items():
        r = row_of(out, bh, key, "DEATH_ACTIVE")
        assert r["route"] == route
        assert "死亡注销" in r["DBXX"] and "20260115" in r["DBXX"]
    for bh, key in (("dibao", "D2"), ("dibao", "D3"), ("disabled", MALE + "41"), ("resident", "J2"), ("hukou", "R1")):
        assert "DEATH_ACTIVE" not in states_of(out, bh, key), (bh, key)


# ------------------------------------------------------------------------------------- NOT_IN_POLICE
def test_not_in_police():
    out = run(
        ("hukou", src("hukou", hukou("R1", HKZT="2", _rk="P1"))),
        ("dibao", src("dibao", dibao("D1", _rk="P1"), dibao("D2", id_=MALE2, BZZT="0", _rk="P2"))),
        ("disabled", src("disabled", {"CJRZH": FEMALE + "41", "XM": "李红", "GMSFHM": FEMALE, "CJLB": "4",
                                      "CJDJ": "1", "ZT": "0", "_rk": "P3"})),
        ("women", src("women", {"FNBH": "F1", "XM": "李青", "GMSFHM": FEMALE2, "ZF_XM": "甲", "ZF_GMSFHM": MALE2,
                                "_rk": "P4", "_rk_ZF": "P5"})),
        ("resident", src("resident", {"JMBH": "J1", "XM": "王五", "GMSFHM": "", "JZZT": "2", "_rk": "P6"})),
    )
    assert "NOT_IN_POLICE" not in states_of(out, "dibao", "D1")  # a cancelled hukou is a police record
    for bh, key in (("dibao", "D2"), ("disabled", FEMALE + "41"), ("women", "F1")):
        assert row_of(out, bh, key, "NOT_IN_POLICE")["route"] == "police"
    assert "NOT_IN_POLICE" not in states_of(out, "women", "F1", "ZF")
    assert "NOT_IN_POLICE" not in states_of(out, "resident", "J1")


# ------------------------------------------------------------------ PRESENT_NOT_REGISTERED / HUKOU_ABSENT
def test_present_not_registered_and_hukou_absent():
    out = run(
        ("hukou", src("hukou", hukou("R1", HKZT="2", _rk="P1"), hukou("R2", id_=MALE2, _rk="P2"),
                      hukou("R3", id_=FEMALE, HKZT="5", _rk="P3"))),
        ("temp", src("temp", {"ZZBH": "Z3", "XM": "陈小明", "ZJLX": "111", "ZJHM": FEMALE, "ZT": "1", "_rk": "P3"})),
        ("resident", src(
            "resident",
            {"JMBH": "J1", "XM": "陈小明", "GMSFHM": MALE, "JZZT": "1", "SQMC": "幸福社区", "_rk": "P1"},
            {"JMBH": "J2", "XM": "刘备", "GMSFHM": MALE2, "JZZT": "1", "_rk": "P2"},
            {"JMBH": "J3", "XM": "陈小明", "GMSFHM": FEMALE, "JZZT": "1", "_rk": "P3"},
            {"JMBH": "J4", "XM": "刘备", "GMSFHM": MALE2, "JZZT": "2", "JZDZ": "某路1号", "_rk": "P2"},
            {"JMBH": "J5", "XM": "陈小明", "GMSFHM": MALE, "JZZT": "2", "_rk": "P1"},
        )),
    )
    r = row_of(out, "resident", "J1", "PRESENT_NOT_REGISTERED")
    assert r["route"] == "police" and "幸福社区" in r["DBXX"]
    assert "PRESENT_NOT_REGISTERED" not in states_of(out, "resident", "J2")  # active hukou
    assert "PRESENT_NOT_REGISTERED" not in states_of(out, "resident", "J3")  # active temp
    h = row_of(out, "resident", "J4", "HUKOU_ABSENT")
    assert h["route"] == "police" and "某路1号" in h["DBXX"]
    assert "HUKOU_ABSENT" not in states_of(out, "resident", "J5")  # hukou cancelled
    assert "HUKOU_ABSENT" not in states_of(out, "resident", "J2")  # living there


# --------------------------------------------------------------------------------------- LOGIC_ERROR
def test_logic_error_women():
    out = run(("women", src(
        "women",
        {"FNBH": "F1", "XM": "甲", "GMSFHM": MALE},  # male by ID
        {"FNBH": "F2", "XM": "乙", "GMSFHM": make_id("19760301", "224"), "CSRQ": "19760301"},  # 50 today
        {"FNBH": "F3", "XM": "丙", "GMSFHM": make_id("19760302", "224"), "CSRQ": "19760302"},  # 49
        {"FNBH": "F4", "XM": "丁", "GMSFHM": make_id("20110301", "224"), "CSRQ": "2011-03-01"},  # 15 today
        {"FNBH": "F5", "XM": "戊", "GMSFHM": make_id("20110302", "224")},  # 14, age from ID
        {"FNBH": "F6", "XM": "己", "GMSFHM": make_id("19600101", "224"), "CSRQ": "19900101"},  # birth date wins
        {"FNBH": "F7", "XM": "庚", "GMSFHM": "", "CSRQ": ""},  # no age known
    )))
    for key in ("F1", "F2", "F5"):
        assert row_of(out, "women", key, "LOGIC_ERROR")["route"] == "family_planning", key
    for key in ("F3", "F4", "F6", "F7"):
        assert "LOGIC_ERROR" not in states_of(out, "women", key), key
    assert "50周岁" in row_of(out, "women", "F2", "LOGIC_ERROR")["DBXX"]


def test_logic_error_disabled():
    up = build_roles({"dibao": src("dibao", dibao("X", id_="320102850302123"))}, BD)["id18"].iloc[0]
    out = run(("disabled", src(
        "disabled",
        {"CJRZH": MALE + "41", "XM": "甲", "GMSFHM": MALE, "CJLB": "4", "CJDJ": "1", "ZT": "1"},
        {"CJRZH": MALE + "42", "XM": "甲", "GMSFHM": MALE, "CJLB": "4", "CJDJ": "1", "ZT": "1"},
        {"CJRZH": up + "52", "XM": "乙", "GMSFHM": "320102850302123", "CJLB": "5", "CJDJ": "2", "ZT": "1"},
        {"CJRZH": "X12345", "XM": "丙", "GMSFHM": "", "CJLB": "5", "CJDJ": "2", "ZT": "1"},
        {"CJRZH": MALE2 + "63", "XM": "丁", "GMSFHM": MALE2, "CJLB": "6", "CJDJ": "2", "ZT": "0"},
    )))
    assert "LOGIC_ERROR" not in states_of(out, "disabled", MALE + "41")
    r = row_of(out, "disabled", MALE + "42", "LOGIC_ERROR")
    assert MALE + "41" in r["DBXX"] and r["route"] == "disability"
    assert "LOGIC_ERROR" not in states_of(out, "disabled", up + "52")  # against the upgraded ID
    assert "LOGIC_ERROR" not in states_of(out, "disabled", "X12345")  # no ID: no check
    assert "LOGIC_ERROR" in states_of(out, "disabled", MALE2 + "63")


def test_logic_error_marriage():
    nf = make_id("20000601", "111")
    nv = make_id("20060601", "222")
    out = run(("marriage", src(
        "marriage",
        {"DJBH": "M1", "YWLX": "1", "DJRQ": "20200101", "NF_XM": "甲", "NF_ZJHM": FEMALE, "NV_XM": "乙", "NV_ZJHM": MALE},
        {"DJBH": "M2", "YWLX": "1", "DJRQ": "2022-5-31", "NF_XM": "甲", "NF_ZJHM": nf, "NV_XM": "乙", "NV_ZJHM": FEMALE2},
        {"DJBH": "M3", "YWLX": "1", "DJRQ": "20220601", "NF_XM": "甲", "NF_ZJHM": nf, "NV_XM": "乙", "NV_ZJHM": FEMALE2},
        {"DJBH": "M4", "YWLX": "1", "DJRQ": "20260531", "NF_XM": "丙", "NF_ZJHM": MALE2, "NV_XM": "丁", "NV_ZJHM": nv},
        {"DJBH": "M5", "YWLX": "1", "DJRQ": "20260601", "NF_XM": "丙", "NF_ZJHM": MALE2, "NV_XM": "丁", "NV_ZJHM": nv},
    )), bd="20260701")
    assert "LOGIC_ERROR" in states_of(out, "marriage", "M1", "NF")
    assert "LOGIC_ERROR" in states_of(out, "marriage", "M1", "NV")
    assert "LOGIC_ERROR" in states_of(out, "marriage", "M2", "NF")  # 21 on DJRQ
    assert "LOGIC_ERROR" not in states_of(out, "marriage", "M2", "NV")
    assert "LOGIC_ERROR" not in states_of(out, "marriage", "M3", "NF")  # 22 on the day
    assert "LOGIC_ERROR" in states_of(out, "marriage", "M4", "NV")  # 19
    assert "LOGIC_ERROR" not in states_of(out, "marriage", "M5", "NV")  # 20 on the day
    r = row_of(out, "marriage", "M2", "LOGIC_ERROR", "NF")
    assert "22周岁" in r["DBXX"] and r["route"] == "civil"


def test_logic_error_reasons_combined_on_one_row():
    out = run(("women", src("women", {"FNBH": "F1", "XM": "甲", "GMSFHM": make_id("19500101", "113")})))
    r = row_of(out, "women", "F1", "LOGIC_ERROR")
    assert "男性" in r["WTMS"] and "15至49" in r["WTMS"]


# ---------------------------------------------------------------------------------- MARITAL_CONFLICT
def _wed(key, ywlx, djrq, rk="PW"):
    return {"DJBH": key, "YWLX": ywlx, "DJRQ": djrq, "NF_XM": "甲", "NF_ZJHM": MALE2, "NV_XM": "乙",
            "NV_ZJHM": FEMALE, "_rk": "PM", "_rk_NV": rk}


@pytest.mark.parametrize("marriages,hyzk,expected", [
    ([("M1", "1", "20200101")], "10", True),
    ([("M1", "1", "20200101"), ("M2", "2", "20230101")], "10", False),  # divorced later
    ([("M1", "1", "20200101"), ("M2", "2", "20200101")], "10", True),  # same day is not later
    ([("M1", "1", "20200101"), ("M2", "2", "20210101"), ("M3", "1", "2022-1-1")], "10", True),  # remarried
    ([("M1", "1", "20260301")], "10", True),  # on the business date
    ([("M1", "1", "20260302")], "10", False),  # after the business date
    ([("M1", "1", "20200101")], "20", False),
    ([], "10", False),
])
def test_marital_conflict(marriages, hyzk, expected):
    frames = [("women", src("women", {"FNBH": "F1", "XM": "乙", "GMSFHM": FEMALE, "HYZK": hyzk, "_rk": "PW"}))]
    if marriages:
        frames.append(("marriage", src("marriage", *[_wed(*m) for m in marriages])))
    out = run(*frames)
    assert ("MARITAL_CONFLICT" in states_of(out, "women", "F1")) is expected
    if expected:
        r = row_of(out, "women", "F1", "MARITAL_CONFLICT")
        assert r["route"] == "family_planning" and "HYZK=20" in r["DBXX"]


def test_marital_conflict_other_person_does_not_count():
    out = run(("women", src("women", {"FNBH": "F1", "XM": "乙", "GMSFHM": FEMALE, "HYZK": "10", "_rk": "PW"})),
              ("marriage", src("marriage", _wed("M1", "1", "20200101", rk="SOMEONE_ELSE"))))
    assert "MARITAL_CONFLICT" not in states_of(out, "women", "F1")


# ----------------------------------------------------------------------------------- FUZZY_CANDIDATE
def test_fuzzy_candidate():
    out = run(
        ("hukou", src("hukou", hukou("R1", CSRQ="19850302", _rk="P1"))),
        ("resident", src("resident",
                         {"JMBH": "J1", "XM": "陈小明", "GMSFHM": "", "CSRQ": "19850302", "JZZT": "1",
                          "_rk": "P1", "_ppfs": "POSSIBLE"},
                         {"JMBH": "J2", "XM": "陈小明", "GMSFHM": "", "CSRQ": "19850302", "JZZT": "1",
                          "_rk": "P1", "_ppfs": "FUZZY"})),
    )
    r = row_of(out, "resident", "J1", "FUZZY_CANDIDATE")
    assert r["route"] == "civil" and r["RKID"] == "P1" and "户籍人口 RYBH=R1" in r["DBXX"] and "0.73" in r["DBXX"]
    assert "FUZZY_CANDIDATE" not in states_of(out, "resident", "J2")


def test_every_state_has_a_sentence():
    out = run(
        ("hukou", src("hukou", hukou("R1", XB="2", CSRQ="19850303", HKZT="3"))),
        ("dibao", src("dibao", dibao("D1", xm="", _rk="RK-hukou-R1-SELF"))),
    )
    assert (out["WTMS"].str.len() > 5).all() and (out["DBXX"].str.len() > 5).all()
    assert out["WTMS"].str.endswith("。").all()


def test_roles_without_links_get_only_record_states():
    sources = {"dibao": src("dibao", dibao("D1", xm=""), dibao("D2"))}
    out = evaluate_states(build_roles(sources, BD), pd.DataFrame(), sources, BD)
    assert list(out["HCZT"]) == ["MISSING"] and out["RKID"].iloc[0] == ""  # no NOT_IN_POLICE, no DUP_RECORD


def test_date_sensitive_roles_are_those_a_new_business_date_can_change():
    from verification.states import date_sensitive

    women = src(
        "women",
        {"FNBH": "F1", "XM": "甲", "GMSFHM": make_id("19760301", "224")},  # turns 50 on BD: state appears
        {"FNBH": "F2", "XM": "乙", "GMSFHM": make_id("19600101", "224")},  # 66 both days: wording names the date
        {"FNBH": "F3", "XM": "丙", "GMSFHM": make_id("19900101", "224")},  # 36 both days: nothing can change
        {"FNBH": "F4", "XM": "丁", "GMSFHM": "3201021990010122"},  # malformed ID: ID_FORMAT wording
    )
    marriage = src("marriage", {**_wed("M1", "1", "20260301"), "NV_ZJHM": FEMALE2},  # registered on BD
                   {**_wed("M2", "1", "20200101"), "NV_ZJHM": FEMALE2})
    sources = {"women": women, "marriage": marriage}
    roles = build_roles({k: v.drop(columns=[c for c in v.columns if c.startswith("_rk")]) for k, v in sources.items()}, BD)
    got = date_sensitive(roles, sources, BD, "20260228")
    hit = set(roles.loc[got, "YWZJ"])
    assert hit == {"F1", "F2", "F4", "M1"}, hit
    # from the day before the first the fifty-year-old is out of range on both dates; nothing registered
    # after BD
    assert set(roles.loc[date_sensitive(roles, sources, "20260302", BD), "YWZJ"]) == {"F1", "F2", "F4"}
