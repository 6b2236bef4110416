"""Tests of the synthetic city generator (fixtures/city.py).

The deliveries are read back here with a small independent reader (csv / xlsx, manifests, I/U/D applied by
the spec's rules) and compared with the generator's ground truth and reconciliation figures.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import unicodedata
from collections import Counter

import pandas as pd
import pytest

from catalog import DEPARTMENTS, DEPT_TABLES, INCREMENTAL_FIELDS, TABLES
from fixtures import ids as idmod
from fixtures import names as nm
from fixtures.city import generate_city, main
from fixtures.noise import DIRT_CODES, NOISE_DEFAULTS, STATE_CODES

PERSONS = 10_000
DAYS = 3


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    summary = generate_city(out, persons=PERSONS, days=DAYS, seed=7)
    return str(out), summary


def _deliveries(out):
    with open(os.path.join(out, "truth", "deliveries.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _anoms(out, kind):
    return [a for a in _deliveries(out)["anomalies"] if a["type"] == kind]


def _roles(out, date):
    return pd.read_parquet(os.path.join(out, "truth", f"roles_{date}.parquet")).astype(str)


def _persons(out):
    return pd.read_parquet(os.path.join(out, "truth", "persons.parquet")).astype(str)


# --- an independent reader -----------------------------------------------------------------------
def read_rows(path, fmt, encoding):
    """-> (header, rows as lists of str, rejected line numbers)."""
    if fmt == "xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(path, read_only=True)
        ws = wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header = [str(c) for c in next(it)]
        rows = []
        for r in it:
            assert all(c is None or isinstance(c, str) for c in r), "xlsx cells must be text"
            rows.append([("" if c is None else c) for c in r] + [""] * (len(header) - len(r)))
        wb.close()
        return header, rows, []
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    enc = "gb18030" if encoding.upper() == "GB18030" else "utf-8"
    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    header = next(csv.reader([lines[0].decode(enc)]))
    rows, rejected = [], []
    for i, raw in enumerate(lines[1:-1], start=2):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            rejected.append(i)
            continue
        row = next(csv.reader([text]))
        if len(row) != len(header):
            rejected.append(i)
            continue
        rows.append(row)
    return header, rows, rejected


class Replayer:
    """Applies deliveries by the spec's rules; keeps {table: {key: [values dict, ts, deleted]}}."""

    def __init__(self):
        self.state = {t: {} for t in TABLES}
        self.batches = set()

    def run_date(self, out, date):
        recon = {}
        for dept in DEPARTMENTS:
            folder = os.path.join(out, "landing", dept, date)
            mpath = os.path.join(folder, "manifest.json")
            if not os.path.exists(mpath):
                continue
            with open(mpath, encoding="utf-8") as fh:
                man = json.load(fh)
            assert set(man) == {"department", "business_date", "batch_id", "files"}
            if man["batch_id"] in self.batches:
                recon[dept] = {f["table"]: {"replay": True} for f in man["files"]}
                continue
            self.batches.add(man["batch_id"])
            recon[dept] = {}
            for f in man["files"]:
                path = os.path.join(folder, f["path"])
                with open(path, "rb") as fh:
                    ok = hashlib.sha256(fh.read()).hexdigest() == f["sha256"]
                c = dict(manifest_rows=f["rows"], received_rows=0, loaded_rows=0, rejected_rows=0, inserted=0,
                         updated=0, deleted=0, unchanged=0, ignored_stale=0, checksum_ok=ok)
                recon[dept][f["table"]] = c
                if not ok:
                    continue
                header, rows, rejected = read_rows(path, f["format"], f["encoding"])
                c["received_rows"] = len(rows) + len(rejected)
                c["rejected_rows"] = len(rejected)
                c["loaded_rows"] = len(rows)
                self.apply(f["table"], f["extract_type"], header, rows, date, c)
                c["deviation"] = c["received_rows"] != c["manifest_rows"]
        return recon

    def apply(self, table, etype, header, rows, date, c):
        tb = TABLES[table]
        st = self.state[table]
        flds = list(tb.fields)
        if etype == "full":
            seen = set()
            for r in rows:
                v = dict(zip(header, r))
                key = v[tb.key]
                seen.add(key)
                ts = v.get("GXSJ") or date + "000000"
                self._upsert(st, key, {f: v[f] for f in flds}, ts, c)
            for key, rec in st.items():
                if not rec[2] and key not in seen:
                    rec[2] = True
                    c["deleted"] += 1
            return
        for r in rows:
            v = dict(zip(header, r))
            key = v[tb.key]
            ts = v["CZSJ"]
            rec = st.get(key)
            if rec is not None and ts < rec[1]:
                c["ignored_stale"] += 1
            elif v["CZLX"] == "D":
                if rec is not None and not rec[2]:
                    rec[2] = True
                    rec[1] = ts
                    c["deleted"] += 1
                else:
                    c["unchanged"] += 1
            else:
                self._upsert(st, key, {f: v[f] for f in flds}, ts, c)

    @staticmethod
    def _upsert(st, key, vals, ts, c):
        rec = st.get(key)
        if rec is not None and ts < rec[1]:
            c["ignored_stale"] += 1
        elif rec is None or rec[2]:
            st[key] = [vals, ts, False]
            c["inserted"] += 1
        elif rec[0] == vals:
            c["unchanged"] += 1
        else:
            st[key] = [vals, ts, False]
            c["updated"] += 1

    def live_roles(self):
        out = set()
        for t, tb in TABLES.items():
            for key, (vals, _, deleted) in self.state[t].items():
                if deleted:
                    continue
                for r in tb.roles:
                    if r.code == "ZF" and not (vals[r.name] or vals[r.id]):
                        continue
                    out.add((tb.dept, t, key, r.code))
        return out

    def live_rows(self, table):
        return {k: v[0] for k, v in self.state[table].items() if not v[2]}


