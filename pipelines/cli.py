"""`popbase`: run business dates through the Dagster job in-process (visible in the Dagster UI).

    popbase run --date 20260301
    popbase backfill --start 20260301 --end 20260307
    popbase demo [--persons 20000 --days 3]
    popbase ui
    popbase audit --rkid RK355F140C42C4C636
    popbase explain --role "civil|dibao|D000123|SELF"
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import click

from catalog import DEPARTMENTS
from settings import LOG_FORMAT, Settings, landed_dates, quiet_libraries


INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
"""


def _settings() -> Settings:
    """The settings of this deployment (the environment is read here and in `_dagster_instance` only)."""
    return Settings.from_env()


def _dagster_instance(home: Path):
    """The instance in DAGSTER_HOME; when unset, a persistent one under POPBASE_HOME/dagster."""
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        dh = home / "dagster"
        dh.mkdir(parents=True, exist_ok=True)
        if not (dh / "dagster.yaml").exists():  # an instance of our own: no telemetry, no welcome dialog
            (dh / "dagster.yaml").write_text(INSTANCE_YAML, encoding="utf-8")
        os.environ["DAGSTER_HOME"] = str(dh)
    return DagsterInstance.get()


def _check_date(value: str) -> str:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a business date CCYYMMDD (e.g. 20260301)") from None
    return value


