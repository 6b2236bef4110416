"""Reading the base and diffing a date's changes: `store.db` against the plain SQLAlchemy/pandas way.

    .venv/bin/python benchmarks/base_io.py --db /path/to/popbase.db          # an existing base
    .venv/bin/python benchmarks/base_io.py --persons 100000                  # generate and load one first

Each way reads every table of the base in a fresh subprocess (so that its memory high-water mark is its
own) and reports seconds, the RSS once read and the peak; the frames are compared for equality. Then a
date's changes are simulated on the links and the largest source table (1 % of rows changed, 0.1 %
gone, 0.1 % new) and both diffs are timed and compared. "plain" is what store.db did before session 4:
`select` -> `fetchall()` of Row objects -> `DataFrame` -> `where(notna)` -> `astype(str)`, and an outer
merge of old and new for the diff. Figures go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_read(conn, table):
    """store.db.read_frame as it was: Row objects, then two whole-frame passes."""
    import pandas as pd
    import sqlalchemy as sa

    result = conn.execute(sa.select(table))
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()), dtype=object)
    return frame.where(frame.notna(), "").astype(str) if not frame.empty else frame.astype(object)


def plain_diff(old, new, key):
    """store.db.diff_frames as it was: an outer merge of both frames."""
    import pandas as pd

    cols = list(new.columns)
    new = new.astype(str)
    old = old.reindex(columns=cols, fill_value="").astype(str)
    merged = new.merge(old, on=key, how="outer", suffixes=("", "__old"), indicator=True)
    gone = merged.loc[merged["_merge"] == "right_only", key].tolist()
    both = merged["_merge"] == "both"
    changed = pd.Series(False, index=merged.index)
    for c in cols:
        if c != key:
            changed |= merged[c].ne(merged[f"{c}__old"])
    upd = merged.loc[both & changed, key].tolist()
    return gone + upd, merged.loc[(merged["_merge"] == "left_only") | (both & changed), cols]


def read_all(way: str, url: str) -> dict:
    """Child process: read every table one way; return timings, memory and a digest of the frames."""
    import pandas as pd

    from store import db

    engine = db.make_engine(url)
    tables = list(db.SOURCE_TABLES.values()) + [db.persons, db.links, db.decisions, db.tasks, db.overlays]
    base_rss = rss_mib()
    t = time.perf_counter()
    frames = {}
    with engine.connect() as conn:
        for table in tables:
            frames[table.name] = db.read_frame(conn, table) if way == "popbase" else plain_read(conn, table)
    seconds = time.perf_counter() - t
    held, peak = rss_mib() - base_rss, peak_mib()  # before counting (which needs memory of its own)
    rows = sum(len(f) for f in frames.values())
    seen: set = set()  # memory held by the distinct string objects of the frames (shared ones once)
    strings = 0
    for f in frames.values():
        for c in f.columns:
            for v in f[c].to_numpy(dtype=object):
                if id(v) not in seen:
                    seen.add(id(v))
                    strings += sys.getsizeof(v)
    del seen
    digest = {name: int(pd.util.hash_pandas_object(f, index=False).sum() % (1 << 61)) for name, f in frames.items()}
    return {"way": way, "seconds": round(seconds, 1), "rows": rows, "strings_mib": round(strings / 2**20),
            "rss_mib": round(held), "peak_mib": round(peak), "digest": digest}


def simulate_changes(frame, key):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    n = len(frame)
    new = frame.copy()
    col = [c for c in frame.columns if c != key][-1]
    changed = rng.choice(n, size=max(1, n // 100), replace=False)
    new.iloc[changed, new.columns.get_loc(col)] = new.iloc[changed][col].astype(str) + "*"
    gone = rng.choice(n, size=max(1, n // 1000), replace=False)
    new = new.drop(index=new.index[gone])
    extra = frame.iloc[: max(1, n // 1000)].copy()
    extra[key] = extra[key].astype(str) + "#new"
    return pd.concat([new, extra], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="", help="an existing base (SQLite file)")
    ap.add_argument("--persons", type=int, default=100_000, help="without --db: generate a city and load its first date")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(read_all(args.child, args.db)))
        return

    work = None
    db_path = Path(args.db) if args.db else None
    if db_path is None:
        from day import run_dates
        from fixtures.city import generate_city
        from store import db

        work = Path(tempfile.mkdtemp(prefix="popbase-io-"))
        generate_city(work, persons=args.persons, days=0, seed=3)
        db_path = work / "popbase.db"
        settings = Settings(home=work, db_url=f"sqlite:///{db_path}")
        run_dates(settings, settings.landed_dates()[:1], write_outputs=False, quality_gates=False)
        db.dispose_engine(settings.db_url)
    url = f"sqlite:///{db_path}"
    results = {}
    for way in ("plain", "popbase"):
        out = subprocess.run([sys.executable, __file__, "--db", url, "--child", way], capture_output=True, text=True,
                             check=True)
        results[way] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[way]
        print(f"read every table, {way:8s}: {r['seconds']:6.1f} s for {r['rows']:,} rows; strings {r['strings_mib']:,} MiB; "
              f"RSS +{r['rss_mib']:,} MiB once read, peak {r['peak_mib']:,} MiB", flush=True)
    print(f"same frames: {results['plain']['digest'] == results['popbase']['digest']}", flush=True)

    import sqlalchemy as sa

    from store import db

    engine = db.make_engine(url)
    with engine.connect() as conn:
        sizes = {name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                 for name, t in db.SOURCE_TABLES.items()}
        biggest = max(sizes, key=sizes.get)
        for name, table in (("links", db.links), (f"src_{biggest}", db.SOURCE_TABLES[biggest])):
            old = db.read_frame(conn, table)
            key = list(table.primary_key.columns)[0].name
            new = simulate_changes(old, key)
            t = time.perf_counter()
            d0, i0 = plain_diff(old, new, key)
            t_plain = time.perf_counter() - t
            t = time.perf_counter()
            d1, i1 = db.diff_frames(old, new, key)
            t_new = time.perf_counter() - t
            same = sorted(d0) == sorted(d1) and i0.reset_index(drop=True).equals(i1.reset_index(drop=True))
            print(f"diff {name} ({len(old):,} rows; {len(d1):,} keys to delete, {len(i1):,} rows to insert): "
                  f"plain {t_plain:.1f} s, popbase {t_new:.1f} s; same result: {same}", flush=True)
    engine.dispose()
    if work is not None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
