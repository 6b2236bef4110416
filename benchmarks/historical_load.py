"""Time the historical load (历史数据建库) and one daily increment of a generated city, stage by stage.

    .venv/bin/python benchmarks/historical_load.py --persons 1000000 --days 1 [--db-url URL]

Prints rows/s and peak memory (RSS high-water mark of this process) per stage. Figures go to
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
    def __init__(self):
        self.rows = []

    def time(self, name, fn, rows=None):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        n = rows(out) if callable(rows) else rows
        self.rows.append((name, dt, n, peak_mib()))
        rate = f"{n / dt:,.0f} rows/s" if n else ""
        print(f"  {name:<34} {dt:8.1f} s  {rate:>18}  peak {peak_mib():,.0f} MiB", flush=True)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    import logging

    logging.basicConfig(format="    %(message)s")  # the pipeline's own lines: phases of a date, linking, states
    logging.getLogger("popbase").setLevel(logging.INFO)

    import pandas as pd

    from day.run import check, write_date_outputs
    from exchange import staging
    from exchange.process import process_date
    from fixtures.city import generate_city
    from store import base, db

    work = Path(tempfile.mkdtemp(prefix="popbase-bench-"))
    home = work / "home"
    st = Stages()
    print(f"city of {args.persons:,} persons, {args.days} day(s) of increments, in {work}")
    st.time("generate city", lambda: generate_city(home, persons=args.persons, days=args.days, seed=args.seed))
    settings = Settings(home=home, db_url=args.db_url)
    engine = db.make_engine(settings.db_url)
    # the steps of day.run.run_one, timed one by one (commit's read / process / write separately)
    for date in settings.landed_dates():
        print(f"business date {date}")
        staged = st.time(f"{date} stage (verify+parse)", lambda: staging.stage(home, date),
                         rows=lambda r: sum(f.received_rows for f in r.files))
        st.time(f"{date} quality gates", lambda: check(settings, staged))
        staging.classify_batches(staged, base.processed_batches(engine), date)
        new = [f for f in staged.files if f.status == "staged"]
        with engine.begin() as conn:
            state = st.time(f"{date} read base from db", lambda: base.read_base(conn),
                            rows=lambda s: sum(len(v) for v in s.sources.values()))
            frames = {f"{f.batch_id}__{f.line_in_manifest}": pd.read_parquet(
                staging.staging_dir(home, date) / f.parquet) for f in new}
            res = st.time(f"{date} apply+link+states", lambda: process_date(state, staged, frames, date),
                          rows=lambda r: len(r.roles))
            st.time(f"{date} write base to db",
                    lambda: base.write_base(conn, state, res.state, res.audit, res.batches, date, res.summary),
                    rows=sum(len(v) for v in res.state.sources.values()))
        st.time(f"{date} outputs", lambda: write_date_outputs(settings, engine, date, res.state))
        st.time(f"{date} outputs read back (mending)", lambda: write_date_outputs(settings, engine, date))
        t = res.summary["totals"]
        print(f"  persons {t['persons']:,}, roles {t['roles']:,}, open tasks {t['open_tasks']:,}, "
              f"link methods {json.dumps(res.summary['link_methods'])}")
    print(f"peak memory {peak_mib():,.0f} MiB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
