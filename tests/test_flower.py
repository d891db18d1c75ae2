"""The fleet on real Flower processes (flwr's deployment engine on 127.0.0.1): ``spela-stream
fleet server`` (a SuperLink and the ServerApp's rounds) and ``spela-stream fleet device`` (a
learner and its SuperNode), each a process of its own, stopped at the end of every test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

REQUIRED = os.environ.get("SPELA_REQUIRE_FLWR") == "1"  # CI: a missing flwr fails, never skips
if not REQUIRED:
    pytest.importorskip("flwr", reason="flwr missing: pip install -e '.[fleet]'")

from spela_stream.datasets import load_mnist  # noqa: E402
from spela_stream.fleet_wire import unpack  # noqa: E402
from spela_stream.model import SpelaMLP  # noqa: E402
from storage import CheckpointStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = ",".join(str(k) for k in range(10))
HIDDEN = "32,32"


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    with path.open("w") as fh:
        for row, label in zip(X, y, strict=True):
            fh.write(",".join(f"{v:g}" for v in row) + f",{label}\n")


class Fleet:
    """The processes of one test, each in its own group; ``close`` ends every one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._logs: list[IO[str]] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "FLWR_HOME": str(folder / "home")}

    def start(self, name: str, *args: str) -> subprocess.Popen[str]:
        err = (self.folder / f"{name}.err").open("w")
        self._logs.append(err)
        proc = subprocess.Popen([sys.executable, "-m", "cli.app", "fleet", *args],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=self.env,
                                cwd=self.folder, start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        return proc

    def server(self, port: int, rounds: int, *extra: str) -> subprocess.Popen[str]:
        return self.start("server", "server", "--dir", "fleet", "--port", str(port),
                          "--rounds", str(rounds), "--labels", LABELS, *extra)  # fmt: skip

    def device(self, name: str, port: int, source: Path, per_round: int,
               *extra: str) -> subprocess.Popen[str]:  # fmt: skip
        return self.start(name, "device", "--superlink", f"127.0.0.1:{port}", "--name", name,
                          "--source", str(source), "--db", f"{name}.db", "--hidden", HIDDEN,
                          "--labels", LABELS, "--per-round", str(per_round),
                          "--linger", "120", "--every", "50", *extra)  # fmt: skip

    def rows(self, until: int, timeout: float = 240) -> Iterator[dict[str, Any]]:
        """The server's stdout rows, up to and including round ``until`` (or its ``done``)."""
        out = self.procs["server"].stdout
        assert out is not None
        deadline = time.monotonic() + timeout
        for line in out:
            row = json.loads(line)
            yield row
            if row.get("round") == until and "event" not in row or row.get("event") == "done":
                return
            assert time.monotonic() < deadline, f"no round {until} in {timeout} s"

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def left(self) -> list[int]:
        """Processes still running with this test's FLWR_HOME folder in their environment."""
        mark = str(self.folder).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if mark in (entry / "environ").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for fh in self._logs:
            fh.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
        deadline = time.monotonic() + 30
        while f.left() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: _cmdline(pid) for pid in f.left()}
        assert left == {}, "a Flower process outlived the test"


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


def free_port() -> int:
    from spela_stream.fleet_procs import free_port as free

    return free()


