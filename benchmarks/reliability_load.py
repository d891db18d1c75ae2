"""Socket abuse against the real TCP service, a long soak with RSS, fuzzed lines per parser."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .abuse_bench import ABUSES, TIMEOUT, measure
from .faults import Section, child_env, cli, code, pump, rss_mib, spawn


def _port(lines: object, limit_s: float = 120.0) -> int:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        line = lines.get(timeout=limit_s)  # type: ignore[attr-defined]
        if not line:
            break
        if line.startswith("listening on tcp://"):
            return int(line.rsplit(":", 1)[1])
    raise SystemExit("the service did not say where it listens")


def abuse_section(work: Path, quick: bool) -> Section:
    """One well-behaved client of `learn -s tcp://127.0.0.1:0`: its latency quiet, during each
    kind of abuse (benchmarks/abuse_bench.py's abuser) and after it."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    for p in work.glob("svc.db*"):
        p.unlink()
    service = spawn(["learn", "-s", "tcp://127.0.0.1:0", "--db", str(work / "svc.db"),
                     "--hidden", "64", "--features", "4", "--quiet", "--checkpoint-seconds", "0"],
                    work)  # fmt: skip
    port = _port(pump(service))
    n = 200 if quick else 1000
    phases: list[tuple[str, list[float]]] = []
    me = [sys.executable, "-m", "benchmarks.abuse_bench", "--abuse", str(port), "--kinds"]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fh = sock.makefile("rb")
        # warm up past the replay memory's 1,000 samples: the model then costs what it will
        measure(fh, sock, 1500, None)
        phases.append(("quiet", measure(fh, sock, n, None)))
        for kind in (*ABUSES, ",".join(ABUSES)):
            name = "all at once" if "," in kind else kind.replace("_", "-")
            abuser = subprocess.Popen([*me, kind], env=child_env())
            phases.append((f"during {name}", measure(fh, sock, n, abuser)))
            abuser.wait(TIMEOUT)
            phases.append((f"after {name}", measure(fh, sock, n, None)))
        sock.sendall(b'{"control": "shutdown"}\n')
        fh.readline()
    try:
        code_ = service.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        service.kill()
        code_ = service.wait()
    quiet = float(np.median(phases[0][1]))
    rows: list[list[object]] = []
    for name, waits in phases:
        a = np.array(waits) * 1e3
        rows.append([name, a.size, float(np.median(a)), float(np.percentile(a, 99)),
                     float(a.max()), float(np.median(waits)) / quiet])  # fmt: skip
    worst = max(r[5] for r in rows if str(r[0]).startswith("during"))  # type: ignore[type-var]
    return Section(
        title="Socket abuse",
        intro=(
            "`learn -s tcp://127.0.0.1:0 --hidden 64 --features 4` (the real service) and one "
            "client that sends a 4-feature labelled line and waits for its reply, one at a time; "
            "the latency is from the send to the reply. Each abuse runs in its own process "
            "(`benchmarks/abuse_bench.py --abuse`): 2,000 connect/close (every fourth sends "
            "garbage and resets), a client of 500 junk lines and a 10,000-byte one, 20 clients "
            "that half-close and never read, 5 that send 2,000 lines each and never read. After "
            "1,500 warm-up lines (past the replay memory's 1,000, so a sample costs what it "
            "will from then on), the client measures quiet, then keeps measuring while each "
            f"abuser runs, so *during* rows hold at least {n} requests. Timings on a shared "
            "2-core machine are rough."
        ),
        header=["phase", "requests", "median ms", "p99 ms", "max ms", "median / quiet"],
        rows=rows,
        verdict=(
            f"worst median during an abuse: {worst:.2f}x quiet (the goal: within 2x); the "
            f"service exited {code_} on the shutdown line"
        ),
        seconds=time.monotonic() - start,
    )


def _feed(stdin: object, samples: int, seed: int) -> None:
    """Write ``samples`` lines of 8 features and one of 4 labels, drifting, seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 8)) * 2
    try:
        for block in range(0, samples, 10_000):
            m = min(10_000, samples - block)
            y = rng.integers(0, 4, m)
            drift = 0.5 * np.sin(block / 200_000)
            X = centres[y] + drift + rng.normal(size=(m, 8))
            body = "\n".join(
                ",".join(f"{v:.3f}" for v in row) + f",{k}" for row, k in zip(X, y, strict=True)
            )
            stdin.write(body + "\n")  # type: ignore[attr-defined]
        stdin.close()  # type: ignore[attr-defined]
    except (BrokenPipeError, ValueError):
        pass  # the learner stopped early (its time bound)


def soak_section(work: Path, samples: int, limit_s: float) -> Section:
    """`learn -s -` over ``samples`` generated lines (or until ``limit_s``), RSS every second."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    for p in work.glob("soak.db*"):
        p.unlink()
    proc = spawn(["learn", "-s", "-", "--db", str(work / "soak.db"), "--hidden", "64",
                  "--limit", str(samples), "--every", "2000", "--json", "--quiet",
                  "--checkpoint-seconds", "30"], work, stdin=subprocess.PIPE)  # fmt: skip
    threading.Thread(target=_feed, args=(proc.stdin, samples, 7), daemon=True).start()
    latest = {"samples": 0}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            latest["samples"] = json.loads(line)["samples"]

    threading.Thread(target=read, daemon=True).start()
    err = pump(proc)
    trace: list[tuple[float, int, float]] = []
    stopped = False
    while proc.poll() is None:
        mib = rss_mib(proc.pid)
        if mib is not None:
            trace.append((time.monotonic() - start, latest["samples"], mib))
        if not stopped and time.monotonic() - start > limit_s:
            proc.send_signal(signal.SIGINT)  # checkpoint and stop: the time bound
            stopped = True
        time.sleep(1.0)
    proc.wait()
    time.sleep(0.2)
    text = "".join(iter(lambda: err.get(timeout=5), ""))
    reached = latest["samples"]
    picks = sorted({int(i) for i in np.linspace(0, len(trace) - 1, min(12, len(trace)))})
    rows: list[list[object]] = [[round(trace[i][0]), trace[i][1], trace[i][2]] for i in picks]
    learning = np.array([t[2] for t in trace if t[1] > 0] or [0.0])
    half = learning[len(learning) // 2 :]
    verify = cli(["checkpoints", "verify", "--db", str(work / "soak.db")], work)
    return Section(
        title="Soak",
        intro=(
            f"`learn -s - --hidden 64 --limit {samples}` fed generated lines (8 features, 4 "
            f"labels, a slow drift) through a pipe, bounded to {limit_s:.0f} s (then SIGINT); "
            "VmRSS of the learner from /proc every second; samples from its `--json` reports "
            "(doubling, then one per 2,000)."
        ),
        header=["elapsed s", "samples", "RSS MiB"],
        rows=rows,
        verdict=(
            f"{reached:,} samples, exit {proc.returncode}"
            f"{' (time bound)' if stopped else ''}; RSS once learning {learning[0]:.0f} MiB, "
            f"at most {learning.max():.0f} MiB; over the second half of the run "
            f"{half.min():.0f}-{half.max():.0f} MiB; "
            f"verify exit {verify.code}; traceback: {'yes' if 'Traceback' in text else 'none'}"
        ),
        seconds=time.monotonic() - start,
    )


ODD = ["1_000", "١٢", "１２", "nan", "inf", "-inf", "1e999", "-", "0x10", "", " ", "\x00",
       '"3"', "1,5", "9" * 400, "+-1", "１", "true", "null", "[1]", "{}", "é"]  # fmt: skip


def _valid(rng: random.Random, fmt: str) -> str:
    x = [round(rng.gauss(0, 1), 3) for _ in range(4)]
    y = rng.randrange(3)
    if fmt == "jsonl":
        return json.dumps({"x": x, "y": y})
    if fmt == "libsvm":
        return f"{y} " + " ".join(f"{i + 1}:{v}" for i, v in enumerate(x))
    sep = "\t" if fmt == "tsv" else ","
    return sep.join(map(str, [*x, y]))


def _mutate(rng: random.Random, line: str) -> bytes:
    raw = bytearray(line.encode())
    kind = rng.randrange(9)
    if kind == 0 and raw:  # a flipped byte
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # an inserted byte
        raw.insert(rng.randrange(len(raw) + 1), rng.randrange(256))
    elif kind == 2 and raw:  # a deleted span
        i = rng.randrange(len(raw))
        del raw[i : i + rng.randrange(1, 6)]
    elif kind == 3:  # truncated
        raw = raw[: rng.randrange(len(raw) + 1)]
    elif kind == 4:  # a token replaced by an odd one
        text = raw.decode("utf-8", "replace")
        for sep in (",", "\t", " ", ":"):
            if sep in text:
                parts = text.split(sep)
                parts[rng.randrange(len(parts))] = rng.choice(ODD)
                text = sep.join(parts)
                break
        raw = bytearray(text.encode())
    elif kind == 5:  # random bytes
        raw = bytearray(rng.randbytes(rng.randrange(1, 120)))
    elif kind == 6:  # doubled
        raw = raw + raw
    # kinds 7, 8: left valid
    return bytes(raw).replace(b"\n", b" ").replace(b"\r", b" ")


FUZZ_FORMATS = ("csv", "tsv", "jsonl", "libsvm")


def fuzz_one(work: Path, fmt: str, n: int, seed: int) -> list[object]:
    """``n`` mutated lines of ``fmt`` through `learn --on-error skip`; a table row."""
    rng = random.Random(seed)
    head = {"csv": "a,b,c,d,label\n", "tsv": "a\tb\tc\td\tlabel\n"}.get(fmt, "")
    lines = [_valid(rng, fmt).encode()] + [_mutate(rng, _valid(rng, fmt)) for _ in range(n - 1)]
    path = work / f"fuzz.{fmt}"
    path.write_bytes(head.encode() + b"\n".join(lines) + b"\n")
    records = sum(1 for raw in lines if raw and not raw.isspace())  # blank lines are skipped
    db = work / f"fuzz-{fmt}.db"
    for p in work.glob(f"fuzz-{fmt}.db*"):
        p.unlink()
    args = ["learn", "-s", str(path), "--db", str(db), "--hidden", "8", "--on-error", "skip",
            "--json", "--every", "1000000", "--checkpoint-seconds", "0"]  # fmt: skip
    if fmt in ("csv", "tsv"):
        args.append("--header")
    if fmt == "libsvm":
        args += ["--features", "4"]
    done = cli(args, work)
    summary = json.loads(done.out.splitlines()[-1]) if done.out.strip() else {}
    samples, rejected = summary.get("samples", -1), summary.get("rejected", -1)
    read = summary.get("position", -1)
    skipped = sum(1 for ln in done.err.splitlines() if ln.startswith("skipped "))
    return [fmt, n, records, samples, summary.get("learned", -1), rejected, read,
            samples + rejected == read == records, skipped, done.code,
            "TRACEBACK" if done.traceback else "none",
            code(done.message if done.code else "")]  # fmt: skip


def fuzz_section(work: Path, n: int, seed: int = 2026) -> Section:
    """Fuzzed lines through each text parser of the real command."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    rows = [fuzz_one(work, fmt, n, seed + i) for i, fmt in enumerate(FUZZ_FORMATS)]
    good = sum(1 for r in rows if r[7] is True and r[9] == 0 and r[10] == "none")
    return Section(
        title="Fuzzed lines per parser",
        intro=(
            f"{n} lines per format, seeded: a valid first record, then valid lines each given "
            "one of seven mutations (a flipped bit, an inserted byte, a deleted span, "
            "truncation, a token replaced by an odd one such as `1_000`, Arabic-Indic or "
            "full-width digits, `1e999`, NUL; random bytes; the line doubled) or left valid "
            "(2 in 9). `learn --on-error skip --json`; *records* counts the non-blank lines "
            "written; *samples* counts those taken (learned, or predicted when unlabelled); "
            "*read* is the run's position."
        ),
        header=["format", "lines", "records", "samples", "learned", "rejected", "read",
                "samples + rejected == read == records", "skipped notes", "exit", "traceback",
                "error"],
        rows=rows,
        verdict=f"{good} of {len(rows)} parsers: every record taken or rejected, exit 0, "
        "no traceback",
        seconds=time.monotonic() - start,
    )  # fmt: skip
