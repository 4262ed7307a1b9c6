"""S3 ObjectCreated notification -> plan the object, write its job, enqueue its parts."""

from __future__ import annotations

from typing import Any

from functions._common import runtime
from s3sync.transfer.events import s3_object_refs


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    splitter = runtime().splitter()
    results = [splitter.split(ref) for ref in s3_object_refs(event)]
    return {"jobs": [{"job": r.job_id, "outcome": r.outcome, "parts": r.parts} for r in results]}
