"""Time the scope of one daily date alone (issue 15): `day.scoped.scoped_state` on a processed base, in a
transaction rolled back at the end, so the base is left as it was and the same date can be measured again.

    .venv/bin/python benchmarks/scope_lookup.py --home HOME --date D [--profile N]

HOME: a POPBASE_HOME whose base holds the dates before D (with scoped dates on, so that it has its role
index) and whose landing/ holds D. Prints the wall and CPU seconds of staging D and of the scope, the scope's
size and lookup rounds, the rows of the base it read per table (`store.db.READ`), and the process's peak
memory; `--profile N` adds cProfile's N most expensive functions by cumulative time. The scope is what a
scoped daily date spends most of its time on at 1M persons (docs/benchmarks.md); the rest of the date is
measured by benchmarks/scale.py.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from day import scoped  # noqa: E402
from day.run import engine_of  # noqa: E402
from exchange import staging  # noqa: E402
from linkage.link import load_config  # noqa: E402
from quality.thresholds import load_thresholds  # noqa: E402
from settings import Settings  # noqa: E402
from store import db  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--profile", type=int, default=0, help="print this many functions of a cProfile run")
    args = ap.parse_args()
    settings = Settings(home=args.home, scoped_dates=True)
    engine = engine_of(settings)
    t0, c0 = time.perf_counter(), time.process_time()
    staged = staging.stage(settings.home, args.date, staging.Guards.from_config(load_thresholds(settings.quality_config)))
    folder = staging.staging_dir(settings.home, args.date)
    new = [f for f in staged.files if f.status == "staged"]
    frames = {f"{f.batch_id}__{f.line_in_manifest}": pd.read_parquet(folder / f.parquet) for f in new}
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"staged {args.date}: {len(new)} new file(s), {sum(len(v) for v in frames.values()):,} rows, "
          f"{t1 - t0:.1f} s wall, {c1 - c0:.1f} s CPU")
    cfg = load_config(settings.linkage_config)
    db.READ.rows.clear()
    profiler = cProfile.Profile() if args.profile else None
    with engine.begin() as conn:
        if profiler:
            profiler.enable()
        sc = scoped.scoped_state(conn, staged, frames, args.date, cfg, settings)
        if profiler:
            profiler.disable()
        t2, c2 = time.perf_counter(), time.process_time()
        conn.rollback()
    if sc is None:
        print("the date reads the whole base (see the log line above for why): no scope")
        return 1
    read = dict(sorted(db.READ.rows.items(), key=lambda kv: -kv[1]))
    print(f"scope of {args.date}: {len(sc.roles):,} roles in {len(sc.records):,} records, "
          f"{t2 - t1:.1f} s wall, {c2 - c1:.1f} s CPU{' (under cProfile)' if profiler else ''}; digest of its "
          f"roles {hashlib.sha256(chr(10).join(sorted(sc.roles)).encode()).hexdigest()[:12]} (equal scopes, equal digests)")
    print(f"rows of the base read: {sum(read.values()):,} ({', '.join(f'{k} {v:,}' for k, v in read.items())})")
    search = sc.search
    if search is not None:
        found, by_pass = search.scope.found_by, search.scope.read_by_pass
        print("roles first brought in by: " + ", ".join(f"{k} {v:,}" for k, v in sorted(found.items(), key=lambda kv: -kv[1])))
        held = {col: search.held_forms(col) for col in search.block_at}
        for col, rows in sorted(held.items(), key=lambda kv: -len(kv[1])):
            if not len(rows):
                continue
            sizes = rows.groupby(col).size().sort_values(ascending=False)
            whole, pq_only = len(search.read_all.get(col, ())), len(search.read_pq.get(col, ()))
            print(f"  {col}: {whole:,} blocks read whole, {pq_only:,} for their possible queries only; "
                  f"{len(rows):,} forms held; largest blocks {', '.join(f'{v:,}' for v in sizes.head(5))}; "
                  f"blocks of 1,000+ forms {int((sizes >= 1000).sum()):,} holding {int(sizes[sizes >= 1000].sum()):,}")
        print("form rows read per pass: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_pass.items(), key=lambda kv: -kv[1])))
    print(f"peak memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
