"""Pending-verification states (待核查状态, spec section 4), evaluated on the current data.

`evaluate_states(roles, links, sources, business_date)` returns the States frame
(docs/architecture.md): one row per (record role, state) with the department the task goes to
(`route`), the person (`RKID`), a sentence for the clerk (`WTMS`) and the conflicting values with
their sources and the suggested correction when one is known (`DBXX`).

Every rule is a vectorised pandas expression over the whole Roles frame (masks, merges, groupbys);
sentences are built by Series string concatenation. The choices made where the spec is silent are
written down in docs/states.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from catalog import TABLES
from catalog.states import STATE_COLUMNS, STATE_NAMES, STATE_ORDER, STATE_ROUTES, STATE_WHEN, STATES  # noqa: F401 - re-exported
from linkage.base import role_keys
from linkage.bins import components, pack
from linkage.explain import basis_zh, decode
from linkage.ids import check_digit, normalise_id_text
from linkage.normalise import normalise_date
from linkage.roles import ROLE_COLUMNS

KEYS = ["BM", "BH", "YWZJ", "JS"]
POLICE_TABLES = ("hukou", "temp")
_UNUSED_ROLE_COLUMNS = ("MZ", "region")  # role columns no rule reads: `_Ctx` does not copy them

SEX_NAMES = {"1": "男", "2": "女", "0": "未知", "9": "未说明"}
ROLE_LABELS = {"SELF": "", "NF": "男方", "NV": "女方", "ZF": "丈夫"}
REF_LABELS = {"hukou": "公安户籍", "temp": "公安暂住"}
EMPTY = "(空)"

# Legal marriage age (婚姻法/民法典 第1047条) and the family-planning age band, in completed years.
MARRIAGE_AGE = {"NF": 22, "NV": 20}
WOMEN_AGE = (15, 49)


# ------------------------------------------------------------------------------------------ helpers
def _s(x, index=None) -> pd.Series:
    if isinstance(x, pd.Series):
        return x.fillna("").astype(str)
    return pd.Series(x, index=index, dtype=object)


def _show(s: pd.Series) -> pd.Series:
    """Value as shown to the clerk: `(空)` for empty."""
    s = s.fillna("").astype(str)
    return s.where(s != "", EMPTY)


def _age(birth: pd.Series, on: pd.Series | str) -> pd.Series:
    """Completed years from normalised CCYYMMDD `birth` to CCYYMMDD `on`; NaN where either is unknown.

    A birthday is reached on its month-day (born 29 February: on 1 March in common years).
    """
    b = pd.to_numeric(birth.where(birth.str.len() == 8), errors="coerce")
    o = on if isinstance(on, pd.Series) else pd.Series(on, index=birth.index)
    o = pd.to_numeric(o.where(o.str.len() == 8), errors="coerce")
    years = o // 10000 - b // 10000
    return years - ((o % 10000) < (b % 10000)).astype(float)


def _first_per_person(frame: pd.DataFrame, order: list[str], ascending: list[bool]) -> pd.DataFrame:
    """One row per RKID: the first in `order`. Most persons have one row, so only the rest are sorted."""
    several = frame["RKID"].duplicated(keep=False)
    if not several.any():
        return frame
    multi = frame[several].sort_values(["RKID"] + order, ascending=[True] + ascending)
    return pd.concat([frame[~several], multi.drop_duplicates("RKID")])


def _names_differ(a: pd.Series, b: pd.Series) -> pd.Series:
    """Names differ after normalisation: `name_key`s (NFKC, dots, t2s) unequal even with every space
    removed (`name_key` keeps single spaces inside Latin names). Aligned Series in, bool Series out."""
    out = (a != b).to_numpy(dtype=bool)
    if out.any():
        squeeze = [pd.Series(x.to_numpy()[out], dtype=object).str.replace(" ", "", regex=False).to_numpy() for x in (a, b)]
        out[out] = squeeze[0] != squeeze[1]
    return pd.Series(out, index=a.index)


def _join_nonempty(parts: list[pd.Series], sep: str) -> pd.Series:
    """Element-wise join of aligned string Series, skipping empty values."""
    out = parts[0]
    for part in parts[1:]:
        out = out + np.where((out != "") & (part != ""), sep, "") + part
    return out


def _record_label(r: pd.DataFrame) -> pd.Series:
    """`户籍人口 RYBH=R1` — where a record is, for a clerk of any department."""
    title = r["BH"].map({k: t.title for k, t in TABLES.items()}).fillna(r["BH"])
    key = r["BH"].map({k: t.key for k, t in TABLES.items()}).fillna("")
    role = r["JS"].map(ROLE_LABELS).fillna("")
    return title + " " + key + "=" + r["YWZJ"] + np.where(role != "", "(" + role + ")", "")


def _field_map() -> pd.DataFrame:
    """Per (BH, JS): the field codes holding the role's name, ID, sex and birth date."""
    rows = [
        {"BH": t.name, "JS": role.code, "f_name": role.name, "f_id": role.id, "f_sex": role.sex,
         "f_birth": role.birth, "id_required": t.id_required}
        for t in TABLES.values() for role in t.roles
    ]
    return pd.DataFrame(rows)


def _source_fields(sources: dict[str, pd.DataFrame], table: str, fields: list[str]) -> pd.DataFrame:
    """Live rows of a source table indexed by record key, the requested fields as strings."""
    src = sources.get(table) if sources else None
    tbl = TABLES[table]
    if src is None or src.empty:
        return pd.DataFrame(columns=fields, index=pd.Index([], name="YWZJ"), dtype=object)
    if "_deleted" in src.columns:
        src = src[src["_deleted"].astype(str) != "1"]
    key = src["_key"] if "_key" in src.columns else src[tbl.key]
    out = pd.DataFrame({f: (src[f] if f in src.columns else "") for f in fields}, index=src.index)
    out = out.fillna("").astype(str)
    out.index = pd.Index(key.fillna("").astype(str).to_numpy(), name="YWZJ")
    return out[~out.index.duplicated(keep="last")]


