"""The error a bad request payload raises; the serving layer maps `status` to the HTTP reply."""
from __future__ import annotations


class PayloadError(ValueError):
    """The request payload is unusable (not an image, too large, bad JSON, missing fields).

    `status` is the HTTP status the serving layer should answer with: 400 for malformed input,
    413 for input over the configured size limits. The model itself is unaffected.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
