"""Chinese-aware comparison of personal names for linking (spec section 3).

Names arrive as `name_key` (normalised, traditional folded to simplified, Latin upper-cased; see
`linkage.normalise`). This module knows what a Chinese name looks like:

- the surname is the first character, or the first two for a compound surname (欧阳, 司马 …);
- `□` stands for a character the sending system could not store: it matches any character;
- minority names join their parts with `·`, which some systems drop;
- characters have several readings (heteronyms), and surnames often use a special one
  (曾 zeng, 单 shan, 仇 qiu, 区 ou): two characters sound alike when their SETS of toneless
  readings (pypinyin, ``heteronym=True``) intersect;
- a name may be written in Latin letters (pinyin, either order of surname and given name).

`name_levels(a, b)` compares two aligned arrays of name keys and returns an agreement level per
pair (`MISSING` … `EXACT` below). Exact equality is vectorised; the other levels are computed once
per unique pair of names, so the Python work grows with the number of distinct name pairs, not of
records.
"""
from __future__ import annotations

import itertools
import re
from functools import lru_cache

import jellyfish
import numpy as np
import pandas as pd
from pypinyin import Style, pinyin

WILDCARD = "□"
DOT = "·"

# Agreement levels of two names (higher is stronger); -1 = a name is missing.
MISSING = -1
DIFFERENT = 0
SURNAME = 1  # only the surname agrees (or sounds alike)
SIMILAR = 2  # one character wrong in a longer name, swapped given-name characters, close pinyin
HOMOPHONE = 3  # same length, every character equal, unknown (□) or sharing a reading
EQUIVALENT = 4  # equal but for □ wildcards or a dropped `·`; a Latin spelling of the pinyin
EXACT = 5

COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 司徒 东方 皇甫 令狐 慕容 夏侯 尉迟 长孙 宇文 公孙 端木 独孤 南宫 西门 澹台 "
    "轩辕 呼延 万俟 闻人 申屠 太史 赫连 钟离 公冶 濮阳 淳于 单于 百里 东郭 拓跋 司空 左丘 第五".split()
)

# Readings a character takes as a surname, where it differs from its common reading. Used only to
# build blocking keys; comparisons use the full set of readings.
SURNAME_READINGS = {
    "曾": "zeng", "单": "shan", "仇": "qiu", "区": "ou", "解": "xie", "查": "zha", "朴": "piao",
    "盖": "ge", "缪": "miao", "乐": "yue", "覃": "qin", "翟": "zhai", "秘": "bi", "种": "chong",
    "员": "yun", "尉": "yu", "召": "shao", "繁": "po", "能": "nai", "哈": "ha", "宓": "fu",
    "过": "guo", "华": "hua", "任": "ren", "沈": "shen", "燕": "yan", "纪": "ji", "黑": "he",
    "重": "chong", "长": "zhang", "藏": "zang", "句": "gou", "佴": "nai", "阚": "kan", "冼": "xian",
}

_LATIN = re.compile(r"^[A-Z][A-Z ·.\-',]*$")
_LETTERS = re.compile(r"[^A-Z]")


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\U00020000" <= ch <= "\U0003134f" or "\uf900" <= ch <= "\ufaff"


@lru_cache(maxsize=None)
def readings(ch: str) -> frozenset:
    """Toneless pinyin readings of one character (empty for □; the letter itself for non-CJK)."""
    if ch == WILDCARD:
        return frozenset()
    if not _is_cjk(ch):
        return frozenset({ch.lower()})
    out = pinyin(ch, style=Style.NORMAL, heteronym=True, errors="ignore")
    found = {r.replace("ü", "v") for group in out for r in group if r}
    return frozenset(found) if found else frozenset({ch})


def _default_reading(ch: str, first: bool) -> str:
    if ch == WILDCARD:
        return "?"
    if first and ch in SURNAME_READINGS:
        return SURNAME_READINGS[ch]
    r = readings(ch)
    if not r:
        return "?"
    return sorted(r)[0] if len(r) > 1 and not _is_cjk(ch) else _common_reading(ch)


@lru_cache(maxsize=None)
def _common_reading(ch: str) -> str:
    if not _is_cjk(ch):
        return ch.lower()
    out = pinyin(ch, style=Style.NORMAL, heteronym=False, errors="ignore")
    return out[0][0].replace("ü", "v") if out and out[0] else ch


