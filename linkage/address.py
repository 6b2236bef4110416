"""Token-level comparison of addresses (issue 14, item 3), for Latin-script and Chinese addresses alike.

An address is compared as words (tokens), so that one misspelt word, words in another order or a part left
out still count as evidence (the comparison before, character bigrams of the whole text, gave such pairs
none). The comparison is declared in `config/linkage.json` (`fuzzy.address_levels`) after Splink's
comparison library: levels from the strongest down, each with a rule and a label in English and Chinese;
the first rule that holds is the pair's level, the last is "else". The rules the engine knows (`RULES`):

- `exact`: the same tokens in the same order (case, width, spacing and punctuation aside);
- `same_tokens`: every token of both sides agrees with one of the other's (in another order, with a typo,
  a lost space, a Chinese address with or without its province, city and district);
- `share` (`min`): the tokens of both sides that agree / all their tokens >= min;
- `else`.

Tokens (`split`, cached as `tokens`): the text is upper-cased (NFKC: full-width digits and letters become
ASCII) and cut at spaces and punctuation. A Latin part is cut into runs of letters and runs of digits
(SEC1 = SEC 1; accents folded). A Chinese part is cut after the suffixes that end the parts of a Chinese
address (`SUFFIXES`: 省 市 区 县 … 街道 路 街 … 号 幢 单元 室), so 江苏省南京市玄武区中山路123号5幢1203室 gives
江苏省 南京市 玄武区 中山路 123号 5幢 1203室. A token needs two characters before its suffix unless they are
digits or letters (5幢, A座), so that 鼓楼区 stays one token.

Two tokens agree when they are equal, or with a typo (`_word_agrees`, for tokens whose first or last
characters agree): Latin words with Jaro-Winkler >= 0.92 (`names.JW_HIGH`, Splink's default for names);
Chinese words of one length with the same last character (the same kind of place), every character equal
or sharing a reading (an input-method slip: 珠江路 / 朱江路; `names.readings`); numbers of four digits or more
with two adjacent digits swapped (a keying slip: 1203 / 1230, not 1203 / 1204, the next door). A word also
agrees with two adjacent words of the other side run together (STANLEYSTREET / STANLEY STREET).

Chinese administrative divisions at the head of an address (a leading run of tokens ending in 省 自治区
市 州 地区 盟 区 县 旗) are set apart: every address of a city shares them and the region comparison
already weighs the division code, so they do not count as agreeing tokens; a division of one kind written
on both sides must be the same (玄武区中山路1号 and 秦淮区中山路1号 are different addresses), else only the
lowest `share` level can hold. Latin addresses have no such part: every token counts (nothing tells a
suburb or a state apart reliably).
"""
from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import jellyfish
import numpy as np

from linkage import names as nm

RULES = ("exact", "same_tokens", "share", "else")
DIVISION_SUFFIXES = ("特别行政区", "自治区", "自治州", "自治县", "地区", "省", "市", "州", "盟", "区", "县", "旗")
# longest first where one ends another (街道 before 街, 号楼 before 号 and 楼); 小区/社区/园区/开发区 are places
SUFFIXES = ("特别行政区", "自治区", "自治州", "自治县", "开发区", "居委会", "村委会", "地区", "小区", "社区", "园区",
            "街道", "号楼", "大街", "大道", "胡同", "单元", "省", "市", "州", "盟", "区", "县", "旗", "镇", "乡", "村",
            "组", "路", "街", "巷", "弄", "号", "幢", "栋", "座", "楼", "层", "室")
# a token up to a suffix, else the rest of the chunk
_CHINESE_TOKEN = re.compile("(?:[0-9A-Z]+|.{2,}?)(?:" + "|".join(SUFFIXES) + ")|.+")
_CHUNK = re.compile(r"[^\W_]+")  # runs of letters, digits and CJK characters: spaces and punctuation cut
_LATIN = re.compile(r"[^\W\d_]+|[0-9]+")
_HAS_CJK = re.compile("[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")
_DIGIT = re.compile("[0-9]")

CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "linkage.json"


def normalise(text: str) -> str:
    """The address as compared: NFKC (full width to ASCII), upper case, runs of spaces as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).upper().split())


def split(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(division tokens, place tokens) of a normalised address (see the module docstring); `tokens` is the
    same, cached for the comparisons."""
    out: list[str] = []
    for chunk in ((text,) if text.isalnum() else _CHUNK.findall(text)):  # a Chinese address is often one chunk
        if not _HAS_CJK.search(chunk):  # accents folded (É = E), letters and digits apart
            folded = "".join(c for c in unicodedata.normalize("NFKD", chunk) if not unicodedata.combining(c))
            out.extend(_LATIN.findall(folded))
            continue
        out.extend(_CHINESE_TOKEN.findall(chunk))
    k = 0
    while k < len(out) - 1 and out[k].endswith(DIVISION_SUFFIXES) and _is_division(out[k]):
        k += 1  # the head's divisions; the last token is always a place (an address is not only a division)
    return tuple(out[:k]), tuple(out[k:])


