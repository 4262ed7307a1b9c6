"""`s3sync local`: the whole system on one machine, with the very handlers and worker the stacks run.

What AWS does between the pieces, the runner does here, with the event shapes AWS delivers:
- S3 notifications -> the event queue -> splitter, in batches as lambda.yaml's event source mapping delivers them
  (moto's S3 sends its notifications to the queue; for other servers the runner lists the bucket and sends them);
- the transfers table's stream -> completion, through the same filter patterns as the event source mapping;
- CloudWatch alarms A and B on the queue's depth -> SNS-wrapped alarm messages -> scale_out / scale_in;
- the ECS service: as many worker processes (`python -m container.worker`, or containers of the worker image with
  `worker_image`) as its desired count says, restarted when one dies, stopped as ECS stops a task on scale-in
  (SIGTERM, SIGKILL after StopTimeout), each with exactly the task definition's environment (s3sync.local.workers).
Handlers are loaded by the handler strings the template declares (contract.HANDLERS), as Lambda loads them.

What AWS enforces, the runner enforces where it can (s3sync.local.cfn, s3sync.local.iam): both templates are built
in-process with the local parameters and resolved against the local resources; each function runs with exactly its
template environment plus what the Lambda runtime sets, and every call of a function or worker is checked against
its own role's statements. A refused call fails as in AWS (AccessDenied naming action, resource and role), and fails
the run.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import signal
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s3sync.contract import (
    COMPLETION_FILTERS,
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_STREAM_BATCH_SIZE,
    DEFAULT_STREAM_PARALLELIZATION,
    HANDLERS,
    PARTS_HASH_KEY,
    PARTS_RANGE_KEY,
    SECRET_ACCESS_KEY_ID_FIELD,
    SECRET_SECRET_ACCESS_KEY_FIELD,
    TRANSFERS_HASH_KEY,
    TRANSFERS_STREAM_VIEW,
    Env,
    Status,
)
from s3sync.errors import UserError
from s3sync.local import alarms, events, patterns
from s3sync.local.cfn import LocalStacks, lambda_runtime_environment
from s3sync.local.iam import ROLE_POLICY_ENV, CallLedger, Denial, Enforcer, Request, Where, service_decision
from s3sync.local.servers import MotoServer
from s3sync.local.streams import StreamReader
from s3sync.local.workers import (
    ContainerWorker,
    HostWorker,
    Worker,
    check_image,
    host_environment,
    remove_containers,
    stop_all,
    task_launch,
)
from s3sync.stacks import STACKS, StackConfig
from s3sync.stacks.common import Ids
from s3sync.transfer import logs
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.endpoints import Endpoint, s3_client
from s3sync.transfer.ledger import Job, Ledger, transfers_table_keys
from s3sync.transfer.notify import each_notice
from s3sync.transfer.runtime import Runtime
from s3sync.transfer.splitter import job_id_for

log = logging.getLogger("s3sync.local")

REGION = "us-east-1"
ACCOUNT = "123456789012"
DUMMY_KEY = "testing"  # moto accepts any credentials; never a real key
SPLITTER_CONCURRENCY = 4  # event batches the splitter handles at once (Lambda: as many as the pollers fetch)
# The event queue's visibility timeout here: a failed batch's events come back after it (AWS: 6 x the splitter's
# timeout, 30 min; here short, so that a test's injected failure is retried in seconds, and long enough that a
# large object's split is not handed out twice while it runs)
EVENTS_VISIBILITY = 15
LIST_EVERY = 0.2  # seconds between listings of a source bucket on a server that sends no notifications
# seconds between reads of the transfers table's stream when it had nothing for the completion function: the
# latency of a completion, against the cost of reading every part's progress record (botocore parses each record's
# two images; at 0.1 s, reading until an empty page, they were 110 of the ~350 requests of a 1 GiB copy)
STREAM_POLL_EVERY = 0.25


@dataclass(frozen=True)
class BucketSpec:
    """A bucket on an S3-compatible server; endpoint_url None means the control-plane server (moto)."""

    name: str
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = REGION


@dataclass(frozen=True)
class LocalOptions:
    source: BucketSpec = BucketSpec("s3sync-source")
    dest: BucketSpec = BucketSpec("s3sync-dest", region="cn-north-1")
    endpoint_url: str | None = None  # control plane; None starts an embedded moto server
    dest_prefix: str = ""
    dest_encryption: DestEncryption = DestEncryption()  # server-side encryption of the copies (DestSse in the stacks)
    part_size_mib: int = 8
    worker_threads: int = 4
    min_tasks: int = 1
    max_tasks: int = 2
    visibility_timeout: int = 30
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
    scale_out_threshold: int = 20
    alarm_period: float = 1.0  # seconds per evaluation period (CloudWatch: 60)
    scale_in_periods: int = 3
    until_idle: bool = False
    idle_grace: float = 1.0
    timeout: float | None = None  # stop (and report) after this many seconds
    duplicate_messages: int = 1  # fault injection: deliver every part message this many times
    stuck_after: int = 30  # seconds without progress before the sweeper (run on alarm B) re-drives a job
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # small objects the splitter copies itself (0: none)
    state_dir: Path | None = None  # worker logs and pids; a temp dir by default
    name: str = "s3sync"  # resource name prefix
    propagate_deletes: bool = False  # deleting a source object deletes its copy (PropagateDeletes in the stacks)
    moto_patches: bool = True  # the embedded moto with s3sync.local.moto_patches (False: as shipped, to compare)
    # IAM: every call of a function or worker is checked against its role in the templates; False records the calls
    # and the refusals without refusing them (to list what a role lacks in one run)
    iam_enforce: bool = True
    # the two templates as dicts ({"ecs": ..., "lambda": ...}); None builds them from s3sync.stacks with the local
    # settings (local_templates). Pass customized ones to run your own stacks' roles and environments.
    templates: Mapping[str, Mapping[str, Any]] | None = None
    # the workers as containers of this image (`s3sync image build`) instead of host processes
    worker_image: str | None = None


@dataclass
class Resources:
    queue_url: str = ""
    queue_arn: str = ""
    dlq_url: str = ""
    dlq_arn: str = ""
    intake_url: str = ""  # where the splitter sends when messages are duplicated by the runner
    events_url: str = ""  # the event queue: S3 notifications (moto's S3 sends them; for other servers, the lister)
    events_arn: str = ""
    notify_url: str = ""  # subscribed to the completion topic, so the runner sees what users would get by email
    transfers_table: str = ""
    parts_table: str = ""
    stream_arn: str = ""
    secret_arn: str = ""
    cluster: str = ""
    service: str = ""
    scale_out_topic: str = ""
    scale_in_topic: str = ""
    completion_topic: str = ""


@dataclass
class Summary:
    jobs: list[Job]
    dlq_messages: int
    notifications: list[dict[str, Any]]
    max_workers: int
    desired_counts: list[int]
    elapsed: float
    denied: list[Denial] = field(default_factory=list)  # calls a role did not allow (s3sync.local.iam)

    @property
    def ok(self) -> bool:
        return not self.denied and self.dlq_messages == 0 and all(j.status == Status.DONE for j in self.jobs)

    @property
    def notices(self) -> list[dict[str, Any]]:
        """The transfers the notifications report, one entry each (a batch's summary names several)."""
        return [n for message in self.notifications for n in each_notice(message)]


@dataclass(frozen=True)
class LambdaContext:
    """What a handler reads of Lambda's context object here: the function's name and the invocation's request id
    (no `get_remaining_time_in_millis`: a local invocation has no timeout)."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def bucket_client(spec: BucketSpec, control_endpoint_url: str, control_key: str = DUMMY_KEY) -> Any:
    """An S3 client for a bucket spec; a spec without its own endpoint lives on the control plane (moto)."""
    if spec.endpoint_url:
        return s3_client(Endpoint(spec.region, spec.endpoint_url, spec.access_key_id, spec.secret_access_key))
    return s3_client(Endpoint(spec.region, control_endpoint_url, control_key, control_key))


def load_handler(name: str) -> Callable[[dict[str, Any], Any], Any]:
    """Resolve a handler string as Lambda does: module path, then attribute."""
    module_name, attr = HANDLERS[name].rsplit(".", 1)
    return getattr(importlib.import_module(module_name), attr)


def local_templates(options: LocalOptions) -> dict[str, dict[str, Any]]:
    """Both templates as `s3sync render` builds them, with the render-time settings the local run uses."""
    config = StackConfig(stuck_after_s=options.stuck_after, inline_max_bytes=options.inline_max_bytes)
    return {stem: json.loads(json.dumps(cls(config).build().to_dict())) for stem, cls in STACKS.items()}


def local_parameters(options: LocalOptions, endpoint_url: str) -> dict[str, str]:
    """The stacks' Parameters as the local run sets them (the rest keep their defaults, or a placeholder)."""
    o, dest = options, options.dest
    values: dict[str, Any] = {
        "SourceBucketName": o.source.name, "DestBucket": dest.name, "DestRegion": dest.region,
        "DestPrefix": o.dest_prefix, "DestEndpointUrl": dest.endpoint_url or endpoint_url,
        "DestAccessKeyId": dest.access_key_id or DUMMY_KEY, "DestSecretAccessKey": dest.secret_access_key or DUMMY_KEY,
        "DestSse": o.dest_encryption.mode, "DestSseKmsKeyId": o.dest_encryption.kms_key_id,
        "WorkerThreads": o.worker_threads, "MinTasks": o.min_tasks, "MaxTasks": o.max_tasks,
        "VisibilityTimeout": o.visibility_timeout, "MaxReceiveCount": o.max_receive_count,
        "ScaleOutThreshold": o.scale_out_threshold, "PartSizeMiB": o.part_size_mib,
        "PropagateDeletes": "true" if o.propagate_deletes else "false", "FinderSchedule": "",
        "SourceKmsKeyArn": "", "ImageUri": "s3sync-worker:local", "LaunchType": "EC2", "Email": "ops@example.com",
    }
    return {k: str(v) for k, v in values.items()}


class LocalRunner:
    def __init__(self, options: LocalOptions) -> None:
        self.o = options
        self.r = Resources()
        self._stop = threading.Event()
        self._stack = ExitStack()
        self._workers: list[Worker] = []
        self.run_id = f"{os.getpid()}-{id(self) & 0xFFFFFF:06x}"  # labels this run's worker containers
        self._worker_seq = 0
        self.max_workers_seen = 0
        self.desired_counts: list[int] = []
        self.notifications: list[dict[str, Any]] = []
        self.invocations: Counter[str] = Counter()  # function invocations by function (bench B2 counts them)
        self._invocations_lock = threading.Lock()
        self._seen_objects: set[tuple[str, str]] = set()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []
        self.endpoint_url = ""
        # the access key id of every request to the control plane: a random token the embedded one requires while
        # it holds real destination keys (anyone else on the machine gets 403), else moto's placeholder
        self.control_key = control_key(options)
        self.state_dir = Path("")
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._scaled = threading.Event()  # a scaling handler ran: read the desired count again
        self._desired: int | None = None
        self._desired_at = float("-inf")  # never read: the monotonic clock's origin is arbitrary
        self._pids_written: list[int] | None = None
        self.iam = CallLedger()  # the functions' calls (in this process); the workers' refusals come from a file
        self.runtimes: dict[str, Runtime] = {}  # one per function: its template environment, its role
        self._worker_denials: list[Denial] = []
        self._worker_denials_size = 0

    # --- public ---------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, on_tick: Callable[[LocalRunner], None] | None = None) -> Summary:
        """Set up, serve until stopped (or idle with until_idle), tear down; returns what happened."""
        start = time.monotonic()
        with self._stack:
            try:
                self._setup()
            except (BotoCoreError, ClientError) as exc:
                raise UserError(f"setting up the local system failed: {exc}") from None
            self._stack.callback(self._stop_workers)
            for target in (self._event_loop, self._list_loop, self._stream_loop, self._alarm_loop,
                           self._sweep_loop, self._relay_loop, self._notify_loop):
                t = threading.Thread(target=self._guard(target), name=target.__name__, daemon=True)
                t.start()
                self._threads.append(t)
            idle_since: float | None = None
            while not self._stop.wait(0.25):
                if self.o.iam_enforce and self.denials():
                    log.error("a role refused a call; stopping", extra={"denied": self.denials()[0].line()})
                    break
                self._reconcile_workers()
                if on_tick:
                    on_tick(self)
                if self.o.timeout and time.monotonic() - start > self.o.timeout:
                    log.warning("timeout reached", extra={"seconds": self.o.timeout})
                    break
                if self.o.until_idle:
                    if self._idle():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= self.o.idle_grace:
                            break
                    else:
                        idle_since = None
            self._stop.set()
            for t in self._threads:
                t.join(timeout=25)
            self._stop_workers()  # their refusals and calls are on file once they exit
            self.iam.dump(self.state_dir / "iam" / "calls.json")
            return Summary(jobs=self.jobs(), dlq_messages=self._queue_depth(self.r.dlq_url)[0],
                           notifications=list(self.notifications), max_workers=self.max_workers_seen,
                           desired_counts=list(self.desired_counts), elapsed=time.monotonic() - start,
                           denied=self.denials())

    def jobs(self) -> list[Job]:
        return self.ledger.scan_jobs()

    def denials(self) -> list[Denial]:
        """Every call a role refused so far: the functions' (this process) and the workers' (their file)."""
        path = self.state_dir / "iam" / "worker-denials.jsonl"
        size = path.stat().st_size if path.exists() else 0
        if size != self._worker_denials_size:
            self._worker_denials, self._worker_denials_size = CallLedger.read_denials(path), size
        return list(self.iam.denials) + self._worker_denials

    def client(self, service: str) -> Any:
        """One control-plane client per service, shared by the runner's threads (boto3 clients are thread-safe;
        making one costs tens of milliseconds of CPU, too much for loops that run several times a second)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(
                    service, endpoint_url=self.endpoint_url, region_name=REGION,
                    aws_access_key_id=self.control_key, aws_secret_access_key=self.control_key,
                    config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32))
            return self._clients[service]

    def s3(self, spec: BucketSpec) -> Any:
        return bucket_client(spec, self.endpoint_url, self.control_key)

    # --- setup ----------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self.o.worker_image:
            check_image(self.o.worker_image)  # before anything starts: a run never pulls
            log.warning("container workers run the image as built: their calls are not checked against the task "
                        "role (s3sync.local.iam is not in the image)")
        if self.o.endpoint_url:
            self.endpoint_url = self.o.endpoint_url.rstrip("/")
        else:
            self.endpoint_url = self._stack.enter_context(MotoServer(
                patched=self.o.moto_patches, access_key_id=None if self.control_key == DUMMY_KEY else self.control_key,
            )).endpoint_url
        if self.o.state_dir:
            self.state_dir = Path(self.o.state_dir)
            self.state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.state_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="s3sync-")))
        (self.state_dir / "logs").mkdir(exist_ok=True)
        if self.control_key != DUMMY_KEY:  # for `s3sync status` in another terminal of the same user
            key_file = self.state_dir / CONTROL_KEY_FILE
            key_file.unlink(missing_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.control_key + "\n")
            self._stack.callback(key_file.unlink, missing_ok=True)
        (self.state_dir / "iam").mkdir(exist_ok=True)
        self.source_s3 = self.s3(self.o.source)
        self.dest_s3 = self.s3(self.o.dest)
        self._create_resources()
        self.ledger = Ledger(self.client("dynamodb"), self.r.transfers_table, self.r.parts_table)
        self._load_stacks()
        self._s3_may_notify()
        self._export_environment()
        self._workers_role()
        self._cold_start()
        log.info("control plane ready", extra={"endpoint_url": self.endpoint_url, "prefix": self.o.name})

    def _create_resources(self) -> None:
        n, r = self.o.name, self.r
        sqs, ddb, sns = self.client("sqs"), self.client("dynamodb"), self.client("sns")
        r.dlq_url = sqs.create_queue(QueueName=f"{n}-parts-dlq")["QueueUrl"]
        dlq_arn = r.dlq_arn = sqs.get_queue_attributes(QueueUrl=r.dlq_url,
                                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        r.queue_url = sqs.create_queue(QueueName=f"{n}-parts", Attributes={
            "VisibilityTimeout": str(self.o.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(self.o.max_receive_count)}),
        })["QueueUrl"]
        r.queue_arn = sqs.get_queue_attributes(QueueUrl=r.queue_url,
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if self.o.duplicate_messages > 1:
            r.intake_url = sqs.create_queue(QueueName=f"{n}-intake")["QueueUrl"]
        r.transfers_table, r.parts_table = f"{n}-transfers", f"{n}-parts"
        existing = ddb.list_tables()["TableNames"]
        if r.transfers_table not in existing:
            # its key and the sparse `Attention` index, as ecs.yaml declares them (tests/test_templates.py)
            ddb.create_table(TableName=r.transfers_table, BillingMode="PAY_PER_REQUEST", **transfers_table_keys(),
                             StreamSpecification={"StreamEnabled": True, "StreamViewType": TRANSFERS_STREAM_VIEW})
        if r.parts_table not in existing:
            ddb.create_table(TableName=r.parts_table, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": PARTS_HASH_KEY, "AttributeType": "S"},
                                                   {"AttributeName": PARTS_RANGE_KEY, "AttributeType": "N"}],
                             KeySchema=[{"AttributeName": PARTS_HASH_KEY, "KeyType": "HASH"},
                                        {"AttributeName": PARTS_RANGE_KEY, "KeyType": "RANGE"}])
        r.stream_arn = ddb.describe_table(TableName=r.transfers_table)["Table"]["LatestStreamArn"]
        key_id, secret_key = dest_keys(self.o, self.control_key)
        secret = json.dumps({SECRET_ACCESS_KEY_ID_FIELD: key_id, SECRET_SECRET_ACCESS_KEY_FIELD: secret_key})
        sm = self.client("secretsmanager")
        try:
            r.secret_arn = sm.create_secret(Name=f"{n}-dest-credentials", SecretString=secret)["ARN"]
        except sm.exceptions.ResourceExistsException:
            r.secret_arn = sm.put_secret_value(SecretId=f"{n}-dest-credentials", SecretString=secret)["ARN"]
        r.scale_out_topic = sns.create_topic(Name=f"{n}-scale-out")["TopicArn"]
        r.scale_in_topic = sns.create_topic(Name=f"{n}-scale-in")["TopicArn"]
        r.completion_topic = sns.create_topic(Name=f"{n}-completion")["TopicArn"]
        sns.subscribe(TopicArn=r.completion_topic, Protocol="email", Endpoint="ops@example.com")
        r.notify_url = sqs.create_queue(QueueName=f"{n}-notifications")["QueueUrl"]
        notify_arn = sqs.get_queue_attributes(QueueUrl=r.notify_url,
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=r.completion_topic, Protocol="sqs", Endpoint=notify_arn,
                      Attributes={"RawMessageDelivery": "true"})
        self._create_service(n)
        self._create_alarms(n)
        self._ensure_bucket(self.source_s3, self.o.source)
        self._ensure_bucket(self.dest_s3, self.o.dest)
        # the stacks' event queue (lambda.yaml's EventQueue): the splitter reads S3's notifications from it in batches
        r.events_url = sqs.create_queue(QueueName=f"{n}-s3-events",
                                        Attributes={"VisibilityTimeout": str(EVENTS_VISIBILITY)})["QueueUrl"]
        r.events_arn = sqs.get_queue_attributes(QueueUrl=r.events_url,
                                                AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if not self.o.source.endpoint_url:  # moto's S3 sends its notifications there; other servers are listed
            self.source_s3.put_bucket_notification_configuration(
                Bucket=self.o.source.name,
                NotificationConfiguration={"QueueConfigurations": [
                    {"QueueArn": r.events_arn, "Events": ["s3:ObjectCreated:*"]
                     + (["s3:ObjectRemoved:*"] if self.o.propagate_deletes else [])}]},
            )

    def _create_service(self, n: str) -> None:
        ecs = self.client("ecs")
        self.r.cluster = ecs.create_cluster(clusterName=f"{n}-cluster")["cluster"]["clusterName"]
        ecs.register_task_definition(family=f"{n}-worker", containerDefinitions=[{
            "name": "worker", "image": "s3sync-worker:local", "essential": True, "memory": 1024,
            "command": list(("python", "-m", "container.worker")),
        }])
        services = ecs.describe_services(cluster=self.r.cluster, services=[f"{n}-workers"]).get("services", [])
        if services and services[0].get("status") == "ACTIVE":
            ecs.update_service(cluster=self.r.cluster, service=f"{n}-workers", desiredCount=self.o.min_tasks)
        else:
            ecs.create_service(cluster=self.r.cluster, serviceName=f"{n}-workers", taskDefinition=f"{n}-worker",
                               desiredCount=self.o.min_tasks, launchType="EC2")
        self.r.service = f"{n}-workers"

    def _create_alarms(self, n: str) -> None:
        """Stored in moto for the record (it never evaluates them); `_alarm_loop` evaluates the same rules."""
        cw = self.client("cloudwatch")
        queue_name = self.r.queue_url.rsplit("/", 1)[-1]
        dims = [{"Name": "QueueName", "Value": queue_name}]

        def stat(metric_id: str, metric: str) -> dict[str, Any]:
            return {"Id": metric_id, "ReturnData": False, "MetricStat": {
                "Metric": {"Namespace": "AWS/SQS", "MetricName": metric, "Dimensions": dims},
                "Period": 60, "Stat": "Maximum"}}

        self.alarm_a = alarms.Alarm(f"{n}-backlog-high", threshold=self.o.scale_out_threshold,
                                    comparison="GreaterThanOrEqualToThreshold", evaluation_periods=1)
        self.alarm_b = alarms.Alarm(f"{n}-queue-drained", threshold=0, comparison="LessThanOrEqualToThreshold",
                                    evaluation_periods=self.o.scale_in_periods)
        self.alarm_a_trigger = {"metric_name": "ApproximateNumberOfMessagesVisible", "namespace": "AWS/SQS",
                                "statistic": "Maximum", "dimensions": {"QueueName": queue_name}}
        self.alarm_b_metrics = [stat("visible", "ApproximateNumberOfMessagesVisible"),
                                stat("inflight", "ApproximateNumberOfMessagesNotVisible"),
                                {"Id": "total", "Expression": "visible + inflight", "ReturnData": True}]
        cw.put_metric_alarm(AlarmName=self.alarm_a.name, Namespace="AWS/SQS",
                            MetricName="ApproximateNumberOfMessagesVisible", Dimensions=dims, Statistic="Maximum",
                            Period=60, EvaluationPeriods=1, Threshold=float(self.o.scale_out_threshold),
                            ComparisonOperator="GreaterThanOrEqualToThreshold",
                            AlarmActions=[self.r.scale_out_topic])
        cw.put_metric_alarm(AlarmName=self.alarm_b.name, EvaluationPeriods=self.o.scale_in_periods, Threshold=0.0,
                            ComparisonOperator="LessThanOrEqualToThreshold", AlarmActions=[self.r.scale_in_topic],
                            Metrics=self.alarm_b_metrics)

    @staticmethod
    def _ensure_bucket(s3: Any, spec: BucketSpec) -> None:
        try:
            s3.head_bucket(Bucket=spec.name)
            return
        except Exception:  # noqa: BLE001 - missing (or unreadable: create_bucket then says why)
            pass
        kwargs: dict[str, Any] = {"Bucket": spec.name}
        if spec.region != "us-east-1" and not spec.endpoint_url:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
        try:
            s3.create_bucket(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot create bucket {spec.name} at {spec.endpoint_url or 'the control plane'}: "
                            f"{exc}") from None

    def _export_environment(self) -> None:
        """The worker task's environment as ECS gives it (s3sync.local.workers): the task definition's Environment
        and Secrets (read from the secret now, as ECS does when a task starts) and what ECS sets, plus the local
        stand-ins for what AWS provides otherwise (workers.LOCAL_STAND_INS). Nothing of the runner's own
        environment: a host worker gets PATH on top (workers.host_environment), a container nothing."""
        o = self.o
        self.task = task_launch(self.stacks.ecs, self._read_secret, region=REGION,
                                launch_type=local_parameters(o, self.endpoint_url)["LaunchType"])
        self.worker_env = {
            **self.task.environment,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.control_key, "AWS_SECRET_ACCESS_KEY": self.control_key,
            Env.SOURCE_ENDPOINT_URL: o.source.endpoint_url or self.endpoint_url,
            Env.SOURCE_ACCESS_KEY_ID: o.source.access_key_id or self.control_key,
            Env.SOURCE_SECRET_ACCESS_KEY: o.source.secret_access_key or self.control_key,
            Env.LOCAL_PLAIN_HTTP: "1",  # the local servers speak http://; in AWS only https:// is accepted
        }

    def _read_secret(self, arn: str, stage: str, version: str) -> str:
        """What the task's execution role reads for a task definition's Secrets (GetSecretValue)."""
        kwargs = {"SecretId": arn, **({"VersionStage": stage} if stage else {}),
                  **({"VersionId": version} if version else {})}
        return self.client("secretsmanager").get_secret_value(**kwargs)["SecretString"]

    # --- the stacks: environments and roles ------------------------------------------------------------------------
    def _load_stacks(self) -> None:
        """Both templates resolved against the resources just created (s3sync.local.cfn)."""
        r, n = self.r, self.o.name
        self.where = Where(partition="aws", region=REGION, account=ACCOUNT,
                           secrets={f"{n}-dest-credentials": r.secret_arn})
        tables = {t: self.client("dynamodb").describe_table(TableName=t)["Table"]
                  for t in (r.transfers_table, r.parts_table)}
        ecs_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}"  # the service's long ARN format, as requests_for builds it
        ecs = {
            Ids.QUEUE: {"Ref": r.queue_url, "Arn": r.queue_arn, "QueueName": r.queue_url.rsplit("/", 1)[-1]},
            Ids.DLQ: {"Ref": r.dlq_url, "Arn": r.dlq_arn, "QueueName": r.dlq_url.rsplit("/", 1)[-1]},
            Ids.TRANSFERS_TABLE: {"Ref": r.transfers_table, "Arn": tables[r.transfers_table]["TableArn"],
                                  "StreamArn": r.stream_arn},
            Ids.PARTS_TABLE: {"Ref": r.parts_table, "Arn": tables[r.parts_table]["TableArn"]},
            Ids.SECRET: {"Ref": r.secret_arn, "Id": r.secret_arn},
            Ids.CLUSTER: {"Ref": r.cluster, "Arn": f"{ecs_arn}:cluster/{r.cluster}"},
            Ids.SERVICE: {"Ref": f"{ecs_arn}:service/{r.cluster}/{r.service}",
                          "ServiceArn": f"{ecs_arn}:service/{r.cluster}/{r.service}", "Name": r.service},
        }
        lam = {
            Ids.BUCKET: {"Ref": self.o.source.name, "Arn": f"arn:aws:s3:::{self.o.source.name}"},
            Ids.EVENT_QUEUE: {"Ref": r.events_url, "Arn": r.events_arn, "QueueName": r.events_url.rsplit("/", 1)[-1]},
            # no dead-letter queue here: a failing event comes back every EVENTS_VISIBILITY seconds
            Ids.EVENT_DLQ: {"Ref": f"{r.events_url}-dlq", "Arn": f"{r.events_arn}-dlq",
                            "QueueName": r.events_url.rsplit("/", 1)[-1] + "-dlq"},
            Ids.COMPLETION_TOPIC: {"Ref": r.completion_topic, "TopicName": r.completion_topic.rsplit(":", 1)[-1]},
            Ids.SCALE_OUT_TOPIC: {"Ref": r.scale_out_topic, "TopicName": r.scale_out_topic.rsplit(":", 1)[-1]},
            Ids.SCALE_IN_TOPIC: {"Ref": r.scale_in_topic, "TopicName": r.scale_in_topic.rsplit(":", 1)[-1]},
            # the alarms as `_create_alarms` names them: the topic policies name their ARNs
            Ids.SCALE_OUT_ALARM: {"Ref": f"{n}-backlog-high",
                                  "Arn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{n}-backlog-high"},
            Ids.SCALE_IN_ALARM: {"Ref": f"{n}-queue-drained",
                                 "Arn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{n}-queue-drained"},
        }
        templates = self.o.templates or local_templates(self.o)
        # the splitter's event source mapping (lambda.yaml): how many events per invocation, gathered how long
        mapping = templates["lambda"].get("Resources", {}).get(Ids.EVENT_MAPPING, {}).get("Properties", {})
        self._event_batch = int(mapping.get("BatchSize", 10))
        self._event_window = float(mapping.get("MaximumBatchingWindowInSeconds", 0))
        self.stacks = LocalStacks(templates, local_parameters(self.o, self.endpoint_url), self.where,
                                  physical={"ecs": ecs, "lambda": lam})  # the default stack names
        # fault injection (duplicate_messages): the functions send to the intake queue, which stands in for the
        # part queue (the runner relays every message to it N times)
        self._aliases: dict[str, str] = {}
        if r.intake_url:
            intake_arn = self.client("sqs").get_queue_attributes(
                QueueUrl=r.intake_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self._aliases[intake_arn] = r.queue_arn

    def _enforcer(self, component: str, role: Any) -> Enforcer:
        return Enforcer(component, role, self.where, self.iam, enforce=self.o.iam_enforce, aliases=self._aliases)

    def _function_environment(self, name: str) -> dict[str, str]:
        """Exactly what the function has in AWS (its template's Environment.Variables and what the Lambda runtime
        sets), plus the local stand-ins for AWS's endpoints: the control plane's URL, and the source bucket's
        server and keys (contract.Env: local only, never set by the templates)."""
        fn = self.stacks.function(name)
        env = {**fn.environment,
               **lambda_runtime_environment(fn, REGION, (self.control_key,) * 3, str(_project_root()))}
        o = self.o
        env.update({
            "AWS_ENDPOINT_URL": self.endpoint_url,
            Env.SOURCE_ENDPOINT_URL: o.source.endpoint_url or self.endpoint_url,
            Env.SOURCE_ACCESS_KEY_ID: o.source.access_key_id or self.control_key,
            Env.SOURCE_SECRET_ACCESS_KEY: o.source.secret_access_key or self.control_key,
            Env.LOCAL_PLAIN_HTTP: "1",  # the local servers speak http://; in AWS only https:// is accepted
        })
        if self.r.intake_url and Env.QUEUE_URL in env:
            env[Env.QUEUE_URL] = self.r.intake_url
        return env

    def _workers_role(self) -> None:
        """Worker processes check their calls against the task role: the runner writes it to a file they read
        (ROLE_POLICY_ENV, read by s3sync.transfer.runtime.Runtime), and reads their refusals back."""
        iam_dir = self.state_dir / "iam"
        path = self._enforcer("worker", self.stacks.task_role()).to_file(
            iam_dir / "task-role.json", iam_dir / "worker-denials.jsonl", iam_dir / "worker-calls")
        self.worker_env[ROLE_POLICY_ENV] = str(path)

    def _cold_start(self) -> None:
        """Fresh handler modules, as a new Lambda execution environment would load them, and one Runtime per
        function: its own environment, its own role."""
        self.handlers = {}
        common = importlib.import_module("functions._common")
        common.runtime.cache_clear()
        if not logging.getLogger("s3sync").handlers:  # a function's cold start sets up its JSON logs (do_local has)
            logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
        for name in HANDLERS:
            self.handlers[name] = load_handler(name)
            enforcer = self._enforcer(f"function {name}", self.stacks.function_role(name))
            # the INIT phase: clients made before the first event, as outside a handler
            self.runtimes[name] = Runtime(self._function_environment(name), on_client=enforcer.instrument).warm()

    def invoke(self, name: str, event: dict[str, Any], attempts: int = 3) -> Any:
        """Invoke a handler in-process; like Lambda's async invocation, retry a failed one twice."""
        common = importlib.import_module("functions._common")
        for attempt in range(1, attempts + 1):
            with self._invocations_lock:  # as Lambda bills them: every attempt is an invocation
                self.invocations[name] += 1
            context = LambdaContext(name)  # a request id per attempt, as Lambda gives each retry
            try:
                with common.invoked_with(self.runtimes[name]):
                    return self.handlers[name](event, context)
            except Exception as exc:  # noqa: BLE001
                log.warning("handler failed", extra={"handler": name, "attempt": attempt, "reason": repr(exc),
                                                     "requestId": context.aws_request_id})
                if attempt == attempts:
                    self._errors.append(f"{name}: {exc!r}")
                    raise
                self._stop.wait(0.5 * attempt)
            finally:
                if name in ("scale_out", "scale_in"):
                    self._scaled.set()  # the desired count may have changed: the main loop reads it again
        return None

    # --- background loops -----------------------------------------------------------------------------------------
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
                resp = sqs.receive_message(QueueUrl=self.r.events_url, AttributeNames=["All"], WaitTimeSeconds=wait,
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
                result = self.invoke("splitter", events.sqs_batch(batch, self.r.events_arn, region=REGION),
                                     attempts=1) or {}
            except Exception:  # noqa: BLE001 - logged by invoke; every message of the batch comes back
                return
            failed = {f.get("itemIdentifier") for f in result.get("batchItemFailures") or []}
            done = [m for m in batch if m["MessageId"] not in failed]
            for i in range(0, len(done), 10):
                sqs.delete_message_batch(QueueUrl=self.r.events_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done[i:i + 10])])
        finally:
            slots.release()

    def _list_loop(self) -> None:
        """A source on a server that sends no notifications: new objects found by listing are sent to the event
        queue as S3 would send their notifications (one message per object); with delete propagation, a key no
        longer listed is a deletion (delivered to the splitter directly, as EventBridge's are)."""
        if not self.o.source.endpoint_url:
            return  # moto's S3 notifies
        sqs = self.client("sqs")
        while not self._stop.is_set():
            listed_at = time.monotonic()
            new = [o for o in self._list_source() if (o["Key"], o["ETag"]) not in self._seen_objects]
            listing = time.monotonic() - listed_at
            for o in new:
                event = events.s3_object_created(self.o.source.name, o["Key"], int(o["Size"]), o["ETag"].strip('"'),
                                                 region=REGION)
                sqs.send_message(QueueUrl=self.r.events_url, MessageBody=json.dumps(event))
                self._seen_objects.add((o["Key"], o["ETag"]))
            if self.o.propagate_deletes:
                listed = {o["Key"] for o in self._list_source()}
                for ident in [i for i in self._seen_objects if i[0] not in listed]:
                    self.invoke("splitter", _removed_event(self.o.source.name, ident[0]))
                    self._seen_objects.discard(ident)
            # S3 tells within about a second; a listing every 0.2 s tells sooner, unless listing is slow (a
            # big bucket): then at most a tenth of the time goes to listing
            self._stop.wait(max(LIST_EVERY, 9 * listing))

    def _list_source(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.source_s3.get_paginator("list_objects_v2").paginate(Bucket=self.o.source.name):
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
        reader = StreamReader(streams, self.r.stream_arn, max_batches_per_shard=1)
        # as the mapping's ParallelizationFactor: up to that many batches at once, each job's records in one of them
        pool = self._stack.enter_context(ThreadPoolExecutor(DEFAULT_STREAM_PARALLELIZATION,
                                                            thread_name_prefix="completion"))
        while not self._stop.is_set():
            records = reader.poll()
            lambda_records = events.dynamodb_stream(records, self.r.stream_arn)["Records"]
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
        while not self._stop.wait(self.o.alarm_period):
            visible, inflight = self._queue_depth(self.r.queue_url)
            for alarm, value, handler, topic, trigger in (
                (self.alarm_a, visible, "scale_out", self.r.scale_out_topic, self.alarm_a_trigger),
                (self.alarm_b, visible + inflight, "scale_in", self.r.scale_in_topic,
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
        bucket_arn = f"arn:aws:s3:::{self.o.source.name}"
        req = Request("sqs:SendMessage", self.r.events_arn)
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
        return not self.o.iam_enforce

    def _sweep_loop(self) -> None:
        """The stack's schedule: every few minutes in AWS (here a third of stuck_after), scale_in only sweeps."""
        every = max(1.0, self.o.stuck_after / 3)
        while not self._stop.wait(every):
            rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{self.o.name}-sweep"
            self.invoke("scale_in", events.scheduled_event(rule, region=REGION, account=ACCOUNT))

    def _relay_loop(self) -> None:
        """Fault injection (`duplicate_messages` > 1): every message the splitter sends is delivered N times."""
        if not self.r.intake_url:
            return
        sqs = self.client("sqs")
        while not self._stop.is_set():
            resp = sqs.receive_message(QueueUrl=self.r.intake_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in resp.get("Messages", []):
                for _ in range(self.o.duplicate_messages):
                    sqs.send_message(QueueUrl=self.r.queue_url, MessageBody=m["Body"])
                sqs.delete_message(QueueUrl=self.r.intake_url, ReceiptHandle=m["ReceiptHandle"])

    def _notify_loop(self) -> None:
        """Collect what the completion topic published (an email in AWS)."""
        sqs = self.client("sqs")
        while not self._stop.is_set():
            resp = sqs.receive_message(QueueUrl=self.r.notify_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = resp.get("Messages", [])
            for m in messages:
                try:
                    self.notifications.append(json.loads(m["Body"]))
                except ValueError:
                    self.notifications.append({"raw": m["Body"]})
            if messages:
                sqs.delete_message_batch(QueueUrl=self.r.notify_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])

    # --- the ECS service ------------------------------------------------------------------------------------------
    def desired_count(self) -> int:
        svc = self.client("ecs").describe_services(cluster=self.r.cluster, services=[self.r.service])["services"][0]
        return int(svc["desiredCount"])

    def _reconcile_workers(self) -> None:
        """Keep as many live worker processes as the service's desired count (ECS restarts dead tasks too).

        The count is read after every scaling invocation and otherwise once a second (someone else may change
        it); dead processes are noticed at every call."""
        now = time.monotonic()
        if self._scaled.is_set() or now - self._desired_at >= 1.0 or self._desired is None:
            self._scaled.clear()
            self._desired, self._desired_at = self.desired_count(), now
        desired = self._desired
        if not self.desired_counts or self.desired_counts[-1] != desired:
            self.desired_counts.append(desired)
        for w in [w for w in self._workers if w.poll() is not None]:
            log.info("worker exited", extra={"worker": w.name, "pid": w.pid, "code": w.poll()})
            self._workers.remove(w)
        while len(self._workers) < desired:
            self._start_worker()
        while len(self._workers) > desired:
            w = self._workers.pop()
            # as ECS stops a task: SIGTERM (it releases its in-flight parts and exits), SIGKILL after StopTimeout
            threading.Thread(target=w.stop, args=(self.task.stop_timeout,), daemon=True).start()
        self.max_workers_seen = max(self.max_workers_seen, len(self._workers))
        pids = [pid for pid in (w.pid for w in self._workers) if pid is not None]
        if pids != self._pids_written:
            (self.state_dir / "workers.json").write_text(json.dumps(pids))
            self._pids_written = pids

    @property
    def workers(self) -> list[Worker]:
        """The live workers (host processes or containers), oldest first."""
        return list(self._workers)

    def _start_worker(self) -> None:
        self._worker_seq += 1
        log_path = self.state_dir / "logs" / f"worker-{self._worker_seq}.log"
        if self.o.worker_image:
            env = {k: v for k, v in self.worker_env.items() if k != ROLE_POLICY_ENV}
            name = f"s3sync-worker-{self.run_id}-{self._worker_seq}"
            w: Worker = ContainerWorker(name, self.o.worker_image, self.task, env, log_path, self.run_id)
        else:
            w = HostWorker(f"worker-{self._worker_seq}", host_environment(self.worker_env, _image_env()), log_path,
                           _project_root())
        log.info("worker started", extra={"worker": w.name, "kind": w.kind, "log": str(log_path)})
        self._workers.append(w)

    def _stop_workers(self) -> None:
        stop_all(self._workers, getattr(self, "task", None) and self.task.stop_timeout or 30)
        self._workers.clear()
        if self.o.worker_image:
            remove_containers(self.run_id)

    # --- idleness -------------------------------------------------------------------------------------------------
    def _idle(self) -> bool:
        """Every object in the source bucket has a job, every job is DONE or FAILED, and no message is left."""
        jobs = {j.job_id: j for j in self.jobs()}
        if any(j.status not in Status.FINAL for j in jobs.values()):
            return False
        for obj in self._list_source():
            if job_id_for(self.o.source.name, obj["Key"], None, obj["ETag"]) not in jobs:
                return False
        for url in (self.r.queue_url, self.r.intake_url, self.r.events_url):
            if url and sum(self._queue_depth(url)) > 0:
                return False
        return True


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


def _image_env() -> dict[str, str]:
    """The worker image's own ENV (its Dockerfile's), which a host worker gets too; {} outside a checkout."""
    try:
        text = (_project_root() / "container" / "Dockerfile").read_text(encoding="utf-8")
    except OSError:
        return {}
    from s3sync.package import dockerfile_env  # noqa: PLC0415

    return dockerfile_env(text)


def _project_root() -> Path:
    """The directory from which `container` and `functions` import (the repository, or site-packages)."""
    return Path(importlib.import_module("container").__file__).resolve().parent.parent  # type: ignore[arg-type]


__all__ = ["BucketSpec", "LocalOptions", "LocalRunner", "Summary", "bucket_client", "do_local", "load_handler",
           "local_parameters", "local_templates"]


def do_local(options: LocalOptions, console: Any = None) -> int:
    """`s3sync local`: say where to upload and how to watch, run until interrupted (or idle), then print what
    happened on stdout. 0 when nothing failed, 1 when something did, 130 when Ctrl-C stopped it (a second Ctrl-C
    stops at once)."""
    from rich.console import Console  # noqa: PLC0415

    console = console or Console()
    logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
    runner = LocalRunner(options)
    interrupted = threading.Event()

    def on_sigint(*_: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        runner.stop()

    said: list[bool] = []

    def on_tick(r: LocalRunner) -> None:
        if not said:
            said.append(True)
            for line in start_lines(r):
                console.print(line, markup=False, highlight=False, soft_wrap=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = runner.run(on_tick=on_tick)
    finally:
        signal.signal(signal.SIGINT, previous)
    _forget_dest_keys(runner, options)
    print_summary(console, summary, interrupted=interrupted.is_set())
    if interrupted.is_set():
        return 130
    return 0 if summary.ok else 1


def _real_dest_keys(options: LocalOptions) -> bool:
    return bool(options.dest.access_key_id and options.dest.access_key_id != DUMMY_KEY)


def control_key(options: LocalOptions) -> str:
    """The access key id (and secret) of every request to the control plane. An embedded control plane that will
    hold real destination keys in its secret store answers only a random one (`MotoServer(access_key_id=...)`), so
    that no other user of the machine reads them at 127.0.0.1; otherwise moto's placeholder."""
    if options.endpoint_url or not _real_dest_keys(options):
        return DUMMY_KEY
    return "S3SYNCLOCAL" + secrets.token_hex(16).upper()


def dest_keys(options: LocalOptions, control: str) -> tuple[str, str]:
    """The keys the workers sign the destination's requests with (the secret's value): a destination on its own
    server, its keys; a destination bucket on the control plane, the control plane's (keys given for it are not
    kept anywhere)."""
    dest = options.dest
    if dest.endpoint_url and dest.access_key_id:
        return dest.access_key_id, dest.secret_access_key or ""
    return control, control


CONTROL_KEY_ENV = "S3SYNC_LOCAL_CONTROL_KEY"  # read by `s3sync status` and the other commands for a local target
CONTROL_KEY_FILE = "control-key"  # in the state directory, mode 0600, while the run lasts


def start_lines(runner: LocalRunner) -> list[str]:
    """What a person needs once the system is up: where to upload, where the copies go, where the control plane
    is and how to watch it, and where the destination keys are kept."""
    o = runner.o
    src = o.source.endpoint_url or runner.endpoint_url
    dst = o.dest.endpoint_url or runner.endpoint_url
    where = "" if o.name == "s3sync" else f" --name-prefix {o.name}"
    key_file = runner.state_dir / CONTROL_KEY_FILE
    watch = f"{CONTROL_KEY_ENV}=$(cat {key_file}) " if runner.control_key != DUMMY_KEY else ""
    lines = [
        f"s3sync local is running (control plane {runner.endpoint_url}, state {runner.state_dir})",
        f"  upload to:  s3://{o.source.name}/ at {src}",
        f"  copies to:  s3://{o.dest.name}/{o.dest_prefix} at {dst}",
        f"  watch:      {watch}s3sync status --endpoint-url {runner.endpoint_url}{where}",
        "  stop:       Ctrl-C (a summary follows)" + ("; it also stops once idle" if o.until_idle else ""),
    ]
    if watch:
        lines.append(f"  note:       the destination keys are in the control plane's secret store "
                     f"({o.name}-dest-credentials) while the run lasts; the control plane answers only requests "
                     f"made with the key in {key_file}")
    elif _real_dest_keys(o):
        lines.append(f"  note:       the destination keys are in the control plane's secret store "
                     f"({o.name}-dest-credentials), which anyone who can reach {runner.endpoint_url} can read until "
                     f"the run ends; use keys that may write only s3://{o.dest.name}/{o.dest_prefix}")
    return lines


def _forget_dest_keys(runner: LocalRunner, options: LocalOptions) -> None:
    """A control plane that outlives the run (--endpoint-url) keeps no real destination key: the secret is
    deleted (without a recovery window) once the run is over. The embedded one ends with the run."""
    if not (options.endpoint_url and _real_dest_keys(options) and runner.r.secret_arn):
        return
    try:
        runner.client("secretsmanager").delete_secret(SecretId=runner.r.secret_arn, ForceDeleteWithoutRecovery=True)
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not delete the destination keys from the control plane",
                    extra={"secret": runner.r.secret_arn, "reason": str(exc)})


def print_summary(console: Any, summary: Summary, *, interrupted: bool = False) -> None:
    """The transfers table, refused calls, and one line of totals (stdout, as the demo's)."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="transfers")
    for col in ("source key", "size", "parts", "status", "detail"):
        table.add_column(col, overflow="fold")
    for job in sorted(summary.jobs, key=lambda j: j.source_key):
        table.add_row(job.source_key, f"{job.size:,}", f"{job.done}/{job.total}", job.status,
                      job.error or job.dest_etag or "")
    console.print(table)
    for denial in summary.denied:
        console.print(denial.line(), style="bold red", markup=False)
    done = sum(j.status == Status.DONE for j in summary.jobs)
    head = f"interrupted: {done}/{len(summary.jobs)} done; " if interrupted else ""
    console.print(f"{head}{done} done, "
                  f"{sum(j.status == Status.FAILED for j in summary.jobs)} failed, "
                  f"{sum(j.status not in Status.FINAL for j in summary.jobs)} unfinished; "
                  f"dead-letter queue {summary.dlq_messages}; {summary.elapsed:.1f} s", highlight=False)
