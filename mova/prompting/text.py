"""Rules of the rewrite format (docs/model.md#prompt-rewriting step 3) and the checks applied to every answer.

- Dialogue is text between double quotes of the styles users type: ``"…"``, ``“…”``, ``「…」``, ``『…』``; never
  single quotes (apostrophes far too often).
- Words are counted as word processors count mixed text: each Han / kana character is one word, and every run of
  letters or digits in other scripts (apostrophes and hyphens inside it allowed) is one word.
- Paragraphs are separated by blank lines.
"""

from __future__ import annotations

import re

MAX_WORDS = 250  # rewrite upper bound (docs/model.md#prompt-rewriting step 3)
FIRST_FRAME_MIN_WORDS = 100  # no-image first-frame prompt bounds (docs/model.md#prompt-rewriting step 1)
FIRST_FRAME_MAX_WORDS = 250
AUDIO_OPENING = "The audio shows"

# rule names reported in Rewrite.rules_enforced: the rewrite, and the no-image first-frame prompt
RULES = ("non_empty", "dialogue_verbatim", "max_250_words", "audio_paragraph_last", "multi_paragraph")
FIRST_FRAME_RULES = ("non_empty", "length_100_250_words", "single_paragraph", "no_temporal_words", "no_audio_words")

QUOTE_RE = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」|『[^』]*』')
_CJK_CHAR = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK_CHAR}]")
_WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def find_quotes(text: str) -> list[re.Match]:
    """Outermost dialogue spans (``.group(0)`` with its quote marks) in order of appearance; empty ones skipped."""
    return [m for m in QUOTE_RE.finditer(text) if m.group(0)[1:-1].strip()]


def dialogue_lines(text: str) -> list[str]:
    """What was said in every dialogue span, stripped of surrounding whitespace.

    >>> dialogue_lines('He says "hi" and she says 「你好」.')
    ['hi', '你好']
    """
    return [q.group(0)[1:-1].strip() for q in find_quotes(text)]


def count_words(text: str) -> int:
    """Words in mixed-script text: one per Han/kana character, one per run of letters/digits otherwise."""
    return len(_CJK_RE.findall(text)) + len(_WORD_RE.findall(_CJK_RE.sub(" ", text)))


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
    text = re.sub(r"^\s*(?:\*\*)?(?:rewritten|refined|final|improved)?\s*(?:video\s+)?prompt(?:\*\*)?\s*[:：]\s*", "",
                  text, flags=re.I)
    text = re.sub(r"\*{1,2}(The audio shows)\*{0,2}", r"\1", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if "\n" in text and not re.search(r"\n\s*\n", text):
        text = "\n\n".join(line.strip() for line in text.split("\n") if line.strip())
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def missing_dialogue(original: str, text: str) -> list[str]:
    """Dialogue lines of ``original`` that do not appear verbatim inside quotes in ``text``.

    The quote style may change (straight to curly, for example); the words between the marks may not.
    """
    inners = [q.group(0)[1:-1] for q in find_quotes(text)]
    return [line for line in dialogue_lines(original) if not any(line in inner for inner in inners)]


def check_rewrite(original_prompt: str, text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Problems of a rewritten prompt against the format rules; an empty list means it passes.

    Checks: not empty; every dialogue line of the original appears verbatim, in quotes; at most
    ``max_words`` words; the last paragraph starts with "The audio shows"; at least one paragraph before it.
    """
    if not text or not text.strip():
        return ["the rewrite is empty"]
    problems = [f"dialogue not kept verbatim in quotes: {line!r}" for line in missing_dialogue(original_prompt, text)]
    words = count_words(text)
    if words > max_words:
        problems.append(f"too long: {words} words (at most {max_words})")
    paragraphs = split_paragraphs(text)
    if not paragraphs[-1].startswith(AUDIO_OPENING):
        problems.append(f'the last paragraph must start with "{AUDIO_OPENING}"')
    elif len(paragraphs) < 2:
        problems.append("only an audio paragraph: the visual description must come before it")
    return problems


def _passed(rules: tuple[str, ...], prefixes: dict[str, tuple[str, ...]], problems: list[str]) -> list[str]:
    """The rules no problem breaks; ``prefixes`` maps a problem's opening words to the rules it breaks."""
    broken = {rule for p in problems for prefix, hit in prefixes.items() if p.startswith(prefix) for rule in hit}
    return [rule for rule in rules if rule not in broken]


def rules_passed(problems: list[str]) -> list[str]:
    """Names of the rules in ``RULES`` that the given ``check_rewrite`` problems do not break."""
    empty, dialogue, length, audio_last, multi = RULES
    return _passed(RULES, {"the rewrite is empty": RULES, "dialogue": (dialogue,), "too long": (length,),
                           "the last paragraph": (audio_last, multi), "only an audio": (multi,)}, problems)


# words that put time or sound into a still image (docs/model.md#prompt-rewriting step 1)
_TEMPORAL_RE = re.compile(r"\b(then|afterwards?|after that|later|suddenly|finally|eventually|gradually|meanwhile|"
                          r"next(?! to\b)|begins? to|starts? to|over time|seconds? later|moments? later)\b|"
                          r"然后|接着|随后|最后|突然|逐渐", re.I)
_AUDIO_RE = re.compile(r"\b(audio|sounds?\s+of|sounds|soundtrack|hear|hears|heard|noise|noises|voice|voices|says|"
                       r"said|shouts?|whispers?|dialogue|narrat\w+|voice-?over)\b|声音|音效|说道|喊道", re.I)


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
    for kind, pattern in (("temporal", _TEMPORAL_RE), ("audio", _AUDIO_RE)):
        found = sorted({m.group(0).lower() for m in pattern.finditer(text)})
        if found:
            problems.append(f"{kind} words in a still-image prompt: {', '.join(found)}")
    return problems


def first_frame_rules_passed(problems: list[str]) -> list[str]:
    """Names of the rules in ``FIRST_FRAME_RULES`` that the given ``check_first_frame_prompt`` problems do not break."""
    empty, length, single, temporal, audio = FIRST_FRAME_RULES
    return _passed(FIRST_FRAME_RULES, {"the first-frame prompt is empty": FIRST_FRAME_RULES, "length": (length,),
                                       "more than one": (single,), "temporal": (temporal,), "audio": (audio,)},
                   problems)
