"""Daily incremental runs versus a rebuild from scratch over the same deliveries.

The daily run links today's roles with yesterday's links as continuity; a rebuild links the final
state with no history at all. They must agree: the same persons (clusters of record roles), the same
RKIDs wherever the role that founded a person is still there, and the same open tasks.
"""
from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from catalog import TABLES
from exchange.process import live_overlays, overlay_sources
from linkage.link import link_roles
from linkage.roles import build_roles
import verification.states as states_module
from verification.states import evaluate_states, evaluate_states_in_bins
from store import db
from tests.conftest import copy_city, run
from settings import landed_dates
from store.base import read_base

KEY = ["BM", "BH", "YWZJ", "JS"]


@pytest.fixture(scope="module")
def incremental(city_factory, tmp_path_factory):
    city = city_factory(persons=2000, days=7, seed=7)
    home = copy_city(city, tmp_path_factory.mktemp("inc") / "home")
    engine = db.make_engine(f"sqlite:///{home / 'popbase.db'}")
    dates = landed_dates(home)
    for d in dates:
        run(home, engine, [d])
    with engine.connect() as conn:
        state = read_base(conn)
    yield dates, state
    engine.dispose()


def rebuild(state, date):
    """Link the final state of every table from nothing: no previous persons, links or RKIDs."""
    view = overlay_sources(state.sources, live_overlays(state.overlays, state.sources))
    roles = build_roles(view, date)
    empty = lambda cols: pd.DataFrame(columns=cols)  # noqa: E731
    res = link_roles(roles, empty(db.PERSON_COLUMNS), empty(KEY + ["RKID", "PPFS", "PPDF"]),
                     empty(["BM", "BH", "YWZJ", "JS", "RKID", "decision", "RWBH", "decided"]), date)
    return roles, view, res


def clusters(links: pd.DataFrame) -> set[frozenset]:
    keys = links[KEY].astype(str).agg("|".join, axis=1)
    return {frozenset(g) for g in keys.groupby(links["RKID"].to_numpy()).agg(list)}


def test_rebuild_finds_the_same_persons(incremental):
    dates, state = incremental
    roles, view, res = rebuild(state, dates[-1])
    assert clusters(state.links) == clusters(res.links)


def test_rebuild_issues_the_same_rkids_where_the_founder_remains(incremental):
    dates, state = incremental
    roles, view, res = rebuild(state, dates[-1])
    merged = state.links.merge(res.links, on=KEY, suffixes=("_inc", "_new"))
    assert len(merged) == len(state.links) == len(res.links)
    differ = merged[merged["RKID_inc"] != merged["RKID_new"]]
    # a different RKID is only allowed where the role that founded the person is gone
    live_founders = set(rkid_of(state.links))
    assert not differ["RKID_inc"].isin(live_founders).any(), differ.head()


def rkid_of(links: pd.DataFrame) -> pd.Series:
    """The RKID each role would have issued had it founded its person (docs/architecture.md)."""
    import hashlib

    keys = links[KEY].astype(str).agg("|".join, axis=1)
    return keys.map(lambda k: "RK" + hashlib.sha256(k.encode()).hexdigest()[:16].upper())


def test_rebuild_raises_the_same_open_tasks(incremental):
    dates, state = incremental
    roles, view, res = rebuild(state, dates[-1])
    states = evaluate_states(roles, res.links, view, dates[-1])
    got = set(map(tuple, states[KEY + ["HCZT"]].to_numpy()))
    open_tasks = state.tasks[state.tasks["status"] == "open"]
    want = set(map(tuple, open_tasks[KEY + ["HCZT"]].to_numpy()))
    assert got == want


def test_states_evaluated_in_bins_equal_the_city_at_once(incremental, monkeypatch):
    """A whole-base date evaluates the states bin by bin (components of person, ID and record, docs/scale.md
    2.7): the same rows in the same order as the city at once, whatever the bin size."""
    dates, state = incremental
    roles, view, res = rebuild(state, dates[-1])
    whole = evaluate_states(roles, res.links, view, dates[-1])
    assert len(whole) > 100
    calls = []

    def counted(*a, **k):
        calls.append(len(a[0]))
        return evaluate_states(*a, **k)

    monkeypatch.setattr(states_module, "evaluate_states", counted)
    for bin_roles in (300, 2000):
        calls.clear()
        binned = evaluate_states_in_bins(roles, res.links, view, dates[-1], bin_roles=bin_roles)
        assert len(calls) > len(roles) // bin_roles // 2 and sum(calls) == len(roles)  # in bins, every role once
        pd.testing.assert_frame_equal(binned, whole)


# ------------------------------------------------------------------ incremental linking equals a rebuild
class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def both_modes(city_factory, tmp_path_factory):
    """The same 7 days processed three ways: the default configuration (re-linking and re-checking only
    what changed), whole-city linking with re-checking what changed, and everything."""
    from tests.test_pipeline import snapshot

    city = city_factory(persons=2000, days=7, seed=7)
    root = tmp_path_factory.mktemp("modes")
    # settings incremental_linking / full_relink (POPBASE_INCREMENTAL_LINKING / POPBASE_FULL_RELINK)
    modes = {"incremental": {"scoped_dates": True},
             "whole_city_link": {"incremental_linking": False, "scoped_dates": False},
             "full": {"full_relink": True, "scoped_dates": False}}
    homes = {m: copy_city(city, root / m) for m in modes}
    engines = {m: db.make_engine(f"sqlite:///{h / 'popbase.db'}") for m, h in homes.items()}
    lines = _Lines()
    logging.getLogger("popbase").addHandler(lines)
    level = logging.getLogger("popbase").level
    logging.getLogger("popbase").setLevel(logging.INFO)
    per_date = []
    try:
        for d in landed_dates(homes["full"]):
            for mode, switches in modes.items():
                run(homes[mode], engines[mode], [d], write_outputs=False, quality_gates=False, **switches)
            per_date.append((d, *(snapshot(engines[m]) for m in modes)))
    finally:
        logging.getLogger("popbase").removeHandler(lines)
        logging.getLogger("popbase").setLevel(level)
    yield per_date, lines.lines, engines
    for e in engines.values():
        e.dispose()


