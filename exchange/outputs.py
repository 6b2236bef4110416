"""Outputs of a business date (spec section 6), written from frames of the committed base.

`day.run` reads the frames from the store after the date's commit and hands them here; everything
can be rewritten at any time, so a run that died after its commit but before its outputs is mended
by running the date again. Each file is written to a temporary name and renamed into place.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog import DEPARTMENT_NAMES, DEPARTMENTS, RETURN_TABLE
from catalog.base import TASK_COLUMNS
from catalog.states import STATE_NAMES
from exchange.files import publish, temporary_for
from exchange.taskfile import write_receipt, write_task_files

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

RECON_FIELDS = ["manifest_rows", "received_rows", "loaded_rows", "rejected_rows", "inserted", "updated",
                "deleted", "unchanged", "ignored_stale", "checksum_ok", "deviation"]

EXPORT_PERSON_COLUMNS = ["RKID", "GMSFHM", "XM", "XB", "CSRQ", "MZ", "JZXZ", "HJDZ_XZQH", "SJJZD_XZQH", "RHZT",
                         "SWBZ", "LYBM"]


def neutralise(value: str) -> str:
    """Stop a spreadsheet from executing a value (OWASP CSV injection): prefix a quote."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def _atomic_path(target: Path) -> Path:
    return temporary_for(target)


EXPORT_LINK_COLUMNS = ["BM", "BH", "YWZJ", "JS", "RKID", "PPFS", "PPDF"]


def write_exports(home: Path, persons: pd.DataFrame, links: pd.DataFrame, date: str) -> dict[str, Path]:
    """exports/<D>/persons.parquet (live persons) and links.parquet (every record role's link), from the
    base's persons and links tables as they are after the date, held in memory (`write_exports_in_parts`
    with one part each)."""
    frames = {"persons": persons, "links": links}
    return write_exports_in_parts(home, lambda name, order: [frames[name].sort_values(order)], date)


EXPORT_ORDER = {"persons": ["RKID"], "links": ["BM", "BH", "YWZJ", "JS"]}  # rows sorted by, and keyed by


def write_exports_in_parts(home: Path, parts_of, date: str) -> dict[str, Path]:
    """exports/<D>/persons.parquet and links.parquet from `parts_of(name, order)`: the base's persons or links
    already sorted by `EXPORT_ORDER` (from the store, `store.base.export_parts`: a date whose base is not in
    memory, one processed in bins or outputs mended), each part written as it comes, so that memory follows
    a part, not the city."""
    out = Path(home) / "out" / "exports" / date
    paths = {}
    for name, shape in (("persons", _export_persons), ("links", _export_links)):
        target = out / f"{name}.parquet"
        tmp = _atomic_path(target)
        writer = None
        for part in parts_of(name, EXPORT_ORDER[name]):
            table = pa.Table.from_pandas(shape(part).reset_index(drop=True), preserve_index=False)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:  # nothing to export: the file still says what it would hold
            shape(pd.DataFrame(columns=EXPORT_ORDER[name])).to_parquet(tmp, index=False)
        else:
            writer.close()
        publish(tmp, target)
        paths[name] = target
    return paths


def _export_persons(persons: pd.DataFrame) -> pd.DataFrame:
    if "status" in persons.columns:
        persons = persons[persons["status"] == "live"]
    return persons.reindex(columns=EXPORT_PERSON_COLUMNS, fill_value="")


def _export_links(links: pd.DataFrame) -> pd.DataFrame:
    links = links.reindex(columns=EXPORT_LINK_COLUMNS, fill_value="")
    links["PPDF"] = pd.to_numeric(links["PPDF"], errors="coerce").astype(float)
    return links


def _row_keys(table: pa.Table, order: list[str]) -> pa.Array:
    cols = [table[c] for c in order]
    return cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, "|")


