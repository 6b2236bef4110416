"""Reading delivered CSV/XLSX files (exchange/parse.py)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.parse import REJECT_COLUMNS, StructuralError, cell_to_str, d14_to_int, normalise_d14, read_delivery
from catalog import TABLES

HUKOU = TABLES["hukou"]
F = HUKOU.fields
HDR = ",".join(F)


def row(key="R1", xm="张三", gmsfhm="320102198503020011", hjdz="南京市玄武区", gxsj="20260301101500") -> str:
    return f"{key},{xm},{gmsfhm},1,01,19850302,320102,{hjdz},H1,1,,{gxsj}"


def write(tmp_path, lines, encoding="utf-8", bom=False, sep="\n", name="f.csv", trailing=True):
    text = sep.join(lines) + (sep if trailing else "")
    data = text.encode(encoding)
    if bom:
        data = b"\xef\xbb\xbf" + data
    p = tmp_path / name
    p.write_bytes(data)
    return p


def read(p, enc="UTF-8", incremental=False, fields=F, **kw):
    return read_delivery(p, "csv", enc, fields, incremental=incremental, **kw)


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("sep", ["\n", "\r\n"])
def test_utf8_with_and_without_bom(tmp_path, bom, sep):
    p = write(tmp_path, [HDR, row("R1"), row("R2", xm="买买提·吐尔逊")], bom=bom, sep=sep)
    r = read(p, "utf-8")
    assert list(r.frame.columns) == list(F) + ["_line"]
    assert r.header == list(F) and r.frame.columns[0] == "RYBH"  # BOM not part of the first code
    assert r.frame["XM"].tolist() == ["张三", "买买提·吐尔逊"]
    assert r.frame["_line"].tolist() == [2, 3] and r.frame["_line"].dtype == np.int64
    assert r.received_rows == 2 and r.rejects.empty and list(r.rejects.columns) == list(REJECT_COLUMNS)
    assert all(isinstance(v, str) for v in r.frame["ZXRQ"]) and r.frame["ZXRQ"].tolist() == ["", ""]


def test_gb18030_four_byte_characters(tmp_path):
    names = ["𠀀明", "㐀华", "王\u00b7五"]
    p = write(tmp_path, [HDR] + [row(f"R{i}", xm=x) for i, x in enumerate(names)], encoding="gb18030", sep="\r\n")
    assert "𠀀".encode("gb18030") == b"\x95\x32\x82\x36"  # a four-byte sequence (gbk cannot decode it)
    r = read(p, "gb18030")
    assert r.frame["XM"].tolist() == names and r.rejects.empty


def test_ids_and_values_kept_exactly(tmp_path):
    p = write(tmp_path, [HDR, row(gmsfhm="000102198503020011", hjdz="  spaced  ", gxsj="NA"),
                         row("R2", gmsfhm="3.20102E+17", xm="nan")])
    r = read(p)
    assert r.frame["GMSFHM"].tolist() == ["000102198503020011", "3.20102E+17"]
    assert r.frame["HJDZ"].iloc[0] == "  spaced  " and r.frame["GXSJ"].iloc[0] == "NA"
    assert r.frame["XM"].iloc[1] == "nan"


def test_quoted_commas_quotes_newlines_and_line_numbers(tmp_path):
    lines = [
        HDR,
        row("R1", hjdz='"南京,玄武 ""某""路"'),
        row("R2", hjdz='"第一行\n第二行\n第三行"'),
        "",  # blank line in the middle: not a row
        row("R3", hjdz='"a\r\nb"'),
        row("R4"),
        "",
        "",
    ]
    p = write(tmp_path, lines, sep="\n")
    r = read(p)
    assert r.frame["RYBH"].tolist() == ["R1", "R2", "R3", "R4"]
    assert r.frame["HJDZ"].tolist() == ['南京,玄武 "某"路', "第一行\n第二行\n第三行", "a\r\nb", "南京市玄武区"]
    # R2 starts on line 3 and spans 3 lines, line 6 is blank, R3 spans 7–8, R4 is on line 9
    assert r.frame["_line"].tolist() == [2, 3, 7, 9]
    assert r.received_rows == 4


def test_field_count_and_line_after_multiline(tmp_path):
    p = write(tmp_path, [HDR, row("R1", hjdz='"x\ny"'), "R2,短行", row("R3") + ",extra", row("R4")])
    r = read(p)
    assert r.frame["RYBH"].tolist() == ["R1", "R4"] and r.frame["_line"].tolist() == [2, 6]
    rj = r.rejects
    assert rj["line"].tolist() == [4, 5] and set(rj["reason"]) == {"FIELD_COUNT"}
    assert rj["raw"].tolist() == ["R2,短行", row("R3") + ",extra"]
    assert rj["key"].tolist() == ["R2", "R3"]
    assert "expected 12 fields, got 2" in rj["detail"].iloc[0]
    assert r.received_rows == 4 == len(r.frame) + len(rj)


def test_undecodable_bytes(tmp_path):
    good = row("R1").encode("gb18030")
    bad = row("R2", xm="李四").encode("gb18030").replace("李".encode("gb18030"), b"\xff\x80")
    p = tmp_path / "f.csv"
    p.write_bytes(HDR.encode() + b"\r\n" + good + b"\r\n" + bad + b"\r\n" + row("R3").encode("gb18030") + b"\r\n")
    r = read(p, "GB18030")
    assert r.frame["RYBH"].tolist() == ["R1", "R3"] and r.frame["_line"].tolist() == [2, 4]
    (rj,) = r.rejects.to_dict("records")
    assert rj["line"] == 3 and rj["reason"] == "UNDECODABLE" and rj["key"] == "R2"
    assert rj["raw"].startswith("R2,\\xff\\x80四,")


def test_utf8_declared_but_gb18030_delivered(tmp_path):
    p = write(tmp_path, [HDR, row("R1", xm="Li", hjdz="x"), row("R2")], encoding="gb18030")
    r = read(p, "UTF-8")
    assert r.frame["RYBH"].tolist() == ["R1"]
    assert r.rejects["reason"].tolist() == ["UNDECODABLE"] and "\\x" in r.rejects["raw"].iloc[0]


def test_empty_key_and_blank_trailing_lines(tmp_path):
    p = write(tmp_path, [HDR, row(""), row("   "), row("R3"), "", "  ", ""])
    r = read(p)
    assert r.frame["RYBH"].tolist() == ["R3"]
    assert r.rejects["reason"].tolist() == ["EMPTY_KEY", "EMPTY_KEY"] and r.rejects["line"].tolist() == [2, 3]
    assert r.received_rows == 3


def test_incremental_operations(tmp_path):
    hdr = HDR + ",CZLX,CZSJ"
    p = write(tmp_path, [hdr, row("R1") + ",I,20260302101500", row("R2") + ", u ,2026-03-02 10:15:00",
                         row("R3") + ",d,", row("R4") + ",X,20260302101500", row("R5") + ",U,2026-02-30 10:00",
                         row("R6") + ",,20260302101500"])
    r = read(p, incremental=True)
    assert r.frame["RYBH"].tolist() == ["R1", "R2", "R3"]
    assert r.frame["CZLX"].tolist() == ["I", " u ", "d"]  # raw kept; apply normalises
    assert r.rejects["reason"].tolist() == ["BAD_OPERATION"] * 3
    assert r.rejects["line"].tolist() == [5, 6, 7]
    assert "CZSJ" in r.rejects["detail"].iloc[1]


def test_structural_errors(tmp_path):
    with pytest.raises(StructuralError, match="RYBH"):
        read(write(tmp_path, ["XM,GMSFHM", "张三,1"]))
    with pytest.raises(StructuralError, match="CZLX"):
        read(write(tmp_path, [HDR, row()]), incremental=True)
    with pytest.raises(StructuralError, match="appears twice"):
        read(write(tmp_path, ["RYBH,XM,xm", "R1,a,b"]))
    with pytest.raises(StructuralError, match="empty"):
        read(write(tmp_path, ["", ""]))
    with pytest.raises(StructuralError, match="encoding"):
        read(write(tmp_path, [HDR]), "big5")
    with pytest.raises(StructuralError, match="format"):
        read_delivery(write(tmp_path, [HDR]), "json", "UTF-8", F)


def test_header_cleaning_and_extra_columns(tmp_path):
    p = write(tmp_path, [" rybh ,姓名(XM),备注（BZ）,", "R1,张三,x,"], bom=True)
    r = read(p, fields=F)
    assert r.header == ["RYBH", "XM", "BZ", "_col4"]
    assert r.extra_fields == ("BZ", "_col4") and "GMSFHM" in r.missing_fields
    assert r.frame.loc[0, "BZ"] == "x" and r.raw_header[1] == "姓名(XM)"


def test_header_only_and_no_key_check(tmp_path):
    r = read(write(tmp_path, [HDR]))
    assert r.frame.empty and list(r.frame.columns) == list(F) + ["_line"] and r.received_rows == 0
    r = read_delivery(write(tmp_path, ["A,B", ",1"]), "csv", "UTF-8", None)  # no key known: no EMPTY_KEY
    assert r.frame["A"].tolist() == [""]


def test_last_line_without_newline(tmp_path):
    p = write(tmp_path, [HDR, row("R1"), row("R2")], trailing=False)
    r = read(p)
    assert r.frame["_line"].tolist() == [2, 3]


# ---------------------------------------------------------------------------------------------- xlsx
def test_xlsx_numbers_dates_and_row_numbers(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(F))
    ws.append(["R1", "张三", 320102000000000000.0, 1, "01", dt.datetime(1985, 3, 2), 320102, "南京", None, "1",
               None, dt.datetime(2026, 3, 1, 10, 15, 0)])
    ws.append([None] * 5)  # entirely empty: skipped
    ws.append(["R2", "李四", "320102198503020011", 2.0, "01", dt.date(1990, 1, 31), "320102", "x", 0.1, 1e-05,
               "", "20260301000000"])
    ws.append(["R3", "王五", "x", 1, "01", "19850302", "320102", "x", "H", "1", "", "", "overflow"])
    ws.append([None, "无主键", "x"])
    p = tmp_path / "f.xlsx"
    wb.save(p)
    r = read_delivery(p, "xlsx", None, F)
    f = r.frame
    assert f["RYBH"].tolist() == ["R1", "R2"] and f["_line"].tolist() == [2, 4]
    assert f["GMSFHM"].tolist() == ["320102000000000000", "320102198503020011"]
    assert f["XB"].tolist() == ["1", "2"] and f["HJDZ_XZQH"].tolist() == ["320102", "320102"]
    assert f["CSRQ"].tolist() == ["19850302", "19900131"]
    assert f["GXSJ"].tolist() == ["20260301101500", "20260301000000"]
    assert f["HH"].tolist() == ["", "0.1"] and f["HKZT"].tolist() == ["1", "0.00001"]
    assert r.rejects[["line", "reason"]].values.tolist() == [[5, "FIELD_COUNT"], [6, "EMPTY_KEY"]]
    assert r.rejects["raw"].iloc[0].endswith(",overflow") and r.received_rows == 4


def test_xlsx_header_not_on_first_row_and_structural(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A3"], ws["B3"] = "RYBH", "XM"
    ws["A4"], ws["B4"] = "R1", "张三"
    p = tmp_path / "f.xlsx"
    wb.save(p)
    r = read_delivery(p, "xlsx", "", F)
    assert r.frame["_line"].tolist() == [4] and r.header == ["RYBH", "XM"]
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(StructuralError, match="xlsx"):
        read_delivery(bad, "xlsx", None, F)


@pytest.mark.parametrize("value, text", [
    ("abc", "abc"), (None, ""), (7, "7"), (320102000000000000.0, "320102000000000000"), (2.5, "2.5"),
    (1e-07, "0.0000001"), (-0.0, "0"), (True, "TRUE"),
    (dt.datetime(2026, 3, 2), "20260302"), (dt.datetime(2026, 3, 2, 0, 0, 1), "20260302000001"),
    (dt.date(2026, 3, 2), "20260302"),
])
def test_cell_to_str(value, text):
    assert cell_to_str(value) == text


# ------------------------------------------------------------------------------------------ timestamps
def test_d14_normalisation():
    vals = ["20260302101500", "2026-03-02 10:15:00", "2026/3/2 9:05", "2026年3月2日 10时15分30秒", "20260302",
            "2026-03-02T10:15:00.5", "２０２６０３０２１０１５００", "", "  ", "20260230101500", "abc", "2026-13-01",
            "20260302246000"]
    assert normalise_d14(vals).tolist() == [
        "20260302101500", "20260302101500", "20260302090500", "20260302101530", "20260302000000",
        "20260302101500", "20260302101500", "", "", "", "", "", ""]
    assert d14_to_int(["", "abc", "20260302101500"]).tolist() == [-1, -2, 20260302101500]
    assert d14_to_int(["20240229000000", "20230229000000"]).tolist() == [20240229000000, -2]


# ------------------------------------------------------------------------------------- property: paths
cell = st.text(alphabet=st.sampled_from(list('ab,"\n\r 张𠀀')), max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(cell, cell), min_size=1, max_size=8))
def test_round_trip_matches_csv_writer(tmp_path_factory, rows):
    """Whatever the quoting, what pandas' CSV writer wrote comes back cell for cell, with line numbers."""
    tmp = tmp_path_factory.mktemp("rt")
    df = pd.DataFrame([("K%d" % i, a, b) for i, (a, b) in enumerate(rows)], columns=["RYBH", "XM", "HJDZ"])
    p = tmp / "f.csv"
    df.to_csv(p, index=False, encoding="gb18030", lineterminator="\r\n")
    r = read_delivery(p, "csv", "GB18030", None, key="RYBH")
    assert r.rejects.empty
    assert r.frame[["RYBH", "XM", "HJDZ"]].values.tolist() == df.values.tolist()
    text = p.read_bytes().decode("gb18030")
    import io
    physical = io.StringIO(text, newline="").readlines()
    for rybh, line in zip(r.frame["RYBH"], r.frame["_line"]):
        assert physical[line - 1].startswith(rybh + ",")


