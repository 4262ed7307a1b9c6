"""Transfers-table stream records (filtered: all parts counted, or just FAILED) -> complete or clean up.

Failures are reported per record (`batchItemFailures`, the mapping has ReportBatchItemFailures): Lambda retries
from the first failed record instead of the whole batch.
"""

from __future__ import annotations

import logging
from typing import Any

from functions._common import entry, runtime
from s3sync.transfer.events import stream_changes

log = logging.getLogger("s3sync.completion")


@entry
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    completer = runtime().completer()
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []  # Lambda's batchItemFailures
    for record, change in zip(event.get("Records") or [], stream_changes(event), strict=True):
        if failures:  # after a failure, report the rest too: they are retried in order
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
            continue
        try:
            r = completer.on_change(change)
            results.append({"job": r.job_id, "outcome": r.outcome, "detail": r.detail})
        except Exception as exc:  # noqa: BLE001 - reported as a batch item failure, retried by Lambda
            log.exception("completion record failed", extra={"job": change.keys.get("job_id"), "reason": str(exc)})
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
    return {"batchItemFailures": failures, "results": results}
