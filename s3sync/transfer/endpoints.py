"""Endpoints: where the source and destination buckets live and how to reach them.

The source and destination are in different AWS partitions (no server-side copy, separate credentials), so each
side carries its own region, endpoint URL and credentials. Credentials are kept out of repr() and logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.loaders import create_loader

from s3sync.contract import SECRET_ACCESS_KEY_ID_FIELD, SECRET_SECRET_ACCESS_KEY_FIELD, Env
from s3sync.transfer.settings import ConfigError

if TYPE_CHECKING:
    from botocore.config import _S3Dict  # botocore-stubs' type of Config(s3=...)
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class Endpoint:
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def with_credentials(self, access_key_id: str, secret_access_key: str) -> Endpoint:
        return replace(self, access_key_id=access_key_id, secret_access_key=secret_access_key, session_token=None)

    def describe(self) -> str:
        """For messages and logs: where, never with what secret."""
        return self.endpoint_url or f"s3.{self.region or 'default region'}"


def s3_config(max_pool_connections: int = 16, *, path_style: bool = False) -> Config:
    """botocore settings fit for a long, lossy cross-border link.

    Standard retry mode (exponential backoff with jitter, throttling and 5xx retried by botocore), generous read
    timeouts for multi-MiB bodies, TCP keepalive, and checksums only where S3 requires them: we send Content-MD5
    ourselves, and some S3-compatible servers answer ranged GETs with whole-object checksums.

    Payload signing off (`UNSIGNED-PAYLOAD`): what botocore already does for uploads over HTTPS that carry
    Content-MD5, i.e. every UploadPart/PutObject we make against AWS; without it, a plain-HTTP endpoint (the local
    servers) costs a SHA-256 pass over every byte sent on top of the MD5 (measured: ~45% of the copy loop's CPU).
    Integrity is unchanged: Content-MD5 is checked by the server and the returned ETag by the copier.
    """
    s3: _S3Dict = {"payload_signing_enabled": False}
    if path_style:
        s3["addressing_style"] = "path"
    return Config(
        retries={"mode": "standard", "max_attempts": 8},
        connect_timeout=10,
        read_timeout=120,
        tcp_keepalive=True,
        max_pool_connections=max_pool_connections,
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
        s3=s3,
        signature_version="s3v4",
    )


#: Service models parsed once per process, shared by every session (a new session parses them again: ~0.1 s of CPU
#: for S3's, per destination client rebuilt after a rotation, and per function `s3sync local` warms up).
SHARED_LOADER = create_loader()


def share_models(session: boto3.session.Session) -> boto3.session.Session:
    """Give `session` the process's shared model loader (after boto3 set it up: it appends a path to its own)."""
    session._session.register_component("data_loader", SHARED_LOADER)  # noqa: SLF001 - botocore session
    return session


def s3_client(endpoint: Endpoint, *, max_pool_connections: int = 16) -> S3Client:
    session = share_models(boto3.session.Session(
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
        aws_session_token=endpoint.session_token,
        region_name=endpoint.region,
    ))
    return session.client(
        "s3",
        endpoint_url=endpoint.endpoint_url or None,
        config=s3_config(max_pool_connections, path_style=bool(endpoint.endpoint_url)),
    )


def source_endpoint(env: Mapping[str, str]) -> Endpoint:
    """The source side: the function's or task's own role in AWS; locally any S3-compatible server."""
    return Endpoint(
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        endpoint_url=env.get(Env.SOURCE_ENDPOINT_URL) or None,
        access_key_id=env.get(Env.SOURCE_ACCESS_KEY_ID) or None,
        secret_access_key=env.get(Env.SOURCE_SECRET_ACCESS_KEY) or None,
    )


def check_dest_endpoint_url(env: Mapping[str, str]) -> str | None:
    """The destination endpoint URL, refused unless https://: payload signing is off (see s3_config), so over plain
    HTTP nothing would keep the objects secret on the way to China, and the request headers would show who signed
    them. Plain http:// only where `s3sync local` says so (Env.LOCAL_PLAIN_HTTP, set by the local runner and the ops
    commands against it, never by the templates, whose DestEndpointUrl accepts https:// only)."""
    url = env.get(Env.DEST_ENDPOINT_URL) or None
    if url is None:
        return None
    scheme = urlsplit(url).scheme.lower()
    allowed = ("https", "http") if env.get(Env.LOCAL_PLAIN_HTTP) == "1" else ("https",)
    if scheme not in allowed:
        raise ConfigError(f"{Env.DEST_ENDPOINT_URL}={url!r}: the destination endpoint must be https:// "
                          f"(plain http:// only under `s3sync local`)")
    return url


def dest_endpoint(env: Mapping[str, str], secrets_client: Any | None = None) -> Endpoint:
    """The destination side, with credentials from the environment (given to `s3sync local` or an ops command) or,
    when only the secret's ARN is given (Lambda, the ECS task), read from Secrets Manager with the caller's role."""
    ep = Endpoint(region=env.get(Env.DEST_REGION) or None, endpoint_url=check_dest_endpoint_url(env))
    key_id, secret = env.get(Env.DEST_ACCESS_KEY_ID), env.get(Env.DEST_SECRET_ACCESS_KEY)
    if key_id and secret:
        return ep.with_credentials(key_id, secret)
    arn = env.get(Env.DEST_SECRET_ARN)
    if arn:
        client = secrets_client or boto3.client("secretsmanager")
        value = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
        return ep.with_credentials(value[SECRET_ACCESS_KEY_ID_FIELD], value[SECRET_SECRET_ACCESS_KEY_FIELD])
    return ep