def _lookup(r: pd.DataFrame, sources, table: str, fields: list[str]) -> pd.DataFrame:
    """Source fields for the rows of `r` (same index), `""` where not found."""
    src = _source_fields(sources, table, fields)
    return src.reindex(r["YWZJ"].to_numpy()).fillna("").set_axis(r.index)


def state_id_keys(roles: pd.DataFrame) -> np.ndarray:
    """The number by which the rules find who else holds a role's ID ("" for none): citizen IDs, well
    formed or one check digit off, never an Excel-damaged one (many different people share
    "3.20102E+17" or a "…000" tail)."""
    usable = roles["id_status"].isin(["VALID18", "VALID15", "CHECKSUM"]) & (roles["id_damage"] == "")
    return np.where(usable, np.where(roles["id18"] != "", roles["id18"], roles["id_norm"]), "").astype(object)


def date_sensitive(roles: pd.DataFrame, sources: dict[str, pd.DataFrame], business_date: str,
                   since: str) -> np.ndarray:
    """Roles whose states or their wording can change from `since` to `business_date` with no change
    to any record: the rules that read the business date. A rule reading it must be listed here, or
    re-checking only what changed (exchange.process) misses it.

    ID_FORMAT (a birth date after the business date is named with the date), LOGIC_ERROR of a woman
    outside 15-49 on either date (the wording names the date), and marriages registered after `since`
    (MARITAL_CONFLICT counts those up to the business date).
    """
    r = roles
    out = (r["id_status"] == "FORMAT").to_numpy(dtype=bool)
    w = ((r["BH"] == "women") & (r["JS"] == "SELF")).to_numpy(dtype=bool)
    if w.any():
        sub = r[w]
        born = sub["birth"].where(sub["birth"] != "", sub["id_birth"]).fillna("").astype(str)
        lo, hi = WOMEN_AGE
        outside = np.zeros(len(sub), dtype=bool)
        for d in (business_date, since):
            age = _age(born, str(d))
            outside |= (age.notna() & ((age < lo) | (age > hi))).to_numpy(dtype=bool)
        out[np.flatnonzero(w)[outside]] = True
    m = (r["BH"] == "marriage").to_numpy(dtype=bool)
    if m.any():
        djrq = normalise_date(_lookup(r[m], sources, "marriage", ["DJRQ"])["DJRQ"]).fillna("").astype(str)
        out[np.flatnonzero(m)[(djrq > str(since)).to_numpy(dtype=bool)]] = True
    return out


# ------------------------------------------------------------------------------------------ context
class _Ctx:
    """The roles with everything the rules share: link, field codes, comparison IDs, references."""

    def __init__(self, roles: pd.DataFrame, links: pd.DataFrame, sources, business_date: str):
        self.bd = str(business_date)
        self.sources = sources or {}
        n = len(roles)
        r = pd.DataFrame({c: roles[c].to_numpy() if c in roles.columns else np.full(n, True if c == "active" else "")
                          for c in ROLE_COLUMNS if c not in _UNUSED_ROLE_COLUMNS})
        for c in r.columns:
            if c != "active" and r[c].hasnans:
                r[c] = r[c].fillna("")
        r["active"] = r["active"].astype(bool)
        # a husband role exists only when its name or ID is filled
        zf = r["JS"] == "ZF"
        if zf.any():
            r = r[~(zf & (r["XM"].str.strip() == "") & (r["GMSFHM"].str.strip() == ""))]
        # the role's link, and the field codes of its name, ID, sex and birth date
        role_key = r["BM"] + "|" + r["BH"] + "|" + r["YWZJ"] + "|" + r["JS"]
        lk = links.reindex(columns=KEYS + ["RKID", "PPFS", "PPDF", "PPMX"]).astype({k: object for k in KEYS})
        lk.index = lk["BM"] + "|" + lk["BH"] + "|" + lk["YWZJ"] + "|" + lk["JS"]
        lk = lk[~lk.index.duplicated(keep="last")].reindex(role_key.to_numpy())
        r["RKID"] = lk["RKID"].fillna("").astype(str).to_numpy()
        r["PPFS"] = lk["PPFS"].fillna("").astype(str).to_numpy()
        r["PPDF"] = pd.to_numeric(lk["PPDF"], errors="coerce").to_numpy()
        r["PPMX"] = lk["PPMX"].fillna("").astype(str).to_numpy()
        fm = _field_map()
        fm = fm.set_index(fm["BH"] + "|" + fm["JS"]).reindex((r["BH"] + "|" + r["JS"]).to_numpy())
        for c in ("f_name", "f_id", "f_sex", "f_birth"):
            r[c] = fm[c].fillna("").to_numpy()
        r["id_required"] = fm["id_required"].fillna(True).astype(bool).to_numpy()
        # IDs for comparison: the 18-digit form when well formed; other documents by type and number
        other = r["id_status"] == "OTHER_DOC"
        r["id_cmp"] = np.where(r["id18"] != "", r["id18"],
                               np.where(other & (r["id_norm"] != ""), "D" + r["ZJLX"] + ":" + r["id_norm"], r["id_norm"]))
        r["id_key"] = state_id_keys(r)
        r["label"] = _record_label(r)
        r["police"] = r["BH"].isin(POLICE_TABLES)
        self.r = r
        self.ref = self._references()

    def _references(self) -> pd.DataFrame:
        """The police reference record of every person: hukou (active first), else temp (active first)."""
        r = self.r
        pol = r[r["police"] & (r["RKID"] != "")].copy()
        pol["_rank"] = (pol["BH"] == "temp").astype(int) * 2 + (~pol["active"]).astype(int)
        ref = _first_per_person(pol, ["_rank", "_ts", "YWZJ"], [True, False, True])
        cols = {"BH": "ref_BH", "YWZJ": "ref_YWZJ", "XM": "ref_XM", "name_key": "ref_name_key",
                "GMSFHM": "ref_GMSFHM", "id_cmp": "ref_id_cmp", "id18": "ref_id18", "birth": "ref_birth",
                "CSRQ": "ref_CSRQ", "sex": "ref_sex", "label": "ref_label"}
        return ref[["RKID"] + list(cols)].rename(columns=cols).set_index("RKID")

    def with_ref(self, rows: pd.DataFrame) -> pd.DataFrame:
        """`rows` plus the reference columns of their person (`""` where the person has none)."""
        out = rows.join(self.ref, on="RKID")
        for c in self.ref.columns:
            out[c] = out[c].fillna("")
        return out

    def persons(self, mask: pd.Series) -> pd.Index:
        """RKIDs of the persons having at least one role where `mask` holds."""
        return pd.Index(self.r.loc[mask & (self.r["RKID"] != ""), "RKID"].unique())


