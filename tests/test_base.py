"""Person attributes follow the police record; RKIDs are the hash of the founding role."""
from __future__ import annotations

import hashlib

import pandas as pd

from linkage.base import PERSON_COLUMNS, derive_person_attributes, reference_rank, rkid_for


def _roles(rows):
    cols = ["BM", "BH", "YWZJ", "JS", "XM", "name", "MZ", "id18", "id_norm", "id_status", "sex", "birth", "active", "_ts"]
    return pd.DataFrame([{c: r.get(c, True if c == "active" else "") for c in cols} for r in rows])


def test_rkid_is_the_hash_of_the_founding_role():
    h = hashlib.sha256("police|hukou|R1|SELF".encode()).hexdigest()[:16].upper()
    assert rkid_for("police", "hukou", "R1", "SELF") == "RK" + h
    assert rkid_for("police", "hukou", "R1", "SELF", salt=1) != "RK" + h


def test_attributes_follow_police_then_trusted_sources_then_the_id():
    ida = "320102198503021233"
    roles = _roles([
        dict(BM="civil", BH="dibao", YWZJ="D1", JS="SELF", name="张伟伟", MZ="02", id18=ida, id_status="VALID18",
             sex="1", birth="19850302"),
        dict(BM="police", BH="hukou", YWZJ="H2", JS="SELF", name="张伟", MZ="", id18=ida, id_status="VALID18",
             sex="", birth="", active=False, _ts="20250101000000"),
        dict(BM="police", BH="temp", YWZJ="T1", JS="SELF", name="張偉", MZ="01", id18=ida, id_status="VALID18",
             sex="2", birth="19850303", active=True),
        # person 2: no police record, no ID: disabled before resident
        dict(BM="civil", BH="resident", YWZJ="R1", JS="SELF", name="李四", sex="2", birth="19700101"),
        dict(BM="disability", BH="disabled", YWZJ="C1", JS="SELF", name="李四", MZ="03", sex="", birth="19700102"),
        # person 3: a passport holder
        dict(BM="police", BH="temp", YWZJ="T9", JS="SELF", name="JOHN SMITH", id_norm="E123", id_status="OTHER_DOC"),
    ])
    links = pd.DataFrame({"BM": roles["BM"], "BH": roles["BH"], "YWZJ": roles["YWZJ"], "JS": roles["JS"],
                          "RKID": ["A", "A", "A", "B", "B", "C"], "PPFS": "ID_EXACT", "PPDF": 1.0})
    p = derive_person_attributes(roles, links).set_index("RKID")
    assert list(p.reset_index().columns) == [c for c in PERSON_COLUMNS if c not in ("status", "merged_into", "issued")]
    # hukou (cancelled) beats temp (active): police hukou first; empty fields fall back
    a = p.loc["A"]
    assert (a["XM"], a["GMSFHM"]) == ("张伟", ida)
    assert a["XB"] == "1" and a["CSRQ"] == "19850302"  # from the ID, not from the next record
    assert a["MZ"] == "01"  # next record in reference order that has one (temp)
    b = p.loc["B"]
    assert (b["XM"], b["MZ"], b["CSRQ"], b["XB"]) == ("李四", "03", "19700102", "2")
    assert p.loc["C", "GMSFHM"] == "E123"
    assert (p[["JZXZ", "HJDZ_XZQH", "SJJZD_XZQH", "RHZT", "SWBZ", "LYBM"]] == "").all().all()


def test_reference_rank():
    r = _roles([dict(BH="hukou"), dict(BH="hukou", active=False), dict(BH="temp"), dict(BH="temp", active=False),
                dict(BH="disabled"), dict(BH="dibao"), dict(BH="women"), dict(BH="resident"), dict(BH="marriage")])
    assert reference_rank(r).tolist() == list(range(9))
