"""The scope's fuzzy-block lookups on a hand-made index (store/scope.py): every possible query that enters
the scope is paired with its blocks' mates, also when an earlier round read those blocks for another
role, and a pass for queries lacking a field (`queries_missing`) is probed for such queries only. On
SQLite and PostgreSQL (the lookups are driver SQL)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from catalog.base import ROLE_INDEX_COLUMNS
from linkage.blocks import COMPARE_COLUMNS
from linkage.ids import NearIDs
from store import base, db
from store.scope import find_scope

COLS = ["bk_name", "bk_name_nobirth"]


def _block(name: str | None) -> int | None:
    """A block named by letters as the role index stores it: an integer, None for no block."""
    return None if name is None else int.from_bytes(name.encode(), "big")


def _base(url: str, roles: list[dict]):
    """A base holding only the role index, the form rows and the links of `roles` (one role per record,
    one form each; `name` is the form's p_name_key, `birth` its p_birth, `pq` whether it may be a fuzzy
    query (no link, or with `person` a FUZZY link to that person), `blocks` its block per column; a role
    that is no query is linked by ID to `person`, by default its own)."""
    engine = db.engine_for(url)  # disposed with its database (tests/conftest.py)
    index, forms, links = [], [], []
    for r in roles:
        key = f"B|t|{r['name']}|SELF"
        index.append({**{c: "" for c in ROLE_INDEX_COLUMNS}, "role_key": key, "record": f"t|{r['name']}", "BM": "B",
                      "BH": "t", "id_key": r.get("id", "")})
        forms.append({"form_key": key + "|Q", "role_key": key, "form": "Q", **{c: "" for c in COMPARE_COLUMNS},
                      "p_name_key": r["name"], "p_birth": r.get("birth", ""), "pq": "1" if r["pq"] else "",
                      **{c: _block(r["blocks"].get(c)) for c in COLS}})
        if not r["pq"] or r.get("person"):
            links.append({"role_key": key, "BM": "B", "BH": "t", "YWZJ": r["name"], "JS": "SELF",
                          "RKID": "RK" + r.get("person", r["name"]), "PPFS": "FUZZY" if r["pq"] else "ID",
                          "PPDF": "1.0000", "role_fp": "x", "PPMX": ""})
    with engine.begin() as conn:
        table = db.ensure_forms(conn, COLS)
        db.append_frame(conn, db.role_index, pd.DataFrame(index))
        db.append_frame(conn, table, pd.DataFrame(forms))
        if links:
            db.append_frame(conn, db.links, pd.DataFrame(links))
    return engine, table


def _no_repairs(broken: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"broken": pd.Series(dtype=object), "variant": pd.Series(dtype=object)})


def _scope(engine, table, seeds: list[str], can_reach: set[tuple[str, str]], query_empty=None) -> set[str]:
    """The scope from the records of `seeds`, where a query form reaches a target form exactly when
    (query name, target name) is in `can_reach`."""
    def reach(forms: pd.DataFrame):
        names = forms["p_name_key"].to_numpy(dtype=object)
        return lambda q, t: np.array([(names[a], names[b]) in can_reach for a, b in zip(q, t)], dtype=bool)

    with engine.connect() as conn:
        scope = find_scope(conn, table, COLS, COMPARE_COLUMNS, {}, {f"t|{s}" for s in seeds}, set(), pd.DataFrame(),
                           pd.DataFrame(), _no_repairs, NearIDs, reach, max_roles=1000, query_empty=query_empty)
    return {k.split("|")[2] for k in scope.roles}


def test_a_query_found_later_is_paired_with_a_block_read_before(db_url):
    """A (delivered) reaches B in block k; B, a possible query found by that lookup, reaches C in the same
    block, which A does not: C is B's candidate and must be in the scope."""
    engine, table = _base(db_url, [
        {"name": "A", "pq": True, "blocks": {"bk_name": "k"}},
        {"name": "B", "pq": True, "blocks": {"bk_name": "k"}},
        {"name": "C", "pq": False, "blocks": {"bk_name": "k"}},
        {"name": "D", "pq": False, "blocks": {"bk_name": "k"}},
    ])
    assert _scope(engine, table, ["A"], {("A", "B"), ("B", "C")}) == {"A", "B", "C"}


