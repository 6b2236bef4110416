"""The data item catalogue (spec section 1) as data: departments, tables, fields, keys and roles.

Everything that needs to know a table's layout reads it from here, so a field code is spelled once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEPARTMENTS = ("police", "civil", "family_planning", "disability")

DEPARTMENT_NAMES = {
    "police": "公安局",
    "civil": "民政局",
    "family_planning": "人口计生委",
    "disability": "残联",
}


@dataclass(frozen=True)
class Role:
    """How one person is read out of a row: which field holds what (`""` = the table has none)."""

    code: str  # SELF, NF, NV, ZF
    name: str
    id: str
    doc_type: str = ""  # field holding the document type; "" means a citizen ID by definition
    sex: str = ""
    birth: str = ""
    ethnicity: str = ""
    region: str = ""
    address: str = ""


@dataclass(frozen=True)
class Table:
    dept: str
    name: str
    title: str
    key: str
    fields: tuple[str, ...]
    roles: tuple[Role, ...]
    status_field: str = ""  # HKZT / ZT / BZZT / JZZT
    id_required: bool = True  # MISSING is raised for an empty ID only where the table requires one
    required: tuple[str, ...] = field(default=())  # structural: a delivery without these columns is refused

    @property
    def police(self) -> bool:
        return self.dept == "police"


def _t(dept, name, title, key, fields, roles, status_field="", id_required=True):
    fields = tuple(fields.split())
    return Table(dept, name, title, key, fields, tuple(roles), status_field, id_required, required=(key,))


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _t("police", "hukou", "户籍人口", "RYBH",
           "RYBH XM GMSFHM XB MZ CSRQ HJDZ_XZQH HJDZ HH HKZT ZXRQ GXSJ",
           [Role("SELF", "XM", "GMSFHM", sex="XB", birth="CSRQ", ethnicity="MZ", region="HJDZ_XZQH", address="HJDZ")],
           status_field="HKZT"),
        _t("police", "temp", "暂住人口", "ZZBH",
           "ZZBH XM ZJLX ZJHM XB MZ CSRQ GJ HJDZ_XZQH HJDZ ZZDZ_XZQH ZZDZ DJRQ YXQZ ZT GXSJ",
           [Role("SELF", "XM", "ZJHM", doc_type="ZJLX", sex="XB", birth="CSRQ", ethnicity="MZ",
                 region="ZZDZ_XZQH", address="ZZDZ")],
           status_field="ZT"),
        _t("civil", "resident", "社区实有人口采集", "JMBH",
           "JMBH XM GMSFHM XB CSRQ JZDZ_XZQH JZDZ SQMC JZZT CJRQ GXSJ",
           [Role("SELF", "XM", "GMSFHM", sex="XB", birth="CSRQ", region="JZDZ_XZQH", address="JZDZ")],
           status_field="JZZT", id_required=False),
        _t("civil", "dibao", "低保对象", "DBRYBH",
           "DBRYBH DBZH XM GMSFHM XB CSRQ JTDZ_XZQH JTDZ BZZT QSRQ YBZJE GXSJ",
           [Role("SELF", "XM", "GMSFHM", sex="XB", birth="CSRQ", region="JTDZ_XZQH", address="JTDZ")],
           status_field="BZZT"),
        _t("civil", "marriage", "婚姻登记", "DJBH",
           "DJBH YWLX DJRQ DJJG NF_XM NF_ZJLX NF_ZJHM NF_CSRQ NV_XM NV_ZJLX NV_ZJHM NV_CSRQ GXSJ",
           [Role("NF", "NF_XM", "NF_ZJHM", doc_type="NF_ZJLX", birth="NF_CSRQ"),
            Role("NV", "NV_XM", "NV_ZJHM", doc_type="NV_ZJLX", birth="NV_CSRQ")]),
        _t("family_planning", "women", "育龄妇女", "FNBH",
           "FNBH XM GMSFHM MZ CSRQ HYZK ZF_XM ZF_GMSFHM HJDZ_XZQH HJDZ XJZD_XZQH XJZD ZNS GXSJ",
           [Role("SELF", "XM", "GMSFHM", birth="CSRQ", ethnicity="MZ", region="XJZD_XZQH", address="XJZD"),
            Role("ZF", "ZF_XM", "ZF_GMSFHM")]),
        _t("disability", "disabled", "持证残疾人", "CJRZH",
           "CJRZH XM GMSFHM XB MZ CSRQ CJLB CJDJ HJDZ_XZQH HJDZ JZDZ FZRQ ZT ZXYY GXSJ",
           [Role("SELF", "XM", "GMSFHM", sex="XB", birth="CSRQ", ethnicity="MZ", region="HJDZ_XZQH", address="JZDZ")],
           status_field="ZT"),
    )
}

# Incremental files carry these two more fields (spec section 2).
INCREMENTAL_FIELDS = ("CZLX", "CZSJ")

# Active per spec section 4: value of the status field that counts as active; None = every row is active.
ACTIVE_STATUS: dict[str, str | None] = {
    "hukou": "1",
    "temp": "1",
    "dibao": "1",
    "disabled": "1",
    "resident": None,
    "women": None,
    "marriage": None,
}

# Tables of each department, in catalogue order.
DEPT_TABLES: dict[str, tuple[str, ...]] = {
    d: tuple(t.name for t in TABLES.values() if t.dept == d) for d in DEPARTMENTS
}

# Record roles as a clerk reads them (JS, spec section 5).
ROLE_NAMES = {"SELF": "本人", "NF": "男方", "NV": "女方", "ZF": "丈夫"}

# Pseudo-table of a verification return delivery.
RETURN_TABLE = "verification_tasks"


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}") from None
