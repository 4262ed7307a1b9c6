"""Names shared by the templates (`s3sync.stacks`) and the runtime (`s3sync.transfer`, `functions/`, `container/`).

Pure constants and nothing else: both sides import this module, so a name changed here changes in the rendered
templates and in the code they run at once. Never import runtime or template code from here.
"""

from __future__ import annotations

from typing import Any, Final

# --- Lambda handler strings, exactly as the template declares them and as Lambda resolves them -------------------
# The deployment zip carries the `functions` package and `s3sync`; the local runner imports the same strings.
HANDLERS: Final[dict[str, str]] = {
    "splitter": "functions.splitter.handler",
    "scale_out": "functions.scale_out.handler",
    "scale_in": "functions.scale_in.handler",
    "completion": "functions.completion.handler",
}

# The ECS worker's command line inside its image (WORKDIR holds the `container` and `s3sync` packages).
WORKER_COMMAND: Final[tuple[str, ...]] = ("python", "-m", "container.worker")


class Env:
    """Environment variable names the runtime reads; the templates set them on functions and the task."""

    QUEUE_URL = "S3SYNC_QUEUE_URL"
    TRANSFERS_TABLE = "S3SYNC_TRANSFERS_TABLE"
    PARTS_TABLE = "S3SYNC_PARTS_TABLE"
    DEST_BUCKET = "S3SYNC_DEST_BUCKET"
    DEST_PREFIX = "S3SYNC_DEST_PREFIX"  # optional key prefix at the destination, "" by default
    DEST_REGION = "S3SYNC_DEST_REGION"
    DEST_ENDPOINT_URL = "S3SYNC_DEST_ENDPOINT_URL"  # optional; empty means the region's public endpoint
    # Server-side encryption of the copies: one of DEST_SSE_MODES ("" = the bucket's default), and for aws:kms an
    # optional key of the China account (empty: S3's aws/s3 key). Read by the splitter, which applies it to
    # CreateMultipartUpload and writes it into small objects' part messages (PutObject by the worker).
    DEST_SSE = "S3SYNC_DEST_SSE"
    DEST_SSE_KMS_KEY_ID = "S3SYNC_DEST_SSE_KMS_KEY_ID"
    # Lambda functions read the China credentials from the secret; ECS injects its two keys as the variables below.
    DEST_SECRET_ARN = "S3SYNC_DEST_SECRET_ARN"
    DEST_ACCESS_KEY_ID = "S3SYNC_DEST_ACCESS_KEY_ID"
    DEST_SECRET_ACCESS_KEY = "S3SYNC_DEST_SECRET_ACCESS_KEY"
    PART_SIZE_MIB = "S3SYNC_PART_SIZE_MIB"  # target part size; the plan grows it for very large objects
    WORKER_THREADS = "S3SYNC_WORKER_THREADS"  # copy threads per worker task
    CLUSTER = "S3SYNC_CLUSTER"
    SERVICE = "S3SYNC_SERVICE"
    MAX_TASKS = "S3SYNC_MAX_TASKS"
    MIN_TASKS = "S3SYNC_MIN_TASKS"
    COMPLETION_TOPIC_ARN = "S3SYNC_COMPLETION_TOPIC_ARN"
    LOG_LEVEL = "S3SYNC_LOG_LEVEL"
    STUCK_AFTER_SECONDS = "S3SYNC_STUCK_AFTER_SECONDS"  # the sweeper re-drives jobs idle this long
    # Objects copied whole (under the multipart threshold) up to this many bytes are copied by the splitter itself,
    # at once, instead of through a part message, a worker and completion; 0: every object goes to the workers.
    INLINE_MAX_BYTES = "S3SYNC_INLINE_MAX_BYTES"
    # The splitter function acts only on events for this bucket (the stack's SourceBucketName); unset: none.
    SOURCE_BUCKET = "S3SYNC_SOURCE_BUCKET"
    # "true": the splitter deletes a copy when its source object is deleted (PropagateDeletes); else it refuses
    # deletion events, whoever sends them.
    PROPAGATE_DELETES = "S3SYNC_PROPAGATE_DELETES"
    # The SSM parameter where the scheduled finder keeps where its last run stopped (FinderCursor in lambda.yaml,
    # which exists with a FinderSchedule); unset, or no such parameter: every run starts at the first key.
    FINDER_CURSOR = "S3SYNC_FINDER_CURSOR"
    # Local only, set by `s3sync local` on its functions and workers and by the ops commands against it, never by the
    # templates: "1" lets the destination endpoint be plain http:// (the local servers); elsewhere only https://.
    LOCAL_PLAIN_HTTP = "S3SYNC_LOCAL_PLAIN_HTTP"
    # Local only (never set by the templates): the source bucket on another S3-compatible server.
    SOURCE_ENDPOINT_URL = "S3SYNC_SOURCE_ENDPOINT_URL"
    SOURCE_ACCESS_KEY_ID = "S3SYNC_SOURCE_ACCESS_KEY_ID"
    SOURCE_SECRET_ACCESS_KEY = "S3SYNC_SOURCE_SECRET_ACCESS_KEY"


