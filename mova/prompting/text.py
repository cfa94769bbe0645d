"""Text rules of the rewrite format (spec §20 step 3) and the checks applied to every provider's output.

- Dialogue spans are text between double quotes of any of the styles users type: straight ``"…"``, curly
  ``“…”``, and the CJK corner brackets ``「…」`` / ``『…』``. Single quotes are never dialogue here (they are
  apostrophes far too often).
- Words are counted the way word processors count mixed text: each Han / kana character is one word, and
  every run of letters or digits in other scripts (apostrophes and hyphens inside it allowed) is one word.
- Paragraphs are separated by blank lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_WORDS = 250  # rewrite upper bound (spec §20 step 3)
FIRST_FRAME_MIN_WORDS = 100  # no-image first-frame prompt bounds (spec §20 step 1)
FIRST_FRAME_MAX_WORDS = 250
AUDIO_OPENING = "The audio shows"

# rule names reported in Rewrite.rules_enforced
RULE_NON_EMPTY = "non_empty"
RULE_DIALOGUE = "dialogue_verbatim"
RULE_LENGTH = "max_250_words"
RULE_AUDIO_LAST = "audio_paragraph_last"
RULE_MULTI_PARAGRAPH = "multi_paragraph"
RULES = (RULE_NON_EMPTY, RULE_DIALOGUE, RULE_LENGTH, RULE_AUDIO_LAST, RULE_MULTI_PARAGRAPH)
# applied by construction by the offline writer (not checkable on another provider's text)
RULE_ORDER = "chronological_order"
RULE_FIRST_FRAME_OPENING = "first_frame_opening"
# the no-image first-frame prompt
FIRST_FRAME_RULES = ("non_empty", "length_100_250_words", "single_paragraph", "no_temporal_words", "no_audio_words")

# opening -> closing quote characters that delimit dialogue
QUOTE_PAIRS = {'"': '"', "“": "”", "「": "」", "『": "』"}
_QUOTE_RE = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」|『[^』]*』')
_CJK_CHAR = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK_CHAR}]")
_WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


@dataclass(frozen=True)
class QuoteSpan:
    """One quoted span: ``text`` includes its quote marks, ``inner`` is what was said."""

    start: int
    end: int
    text: str

    @property
    def inner(self) -> str:
        return self.text[1:-1]


def find_quotes(text: str) -> list[QuoteSpan]:
    """Outermost dialogue spans in order of appearance; empty spans (``""``) are skipped.

    >>> [q.inner for q in find_quotes('He says "hi" and she says 「你好」.')]
    ['hi', '你好']
    """
    spans = []
    for match in _QUOTE_RE.finditer(text):
        if match.group(0)[1:-1].strip():
            spans.append(QuoteSpan(match.start(), match.end(), match.group(0)))
    return spans


def dialogue_lines(text: str) -> list[str]:
    """The inner text of every dialogue span, stripped of surrounding whitespace."""
    return [q.inner.strip() for q in find_quotes(text)]


def count_words(text: str) -> int:
    """Words in mixed-script text: one per Han/kana character, one per run of letters/digits otherwise."""
    cjk = len(_CJK_RE.findall(text))
    rest = _CJK_RE.sub(" ", text)
    return cjk + len(_WORD_RE.findall(rest))


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def split_paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs (blank-line separated), each stripped."""
    return [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def normalize_output(text: str) -> str:
    """Clean a model's reply into plain paragraphs.

    Drops reasoning blocks (``<think>…</think>``), code fences, a leading label such as "Rewritten prompt:",
    markdown emphasis around "The audio shows", and trailing spaces; when the reply uses single newlines only,
    each line becomes a paragraph.
    """
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S | re.I)
    text = re.sub(r"^.*?</think>", "", text, flags=re.S | re.I)  # an unterminated opening think block
    text = text.strip()
    fence = re.match(r"^```[\w-]*\n(.*?)\n?```$", text, flags=re.S)
    if fence:
        text = fence.group(1).strip()
    text = re.sub(
        r"^\s*(?:\*\*)?(?:rewritten|refined|final|improved)?\s*(?:video\s+)?prompt(?:\*\*)?\s*[:：]\s*",
        "",
        text,
        flags=re.I,
    )
    text = re.sub(r"\*{1,2}(The audio shows)\*{0,2}", r"\1", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if "\n" in text and not re.search(r"\n\s*\n", text):
        text = "\n\n".join(line.strip() for line in text.split("\n") if line.strip())
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _quoted_inners(text: str) -> list[str]:
    return [q.inner for q in find_quotes(text)]


def missing_dialogue(original: str, text: str) -> list[str]:
    """Dialogue lines of ``original`` that do not appear verbatim inside quotes in ``text``.

    The quote style may change (straight to curly, for example); the words between the marks may not.
    """
    inners = _quoted_inners(text)
    missing = []
    for line in dialogue_lines(original):
        if not any(line in inner for inner in inners):
            missing.append(line)
    return missing


def check_rewrite(original_prompt: str, text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Problems of a rewritten prompt against the format rules; an empty list means it passes.

    Checks: not empty; every dialogue line of the original appears verbatim, in quotes; at most
    ``max_words`` words; the last paragraph starts with "The audio shows"; at least one paragraph before it.
    """
    if not text or not text.strip():
        return ["the rewrite is empty"]
    problems = []
    for line in missing_dialogue(original_prompt, text):
        problems.append(f"dialogue not kept verbatim in quotes: {line!r}")
    words = count_words(text)
    if words > max_words:
        problems.append(f"too long: {words} words (at most {max_words})")
    paragraphs = split_paragraphs(text)
    if not paragraphs[-1].startswith(AUDIO_OPENING):
        problems.append(f'the last paragraph must start with "{AUDIO_OPENING}"')
    elif len(paragraphs) < 2:
        problems.append("only an audio paragraph: the visual description must come before it")
    return problems


def rules_passed(problems: list[str]) -> list[str]:
    """Names of the rules in ``RULES`` that the given problem list does not break."""
    broken = set()
    for problem in problems:
        if problem.startswith("the rewrite is empty"):
            return []
        if problem.startswith("dialogue"):
            broken.add(RULE_DIALOGUE)
        elif problem.startswith("too long"):
            broken.add(RULE_LENGTH)
        elif problem.startswith("the last paragraph"):
            broken.update({RULE_AUDIO_LAST, RULE_MULTI_PARAGRAPH})
        elif problem.startswith("only an audio"):
            broken.add(RULE_MULTI_PARAGRAPH)
    return [rule for rule in RULES if rule not in broken]


# words that put time or sound into a still-image prompt (spec §20 step 1: "no temporal or audio content")
_TEMPORAL_RE = re.compile(
    r"\b(then|afterwards?|after that|later|suddenly|finally|eventually|gradually|meanwhile|next(?! to\b)|"
    r"begins? to|starts? to|over time|seconds? later|moments? later)\b|然后|接着|随后|最后|突然|逐渐",
    re.I,
)
_AUDIO_RE = re.compile(
    r"\b(audio|sounds?\s+of|sounds|soundtrack|hear|hears|heard|noise|noises|voice|voices|says|said|"
    r"shouts?|whispers?|dialogue|narrat\w+|voice-?over)\b|声音|音效|说道|喊道",
    re.I,
)


def check_first_frame_prompt(text: str) -> list[str]:
    """Problems of a no-image first-frame prompt: length 100–250 words, one paragraph, no time, no sound."""
    if not text or not text.strip():
        return ["the first-frame prompt is empty"]
    problems = []
    words = count_words(text)
    if not FIRST_FRAME_MIN_WORDS <= words <= FIRST_FRAME_MAX_WORDS:
        problems.append(f"length {words} words (must be {FIRST_FRAME_MIN_WORDS}–{FIRST_FRAME_MAX_WORDS})")
    if len(split_paragraphs(text)) > 1:
        problems.append("more than one paragraph (must be a single image prompt)")
    temporal = sorted({m.group(0).lower() for m in _TEMPORAL_RE.finditer(text)})
    if temporal:
        problems.append(f"temporal words in a still-image prompt: {', '.join(temporal)}")
    audio = sorted({m.group(0).lower() for m in _AUDIO_RE.finditer(text)})
    if audio:
        problems.append(f"audio words in a still-image prompt: {', '.join(audio)}")
    return problems


def first_frame_rules_passed(problems: list[str]) -> list[str]:
    """Names of the rules in ``FIRST_FRAME_RULES`` that the given problem list does not break."""
    prefixes = {"the first-frame prompt is empty": None, "length": 1, "more than one": 2, "temporal": 3, "audio": 4}
    broken = set()
    for problem in problems:
        for prefix, index in prefixes.items():
            if problem.startswith(prefix):
                if index is None:
                    return []
                broken.add(FIRST_FRAME_RULES[index])
    return [rule for rule in FIRST_FRAME_RULES if rule not in broken]
