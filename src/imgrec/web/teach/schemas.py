"""The Teach API's JSON shapes, for validation and for ``/docs`` (see ``TEACH_API.md``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imgrec.web.schemas import ErrorBody

__all__ = ["ErrorBody"]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="what people read; 1-100 characters", examples=["Cats or coffee"])
    backbone: str | None = Field(
        None, description="mobilenet_v2 (default) or efficientnet_lite0", examples=["mobilenet_v2"]
    )
    image_size: int | None = Field(
        None, description="the backbone's input side, 96-224 (default 160)", examples=[160]
    )
    classes: list[str] = Field(default_factory=list, description="classes to create at once")
    from_model: str | None = Field(
        None,
        description="a name from /api/models: a .keras file (its classes) or another "
        "project's teach:ID (its classes and samples), to retrain with new samples",
    )


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(examples=["cat"])


class TrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backbone: str | None = Field(None, description="default: the project's")
    image_size: int | None = Field(None, description="default: the project's")
    epochs: int = Field(50, ge=1, le=200)
    batch_size: int = Field(16, ge=1, le=512)
    learning_rate: float = Field(0.001, gt=0, le=1)
    augment: bool = Field(False, description="also train on mirrored and cropped samples")
    resume: bool = Field(False, description="continue the interrupted or cancelled run")


class ClassOut(BaseModel):
    name: str
    samples: int
    url: str


class RunOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    state: str = Field(
        description="queued, features, training, done, failed, cancelled or interrupted"
    )
    active: bool
    resumable: bool
    options: dict[str, Any]
    started: str
    finished: str | None
    progress: dict[str, Any] = Field(description="stage (features, training, saving), done, total")
    epoch: int
    epochs: int
    history: list[dict[str, Any]] = Field(
        description="per epoch: epoch, loss, accuracy, val_loss, val_accuracy"
    )
    error: str | None
    seconds: float | None
    metrics: dict[str, Any] | None = Field(
        description="held-out: classes, trained_on, held_out, accuracy, per_class, confusion, "
        "mistakes"
    )


class ProjectOut(BaseModel):
    id: str = Field(examples=["p-3f9a0c1d2e4b"])
    name: str
    created: str
    backbone: str
    image_size: int
    classes: list[ClassOut]
    samples: int
    bytes: int
    limits: dict[str, int]
    run: RunOut | None
    model: dict[str, Any] | None = Field(description="run, classes, catalog_name, downloads")
    samples_zip: str


class ProjectSummary(BaseModel):
    id: str
    name: str
    created: str
    classes: int
    samples: int
    state: str | None
    has_model: bool


class ProjectList(BaseModel):
    projects: list[ProjectSummary]
    limits: dict[str, int]
    backbones: list[str]


class SampleOut(BaseModel):
    id: str
    class_: str = Field(alias="class")
    bytes: int
    added: str
    url: str
    thumbnail: str


class SamplesAdded(BaseModel):
    added: list[SampleOut]
    project: ProjectOut


class SampleList(BaseModel):
    class_: str = Field(alias="class")
    samples: list[SampleOut]


class TopClass(BaseModel):
    class_: str = Field(alias="class")
    index: int
    probability: float


class TeachPrediction(BaseModel):
    image: str
    classes: list[str]
    probabilities: list[float]
    top: TopClass
    cam: dict[str, Any] | None = Field(
        description="image, heatmap (PNG data URLs), method, layer, class_index, class_name, "
        "probability; as /api/explain"
    )
