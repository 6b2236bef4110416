"""Why a fuzzy link was made (issue 14, item 4): the comparisons behind the score of a `FUZZY` or
`POSSIBLE` link, kept with the link (`links.PPMX`, 匹配明细) and told to a clerk (the `DBXX` of a
`FUZZY_CANDIDATE` task) and to an operator (`popbase explain`).

`PPMX` is compact JSON, one object per link (spaced here):

    {"with": "police|hukou|H1|SELF", "prior": -13.02, "name": [5, 11.23], "birth": [2, 3.1], ...,
     "partner": [-1, 0.0], "others": -0.31}

- `with`: the role key of the candidate's record the link's score rests on (the pair that scored best
  against the person, `fuzzy.best_pairs`);
- `prior`: the log2 prior odds that a query matches a given person (`FSModel.log2_prior_odds`);
- one `[level, bits]` per comparison of the model (`fuzzy.FEATURES`, labels in `fuzzy.LEVEL_LABELS` and
  `LEVEL_LABELS_ZH`; level -1: a side has no value, 0 bits);
- `others`: what the query's other candidates take away (the posterior is normalised over them:
  p = odds / (1 + the odds of every candidate)), so that prior + bits + others is the log2 odds of the
  link's score `PPDF`; 0 when it is the only candidate.

Bits are rounded to 2 decimals. Everything is a function of the scored pair and the model, so a link
re-linked on an incremental day gets the explanation a rebuild gives it, and a link not re-linked keeps
the one it has. ID links, decisions (`MANUAL`) and unmatched roles have none (`""`).
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from linkage import fuzzy as fz
from linkage.ids import mask_id

EXPLAINED = ("FUZZY", "POSSIBLE")  # the methods whose links carry an explanation
MINUS = "\u2212"  # the minus sign of printed figures, in the clerk's text (−2.5)


def _num(x: float) -> str:
    """Bits as stored: 2 decimals, no negative zero."""
    return repr(round(float(x), 2) + 0.0)


def encode(terms: dict[str, tuple[np.ndarray, np.ndarray]], prior: float, p: np.ndarray,
           partners: np.ndarray) -> np.ndarray:
    """`PPMX` text of each explained link: `terms` per comparison (levels, bits) as `fuzzy.explain_pairs`
    gives them, the model's log2 prior odds, each link's unrounded score `p` and the role key of the
    record it was compared with."""
    p = np.asarray(p, dtype=np.float64)
    total = prior + sum(bits for _, bits in terms.values())
    # the log2 odds of p; beyond float precision (1 - p < 1e-12) the other candidates do not show
    ok = (p > 1e-12) & (p < 1.0 - 1e-12)
    safe = np.where(ok, p, 0.5)
    others = np.where(ok, np.log2(safe) - np.log2(1.0 - safe) - total, 0.0)
    parts = [[f'"{f}":[{int(lv)},{_num(b)}]' for lv, b in zip(*terms[f])] for f in fz.FEATURES]
    head = f'"prior":{_num(prior)}'
    return np.array(["{" + f'"with":{json.dumps(str(w), ensure_ascii=False)},{head},' + ",".join(cols)
                     + f',"others":{_num(o)}' + "}" for w, o, *cols in zip(partners, others, *parts)], dtype=object)


def decode(text: str) -> dict | None:
    """The explanation stored in `PPMX`, or None when there is none."""
    return json.loads(text) if text else None


def _signed(bits: float) -> str:
    return ("+" if bits >= 0 else MINUS) + f"{abs(bits):.1f}"


def basis_zh(text: str) -> str:
    """The comparisons of a link as a clerk reads them (`姓名相同(+11.2)、出生日期差一位(+3.1)、…`): every
    comparison both sides could make, with its bits; `""` without an explanation."""
    e = decode(text)
    if not e:
        return ""
    return "、".join(f"{fz.LEVEL_LABELS_ZH[f][e[f][0]]}({_signed(e[f][1])})" for f in fz.FEATURES
                    if f in e and e[f][0] >= 0)


def probability(log2_odds: float) -> float:
    return 1.0 / (1.0 + math.pow(2.0, -max(min(log2_odds, 1000.0), -1000.0)))


def waterfall(text: str) -> list[dict]:
    """The steps of a link's score: the prior, then each comparison (label, level, bits), then the other
    candidates' share; with the running total of bits and the match probability it stands for."""
    e = decode(text)
    if not e:
        return []
    total = e["prior"]
    steps = [{"step": "prior", "label": "prior odds", "label_zh": "先验", "level": None, "bits": e["prior"],
              "total": total, "p": probability(total)}]
    for f in fz.FEATURES:
        level, bits = e.get(f, (-1, 0.0))
        total += bits
        en, zh = (fz.LEVEL_LABELS[f][level], fz.LEVEL_LABELS_ZH[f][level]) if level >= 0 else fz.MISSING_LABELS
        steps.append({"step": f, "label": en, "label_zh": zh if level >= 0 else f"{fz.FEATURE_LABELS[f]}{zh}",
                      "level": level, "bits": bits, "total": total, "p": probability(total)})
    total += e.get("others", 0.0)
    steps.append({"step": "others", "label": "the other candidates' share", "label_zh": "其他候选分走",
                  "level": None, "bits": e.get("others", 0.0), "total": total, "p": probability(total)})
    return steps


