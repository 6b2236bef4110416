"""Time and memory of a generated city, date by date, through `popbase run`, on SQLite and PostgreSQL (issue 15, item 5).

    .venv/bin/python benchmarks/scale.py --persons 100000 --days 2 [--seed 3] [--backend sqlite|postgresql|both]
        [--pg-url URL] [--work DIR] [--json OUT]
    .venv/bin/python benchmarks/scale.py --chart docs/scale.png --from-json a.json b.json ...
    .venv/bin/python benchmarks/scale.py --persons N --work DIR --from-home HOME --days K [--rerun-last]

`--from-home HOME` (SQLite): start from a copy of a home kept by `--keep-home` (its base and out/) and run
only the next K daily dates of the city after the base's last date: a daily date of a large city measured
again without its historical date (38 min at 3M). `--rerun-last`: then the last date once more, with nothing
new (kind `re-run`; with `--days 0` and `--from-home`, the kept base's last date).

The city: `--work DIR` is reused when `DIR/landing/` exists (its `scale_city.json`, written when this script
generated it, must agree with --persons and --seed), else `python -m fixtures.city` generates it into DIR.
Without --work the city goes to a temporary folder, removed at the end.

For each backend: a fresh POPBASE_HOME whose `landing/` is a symbolic link to the city's (the pipeline only
reads landing/: staging writes under out/, a quarantined file is copied to out/quarantine/; a symlinked
*file* would be refused as "outside the delivery folder", a symlinked folder is not), a fresh database
(SQLite in the home; PostgreSQL: a new database created through --pg-url's server and dropped afterwards),
and a DAGSTER_HOME of its own whose dagster.yaml disables telemetry. Then the historical date and the next
--days dates, each as its own child process `popbase run --date D`. Per date:

- wall: seconds from starting the child to reaping it (imports and Dagster start-up included);
- CPU: user + system seconds of the child (`os.wait4`); on PostgreSQL the server's work is not in it:
  server CPU = the CPU seconds the server's processes used meanwhile, read from /proc when the server
  runs on this machine (every session's, not only the benchmark's; "-" on SQLite or a remote server);
- peak: the child's resident-memory high-water mark (`ru_maxrss` from `os.wait4`), GiB;
- phases: the child's "<D> in phases: ..." log line (exchange/process.py; the phases of `process_date`,
  each with the process's peak after it); `run` = the CLI's own "done in X s" (the Dagster run: stage,
  quality gates, read base, the phases, write base, outputs); start-up = wall - run (the interpreter,
  imports, Dagster's definitions and instance, and the process's exit); outside phases =
  run - the phases' sum (stage, gates, read and write the base, outputs);
- rows delivered: the sum of the manifests' `rows` of that date (every department); rows read: the
  child's "read N rows of the base" line (store.db.READ);
- load: the 1-minute load average when the date started (the machine may be shared).

A failed date prints the child's last 40 lines, keeps its home for a look, and exits non-zero.
`--chart` draws time and memory of the historical date and of the mean daily date (increments only) against city size
(log x), per backend, from JSON files this script wrote; it needs matplotlib, which popbase does not
depend on: without it the script says so and draws nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
CITY_FILE = "scale_city.json"  # what this script generated into --work, to check a reuse against
TAIL_LINES = 40
KIB_PER_GIB = 2 ** 20  # ru_maxrss is in KiB on Linux

PHASES_RE = re.compile(r"(\d{8}) in phases: (.*)$")
STEPS_RE = re.compile(r"(\d{8}) in steps: (.*)$")  # day.run: stage, gates, scope, process, write, index, outputs
OUTPUT_PARTS_RE = re.compile(r"outputs of (\d{8}) in parts: (.*)$")  # day.run.write_date_outputs
PHASE_RE = re.compile(r"^(.+?) ([\d.]+) s(?: \(peak ([\d.]+) GiB\))?$")
DONE_RE = re.compile(r"\] (\d{8}) done in ([\d.]+)s .*persons ([\d,]+)")
READ_RE = re.compile(r"(\d{8}) read ([\d,]+) rows of the base for ([\d,]+) rows delivered")


# ---------------------------------------------------------------------------------------------------------
# Measuring one child process
# ---------------------------------------------------------------------------------------------------------

def run_measured(cmd: list[str], env: dict, log_path: Path, cwd: Path) -> dict:
    """Run `cmd` to completion with stdout and stderr into `log_path`; its wall seconds, user+system CPU
    seconds, peak RSS (GiB) and exit code, from `os.wait4` on the child."""
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_gib": usage.ru_maxrss / KIB_PER_GIB,
            "exit_code": child.returncode}


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a text file."""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def parse_phases(text: str) -> dict[str, dict]:
    """The phases of the "<D> in phases: apply 0.0 s (peak 0.8 GiB), returns ..." line in a child's log:
    {phase: {"s": seconds, "peak_gib": GiB or None}}, in logged order; {} when the line is absent."""
    found = [m for m in map(PHASES_RE.search, text.splitlines()) if m]
    if not found:
        return {}
    phases = {}
    for part in found[-1].group(2).split(", "):
        m = PHASE_RE.match(part.strip())
        if m:
            phases[m.group(1)] = {"s": float(m.group(2)), "peak_gib": float(m.group(3)) if m.group(3) else None}
    return phases