@pytest.fixture(scope="module")
def replayed(city):
    out, summary = city
    rp = Replayer()
    per_date = {}
    for date in summary["dates"]:
        recon = rp.run_date(out, date)
        roles = _roles(out, date)
        per_date[date] = {"recon": recon, "live": rp.live_roles(), "roles": roles,
                          "rows": {t: dict(rp.live_rows(t)) for t in TABLES}}
    return per_date


# --- tests ---------------------------------------------------------------------------------------
def test_layout_and_manifests(city):
    out, summary = city
    dates = summary["dates"]
    assert len(dates) == DAYS + 1
    assert [int(d) for d in dates] == sorted(int(d) for d in dates)
    for k, date in enumerate(dates):
        for dept in DEPARTMENTS:
            folder = os.path.join(out, "landing", dept, date)
            with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as fh:
                man = json.load(fh)
            assert man["department"] == dept
            replay = [a for a in _anoms(out, "REPLAY") if a["business_date"] == date and a["dept"] == dept]
            if replay:
                assert man["batch_id"] == replay[0]["batch_id"] != f"{dept}-{date}-01"
                continue
            assert man["business_date"] == date and man["batch_id"] == f"{dept}-{date}-01"
            assert sorted(f["table"] for f in man["files"]) == sorted(DEPT_TABLES[dept])
            for f in man["files"]:
                assert set(f) == {"table", "extract_type", "path", "format", "encoding", "rows", "sha256"}
                want = "full" if k == 0 else "incremental"
                if f["extract_type"] != want:
                    assert (k, f["table"], f["extract_type"]) == (2, "women", "full")
                assert os.path.exists(os.path.join(folder, f["path"]))


def test_manifest_sha256_and_rows_are_true_except_injected(city):
    out, summary = city
    corrupt = {(a["business_date"], a["dept"], a["path"]) for a in _anoms(out, "CHECKSUM_MISMATCH")}
    deviate = {(a["business_date"], a["dept"], a["path"]): a for a in _anoms(out, "ROW_COUNT_DEVIATION")}
    assert corrupt and deviate
    for date in summary["dates"]:
        for dept in DEPARTMENTS:
            folder = os.path.join(out, "landing", dept, date)
            with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as fh:
                man = json.load(fh)
            for f in man["files"]:
                path = os.path.join(folder, f["path"])
                with open(path, "rb") as fh:
                    sha = hashlib.sha256(fh.read()).hexdigest()
                tag = (date, dept, f["path"])
                assert (sha == f["sha256"]) == (tag not in corrupt), tag
                if tag in corrupt:
                    continue
                header, rows, rejected = read_rows(path, f["format"], f["encoding"])
                extra = list(INCREMENTAL_FIELDS) if f["extract_type"] == "incremental" else []
                assert header == list(TABLES[f["table"]].fields) + extra
                n = len(rows) + len(rejected)
                if tag in deviate:
                    assert f["rows"] == n + 2 == deviate[tag]["manifest_rows"]
                else:
                    assert f["rows"] == n, tag


def test_formats_per_department(city):
    out, summary = city
    d0 = summary["dates"][0]
    with open(os.path.join(out, "landing", "police", d0, f"hukou_{d0}.csv"), "rb") as fh:
        raw = fh.read()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    raw.decode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # Chinese text in GB18030 is not UTF-8
    with open(os.path.join(out, "landing", "civil", d0, f"resident_{d0}.csv"), "rb") as fh:
        assert fh.read(3) == b"\xef\xbb\xbf"
    with open(os.path.join(out, "landing", "family_planning", d0, f"women_{d0}.csv"), "rb") as fh:
        raw = fh.read()
    assert raw.startswith(b"FNBH,") and raw.decode("utf-8")
    header, rows, _ = read_rows(os.path.join(out, "landing", "disability", d0, f"disabled_{d0}.xlsx"), "xlsx", "")
    assert header == list(TABLES["disabled"].fields) and rows


