"""Research rows for a forgetting input readout (issue 11, round 6; ``spela_stream.input_readout``).

One row: ``SpelaMLP(input_readout=WINDOW)`` (defaults otherwise) with the module switches set, on
one part: ``elec2``/``mnist``/``optdigits``/``letter`` (i.i.d.: prequential accuracy on the
shared stream in its order, ``benchmarks.continual.iid``) or ``camera-2``/``mnist-2``/... (the
class-incremental protocol, ``benchmarks.continual.evaluate``; held-out accuracy after the last
stage). WINDOW 0 is main's defaults (no input readout); ``whole`` is round 5's whole-stream one.

    OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.research_input elec2 10000 sum 0.5 200
    (part, window, mix sum|calibrated, weight, drift keep (0: no shortening on a drift))
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.continual import CI_STAGES, evaluate, iid
from benchmarks.continual_learners import Spela
from spela_stream import input_readout

ROWS = Path(__file__).resolve().parent / "results" / "input-readout-rows.jsonl"
WHOLE = 10**12  # a window no stream reaches: whole-stream statistics


def main(argv: list[str]) -> None:
    part, window_s = argv[0], argv[1]
    mix = argv[2] if len(argv) > 2 else input_readout.MIX
    weight = float(argv[3]) if len(argv) > 3 else 0.5
    keep = int(argv[4]) if len(argv) > 4 else input_readout.DRIFT_KEEP
    window = WHOLE if window_s == "whole" else int(window_s)
    input_readout.MIX, input_readout.WEIGHT, input_readout.DRIFT_KEEP = mix, weight, keep
    params = {"input_readout": window}
    if part in CI_STAGES:
        from benchmarks.continual_data import load_class_incremental

        X, y = load_class_incremental(part.split("-")[0])
        r = evaluate(Spela(**params), X, y, CI_STAGES[part])
        row = {k: r[k] for k in ("prequential", "final_heldout", "avg_forgetting", "to80_median")}
        row |= {"to80_max": r["to80_max"], "seconds": round(r["seconds"])}
    else:
        r = iid(part, params)
        row = {"accuracy": r["accuracy"], "seconds": round(r["seconds"])}
    row = {"part": part, "window": window_s, "mix": mix, "weight": weight, "keep": keep, **row}
    print(json.dumps(row), flush=True)
    with ROWS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
