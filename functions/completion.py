"""Transfers-table stream records (filtered: all parts counted, or just FAILED) -> complete or clean up."""

from __future__ import annotations

from typing import Any

from functions._common import runtime
from s3sync.transfer.events import stream_changes


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    completer = runtime().completer()
    results = [completer.on_change(change) for change in stream_changes(event)]
    return {"results": [{"job": r.job_id, "outcome": r.outcome, "detail": r.detail} for r in results]}