_NONE = pd.DataFrame({c: pd.Series(dtype=object) for c in STATE_COLUMNS})  # a rule that found nothing


def _emit(rows: pd.DataFrame, code: str, wtms, dbxx, route=None) -> pd.DataFrame:
    out = rows[KEYS + ["RKID"]].copy()
    out["HCZT"] = code
    out["WTMS"] = _s(wtms, rows.index)
    out["DBXX"] = _s(dbxx, rows.index)
    if route is None:
        route = STATE_ROUTES[code]
    out["route"] = rows["BM"] if route in ("source", "holder") else _s(route, rows.index)
    return out


def _suggest_from_ref(rows: pd.DataFrame, what: str, value: pd.Series) -> pd.Series:
    """`; 公安户籍姓名:陈小明` where the person's police reference knows the value, else ``."""
    has = (value != "") & (rows["ref_BH"] != "")
    return pd.Series(np.where(has, "; " + rows["ref_BH"].map(REF_LABELS).fillna("") + what + ":" + value, ""),
                     index=rows.index)


# ------------------------------------------------------------------------------------------ rules
def _missing(c: _Ctx) -> pd.DataFrame:
    r = c.r
    no_name = r["name"] == ""
    no_id = (r["id_norm"] == "") & r["id_required"]
    if not (no_name | no_id).any():
        return _NONE
    rows = c.with_ref(r[no_name | no_id])
    nn, ni = no_name[rows.index], no_id[rows.index]
    what = np.where(nn & ni, "姓名和身份证号码", np.where(nn, "姓名", "身份证号码"))
    wtms = "该记录" + pd.Series(what, index=rows.index) + "为空，请补录。"
    parts = [
        np.where(nn, "本表姓名(" + rows["f_name"] + "):" + EMPTY, "本表姓名:" + rows["XM"]),
        np.where(ni, "; 本表身份证号码(" + rows["f_id"] + "):" + EMPTY,
                 np.where(rows["id_norm"] != "", "; 本表身份证号码:" + rows["GMSFHM"], "")),
    ]
    dbxx = pd.Series(parts[0], index=rows.index) + parts[1]
    dbxx += np.where(nn, _suggest_from_ref(rows, "姓名", rows["ref_XM"]), "")
    dbxx += np.where(ni, _suggest_from_ref(rows, "身份证号码", rows["ref_id18"]), "")
    return _emit(rows, "MISSING", wtms, dbxx)


def _format_detail(rows: pd.DataFrame, bd: str) -> pd.Series:
    """Why an ID is FORMAT, in words."""
    n = rows["id_norm"]
    length = n.str.len()
    digits17 = n.str.fullmatch(r"\d{17}[\dX]")
    digits15 = n.str.fullmatch(r"\d{15}")
    birth = pd.Series(np.where(length == 18, n.str[6:14], "19" + n.str[6:12]), index=rows.index)
    real = pd.to_datetime(birth, format="%Y%m%d", errors="coerce").notna()
    date_why = np.where(~real, "号码中的出生日期" + birth + "不存在",
                        np.where(birth < "19000101", "号码中的出生日期" + birth + "早于1900年",
                                 "号码中的出生日期" + birth + "晚于业务日期" + bd))
    kind_ok = ((length == 18) & digits17) | ((length == 15) & digits15)
    detail = np.where(
        rows["id_damage"] == "EXCEL_SCI", "号码疑似被Excel转成了数字(科学计数法或带小数)，后几位已丢失",
        np.where(~length.isin([15, 18]), "号码为" + length.astype(str) + "位，应为18位",
                 np.where(~kind_ok, "号码含有不应出现的字符(只允许数字，18位号码末位可为X)", date_why)))
    return pd.Series(detail, index=rows.index)


def _id_format(c: _Ctx) -> pd.DataFrame:
    hit = c.r["id_status"] == "FORMAT"
    if not hit.any():
        return _NONE
    rows = c.with_ref(c.r[hit])
    detail = _format_detail(rows, c.bd)
    wtms = "该人员身份证号码格式错误（" + detail + "），请核对证件原件后更正。"
    dbxx = ("本表身份证号码(" + rows["f_id"] + "):" + rows["GMSFHM"] + "; 问题:" + detail
            + np.where(rows["id_prefix"] != "", "; 可确定的前几位:" + rows["id_prefix"], "")
            + _suggest_from_ref(rows, "身份证号码", rows["ref_id18"]))
    return _emit(rows, "ID_FORMAT", wtms, dbxx)


