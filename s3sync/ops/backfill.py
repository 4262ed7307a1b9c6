"""`s3sync backfill [--prefix P]`: copy the objects that existed before the stacks (or whose events were lost).

The same finder the scheduled rule runs (s3sync.transfer.finder: streaming merge-join of both listings, the
comparison rule, `Splitter.split` for every object to copy, so jobs stay idempotent), run from this machine with the
resources of `--stack` or of `s3sync local`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s3sync.aws import aws_errors
from s3sync.errors import UserError
from s3sync.ops.context import Target
from s3sync.transfer.errors import TransferError
from s3sync.transfer.finder import Finder, FindResult
from s3sync.transfer.reattempt import Reattempter


def do_backfill(target: Target, *, prefix: str = "", dry_run: bool = False, size_only: bool = False,
                threads: int = 8, start_after: str = "",
                on_object: Callable[[str, str, str], None] | None = None) -> FindResult:
    target.need("source_bucket", "dest_bucket", doing="backfill")
    if not dry_run:
        target.need("transfers_table", "parts_table", "queue_url", doing="backfill")
    rt = target.runtime()
    splitter = rt.splitter() if not dry_run else None
    reattempter = (Reattempter(ledger=rt.ledger, splitter=splitter, source=rt.source, dest=rt.dest)
                   if splitter else None)
    finder = Finder(source=rt.source, dest=rt.dest, ledger=rt.ledger, splitter=splitter,
                    reattempter=reattempter, source_bucket=target.source_bucket, dest_bucket=target.dest_bucket,
                    dest_prefix=target.dest_prefix, threads=threads, size_only=size_only,
                    dest_encryption=rt.settings.dest_encryption)
    doing = f"backfill of s3://{target.source_bucket}/{prefix} ({target.where})"
    with aws_errors(doing):
        try:
            return finder.run(prefix, dry_run=dry_run, start_after=start_after, on_object=on_object)
        except TransferError as exc:  # a listing refused: the bucket is missing or not ours to read
            raise UserError(f"{doing}: {exc.reason}") from None


def render(result: FindResult, echo: Any) -> None:
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(result.reasons.items())) or "none"
    echo(f"listed {result.listed} source object(s): {result.in_sync} already copied, {result.different} to copy "
         f"({reasons}); {result.dest_only} only at the destination")
    if result.dry_run:
        echo("dry run: nothing was enqueued")
    else:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(result.outcomes.items())) or "nothing to do"
        echo(f"handed to the splitter: {outcomes}")
    for key, reason in result.errors:
        echo(f"error: {key}: {reason}")
    if result.error_count > len(result.errors):
        echo(f"... and {result.error_count - len(result.errors)} more error(s)")
    if result.stopped_at:
        echo(f"stopped early; resume with --start-after {result.stopped_at!r}")
