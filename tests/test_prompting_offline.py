"""The offline fallback (no model: the user's words kept, an audio paragraph from the sounds they name, pixel facts)
and provider selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mova.prompting import (
    FrameDescription,
    OfflineProvider,
    check_first_frame_prompt,
    check_rewrite,
    configured_provider_name,
    count_words,
    describe_first_frame,
    dialogue_lines,
    get_provider,
    make_first_frame_prompt,
    rewrite,
)
from mova.prompting.offline import audio_paragraph, compose_rewrite
from mova.prompting.text import split_paragraphs


@pytest.fixture(autouse=True)
def _no_prompt_env(monkeypatch):
    """Tests choose providers explicitly; a developer's MOVA_PROMPT_* settings must not leak in."""
    for key in ("MOVA_PROMPT_PROVIDER", "MOVA_PROMPT_BASE_URL", "MOVA_PROMPT_MODEL", "MOVA_PROMPT_PATH",
                "MOVA_PROMPT_API_KEY"):
        monkeypatch.delenv(key, raising=False)


LONG_EN = " ".join(
    [
        "A lone hiker in a yellow raincoat climbs a narrow ridge above a sea of clouds at dawn.",
        "The trail is rocky and wet, and loose stones slide under her boots as she leans into the slope.",
        "Far below, the valley is hidden under a white blanket that glows pink where the sun touches it.",
        "She stops at a cairn of stacked stones, takes off her backpack and drinks from a steel bottle.",
        "A raven lands on a boulder nearby and watches her with its head tilted to one side.",
        'She smiles at the bird and says, "You made it up here before me, didn\'t you?"',
        "The raven hops closer, then spreads its wings and glides out over the cloud sea.",
        "She follows it with her eyes, shading them with one gloved hand against the low sun.",
        "A gust tugs at her hood and flaps the loose strap of her backpack against her leg.",
        "She pulls the hood tight, shoulders the pack again and continues toward the summit cross.",
        "The path narrows to a knife edge with sheer drops on both sides and patches of old snow.",
        "She moves carefully, placing each foot with attention, her breath visible in the cold air.",
        "At the top, a weathered wooden cross leans slightly, wrapped in faded prayer flags.",
        "She touches the wood, turns slowly and takes in the view of peaks rising out of the clouds.",
        "The sun finally clears the horizon and the whole sky turns gold above the endless white.",
        "She sits on a flat rock, unwraps a sandwich and eats it while the flags flutter behind her.",
        "Finally, she stands, raises both arms in triumph and lets out a long joyful shout.",
    ]
)
LONG_ZH = (
    "清晨的古镇笼罩在薄雾之中，青石板路被夜里的雨水打湿，泛着微光。一位穿着蓝色长衫的老人推开木门，"
    "把一张小桌搬到门口，又慢慢摆好两只茶杯和一个紫砂壶。对面的包子铺已经开张，蒸笼里冒出白色的热气，"
    "老板娘一边揭开笼盖一边招呼路过的学生。一个背着书包的小男孩停下脚步，盯着刚出笼的包子看了好一会儿。"
    "老人看见了，笑着朝他招手，小男孩犹豫了一下，还是跑了过去。老人指着桌上的茶杯说：「来，坐下喝口热茶。」"
    "小男孩乖乖坐下，双手捧着茶杯，小心地吹着热气。老板娘端来一笼包子放在桌上，老人从口袋里掏出零钱递给她。"
    "小男孩抬起头，眼睛亮亮的，不好意思地说：「谢谢爷爷！」老人摸了摸他的头，示意他快吃。远处传来学校的钟声，"
    "小男孩一口咬下包子，抓起书包就往巷子尽头跑去，回头挥了挥手。老人端起茶杯，望着雾气渐渐散去的街道，"
    "脸上露出满足的笑容。阳光终于穿过屋檐，照在湿润的石板路上，整条街道慢慢热闹起来，行人越来越多。"
)

