"""Linkage quality and cost on a generated city with ground truth.

    .venv/bin/python benchmarks/linkage_quality.py --persons 100000 --days 1 [--seed 11] [--keep DIR]

Generates a city (`fixtures.city.generate_city`, default noise), loads every delivery of each business
date through the exchange code (manifest → sha256 → parse → apply; replays and checksum failures
skipped), builds roles (`linkage.roles.build_roles`), links (`linkage.link.link_roles`, carrying
yesterday's persons and links; with `--kept-model`, also the first date's model and skip list, as the
pipeline does), and compares with the truth (`truth/roles_<date>.parquet`):

- pairwise precision / recall: pairs of roles with the same true `person_id` vs pairs with the same RKID;
- cluster-level figures: persons over-split (one true person, several RKIDs) and over-merged;
- share of POSSIBLE, the methods used, per-anomaly recall (is each damaged role with its true person?);
- RKID stability: a re-run of the same day reproduces every RKID; the next day keeps every RKID of
  every role that is still there and still with the same true person;
- time and peak memory (RSS high-water mark; tracemalloc peak of the link stage) per stage.

Functions `load_sources`, `pair_metrics`, `anomaly_recall` are reused by the tests.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

KEY = ["BM", "BH", "YWZJ", "JS"]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_sources(city: Path | str, date: str, sources: dict | None = None, seen_batches: set | None = None) -> dict:
    """Apply every delivery of `date` under `city/landing` to `sources` (a dict table -> Source frame)."""
    from exchange.apply import apply_delivery
    from exchange.landing import load_manifest, verify
    from exchange.parse import read_delivery
    from catalog import TABLES

    sources = dict(sources or {})
    seen = seen_batches if seen_batches is not None else set()
    for folder in sorted(Path(city, "landing").glob(f"*/{date}")):
        if not (folder / "manifest.json").exists():
            continue
        m = load_manifest(folder)
        if not m.ok or m.batch_id in seen:
            continue
        seen.add(m.batch_id)
        for f in m.files:
            if f.table not in TABLES or f.extract_type not in ("full", "incremental"):
                continue
            if not verify(f, folder):
                continue
            t = TABLES[f.table]
            parsed = read_delivery(f.resolve(folder), f.format, f.encoding or None, t.fields,
                                   incremental=f.incremental, key=t.key)
            applied = apply_delivery(sources.get(f.table), parsed.frame, f.table, f.extract_type, date, m.batch_id,
                                     protected_keys=parsed.rejects["key"] if "key" in parsed.rejects else None)
            sources[f.table] = applied.current
    return sources


def _pairs(counts: pd.Series) -> int:
    c = counts.to_numpy(dtype=np.int64)
    return int((c * (c - 1) // 2).sum())


def pair_metrics(links: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Pairwise precision/recall of RKIDs against true person ids (roles present in both)."""
    m = links[KEY + ["RKID", "PPFS"]].merge(truth[KEY + ["person_id"]], on=KEY, how="inner")
    tp = _pairs(m.groupby(["person_id", "RKID"]).size())
    true_pairs = _pairs(m.groupby("person_id").size())
    pred_pairs = _pairs(m.groupby("RKID").size())
    per_person = m.groupby("person_id")["RKID"].nunique()
    per_rkid = m.groupby("RKID")["person_id"].nunique()
    return {
        "roles": int(len(m)),
        "roles_unmatched_in_truth": int(len(links) - len(m)),
        "precision": tp / pred_pairs if pred_pairs else 1.0,
        "recall": tp / true_pairs if true_pairs else 1.0,
        "true_pairs": true_pairs,
        "predicted_pairs": pred_pairs,
        "persons_split": int((per_person > 1).sum()),
        "rkids_merged": int((per_rkid > 1).sum()),
        "possible_share": float((m["PPFS"] == "POSSIBLE").mean()) if len(m) else 0.0,
        "methods": {k: int(v) for k, v in m["PPFS"].value_counts().sort_index().items()},
    }


