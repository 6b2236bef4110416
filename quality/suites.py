"""Great Expectations 1.x suites that judge one parsed delivery of one table (no Dagster here).

`validate_delivery(df, table, incremental)` runs the table's suite on a parsed delivery frame (all
columns strings, `""` for missing) and returns a `QualityResult`. Dagster asset checks call it.

Structural expectations (strict; any failure makes `structural_ok` false):
  - every catalogue column of the table is present (`ExpectTableColumnsToMatchSet`, exact_match
    False: extra columns are allowed), plus `CZLX`/`CZSJ` in an incremental file;
  - the record key is non-empty on every row and, in a full extract, unique;
  - incremental: `CZLX` is `I`, `U` or `D` on every row.
Content expectations (`mostly` thresholds from `config/quality.json`, judged on filled values only;
completeness is measured by the rates, not here; `D` rows of an incremental file are skipped):
  - `id_format`: each citizen ID field, trimmed, matches `^[0-9]{17}[0-9Xx]$|^[0-9]{15}$`
    (document types other than `111` are not citizen IDs and are skipped);
  - `sex_code`: `XB` is `1`, `2`, `0`, `9`, `男` or `女`;
  - `date`: each D8 field is a real date in one of the layouts the spec says occur (the derived
    column holds the date as CCYYMMDD when `quality.values.parse_date` reads it, else the raw value;
    GX checks it against `DATE_REGEX`, an exact real-date regex, so an impossible raw `19850231`
    fails like an unreadable `abc`);
  - `code`: each coded field holds a catalogue code (status fields and `YWLX` must also be filled);
  - `timestamp`: `GXSJ` (and `CZSJ`) is a real D14 timestamp (`TIMESTAMP_REGEX`).
Regexes rather than `ExpectColumnValuesToMatchStrftimeFormat`: that one calls `strptime` per row
(~6 µs a value, most of a large delivery's validation time) and `strptime("198532", "%Y%m%d")`
accepts 1985-03-02.

The checks that need a value prepared first (trimmed, a date parsed, a `D` row or a passport left
out) run on derived columns `_q_<kind>__<FIELD>` added to a shallow copy of the frame; the
delivered frame itself is never changed.

GX costs ~3 s to import, so it is imported on the first call. One ephemeral context per process
holds every suite, each built once per (table, full/incremental, `mostly` thresholds) and reused,
so a changed `config/quality.json` gets new suites.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from catalog import INCREMENTAL_FIELDS, TABLES
from catalog.codes import (
    CITIZEN_ID_DOC,
    CODE_SETS,
    CODES_REQUIRED,
    DATE_FIELDS,
    INCREMENTAL_OPS,
    SEX_CODES,
    TIMESTAMP_FIELDS,
)
from quality.rates import delivery_rates
from quality.thresholds import load_thresholds, mostly_for, rate_warnings
from quality.values import DATE_REGEX, ID_PATTERN, TIMESTAMP_REGEX, column, parse_dates, stripped

STRUCTURAL = "structural"
CONTENT = "content"
EXAMPLES = 5  # unexpected values quoted per expectation


@dataclass
class QualityResult:
    """What a suite found in one delivery.

    `expectations`: one dict per expectation: `name` (`kind:FIELD`), `kind` (structural/content),
    `column`, `expectation` (GX type), `success`, `observed` (missing columns for the columns check;
    else the share of checked values that passed, `None` when nothing was checked), `mostly`,
    `checked`, `unexpected_count`, `examples`, `message` (`""` when it passed, or when a missing
    column was already reported). `messages`: every message, structural ones first.
    `rates`: `quality.rates.delivery_rates`.
    `warnings`: rates below their thresholds (`quality.thresholds.rate_warnings`).
    """

    structural_ok: bool
    messages: list[str]
    expectations: list[dict[str, Any]]
    rates: dict[str, Any]
    table: str = ""
    incremental: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def structural_messages(self) -> list[str]:
        """The messages that explain `structural_ok` being false (all of them for an unknown table)."""
        if not self.expectations:
            return list(self.messages)
        return [e["message"] for e in self.expectations if e["kind"] == STRUCTURAL and e.get("message")]

    @property
    def content_messages(self) -> list[str]:
        """Content expectations below their `mostly` (informative: they do not block a delivery)."""
        return [e["message"] for e in self.expectations if e["kind"] == CONTENT and e.get("message")]

    @property
    def content_ok(self) -> bool:
        return all(e["success"] for e in self.expectations if e["kind"] == CONTENT)

    @property
    def success(self) -> bool:
        return self.structural_ok and self.content_ok

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["content_ok"], d["success"] = self.content_ok, self.success
        d["structural_messages"], d["content_messages"] = self.structural_messages, self.content_messages
        return d


# --------------------------------------------------------------------------- suite layout (pure)

@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str
    gx_type: str  # class name in great_expectations.expectations
    column: str  # the delivered field it judges ("" for table-level)
    target: str  # the column of the validation frame GX looks at
    kwargs: tuple[tuple[str, Any], ...] = ()
    mostly: float | None = None
    what: str = ""  # "<share> of <n> filled values <what>"


def _mode(incremental: bool) -> str:
    return "incremental" if incremental else "full"


def suite_layout(table: str, incremental: bool, mostly: dict[str, float] | None = None) -> list[_Spec]:
    """The expectations of a table's suite, as data (no GX needed)."""
    tbl = TABLES[table]
    mostly = mostly if mostly is not None else mostly_for(table)
    columns = list(tbl.fields) + (list(INCREMENTAL_FIELDS) if incremental else [])
    specs = [
        _Spec("columns", STRUCTURAL, "ExpectTableColumnsToMatchSet", "", "",
              (("column_set", tuple(columns)), ("exact_match", False))),
        _Spec(f"key_not_empty:{tbl.key}", STRUCTURAL, "ExpectColumnValuesToNotBeNull", tbl.key, "_q_key"),
    ]
    if incremental:
        specs.append(_Spec("operation:CZLX", STRUCTURAL, "ExpectColumnValuesToBeInSet", "CZLX", "_q_op",
                           (("value_set", INCREMENTAL_OPS),), what="are I/U/D"))
    else:
        specs.append(_Spec(f"key_unique:{tbl.key}", STRUCTURAL, "ExpectColumnValuesToBeUnique", tbl.key, "_q_key"))
    for f in _id_fields(table):
        specs.append(_Spec(f"id_format:{f}", CONTENT, "ExpectColumnValuesToMatchRegex", f, f"_q_id__{f}",
                           (("regex", ID_PATTERN),), mostly["id_format"], "match the citizen ID pattern"))
    for f in _sex_fields(table):
        specs.append(_Spec(f"sex_code:{f}", CONTENT, "ExpectColumnValuesToBeInSet", f, f"_q_sex__{f}",
                           (("value_set", SEX_CODES),), mostly["sex_code"], "are sex codes " + "/".join(SEX_CODES)))
    for f in DATE_FIELDS[table]:
        specs.append(_Spec(f"date:{f}", CONTENT, "ExpectColumnValuesToMatchRegex", f, f"_q_date__{f}",
                           (("regex", DATE_REGEX),), mostly["date"], "are readable dates"))
    for f, codes in CODE_SETS[table].items():
        specs.append(_Spec(f"code:{f}", CONTENT, "ExpectColumnValuesToBeInSet", f, f"_q_code__{f}",
                           (("value_set", codes),), mostly["code"], "are catalogue codes " + "/".join(codes)))
    for f in _ts_fields(incremental):
        specs.append(_Spec(f"timestamp:{f}", CONTENT, "ExpectColumnValuesToMatchRegex", f, f"_q_ts__{f}",
                           (("regex", TIMESTAMP_REGEX),), mostly["timestamp"], "are D14 timestamps"))
    return specs


