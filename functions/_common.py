"""What every handler shares: JSON logs and one Runtime per cold start (built on first use, so importing a
handler module never needs the environment)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache, wraps
from typing import Any

from s3sync.contract import Env
from s3sync.transfer import logs
from s3sync.transfer.runtime import Runtime

# Set only by `s3sync local`, which runs the four functions in one process: each invocation gets its own function's
# Runtime (its template environment, its role). In Lambda every function has a process of its own: never set.
_INVOCATION: ContextVar[Runtime | None] = ContextVar("s3sync_function_runtime", default=None)


@lru_cache(maxsize=1)
def _cold_start() -> Runtime:
    logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
    return Runtime()


def runtime() -> Runtime:
    rt = _INVOCATION.get()
    return rt if rt is not None else _cold_start()


runtime.cache_clear = _cold_start.cache_clear  # type: ignore[attr-defined]  # a fresh cold start (tests)


Handler = Callable[[dict[str, Any], Any], Any]


def entry(fn: Handler) -> Handler:
    """A Lambda handler whose log lines carry the invocation's request id (`context.aws_request_id`; logs.REQUEST_ID).
    Our own formatter, not AWS Lambda Powertools' Logger: nothing added to the zip, nothing to import at cold start."""
    @wraps(fn)
    def handler(event: dict[str, Any], context: Any = None) -> Any:
        token = logs.REQUEST_ID.set(getattr(context, "aws_request_id", None) or logs.REQUEST_ID.get())
        try:
            return fn(event, context)
        finally:
            logs.REQUEST_ID.reset(token)
    return handler


@contextmanager
def invoked_with(rt: Runtime) -> Iterator[Runtime]:
    """Run a handler with `rt` as its Runtime (`s3sync local`: the function's own environment and role)."""
    token = _INVOCATION.set(rt)
    try:
        yield rt
    finally:
        _INVOCATION.reset(token)
