"""The one exception type the stages turn into a clear one-line message and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing error: the message names the file, key or value at fault and what would fix it."""