def _id_fields(table: str) -> list[str]:
    return [r.id for r in TABLES[table].roles]


def _sex_fields(table: str) -> list[str]:
    return [r.sex for r in TABLES[table].roles if r.sex]


def _ts_fields(incremental: bool) -> list[str]:
    return list(TIMESTAMP_FIELDS) + (["CZSJ"] if incremental else [])


def _filled_or_none(s: pd.Series, keep: pd.Series | None = None) -> pd.Series:
    """Trimmed values; `None` where empty (or where `keep` is false), so GX leaves them out."""
    s = stripped(s)
    mask = s.ne("") if keep is None else (s.ne("") & keep)
    return s.where(mask, None)


def prepare_frame(df: pd.DataFrame, table: str, incremental: bool) -> pd.DataFrame:
    """The delivered columns (shared, not copied) plus the derived `_q_*` columns the suite checks."""
    tbl = TABLES[table]
    idx = df.index
    live = pd.Series(True, index=idx)
    if incremental:
        live = stripped(column(df, "CZLX")).ne("D")
    key = column(df, tbl.key).str.strip()  # (mostly distinct values: no gain from stripped())
    d: dict[str, pd.Series] = {"_q_key": key.where(key.ne(""), None)}
    if incremental:
        d["_q_op"] = stripped(column(df, "CZLX"))
    for role in tbl.roles:
        keep = live
        if role.doc_type:
            keep = keep & stripped(column(df, role.doc_type)).isin([CITIZEN_ID_DOC, ""])
        d[f"_q_id__{role.id}"] = _filled_or_none(column(df, role.id), keep)
    for f in _sex_fields(table):
        d[f"_q_sex__{f}"] = _filled_or_none(column(df, f), live)
    for f in DATE_FIELDS[table]:
        raw = _filled_or_none(column(df, f), live)
        parsed = parse_dates(column(df, f))
        d[f"_q_date__{f}"] = parsed.where(parsed.ne(""), raw).where(raw.notna(), None)
    for f in CODE_SETS[table]:
        s = stripped(column(df, f))
        keep = live if f in CODES_REQUIRED[table] else (live & s.ne(""))
        d[f"_q_code__{f}"] = s.where(keep, None)
    for f in _ts_fields(incremental):
        d[f"_q_ts__{f}"] = _filled_or_none(column(df, f))
    derived = pd.DataFrame(d, index=idx)
    # A missing column is the columns check's finding: its content checks see no values (no
    # second message for the same cause). Key and CZLX checks stay strict.
    for f in tbl.fields:
        if f not in df.columns:
            for c in derived.columns:
                if c.endswith(f"__{f}"):
                    derived[c] = None
    return pd.concat([df, derived], axis=1, copy=False)


