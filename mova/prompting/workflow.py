"""The prompting workflow (docs/model.md#prompt-rewriting): pick a provider; describe the first frame, rewrite the
prompt, or write a first-frame prompt. Every answer is checked (``mova.prompting.text``); a failed check asks once
more with the problems; a second failure or a ``ProviderError`` falls back to the offline provider (user's words).
What happened is logged and kept in ``warnings`` for the UI.

``MOVA_PROMPT_PROVIDER`` picks one of ``PROVIDER_NAMES``; unset, ``MOVA_PROMPT_BASE_URL`` means "openai",
``MOVA_PROMPT_PATH`` means "transformers", else "offline". Each provider reads its own settings (see its module).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from mova.media import load_image
from mova.prompting.base import ASPECTS, PromptProvider
from mova.prompting.offline import UNCHANGED_NOTE, OfflineProvider
from mova.prompting.schema import FrameDescription, ProviderError, Rewrite
from mova.prompting.text import check_first_frame_prompt, check_rewrite, first_frame_rules_passed, rules_passed

logger = logging.getLogger(__name__)

PROVIDER_NAMES = ("openai", "transformers", "offline")
ProviderArg = PromptProvider | str | None
MAX_ATTEMPTS = 2  # the first answer plus one retry with the problems listed


def configured_provider_name(env: Mapping[str, str] | None = None) -> str:
    """The provider name the environment asks for (see the module docstring)."""
    env = os.environ if env is None else env
    name = env.get("MOVA_PROMPT_PROVIDER", "").strip().lower()
    if name:
        return name
    if env.get("MOVA_PROMPT_BASE_URL", "").strip():
        return "openai"
    return "transformers" if env.get("MOVA_PROMPT_PATH", "").strip() else "offline"


def get_provider(name: ProviderArg = None, env: Mapping[str, str] | None = None) -> PromptProvider:
    """A provider instance as is, by name ("openai", "transformers", "offline"), or with None from the environment.

    Raises ValueError for an unknown name or a provider whose required settings are missing.
    """
    if isinstance(name, PromptProvider):
        return name
    if name is not None and not isinstance(name, str):
        raise ValueError(f"provider: {type(name).__name__} is not allowed; pass a PromptProvider, a name or None")
    env = os.environ if env is None else env
    chosen = (name or configured_provider_name(env)).strip().lower()
    if chosen == "offline":
        return OfflineProvider()
    if chosen == "openai":
        from mova.prompting.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider.from_env(env)
    if chosen == "transformers":
        from mova.prompting.local import TransformersProvider

        return TransformersProvider.from_env(env)
    field = "provider" if name else "MOVA_PROMPT_PROVIDER"
    raise ValueError(f"{field}: {chosen!r} is not allowed; choose one of {', '.join(PROVIDER_NAMES)}")


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: {prompt!r} is empty; write what should happen in the video")
    return prompt


def _fallback_warning(provider: PromptProvider, job: str, reason: str) -> str:
    logger.warning(message := f"{provider.name} provider failed to {job} ({reason}); used the offline provider instead")
    return message


def describe_first_frame(image: Any, provider: ProviderArg = None) -> FrameDescription:
    """Describe a first frame (path, PIL image or RGB array) in the four fields, with pixel facts."""
    pil = Image.fromarray(load_image(image))
    chosen = get_provider(provider)
    measured = OfflineProvider().describe(pil)
    if isinstance(chosen, OfflineProvider):
        return measured
    try:
        description = chosen.describe(pil)
    except ProviderError as err:
        measured.warnings = [_fallback_warning(chosen, "describe the first frame", str(err))]
        return measured
    description.facts, description.provider = measured.facts, chosen.name
    return description


def _checked(chosen: PromptProvider, job: str, method: str, args: tuple, check: Callable[[str], list[str]],
             rules: Callable[[list[str]], list[str]]) -> Rewrite:
    """Ask ``chosen.<method>(*args)`` up to ``MAX_ATTEMPTS`` times until ``check`` finds no problem, else let the
    offline provider answer. The retry gets the rejected answer and its problems (``previous=``, ``problems=``); a
    ``ProviderError`` falls back at once (the HTTP client has already retried what is worth retrying).
    """
    warnings: list[str] = []
    attempts = 0
    if not isinstance(chosen, OfflineProvider):
        previous, problems, reason = None, [], ""
        for attempts in range(1, MAX_ATTEMPTS + 1):
            try:
                text = getattr(chosen, method)(*args, previous=previous, problems=problems)
            except ProviderError as err:
                reason = str(err)
                warnings.append(f"attempt {attempts}: {err}")
                break
            problems = check(text)
            if not problems:
                return Rewrite(text, rules([]), chosen.name, warnings, False, attempts)
            reason = "; ".join(problems)
            warnings.append(f"attempt {attempts}: the {chosen.name} answer broke the format: {reason}")
            logger.info("%s attempt %d by %s rejected: %s", job, attempts, chosen.name, reason)
            previous = text
        warnings.append(_fallback_warning(chosen, job, reason))
    text = getattr(OfflineProvider(), method)(*args)
    warnings.append(UNCHANGED_NOTE)
    problems = check(text)
    if problems:
        warnings.append(f"the offline text does not meet the format: {'; '.join(problems)}")
    return Rewrite(text, rules(problems), OfflineProvider.name, warnings, attempts > 0, attempts)


def rewrite(prompt: str, description: FrameDescription | str | None = None, language: str | None = None,
            provider: ProviderArg = None) -> Rewrite:
    """Rewrite a prompt into the caption format (docs/model.md#prompt-rewriting step 3): checked, retried, or kept.

    ``description`` is a ``FrameDescription``, its labelled text (as shown in the UI), or None (no first
    frame). ``language`` is the language of the narration (None: English); dialogue is never translated.
    """
    prompt = _check_prompt(prompt)
    if isinstance(description, str):
        description = FrameDescription.from_text(description) if description.strip() else None
    elif description is not None and not isinstance(description, FrameDescription):
        raise ValueError(f"description: {type(description).__name__} is not allowed; pass a FrameDescription, text "
                         "or None")
    result = _checked(get_provider(provider), "rewrite the prompt", "rewrite", (prompt, description, language),
                      lambda text: check_rewrite(prompt, text), rules_passed)
    if result.provider == OfflineProvider.name and language and language.strip().lower() not in {"en", "english"}:
        result.warnings.append(f"language={language!r}: the offline provider cannot translate; your words are kept")
    return result


def make_first_frame_prompt(prompt: str, aspect: str = "16:9", provider: ProviderArg = None) -> Rewrite:
    """The no-image path (docs/model.md#prompt-rewriting step 1): text, rules passed, provider, warnings."""
    prompt = _check_prompt(prompt)
    if aspect not in ASPECTS:
        raise ValueError(f"aspect: {aspect!r} is not allowed; choose one of {', '.join(ASPECTS)}")
    return _checked(get_provider(provider), "write the first-frame prompt", "first_frame_prompt", (prompt, aspect),
                    check_first_frame_prompt, first_frame_rules_passed)

