"""The one error type for unusable load-generator input.

`loadgen run` turns it into exit code 2 with the message; everything that goes wrong on the
server side is counted instead (see loadgen/results.py), so it never surfaces as an exception.
"""


class LoadgenInputError(ValueError):
    """A rate trace, payload folder/file or argument that cannot be used; the message says where and why."""