# --------------------------------------------------------------------------- GX (lazy, cached)

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}  # "gx", "context", "datasource", "definitions": {(table, incr, mostly): (vd, specs)}


def _context() -> dict[str, Any]:
    with _LOCK:
        if not _STATE:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            # GX prints a tqdm bar per validation to stderr unless told not to.
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            _STATE.update(
                gx=gx,
                context=context,
                datasource=context.data_sources.add_pandas("popbase_deliveries"),
                definitions={},
            )
        return _STATE


def _definition(table: str, incremental: bool, mostly: dict[str, float]):
    """The (ValidationDefinition, layout) of a table's suite with these thresholds, built on first use."""
    with _LOCK:
        state = _context()
        key = (table, incremental, tuple(sorted(mostly.items())))
        if key not in state["definitions"]:
            gx, context = state["gx"], state["context"]
            import great_expectations.expectations as gxe

            name = f"{table}.{_mode(incremental)}.{len(state['definitions'])}"
            specs = suite_layout(table, incremental, mostly)
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for spec in specs:
                kwargs = dict(spec.kwargs)
                if "value_set" in kwargs:
                    kwargs["value_set"] = list(kwargs["value_set"])
                if "column_set" in kwargs:
                    kwargs["column_set"] = list(kwargs["column_set"])
                if spec.target:
                    kwargs["column"] = spec.target
                if spec.mostly is not None:
                    kwargs["mostly"] = spec.mostly
                suite.add_expectation(getattr(gxe, spec.gx_type)(meta={"popbase": spec.name}, **kwargs))
            asset = state["datasource"].add_dataframe_asset(name)
            batch = asset.add_batch_definition_whole_dataframe(name)
            vd = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            state["definitions"][key] = (vd, specs)
        return state["definitions"][key]


def _run(vd, frame: pd.DataFrame):
    with _LOCK:
        result = vd.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
        # run() keeps every result in the context's in-memory store; a long-lived process would
        # accumulate them, and nothing here reads them back.
        context = _STATE.get("context")
        if context is not None:
            store = context.validation_results_store
            for k in list(store.list_keys()):
                store.remove_key(k)
        return result


# --------------------------------------------------------------------------- public entry point

