"""In-browser inference against the server's, for one photo and one network, warm.

Starts a real ``imgrec serve`` on loopback (a free port) and drives Debian's Chromium
with Playwright. For the same photo and network it measures, ``--repeats`` times each:

1. the baseline: the server's forward pass (``time_ms`` of ``/api/predict``, on the
   server's runtime, ONNX Runtime by default) and the request's round trip;
2. the page's ``BrowserClassifier`` (``static/browser_inference.js``) on WASM: the
   forward pass in onnxruntime-web and the canvas preprocessing, after its first use
   (fetching the model and creating the session, reported apart).

It prints medians, and the browser's times as ratios of the server's forward pass.

    python bench/browser_inference.py                     # chelsea, MobileNetV2, 20 runs
    python bench/browser_inference.py --runtime keras     # the server on Keras instead
    python bench/browser_inference.py --model efficientnet_lite0 --sample coffee
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import httpx2
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"

# Runs the page's own module in the page: the same code the "in this browser" choice runs.
_BROWSER_RUNS = """async ([model, sample, repeats]) => {
    const { BrowserClassifier } = await import("/static/browser_inference.js");
    const classifier = new BrowserClassifier();
    const photo = await (await fetch(`/api/samples/${sample}`)).blob();
    const runs = [];
    for (let i = 0; i <= repeats; i++) runs.push(await classifier.classify(model, photo));
    return runs;
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--sample", default="chelsea")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--runtime", default="auto", choices=("auto", "keras", "onnx"))
    args = parser.parse_args()

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgrec",
            "serve",
            "--port",
            "0",
            "--json",
            "--runtime",
            args.runtime,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = json.loads(server.stdout.readline())["url"]
        fields = {"model": args.model, "sample": args.sample}
        with httpx2.Client(base_url=url, timeout=600) as client:
            first = client.post("/api/predict", data=fields).json()  # loads and warms up
            forward, round_trip = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                answer = client.post("/api/predict", data=fields).json()
                round_trip.append((time.perf_counter() - started) * 1000)
                forward.append(answer["time_ms"])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            page.goto(url)
            runs = page.evaluate(_BROWSER_RUNS, [args.model, args.sample, args.repeats])
            version = browser.version
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    server_ms = statistics.median(forward)
    first_use, warm = runs[0]["first"], runs[1:]
    browser_ms = statistics.median(run["time_ms"] for run in warm)
    prepare_ms = statistics.median(run["preprocess_ms"] for run in warm)
    print(f"{args.model} on {args.sample}, {args.repeats} runs each, medians")
    print(f"server ({first['runtime']}), top-1 {_top1(first)}")
    print(f"  forward pass        {server_ms:8.1f} ms   x1.00 (baseline)")
    print(f"  round trip          {statistics.median(round_trip):8.1f} ms")
    backend = warm[0]["backend"]
    print(f"browser (Chromium {version}, onnxruntime-web, {backend}), top-1 {_top1(warm[0])}")
    print(f"  forward pass        {browser_ms:8.1f} ms   x{browser_ms / server_ms:.2f}")
    print(f"  preprocessing       {prepare_ms:8.1f} ms")
    print(
        f"  prepare + forward   {prepare_ms + browser_ms:8.1f} ms   "
        f"x{(prepare_ms + browser_ms) / server_ms:.2f}"
    )
    print(
        f"  first use: {first_use['load_ms']:.0f} ms to fetch {first_use['bytes'] / 2**20:.1f} MiB "
        f"and create the session, {first_use['run_ms']:.0f} ms for the first run"
    )
    return 0


def _top1(result: dict) -> str:
    best = result["top"][0]
    return f"{best['class']} {best['probability']:.4f}"


if __name__ == "__main__":
    sys.exit(main())
