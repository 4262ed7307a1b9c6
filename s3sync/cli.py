"""The `s3sync` command line. Each click function only parses its options and calls a plain `do_<command>()`."""

from __future__ import annotations

import click

from s3sync.errors import UserError


class CliError(click.ClickException):
    """Printed as one line (`Error: ...`), exit status 1, never a traceback."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="s3sync")
def cli() -> None:
    """Move objects from an S3 bucket in an AWS global region to one in an AWS China region."""


def main() -> None:
    try:
        cli(standalone_mode=True)
    except UserError as exc:  # a do_* function raised outside click's own handling
        raise SystemExit(f"Error: {exc}") from None


def _run(fn, *args, **kwargs):
    """Call a do_* function, turning user mistakes into a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        raise CliError(str(exc)) from None


# --- templates: render, links, lint (plain functions in s3sync.render) -------------------------------------------
@cli.command("render")
@click.option("--out", "out_dir", default="templates", show_default=True, type=click.Path(file_okay=False),
              help="Directory to write ecs.<format> and lambda.<format> into.")
@click.option("--format", "fmt", default="yaml", show_default=True, type=click.Choice(["yaml", "json"]),
              help="Template format.")
def render_command(out_dir: str, fmt: str) -> None:
    """Render the two CloudFormation templates (deterministic: same code, same bytes)."""
    from s3sync.render import do_render

    for path in _run(do_render, out_dir, fmt):
        click.echo(f"wrote {path}")


@cli.command("links")
@click.option("--template-base-url", required=True,
              help="S3 URL of the folder holding the uploaded ecs.yaml and lambda.yaml.")
@click.option("--region", default="us-east-1", show_default=True, help="Commercial AWS region to deploy in.")
@click.option("--ecs-stack-name", default="ecsStack", show_default=True, help="Name of the ECS stack.")
@click.option("--lambda-stack-name", default="lamStackS", show_default=True, help="Name of the Lambda stack.")
def links_command(template_base_url: str, region: str, ecs_stack_name: str, lambda_stack_name: str) -> None:
    """Print console quick-create links for both stacks (open the ECS one first)."""
    from s3sync.render import do_links

    for link in _run(do_links, template_base_url, region, ecs_stack_name, lambda_stack_name):
        click.echo(f"{link.template} (stack {link.stack_name}):")
        click.echo(f"  {link.url}")


@cli.command("lint")
@click.argument("directory", default="templates", type=click.Path(file_okay=False))
@click.option("--region", "regions", multiple=True, default=["us-east-1"], show_default=True,
              help="Region to check resource availability in (repeatable).")
def lint_command(directory: str, regions: tuple[str, ...]) -> None:
    """Run cfn-lint (in-process) on the rendered templates in DIRECTORY; non-zero exit on any finding."""
    from s3sync.render import do_lint

    findings = _run(do_lint, directory, regions)
    for line in findings:
        click.echo(line)
    if findings:
        raise CliError(f"cfn-lint: {len(findings)} finding(s)")
    click.echo("cfn-lint: no findings")


# --- the engine on one machine: local, demo (s3sync.local) -------------------------------------------------------
def _spec(name, endpoint_url, key_id, secret, region):
    from s3sync.local.runner import BucketSpec

    if bool(key_id) != bool(secret):
        raise CliError(f"bucket {name}: give both the access key id and the secret access key, or neither")
    return BucketSpec(name, endpoint_url or None, key_id or None, secret or None, region)


@cli.command("local")
@click.option("--endpoint-url", help="A running control-plane server (moto) to use; default: start an embedded one.")
@click.option("--source-bucket", default="s3sync-source", show_default=True)
@click.option("--source-endpoint-url", help="S3-compatible server holding the source bucket (default: the "
              "control plane's S3, which sends notifications).")
