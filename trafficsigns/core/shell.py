"""The command-line shell that stages (`python -m trafficsigns.stages.X`) and tools (`python -m trafficsigns`)
share: logging set up once, a `PipelineError` or Ctrl-C turned into one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

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


def stage_outputs(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The paths dvc.yaml declares for `stage` (outs, metrics, plots), or [] where there is no dvc.yaml."""
    if not dvc_yaml.is_file():
        return []
    declared = yaml.safe_load(dvc_yaml.read_text()).get("stages", {}).get(stage, {})
    entries = (e for key in ("outs", "metrics", "plots") for e in declared.get(key) or [])
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def run_stage(main: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """What every stage's `__main__` does: read params, run `main`, one clear line on a user error, and
    a last line saying what the stage wrote and how long it took."""
    module = sys.modules[main.__module__]
    name = module.__spec__.name if module.__spec__ else main.__module__  # "__main__" under `python -m`
    stage = name.rsplit(".", 1)[-1]
    parser = argparse.ArgumentParser(
        prog=f"python -m {name}", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    status = guarded(
        lambda: main(load_params(args.params)), "interrupted; nothing half-written was left at the outputs"
    )
    if status:
        sys.exit(status)
    wrote = ", ".join(stage_outputs(stage)) or "its outputs"
    logging.getLogger(stage).info("done in %.1f s: wrote %s", time.perf_counter() - started, wrote)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse
