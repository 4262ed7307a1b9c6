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

Where each part lives: this module sets the run up (the control plane, the resources, the stacks resolved against
them, the functions' runtimes) and runs it; s3sync.local.event_sources holds the loops that stand in for AWS's event
sources, s3sync.local.service the ECS service's workers, s3sync.local.options what a run is given and returns, and
s3sync.local.run the `s3sync local` command around it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s3sync.aws import Clients
from s3sync.contract import (
    HANDLERS,
    PARTS_HASH_KEY,
    PARTS_RANGE_KEY,
    SECRET_ACCESS_KEY_ID_FIELD,
    SECRET_SECRET_ACCESS_KEY_FIELD,
    TRANSFERS_STREAM_VIEW,
    Env,
    Status,
)
from s3sync.errors import UserError
from s3sync.local import alarms
from s3sync.local.cfn import LocalStacks, lambda_runtime_environment
from s3sync.local.event_sources import EventSources
from s3sync.local.iam import ROLE_POLICY_ENV, CallLedger, Denial, Enforcer, Where
from s3sync.local.options import (
    ACCOUNT,
    CONTROL_KEY_FILE,
    DUMMY_KEY,
    EVENTS_VISIBILITY,
    REGION,
    BucketSpec,
    LambdaContext,
    LocalOptions,
    Resources,
    Summary,
    bucket_client,
    control_key,
    dest_keys,
    load_handler,
    local_parameters,
    local_templates,
    project_root,
)
from s3sync.local.servers import MotoServer
from s3sync.local.service import EcsService
from s3sync.local.workers import (
    Worker,
    check_image,
    task_launch,
)
from s3sync.stacks.common import Ids
from s3sync.transfer import logs
from s3sync.transfer.ledger import Job, Ledger, transfers_table_keys
from s3sync.transfer.runtime import Runtime
from s3sync.transfer.splitter import job_id_for

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDataQueryTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import EventType

log = logging.getLogger("s3sync.local")


class LocalRunner(EventSources, EcsService):
    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.resources = Resources()
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
                if self.options.iam_enforce and self.denials():
                    log.error("a role refused a call; stopping", extra={"denied": self.denials()[0].line()})
                    break
                self._reconcile_workers()
                if on_tick:
                    on_tick(self)
                if self.options.timeout and time.monotonic() - start > self.options.timeout:
                    log.warning("timeout reached", extra={"seconds": self.options.timeout})
                    break
                if self.options.until_idle:
                    if self._idle():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= self.options.idle_grace:
                            break
                    else:
                        idle_since = None
            self._stop.set()
            for t in self._threads:
                t.join(timeout=25)
            self._stop_workers()  # their refusals and calls are on file once they exit
            self.iam.dump(self.state_dir / "iam" / "calls.json")
            return Summary(jobs=self.jobs(), dlq_messages=self._queue_depth(self.resources.dlq_url)[0],
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

    @property
    def client(self) -> Clients:
        """The control plane's client for a service: `self.client("sqs")`, typed per service (a property, not an
        attribute, so that a subclass may override `_client` or `client` itself)."""
        return self._client

    def _client(self, service: str) -> Any:
        """One control-plane client per service, shared by the runner's threads (boto3 clients are thread-safe;
        making one costs tens of milliseconds of CPU, too much for loops that run several times a second)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(
                    service, endpoint_url=self.endpoint_url, region_name=REGION,
                    aws_access_key_id=self.control_key, aws_secret_access_key=self.control_key,
                    config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32))
            return self._clients[service]

    def s3(self, spec: BucketSpec) -> S3Client:
        return bucket_client(spec, self.endpoint_url, self.control_key)

    # --- setup ----------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self.options.worker_image:
            check_image(self.options.worker_image)  # before anything starts: a run never pulls
            log.warning("container workers run the image as built: their calls are not checked against the task "
                        "role (s3sync.local.iam is not in the image)")
        if self.options.endpoint_url:
            self.endpoint_url = self.options.endpoint_url.rstrip("/")
        else:
            self.endpoint_url = self._stack.enter_context(MotoServer(
                patched=self.options.moto_patches,
                access_key_id=None if self.control_key == DUMMY_KEY else self.control_key,
            )).endpoint_url
        if self.options.state_dir:
            self.state_dir = Path(self.options.state_dir)
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
        self.source_s3 = self.s3(self.options.source)
        self.dest_s3 = self.s3(self.options.dest)
        self._create_resources()
        self.ledger = Ledger(self.client("dynamodb"), self.resources.transfers_table, self.resources.parts_table)
        self._load_stacks()
        self._s3_may_notify()
        self._export_environment()
        self._workers_role()
        self._cold_start()
        log.info("control plane ready", extra={"endpoint_url": self.endpoint_url, "prefix": self.options.name})

    def _create_resources(self) -> None:
        n, r = self.options.name, self.resources
        sqs, ddb, sns = self.client("sqs"), self.client("dynamodb"), self.client("sns")
        r.dlq_url = sqs.create_queue(QueueName=f"{n}-parts-dlq")["QueueUrl"]
        dlq_arn = r.dlq_arn = sqs.get_queue_attributes(QueueUrl=r.dlq_url,
                                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        r.queue_url = sqs.create_queue(QueueName=f"{n}-parts", Attributes={
            "VisibilityTimeout": str(self.options.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(self.options.max_receive_count)}),
        })["QueueUrl"]
        r.queue_arn = sqs.get_queue_attributes(QueueUrl=r.queue_url,
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if self.options.duplicate_messages > 1:
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
        key_id, secret_key = dest_keys(self.options, self.control_key)
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
        self._ensure_bucket(self.source_s3, self.options.source)
        self._ensure_bucket(self.dest_s3, self.options.dest)
        # the stacks' event queue (lambda.yaml's EventQueue): the splitter reads S3's notifications from it in batches
        r.events_url = sqs.create_queue(QueueName=f"{n}-s3-events",
                                        Attributes={"VisibilityTimeout": str(EVENTS_VISIBILITY)})["QueueUrl"]
        r.events_arn = sqs.get_queue_attributes(QueueUrl=r.events_url,
                                                AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if not self.options.source.endpoint_url:  # moto's S3 sends its notifications there; other servers are listed
            events: list[EventType] = ["s3:ObjectCreated:*"]
            if self.options.propagate_deletes:
                events.append("s3:ObjectRemoved:*")
            self.source_s3.put_bucket_notification_configuration(
                Bucket=self.options.source.name,
                NotificationConfiguration={"QueueConfigurations": [{"QueueArn": r.events_arn, "Events": events}]},
            )

    def _create_service(self, n: str) -> None:
        ecs = self.client("ecs")
        self.resources.cluster = ecs.create_cluster(clusterName=f"{n}-cluster")["cluster"]["clusterName"]
        ecs.register_task_definition(family=f"{n}-worker", containerDefinitions=[{
            "name": "worker", "image": "s3sync-worker:local", "essential": True, "memory": 1024,
            "command": list(("python", "-m", "container.worker")),
        }])
        services = ecs.describe_services(cluster=self.resources.cluster, services=[f"{n}-workers"]).get("services", [])
        if services and services[0].get("status") == "ACTIVE":
            ecs.update_service(cluster=self.resources.cluster, service=f"{n}-workers",
                               desiredCount=self.options.min_tasks)
        else:
            ecs.create_service(cluster=self.resources.cluster, serviceName=f"{n}-workers", taskDefinition=f"{n}-worker",
                               desiredCount=self.options.min_tasks, launchType="EC2")
        self.resources.service = f"{n}-workers"

    def _create_alarms(self, n: str) -> None:
        """Stored in moto for the record (it never evaluates them); `_alarm_loop` evaluates the same rules."""
        cw = self.client("cloudwatch")
        queue_name = self.resources.queue_url.rsplit("/", 1)[-1]
        dims: list[DimensionTypeDef] = [{"Name": "QueueName", "Value": queue_name}]

        def stat(metric_id: str, metric: str) -> MetricDataQueryTypeDef:
            return {"Id": metric_id, "ReturnData": False, "MetricStat": {
                "Metric": {"Namespace": "AWS/SQS", "MetricName": metric, "Dimensions": dims},
                "Period": 60, "Stat": "Maximum"}}

        self.alarm_a = alarms.Alarm(f"{n}-backlog-high", threshold=self.options.scale_out_threshold,
                                    comparison="GreaterThanOrEqualToThreshold", evaluation_periods=1)
        self.alarm_b = alarms.Alarm(f"{n}-queue-drained", threshold=0, comparison="LessThanOrEqualToThreshold",
                                    evaluation_periods=self.options.scale_in_periods)
        self.alarm_a_trigger = {"metric_name": "ApproximateNumberOfMessagesVisible", "namespace": "AWS/SQS",
                                "statistic": "Maximum", "dimensions": {"QueueName": queue_name}}
        self.alarm_b_metrics = [stat("visible", "ApproximateNumberOfMessagesVisible"),
                                stat("inflight", "ApproximateNumberOfMessagesNotVisible"),
                                {"Id": "total", "Expression": "visible + inflight", "ReturnData": True}]
        cw.put_metric_alarm(AlarmName=self.alarm_a.name, Namespace="AWS/SQS",
                            MetricName="ApproximateNumberOfMessagesVisible", Dimensions=dims, Statistic="Maximum",
                            Period=60, EvaluationPeriods=1, Threshold=float(self.options.scale_out_threshold),
                            ComparisonOperator="GreaterThanOrEqualToThreshold",
                            AlarmActions=[self.resources.scale_out_topic])
        cw.put_metric_alarm(AlarmName=self.alarm_b.name, EvaluationPeriods=self.options.scale_in_periods, Threshold=0.0,
                            ComparisonOperator="LessThanOrEqualToThreshold",
                            AlarmActions=[self.resources.scale_in_topic],
                            Metrics=self.alarm_b_metrics)

    @staticmethod
    def _ensure_bucket(s3: S3Client, spec: BucketSpec) -> None:
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
        o = self.options
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
        r, n = self.resources, self.options.name
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
            Ids.BUCKET: {"Ref": self.options.source.name, "Arn": f"arn:aws:s3:::{self.options.source.name}"},
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
        templates = self.options.templates or local_templates(self.options)
        # the splitter's event source mapping (lambda.yaml): how many events per invocation, gathered how long
        mapping = templates["lambda"].get("Resources", {}).get(Ids.EVENT_MAPPING, {}).get("Properties", {})
        self._event_batch = int(mapping.get("BatchSize", 10))
        self._event_window = float(mapping.get("MaximumBatchingWindowInSeconds", 0))
        self.stacks = LocalStacks(templates, local_parameters(self.options, self.endpoint_url), self.where,
                                  physical={"ecs": ecs, "lambda": lam})  # the default stack names
        # fault injection (duplicate_messages): the functions send to the intake queue, which stands in for the
        # part queue (the runner relays every message to it N times)
        self._aliases: dict[str, str] = {}
        if r.intake_url:
            intake_arn = self.client("sqs").get_queue_attributes(
                QueueUrl=r.intake_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self._aliases[intake_arn] = r.queue_arn

    def _enforcer(self, component: str, role: Any) -> Enforcer:
        return Enforcer(component, role, self.where, self.iam, enforce=self.options.iam_enforce, aliases=self._aliases)

    def _function_environment(self, name: str) -> dict[str, str]:
        """Exactly what the function has in AWS (its template's Environment.Variables and what the Lambda runtime
        sets), plus the local stand-ins for AWS's endpoints: the control plane's URL, and the source bucket's
        server and keys (contract.Env: local only, never set by the templates)."""
        fn = self.stacks.function(name)
        env = {**fn.environment,
               **lambda_runtime_environment(fn, REGION, (self.control_key,) * 3, str(project_root()))}
        o = self.options
        env.update({
            "AWS_ENDPOINT_URL": self.endpoint_url,
            Env.SOURCE_ENDPOINT_URL: o.source.endpoint_url or self.endpoint_url,
            Env.SOURCE_ACCESS_KEY_ID: o.source.access_key_id or self.control_key,
            Env.SOURCE_SECRET_ACCESS_KEY: o.source.secret_access_key or self.control_key,
            Env.LOCAL_PLAIN_HTTP: "1",  # the local servers speak http://; in AWS only https:// is accepted
        })
        if self.resources.intake_url and Env.QUEUE_URL in env:
            env[Env.QUEUE_URL] = self.resources.intake_url
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


    def _idle(self) -> bool:
        """Every object in the source bucket has a job, every job is DONE or FAILED, and no message is left."""
        jobs = {j.job_id: j for j in self.jobs()}
        if any(j.status not in Status.FINAL for j in jobs.values()):
            return False
        for obj in self._list_source():
            if job_id_for(self.options.source.name, obj["Key"], None, obj["ETag"]) not in jobs:
                return False
        for url in (self.resources.queue_url, self.resources.intake_url, self.resources.events_url):
            if url and sum(self._queue_depth(url)) > 0:
                return False
        return True


__all__ = ["BucketSpec", "LocalOptions", "LocalRunner", "Summary", "bucket_client", "load_handler", "local_parameters",
           "local_templates"]
