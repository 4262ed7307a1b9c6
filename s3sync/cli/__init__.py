"""The `s3sync` command line. Each click function only parses its options and calls a plain `do_<command>()`.

Commands live in one module per area (`templates`, `local`, ...), each registering on the `cli` group below.
Nothing in the library imports this package.

Exit status, the same for every command (and printed at the end of every `--help`): 0 done, 1 an operation or a
check failed, 2 a usage error (bad or conflicting options, caught before anything happens), 130 interrupted
(Ctrl-C). User mistakes are `CliError` (one line, `Error: ...`, never a traceback); `usage=True` makes it exit 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from s3sync.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS_EPILOG = (
    "Exit status: 0 done; 1 an operation or a check failed; 2 usage error (bad options, nothing was done); "
    "130 interrupted (Ctrl-C)."
)


class CliError(click.ClickException):
    """Printed as one line (`Error: ...`), never a traceback; exit status 1, or 2 for a usage error (options that
    cannot work together, a malformed value), which is caught before anything happens."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        # click reads exit_code from the instance; its stubs declare it ClassVar
        self.exit_code = EXIT_USAGE if usage else EXIT_FAILED  # type: ignore[misc]


class AliasedOption(click.Option):
    """An option that also answers to old spellings (`aliases`), which `--help` does not show."""

    def __init__(self, param_decls: Any = None, aliases: tuple[str, ...] = (), **attrs: Any) -> None:
        super().__init__([*param_decls, *aliases], **attrs)
        self.aliases = set(aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*decls: str, aliases: tuple[str, ...] = (), **attrs: Any) -> Any:
    """click.option, with hidden old spellings: `option("--ecs-stack", "ecs_stack", aliases=("--stack",))`."""
    if aliases:
        return click.option(*decls, cls=AliasedOption, aliases=aliases, **attrs)
    return click.option(*decls, **attrs)


class Command(click.Command):
    """Every command's help ends with the exit statuses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["epilog"] = "\n\n".join(e for e in (kwargs.get("epilog"), EXIT_STATUS_EPILOG) if e)
        super().__init__(*args, **kwargs)


class Group(click.Group):
    """The `s3sync` group: its commands are `Command`s; Ctrl-C exits 130 (click's own handling prints "Aborted!"
    and exits 1), usage errors 2, failures 1."""

    command_class = Command
    group_class = type  # subgroups (`image`) are Groups too

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _interrupted()
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            _interrupted()
        except UserError as exc:  # a do_* function raised outside run_guarded
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _interrupted() -> None:
    click.echo("interrupted", err=True)
    sys.exit(EXIT_INTERRUPTED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_STATUS_EPILOG)
@click.version_option(package_name="s3sync")
def cli() -> None:
    """Move objects from an S3 bucket in an AWS global region to one in an AWS China region."""


def main() -> None:
    cli()


def run_guarded(fn, *args, **kwargs):
    """Call a do_* function, turning user mistakes into a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        raise CliError(str(exc)) from None


def warn(message: str) -> None:
    """A warning line on stderr (stdout stays the command's output)."""
    click.echo(f"warning: {message}", err=True)


def secret_option_check(ctx: click.Context, name: str, option_name: str, env_var: str) -> None:
    """Warn when a secret came on the command line: it is then in `ps` and the shell's history."""
    from click.core import ParameterSource

    if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE and ctx.params.get(name):
        warn(f"{option_name} on the command line is visible to other users (ps) and kept in your shell's history; "
             f"set {env_var} instead, or give only the access key id and type the secret when asked")


def ask_secret(what: str) -> str:
    """A hidden prompt (nothing echoed); end of input is a one-line error."""
    try:
        return click.prompt(what, hide_input=True, err=True)
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise CliError(f"no {what} given (type it when asked, or set it in the environment)") from None


# Each area registers its commands on `cli`; imported last so that they can import `cli` from here.
from s3sync.cli import deploy, image, local, ops, templates  # noqa: E402,F401
