"""Stable identity of an alert when its source does not give one."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit hash of the label set, independent of label order."""
    digest = hashlib.sha256()
    for name in sorted(labels):
        digest.update(name.encode())
        digest.update(b"\xff")
        digest.update(labels[name].encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]
