"""Time `quality.rates.quality_rates` over every role of a base, as a daily date computes it.

    .venv/bin/python benchmarks/quality_rates_speed.py --db /path/to/popbase.db [--repeat 3]

Reads the base, builds the roles of its last date (`exchange.process`: live overlays on the sources,
then `linkage.roles.build_roles`), then times `quality_rates(roles, links)` and prints the best of
`--repeat` runs and a digest of the result (equal digests: equal rates, to compare code versions).
Figures go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="a base (SQLite file), e.g. from historical_load.py --keep")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from exchange.process import live_overlays, overlay_sources
    from linkage.roles import build_roles
    from quality.rates import quality_rates
    from store import base, db

    engine = db.make_engine(f"sqlite:///{args.db}")
    with engine.connect() as conn:
        state = base.read_base(conn)
    roles = build_roles(overlay_sources(state.sources, live_overlays(state.overlays, state.sources)), state.last_run)
    best = float("inf")
    result = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        result = quality_rates(roles, state.links)
        best = min(best, time.perf_counter() - t)
    digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()[:16]
    print(f"quality_rates over {len(roles):,} roles and {len(state.links):,} links: best of {args.repeat} "
          f"{best:.2f} s; result digest {digest}; link rate {result['link_rate']}", flush=True)


if __name__ == "__main__":
    main()
