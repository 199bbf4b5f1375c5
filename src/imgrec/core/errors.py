"""The errors imgrec raises for user mistakes and bad inputs.

Every message names the file or value at fault. The command line turns an
``ImgrecError`` into a one-line message and a non-zero exit code; anything else
is a bug and keeps its traceback.
"""


class ImgrecError(Exception):
    """Base class of the errors a user can act on."""


class ImageError(ImgrecError):
    """An image could not be read: missing, not an image, truncated, or too large."""


class WeightsError(ImgrecError):
    """Pretrained weights could not be found, fetched, read or converted."""


class ModelError(ImgrecError):
    """A model name or model file that imgrec cannot build or load."""


class UnsafeFileError(WeightsError, ModelError):
    """A file asked to run code or hold objects that imgrec refuses to load.

    A weights file (``.pth``) or a model file (``.keras``) alike: it is both a
    ``WeightsError`` and a ``ModelError``, so either ``except`` catches it.
    """


class DatasetError(ImgrecError):
    """A data set could not be found, read, or split as asked."""


class SpecError(ImgrecError):
    """A specification string given by the user (``--augment``, ``--features``...) is wrong."""
