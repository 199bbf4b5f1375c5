"""The JSON shapes of the web API: they validate what the server sends and document it.

FastAPI turns these into the OpenAPI description behind ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every failure: a 4xx status (5xx for a bug) and one message naming the input at fault."""

    error: str = Field(examples=["cat.jpg: not an image, or not in a supported format (...)"])


class ModelEntry(BaseModel):
    name: str = Field(description="what the API takes", examples=["mobilenet_v2"])
    label: str = Field(description="what people read", examples=["MobileNetV2"])
    kind: str = Field(description="'zoo' (ImageNet, weights on this machine) or 'file' (.keras)")
    loaded: bool = Field(description="loaded and warm: the next request needs no load")


class ModelList(BaseModel):
    models: list[ModelEntry]
    default: str | None = Field(description="the model the page selects first")
    upload_limit: int = Field(description="the largest upload or URL body accepted, in bytes")


class Sample(BaseModel):
    name: str = Field(examples=["chelsea"])
    url: str = Field(description="the photo itself", examples=["/api/samples/chelsea"])


class SampleList(BaseModel):
    samples: list[Sample]


class ClassScore(BaseModel):
    rank: int
    class_: str = Field(alias="class", examples=["Egyptian cat"])
    index: int = Field(examples=[285])
    probability: float = Field(examples=[0.7139])


class Prediction(BaseModel):
    image: str = Field(description="the sample name, the URL, or the upload's file name")
    model: str = Field(examples=["MobileNetV2"])
    weights: str = Field(description="where the model's weights came from")
    runtime: str | None = Field(None, description="what ran the network", examples=["keras"])
    top: list[ClassScore]
    time_ms: float = Field(description="the network's forward pass, after a warm-up")
    fps: float


class Explanation(BaseModel):
    image: str = Field(description="the photo as the model saw it, a PNG data URL")
    heatmap: str = Field(
        description="the class activation map, a grey PNG data URL of the image's size "
        "(0 = no evidence, 255 = the strongest); colour it with /api/colormaps"
    )
    method: str = Field(examples=["gradcam"])
    layer: str = Field(description="the feature layer the map comes from")
    class_index: int
    class_name: str
    probability: float


class Colormaps(BaseModel):
    default: str = Field(examples=["jet"])
    colormaps: dict[str, list[list[int]]] = Field(
        description="per colormap, 256 RGB colours: heatmap value v gets colour [v]"
    )


class LayerList(BaseModel):
    model: str
    layers: list[dict[str, Any]] = Field(
        description="name, type, output_shape, parameters, trainable; in order"
    )


class Activations(BaseModel):
    layer: str
    shape: list[int] = Field(description="height, width and channels of the layer's output")
    channels: list[str] = Field(
        description="the first channels' feature maps as PNG data URLs in viridis, each "
        "scaled from its own minimum to its maximum, small maps enlarged pixel for pixel"
    )


class BrowserRuntime(BaseModel):
    available: bool = Field(description="whether the page can run models in the browser")
    package: str = Field(examples=["onnxruntime-web"])
    version: str | None = Field(description="the installed version", examples=["1.30.0"])
    wasm: str | None = Field(
        description="the JavaScript module of the CPU (WASM) backend",
        examples=["/vendor/onnxruntime-web/ort.wasm.min.mjs"],
    )
    webgpu: str | None = Field(
        description="the JavaScript module of the WebGPU backend (WASM as well)",
        examples=["/vendor/onnxruntime-web/ort.webgpu.min.mjs"],
    )
    message: str | None = Field(description="why it is not available, and how to install it")


class OnnxPreprocessing(BaseModel):
    size: list[int] = Field(description="the model's input height and width", examples=[[224, 224]])
    resize: str = Field(
        description="'stretch' (straight to size) or 'short_side' (short side to resize_to, "
        "then the central size crop)"
    )
    resize_to: int | None
    scale: float = Field(description="pixels (0-255) are multiplied by this first")
    mean: list[float] = Field(description="then this is subtracted, per channel")
    std: list[float] = Field(description="then this divides, per channel")
    bgr: bool = Field(description="reverse the channels to BGR before normalising")
    name: str


class OnnxModel(BaseModel):
    model: str = Field(description="the name in /api/models", examples=["mobilenet_v2"])
    label: str = Field(description="the network's name", examples=["MobileNetV2"])
    onnx: str = Field(
        description="the ONNX file itself", examples=["/api/models/mobilenet_v2/onnx"]
    )
    sha256: str = Field(description="the ONNX file's SHA-256, hex")
    bytes: int
    class_names: list[str]
    preprocessing: OnnxPreprocessing
    input: dict[str, Any] = Field(
        description="name, shape [null, H, W, C] (channels last, float32), color and the "
        "preprocessing steps in words"
    )
    output: dict[str, Any] = Field(
        description="name, shape [null, units]; one unit is a sigmoid: the last class's probability"
    )