def merge_exports(home: Path, previous: str, date: str, persons: pd.DataFrame, rkids: set[str],
                  links: pd.DataFrame, role_keys: set[str]) -> dict[str, Path]:
    """The exports of `date` as those of `previous` (the date processed just before, its exports as the
    base stood after it) with the rows of the persons `rkids` and the link roles `role_keys`
    (`BM|BH|YWZJ|JS`) replaced by `persons` and `links`, their rows in the base now (issue 15: a daily
    date's outputs follow its changes; the same files `write_exports` writes from the whole base,
    tests/test_reads.py). Arrow throughout, and streamed: the previous file is read `MERGE_ROWS` rows at a
    time and merged with the fresh rows in key order, so memory follows the fresh rows, not the city (a
    10M city's links export holds 21 M rows)."""
    out = Path(home) / "out" / "exports" / date
    paths = {}
    for name, fresh, keys in (("persons", _export_persons(persons), rkids), ("links", _export_links(links), role_keys)):
        old = pq.ParquetFile(Path(home) / "out" / "exports" / previous / f"{name}.parquet")
        new = pa.Table.from_pandas(fresh.reset_index(drop=True), schema=old.schema_arrow, preserve_index=False)
        target = out / f"{name}.parquet"
        tmp = _atomic_path(target)
        with pq.ParquetWriter(tmp, old.schema_arrow) as writer:
            for part in _merged(old, new, pa.array(sorted(keys), pa.string()), EXPORT_ORDER[name]):
                writer.write_table(part)
        publish(tmp, target)
        paths[name] = target
    return paths


MERGE_ROWS = 100_000  # rows of a previous export read at a time by `merge_exports` (its memory beside the date's)


def _merged(old: pq.ParquetFile, fresh: pa.Table, drop: pa.Array, order: list[str]):
    """The rows of `old` (sorted by `order`) whose key is not in `drop`, and the rows of `fresh`, in order:
    one sorted part per batch of `old`, holding the fresh rows up to that batch's last key."""
    by = [(c, "ascending") for c in order]
    fresh = fresh.take(pc.sort_indices(fresh, by))
    start = 0
    for batch in old.iter_batches(batch_size=MERGE_ROWS):
        part = pa.Table.from_batches([batch])
        part = part.filter(pc.invert(pc.is_in(_row_keys(part, order), value_set=drop)))
        if not part.num_rows:
            continue
        rest = fresh.slice(start)
        upto = int(pc.sum(_not_after(rest, [part[c][-1].as_py() for c in order], order)).as_py() or 0)
        both = pa.concat_tables([part, rest.slice(0, upto)])
        yield both.take(pc.sort_indices(both, by))
        start += upto
    if start < fresh.num_rows:
        yield fresh.slice(start)


def _not_after(table: pa.Table, last: list, order: list[str]) -> pa.Array:
    """Whether each row's key (`order`'s columns) sorts at or before the key `last`, compared column by
    column as `sort_indices` orders them (the rows are sorted, so these come first)."""
    out = pc.less_equal(table[order[-1]], last[-1])
    for c, v in zip(reversed(order[:-1]), reversed(last[:-1])):
        out = pc.or_(pc.less(table[c], v), pc.and_(pc.equal(table[c], v), out))
    return out


REJECT_FILE_COLUMNS = ["line", "reason", "raw", "detail"]  # spec section 6: line, reason code, raw line; + the reason in words


def write_rejects_files(home: Path, rejects: pd.DataFrame, date: str) -> dict[str, Path]:
    """rejects/<D>/<dept>_<table>_rejects.csv (UTF-8 with BOM), each written whole from the rows the base
    keeps for the date (so a failed or killed write is mended by writing again)."""
    out = Path(home) / "out" / "rejects" / date
    paths = {}
    for (dept, table), part in rejects.groupby(["department", "table"], sort=True) if len(rejects) else ():
        target = out / f"{dept}_{table}_rejects.csv"
        tmp = _atomic_path(target)
        part[REJECT_FILE_COLUMNS].astype(str).map(neutralise).to_csv(tmp, index=False, encoding="utf-8-sig")
        paths[f"{dept}_{table}"] = publish(tmp, target)
    return paths


