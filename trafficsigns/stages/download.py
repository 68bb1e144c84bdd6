"""DVC stage `download`: the raw data into data/raw/: GTSRB's three archives (official, mirror or
synthetic) or MNIST's mnist.npz."""

import shutil

from trafficsigns.core.config import Params
from trafficsigns.core.fsutil import atomic_path
from trafficsigns.core.paths import DOWNLOAD_CACHE, RAW_DIR
from trafficsigns.data.download import GTSRB_ARCHIVES, GTSRB_BASE_URL, MNIST_ARCHIVES, MNIST_BASE_URL, fetch_all
from trafficsigns.data.synthetic import write_synthetic_gtsrb


def main(params: Params) -> None:
    data = params.data
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    if data.source == "synthetic":
        s = data.synthetic
        write_synthetic_gtsrb(
            RAW_DIR,
            seed=data.seed,
            train_tracks_per_class=s.train_tracks_per_class,
            test_tracks_per_class=s.test_tracks_per_class,
            frames_per_track=s.frames_per_track,
        )
        return
    files, base_url = (GTSRB_ARCHIVES, GTSRB_BASE_URL) if data.source == "gtsrb" else (MNIST_ARCHIVES, MNIST_BASE_URL)
    # Download into a cache outside DVC's outputs (DVC empties data/raw before each run, which would
    # throw away a partial transfer), then copy the verified files into place.
    for path in fetch_all(files, DOWNLOAD_CACHE, mirror=data.mirror, base_url=base_url, verify=data.verify):
        with atomic_path(RAW_DIR / path.name) as tmp:
            shutil.copyfile(path, tmp)


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
