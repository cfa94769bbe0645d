"""Caption merging: visual caption + speech transcript + sound caption -> one training caption (docs/model.md#data-pipeline).

The paper has three captioners (visual, speech, non-speech audio) and an LLM that merges their outputs under
rules: coherent, no repetition, speech anchored to the visible speaker. Here the three inputs are manifest
fields (``visual_caption``, ``transcript``, ``sound_caption``) written by whatever captioners were run; the
output is ``caption``.

- Rules (default, no model): the visual caption's sentences; then the transcript, quoted verbatim and said by
  the first person the visual caption names ("The woman says, "…"."), or by "a voice off screen" when it
  names nobody; then a final paragraph "The audio shows …" from the sound caption, with sentences that repeat
  earlier ones dropped. The two-paragraph shape mirrors the rewritten prompts the model sees at inference
  (docs/model.md#prompt-rewriting), so training captions and inference prompts look alike.
- LLM: through :mod:`mova.prompting`'s OpenAI-compatible provider (``MOVA_PROMPT_BASE_URL`` /
  ``MOVA_PROMPT_MODEL``), with the same rules as instructions. A reply that drops the transcript's words, is
  empty, or fails falls back to the rules (logged) unless ``fallback_to_rules`` is off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..yaml_config import check_bool, check_choice

logger = logging.getLogger(__name__)

__all__ = ["CaptionConfig", "CAPTION_INPUTS", "merge_captions", "merge_row", "make_provider", "llm_merge"]

CAPTION_INPUTS = ("visual_caption", "transcript", "sound_caption")
PROVIDERS = ("auto", "rules", "openai")
AUDIO_OPENING = "The audio shows"

# Person nouns a speaker can be anchored to, most specific first within the visual caption's word order.
PERSON_NOUNS = (
    "man", "woman", "boy", "girl", "child", "kid", "person", "people", "speaker", "presenter", "host", "anchor",
    "reporter", "newscaster", "teacher", "lecturer", "student", "narrator", "actor", "actress", "singer",
    "chef", "vlogger", "player", "coach", "doctor", "customer", "interviewer", "guest", "gentleman", "lady",
)
_PERSON_RE = re.compile(r"\b(?:(?:an?|the)\s+)?((?:[a-z-]+\s+)?(" + "|".join(PERSON_NOUNS) + r"))\b", re.I)
_ADJECTIVE_STOP = {"a", "an", "the", "and", "of", "with", "to", "in", "on", "at", "is", "are", "two", "three"}

MERGE_INSTRUCTION = (
    "You merge three machine-written descriptions of one short video clip into a single caption for training "
    "a text-to-video-and-audio model. Inputs: a visual caption, a speech transcript (may be empty) and a "
    "caption of the non-speech audio (may be empty). Rules: write coherent English prose in the present "
    "tense; keep every visual fact, do not add facts that no input states; never repeat a fact; quote the "
    "transcript verbatim inside double quotes, attributed to the visible person who speaks (if the visual "
    "caption shows nobody, to a voice off screen); end with one paragraph that starts with \"The audio "
    "shows\" describing the sounds; at most 250 words; reply with the caption only."
)


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    """Caption merging.

    Args:
        provider: ``"rules"`` (no model), ``"openai"`` (the OpenAI-compatible provider from the
            ``MOVA_PROMPT_*`` environment), or ``"auto"``: openai when the environment configures it
            (:func:`mova.prompting.configured_provider_name`), rules otherwise.
        fallback_to_rules: when the model fails or drops the transcript, use the rules (else the row keeps no
            caption and is logged).
    """

    provider: Literal["auto", "rules", "openai"] = "auto"
    fallback_to_rules: bool = True

    def __post_init__(self) -> None:
        check_choice("provider", self.provider, PROVIDERS)
        check_bool("fallback_to_rules", self.fallback_to_rules)


# --------------------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------------------


def _clean(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()


def _sentences(text: str) -> list[str]:
    """Split on sentence ends outside double quotes; each sentence ends with punctuation."""
    out, buf, quoted = [], [], False
    for i, ch in enumerate(text):
        buf.append(ch)
        if ch in "\"“”":
            quoted = not quoted if ch == "\"" else ch == "“"
        if not quoted and ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " "):
            out.append("".join(buf).strip())
            buf = []
    tail = "".join(buf).strip()
    if tail:
        out.append(tail + ("" if tail[-1] in ".!?\"”" else "."))
    return [s[0].upper() + s[1:] for s in out if s]


def _words(sentence: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", sentence.lower()))


def _is_repeat(sentence: str, earlier: list[str], threshold: float = 0.8) -> bool:
    """True when the sentence's words overlap an earlier sentence's by ``threshold`` (Jaccard)."""
    words = _words(sentence)
    return not words or any((ow := _words(other)) and len(words & ow) / len(words | ow) >= threshold
                            for other in earlier)


def _speaker(visual: str) -> str:
    """"the woman" / "the young man" for the first person the visual caption names, else "a voice off screen"."""
    for match in _PERSON_RE.finditer(visual):
        phrase, noun = match.group(1).lower(), match.group(2).lower()
        adjective = phrase[: -len(noun)].strip()
        if noun == "people":
            return "one of the people"
        if adjective and adjective not in _ADJECTIVE_STOP:
            return f"the {adjective} {noun}"
        return f"the {noun}"
    return "a voice off screen"


def _speech_sentence(transcript: str, speaker: str) -> str:
    words = transcript.strip().strip("\"“”'").strip()
    if not words:
        return ""
    if words[-1] not in ".!?…":
        words += "."
    return f"{speaker[0].upper()}{speaker[1:]} says, \"{words}\""


def _audio_paragraph(sound: str, earlier: list[str]) -> str:
    kept = [s for s in _sentences(sound) if not _is_repeat(s, earlier)]
    if not kept:
        return ""
    first = kept[0]
    if not first.lower().startswith(AUDIO_OPENING.lower()):
        rest = re.sub(r"^(?:the\s+)?(?:audio|sound|soundtrack)\s+(?:is|has|contains|features|includes)\s+", "",
                      first, flags=re.I)
        first = f"{AUDIO_OPENING} {rest[0].lower()}{rest[1:]}" if rest else AUDIO_OPENING + "."
    return " ".join([first, *kept[1:]])


def merge_captions(visual_caption: str | None, transcript: str | None = None, sound_caption: str | None = None) -> str:
    """Rule-based merge (see the module docstring); "" when all three inputs are empty."""
    visual, speech, sound = _clean(visual_caption), _clean(transcript), _clean(sound_caption)
    body: list[str] = []
    for sentence in _sentences(visual):
        if not _is_repeat(sentence, body):
            body.append(sentence)
    if speech:
        body.append(_speech_sentence(speech, _speaker(visual)))
    paragraphs = [" ".join(body)] if body else []
    audio = _audio_paragraph(sound, body) if sound else ""
    if audio:
        paragraphs.append(audio)
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------------------------------------------
# LLM
# --------------------------------------------------------------------------------------------------------------


def make_provider(cfg: CaptionConfig, env: Mapping[str, str] | None = None) -> Any | None:
    """The chat provider ``cfg`` asks for, or None for the rules. Raises ValueError when ``"openai"`` is
    requested but ``MOVA_PROMPT_BASE_URL`` / ``MOVA_PROMPT_MODEL`` are not set."""
    if cfg.provider == "rules":
        return None
    from mova.prompting import configured_provider_name

    if cfg.provider == "auto" and configured_provider_name(env) != "openai":
        return None
    from mova.prompting.openai_compat import OpenAICompatibleProvider

    return OpenAICompatibleProvider.from_env(env)


def llm_merge(provider: Any, visual: str, transcript: str, sound: str) -> str:
    """One merged caption from ``provider.complete`` (a :class:`mova.prompting.PromptProvider`)."""
    user = (
        f"Visual caption: {visual or '(none)'}\n"
        f"Speech transcript: {transcript or '(none)'}\n"
        f"Sound caption: {sound or '(none)'}"
    )
    messages = [{"role": "system", "content": MERGE_INSTRUCTION}, {"role": "user", "content": user}]
    reply = str(provider.complete(messages) or "").strip()
    return re.sub(r"\n{3,}", "\n\n", reply)


def _keeps_transcript(caption: str, transcript: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(re.findall(r"\w+", s.lower()))

    return not transcript or norm(transcript) in norm(caption)


def merge_row(row: Mapping[str, Any], cfg: CaptionConfig | None = None, provider: Any | None = None) -> dict[str, Any]:
    """A copy of ``row`` with ``caption`` merged from its caption inputs and ``caption_source`` set to
    ``"rules"`` or the provider's name. Rows with no caption input are returned unchanged."""
    cfg = cfg or CaptionConfig()
    out = dict(row)
    visual, speech, sound = (_clean(row.get(k)) for k in CAPTION_INPUTS)
    if not (visual or speech or sound):
        return out
    if provider is not None:
        try:
            caption = llm_merge(provider, visual, speech, sound)
            problem = "" if caption else "empty reply"
            if caption and not _keeps_transcript(caption, speech):
                problem = "the reply does not quote the transcript verbatim"
        except Exception as exc:  # ProviderError, transport errors: never stop a batch
            caption, problem = "", f"{type(exc).__name__}: {exc}"
        if not problem:
            out["caption"], out["caption_source"] = caption, getattr(provider, "name", "llm")
            return out
        if not cfg.fallback_to_rules:
            logger.warning("caption %s: %s; caption left empty", row.get("id"), problem)
            out["caption"], out["caption_source"] = "", "failed"
            return out
        logger.warning("caption %s: %s; merged by rules instead", row.get("id"), problem)
    out["caption"], out["caption_source"] = merge_captions(visual, speech, sound), "rules"
    return out