def write_receipts(home: Path, rejects: pd.DataFrame, date: str) -> dict[str, tuple[Path, Path]]:
    """receipt_<dept>_<D>.xlsx/.csv beside each department's task file: its rejected answers, in Chinese."""
    out = {}
    answers = rejects[rejects["table"] == RETURN_TABLE] if len(rejects) else rejects
    for dept, part in answers.groupby("department", sort=True) if len(answers) else ():
        written = write_receipt(part.reset_index(drop=True), dept, date, Path(home) / "out")
        if written is not None:
            out[dept] = written
    return out


def write_task_outputs(home: Path, tasks: pd.DataFrame, date: str) -> dict[str, tuple[Path, Path]]:
    """One xlsx + csv per department holding every task of that department open on the date."""
    tasks = tasks[tasks["status"] == "open"].copy() if len(tasks) else pd.DataFrame(columns=TASK_COLUMNS)
    tasks["HCZTMC"] = tasks["HCZT"].map(STATE_NAMES).fillna("")
    tasks["XZBZ"] = (tasks["XFRQ"] == date).map({True: "1", False: "0"})
    out = {}
    for dept in DEPARTMENTS:
        mine = tasks[tasks["route"] == dept].sort_values(["HCZT", "BH", "YWZJ", "JS"])
        out[dept] = write_task_files(mine, dept, date, Path(home) / "out")
    return out


def write_reports(home: Path, summary: dict, date: str, history: list[dict]) -> dict[str, Path]:
    """reconciliation_<dept>.json/.xlsx per department and the city-wide summary.html."""
    out = Path(home) / "out" / "reports" / date
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for dept, rep in summary["departments"].items():
        target = out / f"reconciliation_{dept}.json"
        tmp = _atomic_path(target)
        tmp.write_text(json.dumps(rep, ensure_ascii=False, indent=2), encoding="utf-8")
        publish(tmp, target)
        paths[f"{dept}.json"] = target
        paths[f"{dept}.xlsx"] = _write_reconciliation_xlsx(out / f"reconciliation_{dept}.xlsx", rep)
    target = out / "summary.html"
    tmp = _atomic_path(target)
    tmp.write_text(render_summary_html(summary, history), encoding="utf-8")
    publish(tmp, target)
    paths["summary"] = target
    return paths


TABLE_HEADERS = {
    "manifest_rows": "清单行数", "received_rows": "接收行数", "loaded_rows": "入库行数", "rejected_rows": "拒收行数",
    "inserted": "新增", "updated": "修改", "deleted": "删除", "unchanged": "未变", "ignored_stale": "过期忽略",
    "checksum_ok": "校验和正确", "deviation": "行数偏差",
}


STATUS_NAMES = {"staged": "正常", "processed": "正常", "quarantined": "校验和不符已隔离", "held": "全量行数不足已暂扣",
                "missing": "文件缺失", "structural_error": "结构错误", "replay": "重复批次已跳过", "late": "迟到拒收"}


def table_status(rep: dict, table: str) -> tuple[str, str]:
    """(status, reason) of a table in a department's report: 正常, or what became of its files and why."""
    files = [f for b in rep.get("batches", []) for f in b.get("files", []) if f.get("table") == table]
    bad = [f for f in files if f.get("status") not in ("staged", "processed")]
    if not bad:
        return STATUS_NAMES["staged"], ""
    status = "、".join(dict.fromkeys(STATUS_NAMES.get(f["status"], f["status"]) for f in bad))
    return status, "; ".join(f.get("message", "") for f in bad if f.get("message"))


