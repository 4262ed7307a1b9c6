"""Shared fixtures: real local servers and an environment in which no test can reach real AWS.

- `aws_env` (autouse): dummy credentials and region for every test; profiles, tokens and instance metadata off.
- `moto_server` (session): one moto standalone server for the whole run. moto's state is per *process*, so use
  unique resource names per test, or `fresh_moto` to start from an empty moto.
- `rclone_server` (function): a fresh `rclone serve s3` over a temporary directory (starts in ~0.1 s).
- `boto_client`: factory `boto_client(service, endpoint_url=None, **kwargs)`; without an endpoint it targets the
  session's moto server. S3 clients get the checksum settings that rclone's ranged GETs need.
- `sample_event`: factory `sample_event("s3-object-created")` -> the parsed tests/events/<name>.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

EVENTS_DIR = Path(__file__).parent / "events"

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials/region so that a client missing an endpoint fails at moto's door, not AWS's."""
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)


def make_client(service: str, endpoint_url: str, **kwargs: Any) -> Any:
    """A boto3 client for a local server: region us-east-1, dummy keys, few retries, local-friendly checksums."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
    )
    kwargs.setdefault("region_name", "us-east-1")
    kwargs.setdefault("aws_access_key_id", "testing")
    kwargs.setdefault("aws_secret_access_key", "testing")
    if "config" in kwargs:
        config = config.merge(kwargs.pop("config"))
    return boto3.client(service, endpoint_url=endpoint_url, config=config, **kwargs)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    from s3sync.local.servers import MotoServer

    with MotoServer() as server:
        yield server


@pytest.fixture
def fresh_moto(moto_server: Any) -> Any:
    """The session's moto server, emptied of every resource before the test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def rclone_server() -> Iterator[Any]:
    from s3sync.local.servers import RcloneNotFoundError, RcloneS3Server

    try:
        server = RcloneS3Server()
        server.start()
    except RcloneNotFoundError as exc:  # pragma: no cover - CI without the local extra
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def boto_client(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def factory(service: str, endpoint_url: str | None = None, **kwargs: Any) -> Any:
        if endpoint_url is None:
            endpoint_url = request.getfixturevalue("moto_server").endpoint_url
        return make_client(service, endpoint_url, **kwargs)

    return factory


@pytest.fixture
def sample_event() -> Callable[[str], Any]:
    def load(name: str) -> Any:
        path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
        return json.loads(path.read_text())

    return load
