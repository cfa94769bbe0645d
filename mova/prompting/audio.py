"""The closing paragraph of a rewrite, "The audio shows …", derived from the prompt's words (offline rules).

Who speaks (subjects of speech verbs, names, person nouns, then pronouns), how (whispered, shouted), in which
language (from the dialogue's script); sound effects and music from ``lexicon.SOUND_CUES`` unless negated
("no music"); an explicit "Audio: …" line wins over the word tables; with nothing audible, the quiet ambience of
the scene. Nothing is invented beyond what the words name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mova.prompting import lexicon as lx
from mova.prompting.sentences import decap, join_phrases, truncate_words
from mova.prompting.text import AUDIO_OPENING, find_quotes, has_cjk

AUDIO_WORD_CAP = 60  # explicit audio text longer than this is shortened


def find_ordered(table: Sequence[tuple], text: str) -> list[tuple[int, tuple]]:
    """Rows of ``table`` whose pattern matches ``text`` un-negated, with the first match position."""
    found = []
    for row in table:
        for match in re.finditer(row[0], text, flags=re.I):
            if lx.NEGATION_BEFORE.search(text[max(0, match.start() - 30) : match.start()]):
                continue
            found.append((match.start(), row))
            break
    found.sort(key=lambda item: item[0])
    return found


def _dialogue_language(lines: Sequence[str]) -> str:
    langs = []
    for line in lines:
        if re.search(r"[\u3040-\u30ff]", line):
            lang = "Japanese"
        elif re.search(r"[\uac00-\ud7af]", line):
            lang = "Korean"
        elif has_cjk(line):
            lang = "Chinese"
        elif re.search(r"[A-Za-z]", line) and line.isascii():
            lang = "English"
        else:
            continue
        if lang not in langs:
            langs.append(lang)
    if not langs or langs == ["English"]:
        return ""  # Latin-script lines alone: do not claim a language
    return " in " + join_phrases(langs)


_GENRES = ("jazz", "orchestral", "choral", "electronic")


def _music_phrase(music: Sequence[str]) -> str:
    """ "singing accompanied by guitar music", "jazz music with saxophone", "piano music", "music playing"."""
    genres = [m for m in music if m in _GENRES]
    instruments = [m for m in music if m not in _GENRES and m not in ("singing", "music")]
    if genres:
        phrase = f"{join_phrases(genres[:2])} music" + (f" with {join_phrases(instruments[:2])}" if instruments else "")
    elif instruments:
        phrase = f"{join_phrases(instruments[:3])} music"
    else:
        phrase = ""
    if "singing" in music:
        return f"singing accompanied by {phrase}" if phrase else "singing"
    return phrase or ("music playing" if "music" in music else "")


def _speakers(unquoted: str, n_lines: int) -> list[str]:
    """Who speaks, in order: subjects of speech verbs and script names first, then person nouns, then pronouns."""
    found: list[tuple[int, str]] = []
    pronouns: list[tuple[int, str]] = []
    for match in lx.SUBJECT_BEFORE_SPEECH.finditer(unquoted):
        phrase, pronoun, name = match.groups()
        if phrase:
            found.append((match.start(), f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"))
        elif name and name not in lx.NOT_NAMES:
            found.append((match.start(), name))
        elif pronoun:
            pronouns.append((match.start(), "a man" if pronoun.lower() == "he" else "a woman"))
    for match in lx.ARTICLE_CLAUSE_SPEECH.finditer(unquoted):  # "A detective leans over the desk and says"
        words = match.group(1).split()
        if len(words) == 2 and words[1].endswith("s") and not words[1].endswith("ss"):
            words = words[:1]  # "A detective leans …": the second word is the verb
        phrase = " ".join(words)
        found.append((match.start(1), f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"))
    for pattern in (lx.NAME_CLAUSE_SPEECH, lx.NAME_COLON):
        for match in pattern.finditer(unquoted):
            if match.group(1) not in lx.NOT_NAMES:
                found.append((match.start(1), match.group(1)))
    speakers = list(dict.fromkeys(name for _, name in sorted(found)))
    if not speakers:
        speakers = [row[1] for _, row in find_ordered(lx.SPEAKERS, unquoted)]
        for older, plain in (("an old man", "a man"), ("an old woman", "a woman")):
            if older in speakers and plain in speakers:
                speakers.remove(plain)
    if len(speakers) < min(n_lines, 2):  # a second line spoken by "she" / "he"
        extra = [name for _, name in pronouns] or [row[1] for _, row in find_ordered(lx.PRONOUN_SPEAKERS, unquoted)]
        speakers += [name for name in dict.fromkeys(extra) if name not in speakers][: 2 - len(speakers)]
    return speakers[:3]


def audio_paragraph(prompt: str, explicit: Sequence[str] = ()) -> str:
    """The closing paragraph, derived from the prompt; starts with "The audio shows".

    Order: who speaks (and how, in which language), a sung performance, sound effects, music; an explicit
    "Audio: …" line replaces the effects and music found by the word tables; with nothing audible, the quiet
    ambience of the scene.
    """
    spans = find_quotes(prompt)
    dialogue = [s.inner.strip() for s in spans]
    unquoted = prompt  # dialogue out (its words are said, not heard as effects); a quote ends a clause
    for span in reversed(spans):
        unquoted = unquoted[: span.start] + ". " + unquoted[span.end :]
    explicit_text = "; ".join(decap(e.rstrip(" .。;；")) for e in explicit if e.strip())
    if explicit_text and not find_quotes(explicit_text):
        explicit_text = truncate_words(explicit_text, AUDIO_WORD_CAP)
    if lx.SILENCE.search(unquoted) and not dialogue and not explicit_text:
        return f"{AUDIO_OPENING} near silence, with only a faint room tone."

    parts = []
    explicit_has_dialogue = bool(find_quotes(explicit_text))
    if (dialogue and not explicit_has_dialogue) or (not dialogue and lx.SPEECH_VERBS.search(unquoted)):
        speakers = _speakers(unquoted, len(dialogue))
        who = join_phrases(speakers) or ("a voice" if len(dialogue) <= 1 else "voices")
        # tone words count only next to the dialogue (a "joyful shout" elsewhere is not how a line is said)
        near = " ".join(prompt[max(0, q.start - 60) : q.end + 40] for q in spans) if spans else unquoted
        tone = ""
        if re.search(r"\bwhisper\w*|低语|小声|轻声", near, re.I):
            tone = " in hushed tones"
        elif re.search(r"\bshout\w*|\byell\w*|\bscream\w*|喊|吼", near, re.I):
            tone = " loudly"
        verb = "speaking" if dialogue else "talking"
        parts.append(f"{who} {verb}{tone}{_dialogue_language(dialogue)}")
    if explicit_text:
        parts.append(explicit_text)
    else:
        cues = find_ordered(lx.SOUND_CUES, unquoted)
        effects = list(dict.fromkeys(row[1] for _, row in cues if row[2] == "effect"))
        music = list(dict.fromkeys(row[1] for _, row in cues if row[2] == "music"))
        music_phrase = _music_phrase(music)
        if music_phrase and "singing" in music:  # a performance leads, the rest sits around it
            parts.append(music_phrase)
        if effects:
            parts.append("the sound of " + join_phrases(effects[:4]))
        if music_phrase and "singing" not in music:
            parts.append(music_phrase)
    if not parts:
        scene = find_ordered(lx.SCENES, unquoted)
        parts.append(
            f"the quiet ambience of {scene[0][1][1]}" if scene else "a soft ambient room tone that fits the setting"
        )
    sentence = f"{AUDIO_OPENING} {parts[0]}"
    if len(parts) > 1:
        sentence += ", together with " + join_phrases(parts[1:])
    return sentence.rstrip(" .") + "."
