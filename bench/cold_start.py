"""Cold start: `imgrec predict chelsea.png` from process start to output, beside
`python -c "import keras"` measured the same way in the same run.

Usage: python bench/cold_start.py [--runs 5]

The two commands alternate so that both see the same machine load; the ratio is
what to compare across machines. Conversion and parameter caches are warmed first:
this measures a user's second and later runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from imgrec.core.samples import sample_path

BIN = Path(sys.executable).parent


def wall_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    chelsea = str(sample_path("chelsea"))
    commands = {
        "imgrec --help": [str(BIN / "imgrec"), "--help"],
        "imgrec zoo": [str(BIN / "imgrec"), "zoo"],
        'python -c "import keras"': [sys.executable, "-c", "import keras"],
        "imgrec predict chelsea.png": [str(BIN / "imgrec"), "predict", chelsea],
    }
    for command in commands.values():  # warm the caches and the OS file cache
        wall_seconds(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(wall_seconds(command))

    baseline = statistics.median(times['python -c "import keras"'])
    print(f"{'command':<30} {'median s':>9} {'x import keras':>15}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<30} {median:9.2f} {median / baseline:15.2f}")


if __name__ == "__main__":
    main()