def _id_checksum(c: _Ctx) -> pd.DataFrame:
    hit = c.r["id_status"] == "CHECKSUM"
    if not hit.any():
        return _NONE
    rows = c.with_ref(c.r[hit])
    body = rows["id_norm"].str[:17]
    right = check_digit(body)
    excel = rows["id_damage"] == "EXCEL_000"
    wtms = pd.Series(np.where(excel, "该人员身份证号码末三位疑似被Excel改成了000，校验位错误，请核对证件原件后更正。",
                              "该人员身份证号码校验位错误，请核对证件原件后更正。"), index=rows.index)
    dbxx = ("本表身份证号码(" + rows["f_id"] + "):" + rows["GMSFHM"] + "; 第18位校验码为" + rows["id_norm"].str[17]
            + "，按GB 11643-1999由前17位计算应为" + right
            + np.where(excel, "; 末三位疑似被Excel截断，请按证件原件补全",
                       "; 若前17位无误，建议更正为:" + body + right)
            + _suggest_from_ref(rows, "身份证号码", rows["ref_id18"]))
    return _emit(rows, "ID_CHECKSUM", wtms, dbxx)


def _id_15(c: _Ctx) -> pd.DataFrame:
    rows = c.r[c.r["id_status"] == "VALID15"]
    if rows.empty:
        return _NONE
    wtms = "该人员仍使用15位旧身份证号码，请核对后更正为18位号码。"
    dbxx = "本表身份证号码(" + rows["f_id"] + "):" + rows["GMSFHM"] + "; 建议升位为18位:" + rows["id18"]
    return _emit(rows, "ID_15", wtms, dbxx)


def _id_mismatch(c: _Ctx) -> pd.DataFrame:
    r = c.r
    pol = r.loc[r["police"] & (r["id_key"] != ""), ["id_key", "name_key", "birth", "id_birth", "XM", "CSRQ", "label",
                                                      "active", "_ts"]]
    # a police record's birth date: its own, else the one in its ID
    pol = pol.assign(birth=pol["birth"].where(pol["birth"] != "", pol["id_birth"]))
    # both the name and the birth date must be known to differ
    cand = r[~r["police"] & (r["JS"] != "ZF") & (r["id_key"] != "") & (r["name_key"] != "") & (r["birth"] != "")]
    cand = cand[cand["id_key"].isin(pol["id_key"])]
    if cand.empty:
        return _NONE
    pairs = cand[["id_key", "name_key", "birth"]].reset_index().merge(pol, on="id_key", suffixes=("", "_p"))
    same = ~_names_differ(pairs["name_key"], pairs["name_key_p"]) | (pairs["birth"] == pairs["birth_p"])
    matched = same.groupby(pairs["index"]).any()
    rows = cand.loc[matched.index[~matched]]
    # the police record shown: active first, then latest
    shown = pairs[pairs["index"].isin(rows.index)].sort_values(["index", "active", "_ts"], ascending=[True, False, False])
    count = shown.groupby("index").size()
    shown = shown.drop_duplicates("index").set_index("index").reindex(rows.index)
    more = count.reindex(rows.index).fillna(1).astype(int)
    wtms = "该身份证号码在公安登记为另一人（姓名、出生日期均不同），请核对证件原件后更正号码或姓名。"
    dbxx = ("本表姓名:" + rows["XM"] + "，出生日期:" + _show(rows["CSRQ"]) + "，身份证号码:" + rows["GMSFHM"]
            + "; 公安登记该号码为:" + shown["XM"].fillna("") + "，出生日期:" + _show(shown["CSRQ"].fillna(""))
            + "（" + shown["label"].fillna("") + "）"
            + np.where(more > 1, "等" + more.astype(str) + "条公安记录", ""))
    return _emit(rows, "ID_MISMATCH", wtms, dbxx)


def _dup_id(c: _Ctx) -> pd.DataFrame:
    r = c.r
    pol = r[r["police"] & r["active"] & (r["id_key"] != "") & (r["RKID"] != "")]
    pol = pol[pol["id_key"].duplicated(keep=False)]
    persons = pol.groupby("id_key")["RKID"].nunique()
    rows = pol[pol["id_key"].map(persons) > 1]
    if rows.empty:
        return _NONE
    desc = rows["label"] + " " + rows["XM"] + " " + _show(rows["CSRQ"])
    listing = desc.groupby(rows["id_key"]).agg(lambda s: "; ".join(s.head(10)))
    npers = rows["id_key"].map(persons).astype(str)
    wtms = "该身份证号码同时被" + npers + "个不同人员的有效公安记录使用（重号），请核实后为错误的一方更正号码。"
    dbxx = "号码:" + rows["id_key"] + "; 使用该号码的有效记录: " + rows["id_key"].map(listing)
    return _emit(rows, "DUP_ID", wtms, dbxx)


def _dup_record(c: _Ctx) -> pd.DataFrame:
    r = c.r
    cand = r[r["active"] & (r["JS"] == "SELF") & (r["BH"] != "marriage") & (r["RKID"] != "")]
    rows = cand[(cand["BH"] + "|" + cand["RKID"]).duplicated(keep=False)]
    if rows.empty:
        return _NONE
    grp = [rows["BH"], rows["RKID"]]
    listing = rows["YWZJ"] + " " + _show(rows["XM"]) + np.where(rows["address"] != "", " " + rows["address"], "")
    listing = listing.groupby(grp).transform(lambda s: "、".join(s.head(10)))
    n = rows.groupby(["BH", "RKID"])["YWZJ"].transform("size").astype(str)
    key = rows["BH"].map({k: t.key for k, t in TABLES.items()})
    what = np.where(rows["BH"] == "hukou", "条正常户籍记录（一人多户）", "条有效记录（重复登记）")
    wtms = "同一人员在本表有" + n + pd.Series(what, index=rows.index) + "，请核实后注销多余的记录。"
    dbxx = "本人(人口编号" + rows["RKID"] + ")在本表的有效记录 " + key + ": " + listing
    return _emit(rows, "DUP_RECORD", wtms, dbxx)


