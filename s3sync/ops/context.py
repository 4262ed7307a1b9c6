"""Where the system's resources are, and clients for them.

Three ways to name them (`resolve`):
- `--table T` (and `--parts-table`, `--queue-url`, `--dlq-url`): explicit names;
- `--stack NAME`, or nothing against AWS: the ECS stack's outputs (TransfersTableName, PartsTableName,
  TransferQueueUrl, TransferDeadLetterQueueUrl, DestBucket, DestRegion, DestPrefix, DestEndpointUrl,
  DestCredentialsArn); the Lambda stack's SourceBucketName, PartSizeMiB, DestSse and DestSseKmsKeyId when it
  exists (a retried or back-filled object is written with the encryption the splitter uses);
- `--endpoint-url URL` without a stack: `s3sync local` on that control plane, names from its prefix
  (`<prefix>-transfers`, `<prefix>-parts`, `<prefix>-parts-dlq`, `<prefix>-dest-credentials`; prefix "s3sync"),
  buckets `s3sync-source` and `s3sync-dest` on that endpoint unless named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from s3sync.aws import aws_errors
from s3sync.contract import (
    DEFAULT_ECS_STACK,
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_LAMBDA_STACK,
    DEFAULT_PART_SIZE_MIB,
    DEFAULT_STUCK_AFTER_SECONDS,
    Env,
)
from s3sync.errors import UserError
from s3sync.stacks.common import OPTIONAL_MARK, Exports

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_sqs import SQSClient

LOCAL_PREFIX = "s3sync"
LOCAL_PART_SIZE_MIB = 8  # `s3sync local`'s default
LOCAL_DEST_REGION = "cn-north-1"
DUMMY_KEY = "testing"  # what moto accepts; never a real key


def local_control_key() -> str:
    """The key id for a local control plane: an embedded one holding real destination keys answers only its run's
    key, which `s3sync local` prints how to pass (S3SYNC_LOCAL_CONTROL_KEY; s3sync.local.runner.control_key)."""
    return os.environ.get("S3SYNC_LOCAL_CONTROL_KEY", "").strip() or DUMMY_KEY


@dataclass(frozen=True)
class Target:
    """The resources one command works on; `local` when they are an `s3sync local` control plane."""

    endpoint_url: str | None
    region: str
    transfers_table: str
    parts_table: str = ""
    queue_url: str = ""
    dlq_url: str = ""
    source_bucket: str = ""
    source_endpoint_url: str | None = None
    source_access_key_id: str | None = field(default=None, repr=False)
    source_secret_access_key: str | None = field(default=None, repr=False)
    dest_bucket: str = ""
    dest_prefix: str = ""
    dest_region: str = ""
    dest_endpoint_url: str = ""
    dest_secret_arn: str = ""
    dest_sse: str = ""  # server-side encryption of the copies (contract.DEST_SSE_MODES); "" = the bucket's default
    dest_sse_kms_key_id: str = ""
    part_size_mib: int = DEFAULT_PART_SIZE_MIB
    stuck_after: int = DEFAULT_STUCK_AFTER_SECONDS
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # small objects the splitter copies itself (0: none)
    local: bool = False
    where: str = ""  # for messages: "stack ecsStack in us-east-1", "s3sync local at http://..."
    profile: str | None = None  # AWS profile of every client (credentials and region)

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {}
        if self.local:
            key = local_control_key()
            kwargs = {"aws_access_key_id": key, "aws_secret_access_key": key}
        session = boto3.session.Session(profile_name=self.profile) if self.profile else boto3
        return session.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                            config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                                          read_timeout=60, user_agent_extra="s3sync-ops"), **kwargs)

    def need(self, *names: str, doing: str) -> Target:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            opts = ", ".join("--" + n.replace("_", "-") for n in missing)
            raise UserError(f"{doing} needs {opts} (or --stack with a deployed ECS stack)")
        return self

    def env(self) -> dict[str, str]:
        """The environment the functions get in the stacks, for `s3sync.transfer.runtime.Runtime`."""
        env = {
            "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
            Env.QUEUE_URL: self.queue_url, Env.TRANSFERS_TABLE: self.transfers_table, Env.PARTS_TABLE: self.parts_table,
            Env.DEST_BUCKET: self.dest_bucket, Env.DEST_PREFIX: self.dest_prefix, Env.DEST_REGION: self.dest_region,
            Env.DEST_ENDPOINT_URL: self.dest_endpoint_url, Env.DEST_SECRET_ARN: self.dest_secret_arn,
            Env.DEST_SSE: self.dest_sse, Env.DEST_SSE_KMS_KEY_ID: self.dest_sse_kms_key_id,
            Env.PART_SIZE_MIB: str(self.part_size_mib), Env.STUCK_AFTER_SECONDS: str(self.stuck_after),
            Env.INLINE_MAX_BYTES: str(self.inline_max_bytes),
            Env.SOURCE_ENDPOINT_URL: self.source_endpoint_url or "",
            Env.SOURCE_ACCESS_KEY_ID: self.source_access_key_id or "",
            Env.SOURCE_SECRET_ACCESS_KEY: self.source_secret_access_key or "",
        }
        if self.source_bucket:
            env[Env.SOURCE_BUCKET] = self.source_bucket
        # `s3sync local`'s servers speak http://: a control plane reached over plain http:// is such a local one
        # (AWS's APIs are https:// only); against AWS only an https:// destination is accepted
        if self.local or (self.endpoint_url or "").lower().startswith("http://"):
            env[Env.LOCAL_PLAIN_HTTP] = "1"
        # Destination keys given to this command win over the secret.
        key_id, secret = os.environ.get(Env.DEST_ACCESS_KEY_ID), os.environ.get(Env.DEST_SECRET_ACCESS_KEY)
        if key_id and secret:
            env.update({Env.DEST_ACCESS_KEY_ID: key_id, Env.DEST_SECRET_ACCESS_KEY: secret})
        return env

    def runtime(self) -> Any:
        """The engine's Runtime, with every control-plane client pointed at this target."""
        from s3sync.transfer.runtime import Runtime

        target = self

        class OpsRuntime(Runtime):
            def client(self, service: str) -> Any:
                return target.client(service)

        return OpsRuntime(self.env())


