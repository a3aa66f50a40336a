"""The one exception type for bad dataset input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset YAML, folder or label set that cannot be used; the message names the file, the key and the fix."""
