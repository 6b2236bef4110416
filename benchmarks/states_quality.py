"""Pending-verification states of the real pipeline against the generator's ground truth.

    .venv/bin/python benchmarks/states_quality.py --persons 100000 --days 1 [--seed 11] [--noise-scale 1]
        [--keep DIR] [--examples 3] [--json FILE]

Generates a city (`fixtures.city.generate_city`, default noise) under `<home>` (its `landing/` is the
pipeline's landing, `truth/` the ground truth), runs the pipeline date by date exactly as production does
(`day.run_dates` on SQLite `<home>/popbase.db`), reads the open tasks of the last date from
the database (`tasks` with `status == "open"`) and compares them with `truth/states_<last date>.parquet`
(`fixtures.state_truth`): per state precision, recall, support (truth rows), and routing accuracy (share of
the correctly raised tasks routed to the right department); `FUZZY_CANDIDATE` is shown as a count only (the
truth does not know it). With `--examples N` prints up to N false positives and N false negatives per state
with the role's true person and injected anomaly codes (`truth/roles_<date>.parquet`).

Functions `open_tasks`, `compare`, `discrepancies` are reused by tests/test_state_truth.py.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

from fixtures.state_truth import KEY, TRUTH_STATES, read_truth  # noqa: E402

TARGET = 0.98


def open_tasks(engine) -> pd.DataFrame:
    """The open tasks in the database: BM BH YWZJ JS HCZT route (and RKID)."""
    from store import db

    with engine.connect() as conn:
        t = db.read_frame(conn, db.tasks, db.tasks.c.status == "open")
    cols = KEY + ["HCZT", "route", "RKID"]
    if t.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    return t[cols].astype(str).reset_index(drop=True)


def compare(tasks: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per state: support (truth rows), raised (open tasks), tp, fp, fn, precision, recall, route_ok (share of
    the true positives routed as the truth says). Index: the truth's states in spec order, then any other
    state the pipeline raised (FUZZY_CANDIDATE); a last row `ALL` over the truth's states."""
    k = KEY + ["HCZT"]
    m = tasks[k + ["route"]].merge(truth[k + ["route"]], on=k, how="outer", suffixes=("_p", "_t"), indicator=True)
    m["tp"] = m["_merge"] == "both"
    m["fp"] = m["_merge"] == "left_only"
    m["fn"] = m["_merge"] == "right_only"
    m["route_ok"] = m["tp"] & (m["route_p"] == m["route_t"])
    g = m.groupby("HCZT")[["tp", "fp", "fn", "route_ok"]].sum()
    order = list(TRUTH_STATES) + sorted(set(g.index) - set(TRUTH_STATES))
    g = g.reindex(order).fillna(0).astype(int)
    g.loc["ALL"] = g.loc[list(TRUTH_STATES)].sum()
    out = pd.DataFrame({"support": g["tp"] + g["fn"], "raised": g["tp"] + g["fp"], "tp": g["tp"], "fp": g["fp"],
                        "fn": g["fn"]})
    out["precision"] = (g["tp"] / (g["tp"] + g["fp"])).where(g["tp"] + g["fp"] > 0)
    out["recall"] = (g["tp"] / (g["tp"] + g["fn"])).where(g["tp"] + g["fn"] > 0)
    out["route_ok"] = (g["route_ok"] / g["tp"]).where(g["tp"] > 0)
    not_truth = ~out.index.isin(list(TRUTH_STATES) + ["ALL"])
    out.loc[not_truth, ["support", "tp", "fp", "fn", "precision", "recall", "route_ok"]] = float("nan")
    return out


