"""Errors of the MIG layer.

Messages follow nvidia-smi's own wording (e.g. "Unable to destroy GPU instance ID 7 from GPU 0:
In use by another client") so that an operator who knows the driver recognises them, followed
by Clover's explanation of what went wrong and what to do.
"""
from __future__ import annotations


class MigError(RuntimeError):
    """Any failure to inspect or change MIG state."""


class MigDisabledError(MigError):
    """The GPU is not in MIG mode, so it has no GPU instances to create or destroy."""


class PlacementError(MigError, ValueError):
    """A profile does not fit where it was asked to go (overlap, bad start, too many slices)."""


class UnknownProfileError(PlacementError, KeyError):
    """A MIG profile name or ID that the GPU type does not have."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InstanceInUseError(MigError):
    """A GPU instance cannot be destroyed while a process (a replica) still uses it."""


class NvidiaSmiError(MigError):
    """`nvidia-smi` is missing, timed out, or failed in a way Clover has no better name for."""

    def __init__(self, message: str, *, command: list[str] | None = None, returncode: int | None = None,
                 output: str = "") -> None:
        super().__init__(message)
        self.command = command or []
        self.returncode = returncode
        self.output = output
