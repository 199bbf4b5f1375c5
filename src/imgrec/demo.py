"""``make demo``: classify the sample photos with the default offline model."""

import sys

from imgrec.cli import main
from imgrec.core.samples import sample_path

if __name__ == "__main__":
    sys.exit(main(["predict", str(sample_path("chelsea")), str(sample_path("coffee"))]))
