"""TensorFlow's start-up log, at the level TF_CPP_MIN_LOG_LEVEL asks for.

TensorFlow 2.21 logs through absl, and two of its libraries (libtensorflow_framework and the profiler
plugin, each with its own absl) log at load time, before they read TF_CPP_MIN_LOG_LEVEL: "oneDNN custom
operations are on", "Could not find cuda drivers" and absl's "before absl::InitializeLog()" banner come
out at any level, 3 included (measured). So the first `import tensorflow` runs with file descriptor 2
held, and what it wrote is passed on afterwards, less the absl lines below that level: TensorFlow's own
setting, applied to the lines it writes before it reads it. Everything else (errors, tracebacks, Python
warnings) is passed on unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
SEVERITIES = "IWEF"  # absl's line prefixes, in TF_CPP_MIN_LOG_LEVEL's order (0 = all ... 3 = fatal only)


def min_log_level() -> int:
    """This host's default TF_CPP_MIN_LOG_LEVEL: 2 (errors) where an NVIDIA driver is loaded, else 3.

    Without one, TensorFlow's CUDA platform logs "failed call to cuInit" as an error on every CPU host;
    TensorFlow's real errors reach Python as exceptions and are shown at any level.
    """
    return 2 if os.path.exists("/dev/nvidiactl") else 3


def below_level(line: str, level: int) -> bool:
    """An absl line ("I0000 00:00:... file.cc:12] ...") of a severity TF_CPP_MIN_LOG_LEVEL=level hides."""
    return level > 0 and (line == ABSL_BANNER or bool(re.match(f"[{SEVERITIES[: min(level, 3)]}]\\d{{4}} ", line)))


@contextlib.contextmanager
def startup_log():
    """Hold what is written to file descriptor 2 (C++ included), then pass it on less what is below the level."""
    level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(True) if not below_level(line, level)))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with startup_log():
            self.loader.exec_module(module)


class _FirstImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as Python would, once, and runs its import inside `startup_log`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet TensorFlow's first import in this process (a no-op once it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(min_log_level()))
    if "tensorflow" not in sys.modules and not any(isinstance(f, _FirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport())
