"""Resolving secret references into values, and generating missing ones."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daemon.config import ConfigError, SecretRef


def resolve(ref: SecretRef, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret's value, or None when its environment variable is unset or empty."""
    if ref.value is not None:
        return ref.value
    if ref.env is not None:
        env = os.environ if environ is None else environ
        return env.get(ref.env) or None
    assert ref.file is not None
    try:
        value = ref.file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"secret file {ref.file}: cannot read: {exc.strerror}"]) from None
    return value or None


@dataclass(frozen=True, slots=True)
class ResolvedSecrets:
    """The values of a list of references; `generated` is set when none was given."""

    values: tuple[str, ...]
    generated: str | None


def resolve_or_generate(
    refs: Sequence[SecretRef], environ: Mapping[str, str] | None = None
) -> ResolvedSecrets:
    """Resolve every reference; when none yields a value, make up a strong one.

    A fresh machine then works out of the box, and the caller logs the
    generated value once so the operator can copy it.
    """
    values = tuple(v for v in (resolve(r, environ) for r in refs) if v)
    if values:
        return ResolvedSecrets(values, None)
    token = secrets.token_urlsafe(32)
    return ResolvedSecrets((token,), token)
