"""DVC stage `download`: the raw data of `data.source` (trafficsigns/data/sources.py) into data/raw/:
generated (synthetic GTSRB), or fetched from its official site or `data.mirror` (GTSRB, MNIST)."""

import shutil

from trafficsigns.core.config import Params
from trafficsigns.core.fsutil import atomic_path
from trafficsigns.core.paths import DOWNLOAD_CACHE, RAW_DIR
from trafficsigns.data.download import fetch_all, require_zip
from trafficsigns.data.sources import SOURCES
from trafficsigns.data.synthetic import write_synthetic_gtsrb


def main(params: Params) -> None:
    data = params.data
    source = SOURCES[data.source]
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    if source.generated:
        s = data.synthetic
        write_synthetic_gtsrb(
            RAW_DIR,
            seed=data.seed,
            train_tracks_per_class=s.train_tracks_per_class,
            test_tracks_per_class=s.test_tracks_per_class,
            frames_per_track=s.frames_per_track,
        )
        return
    # Download into a cache outside DVC's outputs (DVC empties data/raw before each run, which would
    # throw away a partial transfer), then copy the verified files into place.
    # Every raw file is a zip (mnist.npz too): anything else, such as a captive portal's HTML, is refused.
    for path in fetch_all(
        source.files,
        DOWNLOAD_CACHE,
        mirror=data.mirror,
        base_url=source.base_url,
        verify=data.verify,
        timeout=data.timeout,
        min_rate=data.min_rate,
        deadline=data.deadline,
        check=require_zip,
    ):
        with atomic_path(RAW_DIR / path.name) as tmp:
            shutil.copyfile(path, tmp)


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
