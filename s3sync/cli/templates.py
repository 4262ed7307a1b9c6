"""Template commands: render, links, lint (plain functions in s3sync.render)."""

from __future__ import annotations

import click

from s3sync.cli import CliError, cli, option, run_guarded
from s3sync.contract import DEFAULT_ECS_STACK, DEFAULT_LAMBDA_STACK


@cli.command("render")
@click.option("--out", "out_dir", default="templates", show_default=True, type=click.Path(file_okay=False),
              help="Directory to write ecs.<format> and lambda.<format> into.")
@click.option("--format", "fmt", default="yaml", show_default=True, type=click.Choice(["yaml", "json"]),
              help="Template format.")
def render_command(out_dir: str, fmt: str) -> None:
    """Render the two CloudFormation templates (deterministic: same code, same bytes)."""
    from s3sync.render import do_render

    for path in run_guarded(do_render, out_dir, fmt):
        click.echo(f"wrote {path}")


@cli.command("links")
@click.option("--template-base-url", required=True,
              help="Folder holding the uploaded ecs.yaml and lambda.yaml: s3://<bucket>/<prefix>/ or its https URL "
                   "(amazonaws.com.cn in China).")
@click.option("--region", help="AWS region to deploy in, global or China (default: the one the template URL names, "
              "else AWS_REGION, AWS_DEFAULT_REGION or the profile's, else us-east-1; the one used is printed).")
@click.option("--profile", help="AWS profile whose region to use (nothing is called).")
@option("--ecs-stack", "ecs_stack_name", aliases=("--ecs-stack-name", "--stack"), default=DEFAULT_ECS_STACK,
        show_default=True, help="Name of the ECS stack.")
@option("--lambda-stack", "lambda_stack_name", aliases=("--lambda-stack-name",), default=DEFAULT_LAMBDA_STACK,
        show_default=True, help="Name of the Lambda stack.")
def links_command(template_base_url: str, region: str | None, profile: str | None, ecs_stack_name: str,
                  lambda_stack_name: str) -> None:  # fmt: skip
    """Print console quick-create links for both stacks (open the ECS one first)."""
    from s3sync.render import do_links, links_region

    chosen, source = run_guarded(links_region, template_base_url, region, profile)
    click.echo(f"region {chosen} (from {source})")
    for link in run_guarded(do_links, template_base_url, chosen, ecs_stack_name, lambda_stack_name):
        click.echo(f"{link.template} (stack {link.stack_name}):")
        click.echo(f"  {link.url}")


@cli.command("lint")
@click.argument("directory", default="templates", type=click.Path(file_okay=False))
@click.option("--region", "regions", multiple=True, default=["us-east-1"], show_default=True,
              help="Region to check resource availability in (repeatable).")
def lint_command(directory: str, regions: tuple[str, ...]) -> None:
    """Run cfn-lint (in-process) on the rendered templates in DIRECTORY; non-zero exit on any finding."""
    from s3sync.render import do_lint

    findings = run_guarded(do_lint, directory, regions)
    for line in findings:
        click.echo(line)
    if findings:
        raise CliError(f"cfn-lint: {len(findings)} finding(s)")
    click.echo("cfn-lint: no findings")


