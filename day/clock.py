"""Seconds and memory of a date's named steps: one clock for the date's process and for its workers."""
from __future__ import annotations

import logging
import time

from exchange.process import peak_gib

log = logging.getLogger("popbase")


class Clock:
    """Seconds per named step, added into `steps` (a step may come back: a widened scope), and the process's
    memory high-water mark after it into `peaks` (which step raised a date's peak). With `log_as`, a step is
    also logged as it ends, "<log_as> <step> in <s> s (peak <GiB> GiB)", when it took `log_from` seconds or
    more: a large date says where it is instead of keeping silent for minutes (a 10M first date stages for
    three), and a worker's steps are read in the log."""

    def __init__(self, steps: dict[str, float] | None = None, peaks: dict[str, float] | None = None,
                 log_as: str = "", log_from: float = 0.0):
        self.steps = steps if steps is not None else {}
        self.peaks = peaks if peaks is not None else {}
        self.log_as, self.log_from, self.last = log_as, log_from, time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self.last
        self.peaks[name] = peak_gib()
        if self.log_as and now - self.last >= self.log_from:
            log.info("%s %s in %.1f s (peak %.1f GiB)", self.log_as, name, now - self.last, self.peaks[name])
        self.last = now