def anomaly_recall(links: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """For each anomaly code: roles carrying it, how many sit with their true person's majority RKID,
    and the methods they were linked by."""
    m = links[KEY + ["RKID", "PPFS"]].merge(truth[KEY + ["person_id", "anomalies"]], on=KEY, how="inner")
    major = m.groupby(["person_id", "RKID"]).size().reset_index(name="n")
    major = major.sort_values(["person_id", "n", "RKID"], ascending=[True, False, True]).drop_duplicates("person_id")
    m = m.merge(major[["person_id", "RKID"]].rename(columns={"RKID": "major"}), on="person_id")
    m["ok"] = m["RKID"] == m["major"]
    solo = m.groupby("person_id")["YWZJ"].transform("size") == 1
    m = m[~solo]
    rows = []
    ex = m.assign(code=m["anomalies"].str.split(";")).explode("code")
    ex = ex[ex["code"].fillna("") != ""]
    for code, g in ex.groupby("code"):
        rows.append({"anomaly": code, "roles": len(g), "with_person": int(g["ok"].sum()),
                     "methods": dict(sorted(g["PPFS"].value_counts().items()))})
    return pd.DataFrame(rows)


def truth_roles(city: Path | str, date: str) -> pd.DataFrame:
    t = pd.read_parquet(Path(city, "truth", f"roles_{date}.parquet"))
    return t.astype({c: str for c in KEY + ["person_id", "anomalies"]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--city", default="", help="use an already generated city folder")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--config", default="", help="a linking configuration other than config/linkage.json (to compare)")
    ap.add_argument("--json", default="", help="write the figures to this file")
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the link stage's Python heap peak")
    ap.add_argument("--kept-model", action="store_true",
                    help="link later dates with the first date's model and skip list, as the pipeline does "
                         "(default: every date trains its own)")
    args = ap.parse_args()

    from fixtures.city import generate_city
    from linkage.link import link_roles, load_config
    from linkage.roles import build_roles

    cfg = load_config(args.config or None)
    work = Path(args.city) if args.city else Path(tempfile.mkdtemp(prefix="popbase-linkq-"))
    report: dict = {"persons": args.persons, "seed": args.seed, "config_version": cfg.get("version"), "dates": {}}
    if not args.city:
        t = time.perf_counter()
        generate_city(work, persons=args.persons, days=args.days, seed=args.seed)
        print(f"generate city ({args.persons:,} persons, {args.days} day(s)): {time.perf_counter() - t:.1f} s, "
              f"peak {peak_mib():,.0f} MiB", flush=True)
    dates = sorted({p.parent.name for p in (work / "landing").glob("*/*/manifest.json")})
    sources: dict = {}
    seen: set = set()
    persons = links = None
    prev_links = None
    model = None  # --kept-model: the first date's
    for date in dates:
        fig: dict = {}
        t = time.perf_counter()
        sources = load_sources(work, date, sources, seen)
        fig["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        roles = build_roles(sources, date)
        fig["roles_s"] = time.perf_counter() - t
        fig["roles"] = int(len(roles))
        fig["rss_before_link_mib"] = peak_mib()
        t = time.perf_counter()
        res = link_roles(roles, persons, links, None, date, cfg, model=model)
        fig["link_s"] = time.perf_counter() - t
        fig["link_stages_s"] = {k: round(v, 2) for k, v in res.stats["timings"].items()}
        fig["peak_rss_mib"] = peak_mib()
        if args.tracemalloc:  # Python-heap peak of the link stage alone (tracing slows it down ~3x)
            tracemalloc.start()
            link_roles(roles, persons, links, None, date, cfg, model=model)
            fig["link_tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        truth = truth_roles(work, date)
        fig.update(pair_metrics(res.links, truth))
        fig["model"] = {k: res.stats["model"][k] for k in ("source", "n_labelled", "n_random", "n_entities", "bits")}
        fig["candidates"] = res.stats["candidates"]
        fig["blocking_skipped_blocks"] = {k: v["skipped_blocks"] for k, v in res.stats["blocking"].items()}
        fig["blocking_pairs"] = {k: v["pairs"] for k, v in res.stats["blocking"].items()}
        ar = anomaly_recall(res.links, truth)
        fig["anomalies"] = ar.to_dict(orient="records")
        # stability: the same day again reproduces everything
        t = time.perf_counter()
        again = link_roles(roles, persons, links, None, date, cfg, model=model)
        fig["rerun_s"] = time.perf_counter() - t
        fig["rerun_identical"] = bool(again.links.equals(res.links) and again.persons.equals(res.persons))
        if prev_links is not None:
            # roles present yesterday and today whose true person is unchanged keep their RKID
            cur = res.links[KEY + ["RKID"]].merge(prev_links[KEY + ["RKID"]], on=KEY, suffixes=("", "_prev"))
            retired = set(res.persons.loc[res.persons["status"] == "retired", "RKID"])
            fig["roles_kept_rkid"] = float((cur["RKID"] == cur["RKID_prev"]).mean())
            fig["roles_moved"] = int((cur["RKID"] != cur["RKID_prev"]).sum())
            fig["rkids_retired_today"] = int(len(res.events[res.events["kind"] == "MERGED"]))
            fig["retired_total"] = len(retired)
        fig["events"] = {k: int(v) for k, v in res.events["kind"].value_counts().items()}
        report["dates"][date] = fig
        tm = (f", link heap peak {fig['link_tracemalloc_peak_mib']:,.0f} MiB (tracemalloc)"
              if "link_tracemalloc_peak_mib" in fig else "")
        print(f"\n== {date}: {fig['roles']:,} roles; load {fig['load_s']:.1f} s, build_roles {fig['roles_s']:.1f} s, "
              f"link {fig['link_s']:.1f} s; peak RSS {fig['rss_before_link_mib']:,.0f} MiB before link, "
              f"{fig['peak_rss_mib']:,.0f} MiB after{tm}")
        print(f"   link stages: {json.dumps(fig['link_stages_s'])}")
        print(f"   precision {fig['precision']:.6f}  recall {fig['recall']:.6f}  POSSIBLE {fig['possible_share']:.4%}"
              f"  persons split {fig['persons_split']}  RKIDs merged {fig['rkids_merged']}")
        print(f"   methods {json.dumps(fig['methods'])}")
        print(f"   model {fig['model']['source']} ({fig['model']['n_labelled']:,} labelled pairs), candidates "
              f"{fig['candidates']:,}, skipped blocks {json.dumps(fig['blocking_skipped_blocks'])}")
        print(f"   pairs compared per pass {json.dumps(fig['blocking_pairs'])}")
        print(f"   rerun identical: {fig['rerun_identical']} ({fig['rerun_s']:.1f} s)"
              + (f"; roles keeping yesterday's RKID {fig['roles_kept_rkid']:.4%} ({fig['roles_moved']} moved), "
                 f"merges today {fig['rkids_retired_today']}" if "roles_kept_rkid" in fig else ""))
        if len(ar):
            print(ar.to_string(index=False))
        persons, links, prev_links = res.persons, res.links, res.links
        if args.kept_model and model is None:
            model = res.model
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    if not args.keep and not args.city:
        shutil.rmtree(work, ignore_errors=True)
    elif not args.city:
        print(f"city kept in {work}")


if __name__ == "__main__":
    main()
