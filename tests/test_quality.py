"""quality/: GX suites per delivered table, rate metrics, thresholds.

GX takes seconds to import: the GX tests share one process-wide context (the module caches it) and
validate a handful of small frames.
"""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from catalog import TABLES
from quality.rates import delivery_rates, quality_rates
from quality.suites import QualityResult, suite_layout, validate_delivery
from quality.thresholds import load_thresholds, rate_thresholds, rate_warnings
from quality.values import id_valid, ids_valid, parse_date

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(region: str, birth: str, seq: str) -> str:
    """A valid 18-digit citizen ID (GB 11643 check digit)."""
    body = region + birth + seq
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _W)) % 11]


ID_A = make_id("320102", "19850302", "001")
ID_B = make_id("320102", "19900715", "002")
ID_C = make_id("320104", "19600101", "013")
ID_D = make_id("320104", "19721231", "024")


def hukou_frame(n: int = 4) -> pd.DataFrame:
    base = [
        dict(RYBH="R1", XM="张三", GMSFHM=ID_A, XB="1", MZ="01", CSRQ="19850302", HKZT="1", ZXRQ=""),
        dict(RYBH="R2", XM="李四", GMSFHM=f" {ID_B} ", XB="女", MZ="01", CSRQ="1990年7月15日", HKZT="1", ZXRQ=""),
        dict(RYBH="R3", XM="王五", GMSFHM=ID_C.lower(), XB="2", MZ="01", CSRQ="1960-1-1", HKZT="3", ZXRQ="2025/12/01"),
        dict(RYBH="R4", XM="阿依古丽·买买提", GMSFHM=ID_D, XB="男", MZ="05", CSRQ="1972/12/31", HKZT="2", ZXRQ="20240105"),
    ][:n]
    rows = [
        {**r, "HJDZ_XZQH": "320102", "HJDZ": "玄武区某路1号", "HH": "H1", "GXSJ": "20260301093000"} for r in base
    ]
    return pd.DataFrame(rows)[list(TABLES["hukou"].fields)]


def by_name(result: QualityResult) -> dict[str, dict]:
    return {e["name"]: e for e in result.expectations}


# ----------------------------------------------------------------------------------- GX suites

@pytest.fixture(scope="module")
def warm():
    """Import GX and build the hukou suite once for the module."""
    started = time.perf_counter()
    result = validate_delivery(hukou_frame(), "hukou", False)
    return result, time.perf_counter() - started


def test_good_full_frame_passes(warm):
    result, _ = warm
    assert result.structural_ok and result.content_ok and result.success
    assert result.messages == []
    names = by_name(result)
    assert {"columns", "key_not_empty:RYBH", "key_unique:RYBH", "id_format:GMSFHM", "sex_code:XB",
            "date:CSRQ", "date:ZXRQ", "code:HKZT", "timestamp:GXSJ"} <= set(names)
    assert names["columns"]["observed"] == []
    assert names["code:HKZT"]["mostly"] == pytest.approx(0.99)
    assert names["date:ZXRQ"]["checked"] == 2  # empty cancellation dates are not judged
    assert all(e["success"] for e in result.expectations)
    assert result.rates["valid_id_rate"] == 1.0 and result.rates["rows"] == 4
    assert result.warnings == []


def test_suite_is_built_once_and_reused(warm):
    from quality import suites
    from quality.thresholds import mostly_for

    first = suites._definition("hukou", False, mostly_for("hukou"))
    assert suites._definition("hukou", False, mostly_for("hukou")) is first
    started = time.perf_counter()
    validate_delivery(hukou_frame(), "hukou", False)
    assert time.perf_counter() - started < 2.0
    # run() results are not left piling up in the context's store
    assert list(suites._STATE["context"].validation_results_store.list_keys()) == []