def _unmark(value: str) -> str:
    return value[len(OPTIONAL_MARK):] if value.startswith(OPTIONAL_MARK) else value


def _region(region: str | None, endpoint_url: str | None, profile: str | None = None) -> tuple[str, str]:
    """(region, where it came from): as every command resolves it (s3sync.aws.resolve_region)."""
    from s3sync.aws import NO_REGION, resolve_region  # noqa: PLC0415

    chosen, source = resolve_region(region, profile)
    if not chosen:
        if endpoint_url:
            return "us-east-1", "default for --endpoint-url"
        raise UserError(NO_REGION)
    return chosen, source


def _stack(cf: CloudFormationClient, name: str, where: str, required: bool = True) -> Mapping[str, Any] | None:
    from botocore.exceptions import ClientError

    with aws_errors(f"reading stack {name} ({where})"):
        try:
            return cf.describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as exc:
            if "does not exist" not in str(exc):
                raise
            if not required:
                return None
            raise UserError(f"stack {name} does not exist ({where}): deploy it, or name the resources with "
                            "--stack / --table, or give --endpoint-url for s3sync local") from None


def resolve(*, endpoint_url: str | None = None, region: str | None = None, stack: str | None = None,
            lambda_stack: str | None = None, table: str | None = None, parts_table: str | None = None,
            queue_url: str | None = None, dlq_url: str | None = None, name_prefix: str = LOCAL_PREFIX,
            source_bucket: str | None = None, source_endpoint_url: str | None = None,
            dest_bucket: str | None = None, dest_endpoint_url: str | None = None, dest_prefix: str | None = None,
            part_size_mib: int | None = None, stuck_after: int | None = None, profile: str | None = None) -> Target:
    """Find the resources (see the module docstring). Raises UserError with one line on any problem."""
    endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
    region_name, source = _region(region, endpoint_url, profile)
    in_region = f"region {region_name} from {source}"
    if table:
        target = Target(endpoint_url, region_name, table, parts_table or "", queue_url or "", dlq_url or "",
                        where=f"table {table}" + (f" at {endpoint_url}" if endpoint_url else f" in {in_region}"),
                        profile=profile)
    elif stack or not endpoint_url:
        target = _from_stacks(endpoint_url, region_name, stack or DEFAULT_ECS_STACK,
                              lambda_stack or DEFAULT_LAMBDA_STACK, profile, in_region)
    else:
        target = _local(endpoint_url, region_name, name_prefix, profile)
    overrides: dict[str, Any] = {k: v for k, v in {
        "parts_table": parts_table, "queue_url": queue_url, "dlq_url": dlq_url, "source_bucket": source_bucket,
        "source_endpoint_url": source_endpoint_url, "dest_bucket": dest_bucket, "dest_prefix": dest_prefix,
        "dest_endpoint_url": dest_endpoint_url, "part_size_mib": part_size_mib, "stuck_after": stuck_after,
    }.items() if v is not None}
    if target.local or overrides.get("source_endpoint_url"):
        overrides["source_access_key_id"] = os.environ.get(Env.SOURCE_ACCESS_KEY_ID) or (
            local_control_key() if target.local and not overrides.get("source_endpoint_url") else None)
        overrides["source_secret_access_key"] = os.environ.get(Env.SOURCE_SECRET_ACCESS_KEY) or (
            local_control_key() if target.local and not overrides.get("source_endpoint_url") else None)
    return replace(target, **overrides)


