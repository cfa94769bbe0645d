"""Prompt rewriting (spec §20): describe the first frame, rewrite the user's prompt, write a first-frame prompt.

    from mova.prompting import describe_first_frame, rewrite, first_frame_prompt
    desc = describe_first_frame("frame.png")            # FrameDescription (four fields + pixel facts)
    result = rewrite('A man says "hello".', desc)      # Rewrite(text, rules_enforced, provider, warnings, ...)
    image_prompt = first_frame_prompt("a cat on a piano", aspect="9:16")

Providers (``provider=`` an instance, a name, or None for ``MOVA_PROMPT_PROVIDER`` / the environment):
``OpenAICompatibleProvider`` (HTTP chat completions), ``TransformersProvider`` (local folders),
``OfflineProvider`` (no model; the default and the fallback). No torch or transformers import happens here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mova.prompting.base import ASPECTS, ChatProvider, PromptProvider
from mova.prompting.offline import OfflineProvider
from mova.prompting.providers import PROVIDER_NAMES, configured_provider_name, get_provider
from mova.prompting.schema import FrameDescription, ProviderError, Rewrite
from mova.prompting.text import check_first_frame_prompt, check_rewrite, count_words, dialogue_lines
from mova.prompting.workflow import describe_first_frame, first_frame_prompt, make_first_frame_prompt, rewrite

# imported on first use: httpx for the HTTP client, torch/transformers (inside methods) for the local one
_LAZY = {
    "OpenAICompatibleProvider": "mova.prompting.openai_compat",
    "TransformersProvider": "mova.prompting.local",
}

if TYPE_CHECKING:  # pragma: no cover
    from mova.prompting.local import TransformersProvider
    from mova.prompting.openai_compat import OpenAICompatibleProvider

__all__ = [
    "ASPECTS",
    "ChatProvider",
    "FrameDescription",
    "OfflineProvider",
    "OpenAICompatibleProvider",
    "PROVIDER_NAMES",
    "PromptProvider",
    "ProviderError",
    "Rewrite",
    "TransformersProvider",
    "check_first_frame_prompt",
    "check_rewrite",
    "configured_provider_name",
    "count_words",
    "describe_first_frame",
    "dialogue_lines",
    "first_frame_prompt",
    "get_provider",
    "make_first_frame_prompt",
    "rewrite",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova.prompting' has no attribute {name!r}")
