"""Names, sex codes and dates: one test per kind of dirty value in spec section 2."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.normalise import (
    MIDDLE_DOT,
    fold_t2s,
    is_blank,
    normalise_date,
    normalise_name,
    normalise_sex,
    t2s_table,
)


def names(values):
    return normalise_name(pd.Series(values))


# -------------------------------------------------------------------------------------------- names
def test_traditional_folds_to_simplified_in_key_only():
    trad = list("陳劉張黃趙吳鄭鍾錢蘇")
    simp = list("陈刘张黄赵吴郑钟钱苏")
    out = names(trad)
    assert out["name"].tolist() == trad  # what the department sent is kept
    assert out["name_key"].tolist() == simp
    assert fold_t2s(pd.Series(trad)).tolist() == simp
    assert names(["陳小明", "張偉", "歐陽鋒"])["name_key"].tolist() == ["陈小明", "张伟", "欧阳锋"]


def test_simplified_names_unchanged():
    common = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕"
              "丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴"
              "严莫孔向常汤康易乔赖文施洪辛柯庄伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰飞鹏辉建国志红梅")
    out = names(list(common))
    assert out["name_key"].tolist() == list(common)
    # no simplified target is itself folded again, and characters that are valid simplified
    # characters in their own right (乾 於 覆 …) are kept, so surnames like 於/于 stay apart
    table = t2s_table()
    assert not any(ord(v) in table for v in table.values())
    assert names(["乾隆", "於小明", "于小明"])["name_key"].tolist() == ["乾隆", "於小明", "于小明"]


def test_whitespace_removed_in_cjk_names_collapsed_in_latin():
    out = names(["王 小 明", " 王\u3000小明\t", "王\u00a0小\u200b明", "  John   SMITH ", "Mary\u3000Ann  Lee"])
    assert out["name"].tolist() == ["王小明", "王小明", "王小明", "John SMITH", "Mary Ann Lee"]
    assert out["name_key"].tolist() == ["王小明", "王小明", "王小明", "JOHN SMITH", "MARY ANN LEE"]


def test_fullwidth_latin_letters():
    out = names(["ＪＯＨＮ　ｓｍｉｔｈ", "ｊｏｈｎ smith"])
    assert out["name"].tolist() == ["JOHN smith", "john smith"]
    assert out["name_key"].tolist() == ["JOHN SMITH", "JOHN SMITH"]


def test_lookalike_dots_become_middle_dot():
    dots = ["・", "•", "．", ".", "·", "‧", "∙", "⋅", "･", "。", " · ", " . ", "··"]
    out = names([f"阿依古丽{d}买买提" for d in dots])
    assert out["name"].eq(f"阿依古丽{MIDDLE_DOT}买买提").all()
    assert out["name_key"].eq(f"阿依古丽{MIDDLE_DOT}买买提").all()
    # an ASCII full stop in a Latin name is a full stop
    assert names(["J. R. SMITH"])["name"].tolist() == ["J. R. SMITH"]
    # traditional characters around a dot fold too
    assert names(["熱合曼・艾力"])["name_key"].tolist() == ["热合曼·艾力"]


def test_unknown_character_box_is_kept():
    out = names(["王□明", "王 □ 明", "陳□"])
    assert out["name"].tolist() == ["王□明", "王□明", "陳□"]
    assert out["name_key"].tolist() == ["王□明", "王□明", "陈□"]


def test_rare_and_private_use_characters_and_missing():
    out = names(["𬌗王", "\ue000 明", None, np.nan, "", "   "])
    assert out["name"].tolist() == ["𬌗王", "\ue000明", "", "", "", ""]
    assert out["name_key"].tolist() == ["𬌗王", "\ue000明", "", "", "", ""]
    assert not out.isna().any().any()


def test_name_index_preserved_and_long_names():
    s = pd.Series(["阿卜杜热合曼·阿卜杜克热木·艾买提", "陳", "Maximilian Alexander von HUMBOLDT"], index=[9, 2, 5])
    out = normalise_name(s)
    assert list(out.index) == [9, 2, 5]
    assert out["name_key"].tolist() == ["阿卜杜热合曼·阿卜杜克热木·艾买提", "陈", "MAXIMILIAN ALEXANDER VON HUMBOLDT"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.sampled_from(list("陳劉張王李小明華國ab Z·・.□\u3000")), max_size=12), max_size=30))
def test_name_key_matches_scalar_reference(values):
    out = normalise_name(pd.Series(values, dtype=object))
    table = t2s_table()
    assert out["name_key"].tolist() == [n.translate(table).upper() for n in out["name"]]
    assert not out["name"].str.contains("\u3000").any()
    assert not out["name"].str.contains("・").any()


# ---------------------------------------------------------------------------------------------- sex
def test_sex_codes():
    raw = ["1", "2", "0", "9", "男", "女", "M", "f", "ｍ", "１", "２", " 1 ", "男性", "女性", "1.0",
           "3", "x", "", None, np.nan, "未知的性别", "未说明的性别", "male", "FEMALE"]
    want = ["1", "2", "0", "9", "1", "2", "1", "2", "1", "1", "2", "1", "1", "2", "1",
            "", "", "", "", "", "0", "9", "1", "2"]
    out = normalise_sex(pd.Series(raw, index=range(100, 100 + len(raw))))
    assert out.tolist() == want
    assert list(out.index) == list(range(100, 100 + len(raw)))


# -------------------------------------------------------------------------------------------- dates
def test_date_layouts():
    raw = ["19850302", "1985-3-2", "1985/03/02", "1985.3.2", "1985年3月2日", "1985年03月02日", "１９８５０３０２",
           "１９８５－３－２", "19850302123456", "1985-03-02 00:00:00", "1985/3/2 8:05", "1985-03-02T00:00:00",
           "1985-03-02T08:00:00+08:00", " 19850302 ", "19850302.0", "31108", "31108.0", "31108.75"]
    assert normalise_date(pd.Series(raw)).tolist() == ["19850302"] * len(raw)


def test_invalid_dates_are_empty():
    raw = ["19850230", "19851301", "19850000", "2001-2-29", "1900-02-29", "00000000", "85-3-2", "1985",
           "198503", "1985-03", "abc", "", None, np.nan, "1985-03-02 junk", "2/3/1985", "7764"]
    out = normalise_date(pd.Series(raw))
    assert out.tolist() == [""] * len(raw)
    assert normalise_date(pd.Series(["2000-2-29", "19960229"])).tolist() == ["20000229", "19960229"]


def test_excel_serial_days_1900_system():
    base = dt.date(1899, 12, 30)
    days = [10000, 25569, 31108, 36526, 45352, 99999]
    want = [(base + dt.timedelta(days=d)).strftime("%Y%m%d") for d in days]
    assert want[1] == "19700101" and want[3] == "20000101"
    assert normalise_date(pd.Series([str(d) for d in days])).tolist() == want


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31)),
    st.sampled_from(["%Y%m%d", "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y%m%d%H%M%S",
                     "%Y-%m-%d %H:%M:%S", "{y}-{m}-{d}", "{y}年{m}月{d}日", "{y}/{m}/{d}", "FW"]),
), max_size=30))
def test_any_valid_date_in_any_layout(items):
    raw, want = [], []
    for d, fmt in items:
        if fmt == "FW":
            text = d.strftime("%Y%m%d").translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})
        elif fmt.startswith("{"):
            text = fmt.format(y=d.year, m=d.month, d=d.day)
        else:
            text = dt.datetime.combine(d, dt.time(13, 45, 7)).strftime(fmt)
        raw.append(text)
        want.append(d.strftime("%Y%m%d"))
    assert normalise_date(pd.Series(raw, dtype=object)).tolist() == want


def test_is_blank():
    s = pd.Series(["", " ", "\u3000", "\u200b", None, np.nan, "a", " 0 "])
    assert is_blank(s).tolist() == [True] * 6 + [False, False]


def test_outputs_are_plain_strings():
    for out in (normalise_sex(pd.Series(["男", None])), normalise_date(pd.Series(["1985-3-2", None]))):
        assert out.dtype == object and out.map(type).eq(str).all()
    assert normalise_date(pd.Series([], dtype=object)).tolist() == []
    assert len(normalise_name(pd.Series([], dtype=object))) == 0


def test_duplicate_index_and_string_dtype():
    idx = [3, 3, 3, 3]
    out = normalise_name(pd.Series(["王 小明", "陳・明", "John  Smith", "張三"], index=idx, dtype="string"))
    assert list(out.index) == idx
    assert out["name"].tolist() == ["王小明", "陳·明", "John Smith", "張三"]
    assert out["name_key"].tolist() == ["王小明", "陈·明", "JOHN SMITH", "张三"]
    assert normalise_date(pd.Series(["1985-3-2", None, "x", "19850302"], index=idx)).tolist() == [
        "19850302", "", "", "19850302"]
    assert normalise_sex(pd.Series(["男", "女", None, "9"], index=idx, dtype="string")).tolist() == ["1", "2", "", "9"]
