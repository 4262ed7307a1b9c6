"""Render-time settings of the two stacks, in one frozen dataclass.

Only choices a user makes at deploy time become CloudFormation Parameters (their *defaults* live here, so a library
user can pre-fill the console differently); everything else is fixed when the template is rendered. Change a field
with `dataclasses.replace(StackConfig(), max_tasks=20)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from awacs.aws import Statement

from s3sync import contract

#: Keys of `StackConfig.extra_statements`: one per IAM role the stacks create.
ROLE_KEYS: tuple[str, ...] = ("splitter", "scale_out", "scale_in", "completion", "task", "execution", "instance")

#: The China regions the destination may be in (the DestRegion parameter's AllowedValues).
DEST_REGIONS: tuple[str, ...] = ("cn-north-1", "cn-northwest-1")

LAUNCH_TYPES: tuple[str, ...] = ("EC2", "FARGATE")

#: An S3 bucket name, as the bucket-name parameters' AllowedPattern says.
BUCKET_PATTERN = contract.BUCKET_PATTERN
BUCKET_NAME = re.compile(BUCKET_PATTERN)

#: Values CloudWatch Logs accepts for RetentionInDays.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip


@dataclass(frozen=True)
class FunctionSettings:
    """Memory and timeout of one Lambda function."""

    memory_mib: int = 256
    timeout_s: int = 60


def _default_functions() -> Mapping[str, FunctionSettings]:
    # Splitter: HEAD + CreateMultipartUpload + up to 1,000 SendMessageBatch calls for a 10,000-part object.
    # Completion: CompleteMultipartUpload of a large object can take minutes at the destination.
    return MappingProxyType(
        {
            "splitter": FunctionSettings(memory_mib=256, timeout_s=300),
            "completion": FunctionSettings(memory_mib=256, timeout_s=900),
            "scale_out": FunctionSettings(memory_mib=128, timeout_s=30),
            "scale_in": FunctionSettings(memory_mib=128, timeout_s=30),
        }
    )


@dataclass(frozen=True)
class StackConfig:
    """Everything `build_ecs` / `build_lambda` need; every field has a documented default.

    Fields named like a Parameter (`max_tasks`, `launch_type`, ...) are that Parameter's *default*: the deployer can
    still change it in the console. The other fields are fixed in the rendered template.
    """

    # --- defaults of deploy-time Parameters -------------------------------------------------------------------------
    max_tasks: int = contract.DEFAULT_MAX_TASKS  # MaxTasks: scale_out sets the service to this many tasks
    min_tasks: int = contract.DEFAULT_MIN_TASKS  # MinTasks: the service starts with, and scale_in returns to, this
    max_instances: int = contract.DEFAULT_MAX_TASKS  # MaxInstances: EC2 only, upper bound of the Auto Scaling group
    part_size_mib: int = contract.DEFAULT_PART_SIZE_MIB  # PartSizeMiB
    worker_threads: int = contract.DEFAULT_WORKER_THREADS  # WorkerThreads
    visibility_timeout_s: int = contract.DEFAULT_VISIBILITY_TIMEOUT  # VisibilityTimeout
    max_receive_count: int = contract.DEFAULT_MAX_RECEIVE_COUNT  # MaxReceiveCount
    scale_out_threshold: int = contract.DEFAULT_SCALE_OUT_THRESHOLD  # ScaleOutThreshold
    launch_type: str = "EC2"  # LaunchType: EC2 as in the original design, or FARGATE
    instance_type: str = "c5.large"  # InstanceType (EC2 only): network-bound work, 10 Gbit/s burst
    task_cpu: int = 1024  # TaskCpu, CPU units
    task_memory_mib: int = 2048  # TaskMemory
    dest_region: str = "cn-north-1"  # DestRegion
    ecs_stack_name: str = contract.DEFAULT_ECS_STACK  # EcsStackName of lambda.yaml
    ecs_ami_parameter: str = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"  # AmiId
    # Where the code is (`s3sync package` fills these in); empty: the parameter has no default, the deployer enters it.
    code_bucket: str = ""  # CodeBucket of lambda.yaml: bucket of the functions' zip, in the stacks' region
    code_key: str = ""  # CodeKey of lambda.yaml: key of that zip (content-addressed: a new key per code version)
    image_uri: str = ""  # ImageUri of ecs.yaml: the worker image

    # --- fixed at render time -----------------------------------------------------------------------------------------
    log_retention_days: int = 30
    lambda_runtime: str = "python3.12"
    lambda_architecture: str = "x86_64"
    functions: Mapping[str, FunctionSettings] = field(default_factory=_default_functions)
    alarm_period_s: int = 60  # SQS publishes its metrics once a minute
    scale_in_periods: int = 5  # alarm B fires after this many periods with nothing visible and nothing in flight
    stuck_after_s: int = contract.DEFAULT_STUCK_AFTER_SECONDS  # the sweeper (run by scale_in) re-drives idle jobs
    # objects copied whole up to this size are copied by the splitter itself (S3SYNC_INLINE_MAX_BYTES; 0: none)
    inline_max_bytes: int = contract.DEFAULT_INLINE_MAX_BYTES
    stream_batch_size: int = contract.DEFAULT_STREAM_BATCH_SIZE
    # concurrent batches per stream shard (records of one job stay in order): completing an object means a
    # cross-border ListParts and CompleteMultipartUpload, so one batch at a time per shard would cap small objects
    # at a few per second
    stream_parallelization: int = contract.DEFAULT_STREAM_PARALLELIZATION
    # S3 notifications reach the splitter through an SQS queue (the event queue), in batches: one invocation and one
    # summary notice for up to event_batch_size objects, gathered for up to event_batching_window_s ("When you set
    # BatchSize to a value greater than 10, you must set MaximumBatchingWindowInSeconds to at least 1 second",
    # Lambda's SQS event source docs); an event failing event_max_receive_count times waits in its dead-letter queue
    event_batch_size: int = 20
    event_batching_window_s: int = 1
    event_max_receive_count: int = 5
    stream_max_retries: int = 5  # then the batch is bisected down to the failing record and skipped
    stream_max_record_age_s: int = 86400  # a stream keeps records for 24 h
    abort_incomplete_upload_days: int = 7  # lifecycle rule on the source bucket
    # 14 days, the SQS maximum: parts wait out a long worker outage, poison messages wait for a look.
    message_retention_s: int = 1209600
    worker_stop_timeout_s: int = 30  # SIGTERM -> SIGKILL; the worker releases its parts in between
    root_volume_gib: int = 30  # the ECS-optimized AL2023 AMI needs 30 GiB
    retain_source_bucket: bool = True  # keep the bucket (and its objects) when the stack is deleted
    container_insights: bool = False  # per-task CloudWatch metrics, at extra cost
    report_batch_item_failures: bool = True  # completion returns {"batchItemFailures": [...]}
    # Operations in lambda.yaml: the CloudWatch dashboard, and the parameters PropagateDeletes (EventBridge
    # "Object Deleted" -> splitter), FinderSchedule (scheduled finder in the splitter function) and SourceKmsKeyArn
    # (kms:Decrypt for the workers); each switch is off at deploy time by default. About 9 KB of template.
    operations: bool = True
    sweep_every_min: int = 5  # a schedule runs the sweeper (in scale_in) this often, also while alarm B stays put
    # Extra IAM statements per role (keys: ROLE_KEYS), appended after the built-in ones.
    extra_statements: Mapping[str, Sequence[Statement]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Freeze the mappings and refuse values CloudFormation would reject only at deploy time."""
        object.__setattr__(self, "functions", MappingProxyType(dict(self.functions)))
        object.__setattr__(
            self, "extra_statements", MappingProxyType({k: tuple(v) for k, v in self.extra_statements.items()})
        )
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid StackConfig: " + "; ".join(problems))

    def statements_for(self, role: str) -> tuple[Statement, ...]:
        """The extra statements a user added to `role` (one of ROLE_KEYS)."""
        return tuple(self.extra_statements.get(role, ()))