def test_reconciliation_and_truth_match_an_independent_replay(city, replayed):
    out, summary = city
    for date in summary["dates"]:
        with open(os.path.join(out, "truth", f"reconciliation_{date}.json"), encoding="utf-8") as fh:
            expected = json.load(fh)
        assert expected["business_date"] == date
        got = replayed[date]["recon"]
        assert set(got) == set(expected["departments"])
        for dept, tabs in got.items():
            exp_tabs = expected["departments"][dept]["tables"]
            assert set(tabs) == set(exp_tabs)
            for t, c in tabs.items():
                e = exp_tabs[t]
                if c.get("replay"):
                    assert e["replay"] is True and e["loaded_rows"] == 0 and e["inserted"] == 0
                    continue
                assert e["replay"] is False
                for k, v in c.items():
                    assert e[k] == v, (date, dept, t, k, e[k], v)
                if e["checksum_ok"]:
                    assert e["loaded_rows"] + e["rejected_rows"] == e["received_rows"]
                    on_top = e["deleted"] if e["extract_type"] == "full" else 0
                    assert (e["inserted"] + e["updated"] + e["deleted"] + e["unchanged"] + e["ignored_stale"]
                            - on_top == e["loaded_rows"])
                else:
                    assert e["received_rows"] == e["loaded_rows"] == e["inserted"] == 0
        # the truth holds exactly the live record roles
        roles = replayed[date]["roles"]
        truth = set(zip(roles["BM"], roles["BH"], roles["YWZJ"], roles["JS"]))
        assert len(truth) == len(roles)
        assert truth == replayed[date]["live"], date
        assert roles["person_id"].str.fullmatch(r"P\d{8}").all()


def test_every_delivery_anomaly_is_present_and_counted(city):
    out, summary = city
    kinds = Counter(a["type"] for a in _deliveries(out)["anomalies"])
    for k in ("REPLAY", "STALE_OP", "SAME_TS", "IDENTICAL_RESEND", "DELETE_UNKNOWN", "BAD_FIELD_COUNT",
              "BAD_ENCODING", "ROW_COUNT_DEVIATION", "CHECKSUM_MISMATCH", "FULL_REBASELINE"):
        assert kinds[k] >= 1, k
    rec = {}
    for date in summary["dates"]:
        with open(os.path.join(out, "truth", f"reconciliation_{date}.json"), encoding="utf-8") as fh:
            rec[date] = json.load(fh)["departments"]
    a = _anoms(out, "STALE_OP")[0]
    assert rec[a["business_date"]]["police"]["tables"]["hukou"]["ignored_stale"] == len(a["keys"])
    assert all(c < t for c, t in zip(a["czsj"], a["applied_ts"]))
    a = _anoms(out, "CHECKSUM_MISMATCH")[0]
    e = rec[a["business_date"]][a["dept"]]["tables"][a["table"]]
    assert e["checksum_ok"] is False and e["manifest_rows"] > 0 and e["loaded_rows"] == 0
    assert a["manifest_sha256"] != a["actual_sha256"]
    a = _anoms(out, "REPLAY")[0]
    assert rec[a["business_date"]][a["dept"]]["replay"] is True
    for kind in ("BAD_FIELD_COUNT", "BAD_ENCODING"):
        a = _anoms(out, kind)[0]
        e = rec[a["business_date"]][a["dept"]]["tables"][a["table"]]
        assert e["rejected_rows"] >= 1
        path = os.path.join(out, "landing", a["dept"], a["business_date"], a["path"])
        _, _, rejected = read_rows(path, "csv", "GB18030")
        assert a["lines"][0] in rejected
    a = _anoms(out, "ROW_COUNT_DEVIATION")[0]
    assert rec[a["business_date"]][a["dept"]]["tables"][a["table"]]["deviation"] is True


def _norm_id(v: str) -> str:
    v = unicodedata.normalize("NFKC", v)
    return "".join(v.split()).upper()


def _role_values(replayed, date):
    """roles of a date joined with the delivered raw values of the role (name, id, birth, sex)."""
    roles = replayed[date]["roles"]
    recs = []
    for t, tb in TABLES.items():
        rows = replayed[date]["rows"][t]
        for r in tb.roles:
            sub = roles[(roles["BH"] == t) & (roles["JS"] == r.code)]
            for key, pid, an in zip(sub["YWZJ"], sub["person_id"], sub["anomalies"]):
                v = rows[key]
                recs.append((t, r.code, key, pid, an, v[r.name], v[r.id], v[r.doc_type] if r.doc_type else "111",
                             v[r.birth] if r.birth else "", v[r.sex] if r.sex else ""))
    return pd.DataFrame(recs, columns=["BH", "JS", "YWZJ", "person_id", "anomalies", "XM", "ID", "ZJLX", "CSRQ",
                                       "XB"])


