"""Verification returns (核查回填, spec section 5): task numbers, validating a returned task file row by
row, and the effects of the accepted answers on the base.

`validate_returns(ret, tasks, dept, business_date, sources)` → `(accepted, rejected)`:

- a row whose `HCJG` is empty is not an answer: it is neither accepted nor rejected;
- every other row is accepted or rejected with one or more reason codes (`reason`, `;`-separated)
  and a Chinese explanation for the clerk: `problem` (what was wrong), `action` (what to do) and
  `reason_text` = `problem` + `。` + `action` (an `action` never holds `。`, so the text splits again at
  its last `。`):

  | reason | when |
  |---|---|
  | `UNKNOWN_TASK` | `RWBH` is not a task number the pipeline issued |
  | `WRONG_DEPARTMENT` | the task is routed to another department than the one returning it |
  | `INVALID_RESULT` | `HCJG` is not one of 1, 2, 3, 4, 5, 9 |
  | `NOT_APPLICABLE` | `HCJG` 4 or 5 (same / not same person) on a non-`FUZZY_CANDIDATE` task or one with no candidate `RKID` |
  | `BAD_CORRECTION` | `HCJG`=1, `GZZD` not a correctable field of the table (key, `GXSJ`); `GZZD` without `GZZ` or reverse |
  | `BAD_CORRECTION_VALUE` | `HCJG`=1 and `GZZ` does not fit the catalogue format of the field (`check_value`) |
  | `TASK_CLOSED` | the task is closed and this answer differs from the one recorded (or it was closed automatically) |
  | `CONFLICTING_ANSWERS` | one return answers a task with different `HCJG`, or gives one field of a record two values |
  | `INCOMPLETE_ANSWER` | another row of the same open task is rejected in this return (a task is answered whole) |

- `HCJG`=1 with `GZZD` and `GZZ` both empty is a valid answer ("corrected in our own system"): it closes
  the task and suppresses the state until the record next changes, exactly like `2`.
- a closed task answered again with the same `HCJG` is accepted idempotently: `repeat` = `"1"`, and
  `return_effects` ignores it. Identical duplicate rows within one return: the first counts, the
  others are accepted with `repeat` = `"1"`. Several `HCJG`=1 rows of one task correcting different
  fields are all corrections.
- an accepted correction value is stored in its canonical form (`check_value`): fixed-format values
  (dates, numbers, codes, region codes, ID numbers) NFKC-normalised with whitespace removed (`x` → `X`
  in IDs, `男`/`女` → `1`/`2`); free text (names, addresses) as typed, trimmed.

The task's own columns (`BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `RKID`, `route`) are taken from the task
register, never from the returned file.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata

import numpy as np
import pandas as pd

from catalog import TABLES
from catalog.codes import CITIZEN_ID_DOC, CODE_SETS, RESULT_CODES
from catalog.formats import field_format
from exchange.taskfile import correctable_fields, header_code
from linkage.ids import analyse_ids
from verification.tasks import task_number

# reason code → (what was wrong, what to do); an action never holds `。` (see the module docstring)
REASON_TEXTS: dict[str, tuple[str, str]] = {
    "UNKNOWN_TASK": ("任务编号不存在", "请核对任务编号(RWBH)，按下发的任务文件原样回传，不要改动前面各列"),
    "WRONG_DEPARTMENT": ("该任务不是下发给本部门的，本部门的回复无效", "请只回复下发给本部门的任务"),
    "INVALID_RESULT": ("核查结果代码无效，只能填1、2、3、4、5或9", "请从下拉列表中选择核查结果后重新回传"),
    "NOT_APPLICABLE": ("核查结果4、5只适用于“疑似同一人”任务", "请按核查情况改填1、2、3或9后重新回传"),
    "BAD_CORRECTION": ("更正字段(GZZD)或更正值(GZZ)填写有误",
                       "请填写本表可更正的字段代码（见任务文件“说明”页）和更正值后重新回传；"
                       "若已在本部门系统中更正，更正字段和更正值都留空即可"),
    "BAD_CORRECTION_VALUE": ("更正值(GZZ)不符合该字段的格式", "请核实后重新填写更正值(GZZ)再回传"),
    "TASK_CLOSED": ("该任务已销号，且本次回复与已登记的核查结果不同",
                    "如需改变核查结果，请在本部门系统中更正，下次报送的数据会重新核查"),
    "CONFLICTING_ANSWERS": ("同一任务在本次回复中有互相矛盾的多行（核查结果不同，或同一字段填了不同的更正值）",
                            "请每个任务只保留一种核查结果、每个字段只填一个更正值后重新回传"),
    "INCOMPLETE_ANSWER": ("同一任务在本次回复中另有被拒收的行，为免只处理一部分，本行也未受理",
                          "请将该任务的各行一并改正后重新回传"),
}
REJECT_REASONS: dict[str, str] = {code: f"{p}。{a}" for code, (p, a) in REASON_TEXTS.items()}
REASON_ORDER = tuple(REASON_TEXTS)
REJECTED_EXTRA = ["reason", "reason_text", "problem", "action", "task_rwbh"]

# HCJG → effect
SUPPRESSING_RESULTS = ("1", "2", "9")
CANCELLING_RESULT = "3"
DECISION_RESULTS = {"4": "SAME", "5": "NOT_SAME"}
SAME_PERSON_STATE = "FUZZY_CANDIDATE"

ANSWER_COLUMNS = ["RWBH", "HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ"]
TASK_INFO = ["BM", "BH", "YWZJ", "JS", "HCZT", "RKID", "route"]
ACCEPTED_COLUMNS = ANSWER_COLUMNS + TASK_INFO + ["_line", "repeat", "accepted_on"]

_CORRECTABLE = pd.Index([f"{t}|{f}" for t in TABLES for f in correctable_fields(t)])


# ----------------------------------------------------------------------------------------------------
# Correction values against the catalogue (spec section 1)

# Characters no field value may hold: controls (tab, CR, LF …), format characters (zero-width, bidi
# overrides), lone surrogates, line/paragraph separators. Private-use characters stay allowed: some
# departments' systems store rare characters of names there.
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_FORMULA = ("=", "+", "-", "@")
_WS = re.compile(r"[\s\u200b-\u200d\u2060\ufeff]+")
_SEX = {"1": "1", "2": "2", "0": "0", "9": "9", "男": "1", "女": "2"}
# GB 3304 民族: 01–56, 97 其他未识别民族, 98 外国血统中国籍人士
_ETHNIC = frozenset([f"{i:02d}" for i in range(1, 57)] + ["97", "98"])
# GB/T 2260 province-level prefixes of a region code
_PROVINCES = frozenset("11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
                       "61 62 63 64 65 71 81 82".split())
_ID_PROBLEMS = {
    "CHECKSUM": "不是有效的公民身份号码（校验位错误）",
    "EMPTY": "不是有效的公民身份号码",
}
# ID field → the field holding its document type ("" = a citizen ID by definition); birth date fields
ID_FIELDS: dict[str, dict[str, str]] = {n: {r.id: r.doc_type for r in t.roles} for n, t in TABLES.items()}
BIRTH_FIELDS: dict[str, frozenset] = {n: frozenset(r.birth for r in t.roles if r.birth) for n, t in TABLES.items()}


def _invisible(text: str) -> bool:
    return any(unicodedata.category(ch) in _INVISIBLE for ch in text)


def shown(value: str, limit: int = 40) -> str:
    """A value as a clerk can read it inside a message: invisible characters as [U+XXXX], long values cut."""
    s = "".join(f"[U+{ord(ch):04X}]" if unicodedata.category(ch) in _INVISIBLE else ch for ch in value)
    return s if len(s) <= limit else s[:limit] + "…"


def _real_date(text: str) -> bool:
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return text >= "19000101"


def is_citizen_doc(doc_type: str) -> bool:
    return unicodedata.normalize("NFKC", doc_type or "").strip() in ("", CITIZEN_ID_DOC)


def _canonical(value: str) -> str:
    return _WS.sub("", unicodedata.normalize("NFKC", value))


def check_value(table: str, fld: str, value: str, business_date: str, doc_type: str = "",
                id_status: str | None = None) -> tuple[str, str]:
    """A correction value (`GZZ`, trimmed) for `fld` of `table` → (canonical value, problem).

    `problem` is `""` when the value is acceptable, else what is wrong, in Chinese, to follow
    "更正值“…”". `doc_type`: the record's document type, for an ID field that has one (`ZJHM`,
    `NF_ZJHM`, `NV_ZJHM`): a citizen ID (`111` or empty) must be well formed, another document is
    only held to the field's length. Rules, in order: no invisible/control characters; not starting
    with `=`, `+`, `-`, `@` (a spreadsheet formula); then the catalogue format of the field: coded
    fields one of their codes (`XB` also `男`/`女`, `MZ` a GB 3304 code, `GJ` three letters), region
    codes (`*_XZQH`) six digits of a real province, ID fields a well-formed 18- or 15-digit citizen ID
    (GB 11643, real birth date not after the business date), `D8` a real date CCYYMMDD from 19000101
    (a birth date not after the business date), `D14` a real timestamp, `N` a plain number with at most
    the digits and decimals of its format, `Cn` exactly n characters, `C..n` at most n characters.
    `id_status`: the `analyse_ids` status of the canonical ID value, when the caller judged many at once.
    """
    if _invisible(value):
        return value, "含有换行、制表符等控制字符或不可见字符"
    canon = _canonical(value)
    if value.startswith(_FORMULA) or canon.startswith(_FORMULA):
        return value, f"以“{canon[:1]}”开头，会被表格软件当作公式，不予接收（数值不带正负号）"
    fmt = field_format(table, fld)
    codes = CODE_SETS.get(table, {}).get(fld)
    if fld == "XB":
        if canon not in _SEX:
            return value, "不是有效的性别代码，只能填1(男)、2(女)、0(未知)或9(未说明)"
        return _SEX[canon], ""
    if codes is not None:
        if canon not in codes:
            return value, f"不是该字段的有效代码，只能填{'、'.join(codes)}"
        return canon, ""
    if fld == "MZ":
        return (canon, "") if canon in _ETHNIC else (value, "不是有效的民族代码（GB 3304两位数字，如01汉族）")
    if fld == "GJ":
        canon = canon.upper()
        ok = len(canon) == 3 and canon.isascii() and canon.isalpha()
        return (canon, "") if ok else (value, "不是有效的国籍代码（ISO 3166三位字母，如CHN）")
    if fld.endswith("_XZQH"):
        ok = re.fullmatch(r"[0-9]{6}", canon) is not None and canon[:2] in _PROVINCES
        return (canon, "") if ok else (value, "不是有效的行政区划代码（GB/T 2260六位数字，如320102）")
    if fld in ID_FIELDS.get(table, {}):
        if not is_citizen_doc(doc_type):  # a passport or permit number: its length only
            return (canon, "") if len(canon) <= fmt.length else (value, f"超过{fmt.length}个字符")
        canon = canon.upper()
        status = id_status if id_status is not None else (
            analyse_ids(pd.Series([canon], dtype=object), business_date)["id_status"].iloc[0])
        if status in ("VALID18", "VALID15"):
            return canon, ""
        return value, _ID_PROBLEMS.get(status, "不是有效的公民身份号码（应为18位，或15位旧号码，出生日期须真实）")
    if fmt.kind == "D":
        if fmt.length == 14:
            ok = re.fullmatch(r"[0-9]{14}", canon) is not None and _real_date(canon) and (
                canon[8:10] < "24" and canon[10:12] < "60" and canon[12:14] < "60")
            return (canon, "") if ok else (value, "不是有效的时间（应为14位数字CCYYMMDDhhmmss）")
        if re.fullmatch(r"[0-9]{8}", canon) is None or not _real_date(canon):
            return value, "不是有效的日期(CCYYMMDD)，应为8位数字的真实日期，如19850302"
        if fld in BIRTH_FIELDS.get(table, ()) and canon > str(business_date):
            return value, f"晚于业务日期{business_date}，不是可能的出生日期"
        return canon, ""
    if fmt.kind == "N":
        m = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?", canon)
        whole = fmt.length - fmt.decimals
        if m is None or len(m.group(1).lstrip("0") or "0") > whole or len(m.group(2) or "") > fmt.decimals:
            decimals = f"、最多{fmt.decimals}位小数" if fmt.decimals else "、不带小数"
            return value, f"不是有效的数值（最多{whole}位整数{decimals}）"
        return canon, ""
    if not fmt.up_to:
        return (canon, "") if len(canon) == fmt.length else (value, f"应为{fmt.length}个字符（现有{len(canon)}个）")
    if len(value) > fmt.length:
        return value, f"超过{fmt.length}个字符（现有{len(value)}个）"
    return value, ""


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


def _doc_types(a: pd.DataFrame, rows: pd.Index, sources: dict[str, pd.DataFrame] | None) -> pd.Series:
    """The document type that goes with the ID field each row corrects: a valid correction of the
    type field in the same return for the same record, else the record's current value, else ""."""
    out = pd.Series("", index=rows, dtype=object)
    for (bh, fld), part in a.loc[rows].groupby(["BH", "GZZD"]):
        doc_field = ID_FIELDS.get(bh, {}).get(fld, "")
        if not doc_field:
            continue
        src = (sources or {}).get(bh)
        if src is not None and len(src) and doc_field in src.columns:
            live = src[src["_deleted"] != "1"] if "_deleted" in src.columns else src
            current = live.drop_duplicates("_key", keep="last").set_index("_key")[doc_field].astype(str)
            out[part.index] = part["YWZJ"].map(current).fillna("").to_numpy()
        same = a[(a["HCJG"] == "1") & (a["BH"] == bh) & (a["GZZD"] == doc_field) & a["_value_ok"]]
        if len(same):
            told = same.drop_duplicates("YWZJ", keep="last").set_index("YWZJ")["GZZ"]
            hit = part["YWZJ"].isin(told.index)
            out[part.index[hit]] = part.loc[hit, "YWZJ"].map(told).to_numpy()
    return out