# Keys inside the Secrets Manager secret's JSON string (SecretString).
SECRET_ACCESS_KEY_ID_FIELD: Final = "accessKeyId"
SECRET_SECRET_ACCESS_KEY_FIELD: Final = "secretAccessKey"


class Status:
    """Lifecycle of one object's transfer (the `status` attribute of the transfers table)."""

    PLANNED = "PLANNED"  # job written, parts being enqueued
    COPYING = "COPYING"  # every part enqueued; workers count `remaining` down to 0
    COMPLETING = "COMPLETING"  # the completion function elected itself for this job
    DONE = "DONE"
    FAILED = "FAILED"

    ALL: Final = ("PLANNED", "COPYING", "COMPLETING", "DONE", "FAILED")
    FINAL: Final = ("DONE", "FAILED")


# --- DynamoDB tables ------------------------------------------------------------------------------------------------
# Transfers table (T): one item per object, hash key `job_id` (S); stream NEW_AND_OLD_IMAGES feeds `completion`.
TRANSFERS_HASH_KEY: Final = "job_id"
# Parts table (C): one item per copied part, hash key `job_id` (S), range key `part` (N).
PARTS_HASH_KEY: Final = "job_id"
PARTS_RANGE_KEY: Final = "part"
TRANSFERS_STREAM_VIEW: Final = "NEW_AND_OLD_IMAGES"
# Sparse global secondary index of the transfers table: the jobs that need attention. Only a job that is unfinished
# (PLANNED, COPYING, COMPLETING: the engine's work) or FAILED (the operator's) carries ATTENTION_ATTR, whose value is
# "unfinished#<shard>" or "failed#<shard>" (shard: crc32 of the job id modulo ATTENTION_SHARDS, so the index's
# writes spread over several partition key values); a DONE job has none and is not in the index. The sweeper and
# `s3sync status` query the index instead of scanning the table, so what they read does not grow with the DONE jobs.
# Range key: the job's `created_at` (written once), so the sweeper skips jobs too young to be stale. KEYS_ONLY: a
# write that leaves these attributes alone (every part counted) costs the index nothing. Lowering ATTENTION_SHARDS
# hides the jobs of the shards dropped: never lower it without writing the attribute again.
ATTENTION_INDEX: Final = "Attention"
ATTENTION_ATTR: Final = "attention"
ATTENTION_RANGE: Final = "created_at"
ATTENTION_SHARDS: Final = 16

# Stream filters of the completion event source mapping (entries are ORed). Filters compare with constants only,
# so the ledger counts `remaining` down in the same atomic write that records a part.
#  1. every part recorded and all parts enqueued: complete the upload;
#  2. a job that just turned FAILED: abort its upload and notify.
COMPLETION_FILTERS: Final[tuple[dict[str, Any], ...]] = (
    {"dynamodb": {"NewImage": {"remaining": {"N": ["0"]}, "status": {"S": [Status.COPYING]}}}},
    {
        "dynamodb": {
            "NewImage": {"status": {"S": [Status.FAILED]}},
            "OldImage": {"status": {"S": [{"anything-but": [Status.FAILED]}]}},
        }
    },
)

# --- Destination encryption (Env.DEST_SSE / Env.DEST_SSE_KMS_KEY_ID; DestSse / DestSseKmsKeyId in lambda.yaml) -----
SSE_S3: Final = "AES256"
SSE_KMS: Final = "aws:kms"
DEST_SSE_MODES: Final = ("", SSE_S3, SSE_KMS)  # "": no header, the bucket's default encryption applies
# What S3 takes as x-amz-server-side-encryption-aws-kms-key-id: a key id, key ARN, alias ARN or alias name. Not
# anchored: the runtime matches it whole, the template's AllowedPattern wraps it as ^(...)?$ (empty allowed).
KMS_KEY_ID_PATTERN: Final = (r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_+=.@-]+"
                             r"|alias/[A-Za-z0-9/_-]+|[A-Za-z0-9-]+")

