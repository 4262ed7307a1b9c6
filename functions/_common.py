"""What every handler shares: JSON logs and one Runtime per cold start (built on first use, so importing a
handler module never needs the environment)."""

from __future__ import annotations

import os
from functools import lru_cache

from s3sync.contract import Env
from s3sync.transfer import logs
from s3sync.transfer.runtime import Runtime


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
    return Runtime()
