"""Shared fixtures: an isolated imgrec/Keras environment, the sample photos, one model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgrec.core.samples import sample_path


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
