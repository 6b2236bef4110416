"""Time the quality gates of one business date (`day.run.check`) run one file after another in this
process, and side by side in worker processes (what a date delivering many rows does), in one run.

    .venv/bin/python benchmarks/gates.py --home /path/to/home --date 20260301 [--repeat 2]

The home needs only `landing/` (a city from `python -m fixtures.city`; link it in). The date is staged
into the home's `out/staging/` once; each mode then gates it `--repeat` times, alternating.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

from day import run  # noqa: E402
from exchange import staging  # noqa: E402
from quality.thresholds import load_thresholds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    settings = Settings(home=args.home, db_url=f"sqlite:///{args.home / 'popbase.db'}")
    started = time.perf_counter()
    staged = staging.stage(args.home, args.date, staging.Guards.from_config(load_thresholds(settings.quality_config)))
    rows = sum(f.received_rows for f in staged.files if f.status == "staged")
    print(f"staged {rows:,} rows in {len(staged.files)} files: {time.perf_counter() - started:.1f} s", flush=True)
    for _ in range(args.repeat):
        for mode, from_rows in (("one after another", 10 ** 15), ("in worker processes", 1)):
            run.GATES_IN_WORKERS_FROM_ROWS = from_rows
            started = time.perf_counter()
            gates = run.check(settings, staged)
            print(f"{mode}: {time.perf_counter() - started:.1f} s ({len(gates.errors)} errors, "
                  f"{len(gates.warnings)} warnings)", flush=True)


if __name__ == "__main__":
    main()