def test_missing_column_is_a_structural_failure(warm):
    df = hukou_frame().drop(columns=["HKZT", "ZXRQ"])
    result = validate_delivery(df, "hukou", False)
    assert not result.structural_ok
    assert len(result.messages) == 1
    msg = result.messages[0]
    assert "hukou" in msg and "HKZT" in msg and "ZXRQ" in msg
    assert result.structural_messages == [msg] and result.content_messages == []
    names = by_name(result)
    assert names["columns"]["success"] is False
    assert names["columns"]["observed"] == ["HKZT", "ZXRQ"]
    assert names["code:HKZT"]["note"] == "column missing"
    assert "HKZT" not in df.columns and not any(c.startswith("_q_") for c in df.columns)  # caller's frame untouched


def test_unknown_table_is_a_structural_failure_not_an_exception():
    result = validate_delivery(pd.DataFrame({"A": ["1"]}), "verification_tasks", False)
    assert not result.structural_ok
    assert result.expectations == [] and result.rates == {}
    assert "verification_tasks" in result.messages[0] and "hukou" in result.messages[0]


def test_full_extract_key_must_be_filled_and_unique(warm):
    df = hukou_frame()
    df.loc[1, "RYBH"] = "R1"
    df.loc[2, "RYBH"] = "  "
    result = validate_delivery(df, "hukou", False)
    assert not result.structural_ok
    names = by_name(result)
    assert names["key_unique:RYBH"]["success"] is False and names["key_unique:RYBH"]["examples"] == ["R1"]
    assert names["key_not_empty:RYBH"]["unexpected_count"] == 1
    assert any("RYBH is not unique" in m for m in result.messages)
    assert any("RYBH is empty on 1 of 4 rows" in m for m in result.messages)


def test_dirty_content_fails_mostly_but_not_structure(warm):
    df = hukou_frame()
    df.loc[0, "GMSFHM"] = "3.20102E+17"
    df.loc[1, "XB"] = "M"
    df.loc[2, "CSRQ"] = "19850231"
    df.loc[3, "HKZT"] = "7"
    result = validate_delivery(df, "hukou", False)
    assert result.structural_ok and not result.content_ok
    names = by_name(result)
    assert names["id_format:GMSFHM"]["observed"] == pytest.approx(0.75)
    assert names["id_format:GMSFHM"]["examples"] == ["3.20102E+17"]
    for name in ("sex_code:XB", "date:CSRQ", "code:HKZT"):
        assert names[name]["success"] is False, name
    assert any("hukou" in m and "GMSFHM" in m and "75.0%" in m for m in result.messages)
    assert result.structural_messages == [] and len(result.content_messages) == 4
    assert result.rates["valid_id_rate"] == pytest.approx(0.75)
    assert result.warnings == []  # 4 roles: fewer than the config's min_base, too few to judge


def test_rates_below_thresholds_become_warnings(warm):
    df = pd.concat([hukou_frame()] * 10, ignore_index=True)
    df["RYBH"] = [f"R{i}" for i in range(len(df))]
    df.loc[:3, "GMSFHM"] = ""  # 4 of 40 IDs missing: valid ID rate 90%, ID completeness 90%
    result = validate_delivery(df, "hukou", False)
    assert result.structural_ok and result.content_ok  # content is judged on filled values
    assert result.rates["valid_id_rate"] == pytest.approx(0.9) and result.rates["completeness_ID"] == pytest.approx(0.9)
    assert any(w.startswith("hukou: valid ID rate") and "90.00% of 40" in w for w in result.warnings)
    assert any(w.startswith("hukou: ID field completeness") for w in result.warnings)


