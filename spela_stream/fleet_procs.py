"""Flower's own processes for a fleet on one machine: a SuperLink, SuperNodes, ``flwr run``.

Every process is real (the deployment engine, not the simulation), on 127.0.0.1, insecure (no
TLS: a fleet past one machine needs certificates, see Flower's docs), each in a process group
of its own that dies with the process that started it (``PR_SET_PDEATHSIG`` on Linux), so a
test or a killed device leaves none behind. flwr's commands are looked for beside this Python
(its venv's ``bin``), then on PATH. Nothing here imports flwr.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .fleet_wire import FleetError
from .stopping import StopGuard

INSTALL = "pip install 'spela-stream[fleet]'"
APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "spela-fleet"
version = "1.0.0"
description = "A fleet of spela-stream devices: FedAvg of SPELA models"
license = "MIT"
dependencies = []

[tool.flwr.app]
publisher = "spela-stream"

[tool.flwr.app.components]
serverapp = "spela_stream.flower:server_app"
clientapp = "spela_stream.flower:client_app"

[tool.flwr.app.config]
fleet-dir = ""
rounds = 10
min-devices = 1
wait = 60.0
round-timeout = 120.0
labels = "[]"
"""


def executable(name: str) -> str:
    """The path of one of flwr's commands; ``FleetError`` naming the extra when it is missing."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FleetError(f"{name} not found (is flwr installed? {INSTALL})")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on 127.0.0.1:``port`` (``FleetError`` past ``timeout``)."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc is not None and proc.poll() is not None:
            raise FleetError(f"a Flower process exited ({proc.returncode}) before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise FleetError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """One of flwr's commands, started in a group of its own; ``stop`` ends the group."""

    def __init__(
        self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.log = log
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self._env = {**os.environ, "PATH": path, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._fh: IO[bytes] | None = None

    def start(self) -> Process:
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self._env,
                                     preexec_fn=_die_with_parent)  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its group, SIGKILL after ``grace`` seconds."""
        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(grace)
                    if sig == signal.SIGTERM:
                        time.sleep(0.2)  # its children go with the group's SIGTERM
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def superlink(port: int, folder: Path) -> Process:
    """``flower-superlink --insecure`` on 127.0.0.1:``port`` (Fleet, Control and Runtime APIs
    over HTTP on the one port in flwr 1.42); its state in memory, the fleet's model in
    ``folder``."""
    folder = folder.resolve()  # FLWR_HOME marks its processes: absolute, this fleet's alone
    args = [executable("flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(port), "--disable-runtime-dependency-installation"]  # fmt: skip
    return Process(args, folder / "superlink.log", {"FLWR_HOME": str(folder / "flwr-home")})


def supernode(address: str, port: int, config: Mapping[str, Any], folder: Path) -> Process:
    """``flower-supernode --insecure`` connected to the SuperLink at ``address``; ``config``
    goes to its ``--node-config`` (what the ClientApp reads); its log and FLWR_HOME in
    ``folder`` (made absolute: the FLWR_HOME that marks its processes for ``end_strays``; a
    relative one, the same in every folder, would mark another fleet's device of that name)."""
    folder = folder.resolve()
    node_config = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
    args = [executable("flower-supernode"), "--insecure", "--superlink", address,
            "--port", str(port), "--node-config", node_config]  # fmt: skip
    (folder / "flwr-home").mkdir(parents=True, exist_ok=True)
    return Process(args, folder / "supernode.log", {"FLWR_HOME": str(folder / "flwr-home")})


def prepare_app(folder: Path, address: str) -> tuple[Path, dict[str, str]]:
    """The Flower App folder (a pyproject.toml naming spela_stream.flower's apps) and the
    environment for ``flwr``: a FLWR_HOME whose connection ``fleet`` is ``address``."""
    folder = folder.resolve()
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(APP_TOML, encoding="utf-8")
    home = folder / "flwr-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fleet"\n\n[superlink.fleet]\naddress = "{address}"\n'
        "insecure = true\n",
        encoding="utf-8",
    )
    return app, {"FLWR_HOME": str(home)}


def submit(folder: Path, address: str, run_config: Mapping[str, Any], timeout: float = 120) -> str:
    """``flwr run`` the fleet's app on the SuperLink at ``address``; the run's id."""
    app, env = prepare_app(folder, address)
    pairs = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
    args = [executable("flwr"), "run", str(app), "fleet", "--format", "json", "--run-config", pairs]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": path, **env}, cwd=folder)  # fmt: skip
    try:
        answer = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        answer = {}
    if not answer.get("success"):
        why = answer.get("error-message") or (done.stderr or done.stdout).strip()[-500:]
        raise FleetError(f"flwr run failed on {address}: {why}")
    return str(answer["run-id"])


def _marked(home: Path) -> list[int]:
    """The live processes whose environment names ``home`` (made absolute) as their FLWR_HOME."""
    mark = f"FLWR_HOME={home.resolve()}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def server_apps(home: Path) -> list[int]:
    """The ServerApp processes (``flwr-serverapp``) running with FLWR_HOME ``home``."""
    found = []
    for pid in _marked(home):
        try:
            if b"flwr-serverapp" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def end_strays(home: Path, grace: float = 10.0) -> list[int]:
    """End every process whose environment names ``home`` as its FLWR_HOME (what a SuperLink
    or SuperNode that was killed leaves behind: SuperExec, ServerApp, ClientApp, each detached
    in a session of its own): SIGTERM, then, for those still there after ``grace`` seconds, a
    freeze and SIGKILL. Frozen (SIGSTOP) until no new one appears, none can start another while
    the rest are killed, so none is missed. Their ids."""
    ended = _marked(home)
    for pid in ended:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _marked(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    frozen: set[int] = set()
    while fresh := set(_marked(home)) - frozen:  # a fork seen mid-sweep is frozen next pass
        for pid in fresh:
            _signal(pid, signal.SIGSTOP)
        frozen |= fresh
        time.sleep(0.05)
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _marked(home) and time.monotonic() < deadline:  # until the kernel has them gone
        time.sleep(0.05)
    return sorted(set(ended) | frozen)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class FleetServer:
    """A fleet's server: a SuperLink and the fleet's run on it, watched. If the SuperLink goes
    (killed, crashed), it is started again on the same port and the run submitted again; if the
    run's ServerApp goes and the SuperLink stays, the run is submitted again (``restarts``
    times each, then ``FleetError``). The new ServerApp goes on from the merged model the last
    one wrote (``fleet.npz``); devices keep learning alone meanwhile. ``rows`` yields the
    ServerApp's ``rounds.jsonl`` lines as they come."""

    def __init__(self, folder: Path, run_config: Mapping[str, Any], port: int = 0,
                 restarts: int = 5, log: Any = None) -> None:  # fmt: skip
        self.folder = folder = folder.resolve()
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.run_config = {**run_config, "fleet-dir": str(folder.resolve())}
        self.restarts = restarts
        self.started = 0
        self.resubmitted = 0  # runs submitted again after their ServerApp went
        self._app_seen = False
        self.link: Process | None = None
        self._log = log or (lambda message: None)

    def start(self) -> None:
        """End what a killed server left on this folder (its SuperLink, SuperExec, ServerApp),
        start the SuperLink, wait until it listens, submit the run."""
        (self.folder / "flwr-home").mkdir(parents=True, exist_ok=True)
        if left := self.strays():
            self._log(f"ended {len(left)} Flower processes a last server left in {self.folder}")
        self.link = superlink(self.port, self.folder).start()
        (self.folder / "superlink.pid").write_text(str(self.link.pid))
        wait_port(self.port, 60, self.link.proc)
        self.started += 1
        self._submit()

    def _submit(self) -> None:
        assert self.link is not None
        self._app_seen = False
        run_id = submit(self.folder, self.address, self.run_config)
        self._log(f"superlink on {self.address} (pid {self.link.pid}), run {run_id}")

    def rows(self, poll: float = 0.5) -> Any:
        """The rounds' JSON rows as the ServerApp writes them, until its ``done`` row."""
        path = self.folder / "rounds.jsonl"
        seen = len(path.read_text().splitlines()) if path.exists() else 0
        while True:
            app = bool(server_apps(self.folder / "flwr-home"))  # before the rows: its last
            self._app_seen = self._app_seen or app  # row is written before it exits
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines[seen:]:
                row = json.loads(line)
                yield row
                if row.get("event") == "done":
                    return
                if row.get("event") == "failed":
                    raise FleetError(f"the fleet's ServerApp failed: {row['error']} (see "
                                     f"{self.folder / 'superlink.log'})")  # fmt: skip
            seen = len(lines)
            if self.link is not None and not self.link.alive():
                if self.started > self.restarts:
                    raise FleetError(f"the superlink stopped {self.started} times; giving up")
                self._log("the superlink went; starting it again (the fleet goes on from "
                          f"{self.folder / 'fleet.npz'})")  # fmt: skip
                self.link.stop()
                self.start()  # which ends the old run's ServerApp: it outlives its SuperLink
            elif self._app_seen and not app:  # the ServerApp died, its SuperLink did not
                self._app_gone()
            time.sleep(poll)

    def _app_gone(self) -> None:
        """The run's ServerApp went without its ``done`` row (killed, out of memory): submit the
        run again, which goes on from the saved model (at most ``restarts`` times)."""
        if self.resubmitted >= self.restarts:
            raise FleetError(
                f"the fleet's ServerApp died and its --restarts ({self.restarts}) are used up "
                f"(see {self.folder / 'superlink.log'}); run `spela-stream fleet server` again "
                f"with --dir {self.folder}: it goes on from {self.folder / 'fleet.npz'}"
            )
        self.resubmitted += 1
        self._log("the ServerApp went; submitting the run again (the fleet goes on from "
                  f"{self.folder / 'fleet.npz'})")  # fmt: skip
        self._submit()

    def strays(self) -> list[int]:
        """End the processes this fleet's SuperLink left (detached from it: its SuperExec and
        ServerApp); their ids."""
        return end_strays(self.folder / "flwr-home")

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        self.strays()


def serve_fleet(
    folder: Path, *, rounds: int = 10, port: int = 0, min_devices: int = 1, wait: float = 60.0,
    round_timeout: float = 120.0, labels: Sequence[Any] = (), restarts: int = 5,
    log: Callable[[str], None], row: Callable[[dict[str, Any]], None],
) -> None:  # fmt: skip
    """Run a fleet's server (``FleetServer``) on ``folder`` until its last round: ``log`` hears
    the news and, as a JSON line, where its SuperLink listens; ``row`` gets each round's row.
    A signal (SIGTERM, Ctrl-C) ends it, Flower's processes with it."""
    config = {"rounds": rounds, "min-devices": min_devices, "wait": wait,
              "round-timeout": round_timeout, "labels": json.dumps(list(labels))}  # fmt: skip
    fleet = FleetServer(folder, config, port, restarts, log=log)
    with StopGuard() as guard:  # SIGTERM, Ctrl-C: the finally ends Flower's processes
        try:
            fleet.start()
            log(json.dumps({"event": "listening", "superlink": fleet.address}))
            for each in fleet.rows():
                row(each)
        finally:
            with guard.busy():  # a second signal does not cut the ending short
                fleet.stop()


class Keeper:
    """A process started again whenever it exits, until the ``with`` block ends: a SuperNode
    leaves when a restarted SuperLink no longer knows it, and its device must stay in the fleet."""

    def __init__(self, make: Callable[[], Process], log: Callable[[str], None],
                 poll: float = 1.0) -> None:  # fmt: skip
        self.make = make
        self.log = log
        self.poll = poll
        self.restarts = 0
        self.proc: Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="keeper", daemon=True)

    def __enter__(self) -> Keeper:
        self.proc = self.make().start()
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            if self.proc is not None and not self.proc.alive():
                self.proc.stop()
                self.restarts += 1
                self.log(f"the supernode exited ({self.restarts}); starting it again")
                self.proc = self.make().start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.proc is not None:
            self.proc.stop()
