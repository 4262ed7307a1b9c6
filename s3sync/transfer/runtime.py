"""Wiring from the environment: the clients and components a Lambda function or the worker container needs.

Built once per process (a Lambda cold start, a worker start); `functions/` and `container/` stay thin. Clients
are made once per service and reused by every invocation of a warm function (making a boto3 client costs tens of
milliseconds of CPU: per invocation, it was the largest cost of a small object's trip through the local system).

Everything comes from one environment mapping (`env`, os.environ by default): the settings, and the control-plane
clients' region, credentials and endpoint (AWS_ENDPOINT_URL points them at a local server), read by a botocore
session whose configuration is that mapping, never os.environ (`session_for`). `s3sync local` runs the four
functions in its own process, each with a Runtime built from its template environment: nothing of the runner's
shell reaches them.

`on_client(side, client)` is called for every client built ("control", "source" or "dest"): `s3sync local` uses it to
check each call against the component's role (s3sync.local.iam). Worker processes started by `s3sync local` get it
from the file named by S3SYNC_LOCAL_ROLE_POLICY (set by the runner only, never by the templates).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.session
from botocore import configprovider
from botocore.config import Config

from s3sync.contract import SECRET_ACCESS_KEY_ID_FIELD, SECRET_SECRET_ACCESS_KEY_FIELD, Env, Status
from s3sync.transfer.completion import Completer
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.endpoints import dest_endpoint, s3_client, share_models, source_endpoint
from s3sync.transfer.ledger import Ledger
from s3sync.transfer.newest import Newest
from s3sync.transfer.notify import Notifier
from s3sync.transfer.reattempt import Reattempter
from s3sync.transfer.settings import Settings
from s3sync.transfer.splitter import Splitter
from s3sync.transfer.sweeper import Sweeper
from s3sync.transfer.worker import Worker

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_ssm import SSMClient

_CONTROL = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30,
                  max_pool_connections=32)

#: on_client(side, client): side is "control" (SQS, DynamoDB, ...), "source" or "dest" (the two buckets)
ClientHook = Callable[[str, Any], Any]

#: Set by `s3sync local` on its worker processes only: a JSON file with the worker's role (s3sync.local.iam).
LOCAL_ROLE_POLICY = "S3SYNC_LOCAL_ROLE_POLICY"


def session_for(env: Mapping[str, str]) -> boto3.session.Session:
    """A boto3 session whose configuration (region, retry mode, defaults mode, endpoints, ...) is read from `env`
    instead of os.environ; credentials are taken from env when it holds them (Lambda sets them there), else
    botocore's default chain (ECS: the task role's container credentials)."""
    env = dict(env)
    core = botocore.session.Session()
    chain = configprovider.ConfigChainFactory(session=core, environ=env)

    def chains(variables: Mapping[str, Any]) -> dict[str, Any]:
        return {name: chain.create_config_chain(instance_name=name, env_var_names=spec[1],
                                                config_property_names=spec[0], default=spec[2],
                                                conversion_func=spec[3]) for name, spec in variables.items()}

    mapping: dict[str, Any] = chains(configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES)
    mapping["s3"] = configprovider.SectionConfigProvider("s3", core, chains(configprovider.DEFAULT_S3_CONFIG_VARS))
    mapping["proxies_config"] = configprovider.SectionConfigProvider(
        "proxies_config", core, chains(configprovider.DEFAULT_PROXIES_CONFIG_VARS))
    core.register_component("config_store", configprovider.ConfigValueStore(mapping=mapping))
    if not any(k.startswith("AWS_ENDPOINT_URL") for k in env):
        # botocore reads AWS_ENDPOINT_URL[_<SERVICE>] from os.environ itself; endpoint_url() passes env's
        core.set_config_variable("ignore_configured_endpoint_urls", True)
    return share_models(boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        botocore_session=core,
    ))


def endpoint_url(env: Mapping[str, str], session: boto3.session.Session, service: str) -> str | None:
    """AWS_ENDPOINT_URL_<SERVICE_ID>, else AWS_ENDPOINT_URL, from env (botocore's own rule, on env)."""
    if not any(k.startswith("AWS_ENDPOINT_URL") for k in env):
        return None
    service_id = session._session.get_service_model(service).service_id  # noqa: SLF001 - botocore session
    specific = "AWS_ENDPOINT_URL_" + str(service_id).replace(" ", "_").upper()
    return env.get(specific) or env.get("AWS_ENDPOINT_URL") or None


class Runtime:
    def __init__(self, env: Mapping[str, str] | None = None, *, on_client: ClientHook | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.settings = Settings.from_env(self.env)
        self._on_client = on_client if on_client is not None else _local_role_hook(self.env)
        self._session = session_for(self.env)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()  # making clients is not thread-safe; using them is

    @overload
    def client(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["ecs"]) -> ECSClient: ...
    @overload
    def client(self, service: Literal["sns"]) -> SNSClient: ...
    @overload
    def client(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def client(self, service: Literal["ssm"]) -> SSMClient: ...
    @overload
    def client(self, service: str) -> Any: ...

    def client(self, service: str) -> Any:
        with self._clients_lock:
            if service not in self._clients:
                made = self._session.client(service, endpoint_url=endpoint_url(self.env, self._session, service),
                                            config=_CONTROL)
                self._clients[service] = self._instrument("control", made)
            return self._clients[service]

    def _instrument(self, side: str, client: Any) -> Any:
        if self._on_client is not None:
            self._on_client(side, client)
        return client

    def warm(self) -> Runtime:
        """Make the clients every function needs now rather than on the first event: what a Lambda execution
        environment's INIT phase does with clients made outside the handler (a fresh boto3 session loads its
        service models: ~0.4 s for the S3 pair and the control plane, measured on the splitter's first event).
        Parts whose settings are absent are skipped, as the functions that need them would fail anyway (each
        function has its own settings: scale_out makes its ECS and SQS clients only)."""
        s = self.settings
        for service, needed in (("sqs", s.queue_url), ("dynamodb", s.transfers_table), ("sns", s.completion_topic_arn),
                                ("ecs", s.cluster)):
            if needed:
                self.client(service)
        if s.transfers_table and s.parts_table:
            _ = self.ledger
            _ = self.source  # the splitter, the sweeper and the worker read the source
        if s.dest_bucket:
            _ = self.dest  # builds the destination client (and reads the secret when there is one)
        return self

    @cached_property
    def ledger(self) -> Ledger:
        self.settings.require("transfers_table", "parts_table")
        return Ledger(self.client("dynamodb"), self.settings.transfers_table, self.settings.parts_table)

    @cached_property
    def source(self) -> Any:
        return self._instrument("source", s3_client(source_endpoint(self.env),
                                                    max_pool_connections=max(16, self.settings.worker_threads * 2)))

    @cached_property
    def dest(self) -> DestClient:
        arn = self.env.get(Env.DEST_SECRET_ARN)
        secrets = self.client("secretsmanager") if arn else None
        pool = max(16, self.settings.worker_threads * 2)

        def read_secret() -> tuple[str, str]:  # passed on only when arn is set, and secrets with it (the ignore)
            value = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])  # type: ignore[union-attr]
            return value[SECRET_ACCESS_KEY_ID_FIELD], value[SECRET_SECRET_ACCESS_KEY_FIELD]

        return DestClient(dest_endpoint(self.env, secrets),
                          lambda ep: self._instrument("dest", s3_client(ep, max_pool_connections=pool)),
                          read_secret if arn else None)

    def splitter(self) -> Splitter:
        """The splitter, with what it needs for the small objects it copies itself: the completion topic and the
        newest-version check (which re-copies through the splitter: made once the splitter exists)."""
        splitter = Splitter(source=self.source, dest=self.dest, sqs=self.client("sqs"), ledger=self.ledger,
                            settings=self.settings, notifier=self.notifier())
        splitter.newest = self.newest(splitter)
        return splitter

    def notifier(self) -> Notifier:
        topic = self.settings.completion_topic_arn
        return Notifier(self.client("sns") if topic else None, topic)

    def newest(self, splitter: Splitter) -> Newest:
        """The newest source version wins at the destination (a DONE job re-copied through `splitter`)."""
        reattempter = Reattempter(ledger=self.ledger, splitter=splitter, source=self.source, dest=self.dest)
        return Newest(source=self.source, dest=self.dest, ledger=self.ledger,
                      reattempt=lambda job: reattempter.reattempt(job, (Status.DONE,)))

    def sweeper(self) -> Sweeper:
        """Re-drives stuck jobs; needs the queue and the ledger, not the destination."""
        splitter = Splitter(source=self.source, dest=None, sqs=self.client("sqs"), ledger=self.ledger,
                            settings=self.settings)
        return Sweeper(ledger=self.ledger, splitter=splitter, stale_after=self.settings.stuck_after,
                       queue_busy=self.queue_busy)

    def queue_busy(self) -> bool:
        """Whether the part queue holds any message, visible, delayed or in flight (SQS's approximate counts)."""
        names: list[QueueAttributeNameType] = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                               "ApproximateNumberOfMessagesDelayed"]
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=self.settings.queue_url,
                                                        AttributeNames=names)["Attributes"]
        return any(int(attrs.get(n, 0)) for n in names)

    def completer(self) -> Completer:
        """Completion, with what it needs to send a wrong part again (the queue) and to keep the newest version
        at the destination (the source, and re-copies of DONE jobs)."""
        splitter = self.splitter()
        return Completer(dest=self.dest, ledger=self.ledger, notifier=self.notifier(),
                         requeue=lambda job, parts: splitter.enqueue(job, only=parts), newest=splitter.newest)

    def worker(self, **overrides: Any) -> Worker:
        self.settings.require("queue_url", "transfers_table", "parts_table")
        sqs = self.client("sqs")
        attrs = sqs.get_queue_attributes(QueueUrl=self.settings.queue_url,
                                         AttributeNames=["VisibilityTimeout"])["Attributes"]
        kwargs: dict[str, Any] = {"visibility_timeout": int(attrs.get("VisibilityTimeout", 300)),
                                  "threads": self.settings.worker_threads}
        kwargs.update(overrides)
        return Worker(sqs=sqs, queue_url=self.settings.queue_url, ledger=self.ledger, source=self.source,
                      dest=self.dest, dest_bucket=self.settings.dest_bucket, **kwargs)


def _local_role_hook(env: Mapping[str, str]) -> ClientHook | None:
    """In a worker process started by `s3sync local`: check every call against the task role (the runner wrote it
    to the file LOCAL_ROLE_POLICY names). Never set in AWS, where IAM itself does this."""
    if not env.get(LOCAL_ROLE_POLICY):
        return None
    from s3sync.local.iam import hook_from_env  # noqa: PLC0415 - local runs only

    return hook_from_env(env)
