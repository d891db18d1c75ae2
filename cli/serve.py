"""``learn`` and ``predict`` with ``--source tcp://HOST:PORT`` (a socket service) or
``--source mqtt://HOST:PORT/TOPIC`` (an MQTT subscription, answered on ``--publish TOPIC``),
and ``send``.

The service is ``spela_stream.service``; this is its glue: the same runs, checkpoints, resume
and exit codes as ``learn`` on a file (``commands.learn`` hands over once the run is known).
paho-mqtt is loaded only for an ``mqtt://`` source (``spela_stream.sources.mqtt``).
``send`` needs no torch, so this module loads the model only inside ``learn`` and ``predict``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from spela_stream.client import send_file
from spela_stream.config import Input, LearnOptions, PredictOptions, ServeOptions
from spela_stream.display import plural
from spela_stream.errors import ConfigError
from spela_stream.sources.tcp import LineServer, parse_url, url_of
from spela_stream.stopping import StopGuard

if TYPE_CHECKING:
    from collections.abc import Iterator

    from spela_stream.prequential import CheckpointPolicy, Report
    from spela_stream.sources.endpoint import Endpoint
    from spela_stream.sources.layout import Layout
    from storage.run import Run

    from .output import Progress


def _layout(input_: Input, serve: ServeOptions) -> Layout | None:
    """The layout ``--features`` and ``--columns`` give a service (``service.layout_of``)."""
    from spela_stream.service import layout_of

    try:
        return layout_of(input_.features, serve.columns, input_.label_column)
    except ConfigError as exc:  # the library names its parameters; the flags are these
        message = str(exc).replace("features=", "--features ").replace("columns", "--columns")
        raise ConfigError(message) from None


def _listen(input_: Input, serve: ServeOptions) -> Endpoint:
    """The endpoint ``input_.source`` names, open, announced on stderr even with --quiet."""
    from spela_stream.service import listen

    return listen(input_.source, fmt=input_.fmt, host=serve.host, max_line=serve.max_line,
                  publish=serve.publish, log=lambda m: typer.echo(m, err=True))  # fmt: skip


def learn(opts: LearnOptions, run: Run, guard: StopGuard, progress: Progress) -> None:
    """Serve test-then-train on a socket until a shutdown line, ``--limit`` or a signal."""
    from spela_stream.service import MQTT, Service
    from storage.run import finish

    from .learning import summary_line

    if opts.skip:
        kind = "mqtt://" if run.source.startswith(MQTT) else "tcp://"
        raise ConfigError(f"--skip does not apply to {kind} (a service's clients send new lines)")
    layout = _layout(opts.input, opts.serve)
    server = _listen(Input(run.source, opts.input.fmt), opts.serve)
    try:
        if isinstance(server, LineServer):
            run.source = server.url  # where it listens, with the port it got for port 0
        service = Service(
            run.loop, server, pending=opts.serve.pending, label_column=opts.input.label_column,
            header=opts.input.header, on_bad=run.rejects, layout=layout,
        )  # fmt: skip

        def reports(policy: CheckpointPolicy, g: StopGuard) -> Iterator[Report]:
            for report in service.run(every=opts.every, doubling=True, limit=opts.limit,
                                      checkpoint=policy, guard=g):  # fmt: skip
                progress.tick(run.loop)
                yield report

        def summary(stopped: str | None) -> None:
            service.close(run.checkpoint)  # a shutdown line hears the final checkpoint
            why = "a shutdown line" if service.shutdown_requested else None
            summary_line(run, opts, progress, stopped or why)

        finish(run, reports, progress, guard, summary)
    finally:
        server.close()


def predict(opts: PredictOptions) -> None:
    """Answer each line with a prediction of the saved model; nothing is learned or saved."""
    import torch

    from spela_stream.service import MQTT, Service
    from storage import CheckpointStore
    from storage.session import load_loop
    from storage.store import pick_run

    if opts.input.source.startswith(MQTT) and opts.serve.publish is None:
        raise ConfigError("predict over mqtt:// answers on a topic: give --publish TOPIC")
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False, readonly=True) as store:
        loop, _ = load_loop(store, pick_run(store, opts.run), opts.checkpoint, learn=False)
    loop.model.threads = opts.threads
    layout = _layout(opts.input, opts.serve)
    server = _listen(opts.input, opts.serve)
    try:
        service = Service(loop, server, learn=False, label_column=opts.input.label_column,
                          header=opts.input.header, layout=layout)  # fmt: skip
    except BaseException:
        server.close()
        raise
    with StopGuard() as guard:
        try:
            for _ in service.run(every=1 << 62, guard=guard):
                pass
        finally:
            service.close()


def send(to: str, path: str, window: int) -> None:
    """Stream a file (or stdin) to a service; its replies go to stdout in order."""
    result = send_file(to, path, sys.stdout.buffer, window=window)
    typer.echo(
        f"sent {plural(result.sent, 'line')} to {url_of(parse_url(to))}: "
        f"{plural(result.answered, 'reply', 'replies')}, {plural(result.errors, 'error')}",
        err=True,
    )
