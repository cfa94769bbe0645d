"""Format rules and checks of the prompt rewrite (mova.prompting.text, schema, instructions)."""

from __future__ import annotations

import json

import pytest

from mova.prompting import FrameDescription, check_first_frame_prompt, check_rewrite, count_words, dialogue_lines
from mova.prompting.instructions import (
    FIRST_FRAME_EXAMPLES,
    REWRITE_EXAMPLES,
    build_rewrite_messages,
    parse_description_reply,
)
from mova.prompting.text import find_quotes, missing_dialogue, normalize_output, rules_passed, split_paragraphs

GOOD = (
    'A man at the door says "Come in, it\'s cold."\n\n'
    "He steps aside and the guest enters.\n\n"
    "The audio shows a man speaking over the wind."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('He says "hi" and she says "bye".', ["hi", "bye"]),
        ("She whispers “I know.” and leaves.", ["I know."]),
        ("他说：「又下雨了。」她答：『是啊。』", ["又下雨了。", "是啊。"]),
        ("妈妈说：“快来吃饭！”", ["快来吃饭！"]),
        ('Mixed: "Hello" then “你好” then 「さようなら」.', ["Hello", "你好", "さようなら"]),
        ("No dialogue here, it's just Tom's dog.", []),
        ('An empty "" pair is not dialogue.', []),
        ("「他说“你好”就走了」", ["他说“你好”就走了"]),  # nested: the outer span wins
    ],
)
def test_find_quotes(text, expected):
    assert dialogue_lines(text) == expected


def test_count_words_mixed_scripts():
    assert count_words("The cat's well-known trick.") == 4
    assert count_words("一位老人") == 4  # one per Han character
    assert count_words("He says 你好 twice.") == 5
    assert count_words("") == 0
    assert count_words("   ...  ") == 0


def test_check_rewrite_passes_good_text():
    assert check_rewrite('A man says "Come in, it\'s cold." and the guest enters.', GOOD) == []
    assert rules_passed([]) == [
        "non_empty",
        "dialogue_verbatim",
        "max_250_words",
        "audio_paragraph_last",
        "multi_paragraph",
    ]


def test_check_rewrite_finds_each_problem():
    original = 'A man says "Come in, it\'s cold." and she replies “谢谢。”'
    assert check_rewrite(original, "   ") == ["the rewrite is empty"]
    problems = check_rewrite(original, GOOD)
    assert problems == ["dialogue not kept verbatim in quotes: '谢谢。'"]
    long_text = "word " * 260 + "\n\nThe audio shows rain."
    assert any(p.startswith("too long: 264 words") for p in check_rewrite("rain", long_text))
    no_audio = "A scene.\n\nThe sound is rain."
    assert check_rewrite("rain", no_audio) == ['the last paragraph must start with "The audio shows"']
    only_audio = "The audio shows rain."
    assert check_rewrite("rain", only_audio) == ["only an audio paragraph: the visual description must come before it"]
    assert rules_passed(check_rewrite("rain", no_audio)) == ["non_empty", "dialogue_verbatim", "max_250_words"]


def test_dialogue_must_stay_in_quotes_but_quote_style_may_change():
    original = "他说：「又下雨了。」"
    assert missing_dialogue(original, "He says “又下雨了。” softly.") == []
    assert missing_dialogue(original, 'He says "又下雨了。" softly.') == []
    assert missing_dialogue(original, "He says 又下雨了。 softly.") == ["又下雨了。"]  # no longer dialogue
    assert missing_dialogue(original, "He says “又下雨了” softly.") == ["又下雨了。"]  # punctuation dropped
    assert missing_dialogue(original, "He says “It's raining again.”") == ["又下雨了。"]  # translated


def test_multi_speaker_dialogue_all_lines_checked():
    original = 'Anna: "Did you see that?" Ben: "See what?" Anna: "That light, moving fast."'
    text = 'Anna asks "Did you see that?" and Ben answers "See what?"\n\nThe audio shows two voices.'
    assert missing_dialogue(original, text) == ["That light, moving fast."]


