"""Load check for ``imgrec serve``: concurrent clients sending predictions.

Starts a real ``imgrec serve`` on loopback (a free port), warms it with one prediction,
then measures:

1. the baseline: one client sending ``--requests`` predictions one after another;
2. the load: ``--clients`` clients at once, ``--requests`` predictions each, repeated
   ``--rounds`` times (memory that keeps growing from round to round would be a leak);
3. the big wave: ``--big`` clients at once, each uploading one 49-megapixel PNG of
   about 2 MB (mostly flat colour, a noisy band), with ``--big-mixed`` clients sending
   the normal photo meanwhile: the server's peak RSS during the wave (VmHWM, reset
   before it through /proc/PID/clear_refs) and its RSS once the wave is over.

It prints each run's errors, p50 and p99 latency and throughput, the load's latencies
as ratios of the baseline's, and the server's resident memory (RSS, from /proc) at
start, once warm, and after each run. Every request uploads the same photo, so each
one pays for the upload, the decoding and the forward pass.

    python bench/serve_load.py                          # 20 clients x 100 predictions
    python bench/serve_load.py --rounds 2               # the same twice: does RSS settle?
    python bench/serve_load.py --clients 4 --requests 10   # a quick run
    python bench/serve_load.py --big-only --big 12      # only the wave of big photos
    python bench/serve_load.py --big-only --big 12 --big-mixed 18   # 30 clients, mixed
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
from PIL import Image

from imgrec.core.samples import sample_path

BIG_SIZE = (7000, 7000)  # 49 megapixels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100, help="predictions per client")
    parser.add_argument("--rounds", type=int, default=1, help="how many times to run the load")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--photo", default=str(sample_path("chelsea")))
    parser.add_argument("--big", type=int, default=12, help="49-MP uploads at once (0: none)")
    parser.add_argument("--big-mixed", type=int, default=0, help="normal clients in the wave")
    parser.add_argument("--big-only", action="store_true", help="skip the baseline and load")
    args = parser.parse_args()
    photo = Path(args.photo).read_bytes()
    big = big_png() if args.big else b""

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

        runs = [] if args.big_only else _load(url, args, photo, memory, server.pid)
        wave = _big_wave(url, args, photo, big, memory, server.pid) if args.big else None
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=60)

    if runs:
        baseline, *loads = runs
        _report("baseline, 1 client", baseline)
        for round_, load in enumerate(loads, start=1):
            _report(f"load {round_}, {args.clients} clients", load)
            print(
                f"  / baseline: p50 x{load['p50'] / baseline['p50']:.2f}, "
                f"p99 x{load['p99'] / baseline['p99']:.2f}, "
                f"throughput x{load['throughput'] / baseline['throughput']:.2f}"
            )
    if wave is not None:
        _report_wave(wave, args, len(big))
    print("\nserver RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    last = list(memory)[-1]
    print(f"{last} / warm: x{memory[last] / memory['warm']:.3f}")
    print(f"server still running after the load: {alive}")
    failed = any(run["errors"] for run in runs) or (wave is not None and wave["failed"])
    return 0 if alive and not failed else 1


def _load(url: str, args: argparse.Namespace, photo: bytes, memory: dict, pid: int) -> list:
    """The baseline and the load rounds; RSS after each in ``memory``."""
    runs = [_run(url, args.model, photo, clients=1, requests=args.requests)]
    memory["after baseline"] = _rss_mib(pid)
    for round_ in range(1, args.rounds + 1):
        runs.append(_run(url, args.model, photo, clients=args.clients, requests=args.requests))
        memory[f"after load {round_}"] = _rss_mib(pid)
    return runs


def big_png(size: tuple[int, int] = BIG_SIZE) -> bytes:
    """A ``size`` RGB PNG of about 2 MB: flat colours, a few boxes, a band of noise."""
    width, height = size
    pixels = np.full((height, width, 3), (200, 180, 150), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(40):
        x, y = rng.integers(0, width - width // 8), rng.integers(0, height - height // 8)
        pixels[y : y + height // 9, x : x + width // 8] = rng.integers(0, 255, 3)
    pixels[: height // 70] = rng.integers(0, 255, (height // 70, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _big_wave(
    url: str, args: argparse.Namespace, photo: bytes, big: bytes, memory: dict, pid: int
) -> dict:
    """``--big`` uploads of ``big`` at once (and ``--big-mixed`` normal ones): statuses, RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak, VmHWM, to now
    statuses: list[int] = []
    lock = threading.Lock()
    start_together = threading.Barrier(args.big + args.big_mixed)

    def client(data: bytes) -> None:
        with httpx2.Client(base_url=url, timeout=600) as http:
            start_together.wait()
            response = http.post(
                "/api/predict", data={"model": args.model}, files={"file": ("big.png", data)}
            )
        with lock:
            statuses.append(response.status_code)

    payloads = [big] * args.big + [photo] * args.big_mixed
    threads = [threading.Thread(target=client, args=(data,)) for data in payloads]
    seconds = _run_all(threads)
    memory["wave peak"] = _status_mib(pid, "VmHWM")
    time.sleep(2)
    memory["after wave"] = _rss_mib(pid)
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    # 503 and 413 are the server keeping to its memory budget; anything else is a failure.
    failed = any(status not in (200, 413, 503) for status in statuses)
    return {"seconds": seconds, "statuses": counts, "failed": failed}


def _report_wave(wave: dict, args: argparse.Namespace, size: int) -> None:
    print(
        f"\nbig wave: {args.big} uploads of a {BIG_SIZE[0]} x {BIG_SIZE[1]} PNG "
        f"({size / 2**20:.1f} MiB) and {args.big_mixed} normal ones at once, "
        f"{wave['seconds']:.1f} s; statuses: "
        + ", ".join(f"{status} x{count}" for status, count in wave["statuses"].items())
    )


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
    seconds = _run_all(threads)
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
    return _status_mib(pid, "VmRSS")


def _run_all(threads: list[threading.Thread]) -> float:
    """Start every thread, wait for all of them, and return the seconds it took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _status_mib(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS: now, VmHWM: the peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


if __name__ == "__main__":
    sys.exit(main())
