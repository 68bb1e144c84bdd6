"""Reproducible CNN pipeline for traffic-sign recognition (GTSRB)."""

import os

from trafficsigns.core import tflog

# Set before TensorFlow is first imported anywhere in the package. oneDNN is pinned on (it is ~20 %
# faster on CPU) because TensorFlow builds differ in their default and its results differ from the
# plain kernels: pinning it keeps CPU metrics reproducible across installs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
tflog.install()
