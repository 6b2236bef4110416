"""Throughput of the normalisers on synthetic dirty data.

    .venv/bin/python benchmarks/normalise_speed.py [--rows 2000000] [--seed 0]

Builds N synthetic rows (vectorised) with the dirt of spec section 2 mixed in — mostly clean IDs,
plus full-width digits, inner/ideographic spaces, lowercase x, 15-digit numbers, Excel `E+17` and
`000` damage, checksum errors; traditional characters, lookalike dots, `□`, Latin names; dates in
every accepted layout — then times `analyse_ids`, `normalise_name`, `normalise_date` (and
`normalise_sex`) and prints rows/s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linkage.ids import WEIGHTS, CHECK_CHARS, analyse_ids, id_variants  # noqa: E402
from linkage.normalise import normalise_date, normalise_name, normalise_sex  # noqa: E402

REGIONS = np.array([110105, 120101, 310104, 320102, 320106, 330106, 340104, 370102, 420106, 440106,
                    440304, 500103, 510104, 610113, 650102, 810000], dtype=np.int64)
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐許陳張劉黃趙吳鄭鍾錢蘇")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰飞鹏辉建国志红梅琳偉華國")
UIGHUR = ["阿依古丽", "买买提", "艾力", "古丽娜尔", "热合曼", "努尔"]
DOTS = ["・", "•", "．", ".", "·", "‧", "∙", "⋅"]


def _fullwidth(s: pd.Series) -> pd.Series:
    return s.str.translate({ord(c): chr(ord(c) + 0xFEE0) for c in "0123456789Xx"})


def _dirty(s: pd.Series, u: np.ndarray, lo: float, hi: float, fn) -> None:
    """Apply `fn` in place to the rows whose uniform draw is in [lo, hi) (dirt on a subset only)."""
    sel = np.flatnonzero((u >= lo) & (u < hi))
    s.iloc[sel] = fn(s.iloc[sel].reset_index(drop=True), sel).to_numpy(dtype=object)


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # ---- IDs: valid ones built with numpy, then dirt on random subsets
    region = REGIONS[rng.integers(0, len(REGIONS), n)]
    span = int((np.datetime64("2025-12-31") - np.datetime64("1920-01-01")).astype(int))
    birth_d = np.datetime64("1920-01-01") + rng.integers(0, span, n).astype("timedelta64[D]")
    birth = pd.DatetimeIndex(birth_d)
    y, m, d = birth.year.to_numpy(), birth.month.to_numpy(), birth.day.to_numpy()
    ymd = y * 10000 + m * 100 + d
    seq = rng.integers(0, 1000, n)
    body_int = (region * 10**8 + ymd) * 1000 + seq  # 17 digits, fits in int64
    body = np.char.mod("%017d", body_int)
    digits = body.view(np.uint32).reshape(n, 17).astype(np.int64) - 48
    check = np.array(list(CHECK_CHARS))[(digits @ WEIGHTS) % 11]
    ids = pd.Series(np.char.add(body, check).astype(object))
    body_s = pd.Series(body.astype(object))
    u = rng.random(n)
    _dirty(ids, u, 0.00, 0.02, lambda s, sel: _fullwidth(s))
    _dirty(ids, u, 0.02, 0.04, lambda s, sel: s.str[:6] + " " + s.str[6:14] + "\u3000" + s.str[14:])
    _dirty(ids, u, 0.04, 0.05, lambda s, sel: s.str.lower())
    _dirty(ids, u, 0.05, 0.07, lambda s, sel: body_s.iloc[sel].reset_index(drop=True).str[:6]
           + body_s.iloc[sel].reset_index(drop=True).str[8:17])
    _dirty(ids, u, 0.07, 0.075, lambda s, sel: s.str[0] + "." + s.str[1:6] + "E+17")
    _dirty(ids, u, 0.075, 0.08, lambda s, sel: s.str[:15] + "000")
    _dirty(ids, u, 0.08, 0.09, lambda s, sel: s.str[:17] + s.str[17].map(lambda c: "2" if c == "1" else "1"))
    _dirty(ids, u, 0.09, 0.095, lambda s, sel: pd.Series("", index=s.index))
    # ---- names
    sur = np.array(SURNAMES, dtype=object)[rng.integers(0, len(SURNAMES), n)]
    g1 = np.array(GIVEN, dtype=object)[rng.integers(0, len(GIVEN), n)]
    g2 = np.where(rng.random(n) < 0.7, np.array(GIVEN, dtype=object)[rng.integers(0, len(GIVEN), n)], "")
    names = pd.Series(sur + g1 + g2)
    u = rng.random(n)
    ug = np.array(UIGHUR, dtype=object)
    dots = np.array(DOTS, dtype=object)
    _dirty(names, u, 0.00, 0.03, lambda s, sel: pd.Series(
        ug[rng.integers(0, len(ug), len(s))] + dots[rng.integers(0, len(dots), len(s))]
        + ug[rng.integers(0, len(ug), len(s))]))
    _dirty(names, u, 0.03, 0.05, lambda s, sel: s.str[:1] + " " + s.str[1:])
    _dirty(names, u, 0.05, 0.055, lambda s, sel: s.str[:1] + "□" + s.str[2:])
    _dirty(names, u, 0.055, 0.06, lambda s, sel: pd.Series(" John  SMITH ", index=s.index))
    # ---- dates: CCYYMMDD mostly, every accepted layout on subsets
    dates = pd.Series(ymd.astype(str).astype(object))
    ys = pd.Series(y.astype(str).astype(object))
    ms = pd.Series(m.astype(str).astype(object))
    ds = pd.Series(d.astype(str).astype(object))
    serial = pd.Series((birth_d - np.datetime64("1899-12-30")).astype(np.int64).astype(str).astype(object))
    u = rng.random(n)
    pick = lambda part, sel: part.iloc[sel].reset_index(drop=True)  # noqa: E731
    _dirty(dates, u, 0.00, 0.10, lambda s, sel: pick(ys, sel) + "-" + pick(ms, sel) + "-" + pick(ds, sel))
    _dirty(dates, u, 0.10, 0.20, lambda s, sel: pick(ys, sel) + "/" + pick(ms, sel).str.zfill(2) + "/"
           + pick(ds, sel).str.zfill(2))
    _dirty(dates, u, 0.20, 0.25, lambda s, sel: pick(ys, sel) + "年" + pick(ms, sel) + "月" + pick(ds, sel) + "日")
    _dirty(dates, u, 0.25, 0.30, lambda s, sel: pick(ys, sel) + "-" + pick(ms, sel).str.zfill(2) + "-"
           + pick(ds, sel).str.zfill(2) + " 00:00:00")
    _dirty(dates, u, 0.30, 0.35, lambda s, sel: _fullwidth(s))
    _dirty(dates, u, 0.35, 0.40, lambda s, sel: pick(serial, sel))  # 4-digit serials (before 1927-05-18) stay unreadable
    sex = pd.Series(np.array(["1", "2", "男", "女", "１", "M", "f", ""], dtype=object)[rng.integers(0, 8, n)])
    return pd.DataFrame({"GMSFHM": ids, "XM": names, "CSRQ": dates, "XB": sex})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int, default=100_000, help="invalid IDs for id_variants (0 to skip)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    df = synthetic(args.rows, args.seed)
    print(f"generated {len(df):,} rows in {time.perf_counter() - t0:.2f} s")

    # wall time, and CPU time of this process (less sensitive to other load on a shared machine)
    total = cpu_total = 0.0
    results = {}
    print(f"{'':16s} {'wall':>8s} {'rows/s (wall)':>14s} {'cpu':>8s} {'rows/s (cpu)':>14s}")
    for label, fn in [
        ("analyse_ids", lambda: analyse_ids(df["GMSFHM"], "20260301")),
        ("normalise_name", lambda: normalise_name(df["XM"])),
        ("normalise_date", lambda: normalise_date(df["CSRQ"])),
        ("normalise_sex", lambda: normalise_sex(df["XB"])),
    ]:
        t, c = time.perf_counter(), time.process_time()
        results[label] = fn()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if label != "normalise_sex":
            total, cpu_total = total + dt, cpu_total + dc
        print(f"{label:16s} {dt:7.2f}s {len(df) / dt:14,.0f} {dc:7.2f}s {len(df) / dc:14,.0f}")
    print(f"{'ids+names+dates':16s} {total:7.2f}s {len(df) / total:14,.0f} {cpu_total:7.2f}s "
          f"{len(df) / cpu_total:14,.0f}   (all three per row)")
    print("id_status counts:", results["analyse_ids"]["id_status"].value_counts().to_dict())
    print("id_damage counts:", results["analyse_ids"]["id_damage"].value_counts().to_dict())
    unread = results["normalise_date"] == ""
    four = df["CSRQ"].str.fullmatch("[0-9]{4}")
    print(f"unreadable dates: {int(unread.sum()):,} (of which 4-digit Excel serials, unreadable by design: "
          f"{int((unread & four).sum()):,})")

    if args.variants:
        ids = results["analyse_ids"]
        bad = ids["id_norm"][ids["id_status"].eq("CHECKSUM")]
        reps = -(-args.variants // max(len(bad), 1))
        cand = pd.Series(np.tile(bad.to_numpy(), reps)[: args.variants])
        t, c = time.perf_counter(), time.process_time()
        v = id_variants(cand, "20260301")
        dt, dc = time.perf_counter() - t, time.process_time() - c
        print(f"{'id_variants':16s} {dt:7.2f}s wall {dc:7.2f}s cpu for {len(cand):,} invalid IDs "
              f"-> {len(v):,} variants")


if __name__ == "__main__":
    main()
