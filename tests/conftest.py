"""Shared fixtures: an isolated imgrec/Keras environment, the sample photos, one model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgrec.core.samples import sample_path

# System parts some tests need, by marker: the file that shows the part is installed, and the
# Debian package that installs it. `make test` installs them when it can (as root with
# apt-get); elsewhere the marked tests are skipped with one line naming the package. With
# IMGREC_REQUIRE_SYSTEM=1 (CI) a missing part fails the run instead.
SYSTEM_PARTS = {
    "browser": (Path("/usr/bin/chromium"), "chromium"),
    "fashion_mnist": (
        Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        "dataset-fashion-mnist",
    ),
}


def missing_system_parts() -> dict[str, str]:
    """Marker -> Debian package, for each system part that is not installed here."""
    return {
        marker: package for marker, (path, package) in SYSTEM_PARTS.items() if not path.exists()
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_system_parts()
    if not missing:
        return
    needed = {m: p for m, p in missing.items() if any(m in item.keywords for item in items)}
    if needed and os.environ.get("IMGREC_REQUIRE_SYSTEM") == "1":
        packages = " ".join(sorted(needed.values()))
        raise pytest.UsageError(
            f"IMGREC_REQUIRE_SYSTEM=1 but Debian's {packages} is missing: "
            f"apt-get install {packages}"
        )
    for marker, package in needed.items():
        skip = pytest.mark.skip(reason=f"needs Debian's {package}: apt-get install {package}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run every test (and every subprocess a test starts) away from the user's files.

    - IMGREC_HOME: imgrec's cache (converted weights, zoo counts) goes to a temp dir.
    - KERAS_HOME: an empty Keras home, so a developer's ~/.keras/models cannot put other
      weights in front of the offline package and change the results.
    - IMGREC_OFFLINE=1: the tests must not reach the network. The download step is the
      one thing that would need a host outside this machine; what is tested is its
      fallback (the offline package, or a message saying what to fetch and where).

    Imported modules read these at call time, and subprocesses inherit os.environ.
    (Keras itself reads KERAS_HOME/keras.json once, when test modules import it.)
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGREC_HOME", str(tmp_path_factory.mktemp("imgrec_home")))
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        mp.setenv("IMGREC_OFFLINE", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def warm_converter(isolated_environment) -> Iterator[None]:
    """Converters run in a fork of a Python that imported TensorFlow once, not a new one.

    imgrec converts a user's model file in a child process (``python -m
    imgrec.deploy.converter_process``), which imports TensorFlow first: 5 to 8 s of CPU,
    for each of the suite's many exports. Here the child is a fork of a waiting process
    that imported it once (tests/warm_imgrec.py), started on the first export: the same
    module runs, on the same request, in a process of its own, which may crash alone (its
    signal ends the launcher too). Commands that imgrec runs from a subprocess of a test
    (``imgrec predict`` in a shell) still start a fresh interpreter for their converter:
    test_hostile_models.py's crash of the CLI goes that way.
    """
    from warm_imgrec import shared

    from imgrec.deploy import converter_process

    # Read by a converter only once it runs: they may differ from the waiting process's.
    free = (converter_process.CRASH_HOOK, "IMGREC_HOME")
    # What a converter imports first (besides TensorFlow and Keras).
    preload = ("imgrec.deploy.converters", "onnx", "tf2onnx")

    def warm_command() -> list[str]:
        env = converter_process._child_environment()
        warm = shared("converter", env, free, preload=preload)
        return [str(warm.bin / "python"), "-m", converter_process.__name__]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(converter_process, "_child_command", warm_command)
        yield


@pytest.fixture(scope="session")
def chelsea_path() -> Path:
    """scikit-image's cat photo: MobileNetV2 says "Egyptian cat" (ImageNet class 285)."""
    return sample_path("chelsea")


@pytest.fixture(scope="session")
def coffee_path() -> Path:
    """scikit-image's coffee photo: MobileNetV2 says "espresso" (ImageNet class 967)."""
    return sample_path("coffee")


@pytest.fixture(scope="session")
def mobilenet(isolated_environment):
    """The default network with the offline package's weights, loaded once per session."""
    import imgrec

    return imgrec.load_model("mobilenet_v2")
