"""What joins a city's roles into one large component? The binned first date's components, edge kind by edge kind
(issue 15; docs/scale.md 2.7).

    .venv/bin/python benchmarks/components.py --city DIR [--date D] [--config F] [--json F]

A first date runs in bins of whole components (`day.binned.cut`): roles sharing an ID group, a record or a rule's
ID group, a damaged ID and each holder of an ID it could be repaired to, and every candidate pair the city's model
keeps. A bin holds its components whole, so the largest component sets the largest bin's memory. At 10M persons
the first bin was one component of 1.58 M roles; at 1M the largest was 883 roles. This script makes the cut's
relations as `cut` makes them (`day.binned.cut_relations`), on the first date's files applied in memory, and
prints the largest components as the edge kinds are added one by one: the ID groups and records, the rules' ID
groups, the repair edges, and the kept pairs at rising posterior thresholds (a kept pair's log2 odds, prior plus
bits). The model keeps pairs from `keep_min_bits`, so thresholds below it add nothing: `--config` a copy with a
lower one to see them (the figures in docs/benchmarks.md were measured with configuration 1.4.0, -10 bits). The
whole city is in memory at once (a 3M city took 12 minutes beside other work).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

THRESHOLDS = (-10.0, -5.0, 0.0, 5.0, 10.0)  # posterior log2 odds from which a kept pair joins


def sizes_of(comp: np.ndarray) -> dict:
    """The largest components of a labelling: the five largest, and the roles in components above 10k / 100k."""
    sizes = np.sort(np.bincount(comp))[::-1]
    n = int(sizes.sum())
    return {"largest": [int(s) for s in sizes[:5]], "components": int(len(sizes)),
            "share_above_10k": float(sizes[sizes > 10_000].sum() / n) if n else 0.0,
            "share_above_100k": float(sizes[sizes > 100_000].sum() / n) if n else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--city", required=True, help="a generated city's folder (its landing/)")
    ap.add_argument("--date", default="", help="the business date (default: the first)")
    ap.add_argument("--json", default="", help="write the figures here")
    ap.add_argument("--config", default=None, help="a linking configuration other than config/linkage.json")
    args = ap.parse_args()

    from benchmarks.linkage_quality import load_sources
    from day.binned import cut_relations
    from linkage.bins import components
    from linkage.link import LINKING_COLUMNS, _model_and_candidates, canonical_roles_by_table, load_config, prepare_city
    from linkage.roles import build_roles

    city = Path(args.city)
    date = args.date or sorted({p.parent.name for p in (city / "landing").glob("*/*/manifest.json")})[0]
    cfg = load_config(args.config)
    t = time.perf_counter()
    sources = load_sources(city, date)
    R = canonical_roles_by_table((build_roles({name: frame}, date)[LINKING_COLUMNS] for name, frame in sources.items()), cfg)
    del sources
    n = len(R)
    print(f"{date}: {n:,} roles ({time.perf_counter() - t:.1f} s)", flush=True)
    t = time.perf_counter()
    _, _, (id_group, record, rule_group), (broken, holder) = cut_relations(R, cfg, date)
    cityf = prepare_city(R, date, cfg, consume=True)
    del R
    model, cand = _model_and_candidates(cityf.P, cityf.s1, cityf.queries, cityf.entity, None, cfg, {}, {})
    del cityf
    post = model.log2_prior_odds + cand["bits"].to_numpy(dtype=np.float64)
    q, tt = cand["q"].to_numpy(np.int64), cand["t"].to_numpy(np.int64)
    print(f"model and {len(cand):,} kept pairs, {len(broken):,} repair edges ({time.perf_counter() - t:.1f} s)",
          flush=True)

    rows = []

    def report(label: str, *groupings, pairs=None) -> None:
        got = sizes_of(components(*groupings, pairs=pairs))
        rows.append({"edges": label, **got})
        print(f"{label:<48} largest {', '.join(f'{s:,}' for s in got['largest'])}; "
              f"above 10k {got['share_above_10k']:.2%}, above 100k {got['share_above_100k']:.2%}", flush=True)

    report("ID groups + records", id_group, record)
    report("+ rules' ID groups", id_group, record, rule_group)
    report("+ repair edges", id_group, record, rule_group, pairs=(broken, holder))
    report("ID groups + records + kept pairs (no repair)", id_group, record, rule_group, pairs=(q, tt))
    for th in THRESHOLDS:
        keep = post >= th
        report(f"+ repair + kept pairs at log2 odds >= {th:g} ({int(keep.sum()):,})", id_group, record, rule_group,
               pairs=(np.concatenate([broken, q[keep]]), np.concatenate([holder, tt[keep]])))
    if args.json:
        Path(args.json).write_text(json.dumps({"city": str(city), "date": date, "roles": n, "pairs": int(len(cand)),
                                               "repair_edges": int(len(broken)), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
