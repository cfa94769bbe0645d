"""The provider interface: describe a first frame, rewrite a prompt, write a first-frame image prompt.

Providers return raw text (or a ``FrameDescription`` for ``describe``); the workflow in
``mova.prompting.workflow`` checks every answer, retries once with the problems, and falls back to the offline
provider. ``previous`` / ``problems`` carry that retry: the provider's last answer and what was wrong with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from PIL import Image

from mova.prompting.instructions import (
    DESCRIBE_INSTRUCTION,
    build_first_frame_messages,
    build_rewrite_messages,
    parse_description_reply,
)
from mova.prompting.schema import FrameDescription, ProviderError
from mova.prompting.text import normalize_output

ASPECTS = ("16:9", "9:16")  # MOVA generates landscape or portrait (spec §20 step 1 and §16)


class PromptProvider(ABC):
    """One way of doing the three prompting jobs. Subclasses set ``name``."""

    name: str = "provider"

    @abstractmethod
    def describe(self, image: Image.Image) -> FrameDescription:
        """The four first-frame fields for an RGB image (facts are added by the workflow)."""

    @abstractmethod
    def rewrite(
        self,
        prompt: str,
        description: FrameDescription | None = None,
        language: str | None = None,
        *,
        previous: str | None = None,
        problems: Sequence[str] = (),
    ) -> str:
        """The user's prompt rewritten into the caption format (spec §20 step 3)."""

    @abstractmethod
    def first_frame_prompt(
        self,
        prompt: str,
        aspect: str = "16:9",
        *,
        previous: str | None = None,
        problems: Sequence[str] = (),
    ) -> str:
        """A single 100–250-word still-image prompt for the first frame (spec §20 step 1)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ChatProvider(PromptProvider):
    """A provider backed by a chat model: the three jobs become chat requests built by ``instructions``.

    Subclasses implement ``complete``. Message content is a string or a list of parts
    ``{"type": "text", "text": str}`` / ``{"type": "image", "image": PIL.Image}``; each subclass converts the
    image parts to its own wire format.
    """

    @abstractmethod
    def complete(self, messages: list[dict], *, vision: bool = False) -> str:
        """The assistant's reply text for ``messages``; ``vision`` selects the image-capable model."""

    def describe(self, image: Image.Image) -> FrameDescription:
        content = [{"type": "image", "image": image}, {"type": "text", "text": DESCRIBE_INSTRUCTION}]
        reply = self.complete([{"role": "user", "content": content}], vision=True)
        description = parse_description_reply(reply)
        if description.is_empty():
            raise ProviderError(
                f"{self.name}: the description reply had no usable text", kind="empty", provider=self.name
            )
        description.provider = self.name
        return description

    def rewrite(
        self,
        prompt: str,
        description: FrameDescription | None = None,
        language: str | None = None,
        *,
        previous: str | None = None,
        problems: Sequence[str] = (),
    ) -> str:
        messages = build_rewrite_messages(prompt, description, language, previous=previous, problems=problems)
        return normalize_output(self.complete(messages))

    def first_frame_prompt(
        self, prompt: str, aspect: str = "16:9", *, previous: str | None = None, problems: Sequence[str] = ()
    ) -> str:
        messages = build_first_frame_messages(prompt, aspect, previous=previous, problems=problems)
        return normalize_output(self.complete(messages))