def fleet_model(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return unpack((folder / "fleet" / "fleet.npz").read_bytes())


def last_state(db: Path) -> dict[str, Any]:
    with CheckpointStore(db, create=False, readonly=True) as store:
        (run,) = store.runs()
        return dict(store.load(run.name).state)


def test_two_devices_learn_rounds_through_flower(fleet: Fleet, tmp_path: Path) -> None:
    """A SuperLink, two SuperNodes, two rounds of 100 samples a device: each round merges both
    (200 samples), the fleet's input statistics count every sample once (pooled exactly
    across processes), the label order is the declared one, and each device ends on the
    fleet's last merge (its stream ended with the last round) and checkpointed it."""
    X, y = load_mnist(400)
    for d in range(2):
        write_csv(tmp_path / f"d{d}.csv", X[d::2], y[d::2])
    port = free_port()
    fleet.server(port, 2, "--min-devices", "2", "--round-timeout", "90")
    for d in range(2):
        fleet.device(f"d{d}", port, tmp_path / f"d{d}.csv", per_round=100)
    every = list(fleet.rows(until=-1))  # to the ``done`` row
    rows = [r for r in every if "event" not in r]
    assert [r["round"] for r in rows] == [1, 2]
    assert every[-1] == {"event": "done", "round": 2, "final_to": 2}, every
    assert [(r["answered"], r["devices"], r["learned"]) for r in rows] == [(2, 2, 200)] * 2
    assert rows[0]["bytes_down"] == 0 and rows[1]["bytes_down"] == rows[1]["bytes_up"] > 0
    arrays, meta = fleet_model(tmp_path)
    assert meta["round"] == 2 and meta["labels"] == list(range(10))
    assert int(arrays["scaler.count"]) == 400
    for d in range(2):
        out, _ = fleet.procs[f"d{d}"].communicate(timeout=120)
        report = json.loads(out.splitlines()[-1])
        assert report["device"] == f"d{d}" and report["samples"] == 200
        assert report["rounds"] == 3  # two rounds and the final merge
        state = last_state(tmp_path / f"d{d}.db")
        assert state["labels"] == list(range(10))
        for key in ("layers.0.weight", "layers.1.bias", "scaler.mean"):
            np.testing.assert_allclose(state[key], arrays[key], rtol=1e-5, atol=1e-6)
        assert SpelaMLP.from_state(state).predict_one(X[0]) is not None


def test_the_fleet_goes_on_past_a_late_device_a_dead_one_and_a_superlink_restart(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Two devices start; a third joins after round 1; once all three are in a round, one is
    killed (SIGKILL, learner and SuperNode) while the next round is out, and comes back from
    its checkpoint; then the SuperLink is killed and ``fleet server`` starts it again, and the
    ServerApp goes on from the model it saved. Every round is run, the fleet's input statistics
    still count each merged sample once, and the devices that lived end with their reports."""
    X, y = load_mnist(900)
    for d in range(3):
        write_csv(tmp_path / f"d{d}.csv", X[d::3], y[d::3])
    port = free_port()
    fleet.server(port, 8, "--min-devices", "2", "--round-timeout", "40", "--wait", "90")
    for d in range(2):
        fleet.device(f"d{d}", port, tmp_path / f"d{d}.csv", per_round=40)
    rows: list[dict[str, Any]] = []
    stage = "late"
    for row in fleet.rows(until=8, timeout=900):
        rows.append(row)
        if "event" in row:
            continue
        if stage == "late":  # after round 1: the third device joins
            fleet.device("d2", port, tmp_path / "d2.csv", per_round=40)
            stage = "all"
        elif stage == "all" and row["answered"] == 3:  # all three in: d1 dies
            fleet.kill("d1")
            stage = "dead"
        elif stage == "dead":  # d1 comes back from its checkpoint; the SuperLink is killed
            assert row["answered"] == 2, row
            fleet.device("d1", port, tmp_path / "d1.csv", per_round=40)
            os.kill(int((tmp_path / "fleet" / "superlink.pid").read_text()), signal.SIGKILL)
            stage = "restarted"
    rounds = [r for r in rows if "event" not in r]
    assert [r["round"] for r in rounds] == list(range(1, 9)), rows
    assert stage == "restarted", rows
    assert any(r.get("event") == "resumed" for r in rows), rows
    arrays, meta = fleet_model(tmp_path)
    assert meta["round"] == 8 and sorted(meta["contributions"]) == ["d0", "d1", "d2"]
    assert int(arrays["scaler.count"]) == sum(r.get("learned", 0) for r in rounds)
    for name in ("d0", "d2"):
        out, _ = fleet.procs[name].communicate(timeout=180)
        assert json.loads(out.splitlines()[-1])["samples"] == 300
    with CheckpointStore(tmp_path / "d1.db", create=False, readonly=True) as store:
        assert store.checkpoints("d1"), "the killed device had checkpointed"


def test_the_fleet_goes_on_past_its_serverapp_killed(fleet: Fleet, tmp_path: Path) -> None:
    """The ServerApp (not the SuperLink) is killed (SIGKILL) after round 1, while round 2 is
    out: ``fleet server`` submits the run again, the new ServerApp goes on from the model the
    last one saved, every round is run, and what the devices learned in the lost round is in
    the next one (the fleet's input statistics count each sample that went in once)."""
    from spela_stream.fleet_procs import server_apps

    X, y = load_mnist(400)
    for d in range(2):
        write_csv(tmp_path / f"d{d}.csv", X[d::2], y[d::2])
    port = free_port()
    fleet.server(port, 4, "--min-devices", "2", "--round-timeout", "40", "--wait", "90")
    for d in range(2):
        fleet.device(f"d{d}", port, tmp_path / f"d{d}.csv", per_round=40)
    rows: list[dict[str, Any]] = []
    killed: list[int] = []
    for row in fleet.rows(until=4, timeout=600):
        rows.append(row)
        if not killed and row.get("round") == 1 and "event" not in row:
            killed = server_apps(tmp_path / "fleet" / "flwr-home")
            assert len(killed) == 1, killed
            os.kill(killed[0], signal.SIGKILL)
    rounds = [r for r in rows if "event" not in r]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4], rows
    assert any(r.get("event") == "resumed" for r in rows), rows
    arrays, meta = fleet_model(tmp_path)
    assert meta["round"] == 4
    assert int(arrays["scaler.count"]) == sum(r.get("learned", 0) for r in rounds)
    for d in range(2):
        out, _ = fleet.procs[f"d{d}"].communicate(timeout=180)
        assert json.loads(out.splitlines()[-1])["samples"] == 200


def test_a_serverapp_killed_past_its_restarts_ends_the_server_naming_the_fix(
    fleet: Fleet, tmp_path: Path
) -> None:
    """With ``--restarts 0`` the same kill ends ``fleet server``: exit 1 and an ``Error:`` that
    says how to go on (the server again with the same ``--dir``, from ``fleet.npz``). Its
    paced device, left waiting for a round (before: 120 s a sample past its quota), finds nothing
    at its SuperLink for ``--patience``, learns the rest of its stream alone and ends on its
    own: exit 0, its report (``final`` false), and why on stderr."""
    from spela_stream.fleet_procs import server_apps

    X, y = load_mnist(200)
    write_csv(tmp_path / "d0.csv", X, y)
    port = free_port()
    fleet.server(port, 3, "--round-timeout", "40", "--restarts", "0")
    fleet.device("d0", port, tmp_path / "d0.csv", 40, "--patience", "5")
    rows = []
    for row in fleet.rows(until=3, timeout=300):
        rows.append(row)
        if row.get("round") == 1 and "event" not in row:
            (pid,) = server_apps(tmp_path / "fleet" / "flwr-home")
            os.kill(pid, signal.SIGKILL)
    assert fleet.procs["server"].wait(120) == 1, rows
    err = (tmp_path / "server.err").read_text()
    assert "Error: the fleet's ServerApp died and its --restarts (0) are used up" in err, err
    assert "run `spela-stream fleet server` again with --dir" in err and "fleet.npz" in err, err
    assert [r["round"] for r in rows if "event" not in r] == [1], rows
    out, _ = fleet.procs["d0"].communicate(timeout=120)
    err = (tmp_path / "d0.err").read_text()
    assert fleet.procs["d0"].returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["samples"], report["final"]) == (200, False), report
    assert f"nothing has listened at the fleet's SuperLink 127.0.0.1:{port} for 5 s" in err, err
    assert "ending without the fleet's last merge" in err, err


def test_the_server_killed_and_run_again_on_its_dir_goes_on_from_its_model(
    fleet: Fleet, tmp_path: Path
) -> None:
    """``fleet server`` itself is killed (SIGKILL: no cleanup of its own) after round 2; run
    again with the same ``--dir`` and port it ends what its last life left (no ServerApp of it
    survives), goes on from ``fleet.npz`` (a ``resumed`` row at round 2), runs rounds 3 and 4
    only, and the devices, which kept their SuperNodes, take part; the fleet's input statistics
    count each sample merged in either life once."""
    from spela_stream.fleet_procs import server_apps

    X, y = load_mnist(400)
    for d in range(2):
        write_csv(tmp_path / f"d{d}.csv", X[d::2], y[d::2])
    port = free_port()
    home = tmp_path / "fleet" / "flwr-home"
    fleet.server(port, 4, "--min-devices", "2", "--round-timeout", "40", "--wait", "90")
    for d in range(2):
        fleet.device(f"d{d}", port, tmp_path / f"d{d}.csv", per_round=40)
    first = [r for r in fleet.rows(until=2, timeout=600) if "event" not in r]
    assert [r["round"] for r in first] == [1, 2], first
    old_apps = server_apps(home)
    fleet.kill("server")
    fleet.server(port, 4, "--min-devices", "2", "--round-timeout", "40", "--wait", "90")
    second = list(fleet.rows(until=4, timeout=600))
    assert second[0] == {"event": "resumed", "round": 2}, second
    assert not set(old_apps) & set(server_apps(home)), "the first server's ServerApp lives on"
    rounds = [r for r in second if "event" not in r]
    assert [r["round"] for r in rounds] == [3, 4], second
    arrays, meta = fleet_model(tmp_path)
    assert meta["round"] == 4
    assert int(arrays["scaler.count"]) == sum(r.get("learned", 0) for r in first + rounds)
    for d in range(2):
        out, _ = fleet.procs[f"d{d}"].communicate(timeout=180)
        assert json.loads(out.splitlines()[-1])["samples"] == 200


def test_a_damaged_fleet_model_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    """A ``fleet.npz`` that is not a fleet model (garbage bytes): ``FleetError`` naming the
    file and what to do, not numpy's own message alone; the file is left as it was."""
    from spela_stream.fleet_wire import FleetError
    from spela_stream.flower import load_fleet

    (tmp_path / "fleet.npz").write_bytes(b"garbage\n")
    with pytest.raises(FleetError, match=r"fleet\.npz: not a fleet model .* move it aside"):
        load_fleet(tmp_path)
    assert (tmp_path / "fleet.npz").read_bytes() == b"garbage\n"
