"""Probabilistic (Fellegi–Sunter) matching of record roles that no ID links (spec section 3, step 4).

Pieces, each usable on its own:

- `prepare(roles, trust_id, id_kind, id_value)` → the comparison frame `P` (one row per role, same
  order): name key and its blocking parts, birth date, sex, region, address, ID evidence.
- `compare_pairs(P, left, right)` → agreement levels per feature for row pairs (vectorised; the
  name and address comparisons run once per distinct value pair).
- `train_model(P, entity, labelled_pairs, config)` → `FSModel`: m-probabilities from labelled
  pairs (pairs of roles sharing a valid ID are matches), EM over blocked candidate pairs when there
  are too few; u-probabilities from random pairs, with the exact-agreement levels of name and birth
  date computed from value frequencies (and term-frequency adjusted per value).
- `candidate_pairs(...)` → blocked candidate pairs, pass by pass, block by block, in bounded chunks
  (blocks with more pairs than `max_pairs_per_block`, or more targets than `max_targets_per_block`, are
  skipped: the other passes cover them). The blocks
  skipped on the date the model is trained are kept with the model (`FSModel.skip_blocks`) and later
  dates skip exactly those, so that whether a query meets a candidate never depends on which other
  queries happen to share its block that day (incremental linking needs that locality).
- `score_queries(P, queries, entity, model, config)` → for each query row, its candidate entities
  with the Bayes factor (bits) and the posterior match probability, normalised over the candidates
  (a query with two equally good candidates gets at most 0.5 for each): `scored_pairs` then `candidates`;
  `reweigh` weighs scored pairs again for a model whose prior or address u changed (the training date).

Feature levels (-1 = missing on either side, contributes nothing; labels in `LEVEL_LABELS`, in Chinese
`LEVEL_LABELS_ZH`; `explain_pairs` gives the levels and bits of the pair behind a link, `linkage.explain`):
  name    0 different · 1 surname only · 2 similar · 3 homophone · 4 equivalent (□, ·, Latin) · 5 exact;
          two Latin names (`names.LATIN_LEVELS`): 5 exact · 6 tokens reordered · 7 Jaro-Winkler >= 0.92 ·
          8 Jaro-Winkler >= 0.88 · 9 a part missing · 10 initials · 11 one part agrees · 0 else
  birth   0 different · 1 same year · 2 one digit off / adjacent transposition · 3 day↔month · 4 exact
  sex     0 different · 1 same
  region  0 different · 1 same prefecture (4 digits) · 2 same county (6 digits)
  address words, declared in the configuration (`fuzzy.address_levels`, `linkage.address`): 4 same address ·
          3 same words (another order, a typo, a lost space, a Chinese division left out) · 2 two thirds of
          the words agree · 1 a third · 0 else
  id      0 different · 1 a short known prefix agrees · 2 region+birth digits agree · 3 ≤ 2 digits off or
          15+ known digits agree · 4 the same broken ID (fixed weights `id_bits`: ID-labelled pairs cannot teach them)
  partner 0 different · 1 the role's spouse in its record is the candidate's spouse in another (fixed `partner_bits`)
"""
from __future__ import annotations

import base64
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

import numpy as np
import pandas as pd

from linkage import address as ad
from linkage import names as nm

FEATURES = ("name", "birth", "sex", "region", "address", "id", "partner")
LEARNED = ("name", "birth", "sex", "region", "address")
CHEAP = ("birth", "sex", "region", "id", "partner")  # vectorised comparisons
N_LEVELS = {"name": nm.N_NAME_LEVELS, "birth": 5, "sex": 2, "region": 3, "address": ad.N_LEVELS, "id": 5, "partner": 2}
# blocking fields: the name and its parts (`names.name_blocking_keys`; tokens, initials, phonetic and latin
# are filled for Latin names only), the birth date and its parts (year, year+month, month+day), region,
# the numbers of the address (anum) and its first word (aword), sex, the region digits of an ID, the spouse's entity
BLOCK_FIELDS = ("name_key", "surname", "given", "pinyin", "tokens", "initials", "phonetic", "latin", "birth", "byear",
                "bym", "bmd", "region", "region4", "anum", "aword", "sex", "idregion", "partner")
NAME_PARTS = nm.NAME_BLOCK_PARTS  # blocking parts of the name (`names.name_blocking_keys`)
# labels of the levels of each feature (index = level), for explanations and `FSModel.describe`
LEVEL_LABELS = {
    "name": [nm.NAME_LEVEL_LABELS[i] for i in range(nm.N_NAME_LEVELS)],
    "birth": ["different", "same year", "one digit off / adjacent digits swapped", "day and month swapped", "exact"],
    "sex": ["different", "same"],
    "region": ["different", "same prefecture", "same county"],
    "address": ad.LABELS,  # declared with the comparison (config `fuzzy.address_levels`, `linkage.address`)
    "id": ["different", "a short known prefix agrees", "region and birth digits agree",
           "at most two digits off / 15+ known digits agree", "the same broken ID"],
    "partner": ["different", "the spouses are one person"],
}
# the same levels as a clerk reads them (task files' DBXX, `popbase explain`): each label names its
# comparison, so a list of them reads as a sentence (姓名相同、出生日期差一位 …)
LEVEL_LABELS_ZH = {
    "name": ["姓名不同", "仅姓氏相同或同音", "姓名相似(错一字或名字颠倒)", "姓名同音", "姓名写法等同(缺字□、分隔点或拼音)",
             "姓名相同", "外文姓名词序不同", "外文姓名拼写极相近", "外文姓名拼写相近", "外文姓名缺一部分",
             "外文姓名首字母相符", "外文姓名部分相同"],
    "birth": ["出生日期不同", "出生年份相同", "出生日期差一位或相邻两位颠倒", "出生日期月日颠倒", "出生日期相同"],
    "sex": ["性别不同", "性别相同"],
    "region": ["所在地区划不同", "所在地同一地市", "所在地区划相同"],
    "address": ad.LABELS_ZH,
    "id": ["证件号码不同", "证件号码前几位相同", "证件号码地区和出生日期相同", "证件号码相差不超过两位",
           "证件号码(同一错号)相同"],
    "partner": ["配偶不同", "配偶为同一人"],
}
# the comparisons' own names, and the words for a comparison one side cannot make (level -1: no bits)
FEATURE_LABELS = {"name": "姓名", "birth": "出生日期", "sex": "性别", "region": "所在地区划", "address": "地址",
                  "id": "证件号码", "partner": "配偶"}
MISSING_LABELS = ("missing", "无法比对")


