"""The engine on one machine: local, demo (s3sync.local)."""

from __future__ import annotations

import re

import click

from s3sync.cli import CliError, ask_secret, cli, option, run_guarded, secret_option_check
from s3sync.contract import BUCKET_PATTERN

_BUCKET = re.compile(BUCKET_PATTERN)


class BucketName(click.ParamType):
    """An S3 bucket name (3-63 lower-case letters, digits, dots and hyphens), refused before anything starts."""

    name = "BUCKET"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            self.fail(f"{value!r} is not an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens, "
                      "starting and ending with a letter or digit", param, ctx)
        return value


BUCKET = BucketName()
PART_SIZE_HELP = ("Target part size of multipart copies (the splitter grows it for objects over 10,000 parts). The "
                  "deployed default is 5 (chosen on a cross-border link); 8 here, where every worker shares one "
                  "machine's loopback.")
THREADS_HELP = ("Copy threads per worker (each holds one part in memory: threads x part size). The deployed default "
                "is 32 (filling a cross-border link); 4 here, on one machine.")
MAX_TASKS_HELP = "Workers when the queue is deep (the ECS service's MaxTasks)."


def _encryption(mode, key_id):
    from s3sync.transfer.encryption import DestEncryption

    try:
        return DestEncryption("" if mode == "none" else mode, key_id or "")
    except ValueError as exc:
        raise CliError(f"--dest-sse {mode} --dest-sse-kms-key-id {key_id!r}: {exc}", usage=True) from None


def _spec(ctx, side, name, endpoint_url, key_id, secret, region):
    """A bucket and its keys; the secret key is asked (hidden) when only the key id is given, and warned about
    when it came on the command line."""
    from s3sync.local.options import BucketSpec

    env = f"S3SYNC_{side.upper()}_SECRET_ACCESS_KEY"
    secret_option_check(ctx, f"{side}_secret_access_key", f"--{side}-secret-access-key", env)
    if secret and not key_id:
        raise CliError(f"--{side}-secret-access-key needs --{side}-access-key-id (or S3SYNC_{side.upper()}_ACCESS_"
                       "KEY_ID)", usage=True)
    if key_id and not secret:
        secret = ask_secret(f"{side} secret access key")
    return BucketSpec(name, endpoint_url or None, key_id or None, secret or None, region)


@cli.command("local")
@click.option("--endpoint-url", help="A running control-plane server (moto) to use; default: start an embedded one.")
@click.option("--source-bucket", default="s3sync-source", show_default=True, type=BUCKET,
              help="Bucket to copy from (made when missing); upload to it to start copies.")
@click.option("--source-endpoint-url", help="S3-compatible server holding the source bucket (default: the "
              "control plane's S3, which sends notifications).")
@click.option("--source-access-key-id", envvar="S3SYNC_SOURCE_ACCESS_KEY_ID", show_envvar=True,
              help="Access key id for --source-endpoint-url (the secret is asked when not in the environment).")
@click.option("--source-secret-access-key", envvar="S3SYNC_SOURCE_SECRET_ACCESS_KEY", show_envvar=True,
              help="Prefer the environment variable (or type it when asked): a command line shows in `ps`.")
@click.option("--dest-bucket", default="s3sync-dest", show_default=True, type=BUCKET,
              help="Bucket the copies go to (made when missing).")
@click.option("--dest-endpoint-url", help="S3-compatible server holding the destination bucket.")
@click.option("--dest-access-key-id", envvar="S3SYNC_DEST_ACCESS_KEY_ID", show_envvar=True,
              help="Access key id for --dest-endpoint-url (the secret is asked when not in the environment).")
@click.option("--dest-secret-access-key", envvar="S3SYNC_DEST_SECRET_ACCESS_KEY", show_envvar=True,
              help="Prefer the environment variable (or type it when asked): a command line shows in `ps`. Kept in "
                   "the control plane's secret store while the run lasts, as the stacks keep it in Secrets Manager.")
@click.option("--dest-region", default="cn-north-1", show_default=True,
              help="Region the destination's requests are signed for.")
@click.option("--dest-prefix", default="", help="Key prefix at the destination.")
@click.option("--dest-sse", type=click.Choice(["none", "AES256", "aws:kms"]), default="none", show_default=True,
              help="Server-side encryption of the copies: none (the bucket's default), AES256 (SSE-S3) or aws:kms.")
@click.option("--dest-sse-kms-key-id", default="", metavar="KEY",
              help="With --dest-sse aws:kms: key id, key ARN or alias of the destination's KMS key (default: aws/s3).")
@click.option("--part-size-mib", default=8, show_default=True, type=click.IntRange(5, 5120), help=PART_SIZE_HELP)
@click.option("--worker-threads", default=4, show_default=True, type=click.IntRange(1, 64), help=THREADS_HELP)
@click.option("--min-tasks", default=1, show_default=True, type=click.IntRange(0, 100),
              help="Workers when nothing is queued (MinTasks).")
@click.option("--max-tasks", default=2, show_default=True, type=click.IntRange(1, 100), help=MAX_TASKS_HELP)
@click.option("--visibility-timeout", default=30, show_default=True, type=click.IntRange(5, 43200),
              help="Seconds a received part message stays hidden (the queue's VisibilityTimeout).")
