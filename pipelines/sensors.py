"""Start a run when a department's manifest.json lands (it is written last: the folder is complete)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from pipelines.resources import PopbaseResource


def manifest_run_requests(landing: Path, cursor: str | None, valid: set[str]) -> tuple[list[dg.RunRequest], str]:
    """Run requests for manifests not seen before (dates among the `valid` partition keys); the cursor
    maps manifest path -> content hash."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    requests = []
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


def manifest_sensor(job, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(name="manifest_sensor", job=job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Runs the business date of every newly landed (or changed) manifest.json.")
    def _sensor(context: dg.SensorEvaluationContext, popbase: PopbaseResource):
        landing = popbase.settings.landing  # the same home the job's resource uses
        if not landing.exists():
            return dg.SkipReason(f"no landing folder at {landing}")
        requests, cursor = manifest_run_requests(landing, context.cursor, set(partitions.get_partition_keys()))
        context.update_cursor(cursor)
        if not requests:
            return dg.SkipReason("no new manifest")
        return requests

    return _sensor
