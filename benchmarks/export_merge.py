"""Time and memory of merging a date's exports from the previous date's (`exchange.outputs.merge_exports`,
what every scoped daily date writes its exports with).

    .venv/bin/python benchmarks/export_merge.py --exports HOME/out/exports/D [--links 70000] [--persons 30000]
        [--runs 3]

Takes the exports of date D as the previous date's, replaces a random sample of their link roles and
persons (as many as a 1M daily date touches: about 70k link roles and 30k persons) with themselves, and
merges them into a scratch folder --runs times. Prints wall and CPU seconds per run and the process's peak
memory; the sample's own frames are part of that peak, so compare code versions on the same exports.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from exchange import outputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", type=Path, required=True, help="an exports folder, HOME/out/exports/<D>")
    ap.add_argument("--links", type=int, default=70_000)
    ap.add_argument("--persons", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    previous = args.exports.name
    links = pq.read_table(args.exports / "links.parquet").to_pandas().sample(args.links, random_state=1)
    persons = pq.read_table(args.exports / "persons.parquet").to_pandas().sample(args.persons, random_state=1)
    keys = set(links["BM"] + "|" + links["BH"] + "|" + links["YWZJ"] + "|" + links["JS"])
    work = Path(tempfile.mkdtemp(prefix="popbase-export-merge-"))
    try:
        shutil.copytree(args.exports, work / "out" / "exports" / previous)
        for _ in range(args.runs):
            wall, cpu = time.perf_counter(), time.process_time()
            outputs.merge_exports(work, previous, "99999999", persons, set(persons["RKID"]), links, keys)
            print(f"merge_exports: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"peak memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