def _name_diff(c: _Ctx) -> pd.DataFrame:
    r = c.r[(c.r["RKID"] != "") & (c.r["id_cmp"] != "") & (c.r["name_key"] != "")]
    ref = c.ref[["ref_BH", "ref_YWZJ", "ref_id_cmp", "ref_name_key"]].reindex(r["RKID"].to_numpy()).fillna("")
    ref.index = r.index
    is_ref = (r["BH"] == ref["ref_BH"]) & (r["YWZJ"] == ref["ref_YWZJ"])
    hit = (~is_ref & (ref["ref_BH"] != "") & (r["id_cmp"] == ref["ref_id_cmp"])
           & (ref["ref_name_key"] != "") & _names_differ(r["name_key"], ref["ref_name_key"]))
    if not hit.any():
        return _NONE
    rows = c.with_ref(r[hit])
    src = rows["ref_BH"].map(REF_LABELS)
    wtms = "该人员姓名与" + src + "登记的姓名不一致，请核对证件原件后更正。"
    dbxx = ("本表姓名:" + rows["XM"] + "; " + src + "姓名:" + rows["ref_XM"]
            + "（" + rows["ref_label"] + "）; 建议更正 " + rows["f_name"] + "=" + rows["ref_XM"])
    return _emit(rows, "NAME_DIFF", wtms, dbxx)


def _sex_conflict(c: _Ctx) -> pd.DataFrame:
    r = c.r
    rows = r[(r["id_sex"] != "") & r["sex"].isin(["1", "2"]) & (r["sex"] != r["id_sex"])]
    if rows.empty:
        return _NONE
    wtms = "该人员性别与身份证号码不符，请核对证件原件后更正。"
    dbxx = ("本表性别(" + rows["f_sex"] + "):" + rows["XB"] + "(" + rows["sex"].map(SEX_NAMES) + ")"
            + "; 身份证号码" + rows["id18"] + "第17位表示:" + rows["id_sex"].map(SEX_NAMES)
            + "; 若号码无误，建议更正 " + rows["f_sex"] + "=" + rows["id_sex"])
    return _emit(rows, "SEX_CONFLICT", wtms, dbxx)


def _birth_conflict(c: _Ctx) -> pd.DataFrame:
    r = c.r
    rows = r[(r["id_birth"] != "") & (r["birth"] != "") & (r["birth"] != r["id_birth"])]
    if rows.empty:
        return _NONE
    wtms = "该人员出生日期与身份证号码不符，请核对证件原件后更正。"
    dbxx = ("本表出生日期(" + rows["f_birth"] + "):" + rows["CSRQ"]
            + np.where(rows["CSRQ"] != rows["birth"], "(即" + rows["birth"] + ")", "")
            + "; 身份证号码" + rows["id18"] + "中的出生日期:" + rows["id_birth"]
            + "; 若号码无误，建议更正 " + rows["f_birth"] + "=" + rows["id_birth"])
    return _emit(rows, "BIRTH_CONFLICT", wtms, dbxx)


_DEATH_WHAT = {
    "temp": "暂住登记仍有效，请核实后注销暂住登记。",
    "dibao": "仍在享受低保，请核实后停保。",
    "disabled": "残疾人证仍有效，请核实后注销残疾人证。",
    "women": "仍在育龄妇女名册中，请核实后移出。",
    "resident": "社区采集仍显示在住，请核实居住情况。",
}


def _death_active(c: _Ctx) -> pd.DataFrame:
    r = c.r
    dead_rows = r[(r["BH"] == "hukou") & (r["ZT"] == "3") & (r["RKID"] != "")]
    dead = _first_per_person(dead_rows, ["_ts", "YWZJ"], [False, True])
    holding = (
        ((r["BH"].isin(["temp", "dibao", "disabled"])) & r["active"])
        | ((r["BH"] == "women") & (r["JS"] == "SELF"))
        | ((r["BH"] == "resident") & (r["ZT"] == "1"))
    )
    rows = r[holding & r["RKID"].isin(dead["RKID"])]
    if rows.empty:
        return _NONE
    zxrq = _lookup(dead, c.sources, "hukou", ["ZXRQ"])["ZXRQ"]
    death = dead.assign(ZXRQ=zxrq).set_index("RKID")
    d = death.reindex(rows["RKID"]).set_axis(rows.index)
    wtms = "该人员已在公安户籍办理死亡注销，但" + rows["BH"].map(_DEATH_WHAT)
    dbxx = ("公安户籍(" + d["label"] + "):户口状态 3-死亡注销"
            + np.where(d["ZXRQ"].fillna("") != "", "，注销日期 " + d["ZXRQ"].fillna(""), "")
            + "; 本表(" + rows["label"] + "):姓名 " + _show(rows["XM"])
            + "，身份证号码 " + _show(rows["GMSFHM"]) + "，状态为有效")
    return _emit(rows, "DEATH_ACTIVE", wtms, dbxx)


