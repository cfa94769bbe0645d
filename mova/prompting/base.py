"""The provider interface: describe a first frame, rewrite a prompt, write a first-frame image prompt.

A chat-model provider implements ``complete`` only; the three jobs become chat requests built by ``instructions``.
Providers return raw text (or a ``FrameDescription``); ``mova.prompting.workflow`` checks it and retries once with
``previous`` (the last answer) and ``problems`` (what was wrong with it), then falls back to the offline provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from mova.prompting.instructions import (
    DESCRIBE_INSTRUCTION,
    build_first_frame_messages,
    build_rewrite_messages,
    parse_description_reply,
)
from mova.prompting.schema import FrameDescription, ProviderError
from mova.prompting.text import normalize_output

ASPECTS = ("16:9", "9:16")  # MOVA generates landscape or portrait (docs/model.md#prompt-rewriting, #inference-defaults)


def env_number(env: Mapping[str, str], key: str, default: float, kind: type) -> Any:
    """``env[key]`` as a ``kind`` (float: > 0, int: >= 0), ``default`` when unset; ValueError naming the key."""
    if not (raw := env.get(key, "").strip()):
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0 or (kind is float and value == 0):
        raise ValueError(f"{key}: {raw!r} is not allowed; give a {kind.__name__} {'> 0' if kind is float else '>= 0'}")
    return value


class PromptProvider:
    """One way of doing the three prompting jobs. Subclasses set ``name`` and implement ``complete`` (or, without a
    chat model, the three jobs). Message content is a string or a list of parts ``{"type": "text", "text": str}`` /
    ``{"type": "image", "image": PIL.Image}``; each provider converts image parts to its own wire format.
    """

    name: str = "provider"

    def complete(self, messages: list[dict], *, vision: bool = False) -> str:
        """The assistant's reply text for ``messages``; ``vision`` selects the image-capable model."""
        raise NotImplementedError(f"{type(self).__name__} has no chat model")

    def describe(self, image: Image.Image) -> FrameDescription:
        """The four first-frame fields for an RGB image (facts are added by the workflow)."""
        content = [{"type": "image", "image": image}, {"type": "text", "text": DESCRIBE_INSTRUCTION}]
        description = parse_description_reply(self.complete([{"role": "user", "content": content}], vision=True))
        if description.is_empty():
            raise ProviderError(f"{self.name}: the description reply had no usable text", kind="empty",
                                provider=self.name)
        description.provider = self.name
        return description

    def rewrite(self, prompt: str, description: FrameDescription | None = None, language: str | None = None, *,
                previous: str | None = None, problems: Sequence[str] = ()) -> str:
        """The user's prompt rewritten into the caption format (docs/model.md#prompt-rewriting step 3)."""
        messages = build_rewrite_messages(prompt, description, language, previous=previous, problems=problems)
        return normalize_output(self.complete(messages))

    def first_frame_prompt(self, prompt: str, aspect: str = "16:9", *, previous: str | None = None,
                           problems: Sequence[str] = ()) -> str:
        """A single 100–250-word still-image prompt for the first frame (docs/model.md#prompt-rewriting step 1)."""
        messages = build_first_frame_messages(prompt, aspect, previous=previous, problems=problems)
        return normalize_output(self.complete(messages))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
