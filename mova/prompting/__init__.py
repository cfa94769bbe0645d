"""Prompt rewriting (docs/model.md#prompt-rewriting): describe the first frame, rewrite a prompt, write an image prompt.

    from mova.prompting import describe_first_frame, rewrite, make_first_frame_prompt
    desc = describe_first_frame("frame.png")            # FrameDescription (four fields + pixel facts)
    result = rewrite('A man says "hello".', desc)      # Rewrite(text, rules_enforced, provider, warnings, ...)
    image_prompt = make_first_frame_prompt("a cat on a piano", aspect="9:16").text

Providers (``provider=`` an instance, a name, or None for the environment): ``OpenAICompatibleProvider`` (the
``openai`` SDK), ``TransformersProvider`` (local folders), ``OfflineProvider`` (no model: the user's words kept,
an audio paragraph added; default and fallback). The SDK, torch and transformers are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mova.prompting.base import ASPECTS, PromptProvider
from mova.prompting.offline import OfflineProvider
from mova.prompting.schema import FrameDescription, ProviderError, Rewrite
from mova.prompting.text import check_first_frame_prompt, check_rewrite, count_words, dialogue_lines
from mova.prompting.workflow import (
    PROVIDER_NAMES,
    configured_provider_name,
    describe_first_frame,
    get_provider,
    make_first_frame_prompt,
    rewrite,
)

_LAZY = {"OpenAICompatibleProvider": "mova.prompting.openai_compat", "TransformersProvider": "mova.prompting.local"}

__all__ = [
    "ASPECTS", "FrameDescription", "OfflineProvider", "OpenAICompatibleProvider", "PROVIDER_NAMES", "PromptProvider",
    "ProviderError", "Rewrite", "TransformersProvider", "check_first_frame_prompt", "check_rewrite",
    "configured_provider_name", "count_words", "describe_first_frame", "dialogue_lines", "get_provider",
    "make_first_frame_prompt", "rewrite",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova.prompting' has no attribute {name!r}")