def _from_stacks(endpoint_url: str | None, region: str, ecs_name: str, lambda_name: str, profile: str | None = None,
                 in_region: str = "") -> Target:  # fmt: skip
    from botocore.exceptions import BotoCoreError

    where = f"{endpoint_url}" if endpoint_url else (in_region or f"region {region}")
    try:
        cf = Target(endpoint_url, region, "", profile=profile).client("cloudformation")
        ecs = _stack(cf, ecs_name, where)
        lam = _stack(cf, lambda_name, where, required=False)
    except BotoCoreError as exc:
        raise UserError(f"reading stack {ecs_name} ({where}): {str(exc).splitlines()[0]}") from None
    out = {o["OutputKey"]: o["OutputValue"] for o in (ecs or {}).get("Outputs", [])}
    if "TransfersTableName" not in out:
        raise UserError(f"stack {ecs_name} ({where}) has no TransfersTableName output: is it an s3sync ECS stack?")
    lam_out = {o["OutputKey"]: o["OutputValue"] for o in (lam or {}).get("Outputs", [])}
    lam_params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in (lam or {}).get("Parameters", [])}
    part_size = lam_params.get("PartSizeMiB", "")
    return Target(
        endpoint_url, region, out["TransfersTableName"], out.get("PartsTableName", ""),
        out.get("TransferQueueUrl", ""), out.get("TransferDeadLetterQueueUrl", ""),
        source_bucket=lam_out.get("SourceBucketName", ""),
        dest_bucket=out.get(Exports.DEST_BUCKET, ""), dest_prefix=_unmark(out.get(Exports.DEST_PREFIX, "")),
        dest_region=out.get(Exports.DEST_REGION, ""), dest_endpoint_url=_unmark(out.get(Exports.DEST_ENDPOINT_URL, "")),
        dest_secret_arn=out.get(Exports.SECRET_ARN, ""),
        dest_sse=lam_params.get("DestSse", ""), dest_sse_kms_key_id=lam_params.get("DestSseKmsKeyId", ""),
        part_size_mib=int(part_size) if part_size.isdigit() else DEFAULT_PART_SIZE_MIB,
        where=f"stack {ecs_name} ({where})", profile=profile,
    )


def _local(endpoint_url: str, region: str, prefix: str, profile: str | None = None) -> Target:
    from botocore.exceptions import BotoCoreError, ClientError

    base = Target(endpoint_url, region, f"{prefix}-transfers", local=True, where=f"s3sync local at {endpoint_url}",
                  profile=profile)
    try:
        sqs, sm = base.client("sqs"), base.client("secretsmanager")
        queue = _queue_url(sqs, f"{prefix}-parts")
        dlq = _queue_url(sqs, f"{prefix}-parts-dlq")
        try:
            secret_arn = sm.describe_secret(SecretId=f"{prefix}-dest-credentials")["ARN"]
        except ClientError:
            secret_arn = ""
    except BotoCoreError as exc:
        raise UserError(f"cannot reach the control plane at {endpoint_url}: {str(exc).splitlines()[0]}") from None
    # `s3sync local`'s default buckets (--source-bucket / --dest-bucket there and here)
    return replace(base, parts_table=f"{prefix}-parts", queue_url=queue, dlq_url=dlq, source_bucket="s3sync-source",
                   source_endpoint_url=endpoint_url, dest_bucket="s3sync-dest", dest_region=LOCAL_DEST_REGION,
                   dest_endpoint_url=endpoint_url, dest_secret_arn=secret_arn, part_size_mib=LOCAL_PART_SIZE_MIB)


def _queue_url(sqs: SQSClient, name: str) -> str:
    from botocore.exceptions import ClientError

    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError:
        return ""
