"""Run every benchmark in bench/ (each ``bench/bench_*.py``, in name order) and print their tables.

Each benchmark is its own script that prints a markdown table; this entry point only discovers and runs them, so
adding a benchmark means adding a ``bench_<name>.py`` file. ``make bench`` calls it.

Usage:

    python bench/run_all.py                 # all benchmarks
    python bench/run_all.py collator        # only those whose file name contains "collator"
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    scripts = sorted(glob.glob(os.path.join(here, "bench_*.py")))
    if argv:
        scripts = [s for s in scripts if any(word in os.path.basename(s) for word in argv)]
    if not scripts:
        print(f"No benchmark matches {argv} in {here}.", file=sys.stderr)
        return 1
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    failed = []
    for script in scripts:
        name = os.path.basename(script)
        print(f"\n## {name}\n", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, script], env=env, cwd=os.path.dirname(here))
        print(f"\n({name}: {time.perf_counter() - start:.0f} s, exit code {result.returncode})", flush=True)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nFailed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
