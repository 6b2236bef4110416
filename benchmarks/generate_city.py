"""Time the synthetic city generator: ``python benchmarks/generate_city.py --persons 1000000 --days 3``.

Prints the rows delivered per table and date, the live record roles per date, and the seconds taken
(target: 1,000,000 persons x 3 days in under 2 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary")
    a = ap.parse_args(argv)

    from fixtures.city import generate_city

    out = a.out or tempfile.mkdtemp(prefix="popbase_city_")
    try:
        t0 = time.perf_counter()
        c0 = time.process_time()
        if a.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            s = prof.runcall(generate_city, out, persons=a.persons, days=a.days, seed=a.seed)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
        else:
            s = generate_city(out, persons=a.persons, days=a.days, seed=a.seed)
        secs = time.perf_counter() - t0
        print(f"persons={a.persons:,} days={a.days} seed={a.seed} out={out}")
        print(f"{'date':<10} {'dept':<16} {'table':<10} {'rows':>10}")
        total = 0
        for date, depts in s["rows"].items():
            for dept, tabs in depts.items():
                for table, rows in tabs.items():
                    print(f"{date:<10} {dept:<16} {table:<10} {rows:>10,}")
                    total += rows
        print(f"delivered rows: {total:,}")
        for date, n in s["roles"].items():
            print(f"live record roles {date}: {n:,}")
        print(f"persons in truth: {s['persons']:,}")
        print(f"delivery anomalies: {', '.join(s['delivery_anomalies'])}")
        print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
        print("stage cpu seconds (main process): " + ", ".join(f"{k} {v:.1f}" for k, v in s["cpu_timings"].items()))
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"cpu seconds: main process {time.process_time() - c0:.1f}, "
              f"file-writing workers {kids.ru_utime + kids.ru_stime:.1f}")
        print(f"peak memory: main process {me.ru_maxrss / 1024:.0f} MiB, largest worker {kids.ru_maxrss / 1024:.0f} MiB")
        print(f"seconds: {secs:.1f}")
    finally:
        if a.out is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