def test_only_the_work_sets_queries_search_their_blocks(db_url):
    """A (delivered) reaches T, whose person also holds Q, a fuzzy-linked role A does not reach: T and Q
    come in as context, and Q keeps its link without its candidate X being looked up (the linker keeps
    it: `linkage.incremental._kept`). P, a fuzzy-linked role of A's own person, is in the work set (it
    may be re-linked), so its candidate Y comes in."""
    engine, table = _base(db_url, [
        {"name": "A", "pq": True, "person": "A0", "blocks": {"bk_name": "a"}},
        {"name": "A0", "pq": False, "blocks": {"bk_name": "a0"}},
        {"name": "P", "pq": True, "person": "A0", "blocks": {"bk_name": "p"}},
        {"name": "Y", "pq": False, "blocks": {"bk_name": "p"}},
        {"name": "T", "pq": False, "blocks": {"bk_name": "a"}},
        {"name": "Q", "pq": True, "person": "T", "blocks": {"bk_name": "q"}},
        {"name": "X", "pq": False, "blocks": {"bk_name": "q"}},
    ])
    assert _scope(engine, table, ["A"], {("A", "T"), ("P", "Y"), ("Q", "X")}) == {"A", "A0", "P", "Y", "T", "Q"}


def test_a_new_record_with_an_id_does_not_search_its_blocks(db_url):
    """A delivered record not linked yet is a fuzzy query of the linker only without an ID (`linkage.
    incremental._possible_queries`): N, with a valid ID, leaves its namesake M out of the scope (should
    the ID stage distrust the ID, the linker's checks flag N and the scope is widened with it: `widen`);
    O, without one, takes in its candidate M2."""
    engine, table = _base(db_url, [
        {"name": "N", "pq": True, "id": "110101199001011237", "blocks": {"bk_name": "k"}},
        {"name": "M", "pq": False, "blocks": {"bk_name": "k"}},
        {"name": "O", "pq": True, "blocks": {"bk_name": "j"}},
        {"name": "M2", "pq": False, "blocks": {"bk_name": "j"}},
    ])
    reach = {("N", "M"), ("O", "M2")}
    assert _scope(engine, table, ["N"], reach) == {"N"}
    assert _scope(engine, table, ["O"], reach) == {"O", "M2"}


def test_a_pass_for_queries_without_a_birth_date_is_probed_for_those_only(db_url):
    """bk_name_nobirth serves queries without a birth date: A, born, takes nothing through it; E, without
    one, takes in its candidate F."""
    roles = [
        {"name": "A", "pq": True, "birth": "19800101", "blocks": {"bk_name_nobirth": "n"}},
        {"name": "B", "pq": False, "blocks": {"bk_name_nobirth": "n"}},
        {"name": "E", "pq": True, "blocks": {"bk_name_nobirth": "m"}},
        {"name": "F", "pq": False, "blocks": {"bk_name_nobirth": "m"}},
    ]
    engine, table = _base(db_url, roles)
    reach = {("A", "B"), ("E", "F")}
    only = {"bk_name_nobirth": ["p_birth"]}
    assert _scope(engine, table, ["A"], reach, only) == {"A"}
    assert _scope(engine, table, ["A"], reach) == {"A", "B"}  # without the condition: more, never less
    assert _scope(engine, table, ["E"], reach, only) == {"E", "F"}


def test_a_valid_id_with_an_excel_tail_and_its_holder_find_each_other(db_url):
    """A valid ID ending in 000 may be Excel's (`linkage.repair.excel_tail`): the scope of its record takes
    in the holders of its first 15 digits, and the scope of a holder takes in the record with the tail
    (the repair could move it either way). Index rows made by `exchange.role_index` from real roles."""
    from exchange.role_index import role_index
    from linkage.base import role_keys
    from linkage.ids import check_digit
    from tests.test_link import dibao, hukou, roles_of, _tail_prefix

    head = _tail_prefix("320102", "19880512")
    body = pd.Series([head + "37"])
    real = (body + check_digit(body))[0]
    roles = roles_of(hukou=[hukou("H1", "周敏", real, "19880512", xb="2", region=head[:6]),
                            hukou("H9", "陈一", "110101199001011237", "19900101")],
                     dibao=[dibao("D1", "周敏", head + "000", "19880512", xb="2", region=head[:6])])
    index = role_index(roles, role_keys(roles), {})
    assert index.set_index("record").loc["dibao|D1", "repair_prefix"] == head
    for seed, other in (("dibao|D1", "hukou|H1"), ("hukou|H1", "dibao|D1")):
        records = _index_scope(db_url, index, seed)
        assert other in records and "hukou|H9" not in records