def _not_in_police(c: _Ctx) -> pd.DataFrame:
    r = c.r
    known = c.persons(r["police"])
    rows = r[r["BH"].isin(["dibao", "disabled", "women"]) & (r["JS"] == "SELF") & (r["RKID"] != "")
             & ~r["RKID"].isin(known)]
    if rows.empty:
        return _NONE
    what = rows["BH"].map({"dibao": "低保", "disabled": "持证残疾人", "women": "育龄妇女"})
    wtms = "该人员有" + what + "登记，但公安户籍和暂住登记中均查无此人，请核实其户籍或暂住情况。"
    dbxx = (rows["label"] + ": 姓名 " + _show(rows["XM"]) + "，身份证号码 " + _show(rows["GMSFHM"])
            + "，出生日期 " + _show(rows["CSRQ"]) + "，地址 " + _show(rows["address"])
            + "; 公安户籍、暂住:无此人记录")
    return _emit(rows, "NOT_IN_POLICE", wtms, dbxx)


def _resident_rows(c: _Ctx, zt: str) -> pd.DataFrame:
    r = c.r
    rows = r[(r["BH"] == "resident") & (r["ZT"] == zt) & (r["RKID"] != "")]
    if rows.empty:
        return rows.assign(SQMC="", CJRQ="")
    extra = _lookup(rows, c.sources, "resident", ["SQMC", "CJRQ"])
    return rows.assign(SQMC=extra["SQMC"], CJRQ=extra["CJRQ"])


def _resident_desc(rows: pd.DataFrame, status: str) -> pd.Series:
    return (rows["label"] + ": 姓名 " + _show(rows["XM"]) + "，身份证号码 " + _show(rows["GMSFHM"])
            + "，居住地址 " + _show(rows["address"]) + "，社区 " + _show(rows["SQMC"])
            + "，居住状态 " + status + "，采集日期 " + _show(rows["CJRQ"]))


def _present_not_registered(c: _Ctx) -> pd.DataFrame:
    r = c.r
    registered = c.persons(r["police"] & r["active"])
    rows = _resident_rows(c, "1")
    rows = rows[~rows["RKID"].isin(registered)]
    if rows.empty:
        return _NONE
    rows = c.with_ref(rows)
    wtms = "社区采集显示该人员在本地居住，但无有效户籍或暂住登记，请核实并办理暂住登记。"
    dbxx = (_resident_desc(rows, "1-在住")
            + np.where(rows["ref_BH"] != "", "; 公安记录(" + rows["ref_label"] + ")已注销", "; 公安户籍、暂住:无此人记录"))
    return _emit(rows, "PRESENT_NOT_REGISTERED", wtms, dbxx)


def _hukou_absent(c: _Ctx) -> pd.DataFrame:
    r = c.r
    rows = _resident_rows(c, "2")
    hukou = r[(r["BH"] == "hukou") & r["active"] & r["RKID"].isin(rows["RKID"])]
    hukou = _first_per_person(hukou, ["_ts", "YWZJ"], [False, True]).set_index("RKID")
    rows = rows[rows["RKID"].isin(hukou.index)]
    if rows.empty:
        return _NONE
    h = hukou.reindex(rows["RKID"]).set_axis(rows.index)
    wtms = "该人员户籍仍在，但社区采集显示其不在户籍地居住（户在人不在），请核实实际居住情况。"
    dbxx = (_resident_desc(rows, "2-不在住")
            + "; 公安户籍(" + h["label"] + "):户籍地址 " + _show(h["address"].fillna("")) + "，户口状态 1-正常")
    return _emit(rows, "HUKOU_ABSENT", wtms, dbxx)


def _logic_error(c: _Ctx) -> pd.DataFrame:
    r = c.r
    found: list[pd.DataFrame] = []  # (index, short, detail) per reason

    def add(mask: pd.Series, short: str, detail: pd.Series) -> None:
        if mask.any():
            found.append(pd.DataFrame({"short": short, "detail": detail[mask]}, index=mask.index[mask]))

    # women SELF: male by its ID, or outside 15–49 on the business date
    w = r[(r["BH"] == "women") & (r["JS"] == "SELF")]
    add(w["id_sex"] == "1", "育龄妇女身份证号码显示为男性",
        "本表身份证号码" + w["id18"] + "第17位表示:男")
    born = w["birth"].where(w["birth"] != "", w["id_birth"])
    age = _age(born, c.bd)
    lo, hi = WOMEN_AGE
    out_band = age.notna() & ((age < lo) | (age > hi))
    add(out_band, f"育龄妇女年龄不在{lo}至{hi}周岁",
        "按出生日期" + born + "计算，至" + c.bd + "年满" + age.fillna(0).astype(int).astype(str)
        + f"周岁，不在{lo}至{hi}周岁之间")

    # disabled: CJRZH = upgraded ID + CJLB + CJDJ, when an ID is present
    d = r[(r["BH"] == "disabled") & (r["id_norm"] != "")]
    if len(d):
        extra = _lookup(d, c.sources, "disabled", ["CJLB", "CJDJ"])
        expected = (d["id18"].where(d["id18"] != "", d["id_norm"]) + extra["CJLB"].str.strip()
                    + extra["CJDJ"].str.strip())
        cjrzh = normalise_id_text(d["YWZJ"])
        add(cjrzh != expected, "残疾人证号与身份证号码、残疾类别、残疾等级不一致",
            "残疾人证号(CJRZH):" + d["YWZJ"] + "; 按身份证号码+残疾类别(" + _show(extra["CJLB"]) + ")+残疾等级("
            + _show(extra["CJDJ"]) + ")应为:" + expected)

    # marriage: NF female / NV male by ID; a party under the legal age on DJRQ
    m = r[r["BH"] == "marriage"]
    if len(m):
        djrq = normalise_date(_lookup(m, c.sources, "marriage", ["DJRQ"])["DJRQ"]).fillna("").astype(str)
        add((m["JS"] == "NF") & (m["id_sex"] == "2"), "男方身份证号码显示为女性",
            "男方身份证号码" + m["id18"] + "第17位表示:女")
        add((m["JS"] == "NV") & (m["id_sex"] == "1"), "女方身份证号码显示为男性",
            "女方身份证号码" + m["id18"] + "第17位表示:男")
        born = m["birth"].where(m["birth"] != "", m["id_birth"])
        age = _age(born, djrq)
        legal = m["JS"].map(MARRIAGE_AGE)
        role = m["JS"].map(ROLE_LABELS)
        add(age.notna() & (age < legal), "登记时未到法定婚龄",
            "登记日期" + djrq + "时" + role + "按出生日期" + born + "年满" + age.fillna(0).astype(int).astype(str)
            + "周岁，未到法定婚龄" + legal.astype(str) + "周岁")

    if not found:
        return _NONE
    # a record can fail several checks: join its reasons (a few fixed columns, so no per-group Python)
    index = pd.Index(sorted(set().union(*(f.index for f in found))))
    short = _join_nonempty([f["short"].reindex(index, fill_value="") for f in found], "、")
    detail = _join_nonempty([f["detail"].reindex(index, fill_value="") for f in found], "; ")
    rows = r.loc[index]
    wtms = "该记录存在逻辑错误（" + short + "），请核对原始档案后更正。"
    return _emit(rows, "LOGIC_ERROR", wtms, detail)