# the comparisons meet the same addresses again and again; bounded, as a city has millions of them
tokens = lru_cache(maxsize=100_000)(split)


def first_word(text: str) -> str:
    """The first word (a token without digits) of a normalised address after its divisions: the street's
    name in a Latin address (12 HIGH STREET), the street or town in a Chinese one. A blocking key that
    survives another house number and errors later in the address."""
    return next((t for t in split(text)[1] if not _DIGIT.search(t)), "")  # once per address: not cached


def _is_division(tok: str) -> bool:
    """A token ending in a division suffix (so Chinese) is a division unless it has a number or is a place."""
    return not _DIGIT.search(tok) and not tok.endswith(("小区", "社区", "园区", "开发区"))


@lru_cache(maxsize=200_000)
def _script(tok: str) -> str:
    """"9" a token with a digit, "中" Chinese, "A" Latin: only tokens of one script can agree."""
    return "9" if _DIGIT.search(tok) else "中" if _HAS_CJK.search(tok) else "A"


def _swapped(x: str, y: str) -> bool:
    """x and y (one length) differ by two adjacent characters swapped."""
    d = [k for k in range(len(x)) if x[k] != y[k]]
    return len(d) == 2 and d[1] == d[0] + 1 and x[d[0]] == y[d[1]] and x[d[1]] == y[d[0]]


@lru_cache(maxsize=200_000)
def _word_agrees(x: str, y: str) -> bool:
    """A typo, for two tokens whose first or last characters agree (one slip rarely changes both; the
    callers check it, cheaply, before calling): Latin words with Jaro-Winkler >= `names.JW_HIGH`, Chinese
    homophones of one length with the same last character, numbers of 4+ digits with two adjacent digits
    swapped (a keying slip, as the birth date's level; 1203 / 1230: not 1203 / 1204, the next door)."""
    sx = _script(x)
    if sx != _script(y):
        return False
    if sx == "9":
        return len(x) == len(y) and sum(c.isdigit() for c in x) >= 4 and _swapped(x, y)
    if sx == "A":  # Jaro-Winkler >= 0.92 needs Jaro >= 0.867, so lengths within a ratio of 0.6
        return 5 * min(len(x), len(y)) >= 3 * max(len(x), len(y)) and \
            jellyfish.jaro_winkler_similarity(x, y) >= nm.JW_HIGH
    if len(x) != len(y) or len(x) < 2 or x[-1] != y[-1]:
        return False
    return all(a == b or bool(nm.readings(a) & nm.readings(b)) for a, b in zip(x, y))


def agreeing(ta: tuple, tb: tuple) -> tuple[int, int]:
    """(tokens of `ta` that agree with the other's, tokens of `tb` that do), each token used once: equal
    tokens first, then typos (`_word_agrees`), then a space lost or added (a word agreeing with two adjacent
    words of the other side run together, from the same first letter: STANLEYSTREET / STANLEY STREET,
    C RESCENT / CRESCENT). Addresses have few tokens: plain loops, the cheap tests first."""
    ua, ub = [False] * len(ta), [False] * len(tb)
    free: dict[str, list[int]] = {}
    for j, t in enumerate(tb):
        free.setdefault(t, []).append(j)
    for i, t in enumerate(ta):
        if free.get(t):
            ub[free[t].pop(0)] = ua[i] = True
    rest_b = [j for j in range(len(tb)) if not ub[j]]
    if not rest_b or all(ua):
        return sum(ua), sum(ub)
    for i, t in enumerate(ta):
        if ua[i]:
            continue
        first, last = t[0], t[-1]
        for j in rest_b:
            u = tb[j]
            if not ub[j] and (u[0] == first or u[-1] == last) and _word_agrees(t, u):
                ua[i] = ub[j] = True
                break
    for one, two, u1, u2 in ((ta, tb, ua, ub), (tb, ta, ub, ua)):
        for i, t in enumerate(one):
            if u1[i] or _script(t) == "9":
                continue
            n, first = len(t), t[0]
            for j in range(len(two) - 1):
                x, y = two[j], two[j + 1]
                if x[0] != first or u2[j] or u2[j + 1]:
                    continue
                m = len(x) + len(y)
                if 5 * min(n, m) < 3 * max(n, m) or _script(x) == "9" or _script(y) == "9":
                    continue
                if t == x + y or _word_agrees(t, x + y):
                    u1[i] = u2[j] = u2[j + 1] = True
                    break
    return sum(ua), sum(ub)


