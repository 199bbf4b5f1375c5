"""Load check for ``imgrec serve``: concurrent clients sending predictions.

Starts a real ``imgrec serve`` on loopback (a free port), warms it with one prediction,
then measures:

1. the baseline: one client sending ``--requests`` predictions one after another;
2. the load: ``--clients`` clients at once, ``--requests`` predictions each, repeated
   ``--rounds`` times (memory that keeps growing from round to round would be a leak).

It prints each run's errors, p50 and p99 latency and throughput, the load's latencies
as ratios of the baseline's, and the server's resident memory (RSS, from /proc) at
start, once warm, and after each run. Every request uploads the same photo, so each
one pays for the upload, the decoding and the forward pass.

    python bench/serve_load.py                          # 20 clients x 100 predictions
    python bench/serve_load.py --rounds 2               # the same twice: does RSS settle?
    python bench/serve_load.py --clients 4 --requests 10   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

from imgrec.core.samples import sample_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100, help="predictions per client")
    parser.add_argument("--rounds", type=int, default=1, help="how many times to run the load")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--photo", default=str(sample_path("chelsea")))
    args = parser.parse_args()
    photo = Path(args.photo).read_bytes()

    server = subprocess.Popen(
        [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = json.loads(server.stdout.readline())["url"]
        memory = {"start": _rss_mib(server.pid)}
        with httpx2.Client(base_url=url, timeout=600) as client:
            started = time.perf_counter()
            _predict(client, args.model, photo)
            print(f"first prediction (load and warm-up): {time.perf_counter() - started:.1f} s")
        memory["warm"] = _rss_mib(server.pid)

        baseline = _run(url, args.model, photo, clients=1, requests=args.requests)
        memory["after baseline"] = _rss_mib(server.pid)
        loads = []
        for round_ in range(1, args.rounds + 1):
            loads.append(_run(url, args.model, photo, clients=args.clients, requests=args.requests))
            memory[f"after load {round_}"] = _rss_mib(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=60)

    _report("baseline, 1 client", baseline)
    for round_, load in enumerate(loads, start=1):
        _report(f"load {round_}, {args.clients} clients", load)
        print(
            f"  / baseline: p50 x{load['p50'] / baseline['p50']:.2f}, "
            f"p99 x{load['p99'] / baseline['p99']:.2f}, "
            f"throughput x{load['throughput'] / baseline['throughput']:.2f}"
        )
    print("\nserver RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    last = f"after load {args.rounds}"
    print(f"{last} / warm: x{memory[last] / memory['warm']:.3f}")
    print(f"server still running after the load: {alive}")
    failed = any(run["errors"] for run in [baseline, *loads])
    return 0 if alive and not failed else 1


def _predict(client: httpx2.Client, model: str, photo: bytes) -> float:
    """One prediction's latency in seconds; raises on anything but a 200."""
    started = time.perf_counter()
    response = client.post(
        "/api/predict", data={"model": model}, files={"file": ("photo.png", photo)}
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return elapsed


def _run(url: str, model: str, photo: bytes, *, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_together = threading.Barrier(clients)

    def client_loop() -> None:
        with httpx2.Client(base_url=url, timeout=600) as client:
            start_together.wait()
            for _ in range(requests):
                try:
                    latency = _predict(client, model, photo)
                except Exception as err:  # counted and reported, the run goes on
                    with lock:
                        errors.append(str(err))
                    continue
                with lock:
                    latencies.append(latency)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": clients * requests,
        "errors": errors,
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "throughput": len(latencies) / seconds,
        "seconds": seconds,
    }


def _report(title: str, run: dict) -> None:
    print(
        f"\n{title}: {run['requests']} predictions in {run['seconds']:.1f} s, "
        f"{len(run['errors'])} errors\n"
        f"  p50 {run['p50'] * 1000:.0f} ms, p99 {run['p99'] * 1000:.0f} ms, "
        f"{run['throughput']:.1f} predictions/s"
    )
    for error in run["errors"][:5]:
        print(f"  error: {error}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


if __name__ == "__main__":
    sys.exit(main())
