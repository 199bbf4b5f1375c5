"""Training on several devices and hosts: where ``train`` puts the model and its data.

``plan_placement`` turns ``train``'s ``devices``, ``coordinator``, ``num_processes``
and ``process_id`` into a :class:`Placement`, checking every value at the boundary:

- one device (the default): nothing changes, no distribution is set;
- several devices of one host: data parallelism. On JAX a
  ``keras.distribution.DataParallel`` over the first N local devices (GPUs, or CPUs
  that ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` simulates); on
  TensorFlow a ``tf.distribute.MirroredStrategy`` over the first N logical devices;
- several hosts (JAX only): ``keras.distribution.initialize`` with the coordinator's
  address, then one ``DataParallel`` over every process's devices. Each process
  feeds its own shard of the data (a stride of the training and validation images)
  and its part of the global batch; Keras's own sharding of ``tf.data`` pipelines is
  turned off. TensorFlow's ``MultiWorkerMirroredStrategy`` does not work with Keras 3
  (keras-team/keras#20585), so several hosts on TensorFlow are refused.

The batch size a user gives is the global one: every step averages the gradient of
that many images, whatever the number of devices, so a run on 8 devices takes the
same steps as on one. It must divide evenly among the devices. On JAX every batch,
the last of an epoch included, must split evenly among them too, so each process
trains on a multiple of its device count of images: at most ``devices - 1`` images
per process are left out (the result says how many).

Only process 0 writes the run's files; the others save into a temporary folder
that is removed at the end (their weights are the same: every step ends with the
same all-reduced update on every device).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from imgrec.core.errors import ImgrecError

ALL_DEVICES = "all"
_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Placement:
    """Where a run trains: its backend, its devices and processes, and how to enter them.

    Args:
        backend: Keras's backend (``jax``, ``tensorflow``, ``torch``).
        local_devices: the devices this process trains on.
        processes: the processes that train together (1: one host).
        process_id: this process's index, 0 to ``processes - 1``.
        device_names: the devices of the whole run, as the backend names them.
    """

    backend: str = "tensorflow"
    local_devices: int = 1
    processes: int = 1
    process_id: int = 0
    device_names: tuple[str, ...] = ()

    @property
    def devices(self) -> int:
        """The devices of the whole run: each holds one replica of the model."""
        return self.local_devices * self.processes

    @property
    def distributed(self) -> bool:
        """Whether the run trains on more than one device."""
        return self.devices > 1

    @property
    def writes_files(self) -> bool:
        """Whether this process writes the run's files (only process 0 does)."""
        return self.process_id == 0

    @property
    def shards_data(self) -> bool:
        """Whether this process feeds only its part of each batch (JAX does; TF splits
        the global batch itself)."""
        return self.distributed and self.backend == "jax"

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly among the devices.

        Raises:
            ImgrecError: ``batch_size`` is not a multiple of the device count.
        """
        if batch_size % self.devices:
            raise ImgrecError(
                f"--batch-size {batch_size} does not split evenly among {self.devices} devices: "
                f"give a multiple of {self.devices} (the batch size is the global one)"
            )

    def local_batch_size(self, batch_size: int) -> int:
        """The images of each global batch that this process feeds."""
        return batch_size // self.processes if self.shards_data else batch_size

    def shard(self, *arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
        """This process's part of ``arrays`` (images and their labels, all as long).

        A stride of the data (process ``i`` of ``P`` takes images ``i, i + P, ...``),
        cut to the same length in every process and to a multiple of the local device
        count, so that every step splits evenly. Without sharding: ``arrays`` as given.
        """
        if not self.shards_data:
            return arrays
        length = min(len(a) for a in arrays if a is not None)
        keep = (length // self.processes) // self.local_devices * self.local_devices
        if keep == 0:
            raise ImgrecError(
                f"{length} images cannot feed {self.devices} devices: each needs one at least"
            )
        return tuple(
            None if a is None else a[self.process_id :: self.processes][:keep] for a in arrays
        )

    def left_out(self, length: int) -> int:
        """How many of ``length`` images ``shard`` leaves out of the whole run."""
        if not self.shards_data:
            return 0
        keep = (length // self.processes) // self.local_devices * self.local_devices
        return length - keep * self.processes

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The distribution or strategy in force while the model is built and fitted."""
        if not self.distributed:
            yield
        elif self.backend == "jax":
            distribution = keras.distribution.DataParallel(devices=list(self.device_names))
            distribution.auto_shard_dataset = False  # each process feeds its own shard
            with distribution.scope():
                yield
        else:
            import tensorflow as tf

            strategy = tf.distribute.MirroredStrategy(list(self.device_names))
            with strategy.scope():
                yield

    @contextlib.contextmanager
    def output(self, out: str | os.PathLike | None) -> Iterator[str | os.PathLike | None]:
        """Where this process writes its run's files: ``out`` (None: the default), or, in
        every process but process 0, the same name in a temporary folder."""
        if self.writes_files:
            yield out
            return
        name = os.path.basename(os.fspath(out)) if out is not None else "model.keras"
        with tempfile.TemporaryDirectory(prefix=f"imgrec-process{self.process_id}-") as folder:
            yield os.path.join(folder, name)

    def report(self, train_images: int, val_images: int) -> dict[str, Any]:
        """What ``train`` says about the devices of a distributed run."""
        return {
            "devices": self.devices,
            "processes": self.processes,
            "process_id": self.process_id,
            "images_left_out": {
                "train": self.left_out(train_images),
                "val": self.left_out(val_images),
            },
        }