def _marital_conflict(c: _Ctx) -> pd.DataFrame:
    r = c.r
    w = r[(r["BH"] == "women") & (r["JS"] == "SELF") & (r["RKID"] != "")]
    hyzk = _lookup(w, c.sources, "women", ["HYZK"])["HYZK"].str.strip()
    w = w[hyzk == "10"]
    m = r[(r["BH"] == "marriage") & r["RKID"].isin(w["RKID"])]
    if w.empty or m.empty:
        return _NONE
    info = _lookup(m, c.sources, "marriage", ["YWLX", "DJRQ", "DJJG", "NF_XM", "NV_XM"])
    m = m[["RKID", "YWZJ"]].assign(YWLX=info["YWLX"].str.strip(), DJJG=info["DJJG"], NF_XM=info["NF_XM"],
                                   NV_XM=info["NV_XM"],
                                   DJRQ=normalise_date(info["DJRQ"]).fillna("").astype(str))
    m = m[(m["DJRQ"] != "") & (m["DJRQ"] <= c.bd)]
    wed = m[m["YWLX"] == "1"].sort_values(["RKID", "DJRQ", "YWZJ"]).drop_duplicates("RKID", keep="last").set_index("RKID")
    divorce = m[m["YWLX"] == "2"].groupby("RKID")["DJRQ"].max()
    last_div = divorce.reindex(wed.index).fillna("")
    married = wed[(last_div == "") | (last_div <= wed["DJRQ"])]
    rows = w[w["RKID"].isin(married.index)]
    if rows.empty:
        return _NONE
    x = married.reindex(rows["RKID"]).set_axis(rows.index)
    wtms = "育龄妇女登记的婚姻状况为未婚，但民政婚姻登记显示该妇女已登记结婚且其后未登记离婚，请核实婚姻状况后更正。"
    dbxx = ("本表婚姻状况(HYZK):10-未婚; 民政婚姻登记(婚姻登记 DJBH=" + x["YWZJ"] + "):" + x["DJRQ"] + " 结婚登记"
            + np.where(x["DJJG"] != "", "，登记机关 " + x["DJJG"], "")
            + "，男方 " + _show(x["NF_XM"]) + "，女方 " + _show(x["NV_XM"])
            + "; 其后无离婚登记; 若婚姻登记无误，建议更正 HYZK=20")
    return _emit(rows, "MARITAL_CONFLICT", wtms, dbxx)


def _fuzzy_candidate(c: _Ctx) -> pd.DataFrame:
    r = c.r
    rows = r[r["PPFS"] == "POSSIBLE"]
    if rows.empty:
        return _NONE
    # the candidate shown: the person's police reference, else another record of that person
    others = r[r["RKID"].isin(rows["RKID"]) & (r["PPFS"] != "POSSIBLE")]
    others = others.assign(_p=~others["police"]).sort_values(["RKID", "_p", "_ts"], ascending=[True, True, False])
    cand = others.drop_duplicates("RKID").set_index("RKID").reindex(rows["RKID"]).set_axis(rows.index).fillna("")
    score = rows["PPDF"].round(2).astype(str).where(rows["PPDF"].notna(), "")
    wtms = "系统判断该记录可能与人口库中的一名已有人员是同一人，但把握不足，请核实：是同一人填4，不是同一人填5。"
    dbxx = ("本表:姓名 " + _show(rows["XM"]) + "，身份证号码 " + _show(rows["GMSFHM"]) + "，出生日期 " + _show(rows["CSRQ"])
            + "; 疑似人员(人口编号" + rows["RKID"] + ")"
            + np.where(cand["label"] != "", "，见" + cand["label"] + ":姓名 " + _show(cand["XM"]) + "，身份证号码 "
                       + _show(cand["GMSFHM"]) + "，出生日期 " + _show(cand["CSRQ"]), "")
            + np.where(score != "", "; 匹配得分 " + score, "")
            + _basis(rows["PPMX"]))
    return _emit(rows, "FUZZY_CANDIDATE", wtms, dbxx)