def test_incremental_temp_delivery():
    fields = list(TABLES["temp"].fields) + ["CZLX", "CZSJ"]
    common = dict(MZ="01", GJ="CHN", HJDZ_XZQH="320102", HJDZ="x", ZZDZ_XZQH="320104", ZZDZ="y",
                  DJRQ="20250101", YXQZ="20270101", ZT="1", GXSJ="20260301080000", CZSJ="20260301080000")
    rows = [
        dict(common, ZZBH="Z1", XM="赵六", ZJLX="111", ZJHM=ID_A, XB="1", CSRQ="19850302", CZLX="I"),
        dict(common, ZZBH="Z1", XM="赵六", ZJLX="111", ZJHM=ID_A, XB="1", CSRQ="19850302", CZLX="U"),
        dict(common, ZZBH="Z2", XM="JOHN SMITH", ZJLX="414", ZJHM="E12345678", XB="1", CSRQ="19800101", CZLX="I"),
        {**{f: "" for f in fields}, "ZZBH": "Z3", "CZLX": "D", "CZSJ": "20260301090000"},
    ]
    df = pd.DataFrame(rows)[fields]
    result = validate_delivery(df, "temp", True)
    assert result.structural_ok and result.content_ok, result.messages
    names = by_name(result)
    assert "key_unique:ZZBH" not in names  # several operations on one record are normal
    assert names["id_format:ZJHM"]["checked"] == 2  # the passport and the D row are not judged
    assert names["operation:CZLX"]["success"] and names["timestamp:CZSJ"]["checked"] == 4

    bad = df.copy()
    bad.loc[3, "CZLX"] = "X"
    result = validate_delivery(bad, "temp", True)
    assert not result.structural_ok
    assert any("temp" in m and "CZLX" in m and "'X'" in m for m in result.messages)

    no_ops = df.drop(columns=["CZLX", "CZSJ"])
    result = validate_delivery(no_ops, "temp", True)
    assert not result.structural_ok
    assert any("CZLX" in m and "CZSJ" in m for m in result.messages)


def test_every_catalogue_table_has_a_working_suite(warm):
    for name, tbl in TABLES.items():
        empty = pd.DataFrame({f: pd.Series(dtype=object) for f in tbl.fields})
        result = validate_delivery(empty, name, False)
        assert result.structural_ok and result.content_ok, (name, result.messages)
        assert len(result.expectations) == len(suite_layout(name, False))


# ----------------------------------------------------------------------------------- rates

