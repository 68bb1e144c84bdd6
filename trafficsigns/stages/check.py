"""DVC stage `check`, first in the pipeline: `data.*` validated before DVC touches `data/raw/`.

DVC empties a stage's outputs before it runs the stage, so `download` cannot protect `data/raw/` itself: with
`data.mirror: data/raw` (a user pointing the mirror at archives already there), the archives would be gone
before `download` read params.yaml. This stage runs before it (`download` depends on what it writes), and
like every stage it validates params.yaml first: a mirror inside any folder the pipeline writes stops the
run here, with nothing deleted. It writes the validated `data` section.
"""

import json

from trafficsigns.core.config import Params
from trafficsigns.core.fsutil import write_text
from trafficsigns.core.paths import DATA_CHECKED


def main(params: Params) -> None:
    write_text(DATA_CHECKED, json.dumps(params.data.model_dump(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
