"""The data sources that `data.source` names, in one table: each one's raw files and their official
checksums, where they are downloaded from (or that they are generated), the format its builder reads
and the preprocessing it fixes.

Plain data, no import beyond the standard library: core/config.py reads the names from here, so every
stage imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The official GTSRB archives (the synthetic generator writes the same three) and Keras' MNIST file.
TRAIN_ZIP = "GTSRB_Final_Training_Images.zip"
TEST_ZIP = "GTSRB_Final_Test_Images.zip"
TEST_GT_ZIP = "GTSRB_Final_Test_GT.zip"
GTSRB_FILES = (TRAIN_ZIP, TEST_ZIP, TEST_GT_ZIP)
MNIST_FILE = "mnist.npz"

# What a source's raw files hold, so which builder (trafficsigns/data/dataset.py) reads them.
GTSRB_FORMAT = "gtsrb"  # the three GTSRB archives: ppm images, ROI and track annotations
MNIST_FORMAT = "mnist"  # mnist.npz: uint8 28x28 digits


@dataclass(frozen=True)
class Source:
    name: str
    files: dict[str, str | None]  # raw file name -> official md5 or sha256 hex digest (None: generated)
    format: str  # GTSRB_FORMAT | MNIST_FORMAT
    base_url: str = ""  # where the files are downloaded from (data.mirror replaces it); "" = generated offline
    fixed: dict = field(default_factory=dict)  # prepare settings the source imposes, whatever params.prepare says

    @property
    def generated(self) -> bool:
        """Made here (from data.seed and data.synthetic), not downloaded."""
        return not self.base_url


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source("synthetic", dict.fromkeys(GTSRB_FILES), GTSRB_FORMAT),
        Source(
            "gtsrb",
            {
                TRAIN_ZIP: "f33fd80ac59bff73c82d25ab499e03a3",
                TEST_ZIP: "c7e4e6327067d32654124b0fe9e82185",
                TEST_GT_ZIP: "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
            },
            GTSRB_FORMAT,
            base_url="https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/",
        ),
        Source(
            "mnist",
            {MNIST_FILE: "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"},  # sha256
            MNIST_FORMAT,
            base_url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            # as the course uses it: native 28x28 grayscale, nothing to crop
            fixed={"size": 28, "mode": "L", "roi_crop": False},
        ),
    )
}
SOURCE_NAMES = tuple(SOURCES)