#: The stacks' default names (the original's): `render`, `deploy`, the operations commands and the local system.
DEFAULT_ECS_STACK: Final = "ecsStack"
DEFAULT_LAMBDA_STACK: Final = "lamStackS"

#: An S3 bucket name (general purpose, as the bucket-name parameters' AllowedPattern says; ".." is refused apart).
BUCKET_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

# --- Defaults that are deploy-time parameters in the templates and settings in `s3sync local` ---------------------
DEFAULT_MAX_TASKS: Final = 10
DEFAULT_MIN_TASKS: Final = 1
# Chosen on the emulated cross-border link (bench B4, docs/benchmarks.md "Across the border"), not on loopback: a
# China path gives each TCP flow a few MB/s (1-4), so filling it takes 50-100 parts in flight, and a small part loses
# less to a stall. At full size (1 GiB + 8 x 64 MiB, 10 workers, medians of 3, same run, 2026-12-01) 32 threads x
# 5 MiB reached 0.85 of cn-good's aggregate and 0.80 of cn-evening's, 16 x 8 MiB 0.82 and 0.66.
# Costs of the smaller part: memory 32 x 5 MiB x 1.25 + 256 = 456 MiB of the 2048 default TaskMemory. Objects over
# 10,000 x 5 MiB (48.8 GiB) get larger parts from the plan ("Maximum number of parts per upload: 10,000. Part size:
# 5 MiB to 5 GiB", https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html), and past about 430 GiB those
# no longer fit 32 at a time in 2048 MiB (docs/deploy.md). UploadPart requests per TiB 209,716 instead of 131,072,
# about $1.05 instead of $0.66 at $0.005 per 1,000 PUTs (us-east-1; cn-north-1 prices differ), beside 1 TiB of
# transfer.
DEFAULT_PART_SIZE_MIB: Final = 5
DEFAULT_WORKER_THREADS: Final = 32
DEFAULT_VISIBILITY_TIMEOUT: Final = 300  # seconds; workers extend it while a long part copies
DEFAULT_MAX_RECEIVE_COUNT: Final = 5  # receives before a message goes to the dead-letter queue
DEFAULT_SCALE_OUT_THRESHOLD: Final = 100  # visible messages that fire alarm A
DEFAULT_STREAM_BATCH_SIZE: Final = 10  # stream records per completion invocation
DEFAULT_STREAM_PARALLELIZATION: Final = 10  # concurrent completion batches per stream shard (one job's in order)
DEFAULT_STUCK_AFTER_SECONDS: Final = 900  # a job without progress this long is re-driven by the sweeper
DEFAULT_INLINE_MAX_BYTES: Final = 5 * 1024 * 1024  # every object copied whole is copied by the splitter

# --- Operations (issue #7): metrics, the scheduled finder, delete propagation ---------------------------------------
# The worker writes CloudWatch embedded-metric-format lines in its JSON logs (s3sync.transfer.metrics); the dashboard
# in lambda.yaml graphs them by these names, with the part queue's name as the one dimension.
METRICS_NAMESPACE: Final = "s3sync"
METRICS_DIMENSION: Final = "Queue"


class Metric:
    """Names of the metrics s3sync emits (namespace METRICS_NAMESPACE)."""

    BYTES_COPIED = "BytesCopied"  # Bytes: bytes of parts counted in the ledger
    PARTS_COPIED = "PartsCopied"  # Count: parts counted in the ledger
    JOBS_FAILED = "JobsFailed"  # Count: jobs a worker marked FAILED
    OBJECTS_FOUND = "ObjectsFound"  # Count: objects the finder/backfill handed to the splitter
    OBJECTS_DELETED = "ObjectsDeleted"  # Count: destination objects deleted by delete propagation
    # Count: the worker service's tasks as scale_out/scale_in see them (DescribeServices) on every invocation,
    # alarms and the sweep schedule alike: the dashboard's "running vs desired" without Container Insights.
    DESIRED_TASKS = "DesiredTaskCount"
    RUNNING_TASKS = "RunningTaskCount"


# Input of the scheduled finder's EventBridge rule; the splitter function routes an event equal to it to the finder.
FIND_EVENT: Final[dict[str, str]] = {"s3sync": "find"}