def validate_delivery(df: pd.DataFrame, table: str, incremental: bool,
                      thresholds: dict[str, Any] | None = None) -> QualityResult:
    """Run the table's suite on a parsed delivery; never raises for bad data or an unknown table.
    `thresholds`: the quality configuration (`load_thresholds(settings.quality_config)`; default
    `config/quality.json`)."""
    cfg = thresholds if thresholds is not None else load_thresholds()
    started = time.perf_counter()
    label = f"{table} ({_mode(incremental)} extract)"
    if table not in TABLES:
        return QualityResult(
            structural_ok=False,
            messages=[f"unknown table {table!r}: no quality suite; catalogue tables are {', '.join(TABLES)}"],
            expectations=[],
            rates={},
            table=table,
            incremental=incremental,
            seconds=round(time.perf_counter() - started, 3),
        )
    dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dupes:  # a column lookup would be ambiguous; nothing else can be judged
        return QualityResult(
            structural_ok=False,
            messages=[f"{label}: duplicate column{'s' if len(dupes) > 1 else ''} {', '.join(dupes)} in the header"],
            expectations=[],
            rates={},
            table=table,
            incremental=incremental,
            seconds=round(time.perf_counter() - started, 3),
        )
    vd, specs = _definition(table, incremental, mostly_for(table, cfg))
    absent = {c for c in (*TABLES[table].fields, *(INCREMENTAL_FIELDS if incremental else ())) if c not in df.columns}
    frame = prepare_frame(df, table, incremental)
    gx_result = _run(vd, frame)
    by_name = {r.expectation_config.meta.get("popbase"): r for r in gx_result.results}
    expectations, messages = [], []
    for spec in specs:
        entry, message = _describe(spec, by_name.get(spec.name), label, TABLES[table].fields)
        if spec.column in absent:
            entry["note"] = "column missing"
            message = ""  # already said by the columns check
        entry["message"] = message
        expectations.append(entry)
        if message:
            messages.append(message)
    structural_ok = all(e["success"] for e in expectations if e["kind"] == STRUCTURAL)
    rates = delivery_rates(df, table)
    return QualityResult(
        structural_ok=structural_ok,
        messages=messages,
        expectations=expectations,
        rates=rates,
        table=table,
        incremental=incremental,
        warnings=rate_warnings(rates, table, cfg),
        seconds=round(time.perf_counter() - started, 3),
    )


def _describe(spec: _Spec, r, label: str, fields: tuple[str, ...]) -> tuple[dict, str]:
    """One expectation's entry for `QualityResult.expectations`, and a message when it failed."""
    entry: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "column": spec.column,
        "expectation": spec.gx_type,
        "success": False,
        "observed": None,
        "mostly": spec.mostly,
        "checked": 0,
        "unexpected_count": 0,
        "examples": [],
    }
    if r is None:  # cannot happen unless GX drops a result; say so rather than pass silently
        return entry, f"{label}: expectation {spec.name} produced no result"
    info = r.exception_info or {}
    if info.get("raised_exception") or any(
        isinstance(v, dict) and v.get("raised_exception") for v in info.values()
    ):
        msg = info.get("exception_message") or next(
            (v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("exception_message")),
            "error",
        )
        entry["error"] = str(msg)
        return entry, f"{label}: expectation {spec.name} could not be evaluated: {msg}"
    res = r.result or {}
    entry["success"] = bool(r.success)
    if spec.name == "columns":
        expected = list(dict(spec.kwargs)["column_set"])
        observed = set(res.get("observed_value") or [])
        missing = [c for c in expected if c not in observed]
        entry.update(observed=missing, checked=len(expected), unexpected_count=len(missing))
        if entry["success"]:
            return entry, ""
        what = "catalogue column" if all(c in fields for c in missing) else "column"
        return entry, (
            f"{label}: missing {what}{'s' if len(missing) != 1 else ''} {', '.join(missing)} "
            f"(expected {len(expected)} columns, found {len(expected) - len(missing)} of them)"
        )
    element = int(res.get("element_count") or 0)
    missing_n = int(res.get("missing_count") or 0)
    unexpected = int(res.get("unexpected_count") or 0)
    checked = element if spec.gx_type == "ExpectColumnValuesToNotBeNull" else element - missing_n
    examples = [v for v in (res.get("partial_unexpected_list") or []) if v is not None]
    seen: list = []
    for v in examples:
        if v not in seen:
            seen.append(v)
    entry.update(
        observed=round(1 - unexpected / checked, 6) if checked else None,
        checked=checked,
        unexpected_count=unexpected,
        examples=seen[:EXAMPLES],
    )
    if entry["success"]:
        return entry, ""
    eg = f"; e.g. {', '.join(repr(v) for v in entry['examples'])}" if entry["examples"] else ""
    if spec.name.startswith("key_not_empty"):
        return entry, f"{label}: record key {spec.column} is empty on {unexpected} of {checked} rows"
    if spec.name.startswith("key_unique"):
        return entry, f"{label}: record key {spec.column} is not unique: {unexpected} rows share a key{eg}"
    if spec.kind == STRUCTURAL:
        return entry, f"{label}: {spec.column} must be I/U/D on every row; {unexpected} of {checked} rows are not{eg}"
    return entry, (
        f"{label}: {spec.column}: only {entry['observed']:.1%} of {checked} filled values {spec.what} "
        f"(expected at least {spec.mostly:.0%}){eg}"
    )
