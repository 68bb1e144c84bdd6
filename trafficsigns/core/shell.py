"""The command-line shell that stages (`python -m trafficsigns.stages.X`) and tools (`python -m trafficsigns`)
share: logging set up once, a `PipelineError` or Ctrl-C turned into one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from trafficsigns.core.config import Params, load_params
from trafficsigns.core.errors import PipelineError

EXIT_ERROR = 1  # a PipelineError: nothing was done
EXIT_SKIPPED = 3  # done, but some inputs were skipped (2 is argparse's usage error)
EXIT_INTERRUPTED = 130


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def guarded(call: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Run `call`; a user error or Ctrl-C becomes one line on stderr and an exit status, not a traceback."""
    try:
        return call() or 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED


def run_stage(main: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """What every stage's `__main__` does: read params, run `main`, one clear line on a user error."""
    parser = argparse.ArgumentParser(description=main.__module__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    setup_logging()
    status = guarded(
        lambda: main(load_params(args.params)), "interrupted; nothing half-written was left at the outputs"
    )
    if status:
        sys.exit(status)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse
