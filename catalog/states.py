"""The pending-verification states (待核查状态, spec section 4): code, 名称, route and meaning, once.

The rules that raise them live in `verification/states.py`; task files, reports and the routing of
tasks read names, routes and order from here.
"""
from __future__ import annotations

# (code, 名称, route, what it means for a clerk) in the spec's order. route: "source" = the record
# role's own department, "holder" = the department holding the active record (= its own), else a
# department code.
STATES: tuple[tuple[str, str, str, str], ...] = (
    ("MISSING", "关键信息缺失", "source", "姓名或身份证号码为空"),
    ("ID_FORMAT", "身份证号码格式错误", "source", "号码不是15/18位规定字符，或号码中的出生日期不存在"),
    ("ID_CHECKSUM", "身份证号码校验位错误", "source", "18位号码的第18位校验码与前17位不符(GB 11643-1999)"),
    ("ID_15", "15位身份证号码待升位", "source", "仍使用15位旧号码，应升为18位"),
    ("ID_MISMATCH", "身份证号码与姓名不匹配", "source", "该号码在公安登记为另一人，姓名和出生日期均不同"),
    ("DUP_ID", "重号(一号多人)", "police", "两条以上有效公安记录使用同一号码，但属于不同的人"),
    ("DUP_RECORD", "重复登记", "source", "同一人在同一表中有两条以上有效记录(户籍：一人多户)"),
    ("NAME_DIFF", "姓名不一致", "source", "号码相同，但姓名与公安登记的姓名不同(已忽略空格、间隔号写法和繁简差异)"),
    ("SEX_CONFLICT", "性别与身份证号码不符", "source", "性别与身份证号码第17位(奇数男、偶数女)不符"),
    ("BIRTH_CONFLICT", "出生日期与身份证号码不符", "source", "出生日期与身份证号码中的出生日期不符"),
    ("DEATH_ACTIVE", "死亡人员仍在册/享受待遇", "holder",
     "公安户籍已死亡注销，但该人仍有有效的暂住、低保、残疾人证、育龄妇女或在住记录"),
    ("NOT_IN_POLICE", "公安无登记", "police", "低保、残疾人或育龄妇女记录的本人在公安户籍和暂住中均无记录"),
    ("PRESENT_NOT_REGISTERED", "人在户不在且未办理暂住登记", "police",
     "社区采集在住，但既无有效户籍也无有效暂住登记"),
    ("HUKOU_ABSENT", "户在人不在", "police", "社区采集不在住，但户籍仍有效"),
    ("LOGIC_ERROR", "逻辑校核错误", "source",
     "育龄妇女为男性或不在15-49周岁；残疾人证号与身份证号码、类别、等级不符；婚姻登记男女方性别不符或未到法定婚龄"),
    ("MARITAL_CONFLICT", "婚姻状况不一致", "family_planning", "育龄妇女登记为未婚，但民政有结婚登记且其后无离婚登记"),
    ("FUZZY_CANDIDATE", "疑似同一人", "source", "系统按姓名、出生日期等疑似匹配到已有人员，需人工确认是否同一人"),
)
STATE_NAMES: dict[str, str] = {code: name for code, name, _, _ in STATES}
STATE_ROUTES: dict[str, str] = {code: route for code, _, route, _ in STATES}
STATE_WHEN: dict[str, str] = {code: when for code, _, _, when in STATES}
STATE_ORDER: dict[str, int] = {code: i for i, (code, _, _, _) in enumerate(STATES)}

STATE_COLUMNS = ["BM", "BH", "YWZJ", "JS", "HCZT", "route", "RKID", "WTMS", "DBXX"]