# 20 varied prompts: speech, multi-speaker, SFX, music, Chinese, Japanese, mixed, long, silent, no sound words
PROMPTS = [
    'A detective leans over the desk and says, "You were there that night."',
    'Two friends sit on a bench. Anna says "Did you see that?" Ben shakes his head and replies "See what?" '
    'Anna points at the sky: "That light, moving fast."',
    "A teacher writes on the board and turns to the class: “Open your books to page forty.” A student groans.",
    "A glass falls off the kitchen counter and shatters on the tiled floor. A cat jumps back, startled.",
    "Heavy rain hammers a tin roof while thunder rolls over the hills at night.",
    "A knight gallops across a stone bridge and a war horn echoes from the castle walls.",
    "A jazz trio plays in a smoky basement club; the saxophone player closes his eyes during a solo.",
    "A girl sings softly while strumming a guitar by a campfire under the stars.",
    "一位老人坐在窗边，看着窗外的雨。他轻声说：「又下雨了。」然后他端起茶杯。",
    "妈妈在厨房里做饭，女儿跑进来喊道：“妈妈，我考了一百分！”妈妈笑着说：“真棒，快去洗手吃饭。”",
    'In a busy Shanghai café, a tourist asks the barista "Do you speak English?" '
    "and she answers “一点点，您要什么？” with a smile.",
    "駅のホームで少年が叫ぶ。「待って！」電車のドアが閉まる。",
    "A sunrise over snowy mountains, seen from a quiet valley.",
    "A close-up of a hand turning the pages of an old photo album on a wooden table.",
    "Finally, the balloon drifts out of sight. First, a child lets go of a red balloon in the park. "
    "The balloon rises above the trees.",
    "A lighthouse on a cliff at dusk, its beam sweeping over the sea. "
    "Audio: waves crashing against rocks and a distant foghorn.",
    "An astronaut floats silently outside the space station, no music, just the vast dark.",
    'In a dark hallway, a boy whispers "Is anyone there?" as a door creaks open and footsteps approach.',
    LONG_EN,
    LONG_ZH,
]


def _red_on_blue(width: int = 640, height: int = 360) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (0, 0, 255)
    image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (255, 0, 0)
    return image


# --- rewrite -------------------------------------------------------------------------------------------------


def test_twenty_prompts_cover_the_intended_variety():
    assert len(PROMPTS) == 20
    assert count_words(LONG_EN) > 250 and count_words(LONG_ZH) > 250
    assert sum(bool(dialogue_lines(p)) for p in PROMPTS) >= 9


