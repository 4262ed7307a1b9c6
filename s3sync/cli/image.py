"""The worker image with the local Docker engine: image build, image base (s3sync.image)."""

from __future__ import annotations

import click

from s3sync.cli import cli, run_guarded


@cli.group("image")
def image_group() -> None:
    """Build the worker image with the local Docker engine."""


@image_group.command("build")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Where `s3sync package` writes the build context (and the rest of the package).")
@click.option("--base-image", metavar="IMAGE", help="Base image (the Dockerfile's BASE_IMAGE); default: the official "
              "Python image on ECR Public. Where no registry is reachable: `s3sync image base`, then "
              "--base-image s3sync-base:bookworm.")
@click.option("--tag", metavar="NAME:TAG", help="Image tag; default s3sync-worker:<context sha256[:12]>.")
def build_command(out_dir: str, base_image: str | None, tag: str | None) -> None:
    """Package the build context (code and pinned wheels), build the image, print its id, size and tag."""
    from s3sync.image import build_image
    from s3sync.package import do_package

    packaged = run_guarded(do_package, out_dir)
    result = run_guarded(build_image, packaged.image_dir, tag=tag, base_image=base_image)
    click.echo(f"image:  {result.image_id}")
    click.echo(f"tag:    {result.tag}")
    click.echo(f"size:   {result.size / 1e6:.1f} MB")
    click.echo(f"build:  {result.seconds:.1f} s (context {packaged.image_dir})")


@image_group.command("base")
@click.option("--tag", default="s3sync-base:bookworm", show_default=True, help="Tag of the base image.")
@click.option("--force", is_flag=True, help="Build again even if the tag exists.")
@click.option("--mirror", metavar="URL", help="Debian mirror for debootstrap (default: its own).")
def base_command(tag: str, force: bool, mirror: str | None) -> None:
    """A local base image where no registry is reachable: Debian bookworm minbase with python3 (debootstrap, then
    docker import; needs root). Reused by tag."""
    from s3sync.image import build_local_base

    result = run_guarded(build_local_base, tag, force=force, mirror=mirror)
    click.echo(result.describe())
