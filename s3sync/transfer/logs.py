"""Structured logs: one JSON object per line, carrying the transfer (job) and part ids passed in `extra`."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

#: The Lambda request id of the invocation this thread works for (functions._common.entry sets it): every log line
#: carries it as "requestId", the name Lambda's own JSON log format uses, so an operator goes from a job's log line
#: to the invocation (and its REPORT line) in CloudWatch Logs.
REQUEST_ID: ContextVar[str | None] = ContextVar("s3sync_request_id", default=None)



def in_this_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, to be run on pool threads with the calling thread's context variables (the request id): a
    ThreadPoolExecutor's threads start from an empty context."""
    ctx = contextvars.copy_context()
    return lambda *args, **kwargs: ctx.copy().run(fn, *args, **kwargs)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            out["requestId"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str = "INFO", stream=None) -> None:
    """Route every s3sync logger to JSON lines (Lambda and ECS ship stdout/stderr to CloudWatch Logs)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("s3sync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
