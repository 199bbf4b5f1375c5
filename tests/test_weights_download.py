"""The download step of weights resolution: fetch into the Keras cache, else fall back.

Reaching Keras's weights host needs a network outside this machine, so these tests
replace exactly two things: the reachability probe, and Keras's ``get_file`` (the
function its applications call to fetch weights). What the stand-in "downloads" is
written locally, in the legacy HDF5 format Keras serves; everything else is real.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras.src.utils import file_utils

from imgrec.core.errors import WeightsError
from imgrec.core.storage import keras_models_dir
from imgrec.models import pretrained
from imgrec.models.metadata import model_info
from imgrec.models.pretrained import load_pretrained

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The weights host answers; the Keras cache starts empty."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(pretrained, "weights_host_reachable", lambda: True)


def _no_route(fname, origin, **kwargs):
    raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")


def test_failed_download_falls_back_to_the_offline_package(online, monkeypatch, capsys):
    monkeypatch.setattr(file_utils, "get_file", _no_route)
    model = load_pretrained("mobilenet_v2")
    assert model_info(model).weights.startswith("offline package")
    assert model_info(model).preprocessing.name == "torchvision"
    assert "using the offline package instead" in capsys.readouterr().err


def test_failed_download_without_offline_package_is_a_clear_error(online, monkeypatch):
    monkeypatch.setattr(file_utils, "get_file", _no_route)
    with pytest.raises(WeightsError, match="downloading resnet50_weights_tf_dim_ordering"):
        load_pretrained("resnet50")


def test_downloaded_weights_land_in_the_keras_cache_and_are_reused(online, monkeypatch, tmp_path):
    served = keras.applications.MobileNetV2(weights=None)
    served.save(tmp_path / "served.h5")  # legacy HDF5, like Keras's published files
    fetched = []

    def fake_get_file(fname, origin, cache_subdir="datasets", **kwargs):
        fetched.append(fname)
        target = keras_models_dir() / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((tmp_path / "served.h5").read_bytes())
        return str(target)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    first = load_pretrained("mobilenet_v2")
    assert fetched == ["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"]
    assert model_info(first).weights.startswith("download")
    assert model_info(first).preprocessing.name == "keras:tf"
    for got, want in zip(first.get_weights(), served.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    second = load_pretrained("mobilenet_v2")
    assert model_info(second).weights.startswith("Keras cache")
    assert len(fetched) == 1  # the cache answered; nothing fetched again
