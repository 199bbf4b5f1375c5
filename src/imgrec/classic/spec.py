"""The pipeline spec language of the traditional pipeline: features, selection, classifier.

``imgrec classic train`` takes the three choices as flags, ``imgrec compare`` as one
string; both are read here, so they express exactly the same pipelines::

    --features hog,lbp --select pca:100 --classifier svm:C=10
    --classic  hog,lbp+pca:100+svm:C=10

Grammar: a spec is ``FEATURES+CLASSIFIER`` or ``FEATURES+SELECTION+CLASSIFIER``.
``FEATURES`` is a comma-separated list of feature names; every part is a name followed
by ``:option=value`` parts (``hog:cell=4:orientations=9``, ``svm:C=10:gamma=0.05``);
a selection takes its size as a bare number (``kbest:200``, ``pca:100``) or is
``none``. Names and option keys are case-sensitive where they are written with capitals
(``C``, scikit-learn's name); everything else is lower case.

=========== ========================================================================
part        options (default)
=========== ========================================================================
hog         ``cell`` pixels per cell (about 7 cells across the image, 2 to 8 pixels),
            ``block`` cells per block (2), ``orientations`` (9), ``sqrt=1``: the
            square root of each pixel first (Dalal and Triggs' gamma compression;
            default off)
lbp         ``radius`` (1), ``points`` (8 x radius), ``grid`` regions per side (4)
color-hist  ``bins`` per channel (16)
raw         ``size``: resize to size x size first (default: the image's own size)
kbest       the number of features kept (ANOVA F-value, ``SelectKBest``)
pca         the number of principal components kept
svm         ``C`` (10), ``gamma`` (``scale``, ``auto`` or a number): RBF ``SVC``;
            ``virtual=1``: fit again with each support vector's image also moved one
            pixel up, down, left and right (Decoste and Schoelkopf's virtual support
            vectors; default off)
linear-svm  ``C`` (1): ``LinearSVC``
rf          ``trees`` (200), ``depth`` (unlimited): ``RandomForestClassifier``
knn         ``k`` (5): ``KNeighborsClassifier``
logreg      ``C`` (1): ``LogisticRegression``
=========== ========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imgrec.core.errors import SpecError

Value = int | float | str


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a whole number of at least 1") from None
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number above 0") from None
    if not 0 < value < float("inf"):
        raise ValueError("must be a number above 0")
    return value


def _switch(text: str) -> int:
    if text not in ("0", "1"):
        raise ValueError("must be 0 (off) or 1 (on)")
    return int(text)


def _gamma(text: str) -> float | str:
    return text if text in ("scale", "auto") else _positive_float(text)


# name -> option -> (parser, default); a default of None is decided by the image size
# (features), means "no limit" (rf depth) or "off" (hog sqrt, svm virtual), and is left
# out of specs.
FEATURES: dict[str, dict[str, tuple[Callable[[str], Value], Value | None]]] = {
    "hog": {
        "cell": (_positive_int, None),
        "block": (_positive_int, 2),
        "orientations": (_positive_int, 9),
        "sqrt": (_switch, None),
    },
    "lbp": {
        "radius": (_positive_int, 1),
        "points": (_positive_int, None),
        "grid": (_positive_int, 4),
    },
    "color-hist": {"bins": (_positive_int, 16)},
    "raw": {"size": (_positive_int, None)},
}
SELECTIONS = ("none", "kbest", "pca")
CLASSIFIERS: dict[str, dict[str, tuple[Callable[[str], Value], Value | None]]] = {
    "svm": {"C": (_positive_float, 10.0), "gamma": (_gamma, "scale"), "virtual": (_switch, None)},
    "linear-svm": {"C": (_positive_float, 1.0)},
    "rf": {"trees": (_positive_int, 200), "depth": (_positive_int, None)},
    "knn": {"k": (_positive_int, 5)},
    "logreg": {"C": (_positive_float, 1.0)},
}


@dataclass(frozen=True)
class Part:
    """One named part of a pipeline with its options, in the order the table lists them.

    Args:
        name: ``hog``, ``pca``, ``svm``...
        options: ``(key, value)`` pairs; for a selection, ``(("count", N),)``.
    """

    name: str
    options: tuple[tuple[str, Value], ...] = ()

    def option(self, key: str) -> Value | None:
        """The value given for ``key``, or None."""
        return dict(self.options).get(key)

    def __str__(self) -> str:
        if self.options and self.options[0][0] == "count":
            return f"{self.name}:{self.options[0][1]}"
        return ":".join([self.name, *(f"{k}={_format(v)}" for k, v in self.options)])


@dataclass(frozen=True)
class PipelineSpec:
    """The three choices of a traditional pipeline.

    ``str(spec)`` is the ``imgrec compare --classic`` form, and parses back to an
    equal spec.
    """

    features: tuple[Part, ...]
    select: Part
    classifier: Part

    def __str__(self) -> str:
        features = ",".join(str(part) for part in self.features)
        if self.select.name == "none":
            return f"{features}+{self.classifier}"
        return f"{features}+{self.select}+{self.classifier}"


def parse_features(text: str) -> tuple[Part, ...]:
    """Read ``--features``: comma-separated names with options, such as ``hog,lbp:radius=2``.

    Raises:
        SpecError: an empty list, an unknown name or option, a bad value, or a name
            given twice.
    """
    parts = [_parse_part(piece, FEATURES, "feature", text) for piece in text.split(",")]
    names = [part.name for part in parts]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(f"features {text!r}: {', '.join(twice)} given twice")
    return tuple(parts)


def parse_select(text: str) -> Part:
    """Read ``--select``: ``none``, ``kbest:K`` or ``pca:N``.

    Raises:
        SpecError: another name, or a missing or bad count.
    """
    name, _, count = text.strip().partition(":")
    if name == "none" and not count:
        return Part("none")
    if name not in ("kbest", "pca"):
        raise SpecError(
            f"selection {text!r}: expected none, kbest:K (keep K features) or pca:N "
            "(keep N principal components)"
        )
    try:
        return Part(name, (("count", _positive_int(count)),))
    except ValueError:
        raise SpecError(
            f"selection {text!r}: {name} needs a whole number of at least 1, as in {name}:100"
        ) from None


def parse_classifier(text: str) -> Part:
    """Read ``--classifier``: a name with options, such as ``svm:C=10:gamma=scale``.

    Raises:
        SpecError: an unknown name or option, or a bad value.
    """
    return _parse_part(text, CLASSIFIERS, "classifier", text)


def parse_spec(text: str) -> PipelineSpec:
    """Read a whole pipeline: ``FEATURES+CLASSIFIER`` or ``FEATURES+SELECTION+CLASSIFIER``.

    Examples: ``hog+svm``, ``hog,lbp+pca:100+svm:C=10``, ``raw+kbest:200+logreg``.

    Raises:
        SpecError: not two or three ``+``-separated stages, or a stage that its own
            parser refuses.
    """
    stages = text.split("+")
    if len(stages) not in (2, 3):
        raise SpecError(
            f"pipeline {text!r}: expected FEATURES+CLASSIFIER or FEATURES+SELECTION+CLASSIFIER, "
            "as in hog+svm or hog,lbp+pca:100+svm"
        )
    select = parse_select(stages[1]) if len(stages) == 3 else Part("none")
    return PipelineSpec(parse_features(stages[0]), select, parse_classifier(stages[-1]))


def make_spec(features: str = "hog", select: str = "none", classifier: str = "svm") -> PipelineSpec:
    """The spec of ``classic train``'s three flags.

    Raises:
        SpecError: as ``parse_features``, ``parse_select`` and ``parse_classifier``.
    """
    return PipelineSpec(
        parse_features(features), parse_select(select), parse_classifier(classifier)
    )


def with_defaults(part: Part, table: dict, resolved: dict[str, Value] | None = None) -> Part:
    """``part`` with every option of its table: given values, then ``resolved``, then defaults.

    Options whose value stays None (no limit) are left out.
    """
    given = dict(part.options)
    options = []
    for key, (_, default) in table[part.name].items():
        value = given.get(key, (resolved or {}).get(key, default))
        if value is not None:
            options.append((key, value))
    return Part(part.name, tuple(options))


def _parse_part(piece: str, table: dict, kind: str, whole: str) -> Part:
    name, *settings = piece.strip().split(":")
    where = f"{kind} {piece.strip()!r}" + (
        f" in {whole!r}" if whole.strip() != piece.strip() else ""
    )
    if name not in table:
        raise SpecError(f"{where}: unknown {kind} {name!r}; known: {', '.join(table)}")
    allowed = table[name]
    given: dict[str, Value] = {}
    for setting in settings:
        key, has_value, text = setting.partition("=")
        if not has_value or not text:
            raise SpecError(f"{where}: expected key=value after ':', got {setting!r}")
        if key not in allowed:
            options = ", ".join(allowed) or "none"
            raise SpecError(f"{where}: {name} has no option {key!r} (options: {options})")
        if key in given:
            raise SpecError(f"{where}: {key!r} is given twice")
        try:
            given[key] = allowed[key][0](text)
        except ValueError as err:
            raise SpecError(f"{where}: {key}={text}: {err}") from None
    return Part(name, tuple((key, given[key]) for key in allowed if key in given))


def _format(value: Value) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)
