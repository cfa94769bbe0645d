"""Records passed between the prompting workflow and its providers.

``FrameDescription`` holds the four first-frame fields of spec §20 step 2 (visual style, cinematography,
visual elements, on-screen text) plus the pixel facts of the offline analysis. ``Rewrite`` is one rewritten
prompt with the rules that were checked, the provider that wrote it and what went wrong on the way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

# the four fields, in the order the spec lists them, with the labels used in text form
FIELD_LABELS = {
    "style": "Visual style",
    "cinematography": "Cinematography",
    "elements": "Visual elements",
    "on_screen_text": "On-screen text",
}

ProviderErrorKind = Literal[
    "config",  # the provider is not configured (missing URL, model, folder)
    "load",  # a local model folder could not be loaded
    "connection",  # could not reach the server
    "timeout",  # connect/read/total deadline passed
    "http_status",  # the server answered with a 4xx/5xx status
    "malformed",  # the reply was not the JSON the protocol promises
    "empty",  # the reply had no choice or an empty message
    "generation",  # a local model failed while generating
]


class ProviderError(RuntimeError):
    """A provider could not produce an answer.

    ``kind`` says why (see ``ProviderErrorKind``); ``status_code``, ``body_excerpt`` and ``retry_after``
    (seconds, from the ``Retry-After`` header) are set for HTTP status errors. ``str(err)`` is a one-line
    message fit for a UI warning.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ProviderErrorKind,
        provider: str = "",
        status_code: int | None = None,
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = provider
        self.status_code = status_code
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


@dataclass
class FrameDescription:
    """What the first frame shows, in words (spec §20 step 2), plus pixel facts.

    Attributes:
        style: visual style (photographic / illustrated, palette, lighting mood).
        cinematography: shot size, camera angle, composition, depth of field, camera position.
        elements: characters, objects, scene, lighting and how they sit relative to each other.
        on_screen_text: visible text, verbatim (no translation); "" when none was seen or none could be read.
        facts: the offline pixel analysis (size, aspect, brightness, colours, faces, ...), always present when
            the description came from an image.
        provider: the provider that wrote the four fields.
        warnings: what went wrong on the way (a provider failure and the offline fallback, for example).
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
        lines = []
        for name, label in FIELD_LABELS.items():
            value = getattr(self, name).strip()
            if name == "on_screen_text" and not value:
                value = "none"
            lines.append(f"{label}: {value}")
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> FrameDescription:
        """Parse labelled lines as written by ``to_text`` (or a user's edit of them).

        Lines without a known label are appended to the field above them; text with no labels at all becomes
        ``elements``.
        """
        label_to_field = {label.lower(): name for name, label in FIELD_LABELS.items()}
        label_to_field.update({name.replace("_", " "): name for name in FIELD_LABELS})
        label_to_field.update(
            {"style": "style", "camera": "cinematography", "text": "on_screen_text", "ocr": "on_screen_text"}
        )
        values: dict[str, list[str]] = {name: [] for name in FIELD_LABELS}
        current: str | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            match = re.match(r"^(?:\d+[.)]\s*)?\**([A-Za-z /_-]{3,40}?)\**\s*[:：]\s*(.*)$", line)
            key = match.group(1).strip().lower() if match else None
            if key in label_to_field:
                current = label_to_field[key]
                line = match.group(2).strip()
            if current is None:
                current = "elements"
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
    """One rewritten prompt.

    Attributes:
        text: the rewritten prompt (multi-paragraph; last paragraph starts "The audio shows").
        rules_enforced: names of the format rules the text was checked against and passes (see
            ``mova.prompting.text.RULES``), plus the rules the offline writer applies by construction.
        provider: name of the provider whose text this is ("offline" after a fallback).
        warnings: one line per thing that went wrong (provider error, failed check, retry, fallback).
        fell_back: True when the configured provider failed and the offline provider wrote ``text``.
        attempts: how many times the configured provider was asked.
    """

    text: str
    rules_enforced: list[str] = field(default_factory=list)
    provider: str = ""
    warnings: list[str] = field(default_factory=list)
    fell_back: bool = False
    attempts: int = 0