def _write_reconciliation_xlsx(target: Path, rep: dict) -> Path:
    import xlsxwriter

    tmp = _atomic_path(target)
    wb = xlsxwriter.Workbook(str(tmp))
    bold = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    ws = wb.add_worksheet("桥接核对")
    ws.write_string(0, 0, f"{DEPARTMENT_NAMES.get(rep['department'], rep['department'])} 数据桥接核对 {rep['business_date']}",
                    bold)
    headers = ["表(BH)"] + [f"{TABLE_HEADERS[f]}({f})" for f in RECON_FIELDS] + ["状态(status)", "原因(reason)"]
    for c, h in enumerate(headers):
        ws.write_string(2, c, h, bold)
        ws.set_column(c, c, max(12, len(h) + 4))
    ws.set_column(len(headers) - 1, len(headers) - 1, 80)
    for r, (table, figs) in enumerate(sorted(rep["tables"].items()), start=3):
        ws.write_string(r, 0, table)
        for c, f in enumerate(RECON_FIELDS, start=1):
            v = figs.get(f, "")
            ws.write_string(r, c, ("是" if v else "否") if isinstance(v, bool) else str(v))
        status, reason = table_status(rep, table)
        ws.write_string(r, len(RECON_FIELDS) + 1, status)
        ws.write_string(r, len(RECON_FIELDS) + 2, neutralise(reason))
    row = 4 + len(rep["tables"])
    ws.write_string(row, 0, "核查任务", bold)
    for c, (k, label) in enumerate((("new", "新增"), ("open", "在办"), ("closed", "销号"), ("overdue", "逾期")), start=1):
        ws.write_string(row, c, f"{label}({k})", bold)
        ws.write_string(row + 1, c, str(rep["tasks"].get(k, 0)))
    row += 3
    ws.write_string(row, 0, "核查回填", bold)  # the departments' answers of the date (spec section 5)
    answers = rep.get("returns", {})
    for c, (k, label) in enumerate((("accepted", "受理"), ("rejected", "拒收"), ("closed", "销号"), ("overdue", "逾期未回")),
                                   start=1):
        ws.write_string(row, c, f"{label}({k})", bold)
        ws.write_string(row + 1, c, str(answers.get(k, 0)))
    row += 3
    ws.write_string(row, 0, "质量指标", bold)
    for i, (k, v) in enumerate(sorted((rep.get("quality") or {}).items())):
        if isinstance(v, (int, float)):
            ws.write_string(row + 1 + i, 0, k)
            ws.write_string(row + 1 + i, 1, f"{v:.4f}" if isinstance(v, float) else str(v))
    ws.freeze_panes(3, 1)
    wb.close()
    publish(tmp, target)
    return target


STATE_COLORS = ("#4472C4 #ED7D31 #A5A5A5 #FFC000 #5B9BD5 #70AD47 #264478 #9E480E #636363 #997300 #255E91 #43682B "
                "#698ED0 #F1975A #B7B7B7 #FFCD33 #7CAFDD").split()


def _text_width(text: str, px: int = 12) -> int:
    """Rough rendered width: a CJK character is about one em, a capital letter, digit or underscore
    (the state codes) about 0.7, other Latin characters about half."""
    return sum(px if ord(ch) > 0x2E80 else px * 0.7 if (ch.isupper() or ch.isdigit() or ch == "_") else px * 0.55
               for ch in text)


def _bar_chart(title: str, data: dict[str, float], fmt="{:,.0f}", width=640) -> str:
    """A horizontal bar chart as inline SVG (no JavaScript, no network: it opens anywhere)."""
    if not data:
        return f"<h3>{html.escape(title)}</h3><p class='empty'>无数据</p>"
    top = max(data.values()) or 1
    label_w = int(max(_text_width(str(k)) for k in data) + 12)
    bar_w = max(width - label_w - 70, 120)
    rows = []
    for i, (label, value) in enumerate(data.items()):
        w = int(bar_w * value / top)
        y = i * 24
        rows.append(
            f"<text x='0' y='{y + 16}' class='lbl'>{html.escape(str(label))}</text>"
            f"<rect x='{label_w}' y='{y + 4}' width='{max(w, 1)}' height='16' fill='{STATE_COLORS[i % len(STATE_COLORS)]}'/>"
            f"<text x='{label_w + w + 6}' y='{y + 16}' class='val'>{fmt.format(value)}</text>")
    return (f"<h3>{html.escape(title)}</h3><svg width='{label_w + bar_w + 70}' height='{24 * len(data) + 8}' role='img'>"
            + "".join(rows) + "</svg>")


