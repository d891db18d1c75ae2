"""A run served over a socket or MQTT: ``learn`` and ``predict`` with a ``tcp://HOST:PORT`` or
``mqtt://HOST:PORT/TOPIC`` source, on ``spela_stream.service``.

``serve_learning`` drives an opened ``Run`` (the same checkpoints, resume and exits as a run on
a file); ``serve_predictions`` answers with a saved model and keeps nothing. Messages name the
options by their parameter names in backticks (a command line shows its flags instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from spela_stream.config import Input, LearnOptions, PredictOptions, ServeOptions
from spela_stream.display import Progress
from spela_stream.errors import ConfigError
from spela_stream.prequential import CheckpointPolicy, Report
from spela_stream.service import MQTT, Service, layout_of, listen
from spela_stream.sources.endpoint import Endpoint
from spela_stream.sources.layout import Layout
from spela_stream.sources.tcp import LineServer
from spela_stream.stopping import StopGuard

from .run import Run, finish
from .session import load_loop
from .store import CheckpointStore, pick_run

__all__ = ["serve_learning", "serve_predictions", "service_layout"]

Log = Callable[[str], None]


def service_layout(input_: Input, serve: ServeOptions) -> Layout | None:
    """The layout ``input_.features`` and ``serve.columns`` give a service (``layout_of``), a
    contradiction naming them as `n_features` and `columns`."""
    try:
        return layout_of(input_.features, serve.columns, input_.label_column)
    except ConfigError as exc:  # the layout names its fields; the options are these
        message = str(exc).replace("features=", "`n_features` ").replace("columns", "`columns`")
        raise ConfigError(message) from None


def _listen(input_: Input, serve: ServeOptions, log: Log) -> Endpoint:
    """The endpoint ``input_.source`` names, open, announced on ``log``."""
    return listen(input_.source, fmt=input_.fmt, host=serve.host, max_line=serve.max_line,
                  publish=serve.publish, log=log)  # fmt: skip


def serve_learning(
    opts: LearnOptions,
    run: Run,
    guard: StopGuard,
    progress: Progress,
    summary: Callable[[str | None], None],
    log: Log,
) -> None:
    """Serve test-then-train on ``run.source`` until a shutdown line, ``opts.limit`` or a
    signal (``finish``); ``summary(why it stopped)`` after the final checkpoint. ``log``
    hears where it listens (even when ``progress`` is quiet)."""
    if opts.skip:
        kind = "mqtt://" if run.source.startswith(MQTT) else "tcp://"
        raise ConfigError(f"`skip` does not apply to {kind} (a service's clients send new lines)")
    layout = service_layout(opts.input, opts.serve)
    server = _listen(Input(run.source, opts.input.fmt), opts.serve, log)
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

        def summarise(stopped: str | None) -> None:
            service.close(run.checkpoint)  # a shutdown line hears the final checkpoint
            why = "a shutdown line" if service.shutdown_requested else None
            summary(stopped or why)

        finish(run, reports, progress, guard, summarise)
    finally:
        server.close()


def serve_predictions(opts: PredictOptions, log: Log) -> None:
    """Answer each line with a prediction of the saved model until a signal; nothing is learned
    or saved. Over ``mqtt://`` the answers need a topic, ``opts.serve.publish``."""
    if opts.input.source.startswith(MQTT) and opts.serve.publish is None:
        raise ConfigError("predict over mqtt:// answers on a topic: give `publish` TOPIC")
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False, readonly=True) as store:
        loop, _ = load_loop(store, pick_run(store, opts.run), opts.checkpoint, learn=False)
    loop.model.threads = opts.threads
    layout = service_layout(opts.input, opts.serve)
    server = _listen(opts.input, opts.serve, log)
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