def validate_returns(ret: pd.DataFrame, tasks: pd.DataFrame, dept: str, business_date: str,
                     sources: dict[str, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a returned task file (`read_return` frame) into accepted answers and rejected rows.

    `tasks`: the task register (at least `RWBH`, `BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `RKID`; `route`
    (else `BM`), `status` (`open`/`closed`, else open), `close_reason`, `closed_date` and `HCJG`
    (the recorded answer) when known). `dept`: the department that delivered the return.
    `sources`: the department tables (source frames) as of today, for the document type of the record
    whose ID number is corrected (without them a corrected ID number must be a citizen ID).

    Returns `accepted` (`ACCEPTED_COLUMNS`: normalised answer (`GZZ` canonical), the task's columns from
    the register, `_line`, `repeat`, `accepted_on` = business date) and `rejected` (the returned row
    as read, plus `reason` codes, `reason_text`, `problem`, `action` and `task_rwbh`, the normalised
    task number). See the module docstring for the rules.
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
    problems = {r: pd.Series(REASON_TEXTS[r][0], index=a.index, dtype=object) for r in REASON_ORDER}
    flags: dict[str, pd.Series] = {}
    flags["UNKNOWN_TASK"] = ~known
    flags["WRONG_DEPARTMENT"] = known & (a["route"] != dept)
    flags["INVALID_RESULT"] = ~code.isin(list(RESULT_CODES))
    flags["NOT_APPLICABLE"] = known & code.isin(list(DECISION_RESULTS)) & (
        (a["HCZT"] != SAME_PERSON_STATE) | (a["RKID"] == ""))

    # corrections: both empty is a valid answer 1; the field must be correctable, and the value fit it
    fixing = known & (code == "1")
    has_field, has_value = a["GZZD"] != "", a["GZZ"] != ""
    correctable = (a["BH"] + "|" + a["GZZD"]).isin(_CORRECTABLE)
    bad_corr = fixing & ((has_field & ~correctable) | (has_field & ~has_value) | (~has_field & has_value))
    flags["BAD_CORRECTION"] = bad_corr
    for i in a.index[bad_corr]:
        bh, fld = a.at[i, "BH"], a.at[i, "GZZD"]
        t = TABLES.get(bh)
        if has_field[i] and not correctable[i]:
            if t is not None and fld in t.fields:
                what = "业务主键" if fld == t.key else "更新时间"
                problems["BAD_CORRECTION"][i] = f"更正字段“{fld}”是{t.title}({bh})的{what}，不能通过回填更正"
            else:
                title = f"{t.title}({bh})" if t is not None else "本表"
                problems["BAD_CORRECTION"][i] = f"更正字段“{shown(fld)}”不是{title}的字段"
        elif has_field[i]:
            problems["BAD_CORRECTION"][i] = f"填写了更正字段“{fld}”但没有填写更正值(GZZ)"
        else:
            problems["BAD_CORRECTION"][i] = f"填写了更正值“{shown(a.at[i, 'GZZ'])}”但没有填写更正字段(GZZD)"

    checked = a.index[fixing & has_field & has_value & correctable]
    a["_value_ok"] = False
    bad_value = pd.Series(False, index=a.index)
    ids = pd.Series([f in ID_FIELDS.get(b, {}) for b, f in zip(a["BH"], a["GZZD"])], index=a.index, dtype=bool)
    id_rows = checked[ids[checked]]
    id_values = pd.Series(a.loc[id_rows, "GZZ"].map(_canonical).str.upper().unique(), dtype=object)
    id_status = dict(zip(id_values, analyse_ids(id_values, str(business_date))["id_status"])) if len(id_values) else {}
    for rows in (checked[~ids[checked]], id_rows):  # the document types before the ID numbers
        if not len(rows):
            continue
        docs = _doc_types(a, rows, sources)
        part = a.loc[rows, ["BH", "GZZD", "GZZ"]]
        values, oks = [], []
        for i, bh, fld, typed, doc in zip(rows, part["BH"], part["GZZD"], part["GZZ"], docs.reindex(rows).fillna("")):
            value, problem = check_value(bh, fld, typed, str(business_date), doc,
                                         id_status.get(_canonical(typed).upper()))
            if problem:
                problems["BAD_CORRECTION_VALUE"][i] = f"更正值“{shown(typed)}”{problem}"
            values.append(typed if problem else value)
            oks.append(not problem)
        a.loc[rows, "GZZ"] = values
        a.loc[rows, "_value_ok"] = oks
        bad_value[rows] = [not ok for ok in oks]
    flags["BAD_CORRECTION_VALUE"] = bad_value

    closed = known & (info["status"].fillna("") == "closed")
    same_answer = closed & (info["close_reason"].fillna("") == "RETURN") & (info["HCJG"].fillna("") == code)
    flags["TASK_CLOSED"] = closed & ~same_answer
    auto = info["close_reason"].fillna("") == "AUTO"
    problems["TASK_CLOSED"] = problems["TASK_CLOSED"].where(
        ~auto, "该任务已于" + info["closed_date"].fillna("") + "自动销号（问题已不存在）")

    # one return answering one task more than once, or correcting one field of a record twice
    ok_so_far = ~pd.concat(flags, axis=1).any(axis=1)
    b = a[ok_so_far]
    n_results = b.groupby("RWBH")["HCJG"].transform("nunique")
    corr = b[(b["HCJG"] == "1") & (b["GZZD"] != "")]
    n_values = corr.groupby(["BH", "YWZJ", "GZZD"])["GZZ"].transform("nunique").reindex(b.index).fillna(1)
    conflict = pd.Series(False, index=a.index)
    conflict[b.index] = (n_results > 1) | (n_values > 1)
    flags["CONFLICTING_ANSWERS"] = conflict
    # a task is answered whole or not at all: rows of an open task beside a rejected row are held back
    flagged = pd.concat(flags, axis=1).any(axis=1)
    spoiled = a.loc[flagged & known & ~closed, "RWBH"]
    flags["INCOMPLETE_ANSWER"] = ~flagged & known & ~closed & a["RWBH"].isin(spoiled)

    fl = pd.concat(flags, axis=1)[list(REASON_ORDER)]
    bad = fl.any(axis=1)
    reason = pd.Series("", index=a.index, dtype=object)
    problem = pd.Series("", index=a.index, dtype=object)
    action = pd.Series("", index=a.index, dtype=object)
    actions = {r: pd.Series(REASON_TEXTS[r][1], index=a.index, dtype=object) for r in REASON_ORDER}
    actions["TASK_CLOSED"] = actions["TASK_CLOSED"].where(~auto, "无需再回复")
    for r in REASON_ORDER:  # every reason has its own action, so none repeats within a row
        hit = fl[r]
        sep = np.where(reason[hit] != "", "；", "")
        reason[hit] = reason[hit] + np.where(reason[hit] != "", ";", "") + r
        problem[hit] = problem[hit] + sep + problems[r][hit]
        action[hit] = action[hit] + sep + actions[r][hit]

    rejected = ret[bad].copy()
    rejected["reason"] = reason[bad]
    rejected["reason_text"] = problem[bad] + "。" + action[bad]
    rejected["problem"] = problem[bad]
    rejected["action"] = action[bad]
    rejected["task_rwbh"] = a.loc[bad, "RWBH"]

    acc = a[~bad].copy()
    dup = acc.duplicated(["RWBH", "HCJG", "GZZD", "GZZ"], keep="first")
    acc["repeat"] = np.where(same_answer[~bad] | dup, "1", "0")
    acc["accepted_on"] = str(business_date)
    return acc[ACCEPTED_COLUMNS].reset_index(drop=True), rejected.reset_index(drop=True)


def _frame(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return rows.reindex(columns=columns).fillna("").astype(str).reset_index(drop=True)


def return_effects(accepted: pd.DataFrame, tasks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What the accepted answers do to the base (spec section 5). Repeats (`repeat`="1") do nothing.

    - `corrections` (`HCJG`=1 with a field; one per record and field, the last):
      `BM`, `BH`, `YWZJ`, `JS`, `HCZT`, `field`, `value`, `RWBH`, `HCR`, `HCRQ`
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

    corr = live[(code == "1") & (live["GZZD"] != "")].rename(columns={"GZZD": "field", "GZZ": "value"})
    corr = corr.drop_duplicates(["BM", "BH", "YWZJ", "field"], keep="last")  # a field belongs to the record
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


__all__ = ["task_number", "validate_returns", "return_effects", "normalise_result", "check_value", "REJECT_REASONS",
           "REASON_TEXTS", "ACCEPTED_COLUMNS"]
