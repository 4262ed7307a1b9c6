"""Read a DynamoDB stream the way a Lambda event source mapping does, for the local runner.

moto records stream items but never invokes a function from them (that needs Docker); `StreamReader.poll()` pulls
what is new, and the runner filters it (`s3sync.local.patterns`), converts it (`s3sync.local.events.dynamodb_stream`)
and calls the completion handler in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["StreamReader"]

log = logging.getLogger(__name__)


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    last_sequence: int | None = None  # highest sequence number returned from this shard
    closed: bool = False  # NextShardIterator came back null: the shard is read to its end
    started: bool = False
    from_latest: bool = False  # opened at LATEST: until a record arrives, its iterator is kept as is
    reopened_at: float | None = None  # the reader's clock at the last re-open after an empty read; None: never


def _is_code(exc: Exception, *codes: str) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in codes


class StreamReader:
    """Poll every shard of one DynamoDB stream; each record is returned once, in order within its shard.

    - `start="TRIM_HORIZON"` reads what the stream already holds; `"LATEST"` only what is written after the reader
      first looks at a shard. Shards discovered later (children of a split) are always read from their start.
    - Parents are read before their children, as DynamoDB requires for per-key ordering.
    - Iterators are followed through `NextShardIterator`; an expired iterator is replaced by one
      `AFTER_SEQUENCE_NUMBER` the last record returned, and records at or below the last sequence number of a
      shard are dropped, so a record is never returned twice.
    - `poll()` returns the records in the boto3 shape (`dynamodbstreams.get_records()["Records"]`); convert them
      with `s3sync.local.events.dynamodb_stream(records, reader.stream_arn)` for a handler.

    Not thread-safe: one reader per polling thread.
    """

    def __init__(
        self,
        streams_client: Any,
        stream_arn: str,
        *,
        start: str = "TRIM_HORIZON",
        limit: int = 1000,
        max_batches_per_shard: int = 100,
        refresh_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if start not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"start must be TRIM_HORIZON or LATEST, not {start!r}")
        self.client = streams_client
        self.stream_arn = stream_arn
        self.start = start
        self.limit = limit
        self.max_batches_per_shard = max_batches_per_shard
        self.refresh_every = refresh_every  # seconds between shard listings, and between re-opens of a shard
        # Every time compared with this clock was read from it: a monotonic clock's origin is arbitrary (the boot, on
        # Linux), so a constant such as 0.0 as "long ago" would hold back the first re-open on a fresh machine.
        self._clock = clock
        self._shards: dict[str, _Shard] = {}  # insertion order = discovery order
        self._first_describe = True
        self._described_at = float("-inf")

    # -- shard discovery ---------------------------------------------------------------------------------------------
    def _describe_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            desc = self.client.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(desc.get("Shards", []))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _discover(self) -> None:
        now = self._clock()
        if not self._first_describe and now - self._described_at < self.refresh_every:
            return  # shards change rarely (a split every few hours in DynamoDB; never in moto)
        self._described_at = now
        initial = self._first_describe
        self._first_describe = False
        for shard in self._describe_shards():
            sid = shard["ShardId"]
            if sid in self._shards:
                continue
            state = _Shard(sid, shard.get("ParentShardId"))
            ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
            if initial and self.start == "LATEST":
                if ending:  # closed before we started: nothing "latest" in it
                    state.closed = True
                    state.started = True
                else:
                    state.iterator = self._iterator(sid, "LATEST")
                    state.started = True
                    state.from_latest = True
            self._shards[sid] = state

    def _iterator(self, shard_id: str, kind: str, sequence: int | None = None) -> str | None:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if sequence is not None:
            kwargs["SequenceNumber"] = str(sequence)
        try:
            return self.client.get_shard_iterator(**kwargs).get("ShardIterator")
        except Exception as exc:
            if _is_code(exc, "ResourceNotFoundException", "TrimmedDataAccessException"):
                log.warning("shard %s of %s is gone: %s", shard_id, self.stream_arn, exc)
                return None
            raise

    def _ordered(self) -> list[_Shard]:
        """Shards with every known parent before its children."""
        out: list[_Shard] = []
        seen: set[str] = set()

        def visit(s: _Shard, depth: int = 0) -> None:
            if s.shard_id in seen:
                return
            parent = self._shards.get(s.parent_id or "")
            if parent is not None and depth < 1000:
                visit(parent, depth + 1)
            seen.add(s.shard_id)
            out.append(s)

        for shard in list(self._shards.values()):
            visit(shard)
        return out

    # -- reading -----------------------------------------------------------------------------------------------------
    def _read_shard(self, shard: _Shard) -> list[dict[str, Any]]:
        if shard.closed:
            return []
        if not shard.started:
            shard.iterator = self._iterator(shard.shard_id, "TRIM_HORIZON")
            shard.started = True
        out: list[dict[str, Any]] = []
        for _ in range(self.max_batches_per_shard):
            if shard.iterator is None:
                shard.closed = True
                break
            try:
                resp = self.client.get_records(ShardIterator=shard.iterator, Limit=self.limit)
            except Exception as exc:
                if not _is_code(exc, "ExpiredIteratorException"):
                    raise
                shard.iterator = (
                    self._iterator(shard.shard_id, "AFTER_SEQUENCE_NUMBER", shard.last_sequence)
                    if shard.last_sequence is not None
                    else self._iterator(shard.shard_id, "TRIM_HORIZON")
                )
                continue
            records = resp.get("Records", [])
            shard.iterator = resp.get("NextShardIterator")
            for rec in records:
                seq = int(rec["dynamodb"]["SequenceNumber"])
                if shard.last_sequence is not None and seq <= shard.last_sequence:
                    continue
                shard.last_sequence = seq
                out.append(rec)
            if not records:
                # nothing new right now; a closed shard ends here. An open one is re-opened after the last record
                # seen, at most once per refresh_every: moto as shipped replaces a table (and its stream shard)
                # with a copy when a transaction is cancelled, and an iterator into the old copy would stay empty
                # forever (s3sync.local.moto_patches avoids that for the embedded server; not every server has it).
                if shard.iterator is None:
                    shard.closed = True
                elif shard.reopened_at is not None and self._clock() - shard.reopened_at < self.refresh_every:
                    pass
                elif shard.last_sequence is not None:
                    shard.reopened_at = self._clock()
                    shard.iterator = self._iterator(shard.shard_id, "AFTER_SEQUENCE_NUMBER", shard.last_sequence)
                elif not shard.from_latest:  # nothing read yet: from the start again (nothing to repeat)
                    shard.reopened_at = self._clock()
                    shard.iterator = self._iterator(shard.shard_id, "TRIM_HORIZON")
                break
        return out

    def poll(self) -> list[dict[str, Any]]:
        """Records written since the last poll (boto3 shape), from every shard, parents first."""
        self._discover()
        out: list[dict[str, Any]] = []
        for shard in self._ordered():
            parent = self._shards.get(shard.parent_id or "")
            if parent is not None and not parent.closed:
                continue  # a child waits until its parent is read to the end
            out.extend(self._read_shard(shard))
        return out

    @property
    def shard_ids(self) -> list[str]:
        return list(self._shards)
