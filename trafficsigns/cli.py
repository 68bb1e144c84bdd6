"""What every stage's `__main__` does: read params, run, and turn user errors into one clear line."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from trafficsigns.config import Params, load_params
from trafficsigns.errors import PipelineError


def run_stage(main: Callable[[Params], None], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=main.__module__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        main(load_params(args.params))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left at the outputs", file=sys.stderr)
        sys.exit(130)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse
