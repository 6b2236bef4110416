"""Verification returns (核查回填, spec section 5): task numbers, validating a returned task file row by
row, and the effects of the accepted answers on the base.

`validate_returns(ret, tasks, dept, business_date)` → `(accepted, rejected)`:

- a row whose `HCJG` is empty is not an answer: it is neither accepted nor rejected;
- every other row is accepted or rejected with one or more reason codes (`reason`, `;`-separated)
  and a readable explanation (`reason_text`):

  | reason | when |
  |---|---|
  | `UNKNOWN_TASK` | `RWBH` is not a task number the pipeline issued |
  | `WRONG_DEPARTMENT` | the task is routed to another department than the one returning it |
  | `INVALID_RESULT` | `HCJG` is not one of 1, 2, 3, 4, 5, 9 |
  | `NOT_APPLICABLE` | `HCJG` 4 or 5 (same / not same person) on a non-`FUZZY_CANDIDATE` task or one with no candidate `RKID` |
  | `BAD_CORRECTION` | `HCJG`=1 and `GZZD` empty or not a correctable field of the table (not the key or `GXSJ`), or `GZZ` empty |
  | `TASK_CLOSED` | the task is closed and this answer differs from the one recorded (or it was closed automatically) |
  | `CONFLICTING_ANSWERS` | the same return answers one task with different `HCJG`, or corrects one field to different values |

- a closed task answered again with the same `HCJG` is accepted idempotently: `repeat` = `"1"`, and
  `return_effects` ignores it. Identical duplicate rows within one return: the first counts, the
  others are accepted with `repeat` = `"1"`. Several `HCJG`=1 rows of one task correcting different
  fields are all corrections.

The task's own columns (`BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `RKID`, `route`) are taken from the task
register, never from the returned file.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from catalog import TABLES
from catalog.codes import RESULT_CODES
from exchange.taskfile import correctable_fields, header_code
from verification.tasks import task_number

REJECT_REASONS: dict[str, str] = {
    "UNKNOWN_TASK": "任务编号不存在",
    "WRONG_DEPARTMENT": "该任务不是下发给本部门的，本部门的回复无效",
    "INVALID_RESULT": "核查结果代码无效，只能填1、2、3、4、5或9",
    "NOT_APPLICABLE": "核查结果4、5只适用于“疑似同一人”任务",
    "BAD_CORRECTION": "核查结果为1时须填写本表可更正的字段代码和更正值",
    "TASK_CLOSED": "该任务已销号，且本次回复与已登记的核查结果不同",
    "CONFLICTING_ANSWERS": "同一任务在本次回复中有互相矛盾的多行",
}
REASON_ORDER = tuple(REJECT_REASONS)

# HCJG → effect
SUPPRESSING_RESULTS = ("1", "2", "9")
CANCELLING_RESULT = "3"
DECISION_RESULTS = {"4": "SAME", "5": "NOT_SAME"}
SAME_PERSON_STATE = "FUZZY_CANDIDATE"

ANSWER_COLUMNS = ["RWBH", "HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ"]
TASK_INFO = ["BM", "BH", "YWZJ", "JS", "HCZT", "RKID", "route"]
ACCEPTED_COLUMNS = ANSWER_COLUMNS + TASK_INFO + ["_line", "repeat", "accepted_on"]

_CORRECTABLE = pd.Index([f"{t}|{f}" for t in TABLES for f in correctable_fields(t)])


def _text(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[col].fillna("").astype(str)


def normalise_result(raw: pd.Series) -> pd.Series:
    """HCJG as typed → its code: NFKC, trimmed; `1`, `1.0` (a number cell), `1-属实已更正`, `1 属实已更正`
    all give `1`. Anything else is returned trimmed (and fails validation)."""
    s = raw.fillna("").astype(str).str.normalize("NFKC").str.strip()
    code = s.str.extract(r"^(\d+)(?:\.0+)?(?=$|[^\d.])", expand=False)
    return code.where(code.notna(), s).astype(str)


def validate_returns(ret: pd.DataFrame, tasks: pd.DataFrame, dept: str, business_date: str
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a returned task file (`read_return` frame) into accepted answers and rejected rows.

    `tasks`: the task register (at least `RWBH`, `BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `RKID`; `route`
    (else `BM`), `status` (`open`/`closed`, else open), `close_reason`, `closed_date` and `HCJG`
    (the recorded answer) when known). `dept`: the department that delivered the return.

    Returns `accepted` (`ACCEPTED_COLUMNS`: normalised answer, the task's columns from the register,
    `_line`, `repeat`, `accepted_on` = business date) and `rejected` (the returned row as read, plus
    `reason` codes and `reason_text`). See the module docstring for the rules.
    """
    ret = ret.reset_index(drop=True)
    raw_hcjg = _text(ret, "HCJG")
    answered = raw_hcjg.str.strip() != ""
    ret = ret[answered].copy()
    a = pd.DataFrame(index=ret.index)
    a["RWBH"] = _text(ret, "RWBH").str.normalize("NFKC").str.strip().str.upper()
    a["HCJG"] = normalise_result(_text(ret, "HCJG"))
    a["GZZD"] = _text(ret, "GZZD").map(header_code) if len(ret) else pd.Series(dtype=object)
    a["GZZ"] = _text(ret, "GZZ").str.strip()
    for c in ("HCR", "HCRQ", "BZ"):
        a[c] = _text(ret, c).str.strip()
    a["_line"] = ret["_line"] if "_line" in ret.columns else ret.index + 2

    reg = tasks.copy() if tasks is not None else pd.DataFrame(columns=["RWBH"])
    for c in TASK_INFO + ["status", "close_reason", "closed_date", "HCJG"]:
        if c not in reg.columns:
            reg[c] = reg["BM"] if c == "route" and "BM" in reg.columns else ""
    reg = reg.fillna("").astype(str).drop_duplicates("RWBH", keep="last").set_index("RWBH")
    info = reg.reindex(a["RWBH"].to_numpy()).set_axis(a.index)
    known = a["RWBH"].isin(reg.index)
    for c in TASK_INFO:
        a[c] = info[c].fillna("")

    code = a["HCJG"]
    flags: dict[str, pd.Series] = {}
    flags["UNKNOWN_TASK"] = ~known
    flags["WRONG_DEPARTMENT"] = known & (a["route"] != dept)
    flags["INVALID_RESULT"] = ~code.isin(list(RESULT_CODES))
    flags["NOT_APPLICABLE"] = known & code.isin(list(DECISION_RESULTS)) & (
        (a["HCZT"] != SAME_PERSON_STATE) | (a["RKID"] == ""))
    flags["BAD_CORRECTION"] = known & (code == "1") & (
        (a["GZZD"] == "") | (a["GZZ"] == "") | ~(a["BH"] + "|" + a["GZZD"]).isin(_CORRECTABLE))
    closed = known & (info["status"].fillna("") == "closed")
    same_answer = closed & (info["close_reason"].fillna("") == "RETURN") & (info["HCJG"].fillna("") == code)
    flags["TASK_CLOSED"] = closed & ~same_answer

    # one return answering one task more than once
    ok_so_far = ~pd.concat(flags, axis=1).any(axis=1)
    b = a[ok_so_far]
    n_results = b.groupby("RWBH")["HCJG"].transform("nunique")
    corr = b[b["HCJG"] == "1"]
    n_values = corr.groupby(["RWBH", "GZZD"])["GZZ"].transform("nunique").reindex(b.index).fillna(1)
    conflict = pd.Series(False, index=a.index)
    conflict[b.index] = (n_results > 1) | (n_values > 1)
    flags["CONFLICTING_ANSWERS"] = conflict

    fl = pd.concat(flags, axis=1)[list(REASON_ORDER)]
    bad = fl.any(axis=1)
    auto = info["close_reason"].fillna("") == "AUTO"
    messages = {r: pd.Series(REJECT_REASONS[r], index=a.index, dtype=object) for r in REASON_ORDER}
    messages["TASK_CLOSED"] = messages["TASK_CLOSED"].where(
        ~auto, "该任务已于" + info["closed_date"].fillna("") + "自动销号（问题已不存在），无需再回复")
    reason = pd.Series("", index=a.index, dtype=object)
    text = pd.Series("", index=a.index, dtype=object)
    for r in REASON_ORDER:
        hit = fl[r]
        reason[hit] = reason[hit] + np.where(reason[hit] != "", ";", "") + r
        text[hit] = text[hit] + np.where(text[hit] != "", "；", "") + messages[r][hit]

    rejected = ret[bad].copy()
    rejected["reason"] = reason[bad]
    rejected["reason_text"] = text[bad]

    acc = a[~bad].copy()
    dup = acc.duplicated(["RWBH", "HCJG", "GZZD", "GZZ"], keep="first")
    acc["repeat"] = np.where(same_answer[~bad] | dup, "1", "0")
    acc["accepted_on"] = str(business_date)
    return acc[ACCEPTED_COLUMNS].reset_index(drop=True), rejected.reset_index(drop=True)