def _line_chart(title: str, series: dict[str, list[tuple[str, float]]], width=640, height=200, pct=False) -> str:
    """Lines over business dates, as inline SVG; the y axis spans the data (labelled), legend on the right."""
    points = [v for s in series.values() for _, v in s]
    if not points:
        return f"<h3>{html.escape(title)}</h3><p class='empty'>无数据</p>"
    dates = sorted({d for s in series.values() for d, _ in s})
    lo, hi = min(points), max(points)
    if pct:
        lo, hi = max(0.0, lo - max((hi - lo) * 0.2, 0.005)), min(1.0, hi + max((hi - lo) * 0.2, 0.005))
    else:
        lo, hi = 0.0, (hi * 1.1 or 1.0)
    left, right, top = 56, width - 150, 10
    x = {d: left + (right - left) * (i / max(len(dates) - 1, 1)) for i, d in enumerate(dates)}

    def y(v: float) -> float:
        return height - (height - top) * (v - lo) / ((hi - lo) or 1)

    label = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:,.0f}")
    out = [f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height + 30}' role='img'>",
           f"<line x1='{left}' y1='{height}' x2='{right}' y2='{height}' stroke='#999'/>",
           f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height}' stroke='#999'/>",
           f"<text x='0' y='{top + 8}' class='val'>{label(hi)}</text>",
           f"<text x='0' y='{height}' class='val'>{label(lo)}</text>"]
    for d in sorted({dates[0], dates[-1]}):
        out.append(f"<text x='{x[d] - 28}' y='{height + 16}' class='val'>{d}</text>")
    for i, (name, pts) in enumerate(series.items()):
        color = STATE_COLORS[i % len(STATE_COLORS)]
        coords = " ".join(f"{x[d]:.0f},{y(v):.0f}" for d, v in pts)
        out.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{coords}'/>")
        out += [f"<circle cx='{x[d]:.0f}' cy='{y(v):.0f}' r='3' fill='{color}'><title>{d}: {label(v)}</title></circle>"
                for d, v in pts]
        last = pts[-1][1] if pts else 0
        out.append(f"<text x='{right + 10}' y='{14 + 16 * i}' class='lbl' fill='{color}'>"
                   f"{html.escape(name)} {label(last)}</text>")
    out.append("</svg>")
    return "".join(out)


EXCEPTION_HEADERS = ("部门", "批次", "文件", "异常", "原因", "下一步")


def _exceptions_html(summary: dict) -> str:
    """The 交换异常 section: each exception of the date with its cause and what to do next."""
    rows = summary.get("exceptions", [])
    if not rows:
        return "<h2>交换异常</h2><p class='empty'>无 none</p>"
    cells = "".join(
        "<tr class='warn'>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            DEPARTMENT_NAMES.get(e.get("department", ""), e.get("department", "")), e.get("batch_id", ""),
            e.get("file", ""), e.get("label", e.get("kind", "")), e.get("cause", ""), e.get("next_step", "")))
        + "</tr>" for e in rows)
    head = "".join(f"<th>{h}</th>" for h in EXCEPTION_HEADERS)
    return f"<h2>交换异常 ({len(rows)})</h2><table class='exc'><tr>{head}</tr>{cells}</table>"


