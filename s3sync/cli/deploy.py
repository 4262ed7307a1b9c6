"""Packaging and deployment commands: package, deploy, destroy (plain functions in s3sync.package / s3sync.deploy)."""

from __future__ import annotations

import click

from s3sync.cli import CliError, ask_secret, cli, option, run_guarded, secret_option_check
from s3sync.contract import DEFAULT_ECS_STACK, DEFAULT_LAMBDA_STACK

#: The options every command that names the stacks takes (ops commands too): one spelling everywhere, the old ones
#: still accepted.
_STACK_OPTIONS = (
    option("--ecs-stack", "ecs_stack_name", aliases=("--ecs-stack-name", "--stack"), default=DEFAULT_ECS_STACK,
           show_default=True, help="Name of the ECS stack."),
    option("--lambda-stack", "lambda_stack_name", aliases=("--lambda-stack-name",), default=DEFAULT_LAMBDA_STACK,
           show_default=True, help="Name of the Lambda stack."),
)
REGION_HELP = ("AWS region of the stacks, global or China (default: AWS_REGION, then AWS_DEFAULT_REGION, then the "
               "profile's region; the one used is printed).")
_AWS_OPTIONS = (
    click.option("--region", help=REGION_HELP),
    click.option("--endpoint-url", help="Endpoint for every AWS API call (e.g. a local moto server)."),
    click.option("--profile", help="AWS profile (credentials and region) to use."),
)
_PARAM_OPTION = click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="A stack parameter (repeatable); KEY goes to each stack that has it, or prefix ecs. / lambda.",
)  # fmt: skip


def _options(*options):
    def decorate(fn):
        for add in reversed(options):
            fn = add(fn)
        return fn

    return decorate


def _parse_params(params: tuple[str, ...]) -> dict[str, str]:
    from s3sync.errors import UserError
    from s3sync.package.templates import parse_key_values

    try:
        return parse_key_values(params)
    except UserError as exc:
        raise CliError(f"--param: {exc}", usage=True) from None


@cli.command("package")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the zip, the worker image context and the templates.")
@click.option("--bucket", help="Also upload to this S3 bucket (in the stacks' region) and print links.")
@click.option("--prefix", default="", help="Key prefix in the bucket, e.g. s3sync/v1/.")
@click.option("--image-uri", default="", help="Worker image URI: the ImageUri default of ecs.yaml.")
@_options(*_AWS_OPTIONS, *_STACK_OPTIONS, _PARAM_OPTION)
def package_command(out_dir, bucket, prefix, image_uri, region, endpoint_url, profile, ecs_stack_name,
                    lambda_stack_name, params) -> None:  # fmt: skip
    """Build the Lambda zip, the worker image build context and both templates; --bucket uploads them."""
    from s3sync.package import do_package

    if not bucket and (prefix or params):
        raise CliError("--prefix and --param need --bucket (the links point at the uploaded templates)", usage=True)
    result = run_guarded(
        do_package, out_dir, bucket=bucket, prefix=prefix, region=region, image_uri=image_uri,
        ecs_stack_name=ecs_stack_name, lambda_stack_name=lambda_stack_name, link_parameters=_parse_params(params),
        endpoint_url=endpoint_url, profile=profile,
    )  # fmt: skip
    _print_package(result)


def _print_package(result) -> None:
    click.echo(f"lambda zip:    {result.zip_path} ({result.zip_size} bytes, sha256 {result.zip_sha256})")
    dockerfile = result.image_dir / "container" / "Dockerfile"
    click.echo(f"worker image:  {result.image_dir}/ ({len(result.image_files)} files, sha256 {result.image_sha256})")
    click.echo(f"  build:       docker build -t s3sync-worker:{result.image_tag} -f {dockerfile} {result.image_dir}")
    for name, path in result.templates.items():
        click.echo(f"template:      {path} ({result.template_sizes[name]} bytes)")
    if result.upload is None:
        return
    up = result.upload
    click.echo(f"uploaded to    s3://{up.bucket}/{up.prefix} ({up.region}); CodeKey {result.code_key}")
    for url in up.template_urls.values():
        click.echo(f"template URL:  {url}")
    for link in up.links:
        click.echo(f"quick-create {link.template} (stack {link.stack_name}):")
        click.echo(f"  {link.url}")


@cli.command("deploy")
@click.option("--bucket", required=True, help="S3 bucket (in the stacks' region) for the code and the templates.")
@click.option("--prefix", default="", help="Key prefix in the bucket, e.g. s3sync/v1/.")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Directory to package into.")
@_options(*_AWS_OPTIONS, *_STACK_OPTIONS)
@click.option("--image-uri", default="", help="Worker image URI (ImageUri).")
@click.option("--source-bucket", help="Name of the source bucket the Lambda stack creates (SourceBucketName).")
@click.option("--email", help="Address for 'transfer complete' and failure notices (Email).")
@click.option("--dest-bucket", help="Existing destination bucket in China (DestBucket).")
@click.option("--dest-region", type=click.Choice(["cn-north-1", "cn-northwest-1"]), help="DestRegion.")
@click.option("--dest-prefix", help="Key prefix at the destination (DestPrefix).")
@click.option("--dest-access-key-id", envvar="S3SYNC_DEST_ACCESS_KEY_ID", show_envvar=True,
              help="China access key id (NoEcho; never printed). On an update, omit both keys to keep them.")
