"""The engine on one machine: local, demo (s3sync.local)."""

from __future__ import annotations

import click

from s3sync.cli import CliError, _run, cli


def _encryption(mode, key_id):
    from s3sync.transfer.encryption import DestEncryption

    try:
        return DestEncryption("" if mode == "none" else mode, key_id or "")
    except ValueError as exc:
        raise CliError(f"--dest-sse {mode} --dest-sse-kms-key-id {key_id!r}: {exc}") from None


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
@click.option("--dest-sse", type=click.Choice(["none", "AES256", "aws:kms"]), default="none", show_default=True,
              help="Server-side encryption of the copies: none (the bucket's default), AES256 (SSE-S3) or aws:kms.")
@click.option("--dest-sse-kms-key-id", default="", metavar="KEY",
              help="With --dest-sse aws:kms: key id, key ARN or alias of the destination's KMS key (default: aws/s3).")
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
@click.option("--propagate-deletes", is_flag=True, help="Deleting a source object deletes its copy.")
@click.option("--worker-image", metavar="IMAGE", help="Run the workers as containers of this image (`s3sync image "
              "build`), with the task definition's environment, user, entry point and stop timeout; default: host "
              "processes.")
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
        dest_encryption=_encryption(kw["dest_sse"], kw["dest_sse_kms_key_id"]),
        worker_threads=kw["worker_threads"], min_tasks=kw["min_tasks"], max_tasks=kw["max_tasks"],
        visibility_timeout=kw["visibility_timeout"], max_receive_count=kw["max_receive_count"],
        scale_out_threshold=kw["scale_out_threshold"], until_idle=kw["until_idle"], timeout=kw["timeout"],
        duplicate_messages=kw["duplicate_messages"], propagate_deletes=kw["propagate_deletes"],
        state_dir=Path(kw["state_dir"]) if kw["state_dir"] else None, worker_image=kw["worker_image"] or None,
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