@pytest.mark.parametrize("with_frame", [False, True], ids=["no-frame", "with-frame"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=[f"p{i:02d}" for i in range(len(PROMPTS))])
def test_offline_rewrite_passes_every_check_and_says_it_is_unchanged(prompt, with_frame):
    description = describe_first_frame(_red_on_blue(), provider="offline") if with_frame else None
    result = rewrite(prompt, description, provider="offline")
    assert check_rewrite(prompt, result.text) == []
    assert result.provider == "offline" and not result.fell_back and result.attempts == 0
    assert len(result.warnings) == 1 and "unchanged" in result.warnings[0] and "offline" in result.warnings[0]
    assert set(result.rules_enforced) == {"non_empty", "dialogue_verbatim", "max_250_words", "audio_paragraph_last",
                                          "multi_paragraph"}
    paragraphs = split_paragraphs(result.text)
    assert len(paragraphs) == 2 and paragraphs[-1].startswith("The audio shows")
    for line in dialogue_lines(prompt):  # verbatim, and with its own quote marks
        assert line in result.text


def test_short_prompts_keep_the_users_words_in_order():
    prompt = 'A teacher writes on the board   and turns:\n“Open your books to page forty.” A student groans.'
    body = split_paragraphs(compose_rewrite(prompt))[0]
    assert body == 'A teacher writes on the board and turns: “Open your books to page forty.” A student groans.'


def test_long_prompts_are_trimmed_without_cutting_quotes():
    for prompt in (LONG_EN, LONG_ZH):
        text = compose_rewrite(prompt)
        assert count_words(text) <= 250 and check_rewrite(prompt, text) == []
        for span in dialogue_lines(prompt):
            assert span in text
    text = compose_rewrite(LONG_EN)  # sentences go from the end, the ones with dialogue stay
    assert text.startswith("A lone hiker") and "raises both arms in triumph" not in text


def test_overlong_sentences_without_punctuation_are_cut_in_both_scripts():
    english = "A parade moves down the avenue " + " ".join(f"past float number {i}" for i in range(100)) + "."
    chinese = "一条长长的游行队伍" + "经过一辆又一辆彩车" * 40 + "。"
    for prompt in (english, chinese):
        text = rewrite(prompt, provider="offline").text
        assert check_rewrite(prompt, text) == []
        assert count_words(text) > 200  # shortened, not emptied


def test_multi_speaker_dialogue_verbatim_english_chinese_mixed():
    cases = [
        'Mia asks "Are you coming?" Leo answers "In a minute!" Mia sighs "You always say that."',
        "哥哥问：「你作业写完了吗？」妹妹说：「早就写完了！」哥哥笑道：「那我们去踢球吧。」",
        '主持人说“欢迎大家”, then the guest replies "Thank you, 谢谢大家!" and the crowd cheers.',
    ]
    for prompt in cases:
        text = rewrite(prompt, provider="offline").text
        lines = dialogue_lines(prompt)
        assert len(lines) >= 2
        assert dialogue_lines(text) == lines  # same lines, same order, same characters


@pytest.mark.parametrize(
    ("prompt", "audio"),
    [
        ('A woman says "Hello there."', "The audio shows the spoken line quoted above."),
        ('Anna says "Did you see that?" Ben replies "See what?"', "The audio shows the 2 spoken lines quoted above."),
        ("Rain and thunder over a dark city.", "The audio shows rain, thunder."),
        ('A boy whispers "Rain?" as footsteps approach.', "The audio shows the spoken line quoted above and footsteps."),
        ("A cat on a sofa.", "The audio shows the ambient sound of the scene; the prompt names no sound."),
        ("A harbour at night. Audio: gulls and a distant bell buoy.", "The audio shows gulls and a distant bell buoy."),
    ],
)
def test_audio_paragraph_comes_only_from_the_prompts_words(prompt, audio):
    text = compose_rewrite(prompt)
    assert split_paragraphs(text)[-1] == audio
    assert "Audio:" not in text


def test_audio_paragraph_ignores_sound_words_inside_quotes():
    assert audio_paragraph('He says "I hear the rain."') == "The audio shows the spoken line quoted above."


def test_language_request_is_reported_by_the_offline_provider():
    result = rewrite("A dog runs on the beach.", language="Chinese", provider="offline")
    assert any("cannot translate" in w for w in result.warnings)


def test_empty_prompt_is_a_value_error():
    with pytest.raises(ValueError, match="prompt"):
        rewrite("   ", provider="offline")


def test_whitespace_and_line_breaks_inside_quotes_are_kept():
    for prompt in ('A man says "Hello,   world"   and\tleaves.', 'He says "Wait…\n  what?"\nShe shrugs.'):
        text = rewrite(prompt, provider="offline").text
        assert check_rewrite(prompt, text) == []
        assert dialogue_lines(text) == dialogue_lines(prompt)


# --- first-frame prompt without an image -----------------------------------------------------------------------


def test_offline_first_frame_prompt_keeps_the_words_and_reports_what_it_misses():
    result = make_first_frame_prompt("A red fox  sits in fresh snow.", "9:16", provider="offline")
    assert result.text == "A red fox sits in fresh snow. Composed for a vertical 9:16 frame."
    assert result.provider == "offline" and "unchanged" in result.warnings[0]
    assert "length 14 words" in result.warnings[1]  # honest: an LLM writes the 100–250-word prompt
    assert "length_100_250_words" not in result.rules_enforced and "single_paragraph" in result.rules_enforced
    assert check_first_frame_prompt(result.text) != []


def test_first_frame_prompt_rejects_unknown_aspect():
    with pytest.raises(ValueError, match="aspect"):
        make_first_frame_prompt("A cat.", aspect="4:3", provider="offline")


# --- describe ---------------------------------------------------------------------------------------------------


def test_describe_measures_pixels_and_claims_nothing_else():
    description = describe_first_frame(_red_on_blue(), provider="offline")
    assert description.facts == {"width": 640, "height": 360, "aspect": "16:9", "orientation": "landscape",
                                 "brightness": pytest.approx(0.135, abs=0.01), "warmth": pytest.approx(-0.778, abs=0.01)}
    assert "not described" in description.style and "cool colour cast" in description.style
    assert description.elements == "" and description.on_screen_text == ""
    assert "Visual style" in description.to_text() and "no vision model" in description.warnings[0]


def test_describe_portrait_dark_bright_warm():
    portrait = describe_first_frame(np.zeros((160, 90, 3), np.uint8), provider="offline")
    assert portrait.facts["aspect"] == "9:16" and portrait.facts["orientation"] == "portrait"
    assert "dark" in portrait.style
    warm = describe_first_frame(np.full((64, 64, 3), (250, 200, 120), np.uint8), provider="offline")
    assert "bright" in warm.style and "warm" in warm.style and warm.facts["orientation"] == "square"


def test_describe_accepts_path_pil_and_array(tmp_path):
    array = _red_on_blue(200, 100)
    path = tmp_path / "frame.png"
    Image.fromarray(array).save(path)
    rgba = Image.fromarray(array).convert("RGBA")
    results = [describe_first_frame(x, provider="offline").facts for x in (array, Image.fromarray(array), path,
                                                                            str(path), rgba)]
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 3), np.int64), "dtype"),
        (np.zeros((4, 4, 2), np.uint8), "got \\(4, 4, 2\\)"),
        ("/no/such/frame.png", "not found"),
        (42, "got int"),
    ],
)
def test_describe_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        describe_first_frame(bad, provider="offline")


