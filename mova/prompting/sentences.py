"""Sentence tools shared by the offline writers: protected quotes, sentence splitting, phrase joining, trimming.

Dialogue spans are swapped for placeholders (private-use characters around an index) before any splitting or
re-ordering, so no rule can split, edit or drop them; ``restore`` puts them back byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mova.prompting.text import count_words, find_quotes, has_cjk

PH_OPEN, PH_CLOSE = "\ue000", "\ue001"  # private-use marks around a protected quote index
PLACEHOLDER_RE = re.compile(f"{PH_OPEN}(\\d+){PH_CLOSE}")
TERMINAL = ".!?。！？…"
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "vs", "etc", "e.g", "i.e", "approx", "no"}
_DECAP_WORDS = frozenset(  # first words that are safe to lower-case when a phrase moves mid-sentence
    (
        "a an the one two three four five several some many this that these those its their his her close-up "
        "medium wide low high eye-level soft bright dark dim warm cool photorealistic realistic cinematic "
        "vivid muted natural flat minimal heavy light gentle distant quiet loud faint upbeat slow fast calm "
        "tense dramatic ambient background steady rhythmic sparse dense black-and-white full extreme aerial "
        "overhead static handheld shallow deep"
    ).split()
)


def protect(text: str) -> tuple[str, list[str]]:
    """Replace each dialogue span by a placeholder; returns (text, spans)."""
    spans = find_quotes(text)
    out, last = [], 0
    for i, span in enumerate(spans):
        out += [text[last : span.start], f"{PH_OPEN}{i}{PH_CLOSE}"]
        last = span.end
    out.append(text[last:])
    return "".join(out), [s.text for s in spans]


def restore(text: str, spans: Sequence[str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: spans[int(m.group(1))], text)


def split_sentences(text: str, spans: Sequence[str]) -> list[str]:
    """Split protected text into sentences (English and Chinese punctuation); quotes are never split."""
    sentences = []
    for line in re.split(r"\n+", text):
        line = line.strip()
        start, i, n = 0, 0, len(line)
        while i < n:
            ch, cut = line[i], None
            if ch in "。！？":
                j = i + 1
                while j < n and line[j] in TERMINAL:
                    j += 1
                cut = j
            elif ch in ".!?…":
                j = i + 1
                while j < n and line[j] in TERMINAL:
                    j += 1
                word = re.search(r"([\w.]+)$", line[start:i])
                is_abbrev = ch == "." and word and word.group(1).lower() in _ABBREVIATIONS
                if (j == n or line[j].isspace()) and not is_abbrev:
                    cut = j
            elif ch == PH_OPEN:
                close = line.index(PH_CLOSE, i)
                inner = spans[int(line[i + 1 : close])][1:-1].rstrip()
                j = close + 1
                while j < n and line[j] in TERMINAL:
                    j += 1
                rest = line[j:].lstrip()
                ends_sentence = (inner[-1:] in TERMINAL) or j > close + 1
                if ends_sentence and (not rest or rest[0].isupper() or has_cjk(rest[0]) or rest[0] == PH_OPEN):
                    cut = j
                else:
                    i = close
            if cut is not None:
                piece = line[start:cut].strip()
                if piece:
                    sentences.append(piece)
                start = i = cut
                continue
            i += 1
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def join_sentences(sentences: Sequence[str]) -> str:
    """Join sentences with a space, except between two pieces of CJK text."""
    out = ""
    for s in sentences:
        if out and not (is_cjkish(out[-1]) and is_cjkish(s[0])):
            out += " "
        out += s
    return out


def is_cjkish(ch: str) -> bool:
    return has_cjk(ch) or ch in "。！？，；：「」『』“”（）"


def decap(phrase: str) -> str:
    """Lower-case the first word when it is a common word (never a name)."""
    match = re.match(r"([A-Za-z][\w-]*)", phrase)
    word = match.group(1) if match else ""
    if word.lower() in _DECAP_WORDS and (len(word) == 1 or not word.isupper()):
        return phrase[0].lower() + phrase[1:]
    return phrase


def join_phrases(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2 and not any(" and " in i for i in items):
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def first_clause(text: str, max_words: int) -> str:
    """The first sentence of a field, cut at a comma or word boundary to at most ``max_words`` words."""
    text = re.split(r"(?<=[.;。；])\s*", text.strip(), maxsplit=1)[0].rstrip(".;。； ")
    if count_words(text) <= max_words:
        return text
    clauses = re.split(r"(?<=[,，])\s*", text)
    kept = ""
    for clause in clauses:
        candidate = (kept + " " + clause).strip() if kept else clause
        if count_words(candidate) > max_words:
            break
        kept = candidate
    if not kept:
        kept = truncate_words(text, max_words)
    return kept.rstrip(",， ")


_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+(?:['’\-][^\W_]+)*")


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to at most ``max_words`` words (``count_words`` rules), preferably at a comma."""
    if count_words(text) <= max_words:
        return text
    tokens = list(_TOKEN_RE.finditer(text))
    cut = tokens[max(max_words, 1) - 1].end()
    comma = max(text.rfind(c, 0, cut) for c in ",，、;；")
    if comma > 0 and count_words(text[:comma]) >= 0.6 * max_words:
        cut = comma
    return text[:cut].rstrip(" ,，、;；")