def test_ids_are_valid_where_not_dirtied(city, replayed):
    out, summary = city
    persons = _persons(out).set_index("person_id")
    d0 = summary["dates"][0]
    rv = _role_values(replayed, d0)
    rv = rv.join(persons[["id18", "name", "birth", "sex"]], on="person_id")
    codes = rv["anomalies"].str.split(";")
    has = lambda c: codes.map(lambda x: c in x)  # noqa: E731
    id_dirt = codes.map(lambda x: any(c.startswith("ID_") and c != "ID_MISMATCH" for c in x))
    citizen = rv["ZJLX"] == "111"
    clean = citizen & ~id_dirt & ~has("ID_MISMATCH")
    assert clean.sum() > 0.9 * len(rv)
    assert idmod.is_valid18(rv.loc[clean, "ID"].to_numpy(dtype=object)).all()
    assert (rv.loc[clean, "ID"] == rv.loc[clean, "id18"]).all()
    # every 18-digit number of the truth is a valid GB 11643 number whose birth and sex digits agree
    p = persons[persons["id18"] != ""]
    assert idmod.is_valid18(p["id18"].to_numpy(dtype=object)).all()
    assert (p["id18"].str[6:14] == p["birth"]).all()
    assert (idmod.sex_of(p["id18"].to_numpy(dtype=object)) == p["sex"].to_numpy(dtype=object)).all()
    # dirt that normalises away (spec: NFKC, whitespace removed, x -> X; 15 -> 18)
    for code in ("ID_FULLWIDTH", "ID_SPACE", "ID_LOWER_X"):
        m = has(code)
        assert m.sum() > 0, code
        assert (rv.loc[m, "ID"].map(_norm_id) == rv.loc[m, "id18"]).all(), code
    m = has("ID_15")
    assert m.sum() > 0 and rv.loc[m, "ID"].str.fullmatch(r"\d{15}").all()
    assert (idmod.upgrade15(rv.loc[m, "ID"].to_numpy(dtype=object)) == rv.loc[m, "id18"].to_numpy()).all()
    assert (rv.loc[m, "birth"] < "20000101").all()
    m = has("ID_EXCEL_SCI")
    assert m.sum() > 0 and rv.loc[m, "ID"].str.fullmatch(r"\d\.\d{1,5}E\+17").all()
    m = has("ID_EXCEL_000")
    assert m.sum() > 0 and rv.loc[m, "ID"].str.endswith("000").all()
    assert not idmod.is_valid18(rv.loc[m, "ID"].to_numpy(dtype=object)).any()
    for code in ("ID_TYPO", "ID_TRANSPOSE"):
        m = has(code)
        assert m.sum() > 0, code
        got, want = rv.loc[m, "ID"].to_numpy(dtype=object), rv.loc[m, "id18"].to_numpy(dtype=object)
        assert not idmod.is_valid18(got).any()
        diff = [sum(a != b for a, b in zip(x, y)) for x, y in zip(got, want)]
        assert set(diff) <= ({1} if code == "ID_TYPO" else {2})
    m = has("ID_MISSING")
    assert m.sum() > 0 and (rv.loc[m, "ID"] == "").all()
    # ID_MISMATCH: a valid number that belongs to another person
    m = has("ID_MISMATCH")
    assert m.sum() > 0 and idmod.is_valid18(rv.loc[m, "ID"].to_numpy(dtype=object)).all()
    assert (rv.loc[m, "ID"] != rv.loc[m, "id18"]).all()
    assert rv.loc[m, "ID"].isin(persons["id18"]).all()


def test_other_dirt_looks_as_documented(city, replayed):
    out, summary = city
    persons = _persons(out).set_index("person_id")
    rv = _role_values(replayed, summary["dates"][0]).join(persons[["name", "birth", "sex"]], on="person_id")
    codes = rv["anomalies"].str.split(";")
    has = lambda c: codes.map(lambda x: c in x)  # noqa: E731
    from opencc import OpenCC

    t2s = OpenCC("t2s")
    m = has("NAME_TRAD")
    assert m.sum() > 0 and (rv.loc[m, "XM"] != rv.loc[m, "name"]).all()
    assert (rv.loc[m, "XM"].map(t2s.convert) == rv.loc[m, "name"]).all()
    m = has("NAME_DOT")
    assert m.sum() > 0 and rv.loc[m, "XM"].str.contains("[・•．]").all() and rv.loc[m, "name"].str.contains("·").all()
    m = has("NAME_BOX")
    assert m.sum() > 0 and rv.loc[m, "XM"].str.contains("□").all()
    m = has("NAME_SPACE")
    assert m.sum() > 0 and (rv.loc[m, "XM"].str.replace(" ", "") == rv.loc[m, "name"]).all()
    m = has("NAME_TYPO")
    assert m.sum() > 0 and (rv.loc[m, "XM"] != rv.loc[m, "name"]).all()
    assert (rv.loc[m, "XM"].str.len() == rv.loc[m, "name"].str.len()).all()
    for code, pat in (("DATE_DASH", r"\d{4}-\d{1,2}-\d{1,2}"), ("DATE_SLASH", r"\d{4}/\d{2}/\d{2}"),
                      ("DATE_CN", r"\d{4}年\d{1,2}月\d{1,2}日")):
        m = has(code)
        assert m.sum() > 0 and rv.loc[m, "CSRQ"].str.fullmatch(pat).all(), code
        norm = rv.loc[m, "CSRQ"].str.extract(r"(\d{4})\D(\d{1,2})\D(\d{1,2})")
        norm = norm[0] + norm[1].str.zfill(2) + norm[2].str.zfill(2)
        assert (norm == rv.loc[m, "birth"]).all(), code
    m = has("SEX_CN")
    assert m.sum() > 0 and (rv.loc[m, "XB"].map({"男": "1", "女": "2"}) == rv.loc[m, "sex"]).all()
    m = has("SEX_CONFLICT")
    assert m.sum() > 0 and (rv.loc[m, "XB"] != rv.loc[m, "sex"]).all()
    m = has("BIRTH_CONFLICT")
    assert m.sum() > 0 and (rv.loc[m, "CSRQ"] != rv.loc[m, "birth"]).all()
    # roles without dirt carry the true values
    clean = rv["anomalies"] == ""
    assert (rv.loc[clean, "XM"] == rv.loc[clean, "name"]).all()
    b = clean & (rv["CSRQ"] != "")
    assert (rv.loc[b, "CSRQ"] == rv.loc[b, "birth"]).all()
    s = clean & (rv["XB"] != "")
    assert (rv.loc[s, "XB"] == rv.loc[s, "sex"]).all()