def test_quality_rates_on_a_hand_made_roles_frame():
    def role(bm, bh, key, js, xm, gm, csrq, status):
        return dict(BM=bm, BH=bh, YWZJ=key, JS=js, XM=xm, GMSFHM=gm, CSRQ=csrq, id_status=status)

    roles = pd.DataFrame([
        role("police", "hukou", "R1", "SELF", "张三", ID_A, "19850302", "VALID18"),
        role("police", "hukou", "R2", "SELF", "李四", "32010219900715002", "19900715", "FORMAT"),
        role("police", "temp", "Z1", "SELF", "JOHN", "E123", "19800101", "OTHER_DOC"),
        role("civil", "resident", "J1", "SELF", "王五", "", "", "EMPTY"),
        role("civil", "resident", "J2", "SELF", "赵六", "320102850302001", "1985-3-2", "VALID15"),
        role("family_planning", "women", "F1", "SELF", "钱七", ID_B, "19900715", "VALID18"),
        role("family_planning", "women", "F1", "ZF", "孙八", "", "", "EMPTY"),
    ])
    links = pd.DataFrame([
        dict(BM="police", BH="hukou", YWZJ="R1", JS="SELF", RKID="RK1", PPFS="ID_EXACT", PPDF=1.0),
        dict(BM="police", BH="hukou", YWZJ="R2", JS="SELF", RKID="RK2", PPFS="UNMATCHED", PPDF=0.0),
        dict(BM="police", BH="temp", YWZJ="Z1", JS="SELF", RKID="RK3", PPFS="FUZZY", PPDF=0.9),
        dict(BM="civil", BH="resident", YWZJ="J2", JS="SELF", RKID="RK1", PPFS="ID_NORMALIZED", PPDF=1.0),
        dict(BM="family_planning", BH="women", YWZJ="F1", JS="SELF", RKID="RK4", PPFS="ID_REPAIRED", PPDF=0.95),
        dict(BM="family_planning", BH="women", YWZJ="F1", JS="ZF", RKID="RK5", PPFS="POSSIBLE", PPDF=0.7),
    ])  # J1 has no link at all
    r = quality_rates(roles, links)
    assert r["roles"] == 7
    # ID required: hukou R1, R2; women F1 SELF, ZF (temp Z1 holds a passport; resident not required)
    assert r["valid_id_rate_base"] == 4 and r["valid_id_rate"] == pytest.approx(2 / 4)
    assert r["valid_id_rate_filled_base"] == 4 and r["valid_id_rate_filled"] == pytest.approx(3 / 4)
    # linked: R1, Z1, J2, F1 SELF (R2 UNMATCHED, F1 ZF POSSIBLE, J1 no link)
    assert r["link_rate"] == pytest.approx(4 / 7)
    assert r["completeness_XM"] == 1.0
    assert r["completeness_ID"] == pytest.approx(5 / 7)
    # birth applies to 6 roles (a husband role has no birth field); J1 lacks it
    assert r["completeness_CSRQ_base"] == 6 and r["completeness_CSRQ"] == pytest.approx(5 / 6)
    # all of name, ID, birth: R1, R2, Z1, J2, F1 SELF (J1 lacks ID and birth; ZF lacks ID)
    assert r["key_field_completeness"] == pytest.approx(5 / 7)

    by = r["by_table"]
    assert list(by) == ["hukou", "temp", "resident", "women"]
    assert by["hukou"]["valid_id_rate"] == 0.5 and by["hukou"]["link_rate"] == 0.5
    assert by["temp"]["valid_id_rate"] is None and by["temp"]["valid_id_rate_base"] == 0
    assert by["resident"]["valid_id_rate"] is None
    assert by["resident"]["valid_id_rate_filled"] == 1.0 and by["resident"]["link_rate"] == 0.5
    assert by["women"]["link_rate"] == 0.5 and by["women"]["completeness_CSRQ_base"] == 1

    dept = r["by_department"]
    assert list(dept) == ["police", "civil", "family_planning"]
    assert dept["police"]["roles"] == 3 and dept["police"]["link_rate"] == pytest.approx(2 / 3)
    assert dept["civil"]["valid_id_rate"] is None and dept["family_planning"]["valid_id_rate"] == 0.5

    no_links = quality_rates(roles, None)
    assert no_links["link_rate"] is None and no_links["valid_id_rate"] == r["valid_id_rate"]
    empty = quality_rates(roles.iloc[:0], links)
    assert empty["roles"] == 0 and empty["valid_id_rate"] is None and empty["by_table"] == {}


def test_delivery_rates_per_role():
    fields = TABLES["women"].fields
    rows = [
        dict(FNBH="F1", XM="钱七", GMSFHM=ID_B, CSRQ="19900715", ZF_XM="孙八", ZF_GMSFHM=ID_A),
        dict(FNBH="F2", XM="周九", GMSFHM="123", CSRQ="", ZF_XM="", ZF_GMSFHM=""),  # no husband role
        dict(FNBH="F3", XM="", GMSFHM=ID_C, CSRQ="1960-1-1", ZF_XM="吴十", ZF_GMSFHM=""),
    ]
    df = pd.DataFrame([{f: r.get(f, "") for f in fields} for r in rows])
    r = delivery_rates(df, "women")
    assert r["rows"] == 3 and r["roles"] == 5
    assert r["valid_id_rate"] == pytest.approx(3 / 5)
    assert r["completeness_XM"] == pytest.approx(4 / 5)
    assert r["completeness_ID"] == pytest.approx(4 / 5)
    assert r["completeness_CSRQ_base"] == 3 and r["completeness_CSRQ"] == pytest.approx(2 / 3)
    assert "link_rate" not in r
    # business date check: an ID born after the business date is not valid
    assert delivery_rates(df, "women", business_date="19891231")["valid_id_rate"] == pytest.approx(2 / 5)  # ID_B (1990) drops
    with pytest.raises(KeyError):
        delivery_rates(df, "nope")