def _timed_line(line_re: re.Pattern, text: str) -> tuple[dict[str, float], dict[str, float]]:
    """The last line of a child's log that `line_re` finds, its second group a list "name 1.2 s (peak 0.4 GiB),
    ...": ({name: seconds}, {name: GiB} for the names with a peak); empty when absent."""
    found = [m for m in map(line_re.search, text.splitlines()) if m]
    seconds, peaks = {}, {}
    for part in (found[-1].group(2).split(", ") if found else []):
        m = PHASE_RE.match(part.strip())
        if m:
            seconds[m.group(1)] = float(m.group(2))
            if m.group(3):
                peaks[m.group(1)] = float(m.group(3))
    return seconds, peaks


def parse_steps(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """The "<D> in steps: stage 1.2 s (peak 0.4 GiB), gates 3.4 s (peak 0.9 GiB), ..." line of a child's log
    (`day.run`): ({step: seconds}, {step: memory high-water mark after it, GiB}), empty when absent. The
    steps cover the whole run: `process` holds the phases."""
    return _timed_line(STEPS_RE, text)


def parse_output_parts(text: str) -> dict[str, float]:
    """The "outputs of <D> in parts: exports 3.1 s, task files 2.0 s, ..." line of a child's log: {part: seconds}."""
    return _timed_line(OUTPUT_PARTS_RE, text)[0]


def parse_run_lines(text: str) -> dict:
    """From a child's log: the CLI's run seconds and persons after the date ("done in X s ... persons N"),
    and the rows of the base it read ("read N rows of the base for M rows delivered"); None when absent."""
    done = [m for m in map(DONE_RE.search, text.splitlines()) if m]
    read = [m for m in map(READ_RE.search, text.splitlines()) if m]
    return {"run_s": float(done[-1].group(2)) if done else None,
            "persons_after": int(done[-1].group(3).replace(",", "")) if done else None,
            "rows_read": int(read[-1].group(2).replace(",", "")) if read else None}


# ---------------------------------------------------------------------------------------------------------
# The city
# ---------------------------------------------------------------------------------------------------------

def landed_dates(city: Path) -> list[str]:
    """Business dates with at least one delivery folder holding a manifest (as settings.landed_dates)."""
    return sorted({p.parent.name for p in (city / "landing").glob("*/*/manifest.json") if p.parent.name.isdigit()})


def manifests(city: Path, date: str) -> list[dict]:
    """The manifests of every department for one date."""
    return [json.loads(p.read_bytes().decode("utf-8-sig")) for p in sorted((city / "landing").glob(f"*/{date}/manifest.json"))]


def rows_delivered(city: Path, date: str) -> int:
    """The sum of the manifests' `rows` of a date: what the departments say they delivered."""
    return sum(int(f.get("rows") or 0) for m in manifests(city, date) for f in m.get("files", []))


def full_tables(city: Path, date: str) -> list[str]:
    """Tables delivered as `full` extracts on a date (on a daily date: a re-baseline)."""
    return sorted(f["table"] for m in manifests(city, date) for f in m.get("files", []) if f.get("extract_type") == "full")


def generate(city: Path, persons: int, days: int, seed: int) -> dict:
    """Generate the city into `city` with `python -m fixtures.city` (a child, measured like a date) and
    record its parameters in `city/scale_city.json`."""
    city.mkdir(parents=True, exist_ok=True)
    print(f"generating a city of {persons:,} persons with {days} day(s) of increments (seed {seed}) into {city} ...",
          flush=True)
    cmd = [sys.executable, "-m", "fixtures.city", "--persons", str(persons), "--days", str(days), "--seed", str(seed),
           "--out", str(city)]
    log_path = city / "generate.log"
    m = run_measured(cmd, dict(os.environ), log_path, ROOT)
    if m["exit_code"] != 0:
        print(tail(log_path), file=sys.stderr)
        raise SystemExit(f"generating the city failed (exit {m['exit_code']}); log: {log_path}")
    print(f"  generated in {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU (main process and its workers), "
          f"peak {m['peak_gib']:.2f} GiB", flush=True)
    info = {"persons": persons, "days": days, "seed": seed, "generated": m}
    (city / CITY_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def city_for(city: Path, persons: int, days: int, seed: int) -> dict:
    """The city in `city`: reused when its landing/ exists (checked against what generated it, when this
    script did), else generated. Returns its parameters ("generated" is None when reused)."""
    if not (city / "landing").is_dir():
        return generate(city, persons, days, seed)
    kept = city / CITY_FILE
    if kept.exists():
        info = json.loads(kept.read_text(encoding="utf-8"))
        if (info["persons"], info["seed"]) != (persons, seed) or info["days"] < days:
            raise SystemExit(f"{city} holds a city of {info['persons']:,} persons, {info['days']} day(s), seed "
                             f"{info['seed']}: not --persons {persons} --days {days} --seed {seed}")
        print(f"reusing the city in {city} ({info['persons']:,} persons, seed {info['seed']})", flush=True)
        return {**info, "generated": None}
    print(f"reusing the city in {city}: not generated by this script, so --persons {persons:,} and --seed {seed} "
          "are taken on trust", flush=True)
    return {"persons": persons, "days": days, "seed": seed, "generated": None}


# ---------------------------------------------------------------------------------------------------------
# One backend
# ---------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def database(backend: str, home: Path, pg_url: str):
    """A fresh, empty database: SQLite in `home`, or a new PostgreSQL database on --pg-url's server,
    dropped on the way out (as tests/conftest.py `database()`)."""
    if backend == "sqlite":
        yield f"sqlite:///{home / 'popbase.db'}"
        return
    import sqlalchemy as sa

    name = f"popbase_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]; [] when unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rfind(")") + 2:].split()


def postmaster_pid(pg_url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine and /proc shows it (the parent of
    the backend serving a connection); else None."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            try:  # the same pid on this machine must be a postgres process (a remote server's pid is not ours)
                local = Path(f"/proc/{backend}/comm").read_text().strip() == "postgres"
            except OSError:
                local = False
            stat = proc_stat(backend) if local else []
    finally:
        engine.dispose()
    return int(stat[1]) if stat else None


def server_cpu_s(postmaster: int) -> float:
    """CPU seconds used so far by the PostgreSQL server: its main process, the backends it has reaped
    (cutime, cstime) and its live processes (anyone's sessions, not only ours)."""
    main = proc_stat(postmaster)
    ticks = sum(int(x) for x in main[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == str(postmaster):
                ticks += int(stat[11]) + int(stat[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def popbase_command() -> str:
    """The `popbase` console script of the interpreter running this script (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "popbase"
    found = str(beside) if beside.exists() else shutil.which("popbase")
    if not found:
        raise SystemExit("no `popbase` command beside this Python or on PATH: install the project (pip install -e .)")
    return found


def child_env(home: Path, db_url: str, dagster_home: Path) -> dict:
    """This process's environment with the run's home, database and Dagster instance."""
    return {**os.environ, "POPBASE_HOME": str(home), "POPBASE_DB_URL": db_url, "DAGSTER_HOME": str(dagster_home)}


def popbase_switches() -> dict:
    """POPBASE_* variables of this environment that every date inherits (home and database are set per run)."""
    return {k: v for k, v in os.environ.items() if k.startswith("POPBASE_") and k not in ("POPBASE_HOME", "POPBASE_DB_URL")}


def run_date(city: Path, run_dir: Path, env: dict, date: str, kind: str, postmaster: int | None) -> dict:
    """`popbase run --date D` as a measured child; the figures of that date (with the PostgreSQL server's
    CPU meanwhile when `postmaster` is given). Exits on failure. `kind` "re-run": the date once more, with
    nothing new (its own log)."""
    log_path = run_dir / (f"run_{date}_again.log" if kind == "re-run" else f"run_{date}.log")
    load = os.getloadavg()[0]
    server_before = server_cpu_s(postmaster) if postmaster else None
    m = run_measured([popbase_command(), "run", "--date", date], env, log_path, run_dir)
    server = server_cpu_s(postmaster) - server_before if postmaster else None
    text = log_path.read_text(encoding="utf-8", errors="replace")
    if m["exit_code"] != 0:
        print(f"\n{date} failed (exit {m['exit_code']}); the last {TAIL_LINES} lines of the child:\n{tail(log_path)}",
              file=sys.stderr)
        raise SystemExit(f"{date} failed; its home and log are kept in {run_dir}")
    phases = parse_phases(text)
    lines = parse_run_lines(text)
    full = full_tables(city, date) if kind == "daily" else []
    row = {"date": date, "kind": kind, "full_tables": full, "rows_delivered": rows_delivered(city, date),
           **{k: m[k] for k in ("wall_s", "cpu_s", "peak_gib")}, "server_cpu_s": server, "load_1min": load, **lines,
           "phases": phases}
    row["steps"], row["step_peaks"] = parse_steps(text)
    row["output_parts"] = parse_output_parts(text)
    phase_sum = sum(p["s"] for p in phases.values())
    row["phases_s"] = phase_sum
    row["startup_s"] = m["wall_s"] - lines["run_s"] if lines["run_s"] is not None else None
    row["outside_phases_s"] = lines["run_s"] - phase_sum if lines["run_s"] is not None and phases else None
    return row


def run_backend(backend: str, city: Path, dates: list[str], pg_url: str, scratch: Path,
                keep_home: bool = False, from_home: Path | None = None, rerun: str = "") -> list[dict]:
    """Every date of the city, in order, on a fresh home and database of `backend`; the rows per date, and
    with `rerun` that (last processed) date run once more, with nothing new.
    The home is removed afterwards (kept when a date fails, or with `keep_home` on SQLite: its base is then
    there for benchmarks/scope_lookup.py and benchmarks/index_load.py)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"scale-{backend}-", dir=scratch))
    home, dagster_home = run_dir / "home", run_dir / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    (home / "landing").symlink_to((city / "landing").resolve(), target_is_directory=True)
    if from_home is not None:  # the kept base and its outputs (yesterday's exports are today's start)
        shutil.copy2(from_home / "popbase.db", home / "popbase.db")
        if (from_home / "out").exists():
            shutil.copytree(from_home / "out", home / "out")
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    rows = []
    print(f"\n{backend}: home {home}", flush=True)
    with database(backend, home, pg_url) as db_url:
        env = child_env(home, db_url, dagster_home)
        postmaster = postmaster_pid(db_url) if backend == "postgresql" else None
        runs = [("historical" if i == 0 and from_home is None else "daily", d) for i, d in enumerate(dates)]
        for kind, date in runs + ([("re-run", rerun)] if rerun else []):
            row = run_date(city, run_dir, env, date, kind, postmaster)
            rows.append(row)
            print(f"  {date} {kind:<10} wall {row['wall_s']:7.1f} s  CPU {row['cpu_s']:7.1f} s  "
                  f"peak {row['peak_gib']:5.2f} GiB  (load {row['load_1min']:.1f})", flush=True)
    if keep_home and backend == "sqlite":
        print(f"  home kept: {home}", flush=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rows


# ---------------------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------------------

def biggest_phases(phases: dict[str, dict], n: int = 3) -> str:
    """The n longest phases as "link 5.1 · roles 2.0 · states 1.2"."""
    top = sorted(phases.items(), key=lambda kv: -kv[1]["s"])[:n]
    return " · ".join(f"{k} {v['s']:.1f}" for k, v in top)


def fmt(value, spec: str) -> str:
    """`value` formatted, or "-" when it was not measured."""
    return "-" if value is None else format(value, spec)


def kind_label(row: dict) -> str:
    """historical, daily, or daily with the tables it re-baselines."""
    return row["kind"] + (f" (full {', '.join(row['full_tables'])})" if row["full_tables"] else "")


def print_table(backend: str, persons: int, rows: list[dict]) -> None:
    """A markdown table of one backend's dates, then every phase of each date."""
    print(f"\n### {backend}, {persons:,} persons\n")
    print("| date | kind | rows delivered | wall s | CPU s | server CPU s | peak GiB | start-up s | outside phases s "
          "| phases s | three biggest phases (s) | rows of the base read | persons after | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['date']} | {kind_label(r)} | {r['rows_delivered']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
              f"| {fmt(r['server_cpu_s'], '.1f')} | {r['peak_gib']:.2f} | {fmt(r['startup_s'], '.1f')} "
              f"| {fmt(r['outside_phases_s'], '.1f')} | {r['phases_s']:.1f} | {biggest_phases(r['phases'])} "
              f"| {fmt(r['rows_read'], ',')} | {fmt(r['persons_after'], ',')} | {r['load_1min']:.1f} |")
    print()
    for r in rows:
        peaks = r.get("step_peaks", {})
        print(f"{r['date']} steps: " + ", ".join(f"{k} {v:.1f} s" + (f" ({peaks[k]:.1f} GiB)" if k in peaks else "")
                                                 for k, v in r.get("steps", {}).items()))
    for r in rows:
        if r.get("output_parts"):
            print(f"{r['date']} outputs: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["output_parts"].items()))
    for r in rows:
        print(f"{r['date']} phases: " + ", ".join(
            f"{k} {v['s']:.1f} s" + (f" ({v['peak_gib']:.1f} GiB)" if v["peak_gib"] else "") for k, v in r["phases"].items()))


# ---------------------------------------------------------------------------------------------------------
# The chart
# ---------------------------------------------------------------------------------------------------------

def mean(key: str, rows: list[dict]) -> float | None:
    """The mean of `key` over rows, None for no rows."""
    return sum(r[key] for r in rows) / len(rows) if rows else None


def short_count(x: float, _pos=None) -> str:
    """20000 -> "20k", 3000000 -> "3M": tick labels of the city-size axis."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def chart_points(results: list[dict]) -> dict[str, list[tuple]]:
    """Per backend, sorted by city size: (persons, historical wall s, mean daily wall s, historical peak GiB,
    mean daily peak GiB); the daily means are over the dates with increments only (a date carrying a full
    extract re-baselines a table and reads that table whole: the issue's daily date is the other kind),
    None for a city run without such dates."""
    points: dict[str, list[tuple]] = {}
    for res in results:
        for backend, rows in res["backends"].items():
            hist = [r for r in rows if r["kind"] == "historical"]
            daily = [r for r in rows if r["kind"] == "daily" and not r.get("full_tables")]
            points.setdefault(backend, []).append((res["city"]["persons"], mean("wall_s", hist), mean("wall_s", daily),
                                                   mean("peak_gib", hist), mean("peak_gib", daily)))
    return {b: sorted(p) for b, p in points.items()}


def draw_chart(json_paths: list[Path], out: Path) -> int:
    """Time and memory against city size (log x) from result files; 0 when drawn or skipped for want of
    matplotlib (said so), 2 when a file cannot be read."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no chart drawn. It is not a dependency of popbase; install it into an "
              "environment of your own to draw the chart (pip install matplotlib).", file=sys.stderr)
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    try:
        results = [json.loads(Path(p).read_text(encoding="utf-8")) for p in json_paths]
    except (OSError, ValueError) as err:
        print(f"cannot read the results: {err}", file=sys.stderr)
        return 2
    points = chart_points(results)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    for backend, pts in points.items():
        colour = styles.get(backend)
        x = [p[0] for p in pts]
        for ax, hist_i, daily_i in ((ax_time, 1, 2), (ax_mem, 3, 4)):
            ax.plot(x, [p[hist_i] for p in pts], "o-", color=colour, label=f"{backend}, historical date")
            daily = [(xi, p[daily_i]) for xi, p in zip(x, pts) if p[daily_i] is not None]
            if daily:
                ax.plot(*zip(*daily), "s--", color=colour, label=f"{backend}, daily date, increments (mean)")
    for ax, title, unit in ((ax_time, "time per date", "wall s"), (ax_mem, "peak memory per date", "GiB")):
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({p[0] for pts in points.values() for p in pts}))  # the sizes measured, no others
        ax.xaxis.set_major_formatter(FuncFormatter(short_count))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("city size (persons)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("popbase run per business date against city size (benchmarks/scale.py)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"chart written to {out}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--persons", type=int, help="city size: persons on the historical date")
    ap.add_argument("--days", type=int, default=1, help="daily dates run after the historical date")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL,
                    help="an existing PostgreSQL database to connect to for CREATE/DROP DATABASE")
    ap.add_argument("--work", type=Path, help="the city's folder: reused when its landing/ exists, else generated into")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep-home", action="store_true",
                    help="keep the SQLite home and its base after the last date (for scope_lookup.py, index_load.py)")
    ap.add_argument("--from-home", type=Path,
                    help="SQLite: start from a copy of this kept home and run only the --days daily dates after its "
                         "base's last date")
    ap.add_argument("--rerun-last", action="store_true",
                    help="then run the last date once more, with nothing new (kind re-run)")
    ap.add_argument("--chart", type=Path, help="draw the chart from --from-json files into this PNG (needs matplotlib)")
    ap.add_argument("--from-json", type=Path, nargs="+", default=[], help="result files for --chart")
    args = ap.parse_args(argv)
    if args.chart:
        if not args.from_json:
            ap.error("--chart needs --from-json FILE ...")
    elif args.persons is None:
        ap.error("--persons is required (or --chart with --from-json)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.chart:
        return draw_chart(args.from_json, args.chart)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    city = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="popbase-scale-city-"))
    scratch = city if args.work else Path(tempfile.gettempdir())  # where the homes go (a failed one is kept)
    try:
        info = city_for(city, args.persons, args.days, args.seed)
        if args.from_home:
            if backends != ["sqlite"]:
                raise SystemExit("--from-home copies a SQLite base: use it with --backend sqlite")
            with contextlib.closing(sqlite3.connect(args.from_home / "popbase.db")) as con:
                last = con.execute("SELECT max(business_date) FROM runs").fetchone()[0] or ""
            dates = [d for d in landed_dates(city) if d > last][: args.days]
            rerun = (dates or [last])[-1] if args.rerun_last else ""
            if len(dates) < args.days:
                raise SystemExit(f"{city} has {len(dates)} landed date(s) after {last}; --days {args.days} needs {args.days}")
        else:
            dates = landed_dates(city)[: args.days + 1]
            rerun = dates[-1] if args.rerun_last and dates else ""
            if len(dates) < args.days + 1:
                raise SystemExit(f"{city} has {len(dates)} landed date(s); --days {args.days} needs {args.days + 1}")
        switches = popbase_switches()
        if switches:
            print(f"passed on to every date: {switches}")
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "cores": os.cpu_count(), "environment": switches,
                  "city": {"work": str(city), **info, "dates": dates}, "backends": {}}
        for backend in backends:
            result["backends"][backend] = run_backend(backend, city, dates, args.pg_url, scratch,
                                                       keep_home=args.keep_home, from_home=args.from_home,
                                                       rerun=rerun)
            print_table(backend, args.persons, result["backends"][backend])
            if args.json:  # after each backend: a later failure keeps what was measured
                args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
        if args.json:
            print(f"\nfigures written to {args.json}")
    finally:
        if not args.work:
            shutil.rmtree(city, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
