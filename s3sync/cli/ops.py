"""Operations on a running system: status, retry, backfill (plain functions in s3sync.ops)."""

from __future__ import annotations

import json

import click

from s3sync.cli import CliError, cli, option, run_guarded

_TARGET_OPTIONS = (
    click.option("--endpoint-url", help="Control-plane endpoint: a running `s3sync local` (its moto server), or any "
                 "endpoint for every AWS call."),
    click.option("--region", help="Region of the stacks (default: AWS_REGION, then AWS_DEFAULT_REGION, then the "
                 "profile's region; the one used is shown)."),
    click.option("--profile", help="AWS profile (credentials and region) to use."),
    option("--ecs-stack", "stack", aliases=("--stack", "--ecs-stack-name"),
           help="ECS stack whose outputs name the resources (default: ecsStack, unless --endpoint-url points at "
                "s3sync local)."),
    option("--lambda-stack", "lambda_stack", aliases=("--lambda-stack-name",),
           help="Lambda stack (source bucket, part size) [default: lamStackS]."),
    click.option("--table", help="Transfers table name (instead of a stack's outputs)."),
    click.option("--parts-table", help="Parts table name (with --table)."),
    click.option("--queue-url", help="Part queue URL (with --table)."),
    click.option("--dlq-url", help="Dead-letter queue URL (with --table)."),
    click.option("--name-prefix", default="s3sync", show_default=True,
                 help="Resource name prefix of s3sync local (`local`'s resources are <prefix>-transfers, ...)."),
)
_STUCK_OPTION = click.option(
    "--stuck-after", type=click.IntRange(1), default=None,
    help="Seconds without progress after which an unfinished job counts as stuck [default: 900].")


def _options(*options):
    def decorate(fn):
        for add in reversed(options):
            fn = add(fn)
        return fn

    return decorate


def _target(kw: dict, **extra):
    from s3sync.ops.context import resolve

    names = ("endpoint_url", "region", "profile", "stack", "lambda_stack", "table", "parts_table", "queue_url",
             "dlq_url", "name_prefix")
    return run_guarded(resolve, **{n: kw.pop(n) for n in names}, stuck_after=kw.pop("stuck_after", None), **extra)


@cli.command("status")
@_options(*_TARGET_OPTIONS, _STUCK_OPTION)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--failed", is_flag=True, help="Only FAILED jobs.")
@click.option("--stuck", is_flag=True, help="Only unfinished jobs without progress for --stuck-after seconds.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0),
              help="Rows to show (unfinished first, then failed, then the latest done); 0: all. Totals count all.")
@click.option("--all", "everything", is_flag=True,
              help="Read every job (a Scan of the whole table): exact totals and the latest done rows, at a cost that "
                   "grows with the table. Without it, a table of more than 1,000 jobs is read through its index: "
                   "unfinished and failed jobs, and the number of done ones from DynamoDB's item count.")
@click.option("--reindex", is_flag=True,
              help="Once, after upgrading from a version without the transfers table's Attention index: put the "
                   "unfinished and failed jobs written before it into it (a Scan, one write per such job).")
def status_command(as_json, failed, stuck, limit, everything, reindex, **kw) -> None:
    """Progress of every transfer: parts, bytes, rate, ETA per object, and totals."""
    from rich.console import Console

    from s3sync.ops.status import collect, do_reindex, render

    target = _target(kw)
    if reindex:
        counts = run_guarded(do_reindex, target)
        click.echo(f"reindexed: {counts['indexed']} job(s) put into the index, {counts['skipped']} changed meanwhile "
                   f"(run it again), {counts['scanned']} item(s) scanned", err=as_json)
    report = run_guarded(collect, target, failed=failed, stuck=stuck, limit=limit, everything=everything)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        render(report, Console(), failed=failed, stuck=stuck)  # the terminal's width: columns fitted to it


@cli.command("retry")
@click.argument("job_ids", nargs=-1, metavar="[JOB]...")
@_options(*_TARGET_OPTIONS)
@click.option("--failed", is_flag=True, help="Every FAILED job, then the dead-letter queue.")
@click.option("--dlq", is_flag=True, help="Re-drive the dead-letter queue (implied by --failed).")
@click.option("--source-endpoint-url", help="S3-compatible server of the source bucket (s3sync local).")
@click.option("--dest-endpoint-url", help="S3-compatible server of the destination bucket (s3sync local).")
@click.option("--part-size-mib", type=click.IntRange(5, 5120),
              help="Part size of the new plans [default: each job's own].")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def retry_command(job_ids, failed, dlq, source_endpoint_url, dest_endpoint_url, part_size_mib, as_json, **kw) -> None:
    """A new attempt (new plan, new upload) for failed jobs, and the dead-letter queue back to the part queue."""
    from s3sync.ops.retry import do_retry, render

    if not (job_ids or failed or dlq):
        raise CliError("name the jobs to retry (JOB ..., ids or unique prefixes from `s3sync status`), or pass "
                       "--failed or --dlq", usage=True)
    target = _target(kw, source_endpoint_url=source_endpoint_url, dest_endpoint_url=dest_endpoint_url)
    report = run_guarded(do_retry, target, list(job_ids), failed=failed, dlq=dlq, part_size_mib=part_size_mib)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        render(report, click.echo)
    if not report.ok:
        raise SystemExit(1)


@cli.command("backfill")
@_options(*_TARGET_OPTIONS)
@click.option("--prefix", default="", help="Only source keys starting with this.")
@click.option("--source-bucket", help="Source bucket [default: the Lambda stack's; s3sync-source locally].")
@click.option("--source-endpoint-url", help="S3-compatible server of the source bucket (s3sync local).")
@click.option("--dest-bucket", help="Destination bucket [default: the ECS stack's; s3sync-dest locally].")
@click.option("--dest-endpoint-url", help="S3-compatible server of the destination bucket (s3sync local).")
@click.option("--dest-prefix", help="Key prefix at the destination [default: the ECS stack's].")
@click.option("--part-size-mib", type=click.IntRange(5, 5120), help="Part size of the plans.")
@click.option("--dry-run", is_flag=True, help="Only compare and report; enqueue nothing.")
@click.option("--size-only", is_flag=True,
              help="Trust equal sizes when ETags cannot be compared (copies made by another tool).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64), help="Splits in parallel.")
@click.option("--start-after", default="", help="Resume after this source key.")
@click.option("--verbose", "-v", is_flag=True, help="One line per object that needs a copy.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def backfill_command(prefix, source_bucket, source_endpoint_url, dest_bucket, dest_endpoint_url, dest_prefix,
                     part_size_mib, dry_run, size_only, threads, start_after, verbose, as_json, **kw) -> None:
    """Copy every source object whose copy is missing or differs (objects older than the stacks, lost events)."""
    from s3sync.ops.backfill import do_backfill, render

    if dest_prefix is not None and dest_prefix.startswith("/"):
        raise CliError("--dest-prefix must not start with '/'", usage=True)
    target = _target(kw, source_bucket=source_bucket, source_endpoint_url=source_endpoint_url,
                     dest_bucket=dest_bucket, dest_endpoint_url=dest_endpoint_url, dest_prefix=dest_prefix,
                     part_size_mib=part_size_mib)

    def line(key: str, reason: str, outcome: str) -> None:
        click.echo(f"{outcome:>18}  {reason:<10}  {key}", err=as_json)

    result = run_guarded(do_backfill, target, prefix=prefix, dry_run=dry_run, size_only=size_only, threads=threads,
                  start_after=start_after, on_object=line if verbose else None)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        render(result, click.echo)
    if result.error_count:
        raise SystemExit(1)