@click.option("--dest-secret-access-key", envvar="S3SYNC_DEST_SECRET_ACCESS_KEY", show_envvar=True,
              help="China secret access key (NoEcho; never printed). Prefer the environment variable, or give only "
                   "the key id and type the secret when asked (hidden): on the command line it shows in `ps` and "
                   "the shell's history.")
@click.option("--vpc-id", help="VPC of the workers (VpcId).")
@click.option("--subnet-id", help="Public subnet of that VPC (SubnetId).")
@click.option("--launch-type", type=click.Choice(["EC2", "FARGATE"]), help="LaunchType.")
@_PARAM_OPTION
@click.option("--yes", is_flag=True, help="Execute change sets that remove or replace resources without asking.")
@click.option("--no-execute", is_flag=True,
              help="Only show each stack's change set (then delete it); change nothing.")
@click.option("--poll-seconds", default=5.0, show_default=True, type=click.FloatRange(0.01, 60),
              help="How often to poll stack events.")
@click.option("--timeout-minutes", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="Give up waiting for a stack after this long.")
@click.pass_context
def deploy_command(ctx, bucket, prefix, out_dir, region, endpoint_url, profile, ecs_stack_name, lambda_stack_name,
                   image_uri, source_bucket, email, dest_bucket, dest_region, dest_prefix, dest_access_key_id,
                   dest_secret_access_key, vpc_id, subnet_id, launch_type, params, yes, no_execute, poll_seconds,
                   timeout_minutes) -> None:  # fmt: skip
    """Package, then create or update the ECS stack and then the Lambda stack through change sets: show the
    changes, ask before a removal or replacement, then show events and outputs."""
    from s3sync.deploy import do_deploy

    secret_option_check(ctx, "dest_secret_access_key", "--dest-secret-access-key", "S3SYNC_DEST_SECRET_ACCESS_KEY")
    parameters = _parse_params(params)
    if dest_access_key_id and not dest_secret_access_key:
        dest_secret_access_key = ask_secret("China secret access key")
    elif dest_secret_access_key and not dest_access_key_id:
        raise CliError("--dest-secret-access-key needs --dest-access-key-id (or S3SYNC_DEST_ACCESS_KEY_ID)",
                       usage=True)
    named = {
        "SourceBucketName": source_bucket, "Email": email, "DestBucket": dest_bucket, "DestRegion": dest_region,
        "DestPrefix": dest_prefix, "VpcId": vpc_id, "SubnetId": subnet_id, "LaunchType": launch_type,
    }  # fmt: skip
    parameters.update({k: v for k, v in named.items() if v is not None})
    run_guarded(
        do_deploy, out_dir, bucket=bucket, prefix=prefix, region=region, endpoint_url=endpoint_url, profile=profile,
        ecs_stack_name=ecs_stack_name, lambda_stack_name=lambda_stack_name, parameters=parameters,
        image_uri=image_uri, dest_access_key_id=dest_access_key_id or None,
        dest_secret_access_key=dest_secret_access_key or None, echo=click.echo, poll_s=poll_seconds,
        timeout_s=timeout_minutes * 60, execute=not no_execute, yes=yes, confirm=_confirm,
    )  # fmt: skip


def _confirm(question: str) -> bool:
    """Ask on the terminal; no answer (end of input) is a no."""
    try:
        return click.confirm(question, default=False)
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C at the question: interrupted (130), not a no
        click.echo()  # end the question's line
        return False


@cli.command("destroy")
@_options(*_AWS_OPTIONS, *_STACK_OPTIONS)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--poll-seconds", default=5.0, show_default=True, type=click.FloatRange(0.01, 60),
              help="How often to poll stack events.")
@click.option("--timeout-minutes", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="Give up waiting for a stack after this long.")
def destroy_command(region, endpoint_url, profile, ecs_stack_name, lambda_stack_name, yes, poll_seconds,
                    timeout_minutes) -> None:  # fmt: skip
    """Delete the Lambda stack, then the ECS stack (the source bucket and its objects are kept). Asks first, about
    the stacks that exist."""
    from s3sync.deploy import do_destroy

    run_guarded(
        do_destroy, region=region, endpoint_url=endpoint_url, profile=profile, ecs_stack_name=ecs_stack_name,
        lambda_stack_name=lambda_stack_name, echo=click.echo, poll_s=poll_seconds, timeout_s=timeout_minutes * 60,
        confirm=None if yes else _confirm,
    )  # fmt: skip