def test_anomalies_present_at_configured_rates(city):
    out, summary = city
    roles = _roles(out, summary["dates"][0])
    codes = Counter(c for a in roles["anomalies"] if a for c in a.split(";"))
    assert set(codes) <= set(DIRT_CODES) | set(STATE_CODES)
    for c in STATE_CODES:
        assert codes[c] >= 1, c
    non_police = roles[roles["BM"] != "police"]
    n = len(non_police)
    # dirt applicable to (almost) every role: count close to rate x roles in scope
    for c in ("ID_FULLWIDTH", "ID_SPACE", "ID_TYPO", "ID_TRANSPOSE", "NAME_SPACE", "NAME_TRAD", "DATE_DASH",
              "DATE_SLASH", "DATE_CN"):
        got = Counter(x for a in non_police["anomalies"] if a for x in a.split(";"))[c]
        expect = NOISE_DEFAULTS[c] * n
        assert 0.4 * expect <= got <= 1.8 * expect, (c, got, expect)
    # police records: mostly clean, not perfectly
    police = roles[roles["BM"] == "police"]
    dirty = (police["anomalies"].str.contains("ID_|NAME_", regex=True)
             & ~police["anomalies"].str.contains("DUP_", regex=True)).mean()
    assert 0 < dirty < 0.01
    # HUKOU_ABSENT at its rate among resident rows
    res = roles[roles["BH"] == "resident"]
    share = res["anomalies"].str.contains("HUKOU_ABSENT").mean()
    assert 0.4 * NOISE_DEFAULTS["HUKOU_ABSENT"] <= share <= 1.8 * NOISE_DEFAULTS["HUKOU_ABSENT"]


def test_population_looks_real(city):
    out, _ = city
    p = _persons(out)
    core = p[p["first_date"] == p["first_date"].min()]
    kinds = core["kind"].value_counts(normalize=True)
    assert 0.2 < kinds["MIGRANT"] < 0.3 and 0.65 < kinds["HUKOU"] < 0.78
    assert {"FOREIGN", "OTHER", "EXTERNAL"} <= set(kinds.index)
    sur = p.loc[p["surname"] != "", "surname"].value_counts(normalize=True)
    assert list(sur.index[:3]) == ["王", "李", "张"] or set(sur.index[:3]) == {"王", "李", "张"}
    assert 0.05 < sur["王"] < 0.09
    assert "曾" in sur.index and sur.index.str.len().max() == 2  # heteronym and compound surnames occur
    assert {"曾", "单", "仇", "区", "解", "欧阳", "司马"} <= set(nm.SURNAMES)
    assert (p["name"].value_counts() > 1).sum() > 20  # the same name occurs naturally
    dot = p["name"].str.contains("·").mean()
    assert 0.003 < dot < 0.03
    age = (20260301 - core["birth"].astype(int)) // 10000
    assert (p["birth"] <= max(p["first_date"])).all()
    assert age.min() >= 0 and age.max() <= 100 and 30 < age.mean() < 48
    assert 0.48 < (p["sex"] == "1").mean() < 0.54
    f = p[p["kind"] == "FOREIGN"]
    assert (f["doc_type"] == "414").any() and (f.loc[f["doc_type"] == "414", "nationality"] != "CHN").all()
    assert (f["id18"] == "").all()
    h = p[p["kind"] == "HUKOU"]
    assert h["hukou_region"].str.startswith("3201").all()
    m = p[p["kind"] == "MIGRANT"]
    assert (~m["hukou_region"].str.startswith("3201")).all()
    assert set(h["hkzt"]) >= {"1", "2", "3"}
    assert (p.loc[p["dup_id_of"] != "", "id18"].isin(p["id18"])).all()


