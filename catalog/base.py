"""The layouts of the base's own tables (persons, links, decisions, tasks, overlays, audit) and the
working copy of the base as frames. `store/` builds its schema from these lists; the day's pure
logic (`exchange/process.py`) builds frames with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Bookkeeping columns of a source table beside the department's fields (docs/architecture.md).
SOURCE_META = ("_key", "_ts", "_deleted", "_batch", "_bdate")

PERSON_COLUMNS = [
    "RKID", "GMSFHM", "XM", "XB", "CSRQ", "MZ", "JZXZ", "HJDZ_XZQH", "SJJZD_XZQH", "RHZT", "SWBZ", "LYBM",
    "status", "merged_into", "issued",
]

# role_fp: fingerprint of the role as it was linked (linkage.incremental: what changed since); PPMX (匹配明细):
# why a FUZZY/POSSIBLE link was made, compact JSON (linkage/explain.py), "" for the others; not exported
LINK_COLUMNS = ["role_key", "BM", "BH", "YWZJ", "JS", "RKID", "PPFS", "PPDF", "role_fp", "PPMX"]

DECISION_COLUMNS = ["decision_key", "BM", "BH", "YWZJ", "JS", "RKID", "decision", "RWBH", "decided"]

TASK_COLUMNS = [
    "RWBH", "HCZT", "BM", "BH", "YWZJ", "JS", "route", "RKID", "XM", "GMSFHM", "XB", "CSRQ", "WTMS", "DBXX",
    "XFRQ", "HCQX", "status", "last_raised", "closed_date", "close_reason", "HCJG", "GZZD", "GZZ", "HCR", "HCRQ", "BZ",
]

# A department's answer that holds "until the record next changes": stored with the record's fingerprint.
OVERLAY_COLUMNS = ["overlay_key", "kind", "BM", "BH", "YWZJ", "JS", "HCZT", "field", "value", "record_fp", "RWBH", "decided"]

# Every delivered row that was not loaded, with its reason (spec section 2: rejects files), kept in the
# base so the rejects files and the departments' receipts can be written again at any time.
REJECT_COLUMNS = ["reject_key", "business_date", "department", "table", "batch_id", "line", "reason", "detail", "raw",
                  "RWBH"]

# The index of record roles a daily date looks roles up by (exchange/role_index.py says what each holds).
MEASURE_FLAGS = ("id_required", "citizen", "id_ok", "has_name", "has_id", "has_birth", "birth_applies")
ROLE_INDEX_COLUMNS = ["role_key", "record", "BM", "BH", "id_key", "state_id", "broken_id", "near_a", "near_b", "near_c",
                      "repair_prefix",
                      "repair_birth", "format_birth", "women_birth", "marriage_date", "q_dept",
                      *(f"q_{f}" for f in MEASURE_FLAGS)]

AUDIT_COLUMNS = ["business_date", "entity", "entity_key", "RKID", "field", "old", "new", "cause", "actor", "at"]


@dataclass
class BaseState:
    """The working copy of the base a business date starts from, as frames (one per table)."""

    sources: dict[str, "pd.DataFrame"]
    persons: "pd.DataFrame"
    links: "pd.DataFrame"
    decisions: "pd.DataFrame"
    tasks: "pd.DataFrame"
    overlays: "pd.DataFrame"
    model: str = ""  # the linking model in force (FSModel payload), "" before the first date
    last_run: str = ""  # the latest business date processed, "" before the first