def _index_scope(url: str, index: pd.DataFrame, seed: str, names: dict[str, str] | None = None,
                 names_confirm=None) -> set[str]:
    """The records of the scope of `seed` in a base holding only the role index rows `index` (no links: no
    fuzzy reach), loaded on first use; `names`: role -> name, stored as the roles' `Q` forms (no blocks)."""
    engine = db.engine_for(url)
    with engine.begin() as conn:
        table = db.ensure_forms(conn, COLS)
        if not conn.execute(sa.select(sa.func.count()).select_from(db.role_index)).scalar():
            db.append_frame(conn, db.role_index, index)
            if names:
                db.append_frame(conn, table, pd.DataFrame(
                    [{"form_key": k + "|Q", "role_key": k, "form": "Q", **{c: "" for c in COMPARE_COLUMNS},
                      "p_name_key": n, "pq": "", **{c: None for c in COLS}} for k, n in names.items()]))
    none = lambda forms: (lambda q, t: np.zeros(len(q), dtype=bool))  # noqa: E731 - no fuzzy reach here
    with engine.connect() as conn:
        return find_scope(conn, table, COLS, COMPARE_COLUMNS, {}, {seed}, set(), pd.DataFrame(), pd.DataFrame(),
                          _no_repairs, NearIDs, none, max_roles=1000, names_confirm=names_confirm).records



def test_a_valid_id_takes_in_only_the_excel_numbers_it_could_repair(db_url):
    """Excel's 3.20102E+17 keeps six digits: such a number could be any ID of its region born on its
    holder's birth date (`store.scope._repair_range`). A valid ID takes in the damaged numbers of its
    region born on its own birth date, not every damaged number that its digits head (at 1M persons that
    relation, followed round after round, was a third of a daily scope)."""
    from exchange.role_index import role_index
    from linkage.base import role_keys
    from linkage.ids import check_digit
    from tests.test_link import dibao, hukou, roles_of

    body = pd.Series(["32010219880512003"])
    real = (body + check_digit(body))[0]
    roles = roles_of(hukou=[hukou("H1", "周敏", real, "19880512", xb="2", region="320102")],
                     dibao=[dibao("D1", "周敏", "3.20102E+17", "19880512", xb="2", region="320102"),
                            dibao("D2", "李强", "3.20102E+17", "19700101", region="320102")])
    index = role_index(roles, role_keys(roles), {})
    got = index.set_index("record")
    assert got.loc["dibao|D1", "repair_prefix"] == got.loc["dibao|D2", "repair_prefix"] == "320102"
    records = _index_scope(db_url, index, "hukou|H1")
    assert "dibao|D1" in records and "dibao|D2" not in records
    assert "hukou|H1" in _index_scope(db_url, index, "dibao|D1")  # and the damaged number takes in the holder


def test_an_excel_number_takes_in_only_the_holders_whose_names_could_confirm_its_repair(db_url):
    """3.20102E+17 could be any ID of its region born on its holder's birth date, and in a city of millions
    that is many holders; a repair needs the names to agree (`linkage.repair.names_could_confirm`: the same
    name, or one that sounds alike), so the scope takes in only the holders so named. Without the name test
    it takes in every holder of the range."""
    from exchange.role_index import role_index
    from linkage.base import role_keys
    from linkage.ids import check_digit
    from linkage.link import load_config
    from linkage.repair import names_could_confirm
    from tests.test_link import dibao, hukou, roles_of

    ids = [(b + check_digit(b))[0] for b in (pd.Series([f"320102198805120{k}3"]) for k in (1, 2, 3))]
    roles = roles_of(hukou=[hukou("H1", "周敏", ids[0], "19880512", xb="2", region="320102"),
                            hukou("H2", "李强", ids[1], "19880512", xb="1", region="320102"),
                            hukou("H3", "周民", ids[2], "19880512", xb="1", region="320102")],  # sounds alike
                     dibao=[dibao("D1", "周敏", "3.20102E+17", "19880512", xb="2", region="320102")])
    keys = role_keys(roles)
    index = role_index(roles, keys, {})
    names = dict(zip(keys, roles["name_key"]))
    cfg = load_config()
    records = _index_scope(db_url, index, "dibao|D1", names, lambda a, b: names_could_confirm(a, b, cfg))
    assert {"hukou|H1", "hukou|H3"} <= records and "hukou|H2" not in records
    assert "hukou|H2" in _index_scope(db_url, index, "dibao|D1")  # the range whole without the name test


def test_a_valid_id_takes_in_an_excel_number_whose_last_digit_was_rounded_up(db_url):
    """Excel shows 320102198805... with eleven digits as 3.2010219881E+17: the last digit it keeps is rounded
    up. The linker drops that digit when it repairs (`linkage.repair`), so the valid ID can be the repair,
    and the scope of the valid ID must take the damaged number in although its kept digits do not head it."""
    from exchange.role_index import role_index
    from linkage.base import role_keys
    from linkage.ids import check_digit
    from tests.test_link import dibao, hukou, roles_of

    body = pd.Series(["32010219880512003"])
    real = (body + check_digit(body))[0]
    roles = roles_of(hukou=[hukou("H1", "周敏", real, "19880512", xb="2", region="320102")],
                     dibao=[dibao("D1", "周敏", "3.2010219881E+17", "19880512", xb="2", region="320102")])
    index = role_index(roles, role_keys(roles), {})
    assert index.set_index("record").loc["dibao|D1", "repair_prefix"] == "32010219881"
    assert "dibao|D1" in _index_scope(db_url, index, "hukou|H1")


