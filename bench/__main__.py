"""`python -m bench` (`make bench`): B1 (one large object), B2 (many small files), B3 (the splitter's write path),
B4 (across the border: an emulated long, thin, lossy link), B5 (the ledger at 100,000 jobs: sweep and status).

    python -m bench                      # all three at the issue's sizes (several minutes)
    python -m bench --quick              # all three, small sizes (under a minute)
    python -m bench b1 --b1-size-mib 256 --b1-runs 5
    python -m bench b2 --b2-count 500 --transfers 16
    python -m bench b4 --b4-profiles cn-good --b4-runs 1
    python -m bench b5 --b5-jobs 10000,100000 --b5-runs 3

Each benchmark starts its own servers and stops them, prints one line per run and a summary line, and writes its
results as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import signal
import sys

from bench import b1_large, b2_small, b3_splitter, b4_link, b5_ledger, common
from bench.common import say

BENCHES = {"b1": b1_large, "b2": b2_small, "b3": b3_splitter, "b4": b4_link, "b5": b5_ledger}
QUICK = {"b1_size_mib": 64, "b1_runs": 3, "b2_count": 20, "b2_runs": 3, "b3_parts": 300, "b3_runs": 3,
         "b4_big_mib": 12, "b4_small_count": 2, "b4_small_mib": 6, "b4_runs": 1, "b4_workers": 2,
         "max_aggregate_mb": 0.0, "b5_jobs": "2000,5000", "b5_runs": 1, "quiet_wait": 0.0}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", choices=[*BENCHES, []], metavar="BENCH",
                   help="b1, b2, b3, b4 and/or b5 (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: B1 64 MiB, B2 20 files, B3 300 parts, B4 24 MiB with 2 workers on the "
                        "paths' own bandwidths (a smoke test, not figures), no waiting for a quiet machine (flags "
                        "given explicitly win)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data and logs (path printed)")
    p.add_argument("--moto-as-shipped", action="store_true",
                   help="run the embedded moto server without s3sync.local.moto_patches (default: patched, as "
                        "s3sync local runs it), to measure what the patches are worth")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each run, wait up to this many seconds for the other processes on the machine "
                        "to go below 0.25 cores (default 60; 0: do not wait)")
    for mod in BENCHES.values():
        mod.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: the runner stops its workers, the servers stop, temp dirs go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = parser()
    args = p.parse_args(argv)
    if args.quick:
        given = set(a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]))
        for k, v in QUICK.items():
            if k not in given:
                setattr(args, k, v)
    if args.moto_as_shipped:
        common.RUN_FLAGS["moto_patches"] = False
        say("moto as shipped: s3sync.local.moto_patches not applied")
    failed = False
    for name in args.which or list(BENCHES):
        payload = BENCHES[name].run(args)
        failed |= not payload["summary"].get("all_ok", True)
    if failed:
        say("some runs failed: see the lines above and the JSON results")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
