"""The offline fallback: no language model, so no rewriting. It says so in every answer.

- ``rewrite``: the user's words with whitespace tidied (quotes untouched), cut to the word limit by whole
  sentences without dialogue, then an audio paragraph built only from what the prompt says can be heard: its
  quoted lines, an explicit "Audio: …" line, and the sound words it uses.
- ``describe``: measured pixel facts (size, aspect, brightness, colour cast), no claim about content;
  ``first_frame_prompt``: the user's words, cleaned, with the framing of the chosen aspect.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from mova.prompting.base import PromptProvider
from mova.prompting.schema import FrameDescription
from mova.prompting.text import AUDIO_OPENING, MAX_WORDS, QUOTE_RE, count_words, find_quotes, has_cjk

UNCHANGED_NOTE = "offline: the prompt is your text unchanged (whitespace tidied); no language model rewrote it"
NO_VISION_NOTE = "offline: no vision model is configured; the description holds measured pixel facts only"

# an explicit sound line, e.g. "Audio: rain on the roof." / "Sound: ..." / "音效：..."
_AUDIO_LINE = re.compile(r"(?:^|(?<=[.!?。！？]))\s*(?:audio|sound|sounds|sfx|music|音效|声音|音乐)\s*[:：]\s*([^\n]*)", re.I)
# words that name something heard; matched whole, in the order they appear
_SOUND_WORDS = re.compile(r"\b(rain|thunder|wind|waves?|birdsong|birds? chirping|footsteps|applause|laughter|music|"
                          r"piano|guitar|violin|drums?|singing|song|siren|bell|knocks?|knocking|engine|traffic|crowd|"
                          r"barking|explosion|crash|gunshots?|whistle|hum|buzz(?:ing)?|sizzl\w+|clink\w*|splash\w*|"
                          r"crackl\w+)\b|雨声|雷声|风声|音乐|歌声|脚步声|掌声", re.I)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 weights: brightness as the eye sees it
NAMED_ASPECTS = {"16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4, "1:1": 1.0}
_SENTENCE = re.compile(r"[^.!?。！？]+(?:[.!?。！？]+|$)")


def _tidy(prompt: str) -> str:
    """Collapse runs of whitespace outside quotes; the quoted spans are kept byte for byte."""
    parts = QUOTE_RE.split(prompt)  # text between quotes, every second item
    quotes = [q.group(0) for q in QUOTE_RE.finditer(prompt)] + [""]
    return "".join(re.sub(r"\s+", " ", part) + quote for part, quote in zip(parts, quotes, strict=True)).strip()


def _sentences(text: str) -> list[str]:
    """Sentences that never split a quote: a sentence end inside a quoted span does not count."""
    quotes, sentences, start = find_quotes(text), [], 0
    for match in _SENTENCE.finditer(text):
        if match.end() < len(text) and any(q.start() < match.end() <= q.end() for q in quotes):
            continue
        if text[start : match.end()].strip():
            sentences.append(text[start : match.end()].strip())
        start = match.end()
    return sentences


def audio_paragraph(prompt: str, explicit: Sequence[str] = ()) -> str:
    """'The audio shows …' from the prompt's own words: an explicit audio line wins, else speech and sound words."""
    if explicit:
        said = " ".join(e.strip().rstrip(".。") for e in explicit if e.strip())
        return f"{AUDIO_OPENING} {said[:1].lower() + said[1:]}."
    lines = len(find_quotes(prompt))
    parts = [("the spoken line quoted above" if lines == 1 else f"the {lines} spoken lines quoted above")] * bool(lines)
    sounds = list(dict.fromkeys(m.group(0).lower() for m in _SOUND_WORDS.finditer(QUOTE_RE.sub(" ", prompt))))
    if sounds:
        parts.append(", ".join(sounds[:6]))
    if not parts:
        return f"{AUDIO_OPENING} the ambient sound of the scene; the prompt names no sound."
    return f"{AUDIO_OPENING} {' and '.join(parts)}."


def compose_rewrite(prompt: str, max_words: int = MAX_WORDS) -> str:
    """The user's sentences (tidied, trimmed to fit), a blank line, and the audio paragraph."""
    sentences, explicit = [], []
    for sentence in _sentences(_tidy(prompt)):
        match = _AUDIO_LINE.match(sentence)
        if match:
            explicit.append(match.group(1))
        else:
            sentences.append(sentence)
    audio = audio_paragraph(prompt, explicit)
    budget = max_words - count_words(audio)
    for i in range(len(sentences) - 1, 0, -1):  # drop dialogue-free sentences from the end until it fits
        if sum(map(count_words, sentences)) <= budget:
            break
        if not find_quotes(sentences[i]):
            del sentences[i]
    if sum(map(count_words, sentences)) > budget:  # one long unquoted sentence: keep its first words
        kept = sentences[0].split() if not has_cjk(sentences[0]) else list(sentences[0])
        sentences = [("" if has_cjk(sentences[0]) else " ").join(kept[: max(budget - 1, 1)]) + "…"]
    body = " ".join(sentences) or "The video shows the scene the prompt describes."
    return f"{body}\n\n{audio}"


def pixel_facts(image: Image.Image) -> dict:
    """Size, aspect, orientation, mean luma (0–1) and colour cast (mean red − mean blue) of an RGB image."""
    width, height = image.size
    pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255.0
    ratio = width / height
    return {"width": width, "height": height,
            "aspect": min(NAMED_ASPECTS, key=lambda name: abs(NAMED_ASPECTS[name] - ratio)),
            "orientation": "landscape" if ratio > 1.05 else "portrait" if ratio < 0.95 else "square",
            "brightness": round(float((pixels @ LUMA).mean()), 3),
            "warmth": round(float(pixels[..., 0].mean() - pixels[..., 2].mean()), 3)}


class OfflineProvider(PromptProvider):
    """No model: pixel facts for ``describe``; the user's words, tidied, for ``rewrite`` and ``first_frame_prompt``."""

    name = "offline"

    def describe(self, image: Image.Image) -> FrameDescription:
        facts = pixel_facts(image)
        light = "bright" if facts["brightness"] > 0.6 else "dark" if facts["brightness"] < 0.3 else "mid-toned"
        cast = "warm" if facts["warmth"] > 0.08 else "cool" if facts["warmth"] < -0.08 else "neutral"
        shape = f"{facts['orientation']} {facts['width']}x{facts['height']} frame, about {facts['aspect']}"
        return FrameDescription(style=f"not described (no vision model); measured: {light}, {cast} colour cast",
                                cinematography=f"not described (no vision model); measured: {shape}", facts=facts,
                                provider=self.name, warnings=[NO_VISION_NOTE])

    def rewrite(self, prompt: str, description: FrameDescription | None = None, language: str | None = None,
                **retry: object) -> str:
        return compose_rewrite(prompt)

    def first_frame_prompt(self, prompt: str, aspect: str = "16:9", **retry: object) -> str:
        frame = "a widescreen 16:9 frame" if aspect == "16:9" else "a vertical 9:16 frame"
        return f"{_tidy(prompt).rstrip('.')}. Composed for {frame}."
