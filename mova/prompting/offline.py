"""The offline provider: no model; pixel facts for the first frame and a rule-based rewrite.

Rewrite, in stages:
1. protect every dialogue span (it is never split, edited or dropped) and split the prompt into sentences;
2. pull out explicit audio sentences ("Audio: …", "音效：…") and order the rest by their time markers
   ("First …" to the front, "Finally …" to the back, "Before that …" one place earlier);
3. open with a first-frame summary, then the user's sentences in short paragraphs;
4. write the closing paragraph "The audio shows …" from the prompt (dialogue → speech, sound words → effects
   and music, otherwise the quiet ambience of the scene);
5. trim to the word limit by dropping whole sentences that hold no dialogue, never cutting a quote.

Sentence handling lives in ``mova.prompting.sentences``, the audio paragraph in ``mova.prompting.audio``, the
word tables in ``mova.prompting.lexicon`` and the pixel analysis in ``mova.prompting.vision``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from mova.prompting import lexicon as lx
from mova.prompting.audio import audio_paragraph
from mova.prompting.base import PromptProvider
from mova.prompting.schema import FrameDescription
from mova.prompting.sentences import (
    PLACEHOLDER_RE,
    TERMINAL,
    decap,
    first_clause,
    join_phrases,
    join_sentences,
    protect,
    restore,
    split_sentences,
    truncate_words,
)
from mova.prompting.text import FIRST_FRAME_MAX_WORDS, MAX_WORDS, count_words, find_quotes, has_cjk
from mova.prompting.vision import FaceDetector, describe_facts, image_facts, light_words, shot_size_from_faces

NARRATIVE_SENTENCES_PER_PARAGRAPH = 3
NARRATIVE_WORDS_PER_PARAGRAPH = 80
FIRST_FRAME_TARGET_WORDS = 115  # the no-image prompt is padded with composition notes up to this length


# ---------------------------------------------------------------------------------------------------------
# 1. Opening summary from a first-frame description
# ---------------------------------------------------------------------------------------------------------


def _drop_parentheses(text: str) -> str:
    return re.sub(r"\s*[(（][^)）]*[)）]", "", text)


def _number_word(n: int) -> str:
    return ["no", "one", "two", "three", "four", "five", "six"][n] if n <= 6 else str(n)


def opening_summary(description: FrameDescription | None) -> tuple[str, str]:
    """(full, short) sentences that put the first frame into the opening; ("", "") without a description."""
    if description is None or (description.is_empty() and not description.facts):
        return "", ""
    facts = description.facts
    if description.provider == "offline" and facts.get("colours"):
        return _summary_from_facts(facts)
    elements = first_clause(description.elements, 25)
    elements = re.sub(
        r"^(?:the (?:image|picture|photo|frame) (?:shows|depicts|features)|there (?:is|are)|"
        r"in the (?:image|frame),?)\s+",
        "",
        elements,
        flags=re.I,
    )
    elements = decap(elements) if elements else "the scene"
    cine = decap(first_clause(_drop_parentheses(description.cinematography), 12))
    style = first_clause(_drop_parentheses(description.style), 10)
    style = re.sub(r"^(?:a|an|the)\s+", "", style, flags=re.I)
    style = decap(style[:1].upper() + style[1:]) if style else ""
    style = re.sub(r"\s+style$", "", style, flags=re.I)
    short = f"The video opens on {elements}."
    full = f"The video opens on {elements}"
    if cine:
        full += f", framed as {cine}"
    if style:
        full += f", in {'an' if style[:1].lower() in 'aeiou' else 'a'} {style} style"
    full += "."
    if description.on_screen_text.strip():
        full += f" Visible text in the frame reads {first_clause(description.on_screen_text, 20)}."
    return full, short


def _summary_from_facts(facts: dict[str, Any]) -> tuple[str, str]:
    light = light_words(facts).split(",")[0]
    warmth = facts.get("warmth", 0.0)
    tone = "warm-toned" if warmth > 0.08 else "cool-toned" if warmth < -0.08 else "neutral-toned"
    frame = f"{light}, {tone} {facts['orientation']} frame"
    frame = f"{'an' if frame[:1] in 'aeiou' else 'a'} {frame}"
    subject = []
    faces = facts.get("faces")
    if faces:
        shot = shot_size_from_faces(faces)
        where = join_phrases(sorted({f["position"] for f in faces}))
        noun = "face" if len(faces) == 1 else "faces"
        subject.append(f"a {shot} of {_number_word(len(faces))} {noun} in the {where}")
    background = facts.get("background")
    colours = facts.get("colours", [])
    foreground = [c for c in colours if c["name"] != background][:2]
    if foreground and not faces:
        subject.append(
            join_phrases(
                [
                    f"{'an' if c['name'][0] in 'aeiou' else 'a'} {c['name']} area in the {c['position']}"
                    for c in foreground
                ]
            )
        )
    if background:
        subject.append(f"set against {'an' if background[0] in 'aeiou' else 'a'} {background} background")
    elif colours and not foreground:
        subject.append(f"filled with {colours[0]['name']}")
    full = f"The video opens on {frame}" + (", " + ", ".join(subject) if subject else "") + "."
    short = (
        f"The video opens on {', '.join(subject)}."
        if subject and not subject[0].startswith("set against")
        else f"The video opens on {frame}."
    )
    return full, short


# ---------------------------------------------------------------------------------------------------------
# 2. The rewrite
# ---------------------------------------------------------------------------------------------------------


def _order_events(sentences: list[str]) -> list[str]:
    """Stable reorder by time markers: "First …" to the front, "Finally …" to the back, "Before that …" up one."""
    ordered: list[str] = []
    for s in sentences:
        if lx.BEFORE_MARKERS.match(s) and ordered:
            ordered.insert(len(ordered) - 1, s)
        else:
            ordered.append(s)
    rank = lambda s: 0 if lx.FIRST_MARKERS.match(s) else 2 if lx.LAST_MARKERS.match(s) else 1  # noqa: E731
    return sorted(ordered, key=rank)


def compose_rewrite(prompt: str, description: FrameDescription | None = None, max_words: int = MAX_WORDS) -> str:
    """The offline rewrite of ``prompt`` (see the module docstring for the stages)."""
    # 1. sentences with protected quotes (whitespace is tidied outside the quotes only)
    protected, spans = protect(prompt.strip())
    protected = re.sub(r"[ \t\r\f\v]+", " ", protected)
    sentences = split_sentences(protected, spans)
    # 2. explicit audio sentences out, the rest in time order
    explicit, narrative = [], []
    for s in sentences:
        label = lx.AUDIO_LABEL.match(s)
        if label:
            explicit.append(restore(s[label.end() :], spans))
        else:
            narrative.append(s)
    narrative = [restore(s, spans) for s in _order_events(narrative)]
    audio = audio_paragraph(prompt, explicit)
    # 3. opening summary; 5. trim by dropping whole dialogue-free sentences
    full, short = opening_summary(description)
    summary = full
    budget = max_words - count_words(audio)
    has_quote = [bool(find_quotes(s)) for s in narrative]

    def total() -> int:
        return count_words(summary) + sum(count_words(s) for s in narrative)

    if total() > budget:
        summary = short
    n = len(narrative)
    drop_order = [i for i in range(n - 2, 0, -1)] + ([n - 1] if n > 1 else [])
    keep = [True] * n
    for i in drop_order:
        if count_words(summary) + sum(count_words(s) for s, k in zip(narrative, keep, strict=True) if k) <= budget:
            break
        if not has_quote[i]:
            keep[i] = False
    narrative = [s for s, k in zip(narrative, keep, strict=True) if k]
    if total() > budget:
        summary = ""
    if total() > budget:  # a single very long sentence: shorten the longest dialogue-free one
        free = [i for i, s in enumerate(narrative) if not find_quotes(s)]
        if free:
            i = max(free, key=lambda j: count_words(narrative[j]))
            room = budget - (total() - count_words(narrative[i]))
            short_text = truncate_words(narrative[i], max(room - 1, 1))
            narrative[i] = short_text + ("。" if has_cjk(short_text[-1]) else ".")
    # 3. paragraphs: summary + first sentence, then groups of a few sentences, then the audio
    paragraphs = []
    first = [summary] if summary else []
    rest = list(narrative)
    if rest:
        first.append(rest.pop(0))
    if first:
        paragraphs.append(join_sentences(first))
    group: list[str] = []
    for s in rest:
        if group and (
            len(group) >= NARRATIVE_SENTENCES_PER_PARAGRAPH
            or count_words(join_sentences(group + [s])) > NARRATIVE_WORDS_PER_PARAGRAPH
        ):
            paragraphs.append(join_sentences(group))
            group = []
        group.append(s)
    if group:
        paragraphs.append(join_sentences(group))
    if not paragraphs:  # a prompt made only of "Audio: …" lines
        paragraphs.append("The video shows the scene the prompt describes.")
    paragraphs.append(audio)
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------------------
# 3. The no-image first-frame prompt
# ---------------------------------------------------------------------------------------------------------

_CUT_TEMPORAL = re.compile(
    r"[,，;；]?\s*(?:\band\s+)?(?:\bthen\b|\bafter that\b|\bafterwards\b|\blater\b|\bsuddenly\b|\buntil\b|"
    r"\bbefore\b|\bas soon as\b|\bonce\b|\beventually\b|\bfinally\b|\bgradually\b)|然后|接着|随后|突然|之后|最后",
    re.I,
)
_CUT_SPEECH = re.compile(
    r"[,，]?\s*(?:\band\s+)?\b(?:says|said|shouts|whispers|asks|replies|tells|speaks|sings|yells|exclaims|mutters|"
    r"calls out|hears|listens)\b",
    re.I,
)
_CUT_SPEECH_ZH = re.compile(r"说|喊|问道|回答|唱|低语")
_AUDITORY = re.compile(
    r"\b(?:thunder\w*|rumbl\w*|knock\w*|footsteps?|bark\w*|meow\w*|chirp\w*|applau\w*|clapp\w*|crash\w*|bang\w*|"
    r"sirens?|ring(?:s|ing)|whistl\w*|hiss\w*|buzz\w*|beep\w*|tick(?:s|ing)|creak\w*|roar\w*|echo\w*|"
    r"sings?|singing|songs?|melod\w*|silen\w*|loud\w*)\b|雷|敲|叫声|歌|响",
    re.I,
)
_DROP_SENTENCE = re.compile(
    r"^(?:then|next|after that|afterwards|later|suddenly|meanwhile|eventually|finally|lastly|at the end|in the end)\b"
    r"|^(?:然后|接着|随后|突然|最后|最终)|\b(?:audio|sound|sounds|music|hear|noise|voice)\b|声音|音乐|音效",
    re.I,
)


def _first_frame_padding(aspect: str) -> list[str]:
    frame = "a widescreen 16:9 frame" if aspect == "16:9" else "a vertical 9:16 frame"
    return [
        f"The composition fills {frame}, with the main subject placed clearly and enough room around it to read "
        "the setting.",
        "Soft, directional light models faces and objects with gentle shadows and clean highlights.",
        "Fabrics, skin and surfaces show fine, believable texture, and proportions stay natural.",
        "The background is detailed but secondary, separated from the subject by depth and tonal contrast.",
        "The colour palette is balanced and coherent, with rich midtones and controlled highlights.",
        "The mood of the moment reads clearly from posture, expression and the arrangement of the scene.",
        "Everything important is in crisp focus, free of blur, artefacts, watermarks or stray lettering.",
    ]


def compose_first_frame_prompt(prompt: str, aspect: str = "16:9") -> str:
    """A single-paragraph still-image prompt: shot size and camera angle, then style, then the first moment."""
    protected, spans = protect(prompt.strip())
    protected = " ".join(protected.split())
    content: list[str] = []
    for s in split_sentences(protected, spans):
        if lx.AUDIO_LABEL.match(s) or lx.LAST_MARKERS.match(s) or lx.BEFORE_MARKERS.match(s):
            continue
        s = lx.FIRST_MARKERS.sub("", s).lstrip(" ,，:：")
        if content and _DROP_SENTENCE.search(s):
            continue
        s = _CUT_TEMPORAL.split(s, maxsplit=1)[0]
        s = _CUT_SPEECH.split(s, maxsplit=1)[0]
        clauses = re.split(r"(?<=[，；,;])", s)  # Chinese speech verbs: drop from the clause that holds one
        cut_at = next((i for i, c in enumerate(clauses) if _CUT_SPEECH_ZH.search(c)), None)
        if cut_at is not None:
            s = "".join(clauses[:cut_at])
        if content and _AUDITORY.search(s):  # "Thunder rolls in the distance": heard, not seen
            continue
        s = PLACEHOLDER_RE.sub("", s)
        s = re.sub(r"\b(?:begins|starts) to\b", "is about to", s, flags=re.I)
        s = re.sub(r"\b(?:begin|start) to\b", "are about to", s, flags=re.I)
        s = re.sub(r"\s+([,.;:!?，。；：])", r"\1", s).strip(" ,，;；:：-—")
        if _DROP_SENTENCE.search(s) or count_words(s) < 2:
            continue
        s = s[0].upper() + s[1:]
        if s[-1] not in TERMINAL:
            s += "。" if has_cjk(s[-1]) else "."
        content.append(s)
        if sum(count_words(c) for c in content) > 120:
            break
    if not content:
        content = ["A single clear subject at the heart of a coherent, detailed setting."]
    shot = next((p for r, p in lx.SHOT_SIZES if re.search(r, prompt, re.I)), None)
    if shot is None:
        shot = "Medium shot" if lx.PERSON_WORDS.search(prompt) else "Wide shot"
    angle = next((p for r, p in lx.CAMERA_ANGLES if re.search(r, prompt, re.I)), "eye-level camera")
    style = next((p for r, p in lx.STYLES if re.search(r, prompt, re.I)), lx.DEFAULT_STYLE)
    head = [f"{shot}, {angle}.", f"{style}."]
    padding = _first_frame_padding(aspect)

    def words(parts: Sequence[str]) -> int:
        return sum(count_words(p) for p in parts)

    # trim the content to fit the upper bound with the head, then pad up to the target
    while len(content) > 1 and words(head + content) > FIRST_FRAME_MAX_WORDS - 5:
        content.pop()
    if words(head + content) > FIRST_FRAME_MAX_WORDS - 5:
        short_text = truncate_words(content[0], FIRST_FRAME_MAX_WORDS - 6 - words(head))
        content = [short_text + ("。" if has_cjk(short_text[-1]) else ".")]
    extra = []
    for sentence in padding:
        if words(head + content + extra) >= FIRST_FRAME_TARGET_WORDS:
            break
        extra.append(sentence)
    return join_sentences(head + content + extra)


# ---------------------------------------------------------------------------------------------------------
# 4. The provider
# ---------------------------------------------------------------------------------------------------------


class OfflineProvider(PromptProvider):
    """No model: OpenCV/numpy facts for ``describe``, rules for ``rewrite`` and ``first_frame_prompt``.

    Args:
        face_detector: a callable (uint8 RGB [H, W, 3] → [(x, y, w, h), ...]), True for the best detector this
            OpenCV build offers (see ``mova.prompting.vision``), or None to skip faces.
    """

    name = "offline"

    def __init__(self, face_detector: FaceDetector | bool | None = True) -> None:
        self.face_detector = face_detector

    def describe(self, image: Image.Image) -> FrameDescription:
        facts = image_facts(image, self.face_detector)
        return FrameDescription(**describe_facts(facts), facts=facts, provider=self.name)

    def rewrite(
        self,
        prompt: str,
        description: FrameDescription | None = None,
        language: str | None = None,
        *,
        previous: str | None = None,
        problems: Sequence[str] = (),
    ) -> str:
        return compose_rewrite(prompt, description)

    def first_frame_prompt(
        self, prompt: str, aspect: str = "16:9", *, previous: str | None = None, problems: Sequence[str] = ()
    ) -> str:
        return compose_first_frame_prompt(prompt, aspect)
