"""Speed of parsing and applying a large delivery (police hukou, GB18030).

    .venv/bin/python benchmarks/parse_apply_speed.py [--rows 2000000] [--dir /tmp/popbase_bench]

Steps timed:
 1. parse a full CSV of N rows (clean: the pyarrow path) and apply it to an empty table (history load);
 2. parse the same file with one quoted line break and one bad byte (forces the csv.reader path);
 3. parse + apply an incremental of N/10 operations (I/U/D, ~10% keys with 2–3 ops, some stale)
    to the N-row table;
 4. parse + apply a full re-baseline of N rows (1% changed, 0.5% missing, 0.5% new).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exchange.apply import apply_delivery  # noqa: E402
from exchange.parse import read_delivery  # noqa: E402
from catalog import TABLES  # noqa: E402

T = TABLES["hukou"]
SURNAMES = np.array(list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"), dtype=object)
GIVEN = np.array(["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
                  "明", "超", "秀兰", "霞", "平", "刚", "桂英", "㐀", "𠀀"], dtype=object)


def _s(a) -> np.ndarray:
    return np.asarray(a).astype(str).astype(object)


def make_hukou(ids: np.ndarray, rng: np.random.Generator, gxsj: str) -> pd.DataFrame:
    n = len(ids)
    birth = 19400101 + rng.integers(0, 80, n) * 10000 + rng.integers(0, 12, n) * 100 + rng.integers(0, 28, n)
    return pd.DataFrame({
        "RYBH": "R" + pd.Series(_s(ids)).str.zfill(10).to_numpy(dtype=object),
        "XM": SURNAMES[rng.integers(0, len(SURNAMES), n)] + GIVEN[rng.integers(0, len(GIVEN), n)],
        "GMSFHM": "320102" + _s(birth) + pd.Series(_s(ids % 10000)).str.zfill(4).to_numpy(dtype=object),
        "XB": _s(rng.integers(1, 3, n)),
        "MZ": "01",
        "CSRQ": _s(birth),
        "HJDZ_XZQH": "320102",
        "HJDZ": "江苏省南京市玄武区中山路" + _s(ids % 997) + "号",
        "HH": "H" + _s(ids // 3),
        "HKZT": "1",
        "ZXRQ": "",
        "GXSJ": gxsj,
    })[list(T.fields)]


def write(df: pd.DataFrame, path: Path, encoding: str = "gb18030") -> None:
    df.to_csv(path, index=False, encoding=encoding, lineterminator="\r\n")


def timed(label: str, fn):
    """Wall and CPU time (CPU of all threads: a fairer figure on a shared machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"{label:<62} wall {dt:7.2f} s   cpu {dc:7.2f} s", flush=True)
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    n = args.rows
    work = args.dir or Path(tempfile.mkdtemp(prefix="popbase_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20260301)
    try:
        t0 = time.perf_counter()
        base = make_hukou(np.arange(n), rng, "20260301080000")
        f_full = work / "hukou_full.csv"
        write(base, f_full)
        print(f"generated {n:,} rows, {f_full.stat().st_size / 1e6:.0f} MB GB18030 in {time.perf_counter() - t0:.1f} s")

        parsed, t_p1 = timed("1a parse full CSV (clean, fast path)", lambda: read_delivery(
            f_full, "csv", "GB18030", T.fields, incremental=False))
        assert parsed.received_rows == n and len(parsed.rejects) == 0, parsed.rejects.head()
        ap1, t_a1 = timed("1b apply full to empty table (history load)", lambda frame=parsed.frame: apply_delivery(
            None, frame, "hukou", "full", "20260301", "police-20260301-01"))
        assert ap1.counts["inserted"] == n
        current = ap1.current
        del parsed

        # 2: the careful path
        raw = f_full.read_bytes()
        cut = raw.index(b"\r\n", len(raw) // 2) + 2
        multi = b'R9999999999,"X\r\nY",1,1,01,19850302,320102,x,H,1,,20260301080000\r\n'
        dirty = raw[:cut] + multi + b"R9999999998,\x81\x2c,1,1,01,19850302,320102,x,H,1,,20260301080000\r\n" + raw[cut:]
        f_multi = work / "hukou_multi.csv"
        f_multi.write_bytes(raw[:cut] + multi + raw[cut:])
        f_dirty = work / "hukou_dirty.csv"
        f_dirty.write_bytes(dirty)
        bad_line = dirty[: dirty.index(b"R9999999998")].count(b"\n") + 1
        del raw, dirty
        pd2, t_p2 = timed("2  parse with a quoted newline + a bad byte (csv.reader path)", lambda: read_delivery(
            f_dirty, "csv", "GB18030", T.fields, incremental=False))
        assert pd2.received_rows == n + 2 and pd2.rejects["line"].tolist() == [bad_line], pd2.rejects
        assert pd2.frame["_line"].iloc[-1] == n + 4  # header + n rows + 3 inserted physical lines
        del pd2

        pm, _ = timed("2b parse with a quoted newline only (pyarrow path + spans)", lambda: read_delivery(
            f_multi, "csv", "GB18030", T.fields, incremental=False))
        assert pm.received_rows == n + 1 and pm.frame["_line"].iloc[-1] == n + 3
        del pm
        f_multi.unlink()

        # 3: incremental, n/10 ops
        m = max(n // 10, 10)
        keys = rng.choice(n + m // 10, size=m, replace=True)  # some new keys, ~some repeated keys
        inc = make_hukou(keys, rng, "20260302090000")
        inc["CZLX"] = np.array(["I", "U", "U", "U", "D"], dtype=object)[rng.integers(0, 5, m)]
        secs = rng.integers(8 * 3600, 18 * 3600, m)
        inc["CZSJ"] = ("2026030" + _s(rng.integers(1, 3, m))
                       + pd.Series(_s(secs // 3600)).str.zfill(2).to_numpy(dtype=object)
                       + pd.Series(_s(secs // 60 % 60)).str.zfill(2).to_numpy(dtype=object)
                       + pd.Series(_s(secs % 60)).str.zfill(2).to_numpy(dtype=object))
        f_inc = work / "hukou_inc.csv"
        write(inc, f_inc)
        pi, t_p3 = timed(f"3a parse incremental CSV ({m:,} ops)", lambda: read_delivery(
            f_inc, "csv", "GB18030", T.fields, incremental=True))
        ai, t_a3 = timed("3b apply incremental to the table", lambda: apply_delivery(
            current, pi.frame, "hukou", "incremental", "20260302", "police-20260302-01"))
        c = ai.counts
        assert c["inserted"] + c["updated"] + c["unchanged"] + c["ignored_stale"] + c["deleted"] == ai.loaded_rows
        print("   counts", c)
        current = ai.current

        # 4: full re-baseline
        live = current[current["_deleted"] == "0"][list(T.fields)].reset_index(drop=True)
        live = live[rng.random(len(live)) > 0.005].reset_index(drop=True)  # 0.5% missing → deleted
        chg = rng.random(len(live)) < 0.01  # 1% changed
        live.loc[chg, "XM"] = live.loc[chg, "XM"] + "改"
        live.loc[chg, "GXSJ"] = "20260303080000"
        new = make_hukou(np.arange(n + m, n + m + n // 200), rng, "20260303080000")  # 0.5% new
        full2 = pd.concat([live, new], ignore_index=True)
        f_full2 = work / "hukou_full2.csv"
        write(full2, f_full2)
        pf, t_p4 = timed(f"4a parse re-baseline full CSV ({len(full2):,} rows)", lambda: read_delivery(
            f_full2, "csv", "GB18030", T.fields, incremental=False))
        af, t_a4 = timed("4b apply re-baseline to the table", lambda: apply_delivery(
            current, pf.frame, "hukou", "full", "20260303", "police-20260303-01"))
        print("   counts", af.counts)
        print(f"total parse+apply of the {n:,}-row full file: {t_p1 + t_a1:.2f} s; "
              f"re-baseline: {t_p4 + t_a4:.2f} s")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
