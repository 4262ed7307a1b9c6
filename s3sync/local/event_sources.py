"""The event sources of `s3sync local`, as AWS runs them between the pieces: S3 notifications (or, for a server that
sends none, a listing) -> the event queue -> the splitter, in batches as lambda.yaml's event source mapping delivers
them; the transfers table's stream -> completion, through the event source mapping's filter; CloudWatch alarms on the
part queue's depth -> SNS -> scale_out / scale_in; the sweeper's schedule; the completion topic's notices. A mixin of
LocalRunner (s3sync.local.runner), which holds the state these loops read."""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from s3sync.contract import (
    COMPLETION_FILTERS,
    DEFAULT_STREAM_BATCH_SIZE,
    DEFAULT_STREAM_PARALLELIZATION,
    TRANSFERS_HASH_KEY,
)
from s3sync.local import alarms, events, patterns
from s3sync.local.iam import Denial, Request, service_decision
from s3sync.local.options import (
    ACCOUNT,
    LIST_EVERY,
    REGION,
    SPLITTER_CONCURRENCY,
    STREAM_POLL_EVERY,
)
from s3sync.local.streams import StreamReader

if TYPE_CHECKING:
    from contextlib import ExitStack

    from mypy_boto3_cloudwatch.type_defs import MetricDataQueryTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectTypeDef

    from s3sync.aws import Clients
    from s3sync.local.cfn import LocalStacks
    from s3sync.local.iam import CallLedger, Enforcer
    from s3sync.local.options import LocalOptions, Resources

log = logging.getLogger("s3sync.local")


