"""Time the synthetic city generator: ``python benchmarks/generate_city.py --persons 1000000 --days 3``.

Prints the rows delivered per table and date, the live record roles per date, the seconds taken and the peak
memory: the main process's (also after each stage); the largest file-writing worker's peak RSS (a worker is
forked from the main process and counts the pages it shares with it until it execs: this figure can be the main
process's size at that moment, not memory of its own); and the peak of the whole process tree (the main
process's RSS plus the PSS of the workers alive at the same moment, such as the one writing a big xlsx
delivery), sampled every 0.2 s. The main process's RSS is read from ``/proc/<pid>/statm`` (constant cost): its
PSS, from ``smaps_rollup``, walks every page of a 10 GiB process (~0.15 s a read, holding its memory map lock),
which slowed the run it measured. A forked worker's pages shared with the main process are then counted twice (a
slight overestimate; workers fork only with ``workers`` > 1). Targets on 2 cores: 1,000,000 persons x 3 days in
under 2 minutes; 10,000,000 x 3 in under 15 minutes and 12 GiB.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4 / 1024


def _rss_mib(pid) -> float:
    """Resident set size of one process in MiB (0 once it is gone), from statm: no page walk."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_MIB
    except (OSError, IndexError, ValueError):
        return 0.0


def _pss_mib(pid) -> float:
    """Proportional set size of one process in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


class TreeMemory:
    """Samples the RSS of this process plus the PSS of its children in a thread; ``peak`` is the largest sum
    seen."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            total = _rss_mib(me) + sum(_pss_mib(c) for c in _children(me))
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        if os.path.exists("/proc/self/smaps_rollup"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary")
    a = ap.parse_args(argv)

    from fixtures.city import generate_city

    out = a.out or tempfile.mkdtemp(prefix="popbase_city_")
    try:
        t0 = time.perf_counter()
        c0 = time.process_time()
        with TreeMemory() as tree:
            if a.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                s = prof.runcall(generate_city, out, persons=a.persons, days=a.days, seed=a.seed)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            else:
                s = generate_city(out, persons=a.persons, days=a.days, seed=a.seed)
        secs = time.perf_counter() - t0
        print(f"persons={a.persons:,} days={a.days} seed={a.seed} out={out}")
        print(f"{'date':<10} {'dept':<16} {'table':<10} {'rows':>10}")
        total = 0
        for date, depts in s["rows"].items():
            for dept, tabs in depts.items():
                for table, rows in tabs.items():
                    print(f"{date:<10} {dept:<16} {table:<10} {rows:>10,}")
                    total += rows
        print(f"delivered rows: {total:,}")
        for date, n in s["roles"].items():
            print(f"live record roles {date}: {n:,}")
        print(f"persons in truth: {s['persons']:,}")
        print(f"delivery anomalies: {', '.join(s['delivery_anomalies'])}")
        print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
        print("stage cpu seconds (main process): " + ", ".join(f"{k} {v:.1f}" for k, v in s["cpu_timings"].items()))
        print("main process peak MiB after each stage: " + ", ".join(f"{k} {v:,}" for k, v in s["peak_mib"].items()))
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"cpu seconds: main process {time.process_time() - c0:.1f}, "
              f"file-writing workers {kids.ru_utime + kids.ru_stime:.1f}")
        print(f"peak memory: main process {me.ru_maxrss / 1024:.0f} MiB, "
              f"largest worker {kids.ru_maxrss / 1024:.0f} MiB (shared pages counted), "
              f"process tree (main RSS + workers' PSS, sampled) {tree.peak:.0f} MiB")
        print(f"seconds: {secs:.1f}")
    finally:
        if a.out is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