# ---------------------------------------------------------------------------------------- prepare
def _fixed_bytes(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8 matrix of ASCII strings of exactly `width` characters (others → zeros)."""
    values = np.asarray(values, dtype=object)
    n = len(values)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    codes, uniq = pd.factorize(values)
    ok = np.fromiter((isinstance(u, str) and len(u) == width and u.isascii() for u in uniq), dtype=bool,
                     count=len(uniq))
    u = np.where(ok, uniq, "").astype(f"S{width}")
    mat = u.view(np.uint8).reshape(len(uniq), width)
    out = mat[codes]
    out[codes < 0] = 0
    return out


def shared(values: np.ndarray) -> np.ndarray:
    """`values` (object array of str) with equal strings sharing one object: a comparison column holds a
    few distinct values in millions of rows (a year, a district, a name), and a copy in every row costs
    about 50 bytes a row (the 100k link's heap peak 266 -> 242 MiB, docs/benchmarks.md)."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    return np.asarray(uniq, dtype=object)[codes]


def _per_unique(values: np.ndarray, fn) -> np.ndarray:
    """fn applied once per distinct value (object arrays of str); equal results share one object."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object))
    if len(uniq) == 0:
        return np.full(len(codes), "", dtype=object)
    pool: dict = {}
    out = np.array([pool.setdefault(r, r) for r in map(fn, uniq)], dtype=object)
    return out[codes]


def _address_numbers(u: str) -> str:
    """The numbers of a (normalised) address in order, space-separated: a blocking key (house number,
    postcode …) that survives typos in the words."""
    return " ".join(_DIGITS.findall(u))


PREPARE_COLUMNS = ("name_key", "birth", "sex", "id_birth", "id_sex", "region", "address")  # what `prepare` reads


def prepare(roles: pd.DataFrame, trust_id: np.ndarray, id_kind: np.ndarray, id_value: np.ndarray,
            overrides: dict | None = None, blocking: bool = True) -> "Prepared":
    """Comparison frame, one row per role (positional, same order as `roles`).

    `trust_id`: the role's well-formed ID really is its holder's (so its embedded birth date and
    sex may stand in for missing fields). `id_kind`/`id_value`: the ID evidence the role brings:
    `V` a valid 18-digit ID, `B` a broken ID (15/18 characters), `P` a damaged ID's known prefix,
    `""` none. `overrides`: column name -> values to use instead of the roles' own. `blocking=False`:
    the compared fields only (`compare_pairs`, `FSModel.feature_bits`), without the blocking parts of
    names, addresses and dates, which cost most of the preparing and that comparing forms found by
    their stored block keys does not use (`linkage.blocks.form_reach`).
    """
    overrides = overrides or {}

    def col(c):
        if c in overrides:
            return np.asarray(overrides[c], dtype=object)
        return roles[c].to_numpy(dtype=object) if c in roles else np.full(len(roles), "", dtype=object)

    trust_id = np.asarray(trust_id, dtype=bool)
    key = shared(col("name_key"))
    parts = nm.name_blocking_keys(pd.Series(key))
    birth = _per_unique(col("birth"), lambda u: u if len(u) == 8 and u.isdigit() else "")
    sex = col("sex").copy()
    sex[~np.isin(sex, ["1", "2"])] = ""
    birth, sex = _trusted(birth, sex, trust_id, col("id_birth"), col("id_sex"))
    region = _per_unique(col("region"), lambda u: u.strip() if len(u.strip()) == 6 and u.strip().isdigit() else "")
    address = _per_unique(col("address"), ad.normalise)
    if not blocking:
        return Prepared(pd.DataFrame({"name_key": key, "birth": birth, "sex": sex, "region": region, "address": address,
                                      "idk": np.asarray(id_kind, dtype=object), "idv": np.asarray(id_value, dtype=object)}))
    P = pd.DataFrame(
        {
            "name_key": key,
            **{c: parts[c].to_numpy(dtype=object) for c in NAME_PARTS},
            "birth": birth,
            "sex": sex,
            "region": region,
            "address": address,
            "anum": _per_unique(address, _address_numbers),
            "aword": _per_unique(address, ad.first_word),
            "region4": _per_unique(region, lambda u: u[:4]),
            **_id_and_birth_parts(birth, id_kind, id_value),
        }
    )
    return Prepared(P)


def _trusted(birth: np.ndarray, sex: np.ndarray, trust_id: np.ndarray, id_birth: np.ndarray,
             id_sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Birth date and sex, missing ones taken from the ID where the ID is trusted."""
    birth = birth.copy()
    fill = (birth == "") & trust_id
    birth[fill] = np.asarray(id_birth, dtype=object)[fill]
    sex = sex.copy()
    ids = np.asarray(id_sex, dtype=object)
    fill = (sex == "") & trust_id & np.isin(ids, ["1", "2"])
    sex[fill] = ids[fill]
    return birth, sex


def _id_and_birth_parts(birth: np.ndarray, id_kind, id_value) -> dict[str, np.ndarray]:
    return {"idk": np.asarray(id_kind, dtype=object), "idv": np.asarray(id_value, dtype=object),
            "byear": _per_unique(birth, lambda u: u[:4]), "bym": _per_unique(birth, lambda u: u[:6]),
            "bmd": _per_unique(birth, lambda u: u[4:]),
            "idregion": _per_unique(np.asarray(id_value, dtype=object),
                                    lambda u: u[:6] if len(u) >= 6 and u[:6].isdigit() else "")}


class Prepared:
    """The comparison frame `df` plus fixed-width byte matrices of birth date and region, and
    integer codes of the blocking fields (built on first use)."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.birth = _fixed_bytes(df["birth"].to_numpy(), 8)
        self.region = _fixed_bytes(df["region"].to_numpy(), 6)
        self.cols = {c: df[c].to_numpy() for c in df.columns}
        self._codes: dict[str, tuple[np.ndarray, int]] = {}
        self._uniq: dict[str, np.ndarray] = {}
        self._uniq_hash: dict[str, np.ndarray] = {}
        self.set_partner(np.full(len(df), -1, dtype=np.int64))

    def set_partner(self, partner_entity: np.ndarray) -> None:
        """Entity of each role's spouse in the same record (women SELF/ZF, marriage NF/NV), -1 none."""
        self.partner = np.asarray(partner_entity, dtype=np.int64)
        self._codes.pop("partner", None)

    def codes(self, field_: str) -> tuple[np.ndarray, int]:
        """(int32 code per row, -1 where empty; number of distinct values) of a blocking field. int32: a
        city's forms have far fewer than 2**31 distinct values, and the codes of some fifteen fields are
        kept (at 10M persons, 21 M roles, int64 would hold 1.3 GB more)."""
        got = self._codes.get(field_)
        if got is None:
            if field_ == "partner":
                c = np.where(self.partner >= 0, self.partner, -1).astype(np.int32)
                got = (c, int(c.max()) + 1 if len(c) else 0)
            else:
                v = self.cols[field_]
                c, uniq = pd.factorize(v)
                c = c.astype(np.int32)
                c[v == ""] = -1
                got = (c, len(uniq))
                self._uniq[field_] = np.asarray(uniq, dtype=object)
            self._codes[field_] = got
        return got

    def stable_hash(self, field_: str, rows: np.ndarray) -> np.ndarray:
        """uint64 hash of the value of `field_` at `rows`, the same in every run (codes are not)."""
        c, _ = self.codes(field_)
        h = self._uniq_hash.get(field_)
        if h is None:  # once per field: a field can have a million distinct values
            u = self._uniq[field_]
            h = pd.util.hash_array(u, categorize=False) if len(u) else np.zeros(0, dtype=np.uint64)
            self._uniq_hash[field_] = h
        c = c[rows]
        return np.where(c >= 0, h[np.maximum(c, 0)] if len(h) else np.uint64(0), np.uint64(0)).astype(np.uint64)

    def __len__(self) -> int:
        return len(self.df)

    def with_forms(self, rows: np.ndarray, id_birth: np.ndarray, id_sex: np.ndarray, id_kind: np.ndarray,
                   id_value: np.ndarray) -> "Prepared":
        """These rows followed by copies of `rows` as they are when their ID is trusted (`prepare` with
        trust_id: missing birth date and sex from `id_birth`/`id_sex`) with the ID evidence `id_kind`/
        `id_value`. Rows prepared untrusted (with `prepare`) go in; names, regions and addresses are
        copied with their blocking codes instead of being recomputed (incremental linking's forms)."""
        rows = np.asarray(rows, dtype=np.int64)
        birth, sex = _trusted(self.cols["birth"][rows], self.cols["sex"][rows], np.ones(len(rows), dtype=bool),
                              id_birth, id_sex)
        extra = {c: self.cols[c][rows] for c in ("name_key", *NAME_PARTS, "region", "address", "anum", "aword", "region4")}
        extra.update(birth=birth, sex=sex, **_id_and_birth_parts(birth, id_kind, id_value))
        df = pd.DataFrame({c: np.concatenate([self.cols[c], extra[c]]) for c in self.df.columns})
        out = Prepared(df)
        for f in ("name_key", *NAME_PARTS, "region", "anum", "aword", "region4"):  # same values: same codes
            c, m = self.codes(f)
            out._codes[f] = (np.concatenate([c, c[rows]]), m)
            out._uniq[f] = self._uniq[f]
        return out


# ------------------------------------------------------------------------------------- comparisons
def birth_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Levels of two (k, 8) uint8 CCYYMMDD matrices (rows of zeros = missing)."""
    out = np.zeros(len(a), dtype=np.int8)
    if len(a) == 0:
        return out
    missing = (a[:, 0] == 0) | (b[:, 0] == 0)
    diff = a != b
    nd = diff.sum(axis=1)
    same_year = ~diff[:, :4].any(axis=1)
    swap = same_year & (a[:, 4:6] == b[:, 6:8]).all(axis=1) & (a[:, 6:8] == b[:, 4:6]).all(axis=1) & (nd > 0)
    # adjacent transposition: exactly two adjacent positions differ and are swapped
    adj = np.zeros(len(a), dtype=bool)
    two = nd == 2
    if two.any():
        for i in range(7):
            adj |= two & diff[:, i] & diff[:, i + 1] & (a[:, i] == b[:, i + 1]) & (a[:, i + 1] == b[:, i])
    out[same_year] = 1
    out[(nd == 1) | adj] = 2
    out[swap] = 3
    out[nd == 0] = 4
    out[missing] = -1
    return out


def region_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a), dtype=np.int8)
    if len(a) == 0:
        return out
    missing = (a[:, 0] == 0) | (b[:, 0] == 0)
    out[(a[:, :4] == b[:, :4]).all(axis=1)] = 1
    out[(a == b).all(axis=1)] = 2
    out[missing] = -1
    return out


_DIGITS = re.compile(r"[0-9]+")


def address_declaration(fz: dict):
    """The address comparison of a configuration's `fuzzy` section (None: the shipped one): what every
    comparer of addresses passes on (scoring, the scope's reach, the explanations)."""
    got = fz.get("address_levels")
    return tuple(got) if got is not None else None


def address_levels(a: np.ndarray, b: np.ndarray, declared=None) -> np.ndarray:
    """Levels of the address comparison declared in `fuzzy.address_levels` (None: the shipped one;
    `linkage.address`): token-level, from the same address down to "else"."""
    return ad.address_levels(a, b, declared)


def _hamming(x: str, y: str) -> int:
    return sum(1 for p, q in zip(x, y) if p != q)


def _to15(id18: str) -> str:
    return id18[:6] + id18[8:17]


def _prefix_level(full: str, prefix: str) -> int:
    """A damaged ID's known digits against a full ID: 3 (15+ digits agree), 2 (region and birth,
    14 digits), 1 (a shorter prefix), 0 (they disagree)."""
    if not full.startswith(prefix):
        return 0
    return 3 if len(prefix) >= 15 else 2 if len(prefix) >= 14 else 1


def _id_level(ka: str, va: str, kb: str, vb: str) -> int:
    """ID evidence of a pair (kinds V valid, B broken 15/18 characters, P damaged prefix):
    4 the same broken ID, 3 at most two digits off / 15+ known digits agree, 2 region and birth
    digits agree, 1 a shorter known prefix agrees, 0 different, -1 nothing to compare."""
    if not ka or not kb or not va or not vb:
        return -1
    if ka > kb:  # order the pair: B < P < V
        ka, va, kb, vb = kb, vb, ka, va
    if ka == "V" and kb == "V":
        return 4 if va == vb else 0
    if ka == "B" and kb == "B":
        if va == vb:
            return 4
        if len(va) != len(vb):
            return -1
        if _hamming(va, vb) <= 2:
            return 3
        cut = 14 if len(va) == 18 else 12
        return 2 if va[:cut] == vb[:cut] else 0
    if ka == "B" and kb == "V":
        if len(va) == 18:
            if _hamming(va, vb) <= 2:
                return 3
            return 2 if va[:14] == vb[:14] else 0
        if len(va) == 15:
            v15 = _to15(vb)
            if _hamming(va, v15) <= 2:
                return 3
            return 2 if va[:12] == v15[:12] else 0
        return -1
    if ka == "P" and kb == "V":
        return _prefix_level(vb, va)
    if ka == "B" and kb == "P":
        probe = va if len(va) == 18 else (va[:6] + "19" + va[6:] if len(va) == 15 else "")
        return _prefix_level(probe, vb) if probe else -1
    if ka == "P" and kb == "P":
        return 1 if va == vb else -1
    return -1


def id_levels(ka: np.ndarray, va: np.ndarray, kb: np.ndarray, vb: np.ndarray) -> np.ndarray:
    out = np.full(len(ka), -1, dtype=np.int8)
    if len(ka) == 0:
        return out
    ok = (ka != "") & (kb != "")
    idx = np.flatnonzero(ok)
    if len(idx):
        codes, uniq = nm.pair_codes(ka[idx] + va[idx], kb[idx] + vb[idx])
        vals = np.fromiter((_id_level(x[:1], x[1:], y[:1], y[1:]) for x, y in uniq), dtype=np.int8, count=len(uniq))
        out[idx] = vals[codes]
    return out


def sex_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = (a == b).astype(np.int8)
    out[(a == "") | (b == "")] = -1
    return out


def compare_pairs(P: Prepared, left: np.ndarray, right: np.ndarray, address_cuts=None,
                  features=FEATURES) -> dict[str, np.ndarray]:
    """Agreement level (int8) of every feature for the row pairs (left[i], right[i]) of P. `address_cuts`:
    the declared levels of the address comparison (the configuration's `fuzzy.address_levels`; None: the
    shipped declaration)."""
    mats = P
    out: dict[str, np.ndarray] = {}
    col = P.cols
    if "name" in features:
        out["name"] = nm.name_feature_levels(col["name_key"][left], col["name_key"][right])
    if "birth" in features:
        out["birth"] = birth_levels(mats.birth[left], mats.birth[right])
    if "sex" in features:
        out["sex"] = sex_levels(col["sex"][left], col["sex"][right])
    if "region" in features:
        out["region"] = region_levels(mats.region[left], mats.region[right])
    if "address" in features:
        out["address"] = address_levels(col["address"][left], col["address"][right], address_cuts)
    if "id" in features:
        out["id"] = id_levels(col["idk"][left], col["idv"][left], col["idk"][right], col["idv"][right])
    if "partner" in features:
        pa, pb = P.partner[left], P.partner[right]
        lv = (pa == pb).astype(np.int8)
        lv[(pa < 0) | (pb < 0)] = -1
        out["partner"] = lv
    return out


# ------------------------------------------------------------------------------------------ model
TF_EXACT = {"name": 5, "birth": 4}  # the exact level of the features weighed by their values' frequency


@dataclass
class FSModel:
    """Fellegi–Sunter model: per-level m and u probabilities, TF tables, fixed ID weights."""

    m: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    id_bits: np.ndarray
    partner_bits: np.ndarray
    name_tf: pd.Series  # name_key -> share of entities with that name
    birth_tf: pd.Series  # birth -> share of entities with that birth date
    n_entities: int
    prior_has_match: float
    source: str = "labelled"
    n_labelled: int = 0
    n_random: int = 0
    cap: float = 20.0
    meta: dict = field(default_factory=dict)
    # blocks skipped on the training date, per pass (sorted uint64 `block_hash`es); None: decide by size
    skip_blocks: dict[str, np.ndarray] | None = None

    @property
    def log2_prior_odds(self) -> float:
        lam = self.prior_has_match / max(self.n_entities, 1)
        return math.log2(lam / (1.0 - lam))

    def level_bits(self, f: str) -> np.ndarray:
        return np.clip(np.log2(self.m[f] / self.u[f]), -self.cap, self.cap)

    def feature_bits(self, P: Prepared, left: np.ndarray, f: str, lv: np.ndarray) -> np.ndarray:
        """Bayes factor (log2) one feature contributes to each pair (missing: 0; exact name and birth
        date term-frequency adjusted)."""
        if f == "id":
            table = np.append(self.id_bits, 0.0)
        elif f == "partner":
            table = np.append(self.partner_bits, 0.0)
        else:
            table = np.append(self.level_bits(f), 0.0)  # index -1 → 0 bits
        out = table[lv]
        tf_spec = {"name": ("name_key", self.name_tf), "birth": ("birth", self.birth_tf)}.get(f)
        if tf_spec is not None and not tf_spec[1].empty:
            (col, tf), exact = tf_spec, TF_EXACT[f]
            sel = np.flatnonzero(lv == exact)
            if len(sel):
                share = tf.reindex(P.cols[col][left[sel]]).to_numpy(dtype=np.float64)
                floor = 1.0 / max(self.n_entities, 1)
                share = np.where(np.isnan(share) | (share < floor), floor, share)
                out[sel] = np.clip(np.log2(self.m[f][exact] / share), -self.cap, self.cap)
        return out

    def max_bits(self, f: str) -> float:
        """The most one feature can add (bounds used to skip hopeless pairs early)."""
        if f == "id":
            return float(max(self.id_bits.max(), 0.0))
        if f == "partner":
            return float(max(self.partner_bits.max(), 0.0))
        top = float(self.level_bits(f).max())
        return max(top, self.cap if f in ("name", "birth") else top, 0.0)

    def min_bits(self, f: str) -> float:
        """The least one feature can add (missing: 0; an exact name or birth date weighed by its term
        frequency, a share of at most 1, adds at least log2 m): with `max_bits`, a pair whose other
        features decide it needs this one not compared."""
        if f == "id":
            return float(min(self.id_bits.min(), 0.0))
        if f == "partner":
            return float(min(self.partner_bits.min(), 0.0))
        low = float(self.level_bits(f).min())
        if f in TF_EXACT:
            low = min(low, float(np.clip(np.log2(self.m[f][TF_EXACT[f]]), -self.cap, self.cap)))
        return min(low, 0.0)

    def bits(self, P: Prepared, left: np.ndarray, levels: dict[str, np.ndarray]) -> np.ndarray:
        """Total Bayes factor (log2) of each pair; missing features add nothing."""
        total = np.zeros(len(left), dtype=np.float64)
        for f in FEATURES:
            total += self.feature_bits(P, left, f, levels[f])
        return total

    def to_payload(self) -> str:
        """The whole model as compressed JSON text (stored in the base so that later dates reuse it)."""
        body = {
            "m": {f: self.m[f].tolist() for f in LEARNED}, "u": {f: self.u[f].tolist() for f in LEARNED},
            "id_bits": self.id_bits.tolist(), "partner_bits": self.partner_bits.tolist(),
            "name_tf": [self.name_tf.index.tolist(), self.name_tf.to_numpy().tolist()],
            "birth_tf": [self.birth_tf.index.tolist(), self.birth_tf.to_numpy().tolist()],
            "n_entities": self.n_entities, "prior_has_match": self.prior_has_match, "source": self.source,
            "n_labelled": self.n_labelled, "n_random": self.n_random, "cap": self.cap, "meta": self.meta,
            "skip_blocks": None if self.skip_blocks is None else
            {k: [int(x) for x in v] for k, v in self.skip_blocks.items()},
        }
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")

    @classmethod
    def from_payload(cls, text: str) -> "FSModel":
        b = json.loads(zlib.decompress(base64.b64decode(text)).decode("utf-8"))

        def tf(pair):
            return pd.Series(np.asarray(pair[1], dtype=np.float64), index=pd.Index(pair[0], dtype=object))

        return cls(m={f: np.asarray(v, dtype=np.float64) for f, v in b["m"].items()},
                   u={f: np.asarray(v, dtype=np.float64) for f, v in b["u"].items()},
                   id_bits=np.asarray(b["id_bits"], dtype=np.float64),
                   partner_bits=np.asarray(b["partner_bits"], dtype=np.float64),
                   name_tf=tf(b["name_tf"]), birth_tf=tf(b["birth_tf"]), n_entities=int(b["n_entities"]),
                   prior_has_match=float(b["prior_has_match"]), source=b["source"], n_labelled=int(b["n_labelled"]),
                   n_random=int(b["n_random"]), cap=float(b["cap"]), meta=dict(b.get("meta", {})),
                   skip_blocks=None if b.get("skip_blocks") is None else
                   {k: np.asarray(v, dtype=np.uint64) for k, v in b["skip_blocks"].items()})

    def describe(self) -> dict:
        return {
            "source": self.source,
            "n_labelled": self.n_labelled,
            "n_random": self.n_random,
            "n_entities": self.n_entities,
            "log2_prior_odds": round(self.log2_prior_odds, 3),
            "bits": {f: [round(float(x), 2) for x in self.level_bits(f)] for f in LEARNED},
            "levels": {f: LEVEL_LABELS[f] for f in LEARNED},
            "m": {f: [round(float(x), 5) for x in self.m[f]] for f in LEARNED},
            "u": {f: [float(f"{x:.3g}") for x in self.u[f]] for f in LEARNED},
            **self.meta,
        }


def _level_counts(levels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    ok = levels >= 0
    if weights is None:
        return np.bincount(levels[ok].astype(np.int64), minlength=n)[:n].astype(np.float64)
    return np.bincount(levels[ok].astype(np.int64), weights=weights[ok], minlength=n)[:n]


def _smooth(counts: np.ndarray, prior: np.ndarray, pc: float) -> np.ndarray:
    prior = np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum()
    p = (counts + pc * prior) / (counts.sum() + pc)
    p = np.maximum(p, 1e-9)
    return p / p.sum()


def _entity_shares(values: np.ndarray, entity: np.ndarray, n_entities: int) -> pd.Series:
    """Share of entities carrying each non-empty value (each entity counted once per value)."""
    df = pd.DataFrame({"v": values, "e": entity})
    df = df[df["v"] != ""].drop_duplicates()
    return df.groupby("v").size().astype(np.float64) / max(n_entities, 1)


def train_model(P: Prepared, entity: np.ndarray, labelled: tuple[np.ndarray, np.ndarray], cfg: dict,
                em_pairs: Iterator[tuple[np.ndarray, np.ndarray]] | None = None) -> FSModel:
    """Estimate m and u from the data itself (see module docstring).

    `entity`: entity label of every row of P (rows of one ID cluster share a label; rows without a
    usable ID have their own). `labelled`: (left, right) rows known to be the same person.
    `em_pairs`: candidate pairs to run EM over when there are too few labelled pairs.
    """
    fz = cfg["fuzzy"]
    tr = fz["training"]
    pc = float(tr.get("pseudo_count", 5.0))
    default_m = {f: np.asarray(fz["default_m"][f], dtype=np.float64) for f in LEARNED}
    default_u = {f: np.asarray(fz["default_u"][f], dtype=np.float64) for f in LEARNED}
    cuts = address_declaration(fz)
    n = len(P)
    n_entities = int(len(np.unique(entity))) if n else 0
    rng = np.random.default_rng(int(tr.get("seed", 0)))

    # u from random pairs of different entities
    k = int(tr.get("random_pairs", 300_000))
    u = {f: default_u[f] / default_u[f].sum() for f in LEARNED}
    n_random = 0
    address_parts: dict = {}
    small = n_entities < int(tr.get("min_population", 1000))  # too few people to learn from: defaults
    if not small:
        k = int(min(k, n * (n - 1) // 2))
        i = rng.integers(0, n, size=k)
        j = rng.integers(0, n, size=k)
        keep = entity[i] != entity[j]
        i, j = i[keep], j[keep]
        n_random = len(i)
        fast = ("birth", "sex", "region")  # vectorised comparisons: the full sample
        lv = compare_pairs(P, i, j, cuts, features=fast)
        for f in fast:
            u[f] = _smooth(_level_counts(lv[f], N_LEVELS[f]), default_u[f], pc)
        ks = int(tr.get("random_pairs_slow", 20_000))  # per-value-pair Python comparisons: a subsample
        u["address"], address_parts = _address_u(P, entity, i, j, ks, cuts, default_u["address"], rng,
                                                 int(tr.get("address_sample_rows", 200_000)))
        u["name"] = _name_u(P, entity, rng, ks, cuts, default_u["name"], pc)
        u["name"] = _latin_name_u(P, entity, u["name"], int(tr.get("random_pairs_latin", 200_000)),
                                  int(tr.get("seed", 0)), cuts)

    name_tf = _entity_shares(P.cols["name_key"], entity, n_entities)
    birth_tf = _entity_shares(P.cols["birth"], entity, n_entities)
    # exact agreement of name and birth date: probability two different entities share the value
    if small:
        name_tf = pd.Series(dtype=np.float64)
        birth_tf = pd.Series(dtype=np.float64)
    for f, tf, exact in (("name", name_tf, 5), ("birth", birth_tf, 4)):
        if len(tf) and n_entities > 1:
            present = tf.sum()
            ue = float((tf ** 2).sum() / max(present, 1e-12) ** 2)  # among entities with a value
            ue = min(max(ue, 1.0 / n_entities), 0.5)
            rest = u[f].copy()
            rest[exact] = 0.0
            rest = rest / rest.sum() * (1.0 - ue) if rest.sum() > 0 else rest
            rest[exact] = ue
            u[f] = rest

    # m from labelled pairs, or EM
    left, right = labelled
    n_lab = len(left)
    max_lab = int(tr.get("max_labelled_pairs", 200_000))
    if n_lab > max_lab:
        pick = np.sort(rng.choice(n_lab, size=max_lab, replace=False))
        left, right = left[pick], right[pick]
    m = {f: default_m[f] / default_m[f].sum() for f in LEARNED}
    source = "default"
    meta: dict = {"address_u_parts": address_parts} if address_parts else {}
    if n_lab >= int(tr.get("min_labelled_pairs", 500)):
        lv = compare_pairs(P, left, right, cuts, features=LEARNED)
        m = {f: _smooth(_level_counts(lv[f], N_LEVELS[f]), default_m[f], pc) for f in LEARNED}
        source = "labelled"
    elif em_pairs is not None:
        got_l, got_r, total = [], [], 0
        cap = int(tr.get("em_max_pairs", 300_000))
        for l_, r_ in em_pairs:
            got_l.append(l_)
            got_r.append(r_)
            total += len(l_)
            if total >= cap:
                break
        if total >= 50:
            l_ = np.concatenate(got_l)[:cap]
            r_ = np.concatenate(got_r)[:cap]
            lv = compare_pairs(P, l_, r_, cuts, features=LEARNED)
            m = _em_sessions(lv, m, u, tr.get("em_sessions") or [], int(tr.get("em_iterations", 25)), pc,
                             default_m, meta)
            source = "em"

    id_bits = np.array([float(fz["id_bits"][str(i)]) for i in range(N_LEVELS["id"])])
    partner_bits = np.array([float(fz.get("partner_bits", {}).get(str(i), 0.0)) for i in range(N_LEVELS["partner"])])
    return FSModel(m=m, u=u, id_bits=id_bits, partner_bits=partner_bits, name_tf=name_tf, birth_tf=birth_tf,
                   n_entities=n_entities, prior_has_match=float(fz.get("prior_has_match", 0.5)), source=source, n_labelled=n_lab,
                   n_random=n_random, cap=float(fz.get("weights_bits_cap", 20.0)), meta=meta)


def _ordered_pairs(*keys: np.ndarray) -> float:
    """Ordered pairs of rows that agree on every key."""
    size = pd.DataFrame({f"k{n}": key for n, key in enumerate(keys)}).groupby(
        [f"k{n}" for n in range(len(keys))], sort=False).size().to_numpy(dtype=np.float64)
    return float((size * (size - 1)).sum())


@lru_cache(maxsize=200_000)
def _words(text: str) -> tuple[str, ...]:
    """The distinct place words of an address, sorted (a set's order would follow the process's string hash)."""
    return tuple(sorted(set(ad.tokens(text)[1])))


def _within_words(P: Prepared, entity: np.ndarray, rows: np.ndarray, k: int, cuts, rng) -> tuple[np.ndarray, float]:
    """(share of the ordered pairs of `rows` (different entities) at each address level whose texts differ
    and share a word, the share half a draw weighs): importance sampling within words (`_address_u`)."""
    n_lv = N_LEVELS["address"]
    addr = P.cols["address"]
    codes, uniq = pd.factorize(addr[rows])
    words = [_words(t) for t in uniq]
    text_of = np.full(len(addr), -1, dtype=np.int64)  # row -> its text's code
    text_of[rows] = codes
    order = np.argsort(codes, kind="stable")  # rows of one text together, texts in code order
    per_text = np.bincount(codes, minlength=len(uniq))
    text_start = np.concatenate([[0], np.cumsum(per_text)])
    w_text = np.repeat(np.arange(len(uniq)), [len(w) for w in words])  # one entry per (word, text)
    w_code, w_uniq = pd.factorize(pd.Series([t for w in words for t in w], dtype=object))
    by_word = np.lexsort((w_text, w_code))
    w_code, w_text = w_code[by_word], w_text[by_word]
    cum = np.concatenate([[0.0], np.cumsum(per_text[w_text].astype(np.float64))])  # rows before each entry
    word_start = np.searchsorted(w_code, np.arange(len(w_uniq)))
    n_word = cum[np.append(word_start[1:], len(w_code))] - cum[word_start]  # rows holding each word
    weight = np.maximum(n_word - 1, 0)
    W = float(weight.sum())
    n = float(len(rows))
    pairs = n * (n - 1) - _ordered_pairs(entity[rows])
    if W <= 0 or k <= 0 or pairs <= 0:
        return np.zeros(n_lv), 0.0
    g = rng.choice(len(w_uniq), size=k, p=weight / W)
    pa = rng.integers(0, n_word[g].astype(np.int64))
    pb = rng.integers(0, n_word[g].astype(np.int64) - 1)
    pb = pb + (pb >= pa)  # two different rows holding the word

    def row_at(pos: np.ndarray) -> np.ndarray:  # the pos-th row holding word g
        at = cum[word_start[g]] + pos
        e = np.searchsorted(cum, at, side="right") - 1  # its (word, text) entry
        return rows[order[text_start[w_text[e]] + (at - cum[e]).astype(np.int64)]]

    a, b = row_at(pa), row_at(pb)
    keep = (entity[a] != entity[b]) & (addr[a] != addr[b])
    a, b = a[keep], b[keep]
    holders = dict(zip(w_uniq, n_word))
    sets = [frozenset(w) for w in words]
    drawn = np.array([sum(1.0 / holders[t] for t in sorted(sets[x] & sets[y])) for x, y in zip(text_of[a], text_of[b])])
    lv = compare_pairs(P, a, b, cuts, features=("address",))["address"]
    scale = W / (k * pairs)
    return _level_counts(lv, n_lv, 1.0 / drawn) * scale, 0.5 * scale  # half a draw of a word held twice


def _address_u(P: Prepared, entity: np.ndarray, i: np.ndarray, j: np.ndarray, k: int, cuts, default,
               rng, sample_rows: int = 200_000) -> tuple[np.ndarray, dict]:
    """u of the address levels: P(level | two different entities, both with an address), in three parts.

    - The same text: counted exactly from the value counts (pairs of rows, less the pairs of one entity).
      No sample: a chance pair more or less in a sample moved this, the strongest level, by bits.
    - Texts that differ but share a word (where every level above "else" lives): pairs drawn *within*
      shared words, as `_name_u` draws within surnames (`_within_words`, on `sample_rows` rows at most).
      A word held by n rows is drawn with probability ∝ n - 1, then two of its rows, so a pair is drawn
      with probability Σ 1/(W·n) over the words it shares and is counted with the inverse (importance
      sampling: unbiased for all pairs; rare words, where the strong levels live, are drawn far more often
      than their pairs are, so the levels that a random sample meets once or twice in 20,000 pairs, and
      whose weight then moved by bits with the seed, are met hundreds of times).
    - Texts that share no word (a typo in every word): the first `k` random pairs (i, j), counted where
      their texts share none.
    `rng`: the training stream (the draws are seeded). Returns (u, what `discount_matches` needs: the
    levels' floor and the number of pairs u is a share of)."""
    addr = P.cols["address"]
    default = np.asarray(default, dtype=np.float64) / np.sum(default)
    n_lv = N_LEVELS["address"]
    rules = ad.compile_levels(cuts)  # "else" is level 0; the same text is the exact level (the first if none)
    ex = next((lvl for lvl, rule, _ in rules if rule == "exact"), rules[0][0])
    present = np.flatnonzero(addr != "")
    n = float(len(present))
    pairs = n * (n - 1) - _ordered_pairs(entity[present])  # of different entities, both with an address
    if len(present) < 2 or pairs <= 0:
        return default, {}
    p_equal = (_ordered_pairs(addr[present]) - _ordered_pairs(addr[present], entity[present])) / pairs
    sub = present if len(present) <= sample_rows else np.sort(rng.choice(present, sample_rows, replace=False))
    est, floor = _within_words(P, entity, sub, k, cuts, rng)
    ta, tb = addr[i], addr[j]
    rows = np.flatnonzero((ta != "") & (tb != ""))[:k]
    if len(rows):
        apart = np.array([set(_words(x)).isdisjoint(_words(y)) for x, y in zip(ta[rows], tb[rows])], dtype=bool)
        lv = compare_pairs(P, i[rows[apart]], j[rows[apart]], cuts, features=("address",))["address"]
        est = est + _level_counts(lv, n_lv) / len(rows)
    u = np.maximum(est, floor)
    u[ex] = max(est[ex] + p_equal, floor)
    u[0] = 0.0
    u[0] = max(1.0 - u.sum(), 1e-6)
    return u / u.sum(), {"floor": floor, "pairs": pairs}


def discount_matches(model: "FSModel", n_queries: int) -> None:
    """Take the pairs of one person out of the address's u, once the prior is estimated.

    u is P(level | two different persons), but `_address_u` counts every pair of different *entities*, and
    where no ID labels the records (a file with duplicates, FEBRL) each record is its own entity: the
    duplicates' own pairs are among them, and at the strong levels they are most of what is counted
    (5,000 duplicate pairs among 10^8 pairs are a share of 10^-4, a tenth of which agree exactly). So the
    expected pairs of one person, (matches per query × queries) / pairs × m, are taken off each level above
    "else", never below the level's sampling floor. Where IDs label the entities (a city), the pairs of one
    person are inside an entity and the share is tiny: nothing changes there."""
    parts = model.meta.get("address_u_parts") or {}
    pairs = float(parts.get("pairs", 0.0))
    if pairs <= 0 or n_queries <= 0:
        return
    share = min(model.prior_has_match * n_queries / pairs, 0.5)
    m, u = np.asarray(model.m["address"], dtype=np.float64), np.asarray(model.u["address"], dtype=np.float64)
    floor = float(parts.get("floor", 0.0)) or float(u[1:].min())
    out = u.copy()
    out[1:] = np.maximum(u[1:] - share * m[1:], floor)
    out[0] = max(1.0 - out[1:].sum(), 1e-6)
    model.u["address"] = out / out.sum()
    model.meta["address_u_discounted"] = round(share, 8)


def _name_u(P: Prepared, entity: np.ndarray, rng, k: int, cuts, default, pc) -> np.ndarray:
    """u of the name levels. Partial agreement (surname, similar, homophone, equivalent) almost only
    happens between names sharing the surname, so those levels are measured on random pairs drawn
    within surnames and scaled by the chance that two random names share one; `different` is the rest
    (the exact level is replaced from value frequencies by the caller)."""
    base = np.asarray(default, dtype=np.float64) / np.sum(default)
    sur = P.cols["surname"]
    rows = np.flatnonzero((sur != "") & (P.cols["tokens"] == ""))  # Chinese names (Latin ones: `_latin_name_u`)
    if len(rows) < 2:
        if len(rows) == 0 and (P.cols["tokens"] != "").any():  # only Latin names: the Chinese levels cannot occur
            base[[nm.SURNAME, nm.SIMILAR, nm.HOMOPHONE, nm.EQUIVALENT]] = 1e-9
            return base / base.sum()
        return base
    codes, _ = pd.factorize(sur[rows])
    size = np.bincount(codes).astype(np.float64)
    p_same = float(((size / size.sum()) ** 2).sum())
    w = size * (size - 1)
    if w.sum() == 0:
        return base
    order = np.argsort(codes, kind="stable")
    start = np.concatenate([[0], np.cumsum(size).astype(np.int64)])
    g = rng.choice(len(size), size=k, p=w / w.sum())
    a = rows[order[start[g] + rng.integers(0, size[g].astype(np.int64))]]
    b = rows[order[start[g] + rng.integers(0, size[g].astype(np.int64))]]
    keep = entity[a] != entity[b]
    lv = compare_pairs(P, a[keep], b[keep], cuts, features=("name",))["name"]
    within = _level_counts(lv, N_LEVELS["name"])
    if within.sum() == 0:
        return base
    cond = within / within.sum()
    u = base.copy()
    for lvl in (1, 2, 3, 4):
        u[lvl] = max(p_same * cond[lvl], 0.5 / (within.sum() + 1) * p_same)
    u[0] = max(1.0 - u[1:].sum(), 1e-6)
    return u / u.sum()


def _latin_name_u(P: Prepared, entity: np.ndarray, u: np.ndarray, k: int, seed: int, cuts) -> np.ndarray:
    """u of the Latin name levels (`names.LATIN_LEVELS`): measured on `k` random pairs of Latin names
    of different entities and scaled by the chance that two random roles both have a Latin name; the
    `different` level takes the rest. An own random stream, so that the draws of the other estimates do
    not depend on how many Latin names there are."""
    lat = np.flatnonzero(P.cols["tokens"] != "")
    if len(lat) < 2 or k <= 0:
        return u
    rng = np.random.default_rng([seed, 1])
    k = int(min(k, len(lat) * (len(lat) - 1)))
    a = lat[rng.integers(0, len(lat), size=k)]
    b = lat[rng.integers(0, len(lat), size=k)]
    keep = entity[a] != entity[b]
    if not keep.any():
        return u
    lv = compare_pairs(P, a[keep], b[keep], cuts, features=("name",))["name"]
    counts = _level_counts(lv, N_LEVELS["name"])
    total = counts.sum()
    if total == 0:
        return u
    p_lat = (len(lat) / len(P)) ** 2
    u = u.copy()
    for lvl in range(nm.EXACT + 1, nm.N_NAME_LEVELS):
        u[lvl] = max(p_lat * counts[lvl] / total, 0.5 / (total + 1) * p_lat)
    u[0] = max(1.0 - u[1:].sum(), 1e-6)
    return u / u.sum()


EXACT_LEVEL = {"name": nm.EXACT, "birth": 4, "sex": 1, "region": 2, "address": ad.EXACT}


def _em_sessions(lv: dict[str, np.ndarray], m: dict, u: dict, sessions: list, iterations: int, pc: float,
                 default_m: dict, meta: dict) -> dict:
    """m by EM over candidate pairs, in sessions as Splink trains (`training.em_sessions`): a session is a
    list of features, and runs EM over the candidate pairs that agree exactly on them, estimating the m of
    the other features only (the blocking that found a pair makes its blocked-on features agree far more
    often than u says, so EM over all pairs at once takes "shares a block" for "is a match"). Each
    feature's m is the mean over the sessions that estimated it; a feature no session estimated, or no
    sessions at all, gets EM over all the pairs."""
    out: dict[str, list] = {f: [] for f in LEARNED}
    done = []
    for cond in sessions:
        cond = [f for f in cond if f in LEARNED]
        sel = np.ones(len(lv["name"]), dtype=bool)
        for f in cond:
            sel &= lv[f] == EXACT_LEVEL[f]
        free = [f for f in LEARNED if f not in cond]
        if sel.sum() < 50 or not free:
            continue
        got = _em({f: lv[f][sel] for f in LEARNED}, m, u, iterations, pc, default_m, features=free)
        for f in free:
            out[f].append(got[f])
        done.append({"agree_on": cond, "pairs": int(sel.sum())})
    m = {f: v.copy() for f, v in m.items()}
    rest = [f for f in LEARNED if not out[f]]
    if rest:
        got = _em(lv, m, u, iterations, pc, default_m)
        for f in rest:
            out[f].append(got[f])
        done.append({"agree_on": [], "pairs": int(len(lv["name"])), "for": rest})
    for f in LEARNED:
        v = np.mean(out[f], axis=0)
        m[f] = v / v.sum()
    meta["em_sessions"] = done
    return m


def _em(lv: dict[str, np.ndarray], m: dict, u: dict, iterations: int, pc: float, default_m: dict,
        features=LEARNED) -> dict:
    """Classic EM for the m of `features` with u fixed (u from random pairs is reliable; m is what
    blocking hides)."""
    lam = 0.1
    m = {f: v.copy() for f, v in m.items()}
    for _ in range(iterations):
        lm = np.full(len(lv["name"]), math.log(lam))
        lu = np.full(len(lv["name"]), math.log(1 - lam))
        for f in features:
            idx = lv[f]
            ok = idx >= 0
            lm[ok] += np.log(m[f][idx[ok]])
            lu[ok] += np.log(u[f][idx[ok]])
        p = 1.0 / (1.0 + np.exp(np.clip(lu - lm, -700, 700)))
        lam = float(np.clip(p.mean(), 1e-6, 1 - 1e-6))
        for f in features:
            m[f] = _smooth(_level_counts(lv[f], N_LEVELS[f], p), default_m[f], pc)
    return m


# --------------------------------------------------------------------------------------- blocking
def _block_codes(P: Prepared, rows: np.ndarray, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows with every key non-empty, their int64 block key)."""
    key = _row_keys(P, rows, keys)
    ok = key >= 0
    return rows[ok], key[ok]


def block_hash(P: Prepared, rows: np.ndarray, keys: list[str]) -> np.ndarray:
    """Stable uint64 hash of each row's block in a pass (the same block value gives the same hash in
    every run: the skip list kept with the model is made of these)."""
    h = np.full(len(rows), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for k in keys:
        h = (h * np.uint64(0x100000001B3)) ^ P.stable_hash(k, rows)
    return h


def keep_min_bits(fcfg: dict) -> float:
    """The least posterior log2 odds at which a candidate pair is kept (the configuration's `fuzzy` section's
    `keep_min_bits`, -10 when absent): one default for every reader."""
    return float(fcfg.get("keep_min_bits", -10.0))


def blocking_caps(fcfg: dict) -> dict:
    """`candidate_pairs`' work bounds from the configuration's `fuzzy` section, as keywords: every caller
    blocks with the same caps (a caller that left one out would find other pairs than the link)."""
    return {"max_pairs_per_block": int(fcfg["max_pairs_per_block"]), "chunk_pairs": int(fcfg["chunk_pairs"]),
            "max_targets_per_block": fcfg.get("max_targets_per_block")}


def candidate_pairs(P: Prepared, queries: np.ndarray, targets: np.ndarray, passes: list[dict],
                    max_pairs_per_block: int, chunk_pairs: int, stats: dict | None = None,
                    skip: dict[str, np.ndarray] | None = None,
                    max_targets_per_block: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocked (query row, target row) pairs, pass by pass, in chunks of about `chunk_pairs` (`queries` and
    `targets`: distinct rows each).

    A pair is produced once even when several passes find it; self pairs are left out. Without
    `skip`, blocks whose pair count exceeds `max_pairs_per_block`, or whose targets exceed
    `max_targets_per_block` (a pass's own values first), are skipped (counted in `stats`;
    their `block_hash`es are listed in `stats[pass]["skip_hashes"]`, with those of the blocks whose
    targets alone exceed a cap: no query could be searched there). With `skip` (pass name → sorted
    uint64 block hashes, `FSModel.skip_blocks`), exactly the listed blocks are skipped, whatever their
    size today; the spouse pass (`partner`, whose keys are this run's entity numbers) then skips nothing.
    """
    stats = stats if stats is not None else {}
    # A pair an earlier pass found is recognised by that pass's blocks (`_found_before`), not looked up in a
    # set of every pair found so far: kept sorted, that set was sorted again for each chunk (later, each pass)
    # and held every pair (docs/benchmarks.md: most of the 10M cut's first scoring). A pass's own pairs are
    # distinct: a row has one block a pass.
    earlier: list[tuple[list[str], tuple, np.ndarray]] = []
    for spec in passes:
        yield from _pass_pairs(P, spec, queries, targets, max_pairs_per_block, chunk_pairs, stats, skip, earlier,
                               max_targets_per_block)


def _row_keys(P: Prepared, rows: np.ndarray, keys: list[str]) -> np.ndarray:
    """Each row's block key in a pass (`_block_codes`' key), -1 where one of the pass's fields is empty."""
    key = np.zeros(len(rows), dtype=np.int64)
    ok = np.ones(len(rows), dtype=bool)
    for k in keys:
        c, m = P.codes(k)
        c = c[rows]
        ok &= c >= 0
        key = key * (m + 1) + (c + 1)  # fits int64 for the handful of fields a pass combines
    return np.where(ok, key, -1)


def _lacking(P: Prepared, rows: np.ndarray, fields) -> np.ndarray:
    """Which `rows` have every one of `fields` empty: the queries a pass with `queries_missing` searches for."""
    out = np.ones(len(rows), dtype=bool)
    for k in fields:
        out &= P.cols[k][rows] == ""
    return out


def _found_before(P: Prepared, earlier: list, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Which pairs (query `left`, target `right`) an earlier pass produced: the query searched that pass (it
    lacks the fields the pass is for), both rows are in one of its blocks, and the block was not skipped."""
    before = np.zeros(len(left), dtype=bool)
    for keys, missing, skipped in earlier:
        kl = _row_keys(P, left, keys)
        hit = (kl >= 0) & (kl == _row_keys(P, right, keys)) & _lacking(P, left, missing)
        if len(skipped):
            pos = np.minimum(np.searchsorted(skipped, kl), len(skipped) - 1)
            hit &= skipped[pos] != kl
        before |= hit
    return before


def _pass_pairs(P: Prepared, spec: dict, queries: np.ndarray, targets: np.ndarray, max_pairs_per_block: int,
                chunk_pairs: int, stats: dict, skip: dict[str, np.ndarray] | None,
                earlier: list, max_targets_per_block: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass of `candidate_pairs`: its pairs that no pass of `earlier` produced (`_found_before`); the pass
    is added to `earlier` once its blocks are known."""
    keys = list(spec["keys"])
    pname = spec.get("name", "+".join(keys))
    qsel = queries[_lacking(P, queries, spec.get("queries_missing", ()))]
    q_rows, q_key = _block_codes(P, qsel, keys)
    t_rows, t_key = _block_codes(P, targets, keys)
    st = stats.setdefault(pname, {"blocks": 0, "skipped_blocks": 0, "skipped_pairs": 0, "pairs": 0})
    if len(q_rows) == 0 or len(t_rows) == 0:
        return
    codes, uniq = pd.factorize(np.concatenate([q_key, t_key]), sort=True)  # int keys: cheap to sort
    qc, tc = codes[: len(q_rows)], codes[len(q_rows):]
    nq = np.bincount(qc, minlength=len(uniq)).astype(np.int64)
    nt = np.bincount(tc, minlength=len(uniq)).astype(np.int64)
    size = nq * nt
    live = size > 0
    if skip is None:
        cap = int(spec.get("max_pairs_per_block", max_pairs_per_block))
        # a query reads at most `tcap` rows of one block: a block's targets grow with the city, and each query
        # in it would compare them all (its pairs would grow as the square of the city)
        tcap = min(int(spec.get("max_targets_per_block", max_targets_per_block or cap)), cap)
        too_big = (size > cap) | (live & (nt > tcap))
        # listed: the blocks skipped, and those too big for any query (its targets > tcap) that have none
        # today, so that a query arriving there on a later date is skipped as it would have been today,
        # and a daily date never reads more than `tcap` forms of one block for one query
        listed = too_big | (nt > tcap)
        if listed.any() and keys != ["partner"]:
            rep = np.full(len(uniq), -1, dtype=np.int64)  # one member row per listed block
            all_rows = np.concatenate([q_rows, t_rows])
            rep[codes[::-1]] = all_rows[::-1]
            hashes = block_hash(P, rep[listed], keys)
            st["skip_hashes"] = sorted(set(st.get("skip_hashes", [])) | set(int(x) for x in hashes))
    elif keys == ["partner"] or not len(skip.get(pname, ())):
        too_big = np.zeros(len(uniq), dtype=bool)
    else:
        listed = np.isin(block_hash(P, q_rows, keys), np.asarray(skip[pname], dtype=np.uint64))
        too_big = np.bincount(qc[listed], minlength=len(uniq)) > 0
        too_big &= live
    st["blocks"] += int(live.sum())
    st["skipped_blocks"] += int(too_big.sum())
    st["skipped_pairs"] += int(size[too_big].sum())
    size = np.where(too_big, 0, size)
    before = list(earlier)
    earlier.append((keys, tuple(spec.get("queries_missing", ())), np.asarray(uniq, dtype=np.int64)[too_big]))
    if size.sum() == 0:
        return
    q_ord = np.argsort(qc, kind="stable")
    t_ord = np.argsort(tc, kind="stable")
    qc_s, q_rows_s = qc[q_ord], q_rows[q_ord]
    tc_s, t_rows_s = tc[t_ord], t_rows[t_ord]
    q_start = np.searchsorted(qc_s, np.arange(len(uniq) + 1))
    t_start = np.searchsorted(tc_s, np.arange(len(uniq) + 1))
    # chunk boundaries over block codes
    csum = np.cumsum(size)
    bounds = [0]
    target = chunk_pairs
    while True:
        b = int(np.searchsorted(csum, target, side="left")) + 1
        if b >= len(uniq):
            break
        bounds.append(b)
        target = csum[b - 1] + chunk_pairs
    bounds.append(len(uniq))
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        blocks = np.flatnonzero(size[c0:c1] > 0) + c0
        if len(blocks) == 0:
            continue
        # expand q × t for each block (vectorised with repeat/tile arithmetic)
        bq = nq[blocks]
        bt = nt[blocks]
        per = bq * bt
        tot = int(per.sum())
        blk = np.repeat(np.arange(len(blocks)), per)
        off = np.arange(tot) - np.repeat(np.cumsum(per) - per, per)
        qi = off // bt[blk]
        ti = off % bt[blk]
        left = q_rows_s[q_start[blocks][blk] + qi]
        right = t_rows_s[t_start[blocks][blk] + ti]
        keep = left != right
        left, right = left[keep], right[keep]
        if before:
            new = ~_found_before(P, before, left, right)
            left, right = left[new], right[new]
        if len(left) == 0:
            continue
        st["pairs"] += len(left)
        yield left, right


# ---------------------------------------------------------------------------------------- scoring
def pair_odds(log2_prior: float, bits: np.ndarray) -> np.ndarray:
    """Posterior odds that a pair is one person: prior odds × its Bayes factor (`bits`, log2), kept finite."""
    return np.exp2(np.clip(log2_prior + bits, -200, 200))


def score_queries(P: Prepared, queries: np.ndarray, targets: np.ndarray, entity: np.ndarray,
                  model: FSModel, cfg: dict, exclude: pd.DataFrame | None = None,
                  stats: dict | None = None) -> pd.DataFrame:
    """Candidate entities of each query row with their match probability.

    Returns columns `q` (query row), `entity`, `t` (the entity's row of the best pair), `bits` (log2
    Bayes factor of that pair), `p` (posterior, normalised over the query's candidates), sorted by q,
    p desc, entity.
    Blocks skipped: the model's `skip_blocks` when it has them, else by size (`candidate_pairs`).
    `exclude`: frame of (`q`, `entity`) pairs that must not be proposed (NOT_SAME decisions).
    """
    stats = stats if stats is not None else {}
    pairs = scored_pairs(P, queries, targets, entity, model, cfg, stats)
    return candidates(pairs, model.log2_prior_odds, keep_min_bits(cfg["fuzzy"]), exclude, stats)


def scored_pairs(P: Prepared, queries: np.ndarray, targets: np.ndarray, entity: np.ndarray,
                 model: FSModel, cfg: dict, stats: dict, slack: float = 0.0) -> pd.DataFrame:
    """Every blocked pair of a query and another entity's row that the model could keep (prior + bits >=
    `keep_min_bits` - `slack`): columns `q`, `entity`, `t`, `bits`, and `rest` and `address` (the bits
    without the address, the address's level), so that a model differing only in its prior and the
    address's u can weigh them again without comparing (`reweigh`)."""
    fz = cfg["fuzzy"]
    cuts = address_declaration(fz)
    targets_d = np.asarray(targets, dtype=np.int64)
    prior = model.log2_prior_odds
    keep_min = keep_min_bits(fz) - slack
    out: dict[str, list] = {"q": [], "entity": [], "t": [], "bits": [], "rest": [], "address": []}
    for left, right in candidate_pairs(P, queries, targets_d, fz["blocking"], stats=stats.setdefault("blocking", {}),
                                       skip=model.skip_blocks, **blocking_caps(fz)):
        e = entity[right]
        own = entity[left] == e
        left, right, e = left[~own], right[~own], e[~own]
        if len(left) == 0:
            continue
        # cheap vectorised features first; the per-value-pair ones (name, then address) only for pairs
        # that could still reach the keep threshold
        b = np.zeros(len(left), dtype=np.float64)
        lv = compare_pairs(P, left, right, cuts, features=CHEAP)
        for f in CHEAP:
            b += model.feature_bits(P, left, f, lv[f])
        rest = address = None
        for i, f in enumerate(("name", "address")):
            room = sum(model.max_bits(g) for g in ("name", "address")[i:])
            alive = prior + b + room >= keep_min
            left, right, e, b = left[alive], right[alive], e[alive], b[alive]
            if len(left) == 0:
                break
            level = compare_pairs(P, left, right, cuts, features=(f,))[f]
            if f == "address":
                rest, address = b, level
            b = b + model.feature_bits(P, left, f, level)
        if address is None:
            continue
        keep = prior + b >= keep_min
        for k, v in zip(out, (left, e, right, b, rest, address)):
            out[k].append(v[keep])
        stats["compared"] = stats.get("compared", 0) + len(keep)
    if not out["q"]:
        return empty_candidates().drop(columns="p").assign(rest=pd.Series(dtype=np.float64),
                                                           address=pd.Series(dtype=np.int8))
    return pd.DataFrame({k: np.concatenate(v) for k, v in out.items()}).astype({"address": np.int8})


def reweigh(P: Prepared, pairs: pd.DataFrame, model: FSModel) -> pd.DataFrame:
    """`scored_pairs`' pairs with the bits `model` gives them: the same sum, in the same order, as scoring
    them again with it when it differs from theirs only in the prior and the address's u."""
    bits = pairs["rest"].to_numpy() + model.feature_bits(P, pairs["q"].to_numpy(), "address",
                                                         pairs["address"].to_numpy(np.int64))
    return pairs.assign(bits=bits)


def candidates(pairs: pd.DataFrame, log2_prior: float, keep_min: float, exclude: pd.DataFrame | None = None,
               stats: dict | None = None) -> pd.DataFrame:
    """`score_queries`' frame from scored pairs: those kept (prior + bits >= `keep_min`), the best pair of
    each (query, entity), `exclude`d pairs left out, each query's posteriors."""
    stats = stats if stats is not None else {}
    pairs = pairs[log2_prior + pairs["bits"].to_numpy() >= keep_min]
    stats["candidates"] = 0
    if pairs.empty:
        return empty_candidates()
    cand = best_pairs(pairs[["q", "entity", "t", "bits"]])
    if exclude is not None and len(exclude):
        ex = exclude[["q", "entity"]].drop_duplicates().assign(_x=True)
        cand = cand.merge(ex, on=["q", "entity"], how="left")
        cand = cand[cand["_x"].isna()].drop(columns="_x")
    o = pair_odds(log2_prior, cand["bits"].to_numpy())
    denom = 1.0 + pd.Series(o).groupby(cand["q"].to_numpy()).transform("sum").to_numpy()
    cand["p"] = o / denom
    cand = cand.sort_values(["q", "p", "entity"], ascending=[True, False, True], kind="mergesort")
    stats["candidates"] = int(len(cand))
    return cand.reset_index(drop=True)


def estimate_matches_per_query(cand: pd.DataFrame, n_queries: int, model: FSModel, iterations: int = 100,
                               tol: float = 1e-4) -> float:
    """The prior's expected number of matching entities per query (`FSModel.prior_has_match`), estimated
    from the data: the fixed point of mu = the queries' mean sum of pair posteriors, each pair's prior odds
    being mu / n_entities (EM for the mixing weight with the comparisons' weights held, as Splink estimates
    the probability that two random records match), in place of a configured guess: on FEBRL3, where most
    records have several duplicates, the configured 0.5 left 134 persons split, and on the generated city
    (0.99 estimated) it left 11 correct links in the grey zone for a clerk (docs/benchmarks.md). `cand`: the
    queries' scored candidates (`score_queries`: bits per (query, entity)); `n_queries` counts the queries
    without any candidate too (their posteriors are 0)."""
    bits = cand["bits"].to_numpy(dtype=np.float64)
    mu = float(model.prior_has_match)
    if n_queries <= 0 or not len(bits) or model.n_entities <= 1:
        return mu
    for _ in range(iterations):
        lam = min(mu / model.n_entities, 0.5)
        odds = np.exp2(np.clip(math.log2(lam / (1.0 - lam)) + bits, -200, 200))
        new = float((odds / (1.0 + odds)).sum()) / n_queries
        if abs(new - mu) < tol * max(mu, 1e-9):
            return new
        mu = new
    return mu


def empty_candidates() -> pd.DataFrame:
    """The frame `score_queries` returns when no query has a candidate."""
    return pd.DataFrame({"q": pd.Series(dtype=np.int64), "entity": pd.Series(dtype=np.int64),
                         "t": pd.Series(dtype=np.int64), "bits": pd.Series(dtype=np.float64),
                         "p": pd.Series(dtype=np.float64)})


def best_pairs(cand: pd.DataFrame) -> pd.DataFrame:
    """One row per (q, entity), sorted by them: the pair with the most bits (ties: the first target row
    `t`, in canonical order). Keeping which row it was lets a link say what its score rests on
    (`explain_pairs`), and the same rows win in a sub-run as in a whole-city run."""
    if cand.empty:
        return cand.reset_index(drop=True)
    e = cand["entity"].to_numpy(np.int64)
    key = cand["q"].to_numpy(np.int64) * (int(e.max()) + 1) + e  # (q, entity) as one integer
    order = np.argsort(key, kind="stable")  # a lexsort of four columns costs twice the groupby it replaces
    key, bits, t = key[order], cand["bits"].to_numpy()[order], cand["t"].to_numpy(np.int64)[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    size = np.diff(np.r_[start, len(key)])
    top = bits == np.repeat(np.maximum.reduceat(bits, start), size)
    t_top = np.where(top, t, np.iinfo(np.int64).max)
    pick = np.flatnonzero(top & (t == np.repeat(np.minimum.reduceat(t_top, start), size)))
    group = np.repeat(np.arange(len(start)), size)[pick]
    pick = pick[np.r_[True, group[1:] != group[:-1]]]  # one row per (q, entity) even if a pair repeats
    return cand.iloc[order[pick]].reset_index(drop=True)


def explain_pairs(P: Prepared, left: np.ndarray, right: np.ndarray, model: FSModel,
                  address_cuts=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Level and bits of every comparison (`FEATURES`) for the pairs (left[i], right[i]): the terms
    `score_queries` adds up, one by one, so that a fuzzy link can be explained (`linkage.explain`)."""
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    lv = compare_pairs(P, left, right, address_cuts)
    return {f: (lv[f], model.feature_bits(P, left, f, lv[f])) for f in FEATURES}
