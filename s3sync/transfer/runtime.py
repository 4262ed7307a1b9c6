"""Wiring from the environment: the clients and components a Lambda function or the worker container needs.

Built once per process (a Lambda cold start, a worker start); `functions/` and `container/` stay thin. Clients
are made once per service and reused by every invocation of a warm function (making a boto3 client costs tens of
milliseconds of CPU: per invocation, it was the largest cost of a small object's trip through the local system).
Control-plane clients (SQS, DynamoDB, SNS, ECS, Secrets Manager) use boto3's default resolution, so
AWS_ENDPOINT_URL points them at a local server.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import Any, Mapping

import boto3
from botocore.config import Config

import json

from s3sync.contract import SECRET_ACCESS_KEY_ID_FIELD, SECRET_SECRET_ACCESS_KEY_FIELD, Env
from s3sync.transfer.completion import Completer
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.endpoints import dest_endpoint, s3_client, source_endpoint
from s3sync.transfer.ledger import Ledger
from s3sync.transfer.settings import Settings
from s3sync.transfer.splitter import Splitter
from s3sync.transfer.sweeper import Sweeper
from s3sync.transfer.worker import Worker

_CONTROL = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30,
                  max_pool_connections=32)


class Runtime:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.settings = Settings.from_env(self.env)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()  # making clients is not thread-safe; using them is

    def client(self, service: str) -> Any:
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(service, config=_CONTROL)
            return self._clients[service]

    def warm(self) -> "Runtime":
        """Make the clients every function needs now rather than on the first event: what a Lambda execution
        environment's INIT phase does with clients made outside the handler (a fresh boto3 session loads its
        service models: ~0.4 s for the S3 pair and the control plane, measured on the splitter's first event).
        Parts whose settings are absent are skipped, as the functions that need them would fail anyway."""
        for service in ("sqs", "dynamodb", "sns", "ecs"):
            self.client(service)
        if self.settings.transfers_table and self.settings.parts_table:
            _ = self.ledger
        _ = self.source
        _ = self.dest  # builds the destination client (and reads the secret when there is one)
        return self

    @cached_property
    def ledger(self) -> Ledger:
        self.settings.require("transfers_table", "parts_table")
        return Ledger(self.client("dynamodb"), self.settings.transfers_table, self.settings.parts_table)

    @cached_property
    def source(self) -> Any:
        return s3_client(source_endpoint(self.env), max_pool_connections=max(16, self.settings.worker_threads * 2))

    @cached_property
    def dest(self) -> DestClient:
        arn = self.env.get(Env.DEST_SECRET_ARN)
        secrets = self.client("secretsmanager") if arn else None
        pool = max(16, self.settings.worker_threads * 2)

        def read_secret() -> tuple[str, str]:
            value = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])  # type: ignore[union-attr]
            return value[SECRET_ACCESS_KEY_ID_FIELD], value[SECRET_SECRET_ACCESS_KEY_FIELD]

        return DestClient(dest_endpoint(self.env, secrets), lambda ep: s3_client(ep, max_pool_connections=pool),
                          read_secret if arn else None)

    def splitter(self) -> Splitter:
        return Splitter(source=self.source, dest=self.dest, sqs=self.client("sqs"), ledger=self.ledger,
                        settings=self.settings)

    def sweeper(self) -> Sweeper:
        """Re-drives stuck jobs; needs the queue and the ledger, not the destination."""
        splitter = Splitter(source=self.source, dest=None, sqs=self.client("sqs"), ledger=self.ledger,
                            settings=self.settings)
        return Sweeper(ledger=self.ledger, splitter=splitter, stale_after=self.settings.stuck_after)

    def completer(self) -> Completer:
        topic = self.settings.completion_topic_arn
        return Completer(dest=self.dest, ledger=self.ledger, sns=self.client("sns") if topic else None,
                         topic_arn=topic)

    def worker(self, **overrides: Any) -> Worker:
        self.settings.require("queue_url", "transfers_table", "parts_table")
        sqs = self.client("sqs")
        attrs = sqs.get_queue_attributes(QueueUrl=self.settings.queue_url,
                                         AttributeNames=["VisibilityTimeout"])["Attributes"]
        kwargs: dict[str, Any] = {"visibility_timeout": int(attrs.get("VisibilityTimeout", 300)),
                                  "threads": self.settings.worker_threads}
        kwargs.update(overrides)
        return Worker(sqs=sqs, queue_url=self.settings.queue_url, ledger=self.ledger, source=self.source,
                      dest=self.dest, **kwargs)