# what each method of a link without weights rests on (`report`)
_NO_WEIGHTS = {
    "ID_EXACT": "linked by ID number (ID_EXACT): the citizen ID identifies the person, no weights",
    "ID_NORMALIZED": "linked by ID number after normalising it (ID_NORMALIZED: spaces, full width, x, 15 to 18 "
                     "digits), no weights",
    "ID_REPAIRED": "linked by a repaired ID number (ID_REPAIRED: one keystroke or Excel damage undone, confirmed "
                   "by name and birth date), no weights",
    "MANUAL": "linked by a department's verification answer (MANUAL: HCJG 4, same person), no weights",
    "UNMATCHED": "not linked to anyone else: the role founded a person of its own (UNMATCHED)",
}
_LONG_NUMBER = re.compile(r"[0-9]{14,}[0-9Xx]?")


def mask_key(key: str) -> str:
    """A role key as it may be printed: any ID-length number in it masked (`ids.mask_id`; a record key
    such as a disability card number holds the citizen ID)."""
    return _LONG_NUMBER.sub(lambda m: mask_id(m.group(0)), str(key))


def report(role_key: str, rkid: str, ppfs: str, ppdf: float, ppmx: str) -> list[str]:
    """The lines `popbase explain` prints for one link: for a FUZZY/POSSIBLE link the waterfall of its
    weights (prior, each comparison's label, level and bits, running total, match probability), else what
    the link rests on. ID numbers are masked."""
    head = [f"role     {mask_key(role_key)}", f"person   {rkid}", f"method   {ppfs}   score PPDF {ppdf:.4f}"]
    if ppfs not in EXPLAINED:
        return head + [_NO_WEIGHTS.get(ppfs, f"method {ppfs}: no weights")]
    steps = waterfall(ppmx)
    if not steps:
        return head + ["no explanation stored: the link was made before explanations were kept (it gets one "
                       "when it is re-linked, or on a whole-city link: POPBASE_FULL_RELINK=1)"]
    lines = head + [f"compared with {mask_key(decode(ppmx).get('with', ''))} (the candidate's record that scored best)",
                    "", f"{'step':<8} {'level':>5} {'bits':>8} {'total':>8} {'match p':>8}  what"]
    for s in steps:
        level = "" if s["level"] is None else str(s["level"])
        lines.append(f"{s['step']:<8} {level:>5} {s['bits']:>+8.2f} {s['total']:>+8.2f} {s['p']:>8.4f}  "
                     f"{s['label']} ({s['label_zh']})")
    lines += ["", f"match probability {steps[-1]['p']:.4f} (stored score PPDF {ppdf:.4f}; bits are log2 odds, "
              "rounded to 2 decimals)"]
    return lines
