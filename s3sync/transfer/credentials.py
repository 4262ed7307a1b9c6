"""Destination credentials that can rotate without a redeploy.

The destination client is built from the credentials at hand (ECS injects the secret's keys into the task's
environment; Lambda reads the secret). When the destination refuses them, `refresh()` reads the secret again:
if it now holds other keys (rotated), a new client is built and the call is tried once more; if not, the
refusal stands and the job fails with a reason naming the destination.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from s3sync.transfer.endpoints import Endpoint
from s3sync.transfer.errors import CredentialsError, classify

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("s3sync.credentials")

T = TypeVar("T")


class DestClient:
    """Holds the destination S3 client; `call(fn)` runs `fn(client)` and retries once after a rotation."""

    def __init__(self, endpoint: Endpoint, build: Callable[[Endpoint], S3Client],
                 read_secret: Callable[[], tuple[str, str]] | None = None) -> None:
        self._endpoint = endpoint
        self._build = build
        self._read_secret = read_secret
        self._lock = threading.Lock()
        self.client = build(endpoint)
        self.rotations = 0

    @classmethod
    def fixed(cls, client: S3Client) -> DestClient:
        """A client whose credentials never rotate (tests, benchmarks)."""
        return cls(Endpoint(), lambda _ep: client)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    def refresh(self, refused: S3Client | None = None) -> bool:
        """After `refused` (a client) was refused: True when a client with other credentials is now in place,
        because another thread already swapped it in or because the secret holds new keys (rotated)."""
        if refused is not None and refused is not self.client:
            return True
        if self._read_secret is None:
            return False
        key_id, secret = self._read_secret()
        with self._lock:
            if refused is not None and refused is not self.client:
                return True  # swapped in while we read the secret
            if (key_id, secret) == (self._endpoint.access_key_id, self._endpoint.secret_access_key):
                return False
            self._endpoint = self._endpoint.with_credentials(key_id, secret)
            self.client = self._build(self._endpoint)
            self.rotations += 1
        log.info("destination credentials rotated; new client built", extra={"rotations": self.rotations})
        return True

    def call(self, fn: Callable[[Any], T], where: str = "") -> T:
        """Run fn(client); on a credentials refusal, refresh and run it once more; other errors classified."""
        client = self.client
        try:
            return fn(client)
        except Exception as exc:  # noqa: BLE001 - classify decides
            err = classify(exc, "destination", where)
            if not isinstance(err, CredentialsError):
                raise err from exc
            if not self.refresh(client):
                raise err from exc
        try:
            return fn(self.client)
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, "destination", where) from exc