def _run_dates(settings: Settings, dates: list[str]) -> list[dict]:
    """One Dagster run per date, in order (the job calls `day.run_dates`); prints progress and returns
    the run summaries."""
    quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("popbase").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:  # ours at INFO, the libraries' (GX sets INFO on its own) at WARNING
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.startswith("popbase"))
    from pipelines.definitions import build_definitions
    from store import base, db

    if not settings.landing.is_dir():
        raise click.ClickException(
            f"{settings.home} has no landing/ folder: is POPBASE_HOME right? Nothing was run "
            "(a mistyped home would otherwise create an empty base).")
    instance = _dagster_instance(settings.home)
    job = build_definitions(settings).resolve_job_def("popbase_daily")
    summaries = []
    for i, d in enumerate(dates, 1):
        t0 = time.monotonic()
        click.echo(f"[{i}/{len(dates)}] business date {d} ...", err=True)
        if not any((settings.landing / dept / d).is_dir() for dept in DEPARTMENTS):
            click.echo(f"[{i}/{len(dates)}] WARNING: no department delivered anything for {d}", err=True)
        result = job.execute_in_process(partition_key=d, instance=instance, raise_on_error=False,
                                        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
        if not result.success:
            raise click.ClickException(f"run {result.run_id[:8]} for {d} failed:\n" + "\n".join(_failures(result)))
        for e in result.get_asset_check_evaluations():  # Dagster's own console is silent: say what failed
            if not e.passed and e.description:
                click.echo(f"[{i}/{len(dates)}] WARNING {e.check_name}: {e.description}", err=True)
        summary = base.run_summary(db.engine_for(settings.db_url), d) or {}
        summaries.append(summary)
        t = summary.get("totals", {})
        click.echo(f"[{i}/{len(dates)}] {d} done in {time.monotonic() - t0:.1f}s (run {result.run_id[:8]}): "
                   f"loaded {t.get('loaded_rows', 0):,} rows, rejected {t.get('rejected_rows', 0):,}, "
                   f"persons {t.get('persons', 0):,}, open tasks {t.get('open_tasks', 0):,}", err=True)
    return summaries


def _failures(result) -> list[str]:
    """What made a run fail, as an operator reads it: the error of each failed step (the reasons of a
    blocked date, a refused late date, ...), without Dagster's wrapping."""
    out = []
    for e in result.all_events:
        if e.is_step_failure and e.event_specific_data and e.event_specific_data.error:
            err = e.event_specific_data.error
            while err.cause is not None and "DagsterExecutionStepExecutionError" in err.cls_name:
                err = err.cause
            text = err.message.strip()
            if err.cls_name == "Failure":  # our own failure: its description is the reason
                text = text.split(": ", 1)[-1]
            out.append(f"  {text}")
    return out or ["  (see the run in the Dagster UI)"]


@click.group()
def main():
    """popbase: the actual-population base database pipeline (实有人口基础库)."""


@main.command()
@click.option("--date", "date", required=True, callback=lambda c, p, v: _check_date(v), help="business date CCYYMMDD")
def run(date):
    """Process everything delivered for one business date and write its outputs."""
    settings = _settings()
    _run_dates(settings, [date])
    click.echo(f"outputs under {settings.out}")


@main.command()
@click.option("--start", required=True, callback=lambda c, p, v: _check_date(v))
@click.option("--end", required=True, callback=lambda c, p, v: _check_date(v))
def backfill(start, end):
    """Process every business date from START to END, in order."""
    d0, d1 = (datetime.strptime(x, "%Y%m%d").date() for x in (start, end))
    if d1 < d0:
        raise click.BadParameter(f"--end {end} is before --start {start}")
    dates = [(d0 + timedelta(days=i)).strftime("%Y%m%d") for i in range((d1 - d0).days + 1)]
    settings = _settings()
    _run_dates(settings, dates)
    click.echo(f"outputs under {settings.out}")


@main.command()
@click.option("--persons", default=20_000, show_default=True, help="size of the demo city")
@click.option("--days", default=3, show_default=True, help="days of incremental deliveries after the historical load")
@click.option("--seed", default=1, show_default=True)
def demo(persons, days, seed):
    """Generate a demo city under POPBASE_HOME and run every one of its business dates."""
    from fixtures.city import generate_city

    home = _settings().home
    if not landed_dates(home):
        click.echo(f"generating a city of {persons:,} persons with {days} days of increments under {home} ...", err=True)
        generate_city(home, persons=persons, days=days, seed=seed)
    settings = _settings()  # after generating: the first business date is the city's first landed date
    dates = settings.landed_dates()
    summaries = _run_dates(settings, dates)
    last = summaries[-1]
    out = settings.out
    click.echo("\nDemo finished.")
    click.echo(f"  business dates: {', '.join(dates)}")
    click.echo(f"  persons: {last['totals']['persons']:,}   record roles: {last['totals']['roles']:,}   "
               f"link rate: {last['quality'].get('link_rate') or 0:.2%}   open tasks: {last['totals']['open_tasks']:,}")
    click.echo(f"  summary:  {out / 'reports' / dates[-1] / 'summary.html'}")
    click.echo(f"  exports:  {out / 'exports' / dates[-1]}")
    click.echo(f"  tasks:    {out / 'tasks'}/<dept>/{dates[-1]}/")
    click.echo(f"  rejects:  {out / 'rejects'}")
    click.echo("  Dagster UI with these runs: popbase ui")


@main.command()
@click.option("--rkid", required=True, help="person id (人口编号)")
def audit(rkid):
    """The change trail (修改痕迹) of one person: old value, new value, cause, who, when."""
    from store import db

    with db.engine_for(_settings().db_url).connect() as conn:
        trail = db.audit_for_person(conn, rkid)
    if trail.empty:
        raise click.ClickException(f"no audit entries for {rkid}")
    cols = ["business_date", "entity", "entity_key", "field", "old", "new", "cause", "actor", "at"]
    click.echo(trail[cols].to_string(index=False))


@main.command()
@click.option("--role", required=True, help="the record role BM|BH|YWZJ|JS, e.g. civil|dibao|D000123|SELF")
def explain(role):
    """Why a record role is linked to its person: the waterfall of a fuzzy link's match weights."""
    from linkage.explain import mask_key, report
    from store import base, db

    key = role.strip()
    if key.count("|") != 3:
        raise click.BadParameter(f"{mask_key(key)!r} is not BM|BH|YWZJ|JS (e.g. civil|dibao|D000123|SELF)")
    with db.engine_for(_settings().db_url).connect() as conn:
        found = base.links_of(conn, [key])
    if found.empty:
        raise click.ClickException(f"no link for {mask_key(key)}")
    link = found.iloc[0]
    try:
        ppdf = float(link["PPDF"])
    except ValueError:
        ppdf = 0.0
    click.echo("\n".join(report(key, link["RKID"], link["PPFS"], ppdf, link.get("PPMX", ""))))


@main.command()
@click.option("--port", default=3000, show_default=True)
def ui(port):
    """The Dagster UI and daemon on localhost, with the same instance as `popbase run`."""
    settings = _settings()
    _dagster_instance(settings.home)
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})", err=True)
    # the code location reads its settings from the environment: hand it the home resolved here
    env = {**os.environ, "POPBASE_HOME": str(settings.home), "POPBASE_DB_URL": settings.db_url}
    raise SystemExit(subprocess.call(cmd, cwd=root, env=env))


if __name__ == "__main__":
    main()