def test_states_hold_where_injected(city, replayed):
    """With perfect linking (the truth's person ids) the person-level states hold exactly where injected."""
    out, summary = city
    for date in (summary["dates"][0], summary["dates"][-1]):
        rv = _role_values(replayed, date)
        rows = replayed[date]["rows"]
        status = {}
        for t, f in (("hukou", "HKZT"), ("temp", "ZT"), ("dibao", "BZZT"), ("disabled", "ZT"), ("resident", "JZZT"),
                     ("women", "HYZK"), ("marriage", "YWLX")):
            status[t] = {k: v[f] for k, v in rows[t].items()}
        rv["ST"] = [status[t].get(k, "") for t, k in zip(rv["BH"], rv["YWZJ"])]
        pol = rv[rv["BH"].isin(["hukou", "temp"])]
        active_pol = set(pol.loc[pol["ST"] == "1", "person_id"])
        any_pol = set(pol["person_id"])
        dead = set(rv.loc[(rv["BH"] == "hukou") & (rv["ST"] == "3"), "person_id"])
        has = lambda c: rv["anomalies"].str.contains(c)  # noqa: E731
        # DEATH_ACTIVE: a deceased person's active record
        active = (((rv["BH"].isin(["temp", "dibao", "disabled"])) & (rv["ST"] == "1"))
                  | ((rv["BH"] == "resident") & (rv["ST"] == "1")) | ((rv["BH"] == "women") & (rv["JS"] == "SELF")))
        state = active & rv["person_id"].isin(dead)
        assert (state == has("DEATH_ACTIVE")).all(), date
        # NOT_IN_POLICE
        state = rv["BH"].isin(["dibao", "disabled", "women"]) & (rv["JS"] == "SELF") & ~rv["person_id"].isin(any_pol)
        assert (state == has("NOT_IN_POLICE")).all(), date
        # PRESENT_NOT_REGISTERED / HUKOU_ABSENT
        res = rv["BH"] == "resident"
        active_hukou = set(pol.loc[(pol["BH"] == "hukou") & (pol["ST"] == "1"), "person_id"])
        state = res & (rv["ST"] == "1") & ~rv["person_id"].isin(active_pol)
        assert (state == has("PRESENT_NOT_REGISTERED")).all(), date
        state = res & (rv["ST"] == "2") & rv["person_id"].isin(active_hukou)
        assert (state == has("HUKOU_ABSENT")).all(), date
        # DUP_RECORD: two active hukou records of one person
        hk = rv[(rv["BH"] == "hukou") & (rv["ST"] == "1")]
        multi = set(hk.loc[hk["person_id"].duplicated(keep=False), "person_id"])
        state = (rv["BH"] == "hukou") & (rv["ST"] == "1") & rv["person_id"].isin(multi)
        assert (state == has("DUP_RECORD")).all(), date
        for t in ("temp", "resident", "dibao", "disabled", "women"):
            sub = rv[(rv["BH"] == t) & (rv["JS"] == "SELF")]
            act = sub if t in ("resident", "women") else sub[sub["ST"] == "1"]
            assert not act["person_id"].duplicated().any(), t
        # MARITAL_CONFLICT: HYZK=10 and a marriage registration without later divorce (same person)
        reg = {}
        nv = rv[(rv["BH"] == "marriage") & (rv["JS"] == "NV")]
        for key, pid in zip(nv["YWZJ"], nv["person_id"]):
            v = rows["marriage"][key]
            reg.setdefault(pid, []).append((v["DJRQ"], v["YWLX"]))
        women = rv[(rv["BH"] == "women") & (rv["JS"] == "SELF")]
        for key, an, pid in zip(women["YWZJ"], women["anomalies"], women["person_id"]):
            v = rows["women"][key]
            events = sorted(reg.get(pid, []))
            married = bool(events) and events[-1][1] == "1"
            assert (v["HYZK"] == "10" and married) == ("MARITAL_CONFLICT" in an), (key, v["HYZK"], events)


def test_logic_errors_are_where_injected(city, replayed):
    out, summary = city
    date = summary["dates"][0]
    rows = replayed[date]["rows"]
    roles = replayed[date]["roles"]
    an = {(t, k, j): a for t, k, j, a in zip(roles["BH"], roles["YWZJ"], roles["JS"], roles["anomalies"])}
    bd = int(date)
    keys = list(rows["women"])
    valid = dict(zip(keys, idmod.is_valid18([rows["women"][k]["GMSFHM"] for k in keys])))
    for key, v in rows["women"].items():
        i = v["GMSFHM"]
        if not valid[key]:
            continue
        male = int(i[16]) % 2 == 1
        birth = v["CSRQ"] if v["CSRQ"].isdigit() else i[6:14]
        age = (bd - int(birth)) // 10000
        assert (male or not 15 <= age <= 49) == ("LOGIC_ERROR" in an[("women", key, "SELF")]), key
    for key, v in rows["marriage"].items():
        for role, legal in (("NF", 22), ("NV", 20)):
            age = (int(v["DJRQ"]) - int(v[f"{role}_CSRQ"] if v[f"{role}_CSRQ"].isdigit() else 0)) // 10000
            if not v[f"{role}_CSRQ"].isdigit():
                continue
            assert (age < legal) == ("LOGIC_ERROR" in an[("marriage", key, role)]), (key, role)
    for key, v in rows["disabled"].items():
        i = _norm_id(v["GMSFHM"])
        if len(i) == 15:
            i = i[:6] + "19" + i[6:]
            i += idmod.CHECK_CHARS[sum(int(a) * w for a, w in zip(i, idmod.WEIGHTS)) % 11]
        if not i:
            continue
        ok = key == i + v["CJLB"] + v["CJDJ"]
        assert ok != ("LOGIC_ERROR" in an[("disabled", key, "SELF")]), key


