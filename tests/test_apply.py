"""Applying full and incremental deliveries to a Source frame (exchange/apply.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.apply import META_COLUMNS, apply_delivery, empty_source, source_columns
from catalog import TABLES

F = TABLES["hukou"].fields
D1, D2, D3 = "20260301", "20260302", "20260303"


def rec(key, xm="甲", gxsj="20260301080000", **kw) -> dict:
    r = {f: "" for f in F}
    r.update(RYBH=key, XM=xm, GMSFHM="320102198503020011", HKZT="1", GXSJ=gxsj)
    r.update(kw)
    return r


def frame(rows, incremental=False) -> pd.DataFrame:
    cols = list(F) + (["CZLX", "CZSJ"] if incremental else [])
    df = pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols, dtype=object)
    df["_line"] = np.arange(2, len(df) + 2, dtype=np.int64)
    return df


def op(key, czlx, czsj, xm="甲", **kw) -> dict:
    return rec(key, xm, CZLX=czlx, CZSJ=czsj, **kw)


def inc(current, ops, date=D2, batch="b-inc"):
    return apply_delivery(current, frame(ops, incremental=True), "hukou", "incremental", date, batch)


def state(applied) -> dict:
    c = applied.current
    return {k: (x, t, d) for k, x, t, d in zip(c["_key"], c["XM"], c["_ts"], c["_deleted"])}


def check_invariant(a):
    c = a.counts
    ops_deleted = int(((a.changes["op"] == "D") & (a.changes["_line"] > 0)).sum())  # _line 0: implied by a full
    assert c["inserted"] + c["updated"] + c["unchanged"] + c["ignored_stale"] + ops_deleted == a.loaded_rows
    assert set(a.counts) == {"inserted", "updated", "deleted", "unchanged", "ignored_stale"}
    assert list(a.current.columns) == source_columns("hukou")
    assert a.current["_key"].is_unique
    assert all(isinstance(v, str) for col in a.current.columns for v in a.current[col])


@pytest.fixture
def base():
    a = apply_delivery(None, frame([rec("1", "甲"), rec("2", "乙"), rec("3", "丙")]), "hukou", "full", D1, "b-full")
    assert a.counts == {"inserted": 3, "updated": 0, "deleted": 0, "unchanged": 0, "ignored_stale": 0}
    return a.current


def test_history_load_builds_source_frame(base):
    assert list(base.columns) == list(F) + list(META_COLUMNS)
    assert base[["_key", "_ts", "_deleted", "_batch", "_bdate"]].values.tolist() == [
        ["1", "20260301080000", "0", "b-full", D1], ["2", "20260301080000", "0", "b-full", D1],
        ["3", "20260301080000", "0", "b-full", D1]]
    assert list(empty_source("hukou").columns) == list(base.columns)


def test_insert_update_unchanged_delete(base):
    a = inc(base, [op("4", "I", "20260302090000", "丁"), op("1", "U", "20260302090000", "甲2"),
                   op("2", " u ", "20260302090000", "乙"), op("3", "d", "20260302090000")])
    assert a.counts == {"inserted": 1, "updated": 1, "deleted": 1, "unchanged": 1, "ignored_stale": 0}
    s = state(a)
    assert s["1"] == ("甲2", "20260302090000", "0")
    assert s["2"] == ("乙", "20260302090000", "0")  # unchanged but applied: _ts advances
    assert s["3"] == ("丙", "20260302090000", "1")  # tombstone keeps the last values
    assert s["4"] == ("丁", "20260302090000", "0")
    assert a.changes.values.tolist() == [["4", "I", "20260302090000", 2], ["1", "U", "20260302090000", 3],
                                         ["3", "D", "20260302090000", 5]]
    assert a.current.loc[a.current["_key"] == "2", "_batch"].item() == "b-inc"
    assert a.current.loc[a.current["_key"] == "4", "_bdate"].item() == D2
    check_invariant(a)


def test_i_on_live_record_updates_and_u_on_unknown_inserts(base):
    a = inc(base, [op("1", "I", "20260302090000", "新"), op("9", "U", "20260302090000", "九")])
    assert a.counts["updated"] == 1 and a.counts["inserted"] == 1
    assert a.changes["op"].tolist() == ["U", "I"]


def test_stale_operation_ignored(base):
    a = inc(base, [op("1", "U", "20260228000000", "旧")])
    assert a.counts == {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0, "ignored_stale": 1}
    assert state(a)["1"] == ("甲", "20260301080000", "0") and a.changes.empty
    assert a.current.loc[0, "_batch"] == "b-full"


def test_same_timestamp_is_applied(base):
    a = inc(base, [op("1", "U", "20260301080000", "同时")])
    assert a.counts["updated"] == 1 and state(a)["1"][0] == "同时"


def test_ops_of_one_key_apply_in_timestamp_order_then_line_order(base):
    ops = [op("1", "U", "2026-03-02 12:00:00", "C"),  # latest: wins
           op("1", "U", "2026-03-02 10:00:00", "A"),
           op("1", "U", "2026-03-02 11:00:00", "B"),
           op("2", "U", "20260302100000", "X"), op("2", "U", "20260302100000", "Y")]  # tie: file order
    a = inc(base, ops)
    s = state(a)
    assert s["1"] == ("C", "20260302120000", "0") and s["2"][0] == "Y"
    assert a.counts == {"inserted": 0, "updated": 5, "deleted": 0, "unchanged": 0, "ignored_stale": 0}
    assert a.changes.loc[a.changes["_key"] == "1", "_line"].tolist() == [2, 3, 4]
    check_invariant(a)


def test_stale_against_op_earlier_in_same_delivery_across_deliveries(base):
    a = inc(base, [op("1", "U", "20260302120000", "新")])
    b = inc(a.current, [op("1", "U", "20260302110000", "旧"), op("1", "U", "20260302130000", "更新")], date=D3)
    assert b.counts["ignored_stale"] == 1 and b.counts["updated"] == 1
    assert state(b)["1"] == ("更新", "20260302130000", "0")


def test_delete_unknown_or_deleted_key_is_unchanged(base):
    a = inc(base, [op("9", "D", "20260302090000"), op("3", "D", "20260302090000")])
    assert a.counts == {"inserted": 0, "updated": 0, "deleted": 1, "unchanged": 1, "ignored_stale": 0}
    assert a.changes["_key"].tolist() == ["3"]
    live = a.current[a.current["_deleted"] == "0"]
    assert sorted(live["_key"]) == ["1", "2"]
    b = inc(a.current, [op("3", "D", "20260302100000")], date=D3)  # already deleted
    assert b.counts["unchanged"] == 1 and b.changes.empty
    # the unknown key's D left a tombstone: an older I cannot create the record afterwards
    c = inc(b.current, [op("9", "I", "20260302080000", "迟到")], date=D3)
    assert c.counts["ignored_stale"] == 1 and state(c)["9"][2] == "1"


def test_tombstone_resurrection_vs_stale(base):
    a = inc(base, [op("1", "D", "20260302100000")])
    assert state(a)["1"] == ("甲", "20260302100000", "1")
    stale = inc(a.current, [op("1", "I", "20260302090000", "复活?")], date=D3)
    assert stale.counts["ignored_stale"] == 1 and state(stale)["1"][2] == "1"
    back = inc(a.current, [op("1", "I", "20260302100000", "复活")], date=D3)  # same timestamp: applied
    assert back.counts["inserted"] == 1 and state(back)["1"] == ("复活", "20260302100000", "0")
    assert back.changes["op"].tolist() == ["I"]


def test_insert_then_delete_in_one_delivery(base):
    a = inc(base, [op("7", "D", "20260302110000"), op("7", "I", "20260302100000", "七")])
    assert a.counts == {"inserted": 1, "updated": 0, "deleted": 1, "unchanged": 0, "ignored_stale": 0}
    assert state(a)["7"] == ("七", "20260302110000", "1")
    assert a.changes[["op", "_line"]].values.tolist() == [["D", 2], ["I", 3]]  # file order
    check_invariant(a)


def test_timestamp_fallbacks(base):
    a = inc(base, [op("1", "U", "", "甲2", GXSJ="20260302070000"), op("2", "U", "", "乙2", GXSJ="")])
    s = state(a)
    assert s["1"][1] == "20260302070000" and s["2"][1] == D2 + "000000"


def test_whitespace_difference_is_an_update(base):
    a = inc(base, [op("1", "U", "20260302090000", "甲 ")])
    assert a.counts["updated"] == 1 and state(a)["1"][0] == "甲 "


def test_bad_operations_rejected_defensively(base):
    a = inc(base, [op("1", "X", "20260302090000"), op("2", "U", "2026-02-30"), op("", "U", "20260302090000")])
    assert a.rejects["reason"].tolist() == ["BAD_OPERATION", "BAD_OPERATION", "EMPTY_KEY"]
    assert a.loaded_rows == 0 and sum(a.counts.values()) == 0


# ------------------------------------------------------------------------------------------- full files
def test_full_rebaseline(base):
    a = apply_delivery(base, frame([rec("1", "甲"), rec("2", "乙改", gxsj="20260302080000"), rec("4", "丁")]),
                       "hukou", "full", D2, "b-full2")
    assert a.counts == {"inserted": 1, "updated": 1, "deleted": 1, "unchanged": 1, "ignored_stale": 0}
    s = state(a)
    assert s["3"] == ("丙", "20260301080000", "1")  # absent → tombstone, keeps its _ts
    assert a.current.loc[a.current["_key"] == "3", ["_batch", "_bdate"]].values.tolist() == [["b-full2", D2]]
    assert s["2"] == ("乙改", "20260302080000", "0")
    # identical rows leave the record untouched
    assert a.current.loc[a.current["_key"] == "1", ["_ts", "_batch", "_bdate"]].values.tolist() == [
        ["20260301080000", "b-full", D1]]
    assert sorted(a.changes[["_key", "op", "_line"]].values.tolist()) == [["2", "U", 3], ["3", "D", 0], ["4", "I", 4]]
    # a second identical full changes nothing
    b = apply_delivery(a.current, frame([rec("1", "甲"), rec("2", "乙改", gxsj="20260302080000"), rec("4", "丁")]),
                       "hukou", "full", D3, "b-full3")
    assert b.counts == {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 3, "ignored_stale": 0}
    assert b.changes.empty and b.current.equals(a.current)


def test_full_duplicate_keys_keep_latest_gxsj_then_last_line():
    rows = [rec("1", "A", gxsj="20260301090000"), rec("1", "B", gxsj="20260301080000"),
            rec("2", "C"), rec("2", "D"), rec("3", "E")]
    a = apply_delivery(None, frame(rows), "hukou", "full", D1, "b")
    s = state(a)
    assert s["1"][0] == "A" and s["2"][0] == "D"
    assert a.rejects[["line", "reason", "key"]].values.tolist() == [[3, "DUPLICATE_KEY", "1"],
                                                                    [4, "DUPLICATE_KEY", "2"]]
    assert "line 2 kept" in a.rejects["detail"].iloc[0] and a.rejects["raw"].iloc[0].startswith("1,B,")
    assert a.loaded_rows == 3 and a.counts["inserted"] == 3


def test_full_stale_rows_and_tombstones(base):
    a = inc(base, [op("1", "U", "20260302120000", "新"), op("2", "D", "20260302120000")])
    b = apply_delivery(a.current, frame([rec("1", "旧"), rec("2", "乙"), rec("3", "丙")]), "hukou", "full", D2, "f")
    # "1" differs and is older than the record: stale; "2" older than its tombstone: stale; "3" identical
    assert b.counts == {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 1, "ignored_stale": 2}
    s = state(b)
    assert s["1"][0] == "新" and s["2"][2] == "1"
    # an identical row is unchanged even when older than the record's _ts (e.g. _ts from a later CZSJ)
    c = apply_delivery(a.current, frame([rec("1", "新"), rec("3", "丙")]), "hukou", "full", D2, "f")
    assert c.counts["unchanged"] == 2 and c.counts["ignored_stale"] == 0


def test_full_does_not_delete_newer_or_protected_records(base):
    a = inc(base, [op("5", "I", "20260305090000", "未来")], date=D2)
    b = apply_delivery(a.current, frame([rec("1")]), "hukou", "full", D2, "f", protected_keys=[" 2 "])
    assert b.counts["deleted"] == 1 and b.kept_newer == 1  # "3" deleted; "2" protected; "5" newer
    s = state(b)
    assert s["2"][2] == "0" and s["3"][2] == "1" and s["5"][2] == "0"


def test_full_missing_a_row_one_day_then_listing_it_again(base):
    a = apply_delivery(base, frame([rec("1"), rec("2", "乙")]), "hukou", "full", D2, "f2")  # "3" missing
    assert a.counts["deleted"] == 1
    b = apply_delivery(a.current, frame([rec("1"), rec("2", "乙"), rec("3", "丙")]), "hukou", "full", D3, "f3")
    assert b.counts == {"inserted": 1, "updated": 0, "deleted": 0, "unchanged": 2, "ignored_stale": 0}
    assert state(b)["3"] == ("丙", "20260301080000", "0")
    # but an older incremental I cannot bring it back
    c = inc(a.current, [op("3", "I", "20260228000000", "丙")], date=D3)
    assert c.counts["ignored_stale"] == 1


def test_full_resurrects_tombstone_with_newer_gxsj(base):
    a = inc(base, [op("3", "D", "20260302090000")])
    b = apply_delivery(a.current, frame([rec("1"), rec("2", "乙"), rec("3", "丙", gxsj="20260303080000")]),
                       "hukou", "full", D3, "f")
    assert b.counts == {"inserted": 1, "updated": 0, "deleted": 0, "unchanged": 2, "ignored_stale": 0}
    assert state(b)["3"] == ("丙", "20260303080000", "0")


def test_current_not_modified_and_missing_columns(base):
    before = base.copy()
    d = frame([rec("1", "甲")]).drop(columns=["ZXRQ", "HH"])  # absent catalogue fields are ""
    a = apply_delivery(base, d, "hukou", "full", D2, "f")
    assert base.equals(before)
    assert a.counts["unchanged"] == 1 and a.counts["deleted"] == 2


# ------------------------------------------------------------------------------- property: the invariant
ops_strategy = st.lists(
    st.tuples(st.sampled_from(["1", "2", "3", "4"]), st.sampled_from(["I", "U", "D"]),
              st.integers(0, 5), st.sampled_from(["a", "b"])),
    min_size=1, max_size=12)


def _reference(store: dict, ops, date):
    """Sequential reference: store maps key → (xm, ts, deleted)."""
    counts = dict.fromkeys(["inserted", "updated", "deleted", "unchanged", "ignored_stale"], 0)
    order = sorted(range(len(ops)), key=lambda i: (ops[i][0], ops[i][2], i))
    for i in order:
        k, o, t, xm = ops[i]
        ts = 20260302000000 + t
        cur = store.get(k)
        if cur is not None and ts < cur[1]:
            counts["ignored_stale"] += 1
            continue
        if o == "D":
            if cur is not None and not cur[2]:
                counts["deleted"] += 1
                store[k] = (cur[0], ts, True)
            else:
                counts["unchanged"] += 1
                store[k] = ((cur[0] if cur else xm), ts, True)
        else:
            if cur is not None and not cur[2]:
                counts["updated" if cur[0] != xm else "unchanged"] += 1
            else:
                counts["inserted"] += 1
            store[k] = (xm, ts, False)
    return counts


@settings(max_examples=40, deadline=None)
@given(ops_strategy, ops_strategy)
def test_incremental_matches_sequential_reference(first, second):
    base = apply_delivery(None, frame([rec("1", "a"), rec("2", "b")]), "hukou", "full", D1, "f").current
    store = {"1": ("a", 20260301080000, False), "2": ("b", 20260301080000, False)}
    cur = base
    for ops in (first, second):
        rows = [op(k, o, str(20260302000000 + t), xm) for k, o, t, xm in ops]
        a = inc(cur, rows)
        expect = _reference(store, ops, D2)
        assert a.counts == expect
        check_invariant(a)
        got = {k: (x, int(t), d == "1") for k, (x, t, d) in state(a).items()}
        assert got == store
        cur = a.current


def test_an_identical_update_after_a_rejected_row_is_unchanged(base):
    """A row rejected inside apply_delivery shifts the delivered rows against the operations: an update
    repeating an earlier operation's values must still compare with that operation's own row."""
    a = inc(base, [op("9", "X", "20260302090000"),  # bad CZLX: rejected here, before the replay
                   op("7", "I", "20260302100000", xm="庚"),
                   op("7", "U", "20260302110000", xm="庚")])
    assert a.rejects["reason"].tolist() == ["BAD_OPERATION"]
    assert a.counts["inserted"] == 1 and a.counts["unchanged"] == 1 and a.counts["updated"] == 0
    check_invariant(a)