def plan_placement(
    devices: int | str | None = None,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> Placement:
    """Check the device settings of a run and join its processes together.

    Args:
        devices: the devices of this process to train on: a number, ``"all"``, or None
            (one device; every local device when several processes train together).
        coordinator: ``HOST:PORT`` of process 0, for several processes (JAX only).
        num_processes: how many processes train together (with ``coordinator``).
        process_id: this process's index, 0 to ``num_processes - 1``.

    Returns:
        The placement; for several processes, after ``keras.distribution.initialize``.

    Raises:
        ImgrecError: a value out of range, a backend that cannot do what is asked,
            or more devices than this process has.
    """
    backend = keras.backend.backend()
    processes = _check_processes(backend, coordinator, num_processes, process_id)
    # One device by default; every local device when several processes train together.
    wanted = _check_devices(devices) if devices is not None or processes == 1 else None
    if wanted == 1 and processes == 1:
        return Placement(backend=backend)
    if backend == "jax":
        if processes > 1:
            _initialize(coordinator, processes, process_id or 0)
        return _jax_placement(wanted, processes, process_id or 0)
    if backend == "tensorflow":
        return _tensorflow_placement(wanted)
    raise ImgrecError(
        f"--devices {devices}: several devices need KERAS_BACKEND=jax or tensorflow, not {backend}"
    )


def _check_devices(devices: int | str | None) -> int | None:
    """The number of devices asked for, or None for every local device."""
    if devices is None:
        return 1
    if isinstance(devices, str):
        if devices.strip().lower() == ALL_DEVICES:
            return None
        try:
            devices = int(devices)
        except ValueError:
            raise ImgrecError(f"--devices must be a number or 'all', got {devices!r}") from None
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ImgrecError(f"--devices must be at least 1 or 'all', got {devices!r}")
    return devices


def _check_processes(
    backend: str, coordinator: str | None, num_processes: int | None, process_id: int | None
) -> int:
    """The number of processes of the run (1 without a coordinator), checked."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes}
    given["--process-id"] = process_id
    if all(value is None for value in given.values()):
        return 1
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ImgrecError(
            f"several processes need --coordinator, --num-processes and --process-id; "
            f"missing {', '.join(missing)}"
        )
    assert coordinator is not None and num_processes is not None and process_id is not None
    if not _ADDRESS.match(coordinator) or not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536:
        raise ImgrecError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1:
        raise ImgrecError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ImgrecError(
            f"--process-id must be 0 to {num_processes - 1} for {num_processes} processes, "
            f"got {process_id}"
        )
    if backend != "jax":
        raise ImgrecError(
            f"several processes (--coordinator {coordinator}) need KERAS_BACKEND=jax; "
            f"{backend}'s multi-worker strategy does not work with Keras 3 "
            "(keras-team/keras#20585)"
        )
    return num_processes


def _initialize(coordinator: str | None, processes: int, process_id: int) -> None:
    """Join the other processes through the coordinator (once per Python process)."""
    import jax

    if jax.distributed.is_initialized():
        if jax.process_count() != processes or jax.process_index() != process_id:
            raise ImgrecError(
                f"this Python process already trains as process {jax.process_index()} of "
                f"{jax.process_count()}, not {process_id} of {processes}"
            )
        return
    keras.distribution.initialize(coordinator, processes, process_id)


def _jax_placement(wanted: int | None, processes: int, process_id: int) -> Placement:
    """The first ``wanted`` devices of every process (all of them for None)."""
    import jax

    local = jax.local_devices()
    count = len(local) if wanted is None else wanted
    if count > len(local):
        kind = local[0].platform.upper()
        hint = (
            " (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N)"
            if kind == "CPU"
            else ""
        )
        raise ImgrecError(
            f"--devices {wanted}: this process has {len(local)} {kind} device"
            f"{'s' if len(local) != 1 else ''}{hint}"
        )
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    chosen = [d for index in sorted(by_process) for d in by_process[index][:count]]
    names = tuple(f"{d.platform}:{d.id}" for d in chosen)
    return Placement("jax", count, processes, process_id, names)


def _tensorflow_placement(wanted: int | None) -> Placement:
    """The first ``wanted`` GPUs, else logical CPUs, for a ``MirroredStrategy``."""
    import tensorflow as tf

    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    count = len(available) if wanted is None else wanted
    if count > len(available):
        kind = available[0].device_type if available else "CPU"
        raise ImgrecError(
            f"--devices {wanted}: TensorFlow sees {len(available)} {kind} device"
            f"{'s' if len(available) != 1 else ''} (logical CPU devices are made with "
            "tf.config.set_logical_device_configuration before TensorFlow starts)"
        )
    names = tuple(device.name for device in available[:count])
    return Placement("tensorflow", count, 1, 0, names)