def test_a_blocks_possible_queries_are_read_through_the_block_and_pq_index(tmp_path):
    """A work block asked for its possible queries only uses the (block, pq) index with both columns, so
    it does not visit the block's other forms (at 1M persons the blocks of a date's work set hold
    hundreds of thousands of forms); the previous one-column index is dropped."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine, table = _base(url, [{"name": "A", "pq": True, "blocks": {"bk_name": "k"}}])
    with engine.connect() as conn:
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT form_key FROM role_forms WHERE bk_name IS NOT NULL AND pq = ? AND bk_name IN (?, ?)",
            ("1", _block("k"), _block("j"))))
    assert "ix_role_forms_bk_name" not in names
    assert "ix_role_forms_pq_bk_name (bk_name=? AND pq=?)" in plan, plan


def test_the_date_sensitive_roles_are_read_through_their_indexes(tmp_path):
    """Every daily date asks which roles the date alone can change (`store.base.date_sensitive_roles`):
    a FORMAT number's birth date passed, a woman of child-bearing age turning 15 or 50, a marriage
    registered. Each is a range on its partial index; one statement joining them by OR made SQLite scan
    the whole role index (3.7 s at 1M persons on every date)."""
    from store.base import date_sensitive_roles

    engine = db.engine_for(f"sqlite:///{tmp_path / 'b.db'}")
    rows = [("F1", "format_birth", "20260302"), ("F0", "format_birth", "20260301"), ("W1", "women_birth", "20110302"),
            ("W2", "women_birth", "19760301"), ("W0", "women_birth", "19900101"), ("M1", "marriage_date", "20260302")]
    index = pd.DataFrame([{**{c: "" for c in ROLE_INDEX_COLUMNS}, "role_key": k, "record": f"t|{k}", col: v}
                          for k, col, v in rows])
    statements: list[str] = []
    with engine.begin() as conn:
        db.append_frame(conn, db.role_index, index)
    with engine.connect() as conn:
        conn.connection.driver_connection.set_trace_callback(statements.append)
        keys = date_sensitive_roles(conn, "20260301", "20260302", young_after="20110301", old_until="19760301")
        conn.connection.driver_connection.set_trace_callback(None)
        plans = [" ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + q))
                 for q in statements if "FROM role_index" in q]
    assert keys == {"F1", "W1", "W2", "M1"}
    assert plans and all("SEARCH role_index USING INDEX" in p and "SCAN" not in p for p in plans), plans


def test_an_index_of_the_text_layout_is_rebuilt_with_integer_blocks(db_url):
    """Blocks are stored as 64-bit integers, NULL where a form is in no block of the pass (layout 5; before,
    decimal text and ""): rebuilding the index of a base that still has the text columns gives integer
    columns, and the scope's lookups hand the blocks out as Python ints, the full signed range kept."""
    engine = db.engine_for(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE role_forms (form_key TEXT PRIMARY KEY, role_key TEXT NOT NULL, "
                             "form TEXT NOT NULL, bk_name TEXT NOT NULL DEFAULT '')")
        conn.exec_driver_sql("INSERT INTO role_forms (form_key, role_key, form, bk_name) VALUES ('x|Q', 'x', 'Q', '7')")
    low, high = -(2 ** 63) + 5, 2 ** 63 - 1
    index = pd.DataFrame([{**{c: "" for c in ROLE_INDEX_COLUMNS}, "role_key": k, "record": f"t|{k}", "BH": "t"}
                          for k in ("a", "b", "c")])
    forms = pd.DataFrame({"form_key": ["a|Q", "b|Q", "c|Q"], "role_key": ["a", "b", "c"], "form": "Q",
                          **{c: "" for c in COMPARE_COLUMNS}, "pq": "1",
                          "bk_name": np.array([low, high, None], dtype=object)})
    with engine.begin() as conn:
        table = db.ensure_forms(conn, ["bk_name"])
        base.rebuild_index(conn, table, [(index, forms)], "test")
    with engine.connect() as conn:
        kind = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("role_forms")}["bk_name"]
        got = db.select_in(conn, table, "bk_name", {low, high, 7}, ["form_key", "bk_name"])
        every = db.read_frame(conn, table).set_index("form_key")["bk_name"]
    assert isinstance(kind, sa.Integer), kind
    assert sorted(zip(got["form_key"], got["bk_name"])) == [("a|Q", low), ("b|Q", high)]
    assert every["c|Q"] is None and every["a|Q"] == low