def discrepancies(tasks: pd.DataFrame, truth: pd.DataFrame, roles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every false positive (`kind` FP) and false negative (FN) of the truth's states, with the role's true
    person and anomaly codes when `roles` (truth/roles_<date>.parquet) is given; wrong routes as `ROUTE`."""
    k = KEY + ["HCZT"]
    p = tasks[tasks["HCZT"].isin(list(TRUTH_STATES))]
    m = p[k + ["route", "RKID"]].merge(truth[k + ["route"]], on=k, how="outer", suffixes=("_p", "_t"),
                                       indicator=True)
    m["kind"] = m["_merge"].map({"left_only": "FP", "right_only": "FN", "both": "ROUTE"}).astype(str)
    m = m[(m["kind"] != "ROUTE") | (m["route_p"] != m["route_t"])].drop(columns="_merge")
    if roles is not None:
        m = m.merge(roles[KEY + ["person_id", "anomalies"]], on=KEY, how="left")
    return m.fillna("").sort_values(["HCZT", "kind"] + KEY).reset_index(drop=True)


def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.4f}"


def report_table(res: pd.DataFrame) -> str:
    lines = ["| state | support | raised | TP | FP | FN | precision | recall | routing |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for state, r in res.iterrows():
        n = lambda c: "" if pd.isna(r[c]) else str(int(r[c]))  # noqa: E731
        lines.append(f"| {state} | {n('support')} | {n('raised')} | {n('tp')} | {n('fp')} | {n('fn')} | "
                     f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['route_ok'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--noise-scale", type=float, default=1.0, help="multiply every noise rate (default noise: 1)")
    ap.add_argument("--keep", help="folder for the city and the database (kept); default: a temporary folder")
    ap.add_argument("--examples", type=int, default=3, help="false positives / negatives shown per state")
    ap.add_argument("--json", help="write the figures as JSON to this file")
    a = ap.parse_args(argv)

    from day import run_dates
    from fixtures.city import generate_city
    from store import db

    home = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="popbase_states_"))
    if home.exists() and any(home.iterdir()):
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    times = {}
    try:
        t0 = time.perf_counter()
        summary = generate_city(home, persons=a.persons, days=a.days, seed=a.seed, noise={"scale": a.noise_scale})
        times["generate"] = time.perf_counter() - t0
        engine = db.make_engine(f"sqlite:///{home}/popbase.db")
        settings = Settings(home=home)
        dates = settings.landed_dates()
        for d in dates:
            t0 = time.perf_counter()
            run_dates(settings, [d])
            times[f"pipeline_{d}"] = time.perf_counter() - t0
        last = dates[-1]
        t0 = time.perf_counter()
        tasks = open_tasks(engine)
        truth = read_truth(home / "truth", last)
        roles = pd.read_parquet(home / "truth" / f"roles_{last}.parquet").astype(str)
        res = compare(tasks, truth)
        dis = discrepancies(tasks, truth, roles)
        times["compare"] = time.perf_counter() - t0
        engine.dispose()

        pipeline_s = sum(v for k, v in times.items() if k.startswith("pipeline_"))
        print(f"city: {summary['persons']} persons, {a.days} incremental day(s), seed {a.seed}, "
              f"noise scale {a.noise_scale}; dates {dates[0]}..{last}; live record roles on {last}: {summary['roles'][last]}")
        print(f"open tasks on {last}: {len(tasks)}; truth rows: {len(truth)}")
        print(report_table(res))
        below = [s for s in TRUTH_STATES if res.loc[s, "support"] > 0
                 and (res.loc[s, "precision"] < TARGET or res.loc[s, "recall"] < TARGET)]
        print(f"states below {TARGET} precision or recall: {', '.join(below) or 'none'}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items())
              + f"; pipeline total {pipeline_s:.1f}; peak RSS {rss:.0f} MiB")
        if a.examples and len(dis):
            with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 40):
                for (state, kind), grp in dis.groupby(["HCZT", "kind"], sort=False):
                    print(f"\n{state} {kind}: {len(grp)}")
                    print(grp.head(a.examples).to_string(index=False))
        if a.json:
            payload = {"persons": summary["persons"], "days": a.days, "seed": a.seed, "noise_scale": a.noise_scale,
                       "dates": dates,
                       "open_tasks": len(tasks), "truth_rows": len(truth), "times": times,
                       "states": json.loads(res.to_json(orient="index"))}
            Path(a.json).write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    finally:
        if not a.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
