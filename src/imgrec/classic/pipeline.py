"""Train, save and load a traditional pipeline: features, scaling, selection, classifier.

``classic_train`` reads a data set with the same arguments, splits and broken-file
handling as ``imgrec.train``, extracts hand-made features (``imgrec.classic.features``)
and fits a scikit-learn ``Pipeline``: ``StandardScaler`` (features of different kinds
get the same weight), an optional selection (``SelectKBest`` or ``PCA``), and a
classifier. The result is a :class:`ClassicModel`.

A saved model is two files: ``model.joblib``, the fitted scikit-learn pipeline written
by ``joblib``, and ``model.joblib.json`` beside it, with the SHA-256 of the first and
what the model needs besides (class names, image size, channels, the resolved spec, the
data set's fingerprint). A ``.joblib`` file is a pickle: loading it can run any code it
names. ``load_classic`` therefore refuses, with ``UnsafeFileError``, a file whose digest
file is missing or names another digest, and unpickles only the bytes it checked. The
digest tells that the file is the one imgrec wrote next to it; it cannot tell who wrote
the pair, so load only models you trained yourself, never ones from elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgrec.classic.features import extract_features, feature_length, resolve_features
from imgrec.classic.spec import (
    CLASSIFIERS,
    Part,
    PipelineSpec,
    make_spec,
    parse_spec,
    with_defaults,
)
from imgrec.core.errors import ModelError, SpecError, UnsafeFileError
from imgrec.core.storage import write_bytes_atomic
from imgrec.datasets import Dataset, Split, load_dataset
from imgrec.models.tta import shift

MODEL_SUFFIX = ".joblib"
SIDECAR_SUFFIX = ".json"
FORMAT = "imgrec-classic"
FORMAT_VERSION = 1

#: The size folder photos are decoded to when no ``image_size`` is given: HOG then has
#: 8 x 8 cells of 8 pixels, the textbook's layout.
DEFAULT_FOLDER_SIZE = (64, 64)

# libsvm's kernel cache in MB: a larger cache than scikit-learn's 200 MB cuts SVC's
# training time on tens of thousands of images.
_SVM_CACHE_MB = 1000


@dataclass
class ClassicModel:
    """A trained traditional pipeline: imgrec's feature extraction, then scikit-learn.

    Attributes:
        estimator: the fitted ``sklearn.pipeline.Pipeline`` (scaler, selection,
            classifier) that takes feature vectors.
        spec: the pipeline with every option resolved (``str(spec)`` gives it in the
            ``imgrec compare --classic`` form).
        class_names: the name of each class; label ``i`` is ``class_names[i]``.
        input_shape: (height, width, channels) of the images it takes.
        training: how it was trained: data set name, source and fingerprint, split,
            seed, sizes and times.
    """

    estimator: Any
    spec: PipelineSpec
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    training: dict[str, Any] = field(default_factory=dict)

    def features(
        self, images: np.ndarray, *, jobs: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """The feature vectors of uint8 images of ``input_shape`` (N x H x W x C).

        Raises:
            ValueError: images of another shape or type.
        """
        images = np.asanyarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"this model takes N x {' x '.join(map(str, self.input_shape))} images, "
                f"got {' x '.join(map(str, images.shape))}"
            )
        return extract_features(images, self.spec.features, jobs=jobs, progress=progress)

    def predict_proba(
        self, images: np.ndarray, *, jobs: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Class scores, N x classes, each row summing to 1; the argmax is the prediction.

        Random forests, k-NN and logistic regression give their probabilities. SVMs
        have none without a costly calibration: their scores are the softmax of the
        one-vs-rest decision values, which rank the classes (top-k accuracy, the most
        confident mistakes) but are not calibrated probabilities.

        Args:
            images: uint8, N x H x W x C, at the model's ``input_shape``.
            jobs, progress: as for ``extract_features``.
        """
        return class_scores(
            self.estimator,
            self.features(images, jobs=jobs, progress=progress),
            len(self.class_names),
        )

    def predict(
        self, images: np.ndarray, *, jobs: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """The predicted class index of each image (uint8, N x H x W x C)."""
        return self.predict_proba(images, jobs=jobs, progress=progress).argmax(axis=1)


def class_scores(estimator: Any, features: np.ndarray, classes: int) -> np.ndarray:
    """A fitted classifier's scores for ``features``, N x ``classes``, rows summing to 1.

    ``predict_proba`` where the classifier has it, else the softmax of
    ``decision_function`` (SVMs). Classes the classifier never saw get 0.
    """
    if hasattr(estimator, "predict_proba"):
        scores = estimator.predict_proba(features)
    else:
        decision = np.asarray(estimator.decision_function(features), dtype=np.float64)
        if decision.ndim == 1:  # two classes: one signed distance, positive = classes_[1]
            decision = np.stack([-decision, decision], axis=1)
        decision -= decision.max(axis=1, keepdims=True)
        scores = np.exp(decision)
        scores /= scores.sum(axis=1, keepdims=True)
    out = np.zeros((len(features), classes))
    out[:, np.asarray(estimator.classes_, dtype=np.int64)] = scores
    return out


def build_estimator(spec: PipelineSpec, *, seed: int = 0, jobs: int | None = None) -> Any:
    """The unfitted scikit-learn ``Pipeline`` for ``spec``: scaler, selection, classifier.

    Args:
        spec: a pipeline spec; missing classifier options take their defaults.
        seed: seeds PCA's randomised solver and the random forest.
        jobs: cores for the random forest and k-NN (None: one per core).
    """
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    jobs = jobs or -1
    options = dict(with_defaults(spec.classifier, CLASSIFIERS).options)
    name = spec.classifier.name
    if name == "svm":
        # break_ties: the prediction is then the argmax of the scores evaluate() uses.
        classifier = SVC(
            C=options["C"], gamma=options["gamma"], break_ties=True, cache_size=_SVM_CACHE_MB
        )
    elif name == "linear-svm":
        classifier = LinearSVC(C=options["C"], random_state=seed)
    elif name == "rf":
        classifier = RandomForestClassifier(
            n_estimators=options["trees"],
            max_depth=options.get("depth"),
            n_jobs=jobs,
            random_state=seed,
        )
    elif name == "knn":
        classifier = KNeighborsClassifier(n_neighbors=options["k"], n_jobs=jobs)
    else:
        classifier = LogisticRegression(C=options["C"], max_iter=1000)
    count = spec.select.option("count")
    if spec.select.name == "kbest":
        select = SelectKBest(f_classif, k=count)
    elif spec.select.name == "pca":
        select = PCA(n_components=count, random_state=seed)
    else:
        select = "passthrough"
    return Pipeline([("scale", StandardScaler()), ("select", select), ("classify", classifier)])


def classic_train(
    dataset: str | os.PathLike | Dataset,
    *,
    features: str = "hog",
    select: str = "none",
    classifier: str = "svm",
    out: str | os.PathLike = "model.joblib",
    image_size: tuple[int, int] | None = None,
    val_split: float | None = None,
    limit_per_class: int | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a traditional pipeline on ``dataset`` and save it to ``out``.

    Args:
        dataset: a data set name or path, as for ``imgrec.train`` (see ``imgrec
            datasets``), or a loaded ``Dataset``.
        features: comma-separated features with options: ``hog``, ``lbp``,
            ``color-hist``, ``raw`` (``imgrec.classic.spec`` lists the options).
        select: ``none``, ``kbest:K`` or ``pca:N``.
        classifier: ``svm``, ``linear-svm``, ``rf``, ``knn`` or ``logreg``, with
            options such as ``svm:C=10:gamma=scale``.
        out: the model file, ending in ``.joblib``; its digest file
            ``<out>.json`` goes beside it. Both are written atomically.
        image_size: (height, width) for photos (default 64 x 64); array data sets
            keep their own size unless this is given.
        val_split: fraction of the training images held out to report a
            validation accuracy (default 0.1); 0 trains on all of them.
        limit_per_class: keep at most this many training images per class.
        seed: chooses the split and seeds PCA and the random forest (default 0).
        jobs: processes for feature extraction, cores for the random forest and
            k-NN (default: one per core).
        progress: show progress bars (decoding, features) on stderr.

    Returns:
        ``model`` and ``sidecar`` (paths), ``spec`` (resolved), ``features`` (vector
        length), ``train_images``, ``virtual_images`` (``svm:virtual=1``'s, else 0),
        ``val_accuracy`` (None without a validation split), ``seconds``
        (``features``, ``fit``, with ``svm:virtual=1`` ``virtual``, ``total``), ``dataset`` (its
        summary) and ``skipped`` (files that could not be read, with reasons).

    Raises:
        SpecError: a bad features, selection or classifier spec, or a selection
            larger than the features.
        DatasetError: the data set cannot be read or split as asked.
        ModelError: ``out`` does not end in ``.joblib``.
    """
    out = _model_file(out)
    spec = make_spec(features, select, classifier)
    val_split = 0.1 if val_split is None else val_split
    seed = seed or 0
    start = time.perf_counter()
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(
            dataset,
            image_size=image_size,
            default_image_size=DEFAULT_FOLDER_SIZE,
            val_split=val_split,
            limit_per_class=limit_per_class,
            seed=seed,
            progress=progress,
        )
    model, length = _new_model(spec, dataset, seed=seed, jobs=jobs)
    seconds, virtual = _fit(model, dataset.train, jobs=jobs, progress=progress)
    val_accuracy = _accuracy(model, dataset.val, jobs=jobs, progress=progress)
    seconds["total"] = time.perf_counter() - start
    model.training = _training_record(
        dataset, val_split, seed, limit_per_class, val_accuracy, seconds, virtual
    )
    save_classic(model, out)
    return _summary(model, out, length, dataset)


def _summary(model: ClassicModel, out: Path, length: int, dataset: Dataset) -> dict[str, Any]:
    """What ``classic_train`` returns about the model it saved to ``out``."""
    return {
        "model": str(out),
        "sidecar": str(sidecar_path(out)),
        "spec": str(model.spec),
        "features": length,
        "train_images": len(dataset.train),
        "virtual_images": model.training["virtual_images"],
        "val_accuracy": model.training["val_accuracy"],
        "seconds": model.training["seconds"],
        "dataset": dataset.summary(),
        "skipped": [vars(s) for s in dataset.skipped],
    }


def _new_model(
    spec: PipelineSpec, dataset: Dataset, *, seed: int, jobs: int | None
) -> tuple[ClassicModel, int]:
    """The unfitted model for ``dataset``'s images, and its feature vectors' length.

    Raises:
        SpecError: a selection larger than the features, or than PCA can keep.
    """
    shape = tuple(int(n) for n in dataset.train.images.shape[1:])
    spec = PipelineSpec(
        resolve_features(spec.features, shape),
        spec.select,
        with_defaults(spec.classifier, CLASSIFIERS),
    )
    length = feature_length(spec.features, shape)
    _check_selection(spec.select, length, len(dataset.train))
    model = ClassicModel(
        estimator=build_estimator(spec, seed=seed, jobs=jobs),
        spec=spec,
        class_names=tuple(dataset.class_names),
        input_shape=shape,
    )
    return model, length


def _model_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; ModelError unless it ends in ``.joblib``."""
    path = Path(path)
    if path.suffix != MODEL_SUFFIX:
        raise ModelError(f"{path}: a traditional pipeline's file must end in {MODEL_SUFFIX}")
    return path


def _fit(
    model: ClassicModel, train: Split, *, jobs: int | None, progress: bool
) -> tuple[dict[str, float], int]:
    """Extract the training images' features and fit; the seconds each took, and the
    number of virtual images.

    With ``svm:virtual=1`` the pipeline is then fitted again on the training images and
    the virtual ones (``virtual_examples``); ``virtual`` is the seconds that took.
    """
    extracting = time.perf_counter()
    train_features = model.features(train.images, jobs=jobs, progress=progress)
    fitting = time.perf_counter()
    _fit_estimator(model.estimator, train_features, train.labels)
    fitted = time.perf_counter()
    seconds = {"features": fitting - extracting, "fit": fitted - fitting}
    if not model.spec.classifier.option("virtual"):
        return seconds, 0
    support = model.estimator.named_steps["classify"].support_
    images, labels = virtual_examples(train.images[support], train.labels[support])
    virtual_features = model.features(images, jobs=jobs, progress=progress)
    _fit_estimator(
        model.estimator,
        np.concatenate([train_features, virtual_features]),
        np.concatenate([train.labels, labels]),
    )
    seconds["virtual"] = time.perf_counter() - fitted
    return seconds, len(images)


def virtual_examples(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image moved one pixel down, up, right and left, with its label.

    Decoste and Schoelkopf, "Training Invariant Support Vector Machines" (Machine
    Learning 46, 2002): an SVM knows nothing of translation; its support vectors, the
    training images that decide its boundary, moved by a pixel and added to the
    training images teach it some. The uncovered row or column is filled by reflection
    (``imgrec.models.tta.shift``).
    """
    moves = ((1, 0), (-1, 0), (0, 1), (0, -1))
    moved = np.concatenate([shift(images, down, right) for down, right in moves])
    return moved, np.tile(labels, len(moves))


def _fit_estimator(estimator: Any, features: np.ndarray, labels: np.ndarray) -> None:
    """``estimator.fit``, quiet about constant features."""
    with warnings.catch_warnings():
        # Features constant over the training images (HOG cells of an always-black
        # border) have no F-value: SelectKBest warns, then ranks them last, as it should.
        warnings.filterwarnings("ignore", r"Features [\s\S]* are constant", UserWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        estimator.fit(features, labels)


def _accuracy(
    model: ClassicModel, split: Split | None, *, jobs: int | None, progress: bool
) -> float | None:
    """The model's accuracy on ``split``; None without one (or an empty one)."""
    if split is None or not len(split):
        return None
    predicted = model.predict(split.images, jobs=jobs, progress=progress)
    return float((predicted == split.labels).mean())


def _training_record(
    dataset: Dataset,
    val_split: float,
    seed: int,
    limit_per_class: int | None,
    val_accuracy: float | None,
    seconds: dict[str, float],
    virtual_images: int,
) -> dict[str, Any]:
    """What the digest file records about how a model was trained."""
    return {
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
        },
        "val_split": val_split,
        "seed": seed,
        "limit_per_class": limit_per_class,
        "train_images": len(dataset.train),
        "virtual_images": virtual_images,
        "val_accuracy": val_accuracy,
        "skipped": [vars(s) for s in dataset.skipped],
        "seconds": seconds,
    }


def sidecar_path(path: str | os.PathLike) -> Path:
    """The digest and metadata file of a model file: ``model.joblib`` -> ``model.joblib.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_classic_file(path: object) -> bool:
    """Whether ``path`` names a traditional pipeline's file (it ends in ``.joblib``)."""
    return isinstance(path, str | os.PathLike) and os.fspath(path).endswith(MODEL_SUFFIX)


def save_classic(model: ClassicModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (``.joblib``) and its digest file beside it, atomically.

    The model file is written first: a run killed between the two leaves an old digest
    file that no longer matches, so the half-saved model is refused, never loaded.

    Raises:
        ModelError: ``path`` does not end in ``.joblib``.
    """
    import joblib
    import sklearn

    path = _model_file(path)
    buffer = io.BytesIO()
    joblib.dump(model.estimator, buffer)
    data = buffer.getvalue()
    write_bytes_atomic(path, data)
    from imgrec import __version__

    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "spec": str(model.spec),
        "class_names": list(model.class_names),
        "image_size": list(model.input_shape[:2]),
        "channels": model.input_shape[2],
        "training": model.training,
        "versions": {"imgrec": __version__, "scikit-learn": sklearn.__version__},
    }
    write_bytes_atomic(sidecar_path(path), json.dumps(sidecar, indent=1).encode())
    return path


def load_classic(path: str | os.PathLike) -> ClassicModel:
    """Load a model that ``classic_train`` (or ``save_classic``) wrote, after checking it.

    The file's SHA-256 must equal the one in ``<path>.json``; only the bytes that were
    checked are unpickled. This keeps out a model file that changed or was swapped
    since imgrec wrote it, not a pair of files someone else made: a ``.joblib`` file
    is a pickle and can run code when loaded, so load only your own.

    Raises:
        ModelError: no such file, a name not ending in ``.joblib``, or a file that
            holds no scikit-learn pipeline.
        UnsafeFileError: the digest file is missing or unreadable, or the digest
            differs: nothing from the model file is run.
    """
    path = _model_file(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise UnsafeFileError(
            f"{path}: refused: its digest file {sidecar.name} is missing. A .joblib file is a "
            "pickle that can run code when loaded; imgrec loads only the ones it wrote, "
            "with their digest beside them"
        )
    try:
        meta = json.loads(sidecar.read_text())
        expected = meta["sha256"]
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        spec = parse_spec(meta["spec"])
        class_names = tuple(str(name) for name in meta["class_names"])
        height, width = (int(n) for n in meta["image_size"])
        input_shape = (height, width, int(meta["channels"]))
    except (OSError, ValueError, KeyError, TypeError, SpecError) as err:
        raise UnsafeFileError(
            f"{path}: refused: its digest file {sidecar.name} is damaged ({err})"
        ) from err
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise UnsafeFileError(
            f"{path}: refused: its SHA-256 is {digest}, but {sidecar.name} records {expected}; "
            "the file changed since imgrec wrote it, and a changed pickle can run any code"
        )
    import joblib
    from sklearn.pipeline import Pipeline

    estimator = joblib.load(io.BytesIO(data))
    if not isinstance(estimator, Pipeline):
        raise ModelError(f"{path}: holds a {type(estimator).__name__}, not a scikit-learn Pipeline")
    return ClassicModel(estimator, spec, class_names, input_shape, meta.get("training") or {})


def _check_selection(select: Part, length: int, samples: int) -> None:
    count = select.option("count")
    if select.name == "kbest" and count > length:
        raise SpecError(f"selection {select}: the features have only {length} values to keep")
    if select.name == "pca" and count > min(length, samples):
        raise SpecError(
            f"selection {select}: PCA can keep at most {min(length, samples)} components here "
            f"({length} feature values, {samples} training images)"
        )
