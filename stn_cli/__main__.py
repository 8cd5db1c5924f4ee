"""`python -m stn_cli`: the same as the `stn` command."""

from .cli import entry

entry()
