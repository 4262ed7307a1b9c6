"""What the splitter function acts on: only what its deployed configuration names (issue 18, item 1).

Whoever may call lambda:InvokeFunction on the splitter can hand it any event, and an event names the bucket and key
the function then reads from, writes at the destination under the China keys, or (a deletion) deletes there. So
every event is checked against the function's own settings, which the template sets, before anything is done:

- ObjectCreated records and the scheduled finder's event: the bucket must be the stack's source bucket
  (contract.Env.SOURCE_BUCKET, from SourceBucketName); with none configured, nothing is admitted;
- ObjectRemoved records and EventBridge "Object Deleted" events: the same, and delete propagation must be on
  (contract.Env.PROPAGATE_DELETES, from PropagateDeletes): with it off a deletion is refused, whoever sent it;
- the destination key (DestPrefix + key) must fit S3's key limit: "The object key name ... can be up to 1,024
  bytes long" (S3 user guide, "Naming Amazon S3 objects").

A refused event is logged at ERROR with its reason and reported in the function's result; nothing is read, written
or deleted for it. (A deletion that is admitted still deletes only when the source answers 404: see
s3sync.transfer.deletes.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from s3sync.contract import Env
from s3sync.transfer.deletes import Deletion
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.settings import Settings

log = logging.getLogger("s3sync.admission")

MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class Refusal:
    """An event (or one record of it) the splitter would not act on, and why."""

    kind: str  # "created", "deleted" or "find"
    bucket: str
    key: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Admission:
    """The checks above, for one function's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def bucket_problem(self, bucket: str) -> str:
        expected = self.settings.source_bucket
        if not expected:
            return f"no source bucket is configured ({Env.SOURCE_BUCKET} is empty): no event is acted on"
        if bucket != expected:
            return f"bucket {bucket!r} is not this stack's source bucket {expected!r}"
        return ""

    def key_problem(self, key: str) -> str:
        dest_key = self.settings.dest_prefix + key
        if len(dest_key.encode("utf-8")) > MAX_KEY_BYTES:
            return f"destination key is {len(dest_key.encode('utf-8'))} bytes; S3 keys are at most {MAX_KEY_BYTES}"
        return ""

    def created(self, refs: Iterable[ObjectRef]) -> tuple[list[ObjectRef], list[Refusal]]:
        admitted, refused = [], []
        for ref in refs:
            reason = self.bucket_problem(ref.bucket) or self.key_problem(ref.key)
            if reason:
                refused.append(self._refuse("created", ref.bucket, ref.key, reason))
            else:
                admitted.append(ref)
        return admitted, refused

    def deleted(self, deletions: Iterable[Deletion]) -> tuple[list[Deletion], list[Refusal]]:
        admitted, refused = [], []
        for d in deletions:
            reason = self.bucket_problem(d.bucket)
            if not reason and not self.settings.propagate_deletes:
                reason = f"delete propagation is off ({Env.PROPAGATE_DELETES} is not true): the copy is kept"
            reason = reason or self.key_problem(d.key)
            if reason:
                refused.append(self._refuse("deleted", d.bucket, d.key, reason))
            else:
                admitted.append(d)
        return admitted, refused

    def find(self, bucket: str) -> Refusal | None:
        reason = self.bucket_problem(bucket)
        return self._refuse("find", bucket, "", reason) if reason else None

    @staticmethod
    def _refuse(kind: str, bucket: str, key: str, reason: str) -> Refusal:
        log.error("event refused", extra={"kind": kind, "bucket": bucket, "key": key, "reason": reason})
        return Refusal(kind, bucket, key, reason)