class NameInfo:
    """Everything the comparisons need about one name key, computed once per distinct name."""

    __slots__ = ("key", "chars", "latin", "surname", "given", "pinyin", "has_wild", "_readings")

    def __init__(self, key: str):
        self.key = key
        self.latin = _is_latin(key)
        if self.latin:
            letters = _LETTERS.sub("", key)
            self.chars = tuple(letters)
            self.surname = ""
            self.given = ""
            self.pinyin = letters.lower()
            self.has_wild = False
            self._readings = ()
            return
        plain = key.replace(DOT, "")
        self.chars = tuple(plain)
        self.has_wild = WILDCARD in plain
        self.surname, self.given = _split(key, plain)
        self.pinyin = _pinyin_key(plain)
        self._readings = None

    @property
    def readings(self) -> tuple:
        if self._readings is None:
            self._readings = tuple(readings(c) for c in self.chars)
        return self._readings

    def pinyin_spellings(self, limit: int = 64) -> set[str]:
        """Every Latin spelling of the name (each combination of readings), surname first or last."""
        if self.latin or self.has_wild or not self.chars:
            return set()
        options = [sorted(r) for r in self.readings]
        total = 1
        for o in options:
            total *= len(o)
        if total > limit:
            options = [[_default_reading(c, i == 0)] for i, c in enumerate(self.chars)]
        ns = len(self.surname) if self.surname and DOT not in self.key else 1
        out = set()
        for combo in itertools.product(*options):
            out.add("".join(combo).upper())
            out.add("".join(combo[ns:] + combo[:ns]).upper())
        return {s.replace("V", "U") for s in out} | out


def _split(key: str, plain: str) -> tuple[str, str]:
    """(surname, given name) of a Han name key; a minority name's first letter plays the surname."""
    if DOT in key:
        return key[:1], plain[1:]
    if len(plain) >= 3 and plain[:2] in COMPOUND_SURNAMES:
        return plain[:2], plain[2:]
    return plain[:1], plain[1:]


_READING1: dict[str, str] = {}


def _reading1(ch: str) -> str:
    r = _READING1.get(ch)
    if r is None:
        r = _READING1[ch] = "?" if ch == WILDCARD else _common_reading(ch)
    return r


def _pinyin_key(plain: str) -> str:
    """Toneless pinyin of a name with the surname's special reading (曾 zeng, 单 shan …)."""
    if not plain:
        return ""
    first = SURNAME_READINGS.get(plain[0]) or _reading1(plain[0])
    return first + "".join([_reading1(c) for c in plain[1:]])


def _is_latin(key: str) -> bool:
    return key[:1].isascii() and bool(_LATIN.match(key))


@lru_cache(maxsize=1_000_000)
def info(key: str) -> NameInfo:
    return NameInfo(key)


def compare(a: str, b: str) -> int:
    """Agreement level of two name keys (see module docstring)."""
    if not a or not b:
        return MISSING
    if a == b:
        return EQUIVALENT if WILDCARD in a else EXACT
    ia, ib = info(a), info(b)
    if ia.latin or ib.latin:
        return _compare_latin(ia, ib)
    ca, cb = ia.chars, ib.chars
    if len(ca) == len(cb) and ca:
        known = wild = homo = 0
        bad = []
        ra, rb = ia.readings, ib.readings
        for i in range(len(ca)):
            x, y = ca[i], cb[i]
            if x == y:
                known += 1
            elif x == WILDCARD or y == WILDCARD:
                wild += 1
            elif ra[i] & rb[i]:
                homo += 1
            else:
                bad.append(i)
        if not bad:
            if known == 0 and homo == 0:
                return MISSING  # nothing known on one side
            if homo == 0:  # equal but for □ (or a dropped ·)
                return EQUIVALENT if known >= wild else HOMOPHONE
            return HOMOPHONE
        if len(bad) == 1 and len(ca) >= 3:
            return SIMILAR
        if len(bad) == 2 and bad[1] == bad[0] + 1 and bad[0] >= 1 and ca[bad[0]] == cb[bad[1]] and ca[bad[1]] == cb[bad[0]]:
            return SIMILAR  # swapped given-name characters
    if DOT in a or DOT in b or len(ca) >= 4 or len(cb) >= 4:
        # transliterated minority names: spelling variants sound alike
        if ia.pinyin and ib.pinyin and jellyfish.jaro_winkler_similarity(ia.pinyin, ib.pinyin) >= 0.92:
            return SIMILAR
    if _surname_agrees(ia, ib):
        return SURNAME
    return DIFFERENT


