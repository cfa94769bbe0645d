"""The offline provider: pixel facts, rule-based rewrite, first-frame prompt; provider selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mova.prompting import (
    FrameDescription,
    OfflineProvider,
    check_first_frame_prompt,
    check_rewrite,
    count_words,
    describe_first_frame,
    dialogue_lines,
    first_frame_prompt,
    get_provider,
    make_first_frame_prompt,
    rewrite,
)
from mova.prompting.audio import audio_paragraph
from mova.prompting.offline import compose_rewrite
from mova.prompting.providers import configured_provider_name
from mova.prompting.text import split_paragraphs
from mova.prompting.vision import colour_name, image_facts, to_pil_rgb


@pytest.fixture(autouse=True)
def _no_prompt_env(monkeypatch):
    """Tests choose providers explicitly; a developer's MOVA_PROMPT_* settings must not leak in."""
    for key in (
        "MOVA_PROMPT_PROVIDER",
        "MOVA_PROMPT_BASE_URL",
        "MOVA_PROMPT_MODEL",
        "MOVA_PROMPT_PATH",
        "MOVA_PROMPT_API_KEY",
        "MOVA_FACE_CASCADE",
        "MOVA_FACE_MODEL",
    ):
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


@pytest.fixture(scope="module")
def red_on_blue_description() -> FrameDescription:
    return describe_first_frame(_red_on_blue(), provider="offline")


# --- rewrite -------------------------------------------------------------------------------------------------


def test_twenty_prompts_cover_the_intended_variety():
    assert len(PROMPTS) == 20
    assert count_words(LONG_EN) > 250 and count_words(LONG_ZH) > 250
    assert sum(bool(dialogue_lines(p)) for p in PROMPTS) >= 9


