"""bench/time_to_accuracy.py runs end to end on a small data set, budget included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgrec.core.native import training_precision

BENCH = Path(__file__).parents[1] / "bench" / "time_to_accuracy.py"

pytestmark = pytest.mark.slow


def test_each_recipe_gets_its_times_its_test_accuracy_and_the_budget_stops_it(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "digits", "--recipes", "cifar-cnn,fast-cnn",
         "--epochs", "3", "--budget", "0", "--limit-per-class", "100", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [row["recipe"] for row in rows] == ["cifar-cnn", "fast-cnn"]
    for row in rows:
        # A budget of 0 minutes ends each run after its first epoch, and says so.
        assert (row["epochs_done"], row["epochs_asked"], row["stopped_by_budget"]) == (1, 3, True)
        ((seconds, accuracy),) = row["epochs"]
        assert seconds > 0 and 0 <= accuracy <= 1
        reached = [t for t in row["time_to"].values() if t is not None]
        assert all(t == seconds for t in reached)  # one epoch: reached then or never
        assert 0.1 < row["test_accuracy"] <= 1 and row["test_split"] == "test"
    assert rows[1]["options"] == {"epochs": 3}
    table = done.stdout.splitlines()
    assert table[-4].startswith("| recipe | to 90% | to 92% | to 93% | to 94% |")
    # fast-cnn trains in bfloat16 where this CPU has it natively, and the table says so
    precision = training_precision("bfloat16")
    assert [row["precision"] for row in rows] == ["float32", precision]
    arithmetic = ", bfloat16" if precision == "bfloat16" else ""
    assert table[-1].startswith(f"| `fast-cnn`{arithmetic} |") and "1/3 (budget)" in table[-1]