def test_seeded_determinism(tmp_path):
    a = generate_city(tmp_path / "a", persons=1000, days=2, seed=3)
    b = generate_city(tmp_path / "b", persons=1000, days=2, seed=3)
    generate_city(tmp_path / "c", persons=1000, days=2, seed=4)

    def digest(root):
        h = {}
        for base, _, files in os.walk(root):
            for f in files:
                p = os.path.join(base, f)
                with open(p, "rb") as fh:
                    h[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
        return h

    da, db, dc = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert da == db
    assert a["rows"] == b["rows"]
    assert set(da) == set(dc) and da != dc


def test_states_truth_reused_across_dates_equals_a_fresh_evaluation(tmp_path, monkeypatch):
    """The generator's states truth reuses what earlier dates analysed (TruthCache); judged afresh from the
    live rows alone, every date gives the same states."""
    from fixtures import city as city_mod
    from fixtures import state_truth

    dates = []

    def write_and_check(tables, bd, truth_dir, live=None, cache=None):
        path = state_truth.write_truth(tables, bd, truth_dir, live=live, cache=cache)
        fresh = state_truth.evaluate_truth({t: f[live[t]] for t, f in tables.items()}, bd)
        pd.testing.assert_frame_equal(pd.read_parquet(path), fresh)
        dates.append(bd)
        return path

    monkeypatch.setattr(city_mod, "write_state_truth", write_and_check)
    generate_city(tmp_path, persons=3000, days=3, seed=5)
    assert len(dates) == 4


def test_truth_cache_judges_again_an_id_born_after_an_earlier_date():
    """An ID whose birth date is after the business date is ID_FORMAT; cached, it must be judged again on a
    later date (where it is valid)."""
    from fixtures.state_truth import TruthCache, evaluate_truth

    row = {f: "" for f in TABLES["dibao"].fields}
    row.update(DBRYBH="DB1", XM="王芳", BZZT="1", GMSFHM=idmod.make_id18([320102], [20260302], [12])[0])
    frame = pd.DataFrame([row]).assign(_pid_SELF=0, _ts="20260301000000", _v=7)
    cache = TruthCache()

    def states(bd, c):
        return set(evaluate_truth({"dibao": frame}, bd, cache=c)["HCZT"])

    assert "ID_FORMAT" in states("20260301", cache)
    assert states("20260302", cache) == states("20260302", None)
    assert "ID_FORMAT" not in states("20260302", cache)


def _csv_whole(df, columns, spec, bad_lines):
    """The delivery csv encoded in one piece (how files were written before they were written in chunks)."""
    enc = "gb18030" if spec["encoding"].upper() == "GB18030" else "utf-8"
    data = df.to_csv(columns=columns, index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).encode(enc)
    parts = data.split(b"\r\n")
    header, rows = parts[0], parts[1:-1]
    lines = [0] * len(bad_lines)
    for j, i in enumerate(sorted(range(len(bad_lines)), key=lambda i: bad_lines[i][0])):
        at = min(bad_lines[i][0], len(rows) - j) + j
        rows.insert(at, bad_lines[i][1])
        lines[i] = at + 2
    data = b"\r\n".join([header, *rows]) + b"\r\n"
    return (b"\xef\xbb\xbf" + data if spec.get("bom") else data), lines


def test_reference_ties_broken_by_the_smallest_key():
    """The police reference of a person is hukou before temp, active before not, the latest ``_ts``, then the
    smallest key; the keys are compared only where the rest ties, in whatever order the rows come."""
    from fixtures.state_truth import evaluate_truth

    m1 = idmod.make_id18([320102], [19850302], [123])[0]

    def name_diff(hukou, dibao, ts=("20260101000000",) * 2):
        rows = []
        for (key, xm), t in zip(hukou, ts):
            row = {f: "" for f in TABLES["hukou"].fields}
            row.update(RYBH=key, XM=xm, GMSFHM=m1, HKZT="1")
            rows.append({**row, "_pid_SELF": 0, "_ts": t})
        d = []
        for key, xm in dibao:
            row = {f: "" for f in TABLES["dibao"].fields}
            row.update(DBRYBH=key, XM=xm, GMSFHM=m1, BZZT="1")
            d.append({**row, "_pid_SELF": 0, "_ts": "20260101000000"})
        t = evaluate_truth({"hukou": pd.DataFrame(rows, dtype=object), "dibao": pd.DataFrame(d, dtype=object)},
                           "20260301")
        return set(t.loc[t["HCZT"] == "NAME_DIFF", "YWZJ"])

    dibao = [("D1", "陈晓明"), ("D2", "陈小明")]
    # "R10" < "R9" in code point order: R10 is the reference whichever row comes first
    assert name_diff([("R9", "陈小明"), ("R10", "陈晓明")], dibao) == {"R9", "D2"}
    assert name_diff([("R10", "陈晓明"), ("R9", "陈小明")], dibao) == {"R9", "D2"}
    # a later _ts wins before the key (and timestamps that are not all digits are ranked as text)
    assert name_diff([("R9", "陈小明"), ("R10", "陈晓明")], dibao, ("20260102000000", "20260101000000")) == {"R10", "D1"}
    assert name_diff([("R9", "陈小明"), ("R10", "陈晓明")], dibao, ("b", "a")) == {"R10", "D1"}


@pytest.mark.parametrize("seed", range(4))
def test_csv_rows_are_what_pandas_writes(seed):
    """The column-wise csv encoder gives pandas' bytes: quoting, CR/LF in values, missing values, categorical
    and Arrow columns, and the columns it leaves to pandas (NUL, its separator, numbers)."""
    import numpy as np
    import pyarrow as pa

    from fixtures.delivery import LINE_END, csv_rows

    rng = np.random.default_rng(seed)
    alphabet = list('ab ,"\r\n中文\t;\'0') + ["\u2028", "𠀀", "é"]

    def texts(n):
        return np.array(["".join(rng.choice(alphabet, rng.integers(0, 6))) for _ in range(n)], dtype=object)

    for trial in range(150):
        n = int(rng.integers(1, 30))
        cols = {"a": texts(n), "b": texts(n), "c": pd.array(texts(n), dtype=pd.ArrowDtype(pa.string())),
                "d": pd.Categorical(texts(n))}
        odd = trial % 6
        if odd == 1:
            cols["b"][0] = None
        elif odd == 2:
            cols["a"][-1] = "x\x00y"
        elif odd == 3:
            cols["b"][0] = "x\x1fy"
        elif odd == 4:
            cols["e"] = np.arange(n)
        elif odd == 5:
            cols["c"] = pd.array([None] + list(texts(n - 1)), dtype=pd.ArrowDtype(pa.string()))
            cols["d"] = pd.Categorical([None] + list(texts(n - 1)))
        df = pd.DataFrame(cols).iloc[n // 4:]
        columns = list(df.columns)[::-1] if trial % 2 else list(df.columns)
        for enc in ("utf-8", "gb18030"):
            want = df.to_csv(header=False, index=False, columns=columns, lineterminator=LINE_END,
                             quoting=csv.QUOTE_MINIMAL).encode(enc)
            assert csv_rows(df, columns, enc) == want, (trial, enc)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 50_000])
