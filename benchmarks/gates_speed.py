"""Time the quality gates of one staged date: `quality.suites.validate_delivery` on every staged file, as
`day.run.check` runs it (GX suites and delivery rates).

    .venv/bin/python benchmarks/gates_speed.py --staging HOME/out/staging/D [--repeat 1]

Reads `stage.json` of the folder for each staged file's table and extract type, then prints the seconds of
each file (the best of `--repeat`), the total, and a digest of every file's rates and messages (equal
digests: equal gates, to compare code versions). Figures go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import DEFAULT_QUALITY_CONFIG, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

from quality.suites import validate_delivery  # noqa: E402
from quality.thresholds import load_thresholds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--staging", type=Path, required=True, help="a staged date's folder (holds stage.json)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    stage = json.loads((args.staging / "stage.json").read_text(encoding="utf-8"))
    thresholds = load_thresholds(DEFAULT_QUALITY_CONFIG)
    digest = hashlib.sha256()
    total = 0.0
    for f in stage["files"]:
        if f["status"] != "staged" or not f.get("parquet") or f["table"] == "return":
            continue
        frame = pd.read_parquet(args.staging / f["parquet"])
        best, q = float("inf"), None
        for _ in range(args.repeat):
            started = time.perf_counter()
            q = validate_delivery(frame, f["table"], incremental=f["extract_type"] == "incremental",
                                  thresholds=thresholds)
            best = min(best, time.perf_counter() - started)
        total += best
        digest.update(json.dumps([f["parquet"], q.structural_ok, q.structural_messages, q.content_messages,
                                  q.warnings, q.rates], sort_keys=True, default=str).encode())
        print(f"{f['parquet']}: {len(frame):,} rows, {best:.2f} s")
    print(f"gates of {args.staging.name}: {total:.2f} s, digest {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
