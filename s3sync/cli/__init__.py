"""The `s3sync` command line. Each click function only parses its options and calls a plain `do_<command>()`.

Commands live in one module per area (`templates`, `local`, ...), each registering on the `cli` group below.
Nothing in the library imports this package."""

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


# Each area registers its commands on `cli`; imported last so that they can import `cli` from here.
from s3sync.cli import deploy, local, templates  # noqa: E402,F401
from s3sync.cli import ops  # noqa: E402,F401
from s3sync.cli import image  # noqa: E402,F401
