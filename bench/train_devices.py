"""Training speed on 1 and on N devices (`imgrec train --devices`), as a ratio from one run.

Usage: python bench/train_devices.py [--devices 2] [--dataset digits] [--image-size 32]
           [--arch cifar-cnn] [--epochs 4] [--batch-size 128] [--repeats 1]

Keras runs on JAX. On a machine without accelerators JAX simulates the devices on the
CPU (XLA_FLAGS=--xla_force_host_platform_device_count=N): the N devices share the
same cores, so the ratio shows what data parallelism costs (splitting every batch,
the all-reduce of the gradients, N smaller steps instead of one), not a speed-up.
On a machine with N GPUs the same script measures the real thing (pass --devices N;
the simulation flag is then not set).

Each variant trains in its own process, the same run through `imgrec.train` (same
data, seed, global batch and steps); images per second count training steps only,
the first epoch (compilation) left out. With --repeats R the variants take turns R
times and each keeps its best run, so that a noisy neighbour on a shared machine
slows one run, not the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _measure(devices: int, args: argparse.Namespace) -> dict:
    """Runs in a child process: train on ``devices`` devices and report images/s."""
    import keras
    from step_timer import steady_images_per_second, step_timer

    from imgrec.datasets import load_dataset
    from imgrec.training.fit import train

    size = (args.image_size, args.image_size) if args.image_size else None
    data = load_dataset(args.dataset, image_size=size, seed=0, progress=False)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as folder:
        result = train(
            data,
            args.arch,
            out=Path(folder) / "m.keras",
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=0,
            patience=0,
            devices=devices,
            callbacks=[timer],
        )
    left_out = (result.get("distribution") or {}).get("images_left_out", {}).get("train", 0)
    return {
        "devices": devices,
        "backend": keras.backend.backend(),
        "device_kind": keras.distribution.list_devices()[0].split(":")[0],
        "images_per_s": steady_images_per_second(timer.seconds, len(data.train) - left_out),
    }


def _child_env(devices: int, simulate: bool) -> dict[str, str]:
    env = os.environ | {"KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}
    if simulate:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _has_accelerators() -> bool:
    """Whether JAX sees GPUs or TPUs here (then nothing is simulated)."""
    probe = "import jax; print(jax.default_backend())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=_child_env(1, False),
        check=True,
    ).stdout
    return out.strip().splitlines()[-1] != "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="the devices to compare with 1")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=32, help="0: the data set's own")
    parser.add_argument("--arch", default="cifar-cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--repeats", type=int, default=1, help="turns each variant takes")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args)))
        return
    if args.devices < 2 or args.repeats < 1 or args.epochs < 2:
        parser.error("--devices must be 2 or more, --repeats 1 or more, --epochs 2 or more")

    simulate = not _has_accelerators()
    best: dict[int, dict] = {}
    for devices in (1, args.devices) * args.repeats:
        command = [sys.executable, __file__, *sys.argv[1:], "--child", str(devices)]
        out = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            env=_child_env(devices, simulate),
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        if devices not in best or row["images_per_s"] > best[devices]["images_per_s"]:
            best[devices] = row
    ratio = best[args.devices]["images_per_s"] / best[1]["images_per_s"]
    kind = "simulated CPU" if simulate else best[1]["device_kind"].upper()
    print(f"{'devices':>7} {'kind':<14} {'images/s':>9} {'ratio':>6}")
    for devices, row in best.items():
        shown = f"{ratio:6.2f}" if devices != 1 else ""
        print(f"{devices:>7} {kind:<14} {row['images_per_s']:9.0f} {shown:>6}")
    print(
        json.dumps(
            {"ratio": ratio, "simulated": simulate, "cores": os.cpu_count()}
            | {f"images_per_s_{d}": row["images_per_s"] for d, row in best.items()}
        )
    )


if __name__ == "__main__":
    main()