raw_text = st.lists(st.text(alphabet=st.sampled_from(list('k1,"\n\r \t张\x00\x85')), max_size=12), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(raw_text)
def test_fast_and_careful_paths_agree(lines):
    """The pyarrow path either declines or gives exactly what the csv.reader path gives."""
    from exchange.parse import _csv_careful, _csv_fast

    data = ("A,B\n" + "\n".join(lines)).encode("utf-8")
    fast = _csv_fast(data, 0)
    if fast is None:
        return
    careful = _csv_careful(data.decode("utf-8"), "mem.csv")
    assert fast.header == careful.header
    assert [c.tolist() for c in fast.columns] == [c.tolist() for c in careful.columns]
    assert fast.lines.tolist() == careful.lines.tolist()
    assert fast.pre_rejects == careful.pre_rejects == []
    pos = np.arange(len(fast.lines))
    assert fast.raw_of(pos) == careful.raw_of(pos)
    assert fast.open_end == careful.open_end  # what TRUNCATED_ROW relies on
    assert fast.maybe_control == careful.maybe_control  # what CONTROL_CHARACTER relies on
    if fast.max_len is not None:  # a bound of the value lengths, for FIELD_TOO_LONG
        assert all(max(map(len, c), default=0) <= m for c, m in zip(careful.columns, fast.max_len))
