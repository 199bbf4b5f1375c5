"""What the routes take: the server's settings, the image of a request, its model.

An image comes as one of three form fields: ``sample`` (a name from ``/api/samples``),
``url`` (fetched by ``imgrec.web.fetch``, a few at a time) or ``file`` (an upload).
Whichever it is, it is decoded under the server's memory budget and brought to the
model's input size at once (``model_and_image``): what waits for the network is a
small array, never a full-size photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, File, Form, HTTPException, Request, UploadFile

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.core.images import decode_cost, load_image
from imgrec.core.samples import SAMPLES, sample_path
from imgrec.models.preprocessing import Preprocessing
from imgrec.web.catalog import ModelCatalog
from imgrec.web.fetch import AllowList, fetch_url
from imgrec.web.limits import DecodeBudget, Slots
from imgrec.web.model_cache import LoadedModel, ModelCache


@dataclass(frozen=True)
class ServerSettings:
    """What ``create_app`` was given, kept on ``app.state.imgrec`` for the routes.

    Args:
        catalog: the networks on offer.
        cache: the loaded models and the lock around Keras calls.
        allow_hosts: non-public hosts that image URLs may still reach.
        upload_limit: the largest upload or fetched body, in bytes.
        fetch_timeout: seconds for fetching one image URL, redirects included.
        max_pixels: the pixel cap for decoding, or ``None`` for ``load_image``'s default.
        fetches: the image URLs that may be fetched at once (503 beyond).
        decoding: the memory budget and the slots that decoding is admitted by.
    """

    catalog: ModelCatalog
    cache: ModelCache
    allow_hosts: AllowList
    upload_limit: int
    fetch_timeout: float
    max_pixels: int | None
    fetches: Slots
    decoding: DecodeBudget


def _settings(request: Request) -> ServerSettings:
    return request.app.state.imgrec


Settings = Annotated[ServerSettings, Depends(_settings)]
ModelName = Annotated[str, Form(description="a name from /api/models", examples=[DEFAULT_MODEL])]


async def single_form_values(request: Request) -> None:
    """Refuse a form that gives one field twice (FastAPI would keep the last silently).

    Raises:
        HTTPException: 400, naming the field.
    """
    form = await request.form()
    for key in dict.fromkeys(form.keys()):
        count = len(form.getlist(key))
        if count > 1:
            raise HTTPException(400, f"the form field {key!r} is given {count} times; give it once")


@dataclass(frozen=True)
class ImageSource:
    """Exactly one of a sample name, an image URL, or an upload."""

    sample: str | None
    url: str | None
    file: UploadFile | None


def _image_source(
    sample: Annotated[str | None, Form(description="a name from /api/samples")] = None,
    url: Annotated[str | None, Form(description="an http(s) URL of an image")] = None,
    file: Annotated[UploadFile | None, File(description="an image file")] = None,
) -> ImageSource:
    given = [name for name, value in (("sample", sample), ("url", url), ("file", file)) if value]
    if len(given) != 1:
        raise HTTPException(
            400,
            "give exactly one image: a 'sample', a 'url' or a 'file'"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    return ImageSource(sample or None, url or None, file)


Source = Annotated[ImageSource, Depends(_image_source)]


def unknown_sample(name: str) -> HTTPException:
    """The 404 for a sample name that is not in the listing."""
    return HTTPException(404, f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")


def image_data(settings: ServerSettings, source: ImageSource) -> tuple[bytes | Path, str]:
    """The source's file or bytes, and its name for messages; sizes and URLs checked.

    Raises:
        HTTPException: 404 for an unknown sample, 413 for an upload over the limit.
        ServerBusyError: every fetch slot is taken.
        FetchError: the URL is refused or cannot be fetched.
    """
    if source.sample is not None:
        if source.sample not in SAMPLES:
            raise unknown_sample(source.sample)
        return sample_path(source.sample), source.sample
    limit = settings.upload_limit
    if source.url is not None:
        with settings.fetches.hold():
            data = fetch_url(
                source.url,
                allow_hosts=settings.allow_hosts,
                timeout=settings.fetch_timeout,
                max_bytes=limit,
            )
        return data, source.url
    assert source.file is not None  # _image_source made sure one of the three is there
    name = source.file.filename or "upload"
    data = source.file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{name}: larger than the upload limit of {limit:,} bytes")
    return data, name


def model_and_image(
    settings: ServerSettings, model: str, source: ImageSource
) -> tuple[LoadedModel, np.ndarray, str]:
    """The loaded model, the photo at the model's input size (grey or colour), its name.

    The cheap refusals (unknown model, bad URL, oversized upload) come before a load;
    the header's refusals (not an image, over the pixel cap) before waiting for memory.

    Raises:
        ImageError: not an image, over the pixel cap, corrupt.
        DecodeTooLargeError, ServerBusyError: no memory to decode it (413, 503).
    """
    entry = settings.catalog.find(model)
    data, name = image_data(settings, source)
    loaded = settings.cache.get(entry)
    recipe = loaded.info.preprocessing
    side = decode_side(recipe)
    cost = decode_cost(data, max_pixels=settings.max_pixels, name=name, min_side=side)
    with settings.decoding.admit(cost, name):
        image = load_image(
            data, mode=loaded.mode, max_pixels=settings.max_pixels, name=name, min_side=side
        )
        image = model_view(recipe, image)
    return loaded, image, name


def decode_side(recipe: Preprocessing) -> int:
    """The size a photo is resized to for ``recipe``: what decoding may shrink it towards."""
    return max(*recipe.size, recipe.resize_to or 0)


def model_view(recipe: Preprocessing, image: np.ndarray) -> np.ndarray:
    """``image`` made small without changing what ``recipe`` makes of it.

    A ``"stretch"`` recipe resizes straight to the input size, which it leaves as it
    is: the image is resized now. A ``"short_side"`` recipe keeps a central part of
    the photo; a photo longer than twice its width (or the other way round) keeps
    only the middle of its long side around that part, so that a 50-megapixel strip
    cannot wait for the network at full length. Others are kept as they are: the
    recipe gives them exactly the input it gave before.
    """
    if recipe.resize == "stretch":
        return recipe.resize_and_crop(image)
    height, width = image.shape[:2]
    short, long = sorted((height, width))
    if long <= 2 * short:
        return image
    left, top, right, bottom = recipe.source_box(height, width)
    needed = (right - left) if width > height else (bottom - top)
    keep = min(long, max(short, math.ceil(needed) + 2))
    start = (long - keep) // 2
    kept = image[:, start : start + keep] if width > height else image[start : start + keep]
    return np.ascontiguousarray(kept)
