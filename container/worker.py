"""ECS worker entry point: serve the part queue until SIGTERM (ECS stop, scale-in) or SIGINT."""

from __future__ import annotations

import os
import signal
import sys

from s3sync.contract import Env
from s3sync.transfer import logs
from s3sync.transfer.runtime import Runtime


def main() -> int:
    logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
    worker = Runtime().worker()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