def _problems(cfg: StackConfig) -> Iterator[str]:
    if not 0 <= cfg.min_tasks <= cfg.max_tasks or cfg.max_tasks < 1:
        yield f"need 0 <= min_tasks <= max_tasks and max_tasks >= 1, got {cfg.min_tasks}/{cfg.max_tasks}"
    if cfg.max_instances < 1:
        yield "max_instances must be >= 1"
    if not 5 <= cfg.part_size_mib <= 5120:
        yield f"part_size_mib must be within 5..5120 (S3 part limits), got {cfg.part_size_mib}"
    if not 1 <= cfg.worker_threads <= 64:
        yield f"worker_threads must be within 1..64, got {cfg.worker_threads}"
    if not 0 <= cfg.visibility_timeout_s <= 43200:
        yield f"visibility_timeout_s must be within 0..43200, got {cfg.visibility_timeout_s}"
    if not 1 <= cfg.max_receive_count <= 1000:
        yield f"max_receive_count must be within 1..1000, got {cfg.max_receive_count}"
    if cfg.scale_out_threshold < 1:
        yield "scale_out_threshold must be >= 1"
    if cfg.launch_type not in LAUNCH_TYPES:
        yield f"launch_type must be one of {LAUNCH_TYPES}, got {cfg.launch_type!r}"
    # the defaults of TaskCpu, TaskMemory, InstanceType, WorkerThreads and PartSizeMiB must pass the stacks' Rules
    # and the deploy check (lazy import: sizes is a sibling module that needs nothing from here)
    from s3sync.stacks import sizes

    yield from sizes.problems(launch_type=cfg.launch_type, task_cpu=cfg.task_cpu, task_memory=cfg.task_memory_mib,
                              instance_type=cfg.instance_type, worker_threads=cfg.worker_threads,
                              part_size_mib=cfg.part_size_mib)
    if cfg.task_memory_mib not in sizes.TASK_MEMORY_VALUES:
        yield f"task_memory_mib must be one of {sizes.TASK_MEMORY_VALUES}, got {cfg.task_memory_mib}"
    if cfg.dest_region not in DEST_REGIONS:
        yield f"dest_region must be one of {DEST_REGIONS}, got {cfg.dest_region!r}"
    if cfg.log_retention_days not in LOG_RETENTION_DAYS:
        yield f"log_retention_days must be one of {LOG_RETENTION_DAYS}, got {cfg.log_retention_days}"
    if set(cfg.functions) != {"splitter", "completion", "scale_out", "scale_in"}:
        yield "functions needs exactly the keys splitter, completion, scale_out, scale_in"
    unknown = sorted(set(cfg.extra_statements) - set(ROLE_KEYS))
    if unknown:
        yield f"extra_statements has unknown roles {unknown}; known: {ROLE_KEYS}"
    if cfg.code_bucket and not BUCKET_NAME.fullmatch(cfg.code_bucket):
        yield f"code_bucket must be an S3 bucket name, got {cfg.code_bucket!r}"
    if len(cfg.code_key) > 1024:
        yield "code_key must be at most 1024 characters (the S3 key limit)"
    if any(ch.isspace() for ch in cfg.image_uri):
        yield f"image_uri must not contain white space, got {cfg.image_uri!r}"
    if not 1 <= cfg.stream_batch_size <= 10000:
        yield "stream_batch_size must be within 1..10000"
    if not 1 <= cfg.stream_parallelization <= 10:
        yield "stream_parallelization must be within 1..10 (Lambda's ParallelizationFactor)"
    if not 0 <= cfg.worker_stop_timeout_s <= 120:
        yield "worker_stop_timeout_s must be within 0..120 (the ECS maximum)"
    if cfg.scale_in_periods < 1 or cfg.alarm_period_s not in (10, 20, 30) and cfg.alarm_period_s % 60:
        yield "scale_in_periods must be >= 1 and alarm_period_s 10, 20, 30 or a multiple of 60"