class EventSources:
    """The runner's background loops that stand in for AWS's event sources (each runs on its own thread)."""

    if TYPE_CHECKING:  # LocalRunner's state and methods, which these loops use (for mypy; nothing at run time)
        options: LocalOptions
        resources: Resources
        stacks: LocalStacks
        iam: CallLedger
        endpoint_url: str
        control_key: str
        source_s3: S3Client
        notifications: list[dict[str, Any]]
        alarm_a: alarms.Alarm
        alarm_b: alarms.Alarm
        alarm_a_trigger: dict[str, Any]
        alarm_b_metrics: list[MetricDataQueryTypeDef]
        _stop: threading.Event
        _stack: ExitStack
        _errors: list[str]
        _seen_objects: set[tuple[str, str]]
        _event_batch: int
        _event_window: float

        @property
        def client(self) -> Clients: ...
        def invoke(self, name: str, event: dict[str, Any], attempts: int = 3) -> Any: ...
        def _enforcer(self, component: str, role: Any) -> Enforcer: ...

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    fn()
                    return
                except Exception:  # noqa: BLE001 - a loop never dies silently; it logs and starts again
                    log.exception("runner loop failed; restarting", extra={"loop": fn.__name__})
                    self._stop.wait(1.0)
        return run

    def _event_loop(self) -> None:
        """The event queue -> the splitter, as lambda.yaml's event source mapping: up to its BatchSize messages,
        gathered for up to its batching window, one invocation per batch (up to SPLITTER_CONCURRENCY at once); the
        messages the function names in `batchItemFailures`, or all of them when it raised, are left to come back
        after the queue's visibility timeout; the others are deleted."""
        # the event source mapping polls the queue with the function's execution role
        sqs = boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=REGION,
                           aws_access_key_id=self.control_key, aws_secret_access_key=self.control_key,
                           config=Config(retries={"mode": "standard", "max_attempts": 5}))
        self._enforcer("splitter event source mapping", self.stacks.function_role("splitter")).instrument(
            "control", sqs)
        pool = self._stack.enter_context(ThreadPoolExecutor(SPLITTER_CONCURRENCY, thread_name_prefix="splitter"))
        slots = threading.Semaphore(SPLITTER_CONCURRENCY)
        while not self._stop.is_set():
            batch: list[dict[str, Any]] = []
            until = 0.0  # the batching window runs from the first message
            while len(batch) < self._event_batch and not self._stop.is_set():
                wait = 1 if not batch else max(0, min(1, round(until - time.monotonic())))
                resp = sqs.receive_message(QueueUrl=self.resources.events_url, AttributeNames=["All"],
                                           WaitTimeSeconds=wait,
                                           MaxNumberOfMessages=min(10, self._event_batch - len(batch)))
                got = resp.get("Messages", [])
                if got and not batch:
                    until = time.monotonic() + self._event_window
                batch += got
                if batch and (not got or time.monotonic() >= until):
                    break
            if batch:
                slots.acquire()
                pool.submit(self._deliver_events, sqs, batch, slots)

    def _deliver_events(self, sqs: Any, batch: list[dict[str, Any]], slots: threading.Semaphore) -> None:
        try:
            try:
                result = self.invoke("splitter", events.sqs_batch(batch, self.resources.events_arn, region=REGION),
                                     attempts=1) or {}
            except Exception:  # noqa: BLE001 - logged by invoke; every message of the batch comes back
                return
            failed = {f.get("itemIdentifier") for f in result.get("batchItemFailures") or []}
            done = [m for m in batch if m["MessageId"] not in failed]
            for i in range(0, len(done), 10):
                sqs.delete_message_batch(QueueUrl=self.resources.events_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done[i:i + 10])])
        finally:
            slots.release()

    def _list_loop(self) -> None:
        """A source on a server that sends no notifications: new objects found by listing are sent to the event
        queue as S3 would send their notifications (one message per object); with delete propagation, a key no
        longer listed is a deletion (delivered to the splitter directly, as EventBridge's are)."""
        if not self.options.source.endpoint_url:
            return  # moto's S3 notifies
        sqs = self.client("sqs")
        while not self._stop.is_set():
            listed_at = time.monotonic()
            new = [o for o in self._list_source() if (o["Key"], o["ETag"]) not in self._seen_objects]
            listing = time.monotonic() - listed_at
            for o in new:
                event = events.s3_object_created(self.options.source.name, o["Key"], int(o["Size"]),
                                                 o["ETag"].strip('"'),
                                                 region=REGION)
                sqs.send_message(QueueUrl=self.resources.events_url, MessageBody=json.dumps(event))
                self._seen_objects.add((o["Key"], o["ETag"]))
            if self.options.propagate_deletes:
                listed = {o["Key"] for o in self._list_source()}
                for ident in [i for i in self._seen_objects if i[0] not in listed]:
                    self.invoke("splitter", _removed_event(self.options.source.name, ident[0]))
                    self._seen_objects.discard(ident)
            # S3 tells within about a second; a listing every 0.2 s tells sooner, unless listing is slow (a
            # big bucket): then at most a tenth of the time goes to listing
            self._stop.wait(max(LIST_EVERY, 9 * listing))

    def _list_source(self) -> list[ObjectTypeDef]:
        out: list[ObjectTypeDef] = []
        for page in self.source_s3.get_paginator("list_objects_v2").paginate(Bucket=self.options.source.name):
            out.extend(page.get("Contents", []))
        return out

    def _stream_loop(self) -> None:
        """Transfers-table stream -> completion, filtered by the event source mapping's patterns."""
        # one page per poll: reading on until an empty page doubled the reads (a backlog still drains, a page of up
        # to 1,000 records per poll, without waiting while it holds records for the completion function)
        # the event source mapping reads the stream with the function's execution role
        streams = boto3.client("dynamodbstreams", endpoint_url=self.endpoint_url, region_name=REGION,
                               aws_access_key_id=self.control_key, aws_secret_access_key=self.control_key,
                               config=Config(retries={"mode": "standard", "max_attempts": 5}))
        self._enforcer("completion event source mapping", self.stacks.function_role("completion")).instrument(
            "control", streams)
        reader = StreamReader(streams, self.resources.stream_arn, max_batches_per_shard=1)
        # as the mapping's ParallelizationFactor: up to that many batches at once, each job's records in one of them
        pool = self._stack.enter_context(ThreadPoolExecutor(DEFAULT_STREAM_PARALLELIZATION,
                                                            thread_name_prefix="completion"))
        while not self._stop.is_set():
            records = reader.poll()
            lambda_records = events.dynamodb_stream(records, self.resources.stream_arn)["Records"]
            batch = [rec for rec in lambda_records if any(patterns.matches(p, rec) for p in COMPLETION_FILTERS)]
            if batch:
                groups = _by_job(batch, DEFAULT_STREAM_PARALLELIZATION)
                list(pool.map(self._deliver_stream_group, groups))
            else:
                self._stop.wait(STREAM_POLL_EVERY)

    def _deliver_stream_group(self, records: list[dict[str, Any]]) -> None:
        """One of the mapping's concurrent batches: its records in order, BatchSize at a time."""
        for i in range(0, len(records), DEFAULT_STREAM_BATCH_SIZE):
            self._deliver_stream_batch(records[i:i + DEFAULT_STREAM_BATCH_SIZE])

    def _deliver_stream_batch(self, batch: list[dict[str, Any]], max_retries: int = 5) -> None:
        """As the event source mapping does: retry from the first failed record, then give up on it."""
        for attempt in range(max_retries + 1):
            try:
                resp = self.invoke("completion", {"Records": batch}, attempts=1) or {}
                failed = [f["itemIdentifier"] for f in resp.get("batchItemFailures") or []]
            except Exception:  # noqa: BLE001 - a failed invocation retries the whole batch
                failed = [batch[0]["dynamodb"]["SequenceNumber"]]
            if not failed:
                return
            first = next(i for i, r in enumerate(batch) if r["dynamodb"]["SequenceNumber"] in failed)
            batch = batch[first:]
            log.warning("stream batch retried", extra={"attempt": attempt + 1, "records": len(batch)})
            self._stop.wait(min(5.0, 0.2 * 2 ** attempt))
        self._errors.append(f"completion gave up on {len(batch)} stream record(s)")
        log.error("stream records dropped after retries", extra={"records": len(batch)})

    def _queue_depth(self, url: str) -> tuple[int, int]:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def _alarm_loop(self) -> None:
        """Evaluate alarms A and B once a period; on a transition, publish what CloudWatch would through SNS."""
        while not self._stop.wait(self.options.alarm_period):
            visible, inflight = self._queue_depth(self.resources.queue_url)
            for alarm, value, handler, topic, trigger in (
                (self.alarm_a, visible, "scale_out", self.resources.scale_out_topic, self.alarm_a_trigger),
                (self.alarm_b, visible + inflight, "scale_in", self.resources.scale_in_topic,
                 {"metrics": self.alarm_b_metrics}),
            ):
                change = alarm.observe(float(value))
                if change is None:
                    continue
                log.info("alarm", extra={"alarm": alarm.name, "state": change.new_state, "value": value})
                if not self._alarm_may_publish(alarm.name, topic):
                    continue
                event = alarms.to_sns_event(change, topic_arn=topic, region=REGION, account=ACCOUNT, **trigger)
                self.invoke(handler, event)

    def _s3_may_notify(self) -> None:
        """What S3 checks when the bucket's notification is set, and SQS on every notification: the event queue's
        policy lets S3 send for this bucket (s3sync.local.iam.service_decision, the bucket as aws:SourceArn). The
        runner (or moto's S3) then sends them; a refusal fails the run as a role's would."""
        bucket_arn = f"arn:aws:s3:::{self.options.source.name}"
        req = Request("sqs:SendMessage", self.resources.events_arn)
        decision = service_decision("s3.amazonaws.com", req, self.stacks.resource_statements(), bucket_arn, ACCOUNT)
        self.iam.record("S3 notifications", "control", req.action, req.resource,
                        "allowed" if decision.allowed else "DENIED")
        if not decision.allowed:
            self.iam.deny(Denial("S3 notifications", "s3.amazonaws.com (service)", "SendMessage", req.action,
                                 req.resource, decision.why))
            log.error("access denied", extra={"component": "S3 notifications", "action": req.action,
                                              "resource": req.resource, "reason": decision.why})

    def _alarm_may_publish(self, alarm_name: str, topic: str) -> bool:
        """What SNS checks when CloudWatch publishes an alarm's notification: the topic's policy (the stacks' topic
        policies, s3sync.local.iam.service_decision) with the alarm as aws:SourceArn. A refusal fails the run as a
        role's would (and the scale function is not invoked, as in AWS, where the alarm action fails)."""
        alarm_arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm_name}"
        req = Request("sns:Publish", topic)
        decision = service_decision("cloudwatch.amazonaws.com", req, self.stacks.resource_statements(), alarm_arn,
                                    ACCOUNT)
        self.iam.record(f"alarm {alarm_name}", "control", req.action, req.resource,
                        "allowed" if decision.allowed else "DENIED")
        if decision.allowed:
            return True
        self.iam.deny(Denial(f"alarm {alarm_name}", "cloudwatch.amazonaws.com (service)", "Publish", req.action,
                             req.resource, decision.why))
        log.error("access denied", extra={"component": f"alarm {alarm_name}", "action": req.action,
                                          "resource": req.resource, "reason": decision.why})
        return not self.options.iam_enforce

    def _sweep_loop(self) -> None:
        """The stack's schedule: every few minutes in AWS (here a third of stuck_after), scale_in only sweeps."""
        every = max(1.0, self.options.stuck_after / 3)
        while not self._stop.wait(every):
            rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{self.options.name}-sweep"
            self.invoke("scale_in", events.scheduled_event(rule, region=REGION, account=ACCOUNT))

    def _relay_loop(self) -> None:
        """Fault injection (`duplicate_messages` > 1): every message the splitter sends is delivered N times."""
        if not self.resources.intake_url:
            return
        sqs = self.client("sqs")
        while not self._stop.is_set():
            resp = sqs.receive_message(QueueUrl=self.resources.intake_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in resp.get("Messages", []):
                for _ in range(self.options.duplicate_messages):
                    sqs.send_message(QueueUrl=self.resources.queue_url, MessageBody=m["Body"])
                sqs.delete_message(QueueUrl=self.resources.intake_url, ReceiptHandle=m["ReceiptHandle"])

    def _notify_loop(self) -> None:
        """Collect what the completion topic published (an email in AWS)."""
        sqs = self.client("sqs")
        while not self._stop.is_set():
            resp = sqs.receive_message(QueueUrl=self.resources.notify_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = resp.get("Messages", [])
            for m in messages:
                try:
                    self.notifications.append(json.loads(m["Body"]))
                except ValueError:
                    self.notifications.append({"raw": m["Body"]})
            if messages:
                sqs.delete_message_batch(QueueUrl=self.resources.notify_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])

    # --- the ECS service ------------------------------------------------------------------------------------------


def _by_job(records: list[dict[str, Any]], groups: int) -> list[list[dict[str, Any]]]:
    """Records split into at most `groups` lists by job (a stable hash of the key), each in stream order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        job = str(rec["dynamodb"]["Keys"][TRANSFERS_HASH_KEY].get("S", ""))
        out.setdefault(zlib.crc32(job.encode()) % groups, []).append(rec)
    return list(out.values())


def _removed_event(bucket: str, key: str) -> dict[str, Any]:
    """The `ObjectRemoved:Delete` notification S3 sends (key URL-encoded, as in an ObjectCreated record)."""
    from urllib.parse import quote_plus  # noqa: PLC0415

    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
                         "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                         "eventName": "ObjectRemoved:Delete",
                         "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                                "object": {"key": quote_plus(key, safe="/")}}}]}
