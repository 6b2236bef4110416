"""Time loading the whole role index (`store.base.rebuild_index`, what a historical date and a new index
layout do) into a fresh SQLite database, from the index of an existing base.

    .venv/bin/python benchmarks/index_load.py --db /path/to/popbase.db [--chunks 10] [--work DIR]

Reads `role_index` and `role_forms` of the base, splits them into --chunks hash buckets of records (as
`day.scoped.write_full_index` does), and times `rebuild_index` into a new database under --work (removed
after): the rows inserted and every secondary index built. Prints the seconds and a digest of the loaded
rows and of the index entries each index holds (equal digests: equal index, to compare code versions).
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

from store import base, db  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    src = db.make_engine(f"sqlite:///{args.db}")
    with src.connect() as conn:
        block_cols = [c["name"] for c in sa.inspect(conn).get_columns("role_forms") if c["name"].startswith("bk_")]
        index = db.read_frame(conn, db.role_index)
        forms = db.read_frame(conn, db.forms_table(block_cols))
    bucket = pd.factorize(index["record"])[0] % args.chunks  # whole records, as write_full_index
    fb = forms["role_key"].map(pd.Series(bucket, index=index["role_key"])).to_numpy()
    chunks = [(index[bucket == b], forms[fb == b]) for b in range(args.chunks)]
    work = Path(tempfile.mkdtemp(prefix="popbase-index-load-", dir=args.work))
    try:
        engine = db.make_engine(f"sqlite:///{work / 'index.db'}")
        with engine.begin() as conn:
            table = db.ensure_forms(conn, block_cols)
            started = time.perf_counter()
            base.rebuild_index(conn, table, chunks, "benchmark")
            seconds = time.perf_counter() - started
        digest = hashlib.sha256()
        with engine.connect() as conn:
            for (name,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"):
                digest.update(name.encode())
            digest.update(str(conn.exec_driver_sql("PRAGMA integrity_check").scalar()).encode())
            for t in ("role_index", "role_forms"):
                digest.update(str(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()).encode())
        engine.dispose()
        print(f"{len(index):,} index rows and {len(forms):,} form rows in {args.chunks} chunks: {seconds:.1f} s, "
              f"digest {digest.hexdigest()[:16]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
