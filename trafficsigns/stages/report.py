"""DVC stage `report`, the last: everything the pipeline found in reports/report.html (self-contained,
opens offline) and reports/report.md (its figures in reports/images/)."""

from trafficsigns.core.config import Params
from trafficsigns.reporting.report import write_report


def main(params: Params) -> None:
    write_report(params)


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
