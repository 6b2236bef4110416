"""Can a whole city be linked in bins? Component sizes, and bins linked apart against the city linked whole
(issue 15, step 7; docs/scale.md 2.7).

    .venv/bin/python benchmarks/bins.py --city DIR [--date D] [--bin-roles 200000]

The binned whole-city date of docs/scale.md 2.7 links components of the city apart, each bin with the model
trained once for the city. That gives the whole-city result only if every role's link depends on its own
component alone. This script measures both halves of that claim on a generated city (`python -m
fixtures.city`), with the linker as it is (`linkage.link.link_roles`):

1. The city linked whole, as the historical date links it. Two steps of the linker are watched (wrapped,
   not changed): the canonical roles (`_prepare_fuzzy`'s input) and the scored candidate pairs
   (`_score_candidates`' output: every (query, target) pair that blocking reached and the comparison kept).
2. Components over the roles, joined by: one person (RKID: ID clusters, repairs and fuzzy links), one
   record (spouses, a husband and his wife), one ID key (holders of one number are read together), and
   every scored candidate pair (a query's link depends on all its candidates). Printed: how many, the
   largest, the share of roles in components above `--bin-roles`.
3. The components packed into bins of about `--bin-roles` roles (`linkage.bins.pack`), each bin
   linked apart with the city's model (`link_roles(..., model=...)`), and compared with the whole: per role
   the RKID, the method (PPFS) and the score (PPDF); per pair of roles, one person or not. Time of each bin.

With `--before-link`, step 2's components are those a binned date can find before it links
(`linkage.bins.components_before_linking`: ID group, record, repair candidates and the reachable pairs of the
ID stage's unanchored roles, with the city's model), printed with their time and the memory they added.

The memory of the binned run is not measured here (the whole city is in memory for the comparison); it is
the chunk's by construction.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from linkage.bins import components, pack  # noqa: E402 - after the path insert
from settings import quiet_libraries  # noqa: E402

quiet_libraries()

KEY = ["BM", "BH", "YWZJ", "JS"]


class Watch:
    """The canonical roles and the scored candidates of one `link_roles` call (wrapping two of its steps)."""

    def __init__(self):
        import linkage.link as lk
        self.lk, self.R, self.cand = lk, None, None
        self._prepare, self._score = lk._prepare_fuzzy, lk._score_candidates

        def prepare(R, *a, **k):
            self.R = R
            return self._prepare(R, *a, **k)

        def score(*a, **k):
            self.cand = self._score(*a, **k)
            return self.cand

        lk._prepare_fuzzy, lk._score_candidates = prepare, score

    def close(self) -> None:
        self.lk._prepare_fuzzy, self.lk._score_candidates = self._prepare, self._score


def role_components(R: pd.DataFrame, rkid: np.ndarray, cand: pd.DataFrame) -> np.ndarray:
    """Component number of each row of `R` (canonical order; `rkid` in the same order) under the relations
    of the module docstring: person, record and ID as groupings, the candidate pairs as pairs."""
    ids = np.where(R["id18"].to_numpy(dtype=object) != "", R["id18"].to_numpy(dtype=object),
                   R["id_norm"].to_numpy(dtype=object))
    pairs = (cand["q"].to_numpy(np.int64), cand["t"].to_numpy(np.int64)) if len(cand) else None
    return components(np.asarray(rkid, dtype=object), (R["BH"] + "|" + R["YWZJ"]).to_numpy(dtype=object), ids,
                      pairs=pairs)


def same_person_pairs(rkid: np.ndarray) -> set:
    """Pairs of rows with one RKID, as (row, first row of its RKID): equal sets, equal partitions."""
    s = pd.Series(np.arange(len(rkid)))
    first = s.groupby(rkid).transform("min").to_numpy()
    return {(int(a), int(b)) for a, b in zip(s.to_numpy(), first) if a != b}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--city", required=True, help="a generated city's folder (its landing/)")
    ap.add_argument("--date", default="", help="the business date to link (default: the first)")
    ap.add_argument("--bin-roles", type=int, default=200_000)
    ap.add_argument("--before-link", action="store_true",
                    help="components found before linking (linkage.bins.components_before_linking), not from the result")
    args = ap.parse_args()

    from benchmarks.linkage_quality import load_sources
    from linkage.base import role_keys
    from linkage.link import link_roles, load_config
    from linkage.roles import build_roles

    city = Path(args.city)
    date = args.date or sorted({p.parent.name for p in (city / "landing").glob("*/*/manifest.json")})[0]
    cfg = load_config()
    t = time.perf_counter()
    roles = build_roles(load_sources(city, date), date)
    print(f"{date}: {len(roles):,} roles ({time.perf_counter() - t:.1f} s)", flush=True)

    watch = Watch()
    try:
        t = time.perf_counter()
        whole = link_roles(roles, None, None, None, date, cfg)
        t_whole = time.perf_counter() - t
        R, cand = watch.R, watch.cand
    finally:
        watch.close()
    print(f"linked whole: {t_whole:.1f} s, {len(cand):,} scored candidate pairs", flush=True)

    w = whole.links.set_index(pd.Index(role_keys(whole.links)))
    rkey = role_keys(R)
    rkid = w["RKID"].reindex(rkey).to_numpy(dtype=object)
    if args.before_link:
        import resource

        from linkage.bins import components_before_linking
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t = time.perf_counter()
        comp = components_before_linking(R.reset_index(drop=True), cfg, whole.model, date)
        print(f"components before linking: {time.perf_counter() - t:.1f} s, process peak {rss0:.2f} -> "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
        split = pd.Series(comp).groupby(rkid).nunique()
        print(f"persons cut by these components: {(split > 1).sum():,}")
    else:
        comp = role_components(R, rkid, cand)
    sizes = np.bincount(comp)
    big = sizes[sizes > args.bin_roles]
    q = np.percentile(sizes, [50, 99, 99.99])
    print(f"components: {len(sizes):,}; roles per component median {q[0]:.0f}, p99 {q[1]:.0f}, p99.99 {q[2]:.0f}, "
          f"largest {sizes.max():,}; above {args.bin_roles:,} roles: {len(big)} ({big.sum() / len(R):.2%} of the roles)")
    top = np.sort(sizes)[::-1][:5]
    print("largest five:", ", ".join(f"{s:,}" for s in top))

    bins = pack(comp, args.bin_roles)
    n_bins = int(bins.max()) + 1
    print(f"bins of about {args.bin_roles:,} roles: {n_bins}", flush=True)
    parts, secs = [], []
    for b in range(n_bins):
        sel = R.iloc[np.flatnonzero(bins == b)]
        t = time.perf_counter()
        res = link_roles(sel[roles.columns].reset_index(drop=True), None, None, None, date, cfg, model=whole.model)
        secs.append(time.perf_counter() - t)
        parts.append(res.links)
    binned = pd.concat(parts, ignore_index=True)
    print(f"linked in {n_bins} bins: {sum(secs):.1f} s (largest bin {max(secs):.1f} s) against {t_whole:.1f} s whole",
          flush=True)

    b = binned.set_index(pd.Index(role_keys(binned))).reindex(rkey)
    wr = w.reindex(rkey)
    same_rkid = (b["RKID"].to_numpy(dtype=object) == wr["RKID"].to_numpy(dtype=object))
    same_ppfs = (b["PPFS"].to_numpy(dtype=object) == wr["PPFS"].to_numpy(dtype=object))
    same_ppdf = np.isclose(b["PPDF"].to_numpy(dtype=float), wr["PPDF"].to_numpy(dtype=float), atol=1e-9)
    pairs_w = same_person_pairs(wr["RKID"].to_numpy(dtype=object))
    pairs_b = same_person_pairs(b["RKID"].to_numpy(dtype=object))
    print(f"roles with another RKID: {(~same_rkid).sum():,}; another method: {(~same_ppfs).sum():,}; "
          f"another score: {(~same_ppdf).sum():,}; one-person pairs only whole: {len(pairs_w - pairs_b):,}, "
          f"only binned: {len(pairs_b - pairs_w):,}")
    diff = ~(same_rkid & same_ppfs & same_ppdf)
    if diff.any():
        show = pd.DataFrame({"role": rkey[diff], "whole": wr["PPFS"].to_numpy()[diff], "binned": b["PPFS"].to_numpy()[diff],
                             "ppdf_whole": wr["PPDF"].to_numpy()[diff], "ppdf_binned": b["PPDF"].to_numpy()[diff]})
        print(show.head(20).to_string(index=False))


if __name__ == "__main__":
    main()