@click.option("--max-receive-count", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Receives before a message goes to the dead-letter queue.")
@click.option("--scale-out-threshold", default=20, show_default=True, type=click.IntRange(1),
              help="Visible messages that scale the workers out (alarm A).")
@click.option("--until-idle", is_flag=True, help="Exit once every object is DONE or FAILED and no message is left.")
@option("--timeout-seconds", "timeout", aliases=("--timeout",), type=click.FloatRange(1),
        help="Stop after this many seconds.")
@click.option("--duplicate-messages", default=1, show_default=True, type=click.IntRange(1, 10),
              help="Fault injection: deliver every part message this many times.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Keep the logs here (runner.log: the run's; "
              "logs/: the workers').")
@click.option("--log-format", type=click.Choice(["auto", "json"]), default="auto", show_default=True,
              help="auto: on a terminal one live view (progress, a line per object, scaling, warnings) with the JSON "
                   "logs in runner.log in the state directory; elsewhere the JSON logs on stderr. json: always the "
                   "JSON logs on stderr.")
@click.option("--propagate-deletes", is_flag=True, help="Deleting a source object deletes its copy.")
@click.option("--worker-image", metavar="IMAGE", help="Run the workers as containers of this image (`s3sync image "
              "build`), with the task definition's environment, user, entry point and stop timeout; default: host "
              "processes.")
@click.pass_context
def local_command(ctx, **kw) -> None:
    """Run the whole system on this machine: splitter, queue, ledger, workers, completion, scaling. Prints where to
    upload and how to watch; Ctrl-C stops it with a summary."""
    from pathlib import Path

    from s3sync.local.options import LocalOptions
    from s3sync.local.run import do_local

    if kw["min_tasks"] > kw["max_tasks"]:
        raise CliError(f"--min-tasks {kw['min_tasks']} cannot exceed --max-tasks {kw['max_tasks']}", usage=True)
    options = LocalOptions(
        source=_spec(ctx, "source", kw["source_bucket"], kw["source_endpoint_url"], kw["source_access_key_id"],
                     kw["source_secret_access_key"], "us-east-1"),
        dest=_spec(ctx, "dest", kw["dest_bucket"], kw["dest_endpoint_url"], kw["dest_access_key_id"],
                   kw["dest_secret_access_key"], kw["dest_region"]),
        endpoint_url=kw["endpoint_url"], dest_prefix=kw["dest_prefix"], part_size_mib=kw["part_size_mib"],
        dest_encryption=_encryption(kw["dest_sse"], kw["dest_sse_kms_key_id"]),
        worker_threads=kw["worker_threads"], min_tasks=kw["min_tasks"], max_tasks=kw["max_tasks"],
        visibility_timeout=kw["visibility_timeout"], max_receive_count=kw["max_receive_count"],
        scale_out_threshold=kw["scale_out_threshold"], until_idle=kw["until_idle"], timeout=kw["timeout"],
        duplicate_messages=kw["duplicate_messages"], propagate_deletes=kw["propagate_deletes"],
        state_dir=Path(kw["state_dir"]) if kw["state_dir"] else None, worker_image=kw["worker_image"] or None,
    )
    code = run_guarded(do_local, options, log_format=kw["log_format"])
    if code:
        raise SystemExit(code)


@cli.command("demo")
@click.option("--scale-mib", default=256, show_default=True, type=click.IntRange(16, 4096),
              help="Size of the generated sample set, in MiB (at least 16: its edge cases around 5 MiB).")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False),
              help="Upload the regular files of this directory instead of generated samples; symbolic links are "
                   "skipped (and counted) unless -L.")
@click.option("-L", "--follow-links", is_flag=True, help="With --from: follow symbolic links to files and "
              "directories (as rclone's -L); dangling ones and loops are skipped and counted.")
@option("--max-tasks", "max_tasks", aliases=("--workers",), default=2, show_default=True,
        type=click.IntRange(1, 16), help=MAX_TASKS_HELP)
@click.option("--worker-threads", default=4, show_default=True, type=click.IntRange(1, 64), help=THREADS_HELP)
@click.option("--part-size-mib", default=8, show_default=True, type=click.IntRange(5, 5120), help=PART_SIZE_HELP)
@option("--state-dir", "state_dir", aliases=("--keep",), type=click.Path(file_okay=False),
        help="Keep the logs in this directory.")
def demo_command(scale_mib, from_dir, follow_links, max_tasks, worker_threads, part_size_mib, state_dir) -> None:
    """End-to-end demo on embedded local servers, then a byte-for-byte check of every object. Ctrl-C stops it
    with the objects' states (exit status 130)."""
    from pathlib import Path

    from s3sync.local.demo import do_demo

    code = run_guarded(do_demo, scale_mib=scale_mib, from_dir=Path(from_dir) if from_dir else None, max_tasks=max_tasks,
                worker_threads=worker_threads, part_size_mib=part_size_mib,
                state_dir=Path(state_dir) if state_dir else None, follow_links=follow_links)
    if code:
        raise SystemExit(code)
