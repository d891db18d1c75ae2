"""The README's library snippet with and without ``SpelaMLP(threads=...)`` (issue 13, item 2).

    python -m benchmarks.threads_bench            # 2,000 MNIST digits per setting, fresh processes
    python -m benchmarks.threads_bench --limit 500

Each setting runs in a fresh Python process that never calls ``torch.set_num_threads``, as a new
user's script would: ``threads=None`` is the old behaviour (torch's default, one thread per core),
``threads=1`` the new default. Prints samples/s of the learning loop (imports excluded). Timings
on a loaded, shared machine are noisy: compare the two figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SNIPPET = """
import json, time, torch
from spela_stream import SpelaMLP
from spela_stream.datasets import iter_mnist
rows = list(iter_mnist(limit={limit}))
model = SpelaMLP(threads={threads})
start = time.perf_counter()
for x, y in rows:
    p = model.predict_learn_one(x, y)
took = time.perf_counter() - start
print(json.dumps({{"threads": {threads}, "torch_default": torch.get_num_threads(),
                  "samples_per_s": len(rows) / took, "label": p.label}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000, help="MNIST digits per setting")
    a = ap.parse_args()
    for threads in ("None", "1"):
        code = SNIPPET.format(limit=a.limit, threads=threads)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        row = json.loads(out.stdout)
        print(
            f"SpelaMLP(threads={threads}): {row['samples_per_s']:.0f} samples/s "
            f"(torch's default: {row['torch_default']} threads)"
        )


if __name__ == "__main__":
    main()
