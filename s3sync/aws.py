"""What talks to AWS in general, for the CLI's commands (package, deploy, status, retry, backfill): the region every
command resolves, a client factory, boto errors as one-line UserErrors with secrets masked, and the S3 calls every
upload makes (the bucket's region, a put that names the expected bucket owner).

boto3 and botocore are imported inside the functions that call them: importing this module costs nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, overload

from s3sync.errors import UserError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient


class Clients(Protocol):
    """`service -> boto3 client` (what `client_factory` makes, the local runner's `client`; tests pass their own),
    typed for the services s3sync calls."""

    @overload
    def __call__(self, service: Literal["cloudformation"]) -> CloudFormationClient: ...
    @overload
    def __call__(self, service: Literal["cloudwatch"]) -> CloudWatchClient: ...
    @overload
    def __call__(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def __call__(self, service: Literal["ecs"]) -> ECSClient: ...
    @overload
    def __call__(self, service: Literal["lambda"]) -> LambdaClient: ...
    @overload
    def __call__(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def __call__(self, service: Literal["secretsmanager"]) -> SecretsManagerClient: ...
    @overload
    def __call__(self, service: Literal["sns"]) -> SNSClient: ...
    @overload
    def __call__(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def __call__(self, service: Literal["ssm"]) -> SSMClient: ...
    @overload
    def __call__(self, service: Literal["sts"]) -> STSClient: ...
    @overload
    def __call__(self, service: str) -> Any: ...


REGION_SOURCES = ("--region", "AWS_REGION", "AWS_DEFAULT_REGION", "the profile")


def resolve_region(region: str | None, profile: str | None = None) -> tuple[str | None, str]:
    """(region, where it came from), in the order every command uses: the option, AWS_REGION, AWS_DEFAULT_REGION,
    then the profile's `region` (boto3's own session reads only the last two, not AWS_REGION, which the AWS CLI v2
    and the SDKs for other languages read). (None, "") when none is set."""
    if region:
        return region, "--region"
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip(), var
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError

        session = botocore.session.Session(profile=profile)
        found = session.get_scoped_config().get("region")
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None, ""
    except BotoCoreError as exc:
        raise UserError(f"AWS profile {profile!r}: {exc}") from None
    if found:
        return found, f"profile {profile or session.profile or 'default'}"
    return None, ""


NO_REGION = "no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION, or region in the profile)"


def client_factory(
    region: str | None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    *,
    fallback_region: str | None = None,
) -> Clients:
    """`service -> client` for one region (default: `resolve_region`'s, then `fallback_region`), with an optional
    endpoint (e.g. a local moto server) and profile."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise UserError("boto3 is needed to upload and deploy: pip install boto3") from None
    try:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except BotoCoreError as exc:
        raise UserError(f"AWS profile {profile!r}: {exc}") from None
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, user_agent_extra="s3sync")
    cache: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in cache:
            chosen = resolve_region(region, profile)[0] or fallback_region
            if not chosen:
                raise UserError(NO_REGION)
            cache[service] = session.client(service, region_name=chosen, endpoint_url=endpoint_url, config=config)
        return cache[service]

    return client


def caller_account(clients: Clients) -> str:
    """The deployer's account (STS GetCallerIdentity): the owner every call to the code bucket expects."""
    with aws_errors("reading the caller's account (sts get-caller-identity)"):
        account = str(clients("sts").get_caller_identity()["Account"])
    if not re.fullmatch(r"\d{12}", account):
        raise UserError(f"sts get-caller-identity answered account {account!r}, not a 12-digit account id")
    return account


#: What an endpoint that does not speak the API was expected to be (--endpoint-url is the usual cause).
_NOT_AWS = ("expected an AWS API there (AWS itself, or the control plane of `s3sync local`, a moto server, for "
            "--endpoint-url); is --endpoint-url the right address?")


class aws_errors:  # noqa: N801 - used as a context manager: `with aws_errors("uploading x"):`
    """Turns boto errors into one-line UserErrors: `<doing>: <code>: <message>`, with `redact` strings masked."""

    def __init__(self, doing: str, redact: tuple[str, ...] = ()) -> None:
        self.doing = doing
        self.redact = redact

    def __enter__(self) -> aws_errors:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:  # never swallows one
        if exc is None:
            return False
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "error"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit() or not code:  # no AWS error in the body: not the API we expected answered
                text = (f"{self.doing}: the endpoint answered HTTP {status or code} to {exc.operation_name} without "
                        f"an AWS error: {_NOT_AWS}")
            else:
                message = (str(err.get("Message") or exc).strip().splitlines() or [""])[0][:300]
                text = f"{self.doing}: {code}: {message}"
        elif type(exc).__name__ == "ResponseParserError":
            text = f"{self.doing}: the endpoint answered something that is not an AWS API response: {_NOT_AWS}"
        elif type(exc).__module__.split(".")[0] in ("botocore", "boto3", "urllib3"):
            # BotoCoreError (no credentials, endpoint unreachable, ...) and the like: the first line is the message.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            text = f"{self.doing}: {first[:300]}"
        else:
            return False
        raise UserError(redact(text, self.redact)) from None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every whole occurrence of a secret replaced by ****: one not inside a longer run of the
    characters keys are made of (letters, digits, / + =), so that a short value neither garbles the text nor shows
    where it occurs in other words."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        # "=" ends a value (padding) but may stand before one (KEY=value)
        text = re.sub(rf"(?<![A-Za-z0-9/+]){re.escape(secret)}(?![A-Za-z0-9/+=])", "****", text)
    return text


def bucket_region(s3: S3Client, bucket: str, owner: str | None = None) -> str:
    """The region of `bucket`; a one-line error when it does not exist or is not ours to read. With `owner` (an
    account id), S3 refuses the call (403) unless that account owns the bucket (ExpectedBucketOwner)."""
    from botocore.exceptions import ClientError

    with aws_errors(f"bucket {bucket}"):
        try:
            location = s3.get_bucket_location(Bucket=bucket, **owned_by(owner)).get("LocationConstraint")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404", "NotFound"):
                raise UserError(f"bucket {bucket} does not exist: create it in the stacks' region first") from None
            if code in ("AccessDenied", "403", "AllAccessDisabled"):
                whose = f" (or not owned by account {owner}, the deployer's)" if owner else ""
                raise UserError(f"bucket {bucket}: access denied{whose}: another account's bucket, or your "
                                "policy") from None
            raise
    # The API answers None for us-east-1 and "EU" for the oldest eu-west-1 buckets.
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


class OwnedBy(TypedDict, total=False):
    ExpectedBucketOwner: str


def owned_by(owner: str | None) -> OwnedBy:
    """S3's ExpectedBucketOwner, when the owner is known: the call is refused unless that account owns the bucket."""
    return {"ExpectedBucketOwner": owner} if owner else {}


def upload_file(s3: S3Client, bucket: str, key: str, path: Path, content_type: str, owner: str | None = None) -> str:
    """Put `path` at `key`; returns the new object's VersionId ("" when the bucket is not versioned). With `owner`,
    S3 refuses the write unless that account owns the bucket."""
    with aws_errors(f"uploading {path.name} to s3://{bucket}/{key}"):
        made = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=content_type,
                             **owned_by(owner))
    version = str((made or {}).get("VersionId") or "")
    return "" if version == "null" else version