def test_delivery_rates_skip_delete_rows():
    df = hukou_frame(2)
    df["CZLX"], df["CZSJ"] = ["U", "D"], ["20260301000000"] * 2
    df.loc[1, ["XM", "GMSFHM", "CSRQ"]] = ""
    r = delivery_rates(df, "hukou")
    assert r["rows"] == 1 and r["key_field_completeness"] == 1.0


# ----------------------------------------------------------------------------------- thresholds

def test_thresholds_file_is_versioned_and_covers_every_table():
    cfg = load_thresholds()
    assert cfg["version"]
    for name in TABLES:
        t = rate_thresholds(name, cfg)
        assert {"valid_id_rate", "link_rate", "key_field_completeness"} <= set(t)
        assert all(0 < v <= 1 for v in t.values())
    assert rate_thresholds("hukou", cfg)["valid_id_rate"] > rate_thresholds("resident", cfg)["completeness_ID"]


def test_rate_warnings_below_thresholds(tmp_path):
    cfg_file = tmp_path / "quality.json"
    cfg_file.write_text(json.dumps({
        "version": "7",
        "min_base": 10,
        "rates": {
            "default": {"valid_id_rate": {"warn_below": 0.9}, "link_rate": {"warn_below": 0.8}},
            "city": {"link_rate": {"warn_below": 0.95}},
            "resident": {"valid_id_rate": {"warn_below": 0.5}},
        },
    }), encoding="utf-8")
    cfg = load_thresholds(cfg_file)
    flat = {"valid_id_rate": 0.85, "valid_id_rate_base": 200, "link_rate": 0.8, "key_field_completeness": None}
    warnings = rate_warnings(flat, "hukou", cfg)
    assert len(warnings) == 1  # link_rate 0.8 is not below 0.8
    assert "hukou" in warnings[0] and "85.00%" in warnings[0] and "90.00%" in warnings[0] and "v7" in warnings[0]
    assert rate_warnings(flat, "resident", cfg) == []
    assert rate_warnings({**flat, "valid_id_rate_base": 9}, "hukou", cfg) == []  # too few to judge

    nested = {"valid_id_rate": 0.95, "link_rate": 0.9, "by_table": {"temp": {"valid_id_rate": 0.1, "link_rate": None}}}
    warnings = rate_warnings(nested, None, cfg)
    assert len(warnings) == 2
    assert warnings[0].startswith("city:") and "link rate" in warnings[0]
    assert warnings[1].startswith("temp:") and "valid ID rate" in warnings[1]
    # the shipped config warns too; callers may import it from quality.rates
    from quality import rates

    assert rates.rate_warnings({"valid_id_rate": 0.5}, "hukou")


# ----------------------------------------------------------------------------------- values

@pytest.mark.parametrize("raw, expected", [
    ("19850302", "19850302"), ("1985-3-2", "19850302"), ("1985/03/02", "19850302"),
    ("1985年3月2日", "19850302"), ("１９８５０３０２", "19850302"), ("1985-03-02 00:00:00", "19850302"),
    ("20260301093000", "20260301"), ("19850231", ""), ("", ""), ("abc", ""), ("198532", ""),
])
def test_parse_date(raw, expected):
    assert parse_date(raw) == expected


def test_id_valid():
    assert id_valid(ID_A) and id_valid(f" {ID_C.lower()} ")
    assert id_valid("320102850302001")  # 15-digit legacy number with a real date
    assert not id_valid(ID_A[:-1] + ("0" if ID_A[-1] != "0" else "1"))  # check digit wrong
    assert not id_valid("320102851302001")  # month 13
    assert not id_valid("3.20102E+17") and not id_valid("")
    assert not id_valid(ID_A, business_date="19800101")


