"""Values checked at the edge (exchange/parse.py): control characters, over-long values, timestamps in the
future, a row cut off by a broken transfer, and numbers Excel has been at. Every delivered row ends up
loaded or rejected with a reason; nothing is altered or dropped silently."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import TABLES
from catalog.formats import FORMATS, field_format
from exchange.parse import REJECT_REASONS, cell_to_str, d14_to_int, read_delivery
from linkage.ids import analyse_ids
from tests.conftest import copy_city, run

HUKOU = TABLES["hukou"]
F = HUKOU.fields
HDR = ",".join(F)
INC_HDR = HDR + ",CZLX,CZSJ"
NEW_REASONS = ("CONTROL_CHARACTER", "FIELD_TOO_LONG", "FUTURE_TIMESTAMP", "TRUNCATED_ROW")


def row(key="R1", xm="张三", gmsfhm="320102198503020011", hjdz="南京市玄武区", zxrq="", gxsj="20260301101500") -> str:
    return f"{key},{xm},{gmsfhm},1,01,19850302,320102,{hjdz},H1,1,{zxrq},{gxsj}"


def write(tmp_path, lines, encoding="utf-8", sep="\n", trailing=True, name="f.csv"):
    p = tmp_path / name
    p.write_bytes((sep.join(lines) + (sep if trailing else "")).encode(encoding))
    return p


# the same content through each reader: the pyarrow path (UTF-8; GB18030 transcoded) and the csv.reader
# path (a blank line in the middle makes the fast path decline)
PATHS = {
    "fast-utf8": dict(encoding="utf-8", blank=False),
    "fast-gb18030": dict(encoding="gb18030", blank=False),
    "careful": dict(encoding="utf-8", blank=True),
}


def write_via(tmp_path, how, lines, trailing=True):
    opt = PATHS[how]
    if opt["blank"]:
        lines = lines[:2] + [""] + lines[2:]
    return write(tmp_path, lines, encoding=opt["encoding"], trailing=trailing)


def read(p, how="fast-utf8", **kw):
    return read_delivery(p, "csv", PATHS[how]["encoding"].upper(), F, **kw)


def test_new_reasons_have_readable_texts():
    for code in NEW_REASONS:
        text = REJECT_REASONS[code]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text) and "(" in text, code


# ------------------------------------------------------------------------------------- 1. control characters
@pytest.mark.parametrize("how", list(PATHS))
def test_control_characters_are_rejected_and_shown_visibly(tmp_path, how):
    lines = [
        HDR,
        row("R1"),
        row("R2", xm="张\x00三"),  # NUL: PostgreSQL cannot store it
        row("R3", hjdz="南京\x01市"),  # another C0 control character
        row("R4", hjdz="南京\x7f"),  # DEL
        row("R5", hjdz="南京\x85路"),  # C1 (NEL)
        row("R6", hjdz="南京\t玄武"),  # a tab is allowed
        row("R7", hjdz='"第一行\r\n第二行"'),  # so are CR and LF inside a quoted field
        row("R8"),
    ]
    p = write_via(tmp_path, how, lines)
    r = read(p, how)
    assert r.frame["RYBH"].tolist() == ["R1", "R6", "R7", "R8"]
    assert r.frame["HJDZ"].tolist()[1:3] == ["南京\t玄武", "第一行\r\n第二行"]
    rj = r.rejects
    assert rj["reason"].tolist() == ["CONTROL_CHARACTER"] * 4 and rj["key"].tolist() == ["R2", "R3", "R4", "R5"]
    assert r.received_rows == 8
    off = 1 if PATHS[how]["blank"] else 0
    assert rj["line"].tolist() == [3 + off, 4 + off, 5 + off, 6 + off]
    for text in rj["raw"]:
        assert not any(ch in text for ch in "\x00\x01\x7f\x85")
    assert rj["raw"].iloc[0] == row("R2", xm="张\\x00三")
    assert "\\x01" in rj["raw"].iloc[1] and "\\x7f" in rj["raw"].iloc[2] and "\\u0085" in rj["raw"].iloc[3]
    assert "XM" in rj["detail"].iloc[0] and "U+0000" in rj["detail"].iloc[0]
    assert "HJDZ" in rj["detail"].iloc[3] and "U+0085" in rj["detail"].iloc[3]


def test_control_character_in_a_row_already_rejected_is_escaped_too(tmp_path):
    p = write(tmp_path, [HDR, row("R1"), "R2,\x00短行", row("R3")])
    r = read(p)
    (rj,) = r.rejects.to_dict("records")
    assert rj["reason"] == "FIELD_COUNT" and rj["raw"] == "R2,\\x00短行" and "\x00" not in rj["raw"]


# ---------------------------------------------------------------------------------------- 2. too long
def test_values_longer_than_the_catalogue_allows_are_rejected(tmp_path):
    assert field_format("hukou", "HJDZ").max_length == 200
    ten_mb = "路" * 10_000_000
    long_id = "3201021985030200112233445"  # 25 characters: no spelling of an ID is that long
    lines = [HDR, row("R1", hjdz="路" * 200),  # exactly at the limit
             row("R2", hjdz="路" * 201),
             row("R3", hjdz="路 " * 200),  # 400 characters, 200 once whitespace is removed
             row("R4", hjdz=ten_mb),
             row("R5", gmsfhm=long_id),
             row("R6", xm="未说明", gmsfhm="3.20102E+17")]
    p = write(tmp_path, lines)
    r = read(p, table="hukou")
    assert r.frame["RYBH"].tolist() == ["R1", "R3", "R6"]
    rj = r.rejects
    assert rj["reason"].tolist() == ["FIELD_TOO_LONG"] * 3 and rj["line"].tolist() == [3, 5, 6]
    d = rj["detail"].tolist()
    assert "HJDZ" in d[0] and "201" in d[0] and "200" in d[0]
    assert "HJDZ" in d[1] and "10000000" in d[1]
    assert "GMSFHM" in d[2] and "25" in d[2] and long_id not in "".join(d)  # no ID number in a detail
    # without the table name nothing is checked (the behaviour before)
    assert read(p).frame["RYBH"].tolist() == ["R1", "R2", "R3", "R4", "R5", "R6"]


def test_too_long_incremental_fields_and_spellings_the_pipeline_understands(tmp_path):
    lines = [INC_HDR,
             row("R1") + ",I,2026年03月01日 10时15分30秒",  # a dirty but readable CZSJ
             row("R2") + ",UPDATE,20260301101500",  # CZLX C1
             row("R3", xm="买买提·吐尔逊") + ",U,20260301101500"]
    lines.append(lines[1].replace("张三,320102198503020011,1,", "张三,320102198503020011,未说明的性别,"))
    p = write(tmp_path, lines)
    r = read_delivery(p, "csv", "UTF-8", F, incremental=True, table="hukou")
    assert r.frame["RYBH"].tolist() == ["R1", "R3", "R1"]
    assert r.rejects["reason"].tolist() == ["FIELD_TOO_LONG"] and "CZLX" in r.rejects["detail"].iloc[0]


def test_room_for_every_spelling_the_normalisers_accept():
    """formats.max_length must not reject a value linkage/ reads: sex words, dirty dates and timestamps, IDs
    damaged by Excel."""
    from linkage.normalise import _SEX_MAP

    assert max(map(len, _SEX_MAP)) <= field_format("hukou", "XB").max_length
    for spelling in ("1985年03月02日", "1985-03-02T00:00:00+08:00", "1985-03-02 00:00:00.000000"):
        assert len(spelling.replace(" ", "")) <= field_format("hukou", "CSRQ").max_length
    for spelling in ("2026年03月01日10时15分30秒", "2026-03-01T10:15:30.123456"):
        assert len(spelling) <= field_format("hukou", "GXSJ").max_length
    for spelling in ("320102198503020011.0", "3.2010219850302E+17", "3.4112419861110118E+17"):
        assert len(spelling) <= field_format("hukou", "GMSFHM").max_length
    for table, fields in FORMATS.items():
        assert set(fields) == set(TABLES[table].fields) | {"CZLX", "CZSJ"}


# ----------------------------------------------------------------------------------- 3. future timestamps
def test_timestamps_after_the_business_date_are_rejected(tmp_path):
    lines = [HDR,
             row("R1", gxsj="20260302235959"),  # business date 20260301 + 1 day, last second: fine
             row("R2", gxsj="20260303000000"),  # one second later
             row("R3", gxsj="2026-03-03 08:00:00"),  # dirty spelling
             row("R4", gxsj="20991231000000"),
             row("R5", gxsj="abc"),  # unreadable: not this check's business (kept as before)
             row("R6", gxsj=""),
             row("R7", gxsj=" ２０９９０１０１"),
             row("R8", gxsj="2025-12-31 23:59:59")]
    p = write(tmp_path, lines)
    r = read(p, business_date="20260301")
    assert r.frame["RYBH"].tolist() == ["R1", "R5", "R6", "R8"]
    rj = r.rejects
    assert rj["reason"].tolist() == ["FUTURE_TIMESTAMP"] * 4 and rj["key"].tolist() == ["R2", "R3", "R4", "R7"]
    assert "GXSJ" in rj["detail"].iloc[1] and "20260303080000" in rj["detail"].iloc[1]
    assert "20260302235959" in rj["detail"].iloc[1]
    # a margin of 0 days: the end of the business date itself
    r0 = read(p, business_date="20260301", future_margin_days=0)
    assert r0.frame["RYBH"].tolist() == ["R5", "R6", "R8"]
    # no business date: no check (the behaviour before)
    assert len(read(p).frame) == 8


def test_future_operation_time_in_an_incremental(tmp_path):
    lines = [INC_HDR, row("R1") + ",U,20990101000000",  # CZSJ in 2099 would freeze the record forever
             row("R2") + ",U,2026-03-02 10:00",
             row("R3", gxsj="20990101000000") + ",D,20260301120000"]  # GXSJ counts as well
    p = write(tmp_path, lines)
    r = read_delivery(p, "csv", "UTF-8", F, incremental=True, business_date="20260301")
    assert r.frame["RYBH"].tolist() == ["R2"]
    assert r.rejects["reason"].tolist() == ["FUTURE_TIMESTAMP"] * 2
    assert "CZSJ" in r.rejects["detail"].iloc[0] and "GXSJ" in r.rejects["detail"].iloc[1]


# reference: the plain definition the vectorised pre-filter must agree with
ts_text = st.one_of(
    st.builds(lambda y, mo, d, h, fmt: fmt.format(y=y, mo=mo, d=d, h=h),
              st.integers(2024, 2028), st.integers(1, 12), st.integers(1, 31), st.integers(0, 23),
              st.sampled_from(["{y}{mo:02d}{d:02d}{h:02d}0000", "{y}-{mo}-{d} {h}:05", "{y}/{mo:02d}/{d:02d}",
                               " {y}.{mo}.{d}", "{y}年{mo}月{d}日 {h}时", "{y}{mo:02d}{d:02d}",
                               "{y}-{mo:02d}-{d:02d}T{h}:00:00.5", "\u3000{y}{mo:02d}{d:02d}{h:02d}0000",
                               "{y}{mo:02d}{d:02d} {h:02d}0000", "\t{y}-{mo}-{d}"])),
    st.text(alphabet=st.sampled_from(list("20261-/ 年月日:T３")), max_size=16),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ts_text, min_size=1, max_size=20), st.sampled_from(["20260301", "20261231", "20270228"]),
       st.integers(0, 3))
def test_future_prefilter_agrees_with_the_definition(values, bdate, margin):
    from exchange.parse import _future_limit, _future_mask

    limit = _future_limit(bdate, margin)
    expected = d14_to_int(values) > limit
    assert _future_mask(np.array(values, dtype=object), limit).tolist() == expected.tolist()


# ------------------------------------------------------------------------------------ 4. truncated last row
@pytest.mark.parametrize("how", list(PATHS))
def test_last_row_cut_after_a_comma_is_rejected(tmp_path, how):
    lines = [HDR, row("R1"), row("R2", gxsj="")]
    r = read(write_via(tmp_path, how, lines, trailing=False), how)
    assert r.frame["RYBH"].tolist() == ["R1"]
    (rj,) = r.rejects.to_dict("records")
    assert rj["reason"] == "TRUNCATED_ROW" and rj["key"] == "R2" and rj["raw"] == row("R2", gxsj="")
    assert rj["line"] == (4 if PATHS[how]["blank"] else 3) and "GXSJ" in rj["detail"]
    assert r.received_rows == 2


@pytest.mark.parametrize("how", list(PATHS))
def test_rows_that_are_not_cut_off_load(tmp_path, how):
    lines = [HDR, row("R1"), row("R2", gxsj="")]
    assert read(write_via(tmp_path, how, lines, trailing=True), how).frame["RYBH"].tolist() == ["R1", "R2"]
    lines = [HDR, row("R1", gxsj=""), row("R2")]  # last field filled, no final line break: complete
    assert read(write_via(tmp_path, how, lines, trailing=False), how).frame["RYBH"].tolist() == ["R1", "R2"]
    p = write(tmp_path, [HDR, row("R1"), row("R2", gxsj=""), "  "], trailing=False)  # a blank last line follows
    assert read(p).frame["RYBH"].tolist() == ["R1", "R2"]


def test_truncated_row_is_a_csv_matter_only(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(list(F))
    wb.active.append(["R1", "张三", "320102198503020011", "1", "01", "19850302", "320102", "x", "H1", "1", "", ""])
    p = tmp_path / "f.xlsx"
    wb.save(p)
    assert read_delivery(p, "xlsx", None, F).frame["RYBH"].tolist() == ["R1"]


# --------------------------------------------------------------------------------- 5. numbers from Excel
ID_REAL = 341124198611101161  # a valid ID (born 19861110, female)


def _xlsx(tmp_path, header, rows, name="f.xlsx"):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(header))
    for r in rows:
        ws.append(r)
    p = tmp_path / name
    wb.save(p)
    return p


def hukou_row(key, gmsfhm="320102198503020011", csrq="19850302", zxrq=None, xzqh="320102"):
    return [key, "张三", gmsfhm, "1", "01", csrq, xzqh, "x", "H1", "1", zxrq, "20260301101500"]


def _with_integer_literals(p, literals: dict[int, int]):
    """Rewrite number cells as exact integer literals (openpyxl itself writes big integers as floats;
    other writers put every digit in the file, and openpyxl then reads an int)."""
    import zipfile

    with zipfile.ZipFile(p) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    for placeholder, literal in literals.items():
        assert f"<v>{placeholder}</v>" in sheet
        sheet = sheet.replace(f"<v>{placeholder}</v>", f"<v>{literal}</v>")
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(p, "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    return p


def test_xlsx_id_numbers_keep_only_the_digits_excel_kept(tmp_path):
    rows = [hukou_row("R1", float(ID_REAL)),  # read back as 341124198611101184.0: 3 invented digits
            hukou_row("R2", 341124198611101000.0),  # what Excel stores when the ID is typed as a number
            hukou_row("R3", 4242),  # → the integer literal 341124198611101184, which a float holds exactly
            hukou_row("R4", 4343),  # → the integer literal 341124198611101161: no float can hold it
            hukou_row("R5", 320102850302001.0),  # a 15-digit legacy number fits exactly
            hukou_row("R6", "341124198611101161")]  # text cells are never touched
    p = _with_integer_literals(_xlsx(tmp_path, F, rows), {4242: 341124198611101184, 4343: ID_REAL})
    r = read_delivery(p, "xlsx", None, F)
    got = r.frame["GMSFHM"].tolist()
    assert got == ["341124198611101000", "341124198611101000", "341124198611101000", str(ID_REAL),
                   "320102850302001", "341124198611101161"]
    assert r.frame["HJDZ_XZQH"].tolist() == ["320102"] * 6  # numbers in other fields as before
    ids = analyse_ids(r.frame["GMSFHM"], "20260301")
    assert ids["id_damage"].tolist()[:3] == ["EXCEL_000"] * 3  # linkage repairs it from name and birth date
    assert ids["id_prefix"].iloc[0] == "341124198611101" and ids["id_status"].iloc[0] == "CHECKSUM"


def test_xlsx_disability_card_number_and_husband_id(tmp_path):
    t = TABLES["disabled"]
    card = 34112419861110116142  # 20 digits: the ID + category + grade
    base = {f: "" for f in t.fields}
    rows = []
    for k, v in enumerate([float(card), "34112419861110116142"]):
        d = dict(base, CJRZH=v, XM="张三", GMSFHM=float(ID_REAL), ZT="1", GXSJ="20260301101500", HJDZ=f"x{k}")
        rows.append([d[f] for f in t.fields])
    r = read_delivery(_xlsx(tmp_path, t.fields, rows), "xlsx", None, t.fields, table="disabled")
    assert r.frame["CJRZH"].tolist() == ["34112419861110100000", "34112419861110116142"]
    assert r.frame["GMSFHM"].tolist() == ["341124198611101000"] * 2 and r.rejects.empty
    w = TABLES["women"]
    d = {f: "" for f in w.fields} | {"FNBH": "W1", "XM": "李四", "GMSFHM": "110101199001011237",
                                      "ZF_XM": "张三", "ZF_GMSFHM": float(ID_REAL), "GXSJ": "20260301101500"}
    r = read_delivery(_xlsx(tmp_path, w.fields, [[d[f] for f in w.fields]], "w.xlsx"), "xlsx", None, w.fields)
    assert r.frame["ZF_GMSFHM"].tolist() == ["341124198611101000"]


@pytest.mark.parametrize("value, text", [
    (31726, "19861110"), (31726.0, "19861110"),  # Excel serial day numbers (1900 date system)
    (59, "19000228"), (61, "19000301"), (1, "19000101"),
    (60, "60"),  # Excel's 1900-02-29 does not exist: left as delivered
    (1985, "1985"), (2001, "2001"),  # a bare year, not a serial number
    (19850302, "19850302"), (850302, "850302"), (0, "0"), (-5, "-5"), (31726.5, "31726.5"),
    (dt.datetime(1985, 3, 2), "19850302"), (dt.datetime(1985, 3, 2, 8, 30), "19850302"), (dt.date(1985, 3, 2), "19850302"),
])
def test_xlsx_numbers_and_datetimes_in_date_fields(tmp_path, value, text):
    p = _xlsx(tmp_path, F, [hukou_row("R1", csrq=value, zxrq=value)])
    r = read_delivery(p, "xlsx", None, F)
    assert r.frame[["CSRQ", "ZXRQ"]].values.tolist() == [[text, text]]
    assert r.frame["HH"].tolist() == ["H1"]


def test_xlsx_serial_days_of_a_1904_workbook(tmp_path):
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    wb = openpyxl.Workbook()
    wb.epoch = CALENDAR_MAC_1904
    wb.active.append(list(F))
    wb.active.append(hukou_row("R1", csrq=30264))
    p = tmp_path / "mac.xlsx"
    wb.save(p)
    assert read_delivery(p, "xlsx", None, F).frame["CSRQ"].tolist() == ["19861110"]  # 1904-01-01 + 30264 days


def test_bad_arguments(tmp_path):
    p = write(tmp_path, [HDR, row("R1")])
    with pytest.raises(ValueError, match="business_date"):
        read(p, business_date="2026-03-01")
    with pytest.raises(ValueError, match="negative"):
        read(p, business_date="20260301", future_margin_days=-1)
    with pytest.raises(ValueError, match="unknown table"):
        read(p, table="nope")


def test_xlsx_date_cell_in_a_timestamp_field_and_money(tmp_path):
    rows = [hukou_row("R1")]
    rows[0][-1] = dt.datetime(2026, 3, 1)  # midnight: still a full D14
    t = TABLES["dibao"]
    r = read_delivery(_xlsx(tmp_path, F, rows), "xlsx", None, F)
    assert r.frame["GXSJ"].tolist() == ["20260301000000"]
    d = {f: "" for f in t.fields} | {"DBRYBH": "D1", "XM": "张三", "YBZJE": 350.1 * 3, "GXSJ": "20260301101500"}
    r = read_delivery(_xlsx(tmp_path, t.fields, [[d[f] for f in t.fields]], "d.xlsx"), "xlsx", None, t.fields,
                      table="dibao")
    assert r.frame["YBZJE"].tolist() == ["1050.3"] and r.rejects.empty  # not 1050.3000000000002
    assert cell_to_str(350.1 * 3) == "1050.3000000000002"  # fields without a format keep every digit


# --------------------------------------------------------------------------------- end to end (item 1)
def test_nul_byte_in_a_delivery_is_rejected_and_the_date_commits(city_factory, tmp_path, db_url):
    city = city_factory(persons=500, days=1, seed=11)
    home = copy_city(city, tmp_path / "home")
    folder = home / "landing" / "police" / "20260301"
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    entry = next(f for f in manifest["files"] if f["table"] == "hukou")
    path = folder / entry["path"]
    data = path.read_bytes()
    lines = data.split(b"\r\n") if b"\r\n" in data else data.split(b"\n")
    target = 6  # physical line 6: the 5th data row
    key = lines[target - 1].split(b",", 1)[0].decode("gb18030")
    head, rest = lines[target - 1].split(b",", 1)
    lines[target - 1] = head + b",\x00" + rest  # a NUL at the start of XM
    data = (b"\r\n" if b"\r\n" in data else b"\n").join(lines)
    path.write_bytes(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), "utf-8")

    results = run(home, db_url, ["20260301"])
    assert "20260301" in results
    figs = results["20260301"]["departments"]["police"]["tables"]["hukou"]
    assert figs["checksum_ok"] and figs["rejected_rows"] >= 1
    assert figs["loaded_rows"] == figs["received_rows"] - figs["rejected_rows"] == entry["rows"] - figs["rejected_rows"]
    rejects_file = home / "out" / "rejects" / "20260301" / "police_hukou_rejects.csv"
    assert b"\x00" not in rejects_file.read_bytes()
    rj = pd.read_csv(rejects_file, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    mine = rj[rj["reason"] == "CONTROL_CHARACTER"]
    assert mine["line"].tolist() == [str(target)] and mine["raw"].iloc[0].startswith(key + ",\\x00")
    from store import db

    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            hukou = db.read_frame(conn, db.SOURCE_TABLES["hukou"])
    finally:
        engine.dispose()
    live = hukou[hukou["_deleted"] == "0"]
    assert key not in set(live["RYBH"]) and len(live) == figs["loaded_rows"]