def test_csv_written_in_chunks_is_the_whole_file(chunk_rows):
    from fixtures.delivery import csv_pieces

    df = pd.DataFrame({"A": [f"a{i}" for i in range(7)], "B": ["x,y", "", '"q"', "张三", "", "b", "c"]})
    bad = [(3, b"bad,3"), (0, b"bad,0"), (3, b"bad,3b"), (7, b"bad,end"), (99, b"bad,past"), (6, b"bad,6")]
    for spec in ({"encoding": "GB18030"}, {"encoding": "UTF-8", "bom": True}):
        for bad_lines in (bad, []):
            lines = []
            data = b"".join(csv_pieces(df, ["A", "B"], spec, bad_lines, lines, chunk_rows=chunk_rows))
            assert (data, lines) == _csv_whole(df, ["A", "B"], spec, bad_lines)


def test_delivery_written_by_another_process_is_the_same(tmp_path):
    """Big xlsx deliveries are written by a new process from Arrow copies of the frames: same files."""
    from fixtures.delivery import (arrow_table, finish_delivery_process, resolve_formats, start_delivery_process,
                                   write_delivery)

    spec = resolve_formats(None)["disability"]
    df = pd.DataFrame({f: [f"{f}{i}" if i % 3 else "" for i in range(5)] for f in TABLES["disabled"].fields})
    df["XM"] = ["张三", "", " 李四 ", "&<>", "王五"]
    columns = list(TABLES["disabled"].fields)
    item = {"table": "disabled", "extract_type": "full", "columns": columns, "bad_lines": [], "rows_delta": 0,
            "corrupt": False}
    here = write_delivery(str(tmp_path / "a"), "disability", "20260301", "b-1", spec, [{**item, "df": df}])
    process = start_delivery_process(str(tmp_path / "b"), "disability", "20260301", "b-1", spec,
                                     [{**item, "df": arrow_table(df, columns)}])
    assert finish_delivery_process(process) == here
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_clean_city_and_cli(tmp_path, capsys):
    s = generate_city(tmp_path / "clean", persons=800, days=1, seed=1, noise={"scale": 0}, anomalies=False)
    roles = _roles(str(tmp_path / "clean"), s["dates"][-1])
    assert (roles["anomalies"] == "").all()
    assert not json.load(open(tmp_path / "clean" / "truth" / "deliveries.json", encoding="utf-8"))["anomalies"]
    with pytest.raises(ValueError):
        generate_city(tmp_path / "bad", persons=800, days=1, noise={"NO_SUCH_RATE": 1})
    assert main(["--persons", "600", "--days", "1", "--seed", "2", "--out", str(tmp_path / "cli")]) == 0
    assert "delivery_anomalies" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "cli" / "truth" / "persons.parquet")


def test_name_maps_fold_back():
    from opencc import OpenCC

    t2s = OpenCC("t2s")
    pools = [nm.MALE_CHARS, nm.FEMALE_CHARS, nm.SURNAMES, nm.MALE_POPULAR, nm.FEMALE_POPULAR, nm.UYGHUR_MALE,
             nm.UYGHUR_FEMALE]
    chars = set("".join("".join(p) for p in pools))
    assert [c for c in chars if t2s.convert(c) != c] == []  # true names are already simplified
    for s, t in nm.TRAD_MAP.items():
        assert t2s.convert(t) == s, (s, t)
    for s, t in nm.HOMOPHONE_MAP.items():
        assert t2s.convert(t) == t != s