def test_incremental_linking_equals_relinking_everything_on_every_date(both_modes):
    per_date, lines, _ = both_modes
    assert len(per_date) == 8  # the historical date and 7 daily increments
    for date, inc, whole_link, full in per_date:
        # the role index's stamp is kept by the scoped run only (day/scoped.py)
        inc["meta"] = inc["meta"][~inc["meta"]["key"].isin([db.ROLE_INDEX_KEY, db.CITY_COUNTS_KEY])].reset_index(drop=True)
        # persons, links, tasks, decisions, audit, sources, meta (the model), runs; not the role index
        for table in [t for t in inc if t not in ("role_index", "role_forms")]:
            pd.testing.assert_frame_equal(inc[table], full[table], obj=f"{date} {table}")
            # whole-city linking, re-checking only what changed (POPBASE_INCREMENTAL_LINKING=0)
            pd.testing.assert_frame_equal(whole_link[table], full[table], obj=f"{date} {table} (whole-city linking)")


def test_every_fuzzy_link_keeps_its_explanation(both_modes):
    """FUZZY and POSSIBLE links carry their explanation (PPMX) on every date, whichever way the date ran
    (a link left without one would make every later date link the whole city: exchange.process)."""
    per_date, _, _ = both_modes
    for date, *snaps in per_date:
        for snap in snaps:
            links = snap["links"]
            fuzzy = links["PPFS"].isin(["FUZZY", "POSSIBLE"])
            assert fuzzy.any() and (links["PPMX"] != "").equals(fuzzy), date


def _city_roles(lines: list[str]) -> dict[str, int]:
    """Roles of the whole city per date, from the whole-city linking lines."""
    out = {}
    for ln in lines:
        m = re.match(r"linking (\d{8}): full, re-linked [\d,]+ of ([\d,]+)", ln)
        if m:
            out[m.group(1)] = int(m.group(2).replace(",", ""))
    return out


def test_incremental_linking_relinks_a_small_part_of_the_city(both_modes):
    _, lines, _ = both_modes
    city = _city_roles(lines)
    inc = [ln for ln in lines if ln.startswith("linking") and ": incremental," in ln]
    assert len(inc) == 7, lines  # every date after the historical one
    for ln in inc:
        date = ln.split()[1].rstrip(":")
        relinked = int(re.search(r"re-linked ([\d,]+) of", ln).group(1).replace(",", ""))
        assert 0 < relinked < 0.1 * city[date], ln


def test_daily_dates_read_only_what_their_deliveries_reach(both_modes):
    """The default run reads a scope, not the base, on every daily date, the one with a full extract too
    (a re-baseline reads the whole table it replaces, and its changed records are the seeds); the scope
    is a part of the city (on a 2,000-person city a fuzzy query's blocks are a large share of it;
    tests/test_reads.py bounds the reads)."""
    _, lines, _ = both_modes
    city = _city_roles(lines)
    scopes = [ln for ln in lines if re.match(r"\d{8}: scope of", ln)]
    whole = [ln for ln in lines if re.match(r"\d{8} reads the whole base: (?!full re-link|incremental linking is off)", ln)]
    assert len(scopes) == 7 and sorted({ln[:8] for ln in whole}) == ["20260301"], whole
    for ln in scopes:
        date = ln[:8]
        roles = int(re.search(r"scope of ([\d,]+) roles", ln).group(1).replace(",", ""))
        assert 0 < roles < 0.35 * city[date], ln


def test_incremental_runs_recheck_a_small_part_of_the_city(both_modes):
    _, lines, _ = both_modes
    city = _city_roles(lines)
    inc = [ln for ln in lines if ln.startswith("states") and ": incremental," in ln]
    full = [ln for ln in lines if ln.startswith("states") and ": full," in ln]
    assert len(inc) == 7 * 2 and len(full) == 8 + 2, lines  # incremental and whole_city_link: 7 dates each after the first
    for ln in inc:
        date = ln.split()[1].rstrip(":")
        checked, evaluated = (int(x.replace(",", "")) for x in
                              re.search(r"re-checked ([\d,]+) of [\d,]+ roles \(evaluated ([\d,]+)\)", ln).groups())
        assert 0 < checked <= evaluated < 0.1 * city[date], ln


def _state_and_roles(engine, edit):
    """The base as stored, and the roles of its sources after `edit(sources)` (a day's changes)."""
    with engine.connect() as conn:
        state = read_base(conn)
    sources = {k: v.copy() for k, v in state.sources.items()}
    edit(sources)
    view = overlay_sources(sources, live_overlays(state.overlays, sources))
    return state, build_roles(view, "20260310")