@lru_cache(maxsize=100_000)
def _divisions(da: tuple) -> dict[str, frozenset]:
    """The division tokens of an address by kind, the kind being the longest division suffix (自治区 is not
    a 区)."""
    out: dict[str, set] = {}
    for t in da:
        out.setdefault(next(s for s in DIVISION_SUFFIXES if t.endswith(s)), set()).add(t)
    return {k: frozenset(v) for k, v in out.items()}


def _divisions_conflict(da: tuple, db: tuple) -> bool:
    """A division of one kind written on both sides, with no name in common (南京市 / 上海市)."""
    if not da or not db:
        return False
    xa, xb = _divisions(da), _divisions(db)
    return any(not (v & xb[k]) for k, v in xa.items() if k in xb)


def compile_levels(declared) -> tuple:
    """The declared levels (`fuzzy.address_levels`: a list of {level, rule, min?, label, label_zh}) as a
    hashable tuple ((level, rule, min), ...) in the order they are tried; raises ValueError when they cannot
    drive a comparison (levels 0..n-1, each once, a known rule, "else" last at level 0)."""
    if declared is None:
        declared = DEFAULT_LEVELS
    try:
        rows = tuple((int(d["level"]), str(d["rule"]), float(d.get("min", 0.0))) for d in declared)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"fuzzy.address_levels must be the declared levels of the address comparison: {e}") from e
    levels = sorted(r[0] for r in rows)
    if levels != list(range(len(rows))) or any(r[1] not in RULES for r in rows) or rows[-1][:2] != (0, "else"):
        raise ValueError("fuzzy.address_levels: levels 0..n-1 each once, rules among " + ", ".join(RULES)
                         + ", the last {level 0, rule else}")
    if len(rows) != N_LEVELS:  # the model's m and u have one value per level
        raise ValueError(f"fuzzy.address_levels: {N_LEVELS} levels (as fuzzy.default_m/default_u), got {len(rows)}")
    return rows


@lru_cache(maxsize=200_000)
def _level(x: str, y: str, rules: tuple) -> int:
    """Level of two non-empty normalised addresses under compiled `rules` (`compile_levels`), given in
    canonical order (x <= y: `address_levels` compares a pair and its reverse once)."""
    dx, px = tokens(x)
    dy, py = tokens(y)
    if not px or not py:
        return 0
    conflict = _divisions_conflict(dx, dy)
    ka, kb = agreeing(px, py)
    share = (ka + kb) / (len(px) + len(py))
    lowest = [r for r in rules if r[1] == "share"][-1:]  # the only partial level divisions in conflict allow
    for lvl, rule, lo in rules:
        if conflict and rule != "else" and (lvl, rule, lo) not in lowest:
            continue
        if rule == "exact":
            if dx + px == dy + py:
                return lvl
        elif rule == "else":
            return lvl
        elif rule == "same_tokens":
            if share == 1.0:
                return lvl
        elif rule == "share":
            if share >= lo:
                return lvl
    return 0


def address_levels(a: np.ndarray, b: np.ndarray, declared=None) -> np.ndarray:
    """Levels (int8) of two aligned arrays of normalised addresses; -1 where either is empty. Equal
    addresses are the exact level without Python work; the others are compared once per distinct pair."""
    rules = compile_levels(declared)
    exact = next((lvl for lvl, rule, _ in rules if rule == "exact"), None)
    out = np.full(len(a), -1, dtype=np.int8)
    if len(a) == 0:
        return out
    ok = (a != "") & (b != "")
    same = ok & (a == b)
    if exact is not None:
        out[same] = exact
    idx = np.flatnonzero(ok & ~same) if exact is not None else np.flatnonzero(ok)
    if len(idx):
        x, y = a[idx], b[idx]
        swap = x > y  # canonical order: a pair and its reverse are one distinct pair
        codes, uniq = nm.pair_codes(np.where(swap, y, x), np.where(swap, x, y))
        vals = np.fromiter((_level(x, y, rules) for x, y in uniq), dtype=np.int8, count=len(uniq))
        out[idx] = vals[codes]
    return out


def _default_levels() -> list[dict]:
    with open(CONFIG_PATH, encoding="utf-8") as f:
        return json.load(f)["fuzzy"]["address_levels"]


# the declaration of the shipped configuration: the labels every explanation uses, and the comparison
# when none is given
DEFAULT_LEVELS = _default_levels()
N_LEVELS = len(DEFAULT_LEVELS)
compile_levels(DEFAULT_LEVELS)  # the shipped declaration can drive a comparison
LABELS = [next(d["label"] for d in DEFAULT_LEVELS if int(d["level"]) == i) for i in range(N_LEVELS)]
LABELS_ZH = [next(d["label_zh"] for d in DEFAULT_LEVELS if int(d["level"]) == i) for i in range(N_LEVELS)]
EXACT = next(int(d["level"]) for d in DEFAULT_LEVELS if d["rule"] == "exact")
