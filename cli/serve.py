"""``send``: stream lines to a running service (``learn`` or ``predict`` with a ``tcp://``
source, ``storage.serving``) and print its replies. Needs no torch."""

from __future__ import annotations

import sys

import typer

from spela_stream.client import send_file
from spela_stream.display import plural
from spela_stream.sources.tcp import parse_url, url_of


def send(to: str, path: str, window: int) -> None:
    """Stream a file (or stdin) to a service; its replies go to stdout in order."""
    result = send_file(to, path, sys.stdout.buffer, window=window)
    typer.echo(
        f"sent {plural(result.sent, 'line')} to {url_of(parse_url(to))}: "
        f"{plural(result.answered, 'reply', 'replies')}, {plural(result.errors, 'error')}",
        err=True,
    )