def _basis(ppmx: pd.Series) -> pd.Series:
    """`; 比对依据(与户籍人口 RYBH=R1比对…)：姓名相同(+11.2)、出生日期差一位(+3.1)…` of each link's explanation
    (`linkage.explain`), so that a clerk sees what the score rests on; `""` where the link has none."""
    basis = ppmx.map(basis_zh)
    keys = ppmx.map(lambda t: (decode(t) or {}).get("with", "")).str.split("|", expand=True).reindex(columns=range(4))
    compared = _record_label(pd.DataFrame({"BH": keys[1], "YWZJ": keys[2], "JS": keys[3]}).fillna(""))
    return pd.Series(np.where(basis != "", "; 比对依据(与" + compared + "比对，括号内为匹配权重，正数支持是同一人、负数反对)："
                              + basis, ""), index=ppmx.index)


_RULES = (
    _missing, _id_format, _id_checksum, _id_15, _id_mismatch, _dup_id, _dup_record, _name_diff,
    _sex_conflict, _birth_conflict, _death_active, _not_in_police, _present_not_registered,
    _hukou_absent, _logic_error, _marital_conflict, _fuzzy_candidate,
)


def evaluate_states(roles: pd.DataFrame, links: pd.DataFrame, sources: dict[str, pd.DataFrame],
                    business_date: str) -> pd.DataFrame:
    """Every (record role, state) pair that holds on the current data (spec section 4).

    `roles`: the Roles frame; `links`: the Links frame (`RKID`, `PPFS`, `PPDF` per role; a role
    without a link takes part only in the states that do not need its person); `sources`: table
    name → live Source frame (table-specific fields: HYZK, CJLB, CJDJ, YWLX, DJRQ, ZXRQ, SQMC …).
    Returns the States frame: rows in state order (as `STATES`), then in the order of `roles`.
    """
    if roles is None or roles.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATE_COLUMNS})
    if links is None:
        links = pd.DataFrame(columns=KEYS + ["RKID", "PPFS", "PPDF"])
    ctx = _Ctx(roles, links, sources, business_date)
    parts = [rule(ctx) for rule in _RULES]
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if out is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATE_COLUMNS})
    return out[STATE_COLUMNS].fillna("").astype(str)


# Roles evaluated together by `evaluate_states_in_bins`: the rules' intermediate frames of one bin (about
# 1.1 GiB for the 2.1 M roles of a 1M city evaluated at once) instead of the city's
STATES_BIN_ROLES = 500_000


def records_view(sources: dict[str, pd.DataFrame], roles: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The source rows of the records of `roles` (what the rules read of the departments' records)."""
    wanted = roles.groupby("BH")["YWZJ"].agg(set).to_dict() if len(roles) else {}
    return {bh: (src[src["_key"].isin(wanted[bh])] if bh in wanted and len(src) else src.iloc[:0])
            for bh, src in sources.items()}


def in_state_order(states: pd.DataFrame, role_key: pd.Index) -> pd.DataFrame:
    """`states` in the order of a whole evaluation (`evaluate_states`): state, then role (its position in
    `role_key`, the role keys of the roles evaluated); rows of one role and state keep their order."""
    at = role_key.get_indexer(role_keys(states)) if len(states) else np.zeros(0, dtype=np.int64)
    order = np.lexsort((at, states["HCZT"].map(STATE_ORDER).fillna(len(STATE_ORDER)).to_numpy()))
    return states.iloc[order].reset_index(drop=True)


def evaluate_states_in_bins(roles: pd.DataFrame, links: pd.DataFrame, sources: dict[str, pd.DataFrame],
                            business_date: str, bin_roles: int = STATES_BIN_ROLES,
                            role_key: np.ndarray | None = None, link_key: np.ndarray | None = None) -> pd.DataFrame:
    """`evaluate_states`, the same rows in the same order, bin by bin, so that its memory follows `bin_roles`
    and not the city (docs/scale.md 2.7). A rule reads a role's person, its ID (`state_id_keys`) and its
    record, so the components of those three (`linkage.bins`) are evaluated apart, each with its links and
    the source rows of its records. `role_key`, `link_key`: `role_keys` of `roles` and `links` when the
    caller has them."""
    role_key = role_keys(roles) if role_key is None else role_key
    link_key = role_keys(links) if link_key is None else link_key
    kindex = pd.Index(role_key)
    at = kindex.get_indexer(link_key) if len(links) else np.zeros(0, dtype=np.int64)
    if len(roles) <= bin_roles or not kindex.is_unique or (at < 0).any():
        return evaluate_states(roles, links, sources, business_date)  # small, or links of other roles: at once
    person = np.full(len(roles), "", dtype=object)
    person[at] = links["RKID"].astype(str).to_numpy(dtype=object)
    record = (roles["BH"].astype(str) + "|" + roles["YWZJ"].astype(str)).to_numpy(dtype=object)
    bins = pack(components(person, state_id_keys(roles), record), bin_roles)
    link_bin = bins[at]
    # the bin of each source row, once (its record's; -1: a record without live roles, which no rule reads)
    bin_of_record = pd.Series(bins, index=record).groupby(level=0).first()
    source_bin = {bh: bin_of_record.reindex(bh + "|" + src["_key"].astype(str)).fillna(-1).to_numpy(np.int64)
                  if len(src) else np.zeros(0, dtype=np.int64) for bh, src in sources.items()}
    parts = []
    for b in range(int(bins.max()) + 1):
        view = {bh: src[source_bin[bh] == b] for bh, src in sources.items()}
        parts.append(evaluate_states(roles[bins == b], links[link_bin == b], view, business_date))
    parts = [p for p in parts if len(p)]
    if not parts:
        return evaluate_states(roles.iloc[:0], links.iloc[:0], sources, business_date)
    return in_state_order(pd.concat(parts, ignore_index=True), kindex)
