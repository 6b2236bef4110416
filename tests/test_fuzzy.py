"""Chinese name comparison, comparison levels, blocking, and bounded work on a pathological block."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd

from linkage import fuzzy as fz
from linkage import names as nm
from linkage.ids import check_digit
from linkage.link import link_roles, load_config
from linkage.roles import build_roles


def test_name_levels_understand_chinese_names():
    c = nm.compare
    assert c("张伟", "张伟") == nm.EXACT
    assert c("张□", "张伟") == nm.EQUIVALENT  # unknown character
    assert c("买买提·艾力", "买买提艾力") == nm.EQUIVALENT  # dropped middle dot
    assert c("张伟", "ZHANG WEI") == nm.EQUIVALENT and c("WEI ZHANG", "张伟") == nm.EQUIVALENT  # Latin, either order
    assert c("曾伟", "ZENG WEI") == nm.EQUIVALENT and c("单田芳", "SHAN TIANFANG") == nm.EQUIVALENT  # surname readings
    assert c("仇大海", "QIU DAHAI") == nm.EQUIVALENT and c("区小明", "OU XIAOMING") == nm.EQUIVALENT
    assert c("张伟", "张玮") == nm.HOMOPHONE  # given-name homophone
    assert c("张小伟", "张小强") == nm.SIMILAR
    assert c("张小伟", "张伟小") == nm.SIMILAR  # swapped given-name characters
    assert c("张伟", "张强") == nm.SURNAME
    assert c("王芳", "李明") == nm.DIFFERENT
    assert c("", "张伟") == nm.MISSING and c("□□", "张伟") == nm.MISSING
    a = np.array(["张伟", "", "张□", "王五", "张伟"], dtype=object)
    b = np.array(["张伟", "李四", "张□", "王六", "张玮"], dtype=object)
    assert nm.name_levels(a, b).tolist() == [5, -1, 4, 1, 3]


def test_readings_are_sets():
    assert {"zeng", "ceng"} <= nm.readings("曾")
    assert {"shan", "dan", "chan"} <= nm.readings("单")
    assert nm.readings("□") == frozenset()
    keys = nm.name_blocking_keys(pd.Series(["曾伟", "□伟", "欧阳娜娜", ""]))
    assert keys["pinyin"].tolist() == ["zengwei", "", "ouyangnana", ""]
    assert keys["surname"].tolist() == ["曾", "", "欧阳", ""]
    assert keys["given"].tolist() == ["伟", "伟", "娜娜", ""]


def _mat(v):
    return fz._fixed_bytes(np.array(v, dtype=object), 8)


def test_birth_levels():
    a = _mat(["19850302", "19850302", "19850302", "19850302", "19850302", "19850302", ""])
    b = _mat(["19850302", "19850203", "19850312", "19853002", "19851111", "19700101", "19850302"])
    assert fz.birth_levels(a, b).tolist() == [4, 3, 2, 2, 1, 0, -1]


def test_id_levels():
    v = "320102198503021233"
    assert fz._id_level("B", v[:5] + "9" + v[6:], "V", v) == 3
    assert fz._id_level("P", v[:15], "V", v) == 3
    assert fz._id_level("B", v[:16] + "00", "V", v) == 3
    assert fz._id_level("B", v[:14] + "9999", "V", v) == 2
    assert fz._id_level("B", v, "B", v) == 4
    assert fz._id_level("P", v[:6], "V", v) == 1
    assert fz._id_level("B", "110101199001011234", "V", v) == 0
    assert fz._id_level("", "", "V", v) == -1


def test_candidate_pairs_cap_and_dedup():
    roles = pd.DataFrame({
        "name_key": ["王伟"] * 6 + ["李娜"] * 2, "birth": ["19900101"] * 8, "id_birth": [""] * 8,
        "sex": ["1"] * 8, "id_sex": [""] * 8, "region": ["320102"] * 8, "address": [""] * 8,
    })
    P = fz.prepare(roles, np.zeros(8, bool), np.full(8, "", object), np.full(8, "", object))
    passes = [{"name": "a", "keys": ["name_key", "birth"]}, {"name": "b", "keys": ["surname", "birth"]},
              {"name": "c", "keys": ["birth"]}]
    stats = {}
    got = list(fz.candidate_pairs(P, np.array([0, 6]), np.arange(8), passes, max_pairs_per_block=10,
                                  chunk_pairs=3, stats=stats))
    pairs = {(int(left), int(right)) for ls, rs in got for left, right in zip(ls, rs)}
    n = sum(len(x) for x, _ in got)
    assert n == len(pairs)  # each pair once
    assert (0, 0) not in pairs and (6, 6) not in pairs
    assert {(0, r) for r in range(1, 6)} <= pairs and (6, 7) in pairs
    assert stats["c"]["skipped_blocks"] == 1  # 2 x 8 = 16 pairs > 10


def test_skipped_blocks_are_kept_and_reused():
    """The blocks skipped by size on the training date are recorded; given that list, exactly those are
    skipped on a later date, whatever the sizes then (a query's candidates must not depend on how many
    other queries share its block that day)."""
    roles = pd.DataFrame({
        "name_key": ["王伟"] * 6 + ["李娜"] * 2, "birth": ["19900101"] * 8, "id_birth": [""] * 8,
        "sex": ["1"] * 8, "id_sex": [""] * 8, "region": ["320102"] * 8, "address": [""] * 8,
    })
    P = fz.prepare(roles, np.zeros(8, bool), np.full(8, "", object), np.full(8, "", object))
    passes = [{"name": "a", "keys": ["name_key", "birth"]}, {"name": "c", "keys": ["birth"]}]
    stats = {}
    list(fz.candidate_pairs(P, np.array([0, 6]), np.arange(8), passes, max_pairs_per_block=10, chunk_pairs=100,
                            stats=stats))
    assert stats["c"]["skipped_blocks"] == 1 and len(stats["c"]["skip_hashes"]) == 1
    assert "skip_hashes" not in stats["a"]
    kept = {k: np.asarray(v.get("skip_hashes", []), dtype=np.uint64) for k, v in stats.items()}
    # the hash is the block's value, not this run's codes: a frame in another order gives the same one
    P2 = fz.prepare(roles.iloc[::-1].reset_index(drop=True), np.zeros(8, bool), np.full(8, "", object),
                    np.full(8, "", object))
    assert fz.block_hash(P2, np.array([0]), ["birth"])[0] == kept["c"][0]

    def pairs(**kw):
        got = list(fz.candidate_pairs(P, np.array([0]), np.arange(8), passes, chunk_pairs=100, **kw))
        return {(int(a), int(b)) for ls, rs in got for a, b in zip(ls, rs)}

    # one query: 8 pairs fit the cap, so by size the birth block is compared (0 meets 李娜 6, 7) ...
    assert (0, 6) in pairs(max_pairs_per_block=10)
    # ... but with the kept list it is skipped as on the training date; name+birth still pairs 王伟s
    st = {}
    got = pairs(max_pairs_per_block=10, skip=kept, stats=st)
    assert (0, 6) not in got and (0, 1) in got and st["c"]["skipped_blocks"] == 1
    # and a block not on the list is compared however big it has grown
    assert (0, 6) in pairs(max_pairs_per_block=1, skip={"a": kept["a"], "c": np.zeros(0, np.uint64)})


def test_a_block_too_big_for_any_query_is_listed_without_one():
    """A block whose targets alone exceed the cap has no query on the training date: it is listed all the
    same, so that a query arriving there later is skipped as it would have been that day (and a daily date
    never searches more than the cap's forms of one block)."""
    roles = pd.DataFrame({"name_key": ["王伟", "李娜"] + ["赵六"] * 11, "birth": ["19900101"] * 2 + ["19800101"] * 11,
                          "id_birth": [""] * 13, "sex": ["1"] * 13, "id_sex": [""] * 13, "region": ["320102"] * 13,
                          "address": [""] * 13})
    P = fz.prepare(roles, np.zeros(13, bool), np.full(13, "", object), np.full(13, "", object))
    passes = [{"name": "c", "keys": ["birth"]}]
    stats = {}
    got = list(fz.candidate_pairs(P, np.array([0]), np.arange(13), passes, max_pairs_per_block=10, chunk_pairs=100,
                                  stats=stats))
    assert {(int(a), int(b)) for ls, rs in got for a, b in zip(ls, rs)} == {(0, 1)}  # today's pairs as before
    assert stats["c"]["skipped_blocks"] == 0
    listed = np.asarray(stats["c"]["skip_hashes"], dtype=np.uint64)
    assert listed.tolist() == fz.block_hash(P, np.array([2]), ["birth"]).tolist()  # 1980's block, not 1990's
    later = list(fz.candidate_pairs(P, np.array([2]), np.arange(13), passes, max_pairs_per_block=10, chunk_pairs=100,
                                    skip={"c": listed}))
    assert sum(len(a) for a, _ in later) == 0


def test_a_query_reads_at_most_the_target_cap_of_one_block():
    """`max_targets_per_block` bounds one query's work in a block, whatever the number of queries: a block with
    more targets than it is skipped even for a single query (whose pairs fit `max_pairs_per_block`) and
    listed, while a pass's own value overrides it; a later date with the list skips the same block."""
    roles = pd.DataFrame({"name_key": ["王伟"] * 2 + ["赵六"] * 6, "birth": ["19900101"] * 8, "id_birth": [""] * 8,
                          "sex": ["1"] * 8, "id_sex": [""] * 8, "region": ["320102"] * 8, "address": [""] * 8})
    P = fz.prepare(roles, np.zeros(8, bool), np.full(8, "", object), np.full(8, "", object))

    def pairs(passes, **kw):
        got = list(fz.candidate_pairs(P, np.array([0]), np.arange(8), passes, max_pairs_per_block=100,
                                      chunk_pairs=100, **kw))
        return {(int(a), int(b)) for ls, rs in got for a, b in zip(ls, rs)}

    passes = [{"name": "name", "keys": ["name_key"]}, {"name": "birth", "keys": ["birth"]}]
    assert pairs(passes) == {(0, r) for r in range(1, 8)}  # no target cap: the birth block, 7 pairs < 100
    stats = {}
    assert pairs(passes, max_targets_per_block=5, stats=stats) == {(0, 1)}  # 8 targets > 5: only the name block
    assert stats["birth"]["skipped_blocks"] == 1 and stats["name"]["skipped_blocks"] == 0
    # listed too: 赵六's block (6 targets, no query today), so that a query arriving there later is skipped
    assert stats["name"]["skip_hashes"] == fz.block_hash(P, np.array([2]), ["name_key"]).tolist()
    listed = {k: np.asarray(v.get("skip_hashes", []), dtype=np.uint64) for k, v in stats.items()}
    assert pairs(passes, skip=listed) == {(0, 1)}
    own = [passes[0], dict(passes[1], max_targets_per_block=8)]
    assert pairs(own, max_targets_per_block=5) == {(0, r) for r in range(1, 8)}


def test_model_keeps_its_skip_list():
    roles, _ = _pathological_roles(600)
    res = link_roles(roles, None, None, None, "20260301", load_config())
    assert res.model.skip_blocks is not None and len(res.model.skip_blocks["surname_birth"]) >= 1
    again = fz.FSModel.from_payload(res.model.to_payload())
    assert {k: v.tolist() for k, v in again.skip_blocks.items()} == {k: v.tolist() for k, v in res.model.skip_blocks.items()}
    assert "skip_hashes" not in res.stats["blocking"]["surname_birth"]
    # reused on a later date: the same blocks are skipped, and the links are the same
    res2 = link_roles(roles, res.persons, res.links, None, "20260302", load_config(), model=again)
    assert res2.stats["blocking"]["surname_birth"]["skipped_blocks"] == res.stats["blocking"]["surname_birth"]["skipped_blocks"]
    assert res2.links["RKID"].tolist() == res.links["RKID"].tolist()


def _pathological_roles(n_people: int, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """n_people all named 王x born the same day in the same district; a third of them also appear in
    the resident survey without an ID number."""
    rng = np.random.default_rng(seed)
    given = np.array(list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕"))
    g1 = rng.choice(given, n_people)
    g2 = np.where(rng.random(n_people) < 0.8, rng.choice(given, n_people), "")
    names = np.char.add(np.char.add("王", g1.astype(str)), g2.astype(str))
    seq = np.arange(n_people) % 1000
    region = (320102 + np.arange(n_people) // 1000).astype(str)
    bodies = pd.Series([f"{r}19900101{s:03d}" for r, s in zip(region, seq)])
    ids = (bodies + check_digit(bodies)).to_numpy()
    sex = np.where(seq % 2 == 1, "1", "2")
    addr = np.array([f"江苏省南京市玄武区中山路{i // 40 + 1}号{i % 40 + 1}室" for i in range(n_people)], dtype=object)
    hukou = pd.DataFrame({"RYBH": [f"H{i}" for i in range(n_people)], "XM": names, "GMSFHM": ids, "XB": sex,
                          "MZ": "01", "CSRQ": "19900101", "HJDZ_XZQH": "320102", "HJDZ": addr,
                          "HH": "1", "HKZT": "1", "ZXRQ": "", "GXSJ": "", "_ts": "20260101000000", "_deleted": "0"})
    k = n_people // 3
    res_ids = np.where(np.arange(k) % 2 == 0, "", ids[:k])  # half of them without an ID number
    res = pd.DataFrame({"JMBH": [f"R{i}" for i in range(k)], "XM": names[:k], "GMSFHM": res_ids, "XB": sex[:k],
                        "CSRQ": "19900101", "JZDZ_XZQH": "320102", "JZDZ": addr[:k], "SQMC": "", "JZZT": "1",
                        "CJRQ": "", "GXSJ": "", "_ts": "20260101000000", "_deleted": "0"})
    roles = build_roles({"hukou": hukou, "resident": res}, "20260301")
    return roles, names


def test_pathological_block_is_bounded():
    roles, names = _pathological_roles(4000)
    cfg = load_config()
    tracemalloc.start()
    t = time.perf_counter()
    res = link_roles(roles, None, None, None, "20260301", cfg)
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 20, elapsed
    assert peak < 400 * 2**20, peak / 2**20
    blocking = res.stats["blocking"]
    assert blocking["surname_birth"]["skipped_blocks"] >= 1  # the huge block was not expanded
    assert res.stats["candidates"] <= 2_000_000
    links = res.links.set_index(["BH", "YWZJ"])
    # what it links, it links right: a FUZZY link goes to the true person; ambiguous ones are not forced
    k = 4000 // 3
    res_rk = links.loc[[("resident", f"R{i}") for i in range(k)], "RKID"].to_numpy()
    huk_rk = links.loc[[("hukou", f"H{i}") for i in range(k)], "RKID"].to_numpy()
    ppfs = links.loc[[("resident", f"R{i}") for i in range(k)], "PPFS"].to_numpy()
    assert (res_rk[1::2] == huk_rk[1::2]).all()  # those with an ID
    fuzzy = ppfs == "FUZZY"
    assert fuzzy.sum() > 0
    assert (res_rk[fuzzy] == huk_rk[fuzzy]).mean() > 0.99


def test_reach_bound_compares_only_what_can_decide_a_pair():
    """`linkage.blocks.reach_bits` leaves out the name or address comparison of a pair the other features
    already put at or under the threshold whatever those say (`FSModel.min_bits` / `max_bits`); its answer
    must be the full sum's, at every threshold, and preparing the forms without the blocking parts must
    compare them as preparing them whole does."""
    from linkage.blocks import reach_bits

    roles, _ = _pathological_roles(600)
    model = link_roles(roles, None, None, None, "20260301", load_config()).model
    rng = np.random.default_rng(5)
    n = 400
    births = np.array(["19900101", "19900110", "19901001", "19850302", "19900102", ""], dtype=object)
    streets = np.array(["江苏省南京市玄武区中山路1号", "南京市玄武区中山路1号2室", "江苏省南京市鼓楼区北京西路9号",
                        "上海市浦东新区世纪大道100号", ""], dtype=object)
    names = np.array(["王伟", "王玮", "王小伟", "李娜", "张伟", "王□", ""], dtype=object)
    frame = pd.DataFrame({"name_key": rng.choice(names, n),
                          "birth": rng.choice(births, n), "sex": rng.choice(np.array(["1", "2", ""], dtype=object), n),
                          "region": rng.choice(np.array(["320102", "320106", ""], dtype=object), n),
                          "address": rng.choice(streets, n)})
    idk = rng.choice(np.array(["", "V", "B"], dtype=object), n)
    idv = np.where(idk == "", "", rng.choice(np.array(["320102199001010011", "320102199001010021"], dtype=object), n))
    P = fz.prepare(frame, np.zeros(n, bool), idk, idv, blocking=False)
    whole = fz.prepare(frame, np.zeros(n, bool), idk, idv)
    left, right = rng.integers(0, n, 20_000), rng.integers(0, n, 20_000)
    spouses = rng.random(len(left)) < 0.2
    lv = fz.compare_pairs(P, left, right, None, features=("name", "birth", "sex", "region", "address", "id"))
    lv_whole = fz.compare_pairs(whole, left, right, None, features=("name", "birth", "sex", "region", "address", "id"))
    assert all((lv[f] == lv_whole[f]).all() for f in lv)
    full = sum(model.feature_bits(P, left, f, lv[f]) for f in lv) + np.where(spouses, model.max_bits("partner"), 0.0)
    assert model.min_bits("address") < 0 < model.max_bits("address")  # the shortcut has both sides to keep
    for keep_min in np.quantile(full, [0.05, 0.25, 0.5, 0.75, 0.95]) + 1e-6:  # (off the sums' own values: their
        got = reach_bits(model, P, left, right, spouses, None, float(keep_min))  # order of addition may differ)
        assert (got == (full >= keep_min)).all(), keep_min


def test_the_prior_is_estimated_from_the_data_where_nothing_labels_it():
    """`estimate_matches_per_query` recovers how many matching entities a query has on average, from scored
    candidates alone: queries with 0-3 true matches among 400 entities, compared on five agree/disagree
    fields of known m and u (bits = the sum of the fields' log2 likelihood ratios). Started from the configured
    0.5, it finds the true mean (1.5 here, 0.25 with fewer matches) within a few per cent."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    m, u = np.array([0.95, 0.9, 0.9, 0.85, 0.8]), np.array([0.05, 0.1, 0.02, 0.2, 0.3])
    agree_bits, disagree_bits = np.log2(m / u), np.log2((1 - m) / (1 - u))

    def candidates(matches: np.ndarray, n_entities: int) -> pd.DataFrame:
        q, bits = [], []
        for i, k in enumerate(matches):
            truth = np.arange(n_entities) < k
            agree = rng.random((n_entities, len(m))) < np.where(truth[:, None], m, u)
            b = np.where(agree, agree_bits, disagree_bits).sum(axis=1)
            q.append(np.full(n_entities, i))
            bits.append(b)
        return pd.DataFrame({"q": np.concatenate(q), "bits": np.concatenate(bits)})

    for weights, truth in (([0.1, 0.4, 0.4, 0.1], 1.5), ([0.8, 0.15, 0.05, 0.0], 0.25)):
        matches = rng.choice(4, size=600, p=weights)
        cand = candidates(matches, 400)
        model = SimpleNamespace(prior_has_match=0.5, n_entities=400)
        got = fz.estimate_matches_per_query(cand, len(matches), model)
        assert abs(got - matches.mean()) < 0.06 * matches.mean() + 0.01, (got, matches.mean(), truth)


def _address_population(n: int, seed: int) -> pd.DataFrame:
    """n roles with Latin addresses "<number> <street> <suburb>" (a fifth written suburb first): streets and
    suburbs of uneven frequency, so that most pairs share nothing, some a suburb, few a street and number."""
    rng = np.random.default_rng(seed)
    streets = [f"{w} STREET" for w in ("MAPLE", "OAK", "ELM", "PINE", "CEDAR", "BIRCH", "ASH", "WILLOW", "POPLAR",
                                       "ALDER", "HAZEL", "LARCH", "ROWAN", "SPRUCE", "YEW")]
    suburbs = ["KINGSTON", "RICHMOND", "CARLTON", "BRIGHTON", "NEWTOWN", "GLEBE"]
    st = rng.choice(len(streets), n, p=np.arange(len(streets), 0, -1) / np.arange(len(streets), 0, -1).sum())
    sb = rng.choice(len(suburbs), n, p=np.array([6, 5, 4, 3, 2, 1]) / 21)
    num = rng.integers(1, 40, n)
    first = rng.random(n) < 0.2
    address = [f"{suburbs[b]} {k} {streets[a]}" if f else f"{k} {streets[a]} {suburbs[b]}"
               for k, a, b, f in zip(num, st, sb, first)]
    return pd.DataFrame({"name_key": [f"N{i}" for i in range(n)], "birth": [""] * n, "id_birth": [""] * n,
                         "sex": [""] * n, "id_sex": [""] * n, "region": [""] * n, "address": address})


def _exact_address_levels(P, entity: np.ndarray) -> np.ndarray:
    """P(level | two different entities) over every ordered pair of rows (the truth a sample estimates)."""
    i, j = np.triu_indices(len(P), k=1)
    keep = entity[i] != entity[j]
    lv = fz.compare_pairs(P, i[keep], j[keep], None, features=("address",))["address"]
    counts = fz._level_counts(lv, fz.N_LEVELS["address"])
    return counts / counts.sum()


def test_address_u_is_measured_within_shared_words():
    """The address's u: the same text counted exactly, the levels of texts sharing a word drawn within the
    words (importance-weighted), the rest from random pairs. On a population whose every pair can be
    compared, the same text's u is the truth, and every other level's is near it, the rarest too (46 pairs in
    244,650 here: a random sample of 20,000 pairs would meet it about four times; over twelve seeds the
    estimate stayed within 0.76-1.14 of the truth, the common levels within 4 %)."""
    roles = _address_population(700, 5)
    n = len(roles)
    P = fz.prepare(roles, np.zeros(n, bool), np.full(n, "", object), np.full(n, "", object))
    entity = np.arange(n)
    truth = _exact_address_levels(P, entity)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, n, 40_000), rng.integers(0, n, 40_000)
    keep = i != j
    u, parts = fz._address_u(P, entity, i[keep], j[keep], 20_000, None, [0.9, 0.08, 0.01, 0.005, 0.005], rng)
    assert parts["pairs"] == n * (n - 1)
    assert truth[1:].min() > 0  # every level occurs, the strongest ones rarely
    assert truth[fz.ad.EXACT] < 0.01
    np.testing.assert_allclose(u[fz.ad.EXACT], truth[fz.ad.EXACT], rtol=1e-9)
    np.testing.assert_allclose(u[:3], truth[:3], rtol=0.05)
    np.testing.assert_allclose(u, truth, rtol=0.3)


def test_pairs_of_one_person_are_taken_out_of_the_address_u():
    """Where nothing labels the records (every record its own entity) and each person comes twice with the
    same address, the address u first counts the duplicates' own pairs; `discount_matches` takes the expected
    pairs of one person (matches per query × queries × m) off, and u is then the u of different persons."""
    from types import SimpleNamespace

    people = _address_population(400, 8)
    roles = pd.concat([people, people], ignore_index=True)  # two records each, the same address
    n = len(roles)
    P = fz.prepare(roles, np.zeros(n, bool), np.full(n, "", object), np.full(n, "", object))
    person = np.tile(np.arange(len(people)), 2)
    of_persons = _exact_address_levels(P, person)  # the truth: pairs of different persons
    rng = np.random.default_rng(2)
    i, j = rng.integers(0, n, 40_000), rng.integers(0, n, 40_000)
    keep = i != j
    u, parts = fz._address_u(P, np.arange(n), i[keep], j[keep], 20_000, None, [0.9, 0.08, 0.01, 0.005, 0.005], rng)
    ex = fz.ad.EXACT
    assert u[ex] > 1.5 * of_persons[ex]  # every record its own entity: the duplicates counted
    m = np.zeros(fz.N_LEVELS["address"])
    m[ex] = 1.0  # the duplicates agree exactly
    model = SimpleNamespace(m={"address": m}, u={"address": u}, prior_has_match=1.0, meta={"address_u_parts": parts})
    fz.discount_matches(model, n)
    assert abs(model.u["address"][ex] - of_persons[ex]) < 0.1 * of_persons[ex]
