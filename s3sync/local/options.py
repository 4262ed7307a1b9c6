"""What a local run is given (LocalOptions, BucketSpec), what it creates (Resources) and returns (Summary), and how
its parts are configured: the templates and parameters the run resolves, the keys of the control plane and of the
destination."""

from __future__ import annotations

import importlib
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3sync.contract import (
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_MAX_RECEIVE_COUNT,
    HANDLERS,
    Status,
)
from s3sync.errors import UserError
from s3sync.local.iam import Denial
from s3sync.stacks import STACKS, StackConfig
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.endpoints import Endpoint, s3_client
from s3sync.transfer.ledger import Job
from s3sync.transfer.notify import each_notice

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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
CONTROL_KEY_ENV = "S3SYNC_LOCAL_CONTROL_KEY"  # read by `s3sync status` and the other commands for a local target
CONTROL_KEY_FILE = "control-key"  # in the state directory, mode 0600, while the run lasts


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


def bucket_client(spec: BucketSpec, control_endpoint_url: str, control_key: str = DUMMY_KEY) -> S3Client:
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


def real_dest_keys(options: LocalOptions) -> bool:
    return bool(options.dest.access_key_id and options.dest.access_key_id != DUMMY_KEY)


def control_key(options: LocalOptions) -> str:
    """The access key id (and secret) of every request to the control plane. An embedded control plane that will
    hold real destination keys in its secret store answers only a random one (`MotoServer(access_key_id=...)`), so
    that no other user of the machine reads them at 127.0.0.1; otherwise moto's placeholder."""
    if options.endpoint_url or not real_dest_keys(options):
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


def project_root() -> Path:
    """The directory from which `container` and `functions` import (the repository, or site-packages)."""
    file = importlib.import_module("container").__file__
    if file is None:  # a namespace package: not how s3sync is installed
        raise UserError("cannot find the `container` package's directory")
    return Path(file).resolve().parent.parent
