"""Blocking a city's queries: `linkage.fuzzy.candidate_pairs` on the first date of a generated city, as the
first date's link (and the binned date's cut) runs it, timed alone (issue 15).

    .venv/bin/python benchmarks/candidate_pairs.py --city DIR [--date D] [--repeat 3] [--config F]

The city's roles are prepared as `link.prepare_city` prepares them (its queries are the roles the ID stage
and the repairs leave without a person), then every pass of `config/linkage.json` blocks the queries against
every role, skipping blocks by size as a training date does. Printed: the seconds of each repeat, the pairs
and a checksum of them (the same pairs in the same order give the same checksum, so two versions of the code
can be compared on one city: run the script in a checkout of each), the pairs of each pass and how many pairs
a query has.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from linkage import fuzzy as fz  # noqa: E402 - after the path insert
from linkage.link import canonical_roles, load_config, prepare_city  # noqa: E402
from linkage.roles import build_roles  # noqa: E402
from settings import quiet_libraries  # noqa: E402

quiet_libraries()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--city", required=True, type=Path, help="a generated city's folder (its landing/)")
    ap.add_argument("--date", default="", help="the business date (default: the first)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", default="", help="a linking configuration other than config/linkage.json (to compare)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from linkage_quality import load_sources

    date = args.date or sorted({p.parent.name for p in (args.city / "landing").glob("*/*/manifest.json")})[0]
    cfg = load_config(args.config or None)
    t = time.perf_counter()
    city = prepare_city(canonical_roles(build_roles(load_sources(args.city, date), date), cfg), date, cfg)
    n = len(city.P)
    print(f"{n:,} roles, {len(city.queries):,} queries, prepared in {time.perf_counter() - t:.1f} s")
    fcfg = cfg["fuzzy"]
    for r in range(args.repeat):
        t = time.perf_counter()
        pairs, checksum, stats = 0, 0, {}
        per_query = np.zeros(n, dtype=np.int64)
        for left, right in fz.candidate_pairs(city.P, city.queries, np.arange(n), fcfg["blocking"], stats=stats,
                                              **fz.blocking_caps(fcfg)):
            pairs += len(left)
            keys = (left.astype(np.uint64) * np.uint64(n) + right.astype(np.uint64)) * np.uint64(pairs % 1_000_003 + 1)
            checksum = (checksum + int(keys.sum(dtype=np.uint64))) % (1 << 61)
            per_query += np.bincount(left, minlength=n)
        print(f"repeat {r + 1}: {time.perf_counter() - t:.2f} s, {pairs:,} pairs, checksum {checksum}")
    # where the pairs come from: a pass whose blocks grow with the city gives pairs that grow as its square
    for name, st in stats.items():
        print(f"  {name:24} {st['pairs']:>12,} pairs, {st['blocks']:>10,} blocks, {st['skipped_blocks']:>7,} skipped")
    codes = sum(c.nbytes for c, _ in city.P._codes.values())
    print(f"blocking codes held: {codes / 2**20:,.1f} MiB for {len(city.P._codes)} fields")
    q = per_query[city.queries]
    print("pairs per query: mean {:.1f}, p50 {:.0f}, p99 {:.0f}, p99.9 {:.0f}, max {:,}".format(
        q.mean(), *np.percentile(q, [50, 99, 99.9]), int(q.max())))


if __name__ == "__main__":
    main()