def _links_both_ways(state, roles, decisions):
    from exchange.process import link_date

    inc, _ = link_date(state, roles, decisions, "20260310", linking=True)
    full, _ = link_date(state, roles, decisions, "20260310", incremental=False)
    assert inc.stats["incremental"]["mode"] == "incremental"
    cols = KEY + ["RKID", "PPFS", "PPDF", "PPMX"]
    # PPDF as the base stores it (4 decimals): rows kept from yesterday come from the base
    a = inc.links[cols].assign(PPDF=inc.links["PPDF"].round(4)).sort_values(KEY).reset_index(drop=True)
    b = full.links[cols].assign(PPDF=full.links["PPDF"].round(4)).sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # the linker's part of a person (residence attributes are derived later, from every role)
    pcols = ["RKID", "GMSFHM", "XM", "XB", "CSRQ", "MZ", "status", "merged_into", "issued"]
    pd.testing.assert_frame_equal(inc.persons[pcols].sort_values("RKID").reset_index(drop=True),
                                  full.persons[pcols].sort_values("RKID").reset_index(drop=True))
    return inc


def test_hard_changes_link_as_a_rebuild_would(both_modes):
    """A borrowed ID (a police record reusing someone's ID under another name), a renamed person, a
    deleted police record whose person has other records, a new record without any ID."""
    _, _, engines = both_modes
    engine = engines["incremental"]

    def edit(src):
        hk = src["hukou"]
        live = hk[hk["_deleted"] != "1"]
        a, b, c = live.index[10], live.index[20], live.index[30]
        hk.loc[b, "GMSFHM"] = hk.loc[a, "GMSFHM"]  # DUP_ID: two people on one number
        hk.loc[c, "XM"] = hk.loc[c, "XM"] + "华"  # a renamed person
        src["hukou"] = hk.drop(index=live.index[40])  # a police record gone
        db_ = src["dibao"]
        row = db_[db_["_deleted"] != "1"].iloc[[0]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0001"
        row["GMSFHM"] = ""
        src["dibao"] = pd.concat([db_, row], ignore_index=True)

    state, roles = _state_and_roles(engine, edit)
    dec = state.decisions.drop(columns=["decision_key"])
    res = _links_both_ways(state, roles, dec)
    assert res.stats["incremental"]["relinked"] < len(roles) / 5


def test_fuzzy_neighbourhoods_link_as_a_rebuild_would(both_modes):
    """The two ways a change reaches a role through fuzzy matching alone: a new record without an ID
    matches a person none of whose records changed (the person must come in as context), and a new
    person appears beside the candidate of an unchanged fuzzy-linked role (that role must be re-linked:
    two equally good candidates share its posterior)."""
    from linkage.ids import check_digit

    _, _, engines = both_modes
    engine = engines["incremental"]
    with engine.connect() as conn:
        state0 = read_base(conn)
    links = state0.links
    keyed = links.set_index(KEY)
    hk = state0.sources["hukou"]
    hk_live = hk[hk["_deleted"] != "1"]
    hk_rkid = keyed["RKID"].reindex(pd.MultiIndex.from_arrays(
        [["police"] * len(hk_live), ["hukou"] * len(hk_live), hk_live["_key"], ["SELF"] * len(hk_live)]))
    # a fuzzy-linked role whose person has a household record: its twin on paper will compete
    fuzzy = links[(links["PPFS"] == "FUZZY") & links["RKID"].isin(set(hk_rkid.dropna()))]
    assert len(fuzzy), "the city has a fuzzy-linked role of a person with a household record"
    q = fuzzy.iloc[0]
    twin_of = hk_live[hk_rkid.to_numpy() == q["RKID"]].index[0]
    # a low-benefit record of a person with nothing else changing today
    dibao = state0.sources["dibao"]
    db_live = dibao[dibao["_deleted"] != "1"]
    db_rkid = keyed["RKID"].reindex(pd.MultiIndex.from_arrays(
        [["civil"] * len(db_live), ["dibao"] * len(db_live), db_live["_key"], ["SELF"] * len(db_live)])).to_numpy()
    pick = [i for i, r in enumerate(db_rkid) if r != q["RKID"]][-1]
    lone_rkid = db_rkid[pick]

    def edit(src):
        h = src["hukou"]
        twin = h.loc[[twin_of]].copy()
        own = twin["GMSFHM"].iloc[0]
        # same region, birth date and sex digit, another sequence number: another person on paper
        body = pd.Series([own[:14] + ("98" if own[14:16] == "99" else "99") + own[16]])
        twin["GMSFHM"] = (body + check_digit(body)).to_numpy()
        twin["_key"] = twin["RYBH"] = "RNEWTWIN01"
        src["hukou"] = pd.concat([h, twin], ignore_index=True)
        d = src["dibao"]
        row = d.loc[[db_live.index[pick]]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0002"
        row["GMSFHM"] = ""
        src["dibao"] = pd.concat([d, row], ignore_index=True)

    state, roles = _state_and_roles(engine, edit)
    res = _links_both_ways(state, roles, state.decisions.drop(columns=["decision_key"]))
    info = res.stats["incremental"]
    got = res.links.set_index(KEY)
    new_row = got.loc[("civil", "dibao", "NEWDB0002", "SELF")]
    assert new_row["PPFS"] == "FUZZY" and new_row["RKID"] == lone_rkid  # found its person ...
    assert info["context"] > 0  # ... which came in as context
    # the unchanged fuzzy role now has two candidates: it no longer joins its person for sure
    after = got.loc[tuple(q[KEY])]
    assert (after["PPFS"], after["RKID"]) != ("FUZZY", q["RKID"]) or after["PPDF"] < float(q["PPDF"]) - 1e-4
    assert info["relinked"] < len(roles) / 5


def test_a_context_role_that_could_be_a_query_keeps_its_link_as_a_rebuild_would(both_modes):
    """A new record without an ID reaches a person whose roles include one pinned to it by a clerk's SAME
    decision (a possible query: its link is MANUAL) that the new record does not resemble. That role comes
    in as context and keeps its link without its candidates being searched (`incremental._kept`): the
    result is still the rebuild's, and only the new record's search reads blocks."""
    from dataclasses import replace

    from exchange.process import link_date
    from linkage.base import role_keys

    _, _, engines = both_modes
    state, roles = _state_and_roles(engines["incremental"], lambda src: None)
    links = state.links
    exact = links[links["PPFS"] == "ID_EXACT"]
    d0 = exact[exact["BH"] == "dibao"].iloc[0]  # a benefit record of person P, linked by its ID
    # a role of another person, of another name and birth date, pinned to P by a decision yesterday
    other = exact[(exact["RKID"] != d0["RKID"]) & (exact["BH"] == "hukou")]
    hk = state.sources["hukou"].set_index("_key")
    dib = state.sources["dibao"].set_index("_key")
    me = dib.loc[d0["YWZJ"]]
    m = next(r for _, r in other.iterrows()
             if hk.loc[r["YWZJ"], "XM"] != me["XM"] and hk.loc[r["YWZJ"], "CSRQ"] != me["CSRQ"])
    same = pd.DataFrame([dict(zip(KEY, m[KEY])) | {"RKID": d0["RKID"], "decision": "SAME", "RWBH": "T0",
                                                   "decided": "20260309"}])
    dec = pd.concat([state.decisions.drop(columns=["decision_key"]), same], ignore_index=True)
    yesterday, _ = link_date(state, roles, dec, "20260309", incremental=False)
    ylinks = yesterday.links.assign(role_key=role_keys(yesterday.links))
    assert ylinks.set_index(KEY).loc[tuple(m[KEY]), "PPFS"] == "MANUAL"
    state = replace(state, links=ylinks, persons=yesterday.persons)

    def edit(src):  # today: P's benefit record again, under a new key and without an ID
        d = src["dibao"]
        row = d[d["_key"] == d0["YWZJ"]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0003"
        row["GMSFHM"] = ""
        src["dibao"] = pd.concat([d, row], ignore_index=True)

    sources = {k: v.copy() for k, v in state.sources.items()}
    edit(sources)
    view = overlay_sources(sources, live_overlays(state.overlays, sources))
    res = _links_both_ways(state, build_roles(view, "20260310"), dec)
    got = res.links.set_index(KEY)
    assert got.loc[("civil", "dibao", "NEWDB0003", "SELF"), "RKID"] == d0["RKID"]
    assert got.loc[tuple(m[KEY]), "RKID"] == d0["RKID"] and got.loc[tuple(m[KEY]), "PPFS"] == "MANUAL"
    info = res.stats["incremental"]
    assert info["kept"] >= 1 and info["context"] >= info["kept"], info


def test_a_damaged_id_whose_repair_fails_is_searched_in_the_first_round(both_modes):
    """A new record whose ID is one keystroke from a known ID, under another name and birth date: the
    repair is not confirmed and the role is a fuzzy query. It is searched as one from the start (a
    query found only by the sub-run's checks costs a second sub-run, and on a scoped date a second pass
    over the day), and links as a rebuild does."""
    _, _, engines = both_modes
    state0, _ = _state_and_roles(engines["incremental"], lambda src: None)
    hk = state0.sources["hukou"]
    live = hk[(hk["_deleted"] != "1") & (hk["GMSFHM"].str.len() == 18)]
    own, other = live.iloc[5], live.iloc[50]
    broken = own["GMSFHM"][:10] + str((int(own["GMSFHM"][10]) + 1) % 10) + own["GMSFHM"][11:]

    def edit(src):
        d = src["dibao"]
        row = d[d["_deleted"] != "1"].iloc[[0]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0004"
        row["GMSFHM"], row["XM"], row["CSRQ"] = broken, other["XM"], other["CSRQ"]
        src["dibao"] = pd.concat([d, row], ignore_index=True)

    state, roles = _state_and_roles(engines["incremental"], edit)
    res = _links_both_ways(state, roles, state.decisions.drop(columns=["decision_key"]))
    got = res.links.set_index(KEY).loc[("civil", "dibao", "NEWDB0004", "SELF")]
    assert got["PPFS"] != "ID_REPAIRED"
    assert res.stats["incremental"]["rounds"] == 1, res.stats["incremental"]


def test_excel_tails_that_pass_the_check_link_as_a_rebuild_would(both_modes):
    """A new record whose ID Excel cut to 15 digits with a `000` tail that passes the check digit joins
    its person by repair (a valid ID of its own), and a new household record with that person's name
    on the same 15 digits takes the repair away again: both as a rebuild does."""
    from linkage.ids import check_digit

    _, _, engines = both_modes
    engine = engines["incremental"]
    with engine.connect() as conn:
        state0 = read_base(conn)
    keyed = state0.links.set_index(KEY)
    hk = state0.sources["hukou"]
    hk_live = hk[(hk["_deleted"] != "1") & (hk["GMSFHM"].str.len() == 18) & hk["GMSFHM"].str[:17].str.isdigit()]
    tail = hk_live["GMSFHM"].str[:15] + "000"
    ok = (check_digit(tail.str[:17]).to_numpy() == "0") & (hk_live["GMSFHM"] != tail).to_numpy()
    assert ok.any(), "some household ID's 000 tail passes the check digit (one in 11)"
    person = hk_live[ok].iloc[0]
    rkid = keyed.loc[("police", "hukou", person["_key"], "SELF"), "RKID"]
    dibao = state0.sources["dibao"]
    template = dibao[dibao["_deleted"] != "1"].index[0]

    def add_dibao(src):
        d = src["dibao"]
        row = d.loc[[template]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0003"
        for f in ("XM", "CSRQ", "XB"):
            row[f] = person[f]
        row["GMSFHM"] = person["GMSFHM"][:15] + "000"
        src["dibao"] = pd.concat([d, row], ignore_index=True)

    state, roles = _state_and_roles(engine, add_dibao)
    res = _links_both_ways(state, roles, state.decisions.drop(columns=["decision_key"]))
    new_row = res.links.set_index(KEY).loc[("civil", "dibao", "NEWDB0003", "SELF")]
    assert (new_row["PPFS"], new_row["RKID"]) == ("ID_REPAIRED", rkid)

    def add_both(src):
        add_dibao(src)  # and police register the 000 number too, under the same name: two persons
        h = src["hukou"]
        twin = h.loc[[person.name]].copy()
        twin["_key"] = twin["RYBH"] = "RNEWTAIL01"
        twin["GMSFHM"] = person["GMSFHM"][:15] + "000"
        src["hukou"] = pd.concat([h, twin], ignore_index=True)

    state, roles = _state_and_roles(engine, add_both)
    res = _links_both_ways(state, roles, state.decisions.drop(columns=["decision_key"]))
    got = res.links.set_index(KEY)
    assert got.loc[("civil", "dibao", "NEWDB0003", "SELF"), "PPFS"] == "ID_EXACT"
    assert got.loc[("civil", "dibao", "NEWDB0003", "SELF"), "RKID"] != rkid


def test_todays_decisions_link_as_a_rebuild_would(both_modes):
    """A NOT_SAME and a SAME decision taken today re-link their roles exactly as a rebuild does."""
    _, _, engines = both_modes
    state, roles = _state_and_roles(engines["incremental"], lambda src: None)
    links = state.links
    fuzzy = links[links["PPFS"].isin(["FUZZY", "POSSIBLE"])]
    assert len(fuzzy) >= 2
    other = links[(links["PPFS"] == "ID_EXACT") & ~links["RKID"].isin(fuzzy["RKID"])]
    rows = [dict(zip(KEY, fuzzy.iloc[0][KEY])) | {"RKID": fuzzy.iloc[0]["RKID"], "decision": "NOT_SAME"},
            dict(zip(KEY, fuzzy.iloc[1][KEY])) | {"RKID": other.iloc[0]["RKID"], "decision": "SAME"}]
    dec = pd.DataFrame(rows).assign(RWBH="T1", decided="20260310")
    dec = pd.concat([state.decisions.drop(columns=["decision_key"]), dec], ignore_index=True)
    res = _links_both_ways(state, roles, dec)
    got = res.links.set_index(KEY)
    assert got.loc[tuple(fuzzy.iloc[0][KEY]), "RKID"] != fuzzy.iloc[0]["RKID"]
    assert got.loc[tuple(fuzzy.iloc[1][KEY]), "RKID"] == other.iloc[0]["RKID"]


def test_not_same_on_an_id_linked_role_searches_as_it_stands(both_modes):
    """A NOT_SAME decision taken today on an ID-linked role re-scores it with its trusted values (birth
    date and sex from its ID): here those alone make another, unchanged person its candidate, so that
    person must come in as context."""
    _, _, engines = both_modes
    engine = engines["incremental"]
    with engine.connect() as conn:
        state0 = read_base(conn)
    hk = state0.sources["hukou"]
    links = state0.links
    keyed = links.set_index(KEY)
    live = hk[(hk["_deleted"] != "1") & (hk["CSRQ"].str.len() == 8)].copy()
    live["RKID"] = keyed["RKID"].reindex(pd.MultiIndex.from_arrays(
        [["police"] * len(live), ["hukou"] * len(live), live["_key"], ["SELF"] * len(live)])).to_numpy()
    # x: a person with another record under the same ID (which keeps claiming x's RKID after the
    # decision, so x's household record is detached and re-scored); y: someone else born the same day
    by_id = links[links["PPFS"] == "ID_EXACT"].groupby("RKID").size()
    many = live[live["RKID"].map(by_id).fillna(0) >= 2]
    pairs = many.merge(live, on="CSRQ", suffixes=("", "_y"))
    pairs = pairs[(pairs["RKID"] != pairs["RKID_y"]) & (pairs["XM"].str[0] == pairs["XM_y"].str[0])
                  & (pairs["XB"] == pairs["XB_y"])]  # same surname and sex: only the name's end differs
    assert len(pairs), "the city has two people born the same day, one of them with several records"
    x = pairs.iloc[0]
    y = {c[:-2]: x[c] for c in pairs.columns if c.endswith("_y")}
    x_key = ("police", "hukou", x["_key"], "SELF")
    x_rkid, y_rkid = x["RKID"], y["RKID"]
    assert x["GMSFHM"][6:14] == x["CSRQ"]

    def edit(src):
        h = src["hukou"]
        i = h.index[h["_key"] == x["_key"]][0]
        # x's record now carries y's address and district, and no birth date or sex of its own
        h.loc[i, ["HJDZ", "HJDZ_XZQH", "CSRQ", "XB"]] = [y["HJDZ"], y["HJDZ_XZQH"], "", ""]

    state, roles = _state_and_roles(engine, edit)
    dec = pd.DataFrame([dict(zip(KEY, x_key)) | {"RKID": x_rkid, "decision": "NOT_SAME"}]).assign(
        RWBH="T9", decided="20260310")
    dec = pd.concat([state.decisions.drop(columns=["decision_key"]), dec], ignore_index=True)
    res = _links_both_ways(state, roles, dec)
    got = res.links.set_index(KEY).loc[x_key]
    # detached and re-scored: y, met only through the birth date and sex in x's ID, is its candidate
    assert got["RKID"] != x_rkid and got["PPFS"] in ("FUZZY", "POSSIBLE", "UNMATCHED"), got
    assert got["PPDF"] < 0.999 or got["RKID"] == y_rkid, got
    assert res.stats["incremental"]["context"] > 0


def test_fingerprints_in_another_order_give_the_same_links(both_modes):
    """link_incremental takes the role keys from the fingerprints' index when they are in the roles'
    order; handed them in another order it must notice and look them up instead."""
    from exchange.process import link_date, role_changes

    _, _, engines = both_modes

    def edit(src):
        hk = src["hukou"]
        i = hk.index[hk["_deleted"] != "1"][5]
        hk.loc[i, "XM"] = hk.loc[i, "XM"] + "明"

    state, roles = _state_and_roles(engines["incremental"], edit)
    dec = state.decisions.drop(columns=["decision_key"])
    fingerprints, old = role_changes(state, roles, "20260310")
    aligned, _ = link_date(state, roles, dec, "20260310", changes=(fingerprints, old), linking=True)
    shuffled, _ = link_date(state, roles, dec, "20260310", changes=(fingerprints.iloc[::-1], old), linking=True)
    assert aligned.stats["incremental"]["mode"] == shuffled.stats["incremental"]["mode"] == "incremental"
    cols = KEY + ["RKID", "PPFS", "PPDF", "role_fp"]
    a = aligned.links[cols].sort_values(KEY).reset_index(drop=True)
    b = shuffled.links[cols].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert aligned.stats["incremental"]["seeds"] == shuffled.stats["incremental"]["seeds"] >= 1


def test_recheck_positions_take_the_last_of_repeated_keys():
    import numpy as np

    from verification.recheck import _positions

    keys = np.array(["a", "c", "b"], dtype=object)
    assert _positions(np.array(["a", "b"], dtype=object), keys).tolist() == [0, -1, 1]
    assert _positions(np.array(["a", "b", "a"], dtype=object), keys).tolist() == [2, -1, 1]


def test_a_scope_the_linker_outgrows_is_widened_not_dropped(city_factory, tmp_path, monkeypatch):
    """When a scoped date's first sub-run fails its checks (at 1M persons it once did on one context row),
    the scope is widened with the rows the linker flagged and linked with a round more, not replaced by
    the whole base, and the result is still the rebuild's. Here the first check of every linking run
    flags one context row that did not change (or, with no context, a row of the scope outside the work
    set), so every daily date takes the widening path."""
    import numpy as np

    import exchange.process as process
    import linkage.incremental as inc
    from tests.test_pipeline import snapshot

    first = {"check": False}
    real_link, real_check = process.link_incremental, inc._check_sub_run

    def link(*a, **kw):
        first["check"] = True
        return real_link(*a, **kw)

    def check(d, nb, got, W, C, S, searched, extra_partner, K):
        bad_c, missing_q, new_partner, shared = real_check(d, nb, got, W, C, S, searched, extra_partner, K)
        n = len(d.R)
        rows = np.flatnonzero(C[:n]) if C[:n].any() else np.flatnonzero(~W[:n])  # a context row, else any outside W
        if first["check"] and len(rows):
            bad_c = np.union1d(bad_c, rows[:1])
        first["check"] = False
        return bad_c, missing_q, new_partner, shared

    city = city_factory(persons=2000, days=3, seed=7, rebaseline=False)
    homes = {m: copy_city(city, tmp_path / m) for m in ("widened", "full")}
    engines = {m: db.make_engine(f"sqlite:///{h / 'popbase.db'}") for m, h in homes.items()}
    lines = _Lines()
    logger = logging.getLogger("popbase")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for d in landed_dates(homes["full"]):
            run(homes["full"], engines["full"], [d], write_outputs=False, quality_gates=False, full_relink=True,
                scoped_dates=False)
            with monkeypatch.context() as m:
                m.setattr(process, "link_incremental", link)
                m.setattr(inc, "_check_sub_run", check)
                run(homes["widened"], engines["widened"], [d], write_outputs=False, quality_gates=False,
                    scoped_dates=True)
            a, b = snapshot(engines["widened"]), snapshot(engines["full"])
            for snap in (a, b):
                meta = snap["meta"]
                snap["meta"] = meta[~meta["key"].isin([db.ROLE_INDEX_KEY, db.CITY_COUNTS_KEY])].reset_index(drop=True)
            for table in [t for t in a if t not in ("role_index", "role_forms")]:
                pd.testing.assert_frame_equal(a[table], b[table], obj=f"{d} {table}")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
        for e in engines.values():
            e.dispose()
    widened = [ln for ln in lines.lines if re.match(r"\d{8}: scope widened by 1 flagged role", ln)]
    whole = [ln for ln in lines.lines if re.match(r"\d{8} reads the whole base", ln) and "full re-link" not in ln]
    assert len(widened) == 3 and [ln[:8] for ln in whole] == ["20260301"], (widened, whole)


def test_a_person_known_only_without_ids_takes_a_new_idless_record_as_a_rebuild_would(both_modes):
    """A person none of whose records has an ID (founded by an ID-less role, its other role linked to it
    fuzzily) gets a third ID-less record today, in another table. The new record links to that person
    (before, the person's two roles were two equally good candidates at 0.5 each, and it stayed apart);
    the person's roles are re-linked with it (they are possible queries it reaches) and stay together under
    their RKID; the incremental day equals the rebuild."""
    from dataclasses import replace

    from exchange.process import link_date
    from linkage.base import role_keys

    _, _, engines = both_modes
    state0, _ = _state_and_roles(engines["incremental"], lambda src: None)
    links = state0.links
    exact = links[(links["PPFS"] == "ID_EXACT") & (links["JS"] == "SELF")]
    # a person of two records of two tables, each linked by its ID (`GMSFHM`), and no other record
    per_person = links.groupby("RKID")["BH"].agg(list)
    two = per_person[per_person.map(len) == 2].index
    pick = exact[exact["RKID"].isin(two)].groupby("RKID").filter(lambda g: len(g) == 2 and g["BH"].nunique() == 2)
    rkid0 = pick["RKID"].iloc[0]
    mine = pick[pick["RKID"] == rkid0]
    keys_of = {bh: set(g["YWZJ"]) for bh, g in mine.groupby("BH")}

    def blank(src):  # every record of the person without its ID
        for bh, keys in keys_of.items():
            f = src[bh]
            f.loc[f["_key"].isin(keys), "GMSFHM"] = ""

    sources = {k: v.copy() for k, v in state0.sources.items()}
    blank(sources)
    view = overlay_sources(sources, live_overlays(state0.overlays, sources))
    dec = state0.decisions.drop(columns=["decision_key"])
    yesterday, _ = link_date(replace(state0, sources=sources), build_roles(view, "20260309"), dec, "20260309",
                             incremental=False)
    ylinks = yesterday.links.assign(role_key=role_keys(yesterday.links))
    old = ylinks.merge(mine[KEY], on=KEY)
    assert len(old) == 2 and old["RKID"].nunique() == 1, old  # one person of ID-less records yesterday
    person = old["RKID"].iloc[0]
    assert set(old["PPFS"]) <= {"FUZZY", "UNMATCHED"} and "FUZZY" in set(old["PPFS"]), old
    state = replace(state0, sources=sources, links=ylinks, persons=yesterday.persons)

    first = mine.iloc[0]
    src_role = TABLES[first["BH"]].roles[0]  # the SELF role of the record copied
    bh = next(t for t in ("resident", "dibao") if t not in keys_of)  # a table the person has no record in
    dst_role = TABLES[bh].roles[0]

    def edit(src):  # today: a record of the person in a third table, without an ID
        f = src[bh]
        me = src[first["BH"]].set_index("_key").loc[first["YWZJ"]]
        row = f[f["_deleted"] != "1"].iloc[[0]].copy()  # another record's layout and statuses
        for field in ("name", "sex", "birth", "region", "address"):
            if getattr(dst_role, field):
                row[getattr(dst_role, field)] = me[getattr(src_role, field)] if getattr(src_role, field) else ""
        row[dst_role.id] = ""
        row["_key"] = row[TABLES[bh].key] = "NEWIDLESS01"
        src[bh] = pd.concat([f, row], ignore_index=True)

    today = {k: v.copy() for k, v in sources.items()}
    edit(today)
    view = overlay_sources(today, live_overlays(state.overlays, today))
    res = _links_both_ways(state, build_roles(view, "20260310"), dec)
    got = res.links.set_index(KEY)
    new = got.xs(("NEWIDLESS01", "SELF"), level=["YWZJ", "JS"])
    assert len(new) == 1 and new["RKID"].iloc[0] == person and new["PPFS"].iloc[0] == "FUZZY", new
    for _, r in old.iterrows():  # the person stays whole
        assert got.loc[tuple(r[KEY]), "RKID"] == person
    info = res.stats["incremental"]
    assert info["work_set"] >= 3 and info["relinked"] <= 10, info  # the new record and the person it reaches


def test_a_husband_known_by_name_links_through_his_wife_as_a_rebuild_would(both_modes):
    """A new family-planning record names a married woman and her husband, the husband by name only (no ID,
    no birth date). His one evidence beyond the name is his wife: she is the spouse of his marriage record
    (the spouse feature). He links to his person with the spouse feature in his explanation, and the
    incremental day equals the rebuild. (In a city this small his name alone reaches the husband too; the
    bound on the spouse feature is checked by the next test.)"""
    _, _, engines = both_modes
    state0, _ = _state_and_roles(engines["incremental"], lambda src: None)
    links = state0.links.set_index(KEY)
    mar = state0.sources["marriage"]
    mar = mar[(mar["_deleted"] != "1") & (mar["NF_ZJHM"].str.len() == 18) & (mar["NV_ZJHM"].str.len() == 18)]
    women = state0.sources["women"]
    wives_known = set(women["GMSFHM"])

    def link_of(key, js):
        hit = links.xs(("marriage", key, js), level=["BH", "YWZJ", "JS"])
        return hit.iloc[0] if len(hit) else None

    picked = None
    for _, m in mar.iterrows():
        nf, nv = link_of(m["_key"], "NF"), link_of(m["_key"], "NV")
        if (m["NV_ZJHM"] not in wives_known and nf is not None and nv is not None
                and nf["PPFS"] == "ID_EXACT" and nv["PPFS"] == "ID_EXACT"):
            picked, husband = m, nf["RKID"]
            break
    assert picked is not None, "the city has a marriage of two persons known by their IDs"

    def edit(src):
        f = src["women"]
        row = f[f["_deleted"] != "1"].iloc[[0]].copy()  # another record's layout and statuses
        row["XM"], row["GMSFHM"], row["CSRQ"] = picked["NV_XM"], picked["NV_ZJHM"], picked["NV_CSRQ"]
        row["ZF_XM"], row["ZF_GMSFHM"] = picked["NF_XM"], ""
        row["_key"] = row["FNBH"] = "NEWWOMEN01"
        src["women"] = pd.concat([f, row], ignore_index=True)

    state, roles = _state_and_roles(engines["incremental"], edit)
    res = _links_both_ways(state, roles, state.decisions.drop(columns=["decision_key"]))
    got = res.links.set_index(KEY)
    him = got.xs(("women", "NEWWOMEN01", "ZF"), level=["BH", "YWZJ", "JS"])
    assert len(him) == 1 and him["RKID"].iloc[0] == husband and him["PPFS"].iloc[0] == "FUZZY", him
    assert "配偶" in him["PPMX"].iloc[0] or "partner" in him["PPMX"].iloc[0], him["PPMX"].iloc[0]


def test_the_spouse_bound_never_keeps_apart_spouses_of_one_person(incremental):
    """The neighbourhoods count the spouse feature only where two roles' spouses can be in one ID cluster
    (`linkage.blocks.spouse_keys`, `spouses_can_agree`). Checked against a whole-city link: roles whose
    spouses ended in one person through their IDs (exact, normalised or repaired) have keys that agree."""
    import numpy as np

    from linkage.blocks import spouse_keys, spouses_can_agree
    from linkage.link import _partner_rows

    dates, state = incremental
    roles, _, res = rebuild(state, dates[-1])
    R = roles.reset_index(drop=True)
    partner = _partner_rows(R[["BH", "YWZJ", "JS"]])
    keys = spouse_keys(R, partner)
    link = res.links.set_index(KEY).reindex(pd.MultiIndex.from_frame(R[KEY].astype(str)))
    rkid, ppfs = link["RKID"].to_numpy(dtype=object), link["PPFS"].to_numpy(dtype=object)
    spouse = np.maximum(partner, 0)
    by_id = (partner >= 0) & np.isin(ppfs[spouse], ["ID_EXACT", "ID_NORMALIZED", "ID_REPAIRED"])
    pairs = pd.DataFrame({"row": np.flatnonzero(by_id), "person": rkid[spouse][by_id]})
    pairs = pairs.merge(pairs, on="person")
    pairs = pairs[pairs["row_x"] != pairs["row_y"]]
    assert len(pairs) > 50, "the city has persons who are the spouse in several records"
    a, b = pairs["row_x"].to_numpy(), pairs["row_y"].to_numpy()
    assert spouses_can_agree(keys[a], keys[b]).all()
    # ... and the bound bites: most roles with a spouse cannot agree with most others
    with_spouse = np.flatnonzero(partner >= 0)
    rng = np.random.default_rng(0)
    x, y = rng.choice(with_spouse, 2000), rng.choice(with_spouse, 2000)
    assert spouses_can_agree(keys[x], keys[y]).mean() < 0.1


def test_a_configuration_without_address_levels_links_with_the_shipped_comparison(both_modes):
    """`fuzzy.address_levels` left out of a configuration: every comparer of addresses (the scoring, a daily
    date's reach, the explanations) takes the shipped declaration, so the date links as with it written
    out (they once fell back to two bigram cuts that the comparison rejects)."""
    import copy

    from exchange.process import link_date
    from linkage.link import load_config

    _, _, engines = both_modes

    def edit(src):  # a new record without an ID of a person known by one: a fuzzy query
        d = src["dibao"]
        row = d[d["_deleted"] != "1"].iloc[[0]].copy()
        row["_key"] = row["DBRYBH"] = "NEWDB0003"
        row["GMSFHM"] = ""
        src["dibao"] = pd.concat([d, row], ignore_index=True)

    state, roles = _state_and_roles(engines["incremental"], edit)
    shipped = load_config()
    left_out = copy.deepcopy(shipped)
    del left_out["fuzzy"]["address_levels"]
    decisions = state.decisions.drop(columns=["decision_key"])
    got, _ = link_date(state, roles, decisions, "20260310", link_config=left_out, linking=True)
    want, _ = link_date(state, roles, decisions, "20260310", link_config=shipped, linking=True)
    assert got.stats["incremental"]["mode"] == "incremental"
    new = got.links.set_index(KEY).loc[("civil", "dibao", "NEWDB0003", "SELF")]
    assert new["PPFS"] == "FUZZY" and new["PPMX"] != ""
    pd.testing.assert_frame_equal(got.links.sort_values(KEY).reset_index(drop=True),
                                  want.links.sort_values(KEY).reset_index(drop=True))
