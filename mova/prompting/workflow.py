"""The prompting workflow (spec §20): describe the first frame, rewrite the prompt, or write a first-frame prompt.

Every provider answer is checked (``mova.prompting.text``). A failed check asks the provider once more with
the list of problems; a second failure, or any ``ProviderError``, falls back to the offline provider. What
happened is logged and kept in ``warnings`` so the UI can show it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mova.prompting.base import ASPECTS, PromptProvider
from mova.prompting.offline import OfflineProvider
from mova.prompting.providers import get_provider
from mova.prompting.schema import FrameDescription, ProviderError, Rewrite
from mova.prompting.text import (
    RULE_FIRST_FRAME_OPENING,
    RULE_ORDER,
    check_first_frame_prompt,
    check_rewrite,
    first_frame_rules_passed,
    rules_passed,
)
from mova.prompting.vision import to_pil_rgb

logger = logging.getLogger(__name__)

ProviderArg = PromptProvider | str | None
MAX_ATTEMPTS = 2  # the first answer plus one retry with the problems listed


def resolve_provider(provider: ProviderArg) -> PromptProvider:
    """An instance as is; a name through ``get_provider``; None from the environment."""
    if provider is None or isinstance(provider, str):
        return get_provider(provider)
    if isinstance(provider, PromptProvider):
        return provider
    raise ValueError(f"provider: {type(provider).__name__} is not allowed; pass a PromptProvider, a name or None")


def _as_description(description: FrameDescription | str | None) -> FrameDescription | None:
    if description is None or isinstance(description, FrameDescription):
        return description
    if isinstance(description, str):
        return FrameDescription.from_text(description) if description.strip() else None
    raise ValueError(f"description: {type(description).__name__} is not allowed; pass a FrameDescription, text or None")


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: {prompt!r} is empty; write what should happen in the video")
    return prompt


def _fallback_warning(provider: PromptProvider, job: str, reason: str) -> str:
    message = f"{provider.name} provider failed to {job} ({reason}); used the offline provider instead"
    logger.warning(message)
    return message


def describe_first_frame(image: Any, provider: ProviderArg = None) -> FrameDescription:
    """Describe a first frame (path, PIL image or uint8 RGB array) in the four fields, with pixel facts."""
    pil = to_pil_rgb(image)
    chosen = resolve_provider(provider)
    offline = chosen if isinstance(chosen, OfflineProvider) else OfflineProvider()
    measured = offline.describe(pil)
    if chosen is offline:
        return measured
    try:
        description = chosen.describe(pil)
    except ProviderError as err:
        measured.warnings.append(_fallback_warning(chosen, "describe the first frame", str(err)))
        return measured
    description.facts = measured.facts
    description.provider = chosen.name
    return description


def _ask_with_checks(
    chosen: PromptProvider,
    job: str,
    ask: Callable[[str | None, list[str]], str],
    check: Callable[[str], list[str]],
    warnings: list[str],
) -> tuple[str | None, int]:
    """Ask ``chosen`` up to ``MAX_ATTEMPTS`` times; (text that passes ``check`` or None, attempts made).

    ``ask(previous, problems)`` gets the rejected answer and its problems on the retry. A ``ProviderError``
    stops at once (the HTTP client has already retried what is worth retrying).
    """
    previous, problems, reason = None, [], ""
    attempts = 0
    for attempts in range(1, MAX_ATTEMPTS + 1):
        try:
            text = ask(previous, problems)
        except ProviderError as err:
            reason = str(err)
            warnings.append(f"attempt {attempts}: {err}")
            break
        problems = check(text)
        if not problems:
            return text, attempts
        reason = "; ".join(problems)
        warnings.append(f"attempt {attempts}: the {chosen.name} answer broke the format: {reason}")
        logger.info("%s attempt %d by %s rejected: %s", job, attempts, chosen.name, reason)
        previous = text
    warnings.append(_fallback_warning(chosen, job, reason))
    return None, attempts


def rewrite(
    prompt: str,
    description: FrameDescription | str | None = None,
    language: str | None = None,
    provider: ProviderArg = None,
) -> Rewrite:
    """Rewrite a user prompt into the caption format (spec §20 step 3), checked, retried, or written offline.

    ``description`` is a ``FrameDescription``, its labelled text (as shown in the UI), or None (no first
    frame). ``language`` is the language of the narration (None: English); dialogue is never translated.
    """
    prompt = _check_prompt(prompt)
    description = _as_description(description)
    chosen = resolve_provider(provider)
    warnings: list[str] = []
    attempts, fell_back = 0, False
    if not isinstance(chosen, OfflineProvider):
        text, attempts = _ask_with_checks(
            chosen,
            "rewrite the prompt",
            lambda previous, problems: chosen.rewrite(
                prompt, description, language, previous=previous, problems=problems
            ),
            lambda text: check_rewrite(prompt, text),
            warnings,
        )
        if text is not None:
            return Rewrite(text, rules_passed([]), chosen.name, warnings, False, attempts)
        fell_back = True
    offline = chosen if isinstance(chosen, OfflineProvider) else OfflineProvider(face_detector=None)
    text = offline.rewrite(prompt, description, language)
    problems = check_rewrite(prompt, text)
    if problems:
        warnings.append(f"the offline rewrite still breaks the format: {'; '.join(problems)}")
        logger.warning("offline rewrite breaks the format: %s", problems)
    if language and language.strip().lower() not in {"en", "english"}:
        warnings.append(
            f"language={language!r}: the offline provider cannot translate; the user's sentences are kept as written"
        )
    rules = rules_passed(problems) + [RULE_ORDER] + ([RULE_FIRST_FRAME_OPENING] if description else [])
    return Rewrite(text, rules, offline.name, warnings, fell_back, attempts)


def make_first_frame_prompt(prompt: str, aspect: str = "16:9", provider: ProviderArg = None) -> Rewrite:
    """The no-image path (spec §20 step 1) with its details: text, rules passed, provider, warnings."""
    prompt = _check_prompt(prompt)
    if aspect not in ASPECTS:
        raise ValueError(f"aspect: {aspect!r} is not allowed; choose one of {', '.join(ASPECTS)}")
    chosen = resolve_provider(provider)
    warnings: list[str] = []
    attempts, fell_back = 0, False
    if not isinstance(chosen, OfflineProvider):
        text, attempts = _ask_with_checks(
            chosen,
            "write the first-frame prompt",
            lambda previous, problems: chosen.first_frame_prompt(prompt, aspect, previous=previous, problems=problems),
            check_first_frame_prompt,
            warnings,
        )
        if text is not None:
            return Rewrite(text, first_frame_rules_passed([]), chosen.name, warnings, False, attempts)
        fell_back = True
    offline = chosen if isinstance(chosen, OfflineProvider) else OfflineProvider(face_detector=None)
    text = offline.first_frame_prompt(prompt, aspect)
    problems = check_first_frame_prompt(text)
    if problems:
        warnings.append(f"the offline first-frame prompt still breaks the format: {'; '.join(problems)}")
        logger.warning("offline first-frame prompt breaks the format: %s", problems)
    return Rewrite(text, first_frame_rules_passed(problems), offline.name, warnings, fell_back, attempts)


def first_frame_prompt(prompt: str, aspect: str = "16:9", provider: ProviderArg = None) -> str:
    """A single 100–250-word image prompt for the first frame (shot size and angle, style, content)."""
    return make_first_frame_prompt(prompt, aspect, provider).text
