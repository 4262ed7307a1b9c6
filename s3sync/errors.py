"""User-facing errors: one base class, turned into a one-line message and a non-zero exit at the CLI edge."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for (bad option, missing file, unreachable endpoint)."""
