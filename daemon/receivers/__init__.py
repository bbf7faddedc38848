"""Receivers: one parser per source format, turning a request body into `Alert`s
(and `Acknowledgement`s, for sources that have them).

Parsing and authentication only; no store, no correlation. A parser is one
method, `parse(body) -> list[Alert]`, so a new source never touches the pipeline.
"""

from __future__ import annotations

from typing import Protocol

from daemon.models import AlertEvent


class Parser(Protocol):
    @property
    def source(self) -> str: ...

    def parse(self, body: bytes) -> list[AlertEvent]: ...