# --- provider selection ------------------------------------------------------------------------------------------


def test_provider_selection_from_env():
    assert configured_provider_name({}) == "offline"
    assert isinstance(get_provider(env={}), OfflineProvider)
    provider = get_provider(
        env={"MOVA_PROMPT_BASE_URL": "http://127.0.0.1:9/v1/", "MOVA_PROMPT_MODEL": "m", "MOVA_PROMPT_TIMEOUT": "2.5"}
    )
    assert provider.name == "openai" and provider.timeout == 2.5 and provider.base_url == "http://127.0.0.1:9/v1"
    provider = get_provider(env={"MOVA_PROMPT_PROVIDER": "Transformers", "MOVA_PROMPT_PATH": "/models/qwen"})
    assert provider.name == "transformers" and str(provider.path) == "/models/qwen"
    assert get_provider("offline", env={"MOVA_PROMPT_PROVIDER": "openai"}).name == "offline"  # the argument wins


@pytest.mark.parametrize(
    ("name", "env", "match"),
    [
        (None, {"MOVA_PROMPT_PROVIDER": "gemini"}, "MOVA_PROMPT_PROVIDER: 'gemini' is not allowed"),
        ("gemini", {}, "provider: 'gemini' is not allowed"),
        ("openai", {}, "MOVA_PROMPT_BASE_URL"),
        ("openai", {"MOVA_PROMPT_BASE_URL": "http://x/v1"}, "MOVA_PROMPT_MODEL"),
        ("openai", {"MOVA_PROMPT_BASE_URL": "http://x/v1", "MOVA_PROMPT_MODEL": "m", "MOVA_PROMPT_TIMEOUT": "soon"},
         "MOVA_PROMPT_TIMEOUT: 'soon'"),
        ("openai", {"MOVA_PROMPT_BASE_URL": "http://x/v1", "MOVA_PROMPT_MODEL": "m", "MOVA_PROMPT_MAX_RETRIES": "-1"},
         "MOVA_PROMPT_MAX_RETRIES: '-1'"),
        ("openai", {"MOVA_PROMPT_BASE_URL": "ftp://x", "MOVA_PROMPT_MODEL": "m"}, "base_url"),
        ("transformers", {}, "MOVA_PROMPT_PATH"),
    ],
)
def test_provider_selection_errors(name, env, match):
    with pytest.raises(ValueError, match=match):
        get_provider(name, env=env)


def test_default_provider_is_offline_when_nothing_is_configured():
    result = rewrite('A man says "Hi."')
    assert result.provider == "offline" and not result.fell_back


def test_edited_description_text_round_trips_through_the_ui_form():
    description = describe_first_frame(_red_on_blue(), provider="offline")
    again = FrameDescription.from_text(description.to_text())
    assert (again.style, again.cinematography) == (description.style, description.cinematography)
