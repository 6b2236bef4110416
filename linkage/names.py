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

Latin-script names (any name without a CJK character or `□` that has a letter: foreigners, pinyin,
FEBRL-style data) are first-class: case-folded (the key is upper case), accents folded (É → E),
apostrophes dropped (O'BRIEN → OBRIEN) and split into tokens at spaces, hyphens, dots, commas and `·`.
Which token is the surname is not known (either order occurs), so nothing depends on token order: the
blocking keys use the tokens sorted (`name_blocking_keys`) and the comparison aligns the tokens of the
two names (`LATIN_LEVELS`).

`name_levels(a, b)` compares two aligned arrays of name keys and returns an agreement level per
pair on the ordinal scale `MISSING` … `EXACT` below (the ID rules of `linkage.link` and the repair use
it). `name_feature_levels(a, b)` is the comparison the Fellegi–Sunter model weighs: the same levels
for Chinese names and for a Latin spelling against a Chinese name, and the declared Latin levels
(`LATIN_LEVELS`, after Splink's comparison levels) when both names are Latin. Exact equality is
vectorised; the other levels are computed once per unique pair of names, so the Python work grows
with the number of distinct name pairs, not of records.
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

import jellyfish
import numpy as np
import pandas as pd
from pypinyin import Style, pinyin

WILDCARD = "□"
DOT = "·"

# the columns of `name_blocking_keys`
NAME_BLOCK_PARTS = ("surname", "given", "pinyin", "tokens", "initials", "phonetic", "latin")

# Agreement levels of two names (higher is stronger); -1 = a name is missing.
MISSING = -1
DIFFERENT = 0
SURNAME = 1  # only the surname agrees (or sounds alike)
SIMILAR = 2  # one character wrong in a longer name, swapped given-name characters, close pinyin
HOMOPHONE = 3  # same length, every character equal, unknown (□) or sharing a reading
EQUIVALENT = 4  # equal but for □ wildcards or a dropped `·`; a Latin spelling of the pinyin
EXACT = 5

# Levels of two Latin-script names (`name_feature_levels`; both names Latin). A comparison in the sense
# of Splink's comparison library: declared levels, each with a label, tried from the strongest down,
# the first that holds is the pair's level; `MISSING` (a name without tokens) and `DIFFERENT` ("else")
# are shared with the Chinese scale, and so is `EXACT` (the same tokens in the same order; its weight is
# term-frequency adjusted like a Chinese exact name). Tokens are aligned one to one, whatever their
# order, to maximise the summed Jaro-Winkler similarity. The thresholds are Splink's defaults for
# names (`ForenameSurnameComparison`: 0.92 and 0.88), not fitted to any data set.
LATIN_REORDERED = 6
LATIN_TYPO_HIGH = 7
LATIN_TYPO_MEDIUM = 8
LATIN_PART_MISSING = 9
LATIN_INITIALS = 10
LATIN_ONE_PART = 11
N_NAME_LEVELS = 12
JW_HIGH = 0.92
JW_MEDIUM = 0.88
LATIN_LEVELS = (
    (EXACT, "exact", "the same tokens in the same order (case and accents folded)"),
    (LATIN_REORDERED, "tokens reordered", "the same tokens in another order, or the same letters spaced otherwise "
                                          "(SMITH JOHN / JOHN SMITH, ZHANGWEI / ZHANG WEI)"),
    (LATIN_TYPO_HIGH, "jaro-winkler >= 0.92", "as many tokens, each aligned pair Jaro-Winkler >= 0.92 (a typo); "
                                              "with more tokens on one side, the letters in order (a space added)"),
    (LATIN_TYPO_MEDIUM, "jaro-winkler >= 0.88", "the same with Jaro-Winkler >= 0.88"),
    (LATIN_PART_MISSING, "a part missing", "every token of the shorter name agrees (Jaro-Winkler >= 0.92) with one "
                                           "of the longer name, which has more (JOHN SMITH / JOHN PAUL SMITH)"),
    (LATIN_INITIALS, "initials", "tokens agree (Jaro-Winkler >= 0.92) or one is the other's initial (J SMITH / "
                                 "JOHN SMITH)"),
    (LATIN_ONE_PART, "one part agrees", "at least one aligned token pair agrees (Jaro-Winkler >= 0.92), another "
                                        "does not (JOHN SMITH / PETER SMITH)"),
    (DIFFERENT, "else", "no token agrees"),
)
# the ordinal level (`compare`, `name_levels`) a Latin level stands for in the ID rules
_LATIN_ORDINAL = {EXACT: EXACT, LATIN_REORDERED: EQUIVALENT, LATIN_TYPO_HIGH: SIMILAR, LATIN_TYPO_MEDIUM: SIMILAR,
                  LATIN_PART_MISSING: SURNAME, LATIN_INITIALS: SURNAME, LATIN_ONE_PART: SURNAME, DIFFERENT: DIFFERENT,
                  MISSING: MISSING}
# labels of every level of the name feature (index = level; -1 missing)
NAME_LEVEL_LABELS = {
    MISSING: "missing", DIFFERENT: "different", SURNAME: "surname only", SIMILAR: "similar",
    HOMOPHONE: "homophone", EQUIVALENT: "equivalent (□, ·, Latin spelling)", EXACT: "exact",
    **{lvl: f"Latin: {label}" for lvl, label, _ in LATIN_LEVELS if lvl > EXACT},
}

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

# a CJK character (incl. extensions, compatibility ideographs, 〇, private-use 造字) or □: not a Latin name
_NOT_LATIN = re.compile("[\u3007\u3400-\u9fff\uf900-\ufaff\ue000-\uf8ff\u25a1\U00020000-\U0003ffff]")
_APOSTROPHES = str.maketrans("", "", "'\u2019\u02bc`")
_TOKEN = re.compile(r"[^\W\d_]+")  # a run of letters


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

    __slots__ = ("key", "chars", "latin", "tokens", "surname", "given", "pinyin", "has_wild", "_readings")

    def __init__(self, key: str):
        self.key = key
        self.latin = _is_latin(key)
        if self.latin:
            self.tokens = latin_tokens(key)
            letters = "".join(self.tokens)
            self.chars = tuple(letters)
            self.surname = ""
            self.given = ""
            self.pinyin = letters.lower()
            self.has_wild = False
            self._readings = ()
            return
        self.tokens = ()
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
    """A name in an alphabetic script: it has a letter and no CJK character or □."""
    return not _NOT_LATIN.search(key) and any(ch.isalpha() for ch in key)


def latin_tokens(key: str) -> tuple[str, ...]:
    """The tokens of a Latin-script name: upper case, accents folded, apostrophes dropped, split at
    anything that is not a letter (space, hyphen, dot, comma, ·)."""
    s = unicodedata.normalize("NFKD", key.translate(_APOSTROPHES))
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).upper()
    return tuple(_TOKEN.findall(s))


def _phonetic(token: str) -> str:
    """Phonetic code of one Latin token (NYSIIS; the token itself when the code is empty)."""
    if not token.isascii():
        return token
    return jellyfish.nysiis(token) or token


def _align(sim: list[list[float]]) -> list[tuple[int, int]]:
    """One-to-one alignment of the rows of a token similarity matrix with its columns (rows <= columns)
    maximising the summed similarity: [(row, column)] in row order."""
    k, m = len(sim), len(sim[0])
    if k == 1:
        row = sim[0]
        return [(0, max(range(m), key=row.__getitem__))]
    if k == 2 and m == 2:
        return [(0, 0), (1, 1)] if sim[0][0] + sim[1][1] >= sim[0][1] + sim[1][0] else [(0, 1), (1, 0)]
    if m <= 5:
        best, best_perm = -1.0, None
        for perm in itertools.permutations(range(m), k):
            total = sum(sim[i][j] for i, j in enumerate(perm))
            if total > best:
                best, best_perm = total, perm
        return list(enumerate(best_perm))
    # many tokens: greedy, best pairs first
    cells = sorted(((sim[i][j], i, j) for i in range(k) for j in range(m)), reverse=True)
    used_i, used_j, out = set(), set(), {}
    for _, i, j in cells:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out[i] = j
    return [(i, out[i]) for i in range(k)]


def _is_initial(x: str, y: str) -> bool:
    return (len(x) == 1 and len(y) > 1 and y[0] == x) or (len(y) == 1 and len(x) > 1 and x[0] == y)


def latin_level(ta: tuple, tb: tuple) -> int:
    """Level (`LATIN_LEVELS`) of two Latin names given as token tuples; token order does not matter."""
    if not ta or not tb:
        return MISSING
    if ta == tb:
        return EXACT
    if sorted(ta) == sorted(tb) or "".join(ta) == "".join(tb):
        return LATIN_REORDERED
    if len(ta) > len(tb):
        ta, tb = tb, ta
    jw = jellyfish.jaro_winkler_similarity
    sim = [[1.0 if x == y else jw(x, y) for y in tb] for x in ta]
    same_count = len(ta) == len(tb)
    if same_count and max(max(r) for r in sim) < JW_MEDIUM:
        return DIFFERENT  # nothing below can hold
    aligned = _align(sim)
    sims = [sim[i][j] for i, j in aligned]
    if same_count:
        lowest = min(sims)
    else:  # a space added or lost inside a token (MC DONALD / MCDONALD, HAR RISON): the letters in order
        if min(sims) >= JW_HIGH:
            return LATIN_PART_MISSING
        lowest = jw("".join(ta), "".join(tb))
    if lowest >= JW_HIGH:
        return LATIN_TYPO_HIGH
    if lowest >= JW_MEDIUM:
        return LATIN_TYPO_MEDIUM
    agree = [v >= JW_HIGH for v in sims]
    if any(agree):
        if all(a or _is_initial(ta[i], tb[j]) for a, (i, j) in zip(agree, aligned)) and not all(agree):
            return LATIN_INITIALS
        return LATIN_ONE_PART
    return DIFFERENT


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
    if ia.latin and ib.latin:  # the old letter comparison, raised by the token levels (swapped tokens)
        return max(_compare_latin(ia, ib), _LATIN_ORDINAL[latin_level(ia.tokens, ib.tokens)])
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


def feature_level(a: str, b: str) -> int:
    """Level of two name keys as the model weighs them: `compare` for Chinese names and for a Latin
    spelling against a Chinese name, `latin_level` when both are Latin."""
    if not a or not b:
        return MISSING
    if a == b:
        return EQUIVALENT if WILDCARD in a else EXACT
    ia, ib = info(a), info(b)
    if ia.latin and ib.latin:
        return latin_level(ia.tokens, ib.tokens)
    return compare(a, b)


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
    """Agreement levels (int8, ordinal scale `MISSING` … `EXACT`) of two aligned sequences of name keys."""
    return _levels(a, b, compare)


def name_feature_levels(a, b) -> np.ndarray:
    """Levels (int8) the model weighs (`feature_level`): `name_levels` but for pairs of Latin names,
    which get the Latin levels."""
    return _levels(a, b, feature_level)


def _levels(a, b, fn) -> np.ndarray:
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
        vals = np.fromiter((fn(x, y) for x, y in pairs), dtype=np.int8, count=len(pairs))
        out[idx] = vals[codes]
    return out


def name_blocking_keys(keys: pd.Series) -> pd.DataFrame:
    """Blocking parts of each name, computed per unique name.

    Chinese names: `surname`, `given` name and `pinyin` key; a part containing □ is blanked, since a
    wildcard cannot block. Latin names (order of the tokens unknown): `surname` and `given` are the
    first and last of the tokens in alphabetical order (both the token for a one-token name, so that a
    name with a part missing still meets the full name), `pinyin` the letters, and three keys that
    Chinese names leave empty: `tokens` (the tokens sorted: any order), `initials` (their initials,
    sorted: survives a typo past the first letter of every token) and `phonetic` (the NYSIIS codes of the
    tokens, sorted: survives many typos and spelling variants); `latin` is "1" for a Latin name (a pass with
    it serves Latin names only: `latin` + `birth` meets a name with a token replaced, which no name key
    does, without putting every Chinese name born the same day in one block).
    """
    keys = keys.astype(str)
    codes, uniques = pd.factorize(keys)
    m = len(uniques)
    cols = {c: np.full(m, "", dtype=object) for c in NAME_BLOCK_PARTS}
    sur, giv, py = cols["surname"], cols["given"], cols["pinyin"]
    tok, ini, pho, lat = cols["tokens"], cols["initials"], cols["phonetic"], cols["latin"]
    for i, k in enumerate(uniques):  # once per distinct name
        if not k:
            continue
        if _is_latin(k):
            t = latin_tokens(k)
            if not t:
                continue
            st = sorted(t)
            sur[i], giv[i] = st[0], st[-1]
            py[i] = "".join(t).lower()
            tok[i] = " ".join(st)
            ini[i] = "".join(x[0] for x in st)
            pho[i] = " ".join(sorted(_phonetic(x) for x in t))
            lat[i] = "1"
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
        return pd.DataFrame({c: [] for c in NAME_BLOCK_PARTS}, index=keys.index, dtype=object)
    for c, v in cols.items():  # equal parts share one object (264 surnames hold 119k distinct names)
        pool: dict = {}
        v[:] = [pool.setdefault(x, x) for x in v]
    return pd.DataFrame({c: v[codes] for c, v in cols.items()}, index=keys.index)