@pytest.mark.parametrize("with_frame", [False, True], ids=["no-frame", "with-frame"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=[f"p{i:02d}" for i in range(len(PROMPTS))])
def test_offline_rewrite_passes_every_check(prompt, with_frame, red_on_blue_description):
    description = red_on_blue_description if with_frame else None
    result = rewrite(prompt, description, provider="offline")
    assert check_rewrite(prompt, result.text) == []
    assert result.provider == "offline" and not result.fell_back and result.warnings == []
    assert {"dialogue_verbatim", "max_250_words", "audio_paragraph_last", "multi_paragraph"} <= set(
        result.rules_enforced
    )
    paragraphs = split_paragraphs(result.text)
    assert len(paragraphs) >= 2 and paragraphs[-1].startswith("The audio shows")
    assert count_words(result.text) <= 250
    for line in dialogue_lines(prompt):  # verbatim, and with its own quote marks
        assert line in result.text
    if with_frame:
        assert paragraphs[0].startswith("The video opens on") and "red" in paragraphs[0] and "blue" in paragraphs[0]


def test_long_prompts_are_trimmed_without_cutting_quotes():
    for prompt in (LONG_EN, LONG_ZH):
        text = compose_rewrite(prompt)
        assert count_words(text) <= 250
        for span in dialogue_lines(prompt):
            assert span in text
    # the opening and the ending of the story survive; middle sentences go first
    text = compose_rewrite(LONG_EN)
    assert text.startswith("A lone hiker") and "raises both arms in triumph" in text


def test_a_single_overlong_sentence_is_shortened():
    prompt = (
        "A parade moves down the avenue with "
        + ", ".join(f"float number {i}" for i in range(120))
        + '. A man yells "Hooray!"'
    )
    text = compose_rewrite(prompt)
    assert check_rewrite(prompt, text) == []


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
        assert dialogue_lines(text)[: len(lines)] == lines  # same lines, same order, same characters


def test_events_are_ordered_by_time_markers():
    text = compose_rewrite(
        "Finally, the balloon drifts away. First, a child lets go of a balloon. It rises above the trees."
    )
    first, rises, final = (text.index(s) for s in ("First, a child", "It rises", "Finally, the balloon"))
    assert first < rises < final
    text = compose_rewrite("The door opens. A woman walks in. Before that, a key turns in the lock.")
    assert text.index("Before that, a key") < text.index("A woman walks in")


@pytest.mark.parametrize(
    ("prompt", "expected", "unexpected"),
    [
        ('A woman says "Hello there."', ["a woman speaking"], ["sound of"]),
        ("妈妈笑着说：“真棒。”", ["speaking in Chinese"], []),
        ('He says "OK" and she says “好的”.', ["in English and Chinese"], []),
        ('A boy whispers "Shh."', ["a boy speaking in hushed tones"], []),
        ('Anna says "Did you see that?" Ben shakes his head and replies "See what?"', ["Anna and Ben speaking"], []),
        ('A detective leans over the desk and says, "You were there that night."', ["a detective speaking"], []),
        (
            'A tourist asks "Do you speak English?" and she answers “一点点。”',
            ["a tourist and a woman speaking in English and Chinese"],
            [],
        ),
        (
            'She smiles at the bird and says "Hi." At the summit she lets out a joyful shout.',
            ["a woman speaking"],
            ["loudly"],
        ),
        ("Rain and thunder over a dark city.", ["rain pattering", "thunder rumbling"], ["speaking"]),
        ("A pianist plays on an empty stage.", ["piano music"], []),
        ("A quiet forest at dawn.", ["the quiet ambience of a forest"], []),
        ("A cat on a sofa.", ["soft ambient room tone"], []),
        ("A spaceship drifts in silence.", ["near silence"], []),
        ("A street with no music and no rain.", [], ["music", "rain"]),
        (
            "A harbour at night. Audio: gulls and a distant bell buoy.",
            ["The audio shows gulls and a distant bell buoy."],
            [],
        ),
        ("She waves goodbye from the train window.", ["train"], ["waves breaking"]),
    ],
)
def test_audio_paragraph_is_derived_from_the_prompt(prompt, expected, unexpected):
    text = compose_rewrite(prompt)
    audio = split_paragraphs(text)[-1]
    assert audio.startswith("The audio shows")
    for word in expected:
        assert word in audio, audio
    for word in unexpected:
        assert word not in audio, audio
    assert audio_paragraph(prompt) in text or "Audio:" in prompt


def test_explicit_audio_line_moves_to_the_audio_paragraph():
    text = compose_rewrite("A lighthouse at dusk. Audio: waves crashing and a foghorn.")
    assert "Audio:" not in text
    assert split_paragraphs(text)[-1] == "The audio shows waves crashing and a foghorn."


def test_user_description_text_is_woven_into_the_opening():
    description = (
        "Visual style: Photorealistic, warm evening light.\n"
        "Cinematography: Medium shot at eye level; subject on the left third.\n"
        "Visual elements: A young man in a denim jacket leaning on a red scooter.\n"
        "On-screen text: PIZZA"
    )
    result = rewrite('He checks his phone and says "Late again."', description, provider="offline")
    opening = split_paragraphs(result.text)[0]
    assert opening.startswith("The video opens on a young man in a denim jacket leaning on a red scooter")
    assert "medium shot at eye level" in opening and "PIZZA" in opening
    assert "first_frame_opening" in result.rules_enforced


def test_language_request_is_reported_by_the_offline_provider():
    result = rewrite("A dog runs on the beach.", language="Chinese", provider="offline")
    assert any("cannot translate" in w for w in result.warnings)


def test_empty_prompt_is_a_value_error():
    with pytest.raises(ValueError, match="prompt"):
        rewrite("   ", provider="offline")


# --- first-frame prompt without an image -----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS, ids=[f"p{i:02d}" for i in range(len(PROMPTS))])
def test_offline_first_frame_prompt_passes_checks(prompt):
    result = make_first_frame_prompt(prompt, "16:9", provider="offline")
    assert check_first_frame_prompt(result.text) == []
    assert 100 <= count_words(result.text) <= 250
    assert not dialogue_lines(result.text)  # no speech in a still image


def test_first_frame_prompt_order_shot_style_content():
    text = first_frame_prompt(
        "An anime girl in a close-up, low-angle, looking up at falling cherry blossoms. Then she laughs.",
        "9:16",
        provider="offline",
    )
    assert text.startswith("Close-up shot, low-angle camera looking up. Japanese anime style")
    assert text.index("anime style") < text.index("An anime girl")
    assert "vertical 9:16" in text and "laughs" not in text
    assert first_frame_prompt("A mountain lake at dawn.", provider="offline").startswith("Wide shot, eye-level camera.")


def test_first_frame_prompt_rejects_unknown_aspect():
    with pytest.raises(ValueError, match="aspect"):
        first_frame_prompt("A cat.", aspect="4:3", provider="offline")


# --- describe ---------------------------------------------------------------------------------------------------


def test_describe_red_square_on_blue_names_both_colours():
    description = describe_first_frame(_red_on_blue(), provider="offline")
    names = [c["name"] for c in description.facts["colours"]]
    assert names[0] == "blue" and "red" in names
    assert description.facts["background"] == "blue"
    red = next(c for c in description.facts["colours"] if c["name"] == "red")
    assert red["position"] == "centre" and 0.08 < red["share"] < 0.15
    assert "red area in the centre against a blue background" in description.elements
    assert description.provider == "offline" and description.on_screen_text == ""


def test_describe_portrait_versus_landscape():
    landscape = describe_first_frame(_red_on_blue(640, 360), provider="offline")
    portrait = describe_first_frame(_red_on_blue(360, 640), provider="offline")
    square = describe_first_frame(_red_on_blue(300, 300), provider="offline")
    assert (landscape.facts["orientation"], landscape.facts["aspect"]) == ("landscape", "16:9")
    assert (portrait.facts["orientation"], portrait.facts["aspect"]) == ("portrait", "9:16")
    assert (square.facts["orientation"], square.facts["aspect"]) == ("square", "1:1")
    assert "landscape 16:9 frame (640×360)" in landscape.cinematography
    assert "portrait 9:16 frame (360×640)" in portrait.cinematography


def test_describe_dark_versus_bright():
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal(25, 8, (240, 320, 3)), 0, 255).astype(np.uint8)
    bright = np.clip(rng.normal(230, 8, (240, 320, 3)), 0, 255).astype(np.uint8)
    d, b = (describe_first_frame(x, provider="offline") for x in (dark, bright))
    assert d.facts["brightness"] < 0.2 < 0.8 < b.facts["brightness"]
    assert "dark, low-key" in d.style and "bright, high-key" in b.style
    assert "black" in [c["name"] for c in d.facts["colours"]] and "white" in [c["name"] for c in b.facts["colours"]]