def test_ids_valid_over_a_column_agrees_with_the_linkers_judgement():
    """The gates judge a column in array operations; the linker's `analyse_ids` is an independent
    implementation of the same rule (spec section 4): both must call the same values valid, whatever
    the layout (spaces, full-width digits, a lower-case x, legacy numbers, leap days, missing values)."""
    from linkage.ids import analyse_ids

    wide = str.maketrans("0123456789", "０１２３４５６７８９")
    values = [ID_A, ID_C, f" {ID_C.lower()} ", ID_A[:8] + " " + ID_A[8:], ID_A.translate(wide),
              make_id("110101", "20000229", "011"), make_id("110101", "19000101", "011"),
              "110101190002290011", "110101000229001", "110101000230001", "320102850302001", "18" * 9,
              ID_A[:-1] + ("0" if ID_A[-1] != "0" else "1"), make_id("110101", "20300101", "011"),
              "3.20102E+17", "", None, float("nan"), "ABCDEFGHIJKLMNOPQR", ID_A + "1"]
    column_ = pd.Series(values, dtype=object)
    for business_date in ("", "20260301"):
        got = ids_valid(column_, business_date)
        linker = analyse_ids(column_.where(column_.notna(), ""), business_date)["id_status"].isin(["VALID18", "VALID15"])
        assert got.tolist() == linker.tolist(), business_date
        assert got.tolist() == [id_valid(v if isinstance(v, str) else "", business_date) for v in values]
    # and both are right: the first seven and the legacy 1985 number; 1900 was no leap year, 2030 is to come
    assert ids_valid(column_, "20260301").tolist() == [True] * 7 + [False] * 3 + [True] + [False] * 9


def test_duplicate_header_is_a_structural_failure():
    df = hukou_frame(1)
    df = pd.concat([df, df[["XM"]]], axis=1)
    result = validate_delivery(df, "hukou", False)
    assert not result.structural_ok and "duplicate column XM" in result.messages[0]


def test_date_regex_is_exactly_the_calendar():
    import re
    from datetime import date

    from quality.values import DATE_REGEX, TIMESTAMP_REGEX

    rx = re.compile(DATE_REGEX)
    for y in [*range(1896, 2105), 1000, 1600, 1700, 1800, 2400, 9999]:
        for m in range(14):
            for d in range(33):
                try:
                    real = bool(date(y, m, d))
                except ValueError:
                    real = False
                assert bool(rx.match(f"{y:04d}{m:02d}{d:02d}")) == real, (y, m, d)
    assert re.match(TIMESTAMP_REGEX, "20240229235959") and not re.match(TIMESTAMP_REGEX, "20230229120000")
    assert not re.match(TIMESTAMP_REGEX, "20260301240000") and not re.match(TIMESTAMP_REGEX, "2026030112000")


def test_a_large_delivery_is_gated_in_worker_processes_with_the_same_verdicts(city_factory, tmp_path, monkeypatch):
    """A date delivering many rows gates its files side by side in worker processes (`day.run.check`):
    the same errors, warnings and rates, in the same order, as gating them one after another here."""
    from dataclasses import asdict

    from conftest import copy_city, settings_for
    from day import run
    from exchange import staging

    home = copy_city(city_factory(persons=400, days=1, seed=7), tmp_path / "home")
    date = min(p.name for p in (home / "landing" / "police").iterdir())
    settings = settings_for(home)
    staged = staging.stage(home, date, staging.Guards.from_config(load_thresholds(settings.quality_config)))
    here = run.check(settings, staged)
    used = []
    real = run.workers.side_by_side
    monkeypatch.setattr(run, "GATES_IN_WORKERS_FROM_ROWS", 1)
    monkeypatch.setattr(run.workers, "side_by_side", lambda fn, jobs, n: used.append(n) or real(fn, jobs, n))
    monkeypatch.setattr(run.workers, "spare_cores", lambda: 1)
    in_workers = run.check(settings, staged)
    assert used == [2]
    assert len(here.rates) >= 5 and here.warnings, asdict(here)  # the generator's city warns (an ID rate)
    assert asdict(in_workers) == asdict(here)
