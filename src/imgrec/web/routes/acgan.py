"""The AC-GAN demo's API: which generator the server has, and a digit from class + noise.

GET  /api/acgan            the generator found in the models folder (by the
                           architecture in its metadata), or the command that makes one
POST /api/acgan/generate   ``{"class": 7, "noise": [100 numbers in -1..1]}`` -> the digit

The page draws the noise itself (100 uniform numbers, shown as a 10 x 10 grid) and
sends it; the server runs the generator, which is small enough that one digit takes
milliseconds, under the lock that serialises every Keras call of the server.
"""

from __future__ import annotations

import math
import threading
from typing import Annotated, Any

import keras
import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from imgrec.core.errors import ModelError
from imgrec.models import acgan
from imgrec.web.catalog import CatalogEntry, UnknownModelError
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import ServerSettings, Settings
from imgrec.web.routes.inference import png_data_url

router = APIRouter(tags=["acgan"])

# The longest noise a request may carry: the generator's is checked after.
MAX_NOISE = 4096


class NoGeneratorError(UnknownModelError):
    """The models folder holds no AC-GAN generator."""


class GenerateRequest(BaseModel):
    """A class and a noise vector to draw a digit from."""

    digit: int = Field(alias="class", ge=0, description="the class to draw, 0-9 for digits")
    noise: list[float] = Field(
        max_length=MAX_NOISE, description="the generator's noise: 100 numbers from -1 to 1"
    )


class GeneratorState:
    """The generator of one app, loaded once per file version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: CatalogEntry | None = None
        self._model: keras.Model | None = None

    def get(self, settings: ServerSettings) -> tuple[CatalogEntry, keras.Model]:
        """The models folder's AC-GAN generator, loaded (again when its file changed).

        Raises:
            NoGeneratorError: the folder holds none (the message names the command).
        """
        entry = settings.catalog.find_architecture(acgan.ARCHITECTURE)
        if entry is None:
            where = settings.catalog.models_dir or "a folder given to 'imgrec serve --models'"
            raise NoGeneratorError(
                f"no AC-GAN generator in the models folder; make one in {where} with: "
                f"{acgan.TRAIN_COMMAND}"
            )
        with self._lock:
            if self._entry != entry or self._model is None:
                with settings.cache.lock:
                    self._model = acgan.load_generator(entry.source)
                self._entry = entry
            return entry, self._model


_STATE_LOCK = threading.Lock()


def _state(request: Request) -> GeneratorState:
    with _STATE_LOCK:
        state = getattr(request.app.state, "acgan", None)
        if state is None:
            state = request.app.state.acgan = GeneratorState()
        return state


State = Annotated[GeneratorState, Depends(_state)]


@router.get("/api/acgan")
def generator_info(settings: Settings) -> dict[str, Any]:
    """The generator the demo uses (``model`` is null when there is none) and the
    command that makes one."""
    entry = settings.catalog.find_architecture(acgan.ARCHITECTURE)
    return {
        "model": None if entry is None else entry.name,
        "command": acgan.TRAIN_COMMAND,
        "latent": acgan.LATENT_DIM,
        "classes": [str(i) for i in range(acgan.NUM_CLASSES)],
    }


@router.post("/api/acgan/generate", responses={404: ERRORS[404], 422: ERRORS[422]})
def generate_digit(settings: Settings, state: State, body: GenerateRequest) -> dict[str, Any]:
    """One digit of ``class`` from ``noise``, as a 28 x 28 grey PNG (a data URL)."""
    entry, generator = state.get(settings)
    latent = acgan.latent_size(generator)
    if len(body.noise) != latent or not all(math.isfinite(v) for v in body.noise):
        raise ModelError(f"noise: expected {latent} finite numbers from -1 to 1")
    with settings.cache.lock:
        image = acgan.generate(generator, body.digit, noise=np.asarray(body.noise, np.float32))
    return {
        "model": entry.name,
        "class": body.digit,
        "class_name": acgan.class_names(generator)[body.digit],
        "image": png_data_url(image[0, :, :, 0]),
    }