def render_summary_html(summary: dict, history: list[dict]) -> str:
    """The city-wide picture of one date: figures, tasks by state and department, trends, link methods."""
    date = summary["business_date"]
    deps = summary["departments"]
    q = summary.get("quality", {})
    cards = [
        ("在册人口 persons", f"{summary['totals'].get('persons', 0):,}"),
        ("记录角色 record roles", f"{summary['totals'].get('roles', 0):,}"),
        ("今日入库行 loaded", f"{summary['totals'].get('loaded_rows', 0):,}"),
        ("今日拒收行 rejected", f"{summary['totals'].get('rejected_rows', 0):,}"),
        ("待核查任务 open tasks", f"{summary['totals'].get('open_tasks', 0):,}"),
        ("关联率 link rate", f"{q.get('link_rate') or 0:.2%}"),
        ("身份证有效率 valid ID rate", f"{q.get('valid_id_rate') or 0:.2%}"),
    ]
    by_state = {f"{STATE_NAMES.get(k, k)} {k}": v
                for k, v in sorted(summary.get("open_tasks_by_state", {}).items(), key=lambda kv: -kv[1])}
    by_dept = {f"{DEPARTMENT_NAMES[d]} {d}": deps[d]["tasks"].get("open", 0) for d in DEPARTMENTS}
    backlog = {DEPARTMENT_NAMES[d]: [(h["business_date"], h["departments"][d]["tasks"].get("open", 0)) for h in history]
               for d in DEPARTMENTS}
    rates = {name: [(h["business_date"], float(h.get("quality", {}).get(key, 0) or 0)) for h in history]
             for name, key in (("关联率", "link_rate"), ("身份证有效率", "valid_id_rate"),
                               ("关键字段完整率", "key_field_completeness"))}
    rows = []
    for d in DEPARTMENTS:
        for table, f in sorted(deps[d]["tables"].items()):
            flag = "" if f["checksum_ok"] and not f["deviation"] else " class='warn'"
            rows.append(f"<tr{flag}><td>{DEPARTMENT_NAMES[d]}</td><td>{table}</td>" + "".join(
                f"<td>{'是' if f[k] is True else '否' if f[k] is False else f[k]}</td>" for k in RECON_FIELDS) + "</tr>")
        for b in deps[d]["batches"]:
            if b["status"] == "replay":
                rows.append(f"<tr class='warn'><td>{DEPARTMENT_NAMES[d]}</td><td colspan='{len(RECON_FIELDS) + 1}'>"
                            f"重复批次已跳过 replay: {html.escape(b['batch_id'])}</td></tr>")
    head = "".join(f"<th>{TABLE_HEADERS[k]}</th>" for k in RECON_FIELDS)
    exceptions = _exceptions_html(summary)
    return (f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>实有人口基础库 运行概况 {date}</title>
<style>
body{{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;color:#222;max-width:1400px}}
"""
            "h1{font-size:22px} h2{font-size:18px;border-bottom:2px solid #4472C4;padding-bottom:4px;margin-top:28px}"
            " h3{font-size:15px;margin:12px 0 4px}\n"
            ".cards{display:flex;flex-wrap:wrap;gap:12px}"
            " .card{background:#F3F6FB;border:1px solid #D0DAEA;border-radius:6px;padding:10px 16px;min-width:150px}\n"
            """.card b{display:block;font-size:22px;color:#1F3864} .card span{font-size:12px;color:#555}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
"""
            "table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            " td:first-child,td:nth-child(2){text-align:left} table.exc td{text-align:left;max-width:560px}\n"
            "th{background:#DDEBF7} tr.warn td{background:#FDE9D9} .lbl{font-size:12px} .val{font-size:11px;fill:#333}"
            " .empty{color:#888}\n"
            f"""</style></head><body>
<h1>实有人口基础库 运行概况 · 业务日期 {date}</h1>
<div class="cards">{''.join(f"<div class='card'><b>{v}</b><span>{html.escape(k)}</span></div>" for k, v in cards)}</div>
{exceptions}
<h2>待核查任务</h2>
<div class="grid"><div>{_bar_chart("按核查状态 (open tasks by state)", by_state)}</div>
<div>{_bar_chart("按部门 (open tasks by department)", by_dept)}</div></div>
<h2>趋势</h2>
<div class="grid"><div>{_line_chart("待办积压 backlog over time", backlog)}</div>
<div>{_line_chart("质量指标 quality rates over time", rates, pct=True)}</div></div>
<h2>关联方式 link methods</h2>
{_bar_chart("记录角色按关联方式 (PPFS)", summary.get("link_methods", {}))}
<h2>数据桥接核对 reconciliation</h2>
<table><tr><th>部门</th><th>表</th>{head}</tr>{''.join(rows)}</table>
</body></html>""")
