"""Runtime settings in one object, read from the environment the templates declare (contract.Env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from s3sync.contract import (
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_MAX_TASKS,
    DEFAULT_MIN_TASKS,
    DEFAULT_PART_SIZE_MIB,
    DEFAULT_STUCK_AFTER_SECONDS,
    DEFAULT_WORKER_THREADS,
    Env,
)
from s3sync.errors import UserError
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.plan import MiB


class ConfigError(UserError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    queue_url: str = ""
    transfers_table: str = ""
    parts_table: str = ""
    dest_bucket: str = ""
    dest_prefix: str = ""
    dest_encryption: DestEncryption = DestEncryption()  # bucket default unless Env.DEST_SSE says otherwise
    part_size: int = DEFAULT_PART_SIZE_MIB * MiB
    worker_threads: int = DEFAULT_WORKER_THREADS
    cluster: str = ""
    service: str = ""
    max_tasks: int = DEFAULT_MAX_TASKS
    min_tasks: int = DEFAULT_MIN_TASKS
    completion_topic_arn: str = ""
    stuck_after: int = DEFAULT_STUCK_AFTER_SECONDS
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # small objects the splitter copies itself (0: none)
    source_bucket: str = ""  # the only bucket whose events the splitter acts on ("": none)
    propagate_deletes: bool = False  # deletion events delete copies only when this is on
    finder_cursor: str = ""  # SSM parameter: where the scheduled finder's last run stopped ("": none kept)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def num(name: str, default: int, low: int = 0) -> int:
            raw = env.get(name, "")
            if raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
            return value

        def switch(name: str) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw not in ("", "true", "false"):
                raise ConfigError(f"{name} must be true or false, got {raw!r}")
            return raw == "true"

        return cls(
            queue_url=env.get(Env.QUEUE_URL, ""),
            transfers_table=env.get(Env.TRANSFERS_TABLE, ""),
            parts_table=env.get(Env.PARTS_TABLE, ""),
            dest_bucket=env.get(Env.DEST_BUCKET, ""),
            dest_prefix=env.get(Env.DEST_PREFIX, ""),
            dest_encryption=encryption(env),
            part_size=num(Env.PART_SIZE_MIB, DEFAULT_PART_SIZE_MIB, 5) * MiB,
            worker_threads=num(Env.WORKER_THREADS, DEFAULT_WORKER_THREADS, 1),
            cluster=env.get(Env.CLUSTER, ""),
            service=env.get(Env.SERVICE, ""),
            max_tasks=num(Env.MAX_TASKS, DEFAULT_MAX_TASKS),
            min_tasks=num(Env.MIN_TASKS, DEFAULT_MIN_TASKS),
            completion_topic_arn=env.get(Env.COMPLETION_TOPIC_ARN, ""),
            stuck_after=num(Env.STUCK_AFTER_SECONDS, DEFAULT_STUCK_AFTER_SECONDS, 1),
            inline_max_bytes=num(Env.INLINE_MAX_BYTES, DEFAULT_INLINE_MAX_BYTES),
            source_bucket=env.get(Env.SOURCE_BUCKET, ""),
            propagate_deletes=switch(Env.PROPAGATE_DELETES),
            finder_cursor=env.get(Env.FINDER_CURSOR, ""),
        )

    def require(self, *names: str) -> Settings:
        """Fail with one clear message naming every missing setting a component needs."""
        env_of = {
            "queue_url": Env.QUEUE_URL, "transfers_table": Env.TRANSFERS_TABLE, "parts_table": Env.PARTS_TABLE,
            "dest_bucket": Env.DEST_BUCKET, "cluster": Env.CLUSTER, "service": Env.SERVICE,
            "completion_topic_arn": Env.COMPLETION_TOPIC_ARN,
        }
        missing = [env_of.get(n, n) for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError("missing setting(s): " + ", ".join(missing))
        return self


def encryption(env: Mapping[str, str]) -> DestEncryption:
    """The destination encryption the environment asks for; a wrong value stops the component at start, naming the
    variable (better than every copy failing at the destination, or silently writing unencrypted objects)."""
    mode, key = env.get(Env.DEST_SSE, "").strip(), env.get(Env.DEST_SSE_KMS_KEY_ID, "").strip()
    try:
        return DestEncryption(mode, key)
    except ValueError as exc:
        raise ConfigError(f"{Env.DEST_SSE}={mode!r}, {Env.DEST_SSE_KMS_KEY_ID}={key!r}: {exc}") from None
