"""The peer learners' packages, installed on demand at pinned versions, never in the project's
dependencies.

- ``vowpalwabbit==9.11.9`` and ``capymoa==0.15.1`` (with JPype; it runs MOA's Java learners on the
  machine's Java 17) go into ``.bench-venvs/peers`` (with the CPU build of torch 2.13.0, which
  capymoa needs): installed beside the project they would bring scikit-learn and pandas into its
  test environment.
- ``deep-river==0.3.4`` pins river < 0.26 and torch < 2.6, so it gets a virtualenv of its own,
  ``.bench-venvs/deep-river``, built with the CPU build of torch 2.13.0 and River 0.25 and then
  deep-river without its pins (``--no-deps``: it imports and learns that way). Its jobs run the
  suite's loop with that virtualenv's Python.

``ensure(peer)`` returns the Python that can run the peer, or raises ``PeerUnavailable`` saying
why, which the suite records as "not run: <why>".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".bench-venvs"
PINS = {"vowpalwabbit": "vowpalwabbit==9.11.9", "capymoa": "capymoa==0.15.1"}
DEEP_RIVER_DEPS = (
    "torch==2.13.0",
    "river==0.25.*",
    "pandas<3",
    "sortedcontainers",
    "tqdm",
    "torchviz",
    "pytest",
)
DEEP_RIVER = "deep-river==0.3.4"
IMPORTS = {"vowpalwabbit": "vowpalwabbit", "capymoa": "capymoa", "deep-river": "deep_river"}


class PeerUnavailable(Exception):
    """A peer could not be installed or imported; the message says why."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _imports(python: str, module: str) -> str | None:
    """None if ``python -c 'import module'`` works, else the last line of its error."""
    res = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
    )
    if res.returncode == 0:
        return None
    lines = (res.stderr or res.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {res.returncode}"


def _pip(python: str, *args: str) -> None:
    res = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if res.returncode != 0:
        tail = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("WARNING")]
        raise PeerUnavailable(f"pip install {' '.join(args)} failed: {' '.join(tail[-2:])}")


def _venv(name: str, install: bool) -> str:
    """The Python of ``.bench-venvs/NAME``, creating the venv first if allowed and missing."""
    root = VENVS / name
    python = str(root / "bin" / "python")
    if not Path(python).exists():
        if not install:
            raise PeerUnavailable(f"no {root} (run without --no-install)")
        _log(f"peers: creating {root} (a few minutes, once)")
        res = subprocess.run(
            [sys.executable, "-m", "venv", str(root)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise PeerUnavailable(f"python -m venv failed: {res.stderr.strip()[-200:]}")
    return python


def ensure(peer: str, install: bool = True) -> str:
    """The Python executable that runs ``peer``, installing it first if allowed and missing."""
    module = IMPORTS[peer]
    if peer == "deep-river":
        python = _venv("deep-river", install)
        if _imports(python, module) is not None and install:
            _log(f"peers: installing {DEEP_RIVER} and its pinned stack")
            _pip(python, *DEEP_RIVER_DEPS)
            _pip(python, "--no-deps", DEEP_RIVER)
    else:  # a venv of their own too: capymoa pulls scikit-learn and pandas, which change
        # what River's generic checks run in the project's own tests
        python = _venv("peers", install)
        if _imports(python, module) is not None and install:
            _log(f"peers: installing {PINS[peer]}")
            _pip(python, "torch==2.13.0", "numpy", PINS[peer])
    error = _imports(python, module)
    if error is not None:
        raise PeerUnavailable(f"{module} does not import: {error}")
    return python


def versions(python: str, distributions: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution in ``python``'s environment (missing ones left
    out); read from the package metadata, so nothing is imported."""
    code = (
        "import importlib.metadata as md, json\n"
        "out = {}\n"
        f"for d in {list(distributions)!r}:\n"
        "    try:\n"
        "        out[d] = md.version(d)\n"
        "    except md.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        return {}
    parsed: dict[str, str] = json.loads(res.stdout.strip().splitlines()[-1])
    return parsed