@click.option("--source-access-key-id", envvar="S3SYNC_SOURCE_ACCESS_KEY_ID", show_envvar=True)
@click.option("--source-secret-access-key", envvar="S3SYNC_SOURCE_SECRET_ACCESS_KEY", show_envvar=True)
@click.option("--dest-bucket", default="s3sync-dest", show_default=True)
@click.option("--dest-endpoint-url", help="S3-compatible server holding the destination bucket.")
@click.option("--dest-access-key-id", envvar="S3SYNC_DEST_ACCESS_KEY_ID", show_envvar=True)
@click.option("--dest-secret-access-key", envvar="S3SYNC_DEST_SECRET_ACCESS_KEY", show_envvar=True)
@click.option("--dest-region", default="cn-north-1", show_default=True)
@click.option("--dest-prefix", default="", help="Key prefix at the destination.")
@click.option("--part-size-mib", default=8, show_default=True, type=click.IntRange(5, 5120))
@click.option("--worker-threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--min-tasks", default=1, show_default=True, type=click.IntRange(0, 100))
@click.option("--max-tasks", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option("--visibility-timeout", default=30, show_default=True, type=click.IntRange(5, 43200))
@click.option("--max-receive-count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--scale-out-threshold", default=20, show_default=True, type=click.IntRange(1))
@click.option("--until-idle", is_flag=True, help="Exit once every object is DONE or FAILED and no message is left.")
@click.option("--timeout", type=click.FloatRange(1), help="Stop after this many seconds.")
@click.option("--duplicate-messages", default=1, show_default=True, type=click.IntRange(1, 10),
              help="Fault injection: deliver every part message this many times.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Keep worker logs here.")
def local_command(**kw) -> None:
    """Run the whole system on this machine: splitter, queue, ledger, workers, completion, scaling."""
    from pathlib import Path

    from s3sync.local.runner import LocalOptions, do_local

    if kw["min_tasks"] > kw["max_tasks"]:
        raise CliError("--min-tasks cannot exceed --max-tasks")
    options = LocalOptions(
        source=_spec(kw["source_bucket"], kw["source_endpoint_url"], kw["source_access_key_id"],
                     kw["source_secret_access_key"], "us-east-1"),
        dest=_spec(kw["dest_bucket"], kw["dest_endpoint_url"], kw["dest_access_key_id"],
                   kw["dest_secret_access_key"], kw["dest_region"]),
        endpoint_url=kw["endpoint_url"], dest_prefix=kw["dest_prefix"], part_size_mib=kw["part_size_mib"],
        worker_threads=kw["worker_threads"], min_tasks=kw["min_tasks"], max_tasks=kw["max_tasks"],
        visibility_timeout=kw["visibility_timeout"], max_receive_count=kw["max_receive_count"],
        scale_out_threshold=kw["scale_out_threshold"], until_idle=kw["until_idle"], timeout=kw["timeout"],
        duplicate_messages=kw["duplicate_messages"],
        state_dir=Path(kw["state_dir"]) if kw["state_dir"] else None,
    )
    if _run(do_local, options) != 0:
        raise SystemExit(1)


@cli.command("demo")
@click.option("--scale-mib", default=256, show_default=True, type=click.IntRange(1, 4096),
              help="Size of the generated sample set.")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False),
              help="Upload this directory instead of generated samples.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="MaxTasks.")
@click.option("--worker-threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--part-size-mib", default=8, show_default=True, type=click.IntRange(5, 5120))
@click.option("--keep", "keep_dir", type=click.Path(file_okay=False), help="Keep logs in this directory.")
def demo_command(scale_mib, from_dir, workers, worker_threads, part_size_mib, keep_dir) -> None:
    """End-to-end demo on embedded local servers, then a byte-for-byte check of every object."""
    from pathlib import Path

    from s3sync.local.demo import do_demo

    code = _run(do_demo, scale_mib=scale_mib, from_dir=Path(from_dir) if from_dir else None, workers=workers,
                worker_threads=worker_threads, part_size_mib=part_size_mib,
                keep_dir=Path(keep_dir) if keep_dir else None)
    if code:
        raise SystemExit(code)