def test_describe_light_bias_and_greyscale():
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (180, 1, 3))
    facts = image_facts(gradient, face_detector=None)
    assert facts["light_bias"] == "right" and facts["colourfulness"] < 3
    assert "greyscale" in describe_first_frame(gradient, provider="offline").style


def test_describe_accepts_path_pil_and_array(tmp_path):
    array = _red_on_blue(200, 100)
    path = tmp_path / "frame.png"
    Image.fromarray(array).save(path)
    rgba = Image.fromarray(array).convert("RGBA")
    results = [
        describe_first_frame(x, provider="offline").facts["colours"]
        for x in (array, Image.fromarray(array), path, str(path), rgba)
    ]
    assert all(r == results[0] for r in results)
    assert to_pil_rgb(array[..., 0]).mode == "RGB"  # greyscale [H, W]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "dtype"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        ("/no/such/frame.png", "does not exist"),
        (42, "type int"),
    ],
)
def test_describe_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        describe_first_frame(bad, provider="offline")


def test_faces_from_a_detector_become_words():
    def fake_detector(rgb):
        h, w = rgb.shape[:2]
        return [(w // 2 - 60, h // 2 - 70, 120, 140)]

    image = _red_on_blue(640, 360)
    description = OfflineProvider(face_detector=fake_detector).describe(image)
    faces = description.facts["faces"]
    assert len(faces) == 1 and faces[0]["position"] == "centre"
    assert description.facts["face_detector"] == "fake_detector"
    assert "close-up" in description.cinematography and "1 face visible (centre of the frame)" in description.elements
    opening = split_paragraphs(compose_rewrite("She smiles.", description))[0]
    assert "a close-up of one face in the centre" in opening


def test_without_a_face_detector_faces_are_not_checked():
    facts = image_facts(_red_on_blue(), face_detector=None)
    assert facts["faces"] is None and facts["face_detector"] == "none available"


def test_colour_names():
    assert colour_name((255, 0, 0)) == "red"
    assert colour_name((0, 0, 255)) == "blue"
    assert colour_name((0, 160, 0)) == "green"
    assert colour_name((250, 250, 250)) == "white"
    assert colour_name((10, 10, 10)) == "black"


# --- provider selection ------------------------------------------------------------------------------------------


def test_provider_selection_from_env():
    assert configured_provider_name({}) == "offline"
    assert isinstance(get_provider(env={}), OfflineProvider)
    provider = get_provider(
        env={"MOVA_PROMPT_BASE_URL": "http://127.0.0.1:9/v1", "MOVA_PROMPT_MODEL": "m", "MOVA_PROMPT_TIMEOUT": "2.5"}
    )
    assert (
        provider.name == "openai"
        and provider.timeout == 2.5
        and provider.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    )
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
        (
            "openai",
            {"MOVA_PROMPT_BASE_URL": "http://x/v1", "MOVA_PROMPT_MODEL": "m", "MOVA_PROMPT_TIMEOUT": "soon"},
            "MOVA_PROMPT_TIMEOUT",
        ),
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


def test_whitespace_and_line_breaks_inside_quotes_are_kept():
    for prompt in ('A man says "Hello,   world"   and\tleaves.', 'He says "Wait…\n  what?"\nShe shrugs.'):
        text = rewrite(prompt, provider="offline").text
        assert check_rewrite(prompt, text) == []


def test_pronouns_name_speakers_only_when_nothing_else_does():
    assert audio_paragraph('He says "Wait." She shrugs.') == "The audio shows a man speaking."
    assert (
        audio_paragraph('He asks "Tea?" and she replies "Yes please."') == "The audio shows a man and a woman speaking."
    )


def test_edited_description_text_reads_naturally_in_the_opening(red_on_blue_description):
    result = rewrite("The square spins.", red_on_blue_description.to_text(), provider="offline")
    opening = split_paragraphs(result.text)[0]
    assert opening.startswith("The video opens on a red area in the centre against a blue background")
    assert "(" not in opening and " a a " not in opening


def test_facts_are_json_serialisable(red_on_blue_description):
    import json

    assert json.loads(json.dumps(red_on_blue_description.facts)) == red_on_blue_description.facts


def test_overlong_sentences_without_punctuation_are_cut_in_both_scripts():
    english = (
        "A parade moves down the avenue "
        + " ".join(f"past float number {i}" for i in range(100))
        + '. He yells "Hooray!"'
    )
    chinese = "一条长长的游行队伍" + "经过一辆又一辆彩车" * 40 + "。他大喊：「万岁！」"
    for prompt in (english, chinese):
        text = rewrite(prompt, provider="offline").text
        assert check_rewrite(prompt, text) == []
        assert count_words(text) > 200  # shortened, not emptied
        ff = first_frame_prompt(prompt, provider="offline")
        assert check_first_frame_prompt(ff) == []
