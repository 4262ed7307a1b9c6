"""A seeded simulation of the whole control plane, for tests/test_simulation.py.

The real engine (Splitter, Worker steps, Ledger, Completer, Sweeper, Reattempter, DeletePropagator) runs against
in-process moto (S3 source and destination, SQS with a dead-letter queue, DynamoDB with its stream), one call at a
time, in an order chosen by a seeded random generator. Every boto3 call an engine component makes goes through
`World.call`, which can:
- refuse it (500, 503 or throttling, as botocore reports once its own retries are spent);
- lose its answer after the server acted (a broken connection), or answer the *second* of two identical requests
  (botocore's retry of a request whose first answer was lost: a conditional write then fails its own condition);
- kill the calling process before or after the call (`Killed`, a BaseException that no `except Exception` stops);
- run another component in between (a preemption point), so that interleavings *inside* an operation are explored,
  e.g. a worker's ranged GET, then a completion, then the worker's UploadPart.
Time is the simulation's: messages made invisible by a worker come back only when the simulation lets time pass,
and the sweeper's clock runs ahead by what the simulation says. moto's S3 is patched (while a world is open) to
give SSE-KMS uploads random ETags, as S3 does.

Invariants are checked at the instant the engine writes DONE or FAILED (inside `World.call`, right after the
server applied the write), after every step (accounting), and at quiescence (`World.settle`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError
from moto import mock_aws

from s3sync.contract import (
    ATTENTION_ATTR,
    COMPLETION_FILTERS,
    PARTS_HASH_KEY,
    PARTS_RANGE_KEY,
    TRANSFERS_HASH_KEY,
    TRANSFERS_STREAM_VIEW,
    Status,
)
from s3sync.local import events as local_events
from s3sync.local import moto_patches, patterns
from s3sync.local.streams import StreamReader
from s3sync.transfer import plan as plan_module
from s3sync.transfer.completion import Completer
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.deletes import DeletePropagator, Deletion
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.events import ObjectRef, stream_changes
from s3sync.transfer.ledger import Attention, Ledger, from_image, transfers_table_keys
from s3sync.transfer.newest import Newest
from s3sync.transfer.reattempt import Reattempter
from s3sync.transfer.settings import Settings
from s3sync.transfer.splitter import Splitter
from s3sync.transfer.sweeper import Sweeper
from s3sync.transfer.worker import Worker

UNIT = 1024  # the simulation's "MiB": parts of 1 KiB keep thousands of steps fast
SIZES = (0, 1, UNIT - 1, UNIT, UNIT + 1, 2 * UNIT + 7, 4 * UNIT)  # whole objects and 1..4 parts
KEYS = ("a.bin", "dir/b c+d.bin", "e%f.bin")
STALE_AFTER = 300
MAX_RECEIVES = 5  # the queue's maxReceiveCount
REGION = "us-east-1"
MARKER_PREFIX = "s3sync-"  # destination metadata the engine may add; not the source's

FAULT_KINDS = ("refuse", "throttle", "lost", "lost-retried", "kill-before", "kill-after")
KILLABLE = ("splitter", "completion", "sweeper", "retry", "deletes") + tuple(f"worker{i}" for i in range(3))


class Killed(BaseException):
    """The process making this call died here (not an Exception: nothing in the engine may catch it)."""


class InvariantViolation(BaseException):
    """An invariant broke (a BaseException, so that no `except Exception` in the engine swallows it)."""


@dataclass
class SimWorker:
    name: str
    worker: Worker
    held: list[dict[str, Any]] = field(default_factory=list)  # received, not processed
    unrecorded: list[tuple[dict[str, Any], Callable[[], None]]] = field(default_factory=list)


@dataclass
class Version:
    key: str
    data: bytes
    etag: str
    version_id: str | None
    metadata: dict[str, str]
    content_type: str


class World:
    """One simulated deployment; `close()` when done."""

    def __init__(self, seed: int, *, versioned: bool, kms: bool, propagate: bool, inline: bool = True) -> None:
        self.rng = random.Random(seed)  # the simulation's choices (faults, preemptions, data)
        self.fault_rate = 0.0
        self.preempt_rate = 0.0
        self.versioned, self.kms, self.propagate, self.inline = versioned, kms, propagate, inline
        self.clock_offset = 0.0
        self.depth = 0  # > 0 while a preempting action runs
        self.active: set[str] = set()  # components inside a call of theirs (never preempted by themselves)
        self.history: list[str] = []
        self.events: list[tuple[str, Any]] = []  # pending S3 events: ("created", ObjectRef) / ("deleted", Deletion)
        self.stream_pending: list[dict[str, Any]] = []  # filtered stream records not yet handled by completion
        self.versions: dict[tuple[str, str], list[Version]] = {}  # (key, etag) -> every write with those bytes
        self.aborted: set[str] = set()  # upload ids aborted from outside
        self.op_seconds: dict[str, float] = {}  # where the simulation's time goes, by operation
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(_engine_log(self.history))
        self._stack.enter_context(_small_parts())
        self._stack.enter_context(kms_etags(self.rng, lambda: self.kms))
        moto_patches.apply()  # as the local servers run: the same semantics, cheaper (s3sync.local.moto_patches)
        self._stack.enter_context(mock_aws())
        self._setup()

    # --- set-up -------------------------------------------------------------------------------------------------
    def _client(self, service: str, component: str | None) -> Any:
        config = Config(retries={"max_attempts": 1, "mode": "standard"},
                        response_checksum_validation="when_required", request_checksum_calculation="when_required")
        # botocore sends ARN-addressed DynamoDB Streams calls to an account endpoint moto does not route
        endpoint = f"https://streams.dynamodb.{REGION}.amazonaws.com" if service == "dynamodbstreams" else None
        client = boto3.client(service, region_name=REGION, config=config, endpoint_url=endpoint)
        if component is not None:
            real = client._make_api_call
            client._make_api_call = lambda op, params: self.call(component, service, real, op, params)
        return client

    def _setup(self) -> None:
        obs = self.obs = {s: self._client(s, None) for s in ("s3", "sqs", "dynamodb", "dynamodbstreams")}
        obs["s3"].create_bucket(Bucket="src")
        obs["s3"].create_bucket(Bucket="dst")
        if self.versioned:
            obs["s3"].put_bucket_versioning(Bucket="src", VersioningConfiguration={"Status": "Enabled"})
        dlq = obs["sqs"].create_queue(QueueName="parts-dlq")["QueueUrl"]
        dlq_arn = obs["sqs"].get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queue_url = obs["sqs"].create_queue(QueueName="parts", Attributes={
            "VisibilityTimeout": "3600",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}),
        })["QueueUrl"]
        self.dlq_url = dlq
        ddb = obs["dynamodb"]
        ddb.create_table(TableName="transfers", BillingMode="PAY_PER_REQUEST", **transfers_table_keys(),
                         StreamSpecification={"StreamEnabled": True, "StreamViewType": TRANSFERS_STREAM_VIEW})
        ddb.create_table(TableName="parts", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": PARTS_HASH_KEY, "AttributeType": "S"},
                                               {"AttributeName": PARTS_RANGE_KEY, "AttributeType": "N"}],
                         KeySchema=[{"AttributeName": PARTS_HASH_KEY, "KeyType": "HASH"},
                                    {"AttributeName": PARTS_RANGE_KEY, "KeyType": "RANGE"}])
        self.stream_arn = ddb.describe_table(TableName="transfers")["Table"]["LatestStreamArn"]
        self.reader = StreamReader(obs["dynamodbstreams"], self.stream_arn, refresh_every=0)
        self.settings = Settings(queue_url=self.queue_url, transfers_table="transfers", parts_table="parts",
                                 dest_bucket="dst", dest_prefix="copy/", part_size=UNIT,
                                 dest_encryption=DestEncryption("aws:kms" if self.kms else ""),
                                 inline_max_bytes=UNIT if self.inline else 0)
        self.components: dict[str, dict[str, Any]] = {}
        for name in KILLABLE:
            self.components[name] = {s: self._client(s, name) for s in ("s3", "sqs", "dynamodb")}
        self.workers = [self._new_worker(f"worker{i}") for i in range(3)]

    def close(self) -> None:
        self._stack.close()

    # --- the engine's components, built on their own (fault-injected) clients -----------------------------------
    def _ledger(self, name: str) -> Ledger:
        return Ledger(self.components[name]["dynamodb"], "transfers", "parts")

    def _splitter(self, name: str) -> Splitter:
        """As Runtime.splitter builds it (with the newest-version check), on the component's clients."""
        c = self.components[name]
        splitter = Splitter(source=c["s3"], dest=c["s3"], sqs=c["sqs"], ledger=self._ledger(name),
                            settings=self.settings)
        splitter.newest = self._newest(name, splitter)
        return splitter

    def _newest(self, name: str, splitter: Splitter) -> Newest:
        c = self.components[name]
        reattempter = Reattempter(ledger=self._ledger(name), splitter=splitter, source=c["s3"], dest=c["s3"])
        return Newest(source=c["s3"], dest=DestClient.fixed(c["s3"]), ledger=self._ledger(name),
                      reattempt=lambda job: reattempter.reattempt(job, (Status.DONE,)))

    def _new_worker(self, name: str) -> SimWorker:
        c = self.components[name]
        worker = Worker(sqs=c["sqs"], queue_url=self.queue_url, ledger=self._ledger(name), source=c["s3"],
                        dest=c["s3"], threads=1, visibility_timeout=3600, wait_seconds=0, prefetch=0,
                        dest_bucket=self.settings.dest_bucket)
        return SimWorker(name, worker)

    def completer(self) -> Completer:
        """As Runtime.completer builds it, on the completion's clients."""
        c = self.components["completion"]
        ledger, splitter = self._ledger("completion"), self._splitter("completion")
        return Completer(dest=c["s3"], ledger=ledger, requeue=lambda job, parts: splitter.enqueue(job, only=parts),
                         newest=splitter.newest)

    def sweeper(self) -> Sweeper:
        """As Runtime.sweeper builds it (the queue's approximate counts: exact in moto)."""
        sqs = self.components["sweeper"]["sqs"]
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]

        def busy() -> bool:
            attrs = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
            return any(int(attrs.get(n, 0)) for n in names)

        return Sweeper(ledger=self._ledger("sweeper"), splitter=self._splitter("sweeper"), stale_after=STALE_AFTER,
                       clock=lambda: time.time() + self.clock_offset, queue_busy=busy)

    # --- the boto3 boundary -------------------------------------------------------------------------------------
    def call(self, component: str, service: str, real: Callable[[str, dict[str, Any]], Any], op: str,
             params: dict[str, Any]) -> Any:
        if isinstance(params.get("Body"), (bytearray, memoryview)):  # in-process moto reads bytes only
            params = {**params, "Body": bytes(params["Body"])}
        if op == "ChangeMessageVisibility" and params.get("VisibilityTimeout", 0) > 0:
            # "come back in N seconds": in simulated time, when the simulation lets time pass
            params = {**params, "VisibilityTimeout": 3600}
        if self.depth == 0 and component not in self.active and self.rng.random() < self.preempt_rate:
            self.preempt(component)
        kind = self.rng.choice(FAULT_KINDS) if self.rng.random() < self.fault_rate else None
        if kind in ("kill-before", "kill-after") and component not in KILLABLE:
            kind = None
        if kind:
            self.history.append(f"    fault {kind} on {component} {service}.{op}")
        if kind == "refuse":
            raise ClientError({"Error": {"Code": "InternalError", "Message": "simulated"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, op)
        if kind == "throttle":
            code = "ThrottlingException" if service != "s3" else "SlowDown"
            raise ClientError({"Error": {"Code": code, "Message": "simulated"},
                               "ResponseMetadata": {"HTTPStatusCode": 503 if service == "s3" else 400}}, op)
        if kind == "kill-before":
            raise Killed(f"{component} died before {op}")
        self.active.add(component)
        try:
            result = self._applied(component, op, params, real)
            if kind == "lost-retried":
                result = self._applied(component, op, params, real)
        finally:
            self.active.discard(component)
        if kind == "lost":
            raise ConnectionClosedError(endpoint_url=f"simulated {service}")
        if kind == "kill-after":
            raise Killed(f"{component} died after {op}")
        return result

    def _applied(self, component: str, op: str, params: dict[str, Any], real: Callable[..., Any]) -> Any:
        """Make the call; check the moment a job turns DONE or FAILED."""
        started = time.perf_counter()
        try:
            result = real(op, params)
        finally:
            self.op_seconds[op] = self.op_seconds.get(op, 0.0) + time.perf_counter() - started
        values = params.get("ExpressionAttributeValues") or {}
        if op == "PutItem" and params.get("TableName") == "transfers":  # a small object the splitter copied
            item = from_image(params["Item"])
            if item.get("status") == Status.DONE:
                self.check_done(item)
        if op == "UpdateItem" and params.get("TableName") == "transfers":
            new = from_image(result.get("Attributes") or {}) if result.get("Attributes") else None
            if new and ":done" in values and new.get("status") == Status.DONE:
                self.check_done(new)
            if new and ":failed" in values and new.get("status") == Status.FAILED:
                self.check_failed(new)
        if op == "AbortMultipartUpload" and component == "outside":
            self.aborted.add(params["UploadId"])
        return result

    def preempt(self, component: str) -> None:
        """Run one other action now, as if another process got there first."""
        actions = [self.step_worker, self.step_record, self.step_stream, self.step_stream, self.step_sweep]
        action = self.rng.choice(actions)
        self.depth += 1
        try:
            self.history.append(f"    (preempting {component}: {action.__name__})")
            action(exclude=component)
        finally:
            self.depth -= 1

    # --- source-side actions (the simulation's own clients: no faults) ------------------------------------------
    def write_source(self, key: str, size: int) -> None:
        data = self.rng.randbytes(size)
        meta = {"n": str(self.rng.randrange(1000))}
        ctype = self.rng.choice(("application/octet-stream", "text/plain"))
        resp = self.obs["s3"].put_object(Bucket="src", Key=key, Body=data, Metadata=meta, ContentType=ctype)
        version = resp.get("VersionId") if self.versioned else None
        self.versions.setdefault((key, resp["ETag"]), []).append(Version(key, data, resp["ETag"], version, meta, ctype))
        self.events.append(("created", ObjectRef("src", key, version)))
        self.history.append(f"  write s3://src/{key} ({size} B, {resp['ETag']}, version {version})")

    def delete_source(self, key: str) -> None:
        self.obs["s3"].delete_object(Bucket="src", Key=key)
        if self.propagate:
            self.events.append(("deleted", Deletion("src", key)))
        self.history.append(f"  delete s3://src/{key}")

    def forge_message(self, pick: int, kind: int) -> None:
        """Someone who may send to the part queue sends a message the ledger never planned: another destination
        key or bucket, a huge range, an unknown job. The workers must refuse it (invariant: nothing is ever written
        outside the destination prefix, and no job changes because of it)."""
        jobs = self.jobs()
        if not jobs:
            return
        job = jobs[pick % len(jobs)]
        body = {"v": 2, "job": job["job_id"], "src": {"bucket": "src", "key": job["source_key"],
                                                       "etag": job["source_etag"],
                                                       "version": job.get("source_version")},
                "dst": {"bucket": "dst", "key": job["dest_key"],
                        "upload": job["upload_id"] if job["upload_id"] != "-" else None, "attempt": job["attempt"]},
                "part": {"n": 1, "of": job["total"], "start": 0, "end": max(0, min(job["size"], UNIT) - 1)}}
        forgery = ("key", "bucket", "range", "job")[kind % 4]
        if forgery == "key":
            body["dst"]["key"] = "elsewhere/" + job["source_key"]
        elif forgery == "bucket":
            body["dst"]["bucket"] = "src"
        elif forgery == "range":
            body["part"]["end"] = 5 * 1024**3 - 1
        else:
            body["job"] = "f" * 32
        self.obs["sqs"].send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))
        self.history.append(f"  forged message ({forgery}) for {job['job_id'][:8]}")

    def check_destination(self) -> None:
        """Nothing is ever written outside the destination prefix (forged messages are refused)."""
        for bucket, allowed in (("dst", self.settings.dest_prefix), ("src", None)):
            for obj in self.obs["s3"].list_objects_v2(Bucket=bucket).get("Contents", []):
                if bucket == "dst" and not obj["Key"].startswith(allowed or ""):
                    self._fail(f"s3://dst/{obj['Key']} was written: outside the destination prefix")
                if bucket == "src" and obj["Key"] not in KEYS:
                    self._fail(f"s3://src/{obj['Key']} was written: the workers wrote into the source")

    def abort_upload(self, pick: int) -> None:
        uploads = self.obs["s3"].list_multipart_uploads(Bucket="dst").get("Uploads", [])
        if not uploads:
            return
        up = uploads[pick % len(uploads)]
        self.obs["s3"].abort_multipart_upload(Bucket="dst", Key=up["Key"], UploadId=up["UploadId"])
        self.aborted.add(up["UploadId"])
        self.history.append(f"  abort upload {up['UploadId'][:8]} of {up['Key']} from outside")

    # --- engine steps -------------------------------------------------------------------------------------------
    def step_event(self, pick: int = 0, keep: bool = False, exclude: str = "") -> None:
        """Deliver one pending S3 event to the splitter function (kept pending on failure: Lambda retries)."""
        if not self.events or "splitter" == exclude:
            return
        i = pick % len(self.events)
        kind, ref = self.events[i]
        self.history.append(f"  splitter <- {kind} {ref.key}{' (delivered again later)' if keep else ''}")
        try:
            if kind == "created":
                self._splitter("splitter").split(ref)
            else:
                c = self.components["deletes"]
                DeletePropagator(source=c["s3"], dest=c["s3"], settings=self.settings).propagate(ref)
        except Killed as exc:
            self.history.append(f"    {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - the invocation failed: Lambda tries again
            self.history.append(f"    splitter failed: {type(exc).__name__}: {exc}")
            return
        if not keep:
            self.events.pop(i)

    def step_receive(self, w: int = 0, n: int = 1, exclude: str = "") -> None:
        sw = self.workers[w % len(self.workers)]
        if sw.name == exclude:
            return
        try:
            msgs = sw.worker.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=n, WaitTimeSeconds=0,
                                                 VisibilityTimeout=3600,
                                                 MessageSystemAttributeNames=["ApproximateReceiveCount"])
        except Killed:
            self._kill(sw)
            return
        except Exception:  # noqa: BLE001 - the worker logs and receives again
            return
        for m in msgs.get("Messages", []):
            sw.held.append(m)
        if msgs.get("Messages"):
            self.history.append(f"  {sw.name} received {[_describe(m) for m in msgs['Messages']]}")

    def step_worker(self, w: int | None = None, pick: int = 0, exclude: str = "") -> None:
        """A worker copies one message it holds (receiving one first when it holds none)."""
        candidates = [sw for sw in self.workers if sw.name != exclude and sw.name not in self.active]
        if w is not None:
            candidates = [sw for sw in candidates if sw.name == f"worker{w % len(self.workers)}"]
        if not candidates:
            return
        sw = candidates[self.rng.randrange(len(candidates))] if w is None else candidates[0]
        if not sw.held:
            self.step_receive(int(sw.name[-1]), 1, exclude)
            if not sw.held:
                return
        m = sw.held.pop(pick % len(sw.held))
        self.history.append(f"  {sw.name} copies {_describe(m)}")
        self.active.add(sw.name)
        try:
            then = sw.worker._process(m)
        except Killed as exc:
            self.history.append(f"    {exc}")
            sw.held.append(m)
            self._kill(sw)
            return
        except Exception as exc:  # noqa: BLE001 - as the copy loop: logged, the message comes back by itself
            self.history.append(f"    copy raised {type(exc).__name__}: {exc}")
            return
        finally:
            self.active.discard(sw.name)
        if then is not None:
            sw.unrecorded.append((m, then))

    def step_record(self, w: int | None = None, pick: int = 0, exclude: str = "") -> None:
        """A worker's recorder counts one uploaded part in the ledger (and queues its message's deletion)."""
        candidates = [sw for sw in self.workers if sw.unrecorded and sw.name != exclude and sw.name not in self.active]
        if w is not None:
            candidates = [sw for sw in candidates if sw.name == f"worker{w % len(self.workers)}"]
        if not candidates:
            return
        sw = candidates[self.rng.randrange(len(candidates))] if w is None else candidates[0]
        m, then = sw.unrecorded.pop(pick % len(sw.unrecorded))
        self.history.append(f"  {sw.name} records {_describe(m)}")
        self.active.add(sw.name)
        try:
            then()
        except Killed as exc:
            self.history.append(f"    {exc}")
            sw.unrecorded.append((m, then))
            self._kill(sw)
        except Exception as exc:  # noqa: BLE001 - as the recorder thread: logged, the message comes back by itself
            self.history.append(f"    record raised {type(exc).__name__}: {exc}")
        finally:
            self.active.discard(sw.name)

    def step_flush(self, w: int = 0, exclude: str = "") -> None:
        sw = self.workers[w % len(self.workers)]
        if sw.name == exclude or sw.name in self.active:
            return
        try:
            sw.worker._flush_deletes()
        except Killed:
            self._kill(sw)

    def kill_worker(self, w: int) -> None:
        self._kill(self.workers[w % len(self.workers)])

    def _kill(self, sw: SimWorker) -> None:
        """The worker process dies: what it held comes back when its visibility runs out."""
        lost = len(sw.held) + len(sw.unrecorded) + len(sw.worker._deletes)
        i = self.workers.index(sw)
        self.workers[i] = self._new_worker(sw.name)
        self.history.append(f"  {sw.name} died holding {lost} message(s); restarted")

    def pass_time(self, seconds: float, expire_held: bool = False) -> None:
        """Time passes: invisible messages that no live worker extends come back (those of dead workers, those
        put back with a delay, those whose ReceiveMessage answer was lost); the sweeper's clock moves on. With
        `expire_held`, a live worker's heartbeat also fell behind, so one message it holds is delivered again."""
        self.clock_offset += seconds
        held = {m["ReceiptHandle"] for sw in self.workers for m in sw.held}
        held |= {m["ReceiptHandle"] for sw in self.workers for m, _ in sw.unrecorded}
        if expire_held and held:
            held.discard(self.rng.choice(sorted(held)))
        back = 0
        for message in self._queue()._messages:
            if not message.visible and message.receipt_handle not in held:
                message.change_visibility(0)
                back += 1
        self.history.append(f"  {seconds:.0f} s pass ({back} message(s) visible again)")

    def step_stream(self, pick: int = 0, keep: bool = False, exclude: str = "") -> None:
        """Read the table's stream (as the event source mapping does) and hand one job's oldest record to
        completion; it stays pending if completion fails (the mapping retries it) or, with `keep`, is delivered
        again later anyway."""
        if exclude == "completion":
            return
        records = local_events.dynamodb_stream(self.reader.poll(), self.stream_arn)["Records"]
        self.stream_pending += [r for r in records if patterns.matches_any(COMPLETION_FILTERS, r)]
        if not self.stream_pending:
            return
        jobs = sorted({r["dynamodb"]["Keys"][TRANSFERS_HASH_KEY]["S"] for r in self.stream_pending})
        job = jobs[pick % len(jobs)]
        i = next(i for i, r in enumerate(self.stream_pending) if r["dynamodb"]["Keys"][TRANSFERS_HASH_KEY]["S"] == job)
        record = self.stream_pending[i]
        change = next(stream_changes({"Records": [record]}))
        self.history.append(f"  completion <- {job[:8]} {change.new.get('status') if change.new else ''}")
        try:
            self.completer().on_change(change)
        except Killed as exc:
            self.history.append(f"    {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - reported as a batch item failure: retried
            self.history.append(f"    completion failed: {type(exc).__name__}: {exc}")
            return
        if not keep:
            self.stream_pending.pop(i)

    def step_sweep(self, advance: float = 0.0, exclude: str = "") -> None:
        if exclude == "sweeper":
            return
        self.clock_offset += advance
        try:
            result = self.sweeper().sweep()
        except Killed as exc:
            self.history.append(f"  sweep: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - the next scheduled sweep tries again
            self.history.append(f"  sweep failed: {type(exc).__name__}: {exc}")
            return
        self.history.append(f"  sweep (+{self.clock_offset:.0f} s): {result.as_dict()}")

    def step_retry(self, pick: int = 0) -> None:
        """A user runs `s3sync retry` on one FAILED job."""
        failed = [j for j in self.jobs() if j["status"] == Status.FAILED]
        if not failed:
            return
        job = failed[pick % len(failed)]
        c = self.components["retry"]
        splitter = self._splitter("retry")
        ledger = self._ledger("retry")
        self.history.append(f"  retry {job['job_id'][:8]} ({job.get('error', '')[:60]})")
        try:
            current = ledger.get_job(job["job_id"])
            if current is not None:
                Reattempter(ledger=ledger, splitter=splitter, source=c["s3"], dest=c["s3"]).reattempt(current)
        except Killed as exc:
            self.history.append(f"    {exc}")
        except Exception as exc:  # noqa: BLE001 - the user sees the error and runs it again
            self.history.append(f"    retry failed: {type(exc).__name__}: {exc}")

    # --- state, as an observer reads it ---------------------------------------------------------------------------
    def jobs(self) -> list[dict[str, Any]]:
        return [i for i in _items("transfers") if "status" in i]

    def part_items(self) -> list[dict[str, Any]]:
        return _items("parts")

    def _queue(self) -> Any:
        from moto.sqs.models import sqs_backends

        return sqs_backends["123456789012"][REGION].queues["parts"]

    def queued(self) -> list[dict[str, Any]]:
        """Every message in the part queue, visible or not (moto's state, read in place)."""
        return [json.loads(m.body) for m in self._queue()._messages]

    def dest_object(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        try:
            resp = self.obs["s3"].get_object(Bucket="dst", Key=key)
        except ClientError:
            return None
        return resp["Body"].read(), resp

    def source_current(self, key: str) -> Version | None:
        try:
            head = self.obs["s3"].head_object(Bucket="src", Key=key)
        except ClientError:
            return None
        return self.versions[(key, head["ETag"])][-1]

    # --- invariants -----------------------------------------------------------------------------------------------
    def _fail(self, what: str) -> None:
        raise InvariantViolation(what + "\nhistory (last 60 lines):\n" + "\n".join(self.history[-60:]))

    def _holds_copy(self, job: dict[str, Any]) -> tuple[bool, str]:
        """Whether the destination holds exactly the bytes and metadata of the source version the job names."""
        writes = [v for v in self.versions.get((job["source_key"], job["source_etag"]), [])
                  if job.get("source_version") in (None, v.version_id)]
        if not writes:
            return False, "the job names a source version the simulation never wrote"
        got = self.dest_object(job["dest_key"])
        if got is None:
            return False, "no object at the destination key"
        data, resp = got
        meta = {k: v for k, v in resp.get("Metadata", {}).items() if not k.startswith(MARKER_PREFIX)}
        if data != writes[0].data:
            return False, f"destination holds {len(data)} other bytes (md5 {hashlib.md5(data).hexdigest()})"
        # the same bytes may have been written more than once (unversioned: one job) with other metadata
        if not any(meta == v.metadata and resp.get("ContentType") == v.content_type for v in writes):
            return False, f"destination metadata {meta} {resp.get('ContentType')} is no source write's"
        return True, ""

    def check_done(self, job: dict[str, Any]) -> None:
        ok, why = self._holds_copy(job)
        if not ok:
            self._fail(f"job {job['job_id'][:8]} ({job['source_key']}) written DONE but {why}")

    def check_failed(self, job: dict[str, Any]) -> None:
        reason = str(job.get("error", ""))
        current = self.source_current(job["source_key"])
        unchanged = current is not None and current.etag == job["source_etag"]
        if unchanged and self._holds_copy(job)[0]:
            self._fail(f"job {job['job_id'][:8]} ({job['source_key']}) written FAILED ({reason}) while the "
                       "destination holds a correct copy of the unchanged source")
        if "never copied" in reason:
            waiting = {m["part"]["n"] for m in self.queued() if m.get("job") == job["job_id"]}
            if waiting:
                self._fail(f"job {job['job_id'][:8]} failed as stuck ({reason}) while parts {sorted(waiting)} "
                           "wait in the queue")

    def check_accounting(self) -> None:
        """`remaining` = total - parts counted for the current attempt; each part counted once. And every job is in
        the sparse `Attention` index exactly while it is unfinished (its unfinished part) or FAILED (its failed
        part): the sweeper and `s3sync status` find jobs there only."""
        by_job: dict[str, list[dict[str, Any]]] = {}
        for item in self.part_items():
            by_job.setdefault(item[PARTS_HASH_KEY], []).append(item)
        for job in self.jobs():
            if job.get(ATTENTION_ATTR) != Attention.of(job["job_id"], job["status"]):
                self._fail(f"job {job['job_id'][:8]} is {job['status']} with {ATTENTION_ATTR} "
                           f"{job.get(ATTENTION_ATTR)!r}: the Attention index would "
                           f"{'miss' if job.get(ATTENTION_ATTR) is None else 'misfile'} it")
            if job["status"] == Status.FAILED:
                continue
            attempt = _attempt(job)
            parts = [p for p in by_job.get(job["job_id"], []) if _attempt(p) == attempt]
            numbers = [int(p[PARTS_RANGE_KEY]) for p in parts]
            if job.get("inline") and job["status"] == Status.DONE:  # copied by the splitter: its one part is itself
                numbers = [1] if not numbers else numbers + [1]
            if len(numbers) != len(set(numbers)) or any(not 1 <= n <= job["total"] for n in numbers):
                self._fail(f"job {job['job_id'][:8]}: parts counted {sorted(numbers)} of {job['total']}")
            if job["total"] - job["remaining"] != len(numbers) or job.get("done", 0) != len(numbers):
                self._fail(f"job {job['job_id'][:8]} ({job['status']}): remaining {job['remaining']}, done "
                           f"{job.get('done')}, total {job['total']}, but {len(numbers)} part(s) counted for its "
                           f"attempt: {sorted(numbers)}")

    def settle(self, rounds: int = 40) -> None:
        """Faults stop; everything runs until nothing is left to do; then every job is DONE or FAILED with no
        upload left open, and the destination holds the newest version of every source object."""
        self.fault_rate = self.preempt_rate = 0.0
        self.history.append("  -- faults stop; settling --")
        for _ in range(rounds):
            while self.events:
                self.step_event()
            self.pass_time(1)
            for _ in range(200):
                before = self._progress_marker()
                for w in range(len(self.workers)):
                    self.step_worker(w)
                    while self.workers[w].unrecorded:
                        self.step_record(w)
                    self.step_flush(w)
                for _ in range(len(self.stream_pending) + 1):
                    self.step_stream()
                if self._progress_marker() == before:
                    break
            if all(j["status"] in Status.FINAL for j in self.jobs()) and not self.stream_pending:
                break
            self.step_sweep(STALE_AFTER + 1)
        self.check_accounting()
        self.check_destination()
        unfinished = [j for j in self.jobs() if j["status"] not in Status.FINAL]
        if unfinished:
            self._fail("after settling, jobs still unfinished: "
                       + ", ".join(f"{j['job_id'][:8]} {j['status']} remaining {j['remaining']}" for j in unfinished))
        open_uploads = {u["UploadId"] for u in self.obs["s3"].list_multipart_uploads(Bucket="dst").get("Uploads", [])}
        for job in self.jobs():
            if job.get("upload_id") in open_uploads:
                self._fail(f"job {job['job_id'][:8]} is {job['status']} but its upload is still open")
        for key in KEYS:
            current = self.source_current(key)
            if current is None:
                continue
            job_id = [j for j in self.jobs() if j["source_key"] == key and j["source_etag"] == current.etag]
            if any(j["status"] == Status.FAILED for j in job_id):
                continue  # failed loudly: the user was told
            got = self.dest_object(self.settings.dest_prefix + key)
            if got is None or got[0] != current.data:
                self._fail(f"after settling, the destination does not hold the newest version of {key} "
                           f"({current.etag}); jobs: {[(j['source_etag'], j['status']) for j in job_id]}")

    def _progress_marker(self) -> tuple[Any, ...]:
        jobs = tuple(sorted((j["job_id"], j["status"], j["remaining"]) for j in self.jobs()))
        held = sum(len(sw.held) + len(sw.unrecorded) for sw in self.workers)
        return jobs, held, len(self.queued()), len(self.stream_pending)


def _attempt(item: dict[str, Any]) -> str:
    return str(item.get("attempt") or item.get("upload_id") or "")


def _describe(m: dict[str, Any]) -> str:
    try:
        body = json.loads(m["Body"])
        return f"{body['job'][:8]}#{body['part']['n']}/{body['part']['of']}" \
               f"(rx {m.get('Attributes', {}).get('ApproximateReceiveCount', '?')})"
    except (ValueError, KeyError, TypeError):
        return "malformed"


def _items(table: str) -> list[dict[str, Any]]:
    """Every item of a table, read in moto's memory (a Scan through boto3 costs ~25 ms in moto's serializer)."""
    from moto.dynamodb.models import dynamodb_backends

    return [from_image(item.to_json()["Attributes"])
            for item in dynamodb_backends["123456789012"][REGION].get_table(table).all_items()]


class _HistoryHandler(logging.Handler):
    """The engine's warnings and errors, with their reasons, into the simulation's history."""

    def __init__(self, history: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.history = history

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in vars(record).items() if k in ("job", "part", "reason", "parts", "key")}
        job = str(extra.pop("job", ""))[:8]
        self.history.append(f"    [{record.name} {record.levelname}] {record.getMessage()} {job} {extra}")


@contextlib.contextmanager
def _engine_log(history: list[str]) -> Iterator[None]:
    logger, metrics = logging.getLogger("s3sync"), logging.getLogger("s3sync.metrics")
    handler = _HistoryHandler(history)
    saved = logger.level, logger.propagate, metrics.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    metrics.disabled = True  # the workers' EMF lines: thousands, and nothing to check here
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        metrics.disabled = saved[2]


@contextlib.contextmanager
def _small_parts() -> Iterator[None]:
    """Parts of UNIT bytes instead of 5 MiB: the same rules at a thousandth of the bytes (moto's minimum too)."""
    import moto.s3.models as moto_s3

    saved = {name: getattr(plan_module, name) for name in ("MIN_PART_SIZE", "MULTIPART_THRESHOLD", "PART_SIZE_STEP")}
    saved_moto = moto_s3.S3_UPLOAD_PART_MIN_SIZE
    for name in saved:
        setattr(plan_module, name, UNIT)
    moto_s3.S3_UPLOAD_PART_MIN_SIZE = UNIT
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(plan_module, name, value)
        moto_s3.S3_UPLOAD_PART_MIN_SIZE = saved_moto


@contextlib.contextmanager
def kms_etags(rng: random.Random, active: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Under SSE-KMS S3 gives parts and objects ETags that are no MD5 of the bytes, different for every upload of
    the same bytes; moto gives MD5s. While this is open (and `active()`), moto's S3 in this process (in-process or
    its threaded server) gives an SSE-KMS part or PutObject a random ETag; a completed upload's ETag is then the MD5
    of those, "-N", as moto computes it."""
    import moto.s3.models as moto_s3

    set_part, put_object = moto_s3.FakeMultipart.set_part, moto_s3.S3Backend.put_object

    def kms_part(self: Any, part_id: int, value: bytes) -> Any:
        key = set_part(self, part_id, value)
        if active() and str(self.sse_encryption or "").startswith("aws:kms"):
            key._etag = rng.randbytes(16).hex()
        return key

    def kms_put(self: Any, *args: Any, **kwargs: Any) -> Any:
        key = put_object(self, *args, **kwargs)
        if active() and kwargs.get("multipart") is None and str(kwargs.get("encryption") or "").startswith("aws:kms"):
            key._etag = rng.randbytes(16).hex()
        return key

    moto_s3.FakeMultipart.set_part = kms_part
    moto_s3.S3Backend.put_object = kms_put
    try:
        yield
    finally:
        moto_s3.FakeMultipart.set_part = set_part
        moto_s3.S3Backend.put_object = put_object