def test_normalize_output_cleans_model_replies():
    raw = "<think>let me plan</think>\n```\nRewritten prompt: A dog runs.\n\n**The audio shows** barking.\n```"
    assert normalize_output(raw) == "A dog runs.\n\nThe audio shows barking."
    assert split_paragraphs(normalize_output("Line one.\nThe audio shows rain.")) == [
        "Line one.",
        "The audio shows rain.",
    ]


def test_first_frame_checks():
    assert check_first_frame_prompt("") == ["the first-frame prompt is empty"]
    short = "Wide shot of a lake."
    assert check_first_frame_prompt(short)[0].startswith("length 5 words")
    timed = (
        "Wide shot, eye level. " + "A calm lake next to a pine forest. " * 12 + "Then a bird lands and we hear it sing."
    )
    problems = check_first_frame_prompt(timed)
    assert any("temporal words" in p and "then" in p for p in problems)
    assert any("audio words" in p and "hear" in p for p in problems)
    assert not any("next" in p for p in problems)  # "next to" is a place, not a time


def test_in_context_examples_follow_the_rules():
    for example in REWRITE_EXAMPLES:
        assert check_rewrite(example.prompt, example.answer) == [], example.prompt
        assert count_words(example.answer) <= 230
    for _, _, answer in FIRST_FRAME_EXAMPLES:
        assert check_first_frame_prompt(answer) == []


def test_rewrite_messages_carry_examples_request_and_correction():
    desc = FrameDescription(style="Anime", cinematography="Close-up", elements="A girl", on_screen_text="")
    messages = build_rewrite_messages('She says "hi".', desc, "Chinese", previous="bad answer", problems=["too long"])
    assert messages[0]["role"] == "system" and "The audio shows" in messages[0]["content"]
    assert len(messages) == 1 + 2 * len(REWRITE_EXAMPLES) + 1 + 2
    request = messages[-3]["content"]
    assert "Visual style: Anime" in request and 'She says "hi".' in request and "Chinese" in request
    assert messages[-2] == {"role": "assistant", "content": "bad answer"}
    assert "too long" in messages[-1]["content"]


def test_frame_description_text_round_trip():
    desc = FrameDescription(
        style="Warm film look.", cinematography="Wide shot, low angle.", elements="A red car.", on_screen_text="STOP"
    )
    again = FrameDescription.from_text(desc.to_text())
    assert (again.style, again.cinematography, again.elements, again.on_screen_text) == (
        desc.style,
        desc.cinematography,
        desc.elements,
        desc.on_screen_text,
    )
    assert FrameDescription.from_text("just some words").elements == "just some words"
    assert FrameDescription.from_text("On-screen text: none").on_screen_text == ""


def test_parse_description_reply_variants():
    fields = {"style": "Photo", "cinematography": "Medium shot", "elements": "A dog", "on_screen_text": "营业中"}
    json_reply = f"```json\n{json.dumps(fields, ensure_ascii=False)}\n```"
    desc = parse_description_reply(json_reply)
    assert (desc.style, desc.cinematography, desc.elements, desc.on_screen_text) == (
        "Photo",
        "Medium shot",
        "A dog",
        "营业中",
    )
    lines = (
        "1. Visual style: Oil painting\n2. Cinematography: Close-up\n"
        "3. Visual elements: An apple\n4. On-screen text: none"
    )
    desc = parse_description_reply(lines)
    assert desc.style == "Oil painting" and desc.elements == "An apple" and desc.on_screen_text == ""
    assert parse_description_reply("A cat on a sofa.").elements == "A cat on a sofa."


def test_find_quotes_positions():
    text = 'a "b" c'
    (span,) = find_quotes(text)
    assert (span.start(), span.end(), span.group(0)) == (2, 5, '"b"')