def _surname_agrees(ia: NameInfo, ib: NameInfo) -> bool:
    sa, sb = ia.surname, ib.surname
    if not sa or not sb or WILDCARD in sa or WILDCARD in sb:
        return False
    if sa == sb:
        return True
    if len(sa) == len(sb) == 1:
        return bool(readings(sa) & readings(sb))
    return False


def _compare_latin(ia: NameInfo, ib: NameInfo) -> int:
    if ia.latin and ib.latin:
        if ia.pinyin == ib.pinyin:
            return EQUIVALENT
        if jellyfish.jaro_winkler_similarity(ia.pinyin, ib.pinyin) >= 0.93:
            return SIMILAR
        return DIFFERENT
    lat, han = (ia, ib) if ia.latin else (ib, ia)
    spelled = lat.pinyin.upper()
    spellings = han.pinyin_spellings()
    if spelled in spellings:
        return EQUIVALENT
    if han.pinyin and "?" not in han.pinyin:
        best = max((jellyfish.jaro_winkler_similarity(spelled, s) for s in spellings), default=0.0)
        if best >= 0.93:
            return SIMILAR
    sur = han.surname
    if sur and WILDCARD not in sur and len(sur) == 1:
        for r in readings(sur):
            if spelled.startswith(r.upper()) or spelled.endswith(r.upper()):
                return SURNAME
    return DIFFERENT


def pair_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, list]:
    """Codes of the distinct (a, b) value pairs and the list of those pairs (first-seen order)."""
    ca, ua = pd.factorize(a)
    cb, ub = pd.factorize(b)
    key = ca.astype(np.int64) * (len(ub) + 1) + cb
    codes, ukeys = pd.factorize(key)
    ua = np.asarray(ua, dtype=object)
    ub = np.asarray(ub, dtype=object)
    pairs = list(zip(ua[ukeys // (len(ub) + 1)], ub[ukeys % (len(ub) + 1)]))
    return codes, pairs


def name_levels(a, b) -> np.ndarray:
    """Agreement levels (int8) of two aligned sequences of name keys."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    out = np.full(len(a), DIFFERENT, dtype=np.int8)
    if len(a) == 0:
        return out
    missing = (a == "") | (b == "")
    same = (a == b) & ~missing
    out[missing] = MISSING
    out[same] = EXACT
    if same.any():  # equal names with □ are only EQUIVALENT
        sa = a[same]
        codes, uniq = pd.factorize(sa)
        wild = np.fromiter((WILDCARD in u for u in uniq), dtype=bool, count=len(uniq))
        if wild.any():
            idx = np.flatnonzero(same)[wild[codes]]
            out[idx] = EQUIVALENT
    idx = np.flatnonzero(~missing & ~same)
    if len(idx):
        codes, pairs = pair_codes(a[idx], b[idx])
        vals = np.fromiter((compare(x, y) for x, y in pairs), dtype=np.int8, count=len(pairs))
        out[idx] = vals[codes]
    return out


def name_blocking_keys(keys: pd.Series) -> pd.DataFrame:
    """Surname, given name and pinyin key of each name (for blocking), computed per unique name.

    A part containing □ is blanked, since a wildcard cannot block.
    """
    keys = keys.astype(str)
    codes, uniques = pd.factorize(keys)
    m = len(uniques)
    sur = np.full(m, "", dtype=object)
    giv = np.full(m, "", dtype=object)
    py = np.full(m, "", dtype=object)
    for i, k in enumerate(uniques):  # once per distinct name
        if not k:
            continue
        if _is_latin(k):
            py[i] = _LETTERS.sub("", k).lower()
            continue
        plain = k.replace(DOT, "")
        s_, g_ = _split(k, plain)
        if WILDCARD not in s_:
            sur[i] = s_
        if g_ and WILDCARD not in g_:
            giv[i] = g_
        if WILDCARD not in plain:
            py[i] = _pinyin_key(plain)
    if m == 0:
        return pd.DataFrame({"surname": [], "given": [], "pinyin": []}, index=keys.index, dtype=object)
    return pd.DataFrame({"surname": sur[codes], "given": giv[codes], "pinyin": py[codes]}, index=keys.index)
