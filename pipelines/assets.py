"""The assets of a business date, materialised together by `day.run_dates` (one multi-asset, one step).

A date is staged, checked, committed and written out by one function (`day.run`), so Dagster shows it
as one multi-asset with five assets, each materialised once per run with its own metadata, and four
checks attached to the run's partitions. A blocked date (a structural gate failed) materialises
`staged_deliveries` with a failed `delivery_structure` check and fails the run with the reasons; the
base and the outputs are not touched.
"""

import warnings
from collections.abc import Iterator

import dagster as dg
from dagster import AssetExecutionContext

from catalog import DEPARTMENT_NAMES, DEPARTMENTS
from catalog.states import STATE_NAMES
from day import DateBlocked, DateResult, LateDelivery, run_dates
from pipelines.resources import PopbaseResource
from quality.thresholds import load_thresholds, rate_thresholds

STAGED, BASE, EXPORTS, TASK_FILES, REPORTS = (
    "staged_deliveries", "population_base", "exports", "verification_task_files", "reconciliation_reports")
STRUCTURE, RATES, EXCEPTIONS, LINK_RATE = "delivery_structure", "delivery_quality_rates", "delivery_exceptions", "link_rate"


def _specs() -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(STAGED, group_name="exchange",
                     description="Verified (sha256) and parsed deliveries of the business date, staged as Parquet; "
                                 "unreadable rows go to rejects."),
        dg.AssetSpec(BASE, deps=[STAGED], group_name="base",
                     description="Source tables, persons (RKID), links and verification tasks after the business date, "
                                 "committed atomically."),
        dg.AssetSpec(EXPORTS, deps=[BASE], group_name="outputs",
                     description="exports/<D>/persons.parquet and links.parquet"),
        dg.AssetSpec(TASK_FILES, deps=[BASE], group_name="outputs",
                     description="tasks/<dept>/<D>/verification_tasks_<dept>_<D>.xlsx and .csv for every department"),
        dg.AssetSpec(REPORTS, deps=[BASE], group_name="outputs",
                     description="reports/<D>/reconciliation_<dept>.json/.xlsx and summary.html"),
    ]


