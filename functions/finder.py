"""The scheduled finder (optional: lambda.yaml's `FinderSchedule`): list the source and destination buckets and hand
every object whose copy is missing or differs to the splitter (s3sync.transfer.finder has the rule).

In the stacks it runs inside the splitter function (its role, secret and code), which routes an event carrying
`contract.FIND_EVENT` here; the rule's input names the bucket: {"s3sync": "find", "bucket": "...", "prefix": "..."}.
A run stops listing `MARGIN_S` seconds before the function's timeout and says where it stopped; where the stack keeps
a cursor (FinderCursor, an SSM parameter: s3sync.transfer.finder), the next run resumes after that key, and the run
that reaches the end of the listing sends the next one back to the first key. An event's own "start_after" wins.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from functions._common import entry, runtime
from s3sync.contract import FIND_EVENT, Metric
from s3sync.transfer.admission import Admission
from s3sync.transfer.finder import Finder, FinderCursor
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.reattempt import Reattempter

log = logging.getLogger("s3sync.finder")

MARGIN_S = 30.0


def is_find_event(event: Any) -> bool:
    return isinstance(event, dict) and all(event.get(k) == v for k, v in FIND_EVENT.items())


@entry
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    rt = runtime()
    s = rt.settings.require("queue_url", "transfers_table", "parts_table", "dest_bucket")
    bucket = str(event.get("bucket") or "")
    if not bucket:
        raise ValueError("finder event without a bucket: expected {\"s3sync\": \"find\", \"bucket\": \"...\"}")
    refused = Admission(rt.settings).find(bucket)  # only the stack's source bucket is listed and copied
    if refused is not None:
        return {"refused": [refused.as_dict()]}
    deadline = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        deadline = time.monotonic() + max(1.0, context.get_remaining_time_in_millis() / 1000 - MARGIN_S)
    prefix = str(event.get("prefix") or "")
    cursor = FinderCursor(rt.client("ssm"), s.finder_cursor) if s.finder_cursor else None
    position = cursor.load(bucket, prefix) if cursor else None
    start_after = str(event.get("start_after") or (position.start_after if position else ""))
    started = time.time()
    splitter = rt.splitter()
    finder = Finder(source=rt.source, dest=rt.dest, ledger=rt.ledger, splitter=splitter,
                    reattempter=Reattempter(ledger=rt.ledger, splitter=splitter, source=rt.source, dest=rt.dest),
                    source_bucket=bucket, dest_bucket=s.dest_bucket, dest_prefix=s.dest_prefix,
                    threads=int(event.get("threads") or 8), dest_encryption=s.dest_encryption)
    result = finder.run(prefix, start_after=start_after, deadline=deadline)
    handed = sum(n for outcome, n in result.outcomes.items() if outcome in ("enqueued", "copied", "re-copied"))
    MetricsLogger.for_queue(s.queue_url).count(Metric.OBJECTS_FOUND, handed, bucket=bucket)
    out = {**result.as_dict(), "started_after": start_after or None}
    if cursor is not None and position is not None:
        following = dataclasses.replace(position, start_after=start_after).after(result, started)
        out["cursor"] = {"parameter": cursor.name, "next_start_after": following.start_after or None,
                         "kept": cursor.save(following)}
    if not result.complete:
        log.warning("finder stopped before the end of the listing",
                    extra={"stopped_at": result.stopped_at, "resumes": bool(out.get("cursor", {}).get("kept"))})
    return out
