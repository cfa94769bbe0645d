"""Records passed between the prompting workflow and its providers.

``FrameDescription``: the four fields of docs/model.md#prompt-rewriting step 2 plus measured pixel facts.
``Rewrite``: one rewritten prompt with the rules checked, the provider that wrote it and what went wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

# the four fields, in the order the spec lists them, with the labels used in text form
FIELD_LABELS = {"style": "Visual style", "cinematography": "Cinematography", "elements": "Visual elements",
                "on_screen_text": "On-screen text"}

# config: not configured; load: a local folder did not load; connection: server unreachable; timeout; http_status:
# a 4xx/5xx answer; malformed: not the reply the protocol promises; empty: no text; generation: a local model failed
ProviderErrorKind = Literal["config", "load", "connection", "timeout", "http_status", "malformed", "empty", "generation"]


class ProviderError(RuntimeError):
    """A provider could not produce an answer.

    ``kind`` says why (see ``ProviderErrorKind``); ``status_code``, ``body_excerpt`` and ``retry_after``
    (seconds, from the ``Retry-After`` header) are set for HTTP status errors. ``str(err)`` is a one-line
    message fit for a UI warning.
    """

    def __init__(self, message: str, *, kind: ProviderErrorKind, provider: str = "", status_code: int | None = None,
                 body_excerpt: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.provider, self.status_code = kind, provider, status_code
        self.body_excerpt, self.retry_after = body_excerpt, retry_after


@dataclass
class FrameDescription:
    """What the first frame shows, in words (docs/model.md#prompt-rewriting step 2), plus pixel facts.

    Attributes:
        style, cinematography, elements: visual style (look, palette, light); shot size, angle, composition, depth
            of field; characters, objects, scene and how they sit relative to each other.
        on_screen_text: visible text, verbatim (no translation); "" when none was seen or none could be read.
        facts: measured pixel facts (size, aspect, orientation, brightness, colour cast) of the image.
        provider, warnings: who wrote the four fields; what went wrong on the way (e.g. a fallback).
    """

    style: str = ""
    cinematography: str = ""
    elements: str = ""
    on_screen_text: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        """The four fields as labelled lines (the form shown to users and given to LLMs)."""
        return "\n".join(f"{label}: {getattr(self, name).strip() or ('none' if name == 'on_screen_text' else '')}"
                         for name, label in FIELD_LABELS.items())

    @classmethod
    def from_text(cls, text: str) -> FrameDescription:
        """Parse labelled lines as written by ``to_text`` (or a user's edit of them).

        Lines without a known label are appended to the field above them; text with no labels at all becomes
        ``elements``.
        """
        label_to_field = {label.lower(): name for name, label in FIELD_LABELS.items()}
        label_to_field.update({name.replace("_", " "): name for name in FIELD_LABELS})
        label_to_field.update({"camera": "cinematography", "text": "on_screen_text", "ocr": "on_screen_text"})
        values: dict[str, list[str]] = {name: [] for name in FIELD_LABELS}
        current = "elements"
        for line in filter(None, (raw.strip() for raw in text.splitlines())):
            match = re.match(r"^(?:\d+[.)]\s*)?\**([A-Za-z /_-]{3,40}?)\**\s*[:：]\s*(.*)$", line)
            if match and match.group(1).strip().lower() in label_to_field:
                current, line = label_to_field[match.group(1).strip().lower()], match.group(2).strip()
            if line:
                values[current].append(line)
        fields = {name: " ".join(parts) for name, parts in values.items()}
        if fields["on_screen_text"].lower() in {"none", "none.", "no text", "n/a", "无"}:
            fields["on_screen_text"] = ""
        return cls(**fields)

    def is_empty(self) -> bool:
        return not any(getattr(self, name).strip() for name in FIELD_LABELS)


@dataclass
class Rewrite:
    """One rewritten prompt: ``text`` (paragraphs, the last starting "The audio shows"), the format rules it was
    checked against and passes (``rules_enforced``, see ``mova.prompting.text.RULES``), the ``provider`` whose text
    it is ("offline" after a fallback), one line per thing that went wrong (``warnings``), whether the configured
    provider failed (``fell_back``) and how many times it was asked (``attempts``)."""

    text: str
    rules_enforced: list[str] = field(default_factory=list)
    provider: str = ""
    warnings: list[str] = field(default_factory=list)
    fell_back: bool = False
    attempts: int = 0
