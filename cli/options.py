"""The error mapping of the command line (the options it parses are ``spela_stream.config``'s
dataclasses): light to import, so that ``--help``, ``runs`` and ``checkpoints`` answer without
loading torch.

Errors: a ``SpelaError`` prints ``Error: ...`` and exits 1; a ``ConfigError`` from option values
exits 2; ``Interrupted`` (SIGINT/SIGTERM) exits 128 + the signal, after learn's checkpoint.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

import typer

from spela_stream.errors import ConfigError, SpelaError
from spela_stream.stopping import Interrupted

from .output import flagged

P = ParamSpec("P")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def stderr(message: str) -> None:
    """A line on stderr even with --quiet (where a service listens, a fleet's news)."""
    typer.echo(message, err=True)


def guarded(command: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a command body, mapping the library's errors to messages and exit codes."""
    try:
        command(*args, **kwargs)
    except ConfigError as exc:
        raise fail(f"Invalid value: {flagged(str(exc))}", 2) from None
    except SpelaError as exc:
        raise fail(flagged(str(exc))) from None
    except Interrupted as stop:  # nothing to save here (learn saves before it gets this far)
        raise typer.Exit(stop.exit_code) from None
    except BrokenPipeError:  # the reader of our stdout went away (`| head`): a normal end
        try:  # point stdout at /dev/null so the interpreter's final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        raise typer.Exit(0) from None
