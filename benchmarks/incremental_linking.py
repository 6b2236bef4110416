"""Incremental linking against linking the whole city, on the same inputs, date by date.

    .venv/bin/python benchmarks/incremental_linking.py --persons 100000 --days 2

Generates a city, processes its first date, then for every later date builds that date's roles once
and links them both ways (`exchange.process.link_date` incremental and whole-city), printing the time
of each, the work set and context sizes, and whether the links are identical; then evaluates its states
both ways (`exchange.process.date_states`: what changed, every role) and compares them; then commits the date
normally and goes on. Figures go to docs/linkage.md ("Incremental linking").
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--work", help="keep the generated city and its first date here, and reuse them when the "
                                   "folder exists (with --days 1 nothing later is committed)")
    ap.add_argument("--profile", action="store_true", help="print where the incremental link spends its time")
    ap.add_argument("--profile-lines", type=int, default=45, help="lines of the profile printed")
    args = ap.parse_args()

    import pandas as pd

    from day import run_dates
    from exchange import staging
    from exchange.process import (apply_extracts, apply_returns, date_states, link_date, live_overlays,
                                  overlay_sources, role_changes)
    import linkage.incremental  # noqa: F401  (imported here, not inside the first timed call)
    from fixtures.city import generate_city
    from linkage.roles import build_roles
    from store import base, db

    reuse = bool(args.work) and Path(args.work).exists()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="popbase-inc-"))
    try:
        if not reuse:
            generate_city(work, persons=args.persons, days=args.days, seed=args.seed)
        settings = Settings(home=work)
        engine = db.make_engine(settings.db_url)
        dates = settings.landed_dates()
        if not reuse:
            run_dates(settings, dates[:1], write_outputs=False, quality_gates=False)
        for date in dates[1:]:
            staged = staging.stage(work, date)
            staging.classify_batches(staged, base.processed_batches(engine), date)
            new = [f for f in staged.files if f.status == "staged"]
            frames = {f"{f.batch_id}__{f.line_in_manifest}": pd.read_parquet(staging.staging_dir(work, date) / f.parquet)
                      for f in new}
            with engine.connect() as conn:
                state = base.read_base(conn)
            sources, reports, _ = apply_extracts(state, staged, frames, date)
            tasks, overlays, decisions, _, _ = apply_returns(state, staged, frames, date, reports, sources)
            overlays = live_overlays(overlays, sources)
            view = overlay_sources(sources, overlays)
            roles = build_roles(view, date)
            dec = decisions.drop(columns=["decision_key"], errors="ignore")
            prof = None
            if args.profile:
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            t = time.perf_counter()
            inc, _ = link_date(state, roles, dec, date, linking=True)
            t_inc = time.perf_counter() - t
            if prof is not None:
                import pstats
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile_lines)
            t = time.perf_counter()
            full, _ = link_date(state, roles, dec, date, incremental=False)
            t_full = time.perf_counter() - t
            cols = ["BM", "BH", "YWZJ", "JS", "RKID", "PPFS"]
            same = inc.links[cols].sort_values(cols[:4]).reset_index(drop=True).equals(
                full.links[cols].sort_values(cols[:4]).reset_index(drop=True))
            # states: re-checking what changed against re-checking everything, on the whole-city links
            t = time.perf_counter()
            changes = role_changes(state, roles, date)
            part, checked = date_states(state, roles, full.links, view, tasks, overlays, date, changes)
            t_part = time.perf_counter() - t
            t = time.perf_counter()
            every, _ = date_states(state, roles, full.links, view, tasks, overlays, date, None)
            t_every = time.perf_counter() - t
            states_same = part.equals(every)
            info = inc.stats["incremental"]
            print(f"{date}: roles {len(roles):,}; incremental {t_inc:.1f} s ({info.get('mode')}, re-linked "
                  f"{info.get('relinked', 0):,}, context {info.get('context', 0):,}, rounds {info.get('rounds')}, "
                  f"keys {info.get('keys_s')} s, sub-runs {info.get('sub_run_s')} s); whole city {t_full:.1f} s; "
                  f"identical links: {same}", flush=True)
            print(f"{date}: incremental details {info}", flush=True)
            print(f"{date}: states {checked['mode']}: re-checked {checked.get('rechecked', 0):,}, evaluated "
                  f"{checked.get('frame', 0):,}, {t_part:.1f} s (with the fingerprints); every role {t_every:.1f} s; "
                  f"identical states: {states_same}", flush=True)
            if date != dates[-1]:  # the last date's commit would be timed by nobody
                run_dates(settings, [date], write_outputs=False, quality_gates=False)
        engine.dispose()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