def _check_specs(partitions) -> list[dg.AssetCheckSpec]:
    """Partitioned checks (a preview feature of Dagster 1.13, docs/decisions.md): each result belongs to
    the business date it judged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _partitioned_check_specs(partitions)


def _partitioned_check_specs(partitions) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(STRUCTURE, asset=STAGED, partitions_def=partitions,
                          description="Manifests readable, required columns present, tables known (blocks the date)."),
        dg.AssetCheckSpec(RATES, asset=STAGED, partitions_def=partitions,
                          description="Content expectations and valid-ID / completeness rates of each delivery "
                                      "against config/quality.json."),
        dg.AssetCheckSpec(EXCEPTIONS, asset=STAGED, partitions_def=partitions,
                          description="交换异常: files quarantined, held (short full extract), refused as late, replayed or "
                                      "missing, and files with many unreadable rows; each with its cause and next step."),
        dg.AssetCheckSpec(LINK_RATE, asset=BASE, partitions_def=partitions,
                          description="Share of record roles linked to a person without waiting for a clerk "
                                      "(city threshold in config/quality.json)."),
    ]


def _bullets(lines: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {x}" for x in lines) or "none")


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    """A table for the Dagster UI: integer columns are those whose values are integers."""
    kinds = {c: "int" if rows and all(isinstance(r[c], int) for r in rows) else "string" for c in columns}
    schema = dg.TableSchema(columns=[dg.TableColumn(c, kinds[c]) for c in columns])
    return dg.MetadataValue.table([dg.TableRecord({c: r[c] for c in columns}) for r in rows], schema=schema)


def staged_results(result: DateResult) -> Iterator:
    """The staged_deliveries materialisation and its three checks."""
    files = [{"file": f"{f.department}/{f.path}", "table": f.table, "status": f.status, "received": f.received_rows,
              "rejected": f.rejected_rows, "manifest_rows": f.manifest_rows} for f in result.staged.files]
    yield dg.MaterializeResult(asset_key=STAGED, metadata={
        "dagster/row_count": sum(f["received"] for f in files),
        "files": _table(files, ["file", "table", "status", "received", "rejected", "manifest_rows"]) if files
        else dg.MetadataValue.text("no deliveries"),
        "quarantined": sum(f["status"] == "quarantined" for f in files),
        "rejected_rows": sum(f["rejected"] for f in files),
    })
    gates = result.gates
    yield dg.AssetCheckResult(asset_key=STAGED, check_name=STRUCTURE, passed=not gates.errors,
                              metadata={"errors": len(gates.errors), "reasons": _bullets(gates.errors)},
                              description="; ".join(gates.errors)[:1000] or None)
    exc = result.exceptions
    yield dg.AssetCheckResult(
        asset_key=STAGED, check_name=EXCEPTIONS, passed=not exc, severity=dg.AssetCheckSeverity.WARN,
        metadata={"exceptions": len(exc), "details": _table(
            [{k: e.get(k, "") for k in ("department", "file", "label", "cause", "next_step")} for e in exc],
            ["department", "file", "label", "cause", "next_step"]) if exc else dg.MetadataValue.text("none")},
        description="; ".join(f"{e['department']} {e['file']}: {e['label']}" for e in exc)[:1000] or None)
    rates = {f"{name} {rate}": float(v) for name, per in gates.rates.items() for rate, v in per.items()
             if isinstance(v, (int, float)) and v is not None}
    yield dg.AssetCheckResult(asset_key=STAGED, check_name=RATES, passed=not gates.warnings,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"warnings": len(gates.warnings), "details": _bullets(gates.warnings), **rates})


def base_results(result: DateResult, thresholds: dict) -> Iterator:
    """population_base, its link_rate check, and the three outputs."""
    s = result.summary
    totals, deps = s.get("totals", {}), s.get("departments", {})
    rate = float(s.get("quality", {}).get("link_rate") or 0.0)
    by_state = [{"state": k, "名称": STATE_NAMES.get(k, k), "open": int(v)}
                for k, v in sorted(s.get("open_tasks_by_state", {}).items())]
    by_dept = [{"department": d, "部门": DEPARTMENT_NAMES[d], **{k: int(deps.get(d, {}).get("tasks", {}).get(k, 0))
                                                              for k in ("new", "open", "closed", "overdue")}}
               for d in DEPARTMENTS]
    yield dg.MaterializeResult(asset_key=BASE, metadata={
        "dagster/row_count": int(totals.get("persons", 0)),
        "persons": int(totals.get("persons", 0)), "record_roles": int(totals.get("roles", 0)),
        "open_tasks": int(totals.get("open_tasks", 0)), "link_rate": rate,
        "committed": result.committed,
        "link_methods": dg.MetadataValue.json(s.get("link_methods", {})),
        "open_tasks_by_state": _table(by_state, ["state", "名称", "open"]),
        "tasks_by_department": _table(by_dept, ["department", "部门", "new", "open", "closed", "overdue"]),
    })
    warn_below = rate_thresholds("city", thresholds).get("link_rate", 0.0)
    roles = int(totals.get("roles", 0))
    yield dg.AssetCheckResult(asset_key=BASE, check_name=LINK_RATE, severity=dg.AssetCheckSeverity.WARN,
                              passed=rate >= warn_below or roles < int(thresholds.get("min_base", 0) or 0),
                              metadata={"link_rate": rate, "warn_below": float(warn_below), "record_roles": roles})
    out = result.outputs
    kept = {"written": False} if not out else {}
    yield dg.MaterializeResult(asset_key=EXPORTS, metadata={
        **kept, "dagster/row_count": int(totals.get("persons", 0)),
        **{k.split("/")[1]: dg.MetadataValue.path(str(v)) for k, v in out.items() if k.startswith("exports/")}})
    yield dg.MaterializeResult(asset_key=TASK_FILES, metadata={
        **kept, "dagster/row_count": int(totals.get("open_tasks", 0)),
        **{k.split("/")[1]: dg.MetadataValue.path(str(v)) for k, v in out.items()
           if k.startswith("tasks/") and k.endswith(".xlsx")}})
    yield dg.MaterializeResult(asset_key=REPORTS, metadata={
        **kept, **({"summary.html": dg.MetadataValue.path(str(out["reports/summary"]))} if "reports/summary" in out else {})})


def business_date_assets(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(name="business_date", specs=_specs(), check_specs=_check_specs(partitions),
                    partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), can_subset=False)
    def business_date(context: AssetExecutionContext, popbase: PopbaseResource):
        settings = popbase.settings
        dates = sorted(context.partition_keys)

        def progress(r: DateResult) -> None:
            t = r.summary.get("totals", {})
            context.log.info(f"{r.business_date}: {'committed' if r.committed else 'nothing new'} in {r.seconds:.1f} s, "
                             f"persons {t.get('persons', 0):,}, open tasks {t.get('open_tasks', 0):,}, "
                             f"outputs {'written' if r.outputs else 'kept'}")
        try:
            results = run_dates(settings, dates, on_date=progress)
        except DateBlocked as blocked:  # retrying cannot help: the deliveries must be fixed
            yield from staged_results(blocked.result)
            raise dg.Failure(description=str(blocked), metadata={"reasons": _bullets(blocked.result.gates.errors)},
                             allow_retries=False) from None
        except LateDelivery as late:
            raise dg.Failure(description=str(late), allow_retries=False) from None
        last = results[dates[-1]]
        yield from staged_results(last)
        yield from base_results(last, load_thresholds(settings.quality_config))

    return business_date