def _frame(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return rows.reindex(columns=columns).fillna("").astype(str).reset_index(drop=True)


def return_effects(accepted: pd.DataFrame, tasks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What the accepted answers do to the base (spec section 5). Repeats (`repeat`="1") do nothing.

    - `corrections` (`HCJG`=1): `BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `field`, `value`, `RWBH`, `HCR`, `HCRQ`
    - `suppressions` (`HCJG` 1, 2, 9: the state on that record role, until the record next changes):
      `BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `result`, `RWBH`
    - `cancellations` (`HCJG`=3: the whole record, until it next changes): `BM`, `BH`, `YWZJ`, `RWBH`
    - `decisions` (`HCJG` 4 → `SAME`, 5 → `NOT_SAME`, the task's `RKID`): the Decisions frame
      `BM`, `BH`, `YWZJ`, `JS`, `RKID`, `decision`, `RWBH`, `decided`
    - `closed`: `RWBH` of every task answered (repeats included; closing a closed task changes nothing)
    """
    acc = accepted.fillna("").astype(str) if accepted is not None else pd.DataFrame(columns=ACCEPTED_COLUMNS)
    missing = [c for c in TASK_INFO if c not in acc.columns]
    if missing and tasks is not None and len(tasks):
        reg = tasks.fillna("").astype(str).drop_duplicates("RWBH", keep="last").set_index("RWBH")
        for c in missing:
            acc[c] = acc["RWBH"].map(reg[c]).fillna("") if c in reg.columns else ""
    for c in ACCEPTED_COLUMNS:
        if c not in acc.columns:
            acc[c] = ""
    live = acc[acc["repeat"] != "1"]
    code = live["HCJG"]

    corr = live[code == "1"].rename(columns={"GZZD": "field", "GZZ": "value"})
    corr = corr.drop_duplicates(["BM", "BH", "YWZJ", "JS", "field"], keep="last")
    sup = live[code.isin(SUPPRESSING_RESULTS)].rename(columns={"HCJG": "result"})
    sup = sup.drop_duplicates(["BM", "BH", "YWZJ", "JS", "HCZT"], keep="last")
    canc = live[code == CANCELLING_RESULT].drop_duplicates(["BM", "BH", "YWZJ"], keep="last")
    dec = live[code.isin(list(DECISION_RESULTS))].copy()
    dec["decision"] = dec["HCJG"].map(DECISION_RESULTS)
    dec["decided"] = dec["accepted_on"]
    dec = dec.drop_duplicates(["BM", "BH", "YWZJ", "JS", "RKID"], keep="last")
    return {
        "corrections": _frame(corr, ["BM", "BH", "YWZJ", "JS", "HCZT", "field", "value", "RWBH", "HCR", "HCRQ"]),
        "suppressions": _frame(sup, ["BM", "BH", "YWZJ", "JS", "HCZT", "result", "RWBH"]),
        "cancellations": _frame(canc, ["BM", "BH", "YWZJ", "RWBH"]),
        "decisions": _frame(dec, ["BM", "BH", "YWZJ", "JS", "RKID", "decision", "RWBH", "decided"]),
        "closed": _frame(acc.drop_duplicates("RWBH"), ["RWBH"]),
    }


__all__ = ["task_number", "validate_returns", "return_effects", "normalise_result", "REJECT_REASONS",
           "ACCEPTED_COLUMNS"]
