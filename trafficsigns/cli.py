"""`trafficsigns COMMAND` (the console script; `python -m trafficsigns COMMAND` is the same): the tools around
the pipeline (predict, demystify, grid, compare, baseline).

A tool is a module with `add_arguments(parser)` and `run(args) -> exit status`, registered in TOOLS by
name and imported only when the parser is built, so a stage never imports a tool.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import sys

from trafficsigns.core.paths import BEST_MODEL
from trafficsigns.core.shell import EXIT_ERROR, EXIT_SKIPPED, at_least, guarded, setup_logging


def roi(text: str) -> tuple[int, int, int, int]:
    """X1,Y1,X2,Y2 in pixels, corners inclusive, as in the GTSRB annotations."""
    try:
        x1, y1, x2, y2 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X1,Y1,X2,Y2 (four integers), got {text!r}") from None
    if not 0 <= x1 <= x2 or not 0 <= y1 <= y2:
        raise argparse.ArgumentTypeError(f"need 0 <= X1 <= X2 and 0 <= Y1 <= Y2, got {text!r}")
    return x1, y1, x2, y2


def run_predict(args: argparse.Namespace) -> int:
    # Imported here, not at the top: it loads TensorFlow, which `--help` should not wait for.
    from trafficsigns.modeling.predict import format_table, predict_files

    results, skipped = predict_files(args.model, args.paths, top_k=args.top_k, batch_size=args.batch_size, roi=args.roi)
    if args.json:
        print(json.dumps(results, indent=2))
    elif results:
        print(format_table(results))
    for _, message in skipped:
        print(f"skipped: {message}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {len(skipped) + len(results)} file(s) skipped", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        help="classify your own sign images with a trained model",
        description="Classify sign images (PPM, PNG, JPEG, ...) with a trained model, preprocessed as its "
        "training data was (size and colour mode come from the model file). Images are taken to be "
        f"crops of the sign. Exit status: 0, {EXIT_ERROR} on error, {EXIT_SKIPPED} if a file was skipped.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively")
    p.add_argument("--model", default=str(BEST_MODEL), help="model file (default: %(default)s)")
    p.add_argument("--top-k", type=at_least(1), default=3, help="classes shown per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument("--batch-size", type=at_least(1), default=256, help="images per batch (default: %(default)s)")
    p.add_argument(
        "--roi",
        type=roi,
        metavar="X1,Y1,X2,Y2",
        help="crop every image to this box first (inclusive corners), as prepare's roi_crop does",
    )
    p.set_defaults(run=run_predict)


# name -> (module, help); the modules are imported when the parser is built.
TOOLS = {
    "demystify": ("trafficsigns.explain.demystify", "figures that open the box: convolution, ReLU, pooling, SGD"),
    "grid": ("trafficsigns.experiments.grid", "queue every combination in grid.yaml as a DVC experiment"),
    "compare": ("trafficsigns.experiments.compare", "one table over all experiments: reports/compare.html and .md"),
    "baseline": ("trafficsigns.reporting.baseline", "set what reports compare with: reports/baseline.json"),
}


def add_tool(commands, name: str, module_name: str, help: str) -> None:
    module = importlib.import_module(module_name)
    p = commands.add_parser(name, help=help, description=module.__doc__.split("\n")[0])
    module.add_arguments(p)
    p.set_defaults(run=module.run)


def version() -> str:
    try:
        return importlib.metadata.version("trafficsigns")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not pip-installed)"


def build_parser() -> argparse.ArgumentParser:
    # The console script's name when run as `trafficsigns`, else how `python -m` was called.
    prog = "trafficsigns" if os.path.basename(sys.argv[0]) == "trafficsigns" else "python -m trafficsigns"
    parser = argparse.ArgumentParser(prog=prog, description="Tools around the traffic-sign pipeline.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_predict(commands)
    for name, (module_name, help) in TOOLS.items():
        add_tool(commands, name, module_name, help)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A file name that is not valid UTF-8 (kept by Python as surrogates) would stop print() with a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    setup_logging()
    return guarded(lambda: args.run(args))
