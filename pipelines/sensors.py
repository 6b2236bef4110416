"""Start a run when a department's manifest.json lands (it is written last: the folder is complete)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from pipelines.jobs import daily_job
from pipelines.partitions import business_dates


def manifest_run_requests(landing: Path, cursor: str | None) -> tuple[list[dg.RunRequest], str]:
    """Run requests for manifests not seen before; the cursor maps manifest path -> content hash."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    requests = []
    valid = set(business_dates.get_partition_keys())
    for manifest in sorted(landing.glob("*/*/manifest.json")):
        date = manifest.parent.name
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        key = str(manifest.relative_to(landing))
        if seen.get(key) == digest:
            continue
        seen[key] = digest
        if date not in valid:
            continue
        requests.append(dg.RunRequest(
            partition_key=date,
            run_key=f"{key}:{digest}",  # the same manifest never starts two runs
            tags={"popbase/manifest": key},
        ))
    return requests, json.dumps(seen, sort_keys=True)


@dg.sensor(job=daily_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Runs the business date of every newly landed (or changed) manifest.json.")
def manifest_sensor(context: dg.SensorEvaluationContext):
    landing = Path(os.environ.get("POPBASE_HOME", "./popbase_home")).resolve() / "landing"
    if not landing.exists():
        return dg.SkipReason(f"no landing folder at {landing}")
    requests, cursor = manifest_run_requests(landing, context.cursor)
    context.update_cursor(cursor)
    if not requests:
        return dg.SkipReason("no new manifest")
    return requests
