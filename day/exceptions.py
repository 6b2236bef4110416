"""交换异常: what did not go as the departments delivered it, why, and what to do next.

Each exception is a dict (department, batch_id, file, kind, label, cause, next_step) kept in the date's
run summary, so summary.html, the reconciliation reports, Dagster and the console all say the same.
"""
from __future__ import annotations

from pathlib import Path

from exchange import landing
from exchange.staging import StageResult

# kind -> (label for a clerk, next step)
KINDS: dict[str, tuple[str, str]] = {
    "quarantined": ("文件校验和不符，已隔离", "请该部门以新的批次号重新报送该文件；隔离副本在 out/quarantine/ 下"),
    "held": ("全量文件行数不足，已暂扣", "该表保持原状未作删除；请该部门核实后以新的批次号重新报送完整的全量文件"),
    "missing": ("清单所列文件缺失", "请该部门补齐文件后以新的批次号重新报送"),
    "late": ("迟到的报送，已拒收", "日期须按顺序处理：请该部门将其并入当前业务日期以新的批次号重新报送，并移走该文件夹"),
    "replay": ("重复批次，已跳过", "无需处理：该批次此前已处理"),
    "rejected_rows": ("拒收行过多", "请查看 out/rejects/ 下的拒收文件，由该部门修正后重新报送"),
    "no_deliveries": ("当日没有任何报送", "请核实各部门是否按时报送"),
}


def _exception(kind: str, department: str, batch_id: str, file: str, cause: str) -> dict:
    label, next_step = KINDS[kind]
    return {"department": department, "batch_id": batch_id, "file": file, "kind": kind, "label": label,
            "cause": cause, "next_step": next_step}


def of_date(staged: StageResult, thresholds: dict) -> list[dict]:
    """The exceptions of a staged, classified date (files that were not loaded as delivered)."""
    out = []
    for f in staged.files:
        if f.status in ("quarantined", "held", "missing", "late", "replay"):
            out.append(_exception(f.status, f.department, f.batch_id, f.path, f.message))
    share = float(thresholds.get("guards", {}).get("rejected_share_warn", 0.01))
    min_rows = int(thresholds.get("min_base", 0) or 0)  # a share of a handful of rows says nothing
    for f in staged.files:
        if f.status == "staged" and f.received_rows >= max(min_rows, 1) and f.rejected_rows > share * f.received_rows:
            out.append(_exception("rejected_rows", f.department, f.batch_id, f.path,
                                  f"{f.rejected_rows:,} of {f.received_rows:,} rows could not be read "
                                  f"(more than {share:.0%})"))
    if not staged.files and not staged.errors and not staged.waiting:
        out.append(_exception("no_deliveries", "", "", "", f"no delivery folder for {staged.business_date}"))
    return out


def late_folder(landing_root: Path, date: str, latest_processed: str) -> list[dict]:
    """An unprocessed earlier date's deliveries, refused because a later date was processed before them."""
    out = []
    for m in landing.discover(landing_root, date):
        if m.status == "waiting":
            continue
        cause = (f"{m.department} delivered business date {date} (batch {m.batch_id or '?'}) after {latest_processed} "
                 "was processed; dates are applied in order, so nothing of it was loaded")
        out.append(_exception("late", m.department, m.batch_id, f"landing/{m.department}/{date}/", cause))
    return out
