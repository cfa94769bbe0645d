"""Instructions for LLM/VLM providers: system prompts, in-context examples, message builders, reply parsing.
The wording is ours, from the rules of docs/model.md#prompt-rewriting. Every example answer passes ``check_rewrite`` /
``check_first_frame_prompt`` (a test guards that), so a model that imitates the examples conforms.
"""

from __future__ import annotations

import json
import re
from collections import namedtuple
from collections.abc import Sequence

from mova.prompting.schema import FIELD_LABELS, FrameDescription
from mova.prompting.text import AUDIO_OPENING, MAX_WORDS, normalize_output

Message = dict  # {"role": ..., "content": str | list[content part]}

# --- 1. First-frame description (docs/model.md#prompt-rewriting step 2) ----------------------------------------------

DESCRIBE_INSTRUCTION = """\
This picture will be the first frame of a video. Describe only what can actually be seen in it, and nothing \
you would have to guess (no sounds, no motion, no names, no story).

Answer with a single JSON object with exactly these four string fields:
- "style": the visual style — photographic, painted, animated or rendered; colour palette; lighting mood.
- "cinematography": shot size, camera angle and height, composition, depth of field, where the camera stands.
- "elements": the people or animals (appearance, clothing, pose, expression), the objects, the setting, the \
light sources, and where everything sits relative to everything else.
- "on_screen_text": every piece of legible text exactly as written, in its own script — do not translate, \
transliterate or correct it; use "" when there is none.

Reply with the JSON object only."""


def parse_description_reply(reply: str) -> FrameDescription:
    """A VLM's answer → ``FrameDescription``: JSON when it sent JSON, else labelled lines, else free text."""
    text = normalize_output(reply)
    match = re.search(r"\{.*\}", text, flags=re.S)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return FrameDescription.from_text(text)
    values = {name: data.get(name) or data.get(label.lower()) or "" for name, label in FIELD_LABELS.items()}
    fields = {k: ("; ".join(map(str, v)) if isinstance(v, list) else str(v)).strip() for k, v in values.items()}
    if fields["on_screen_text"].lower() in {"none", "n/a", "null"}:
        fields["on_screen_text"] = ""
    return FrameDescription(**fields)


# --- 2. Rewrite (docs/model.md#prompt-rewriting step 3) --------------------------------------------------------------

REWRITE_SYSTEM_PROMPT = f"""\
You are a caption writer for a model that generates a video together with its soundtrack. You receive a \
user's idea for a clip and, when there is one, a description of the clip's first frame. You answer with one \
caption written the way the model's training captions are written.

Follow these rules:
1. Begin with the first frame. Work what it shows into the opening sentences as action — who is where and \
what they are doing — rather than as a list of items. Do not contradict the description.
2. Tell what happens next in the order it happens, beat by beat, keeping to what the user asked for. Do not \
add events, camera moves or sounds that neither the user's idea nor the scene calls for.
3. Dialogue is sacred: copy every line the user put in quotation marks exactly as written, character for \
character, inside double quotes, in its original language. Never translate, shorten, paraphrase or \
romanise it. Say who speaks each line and how.
4. Write about a scene in motion. Avoid words that freeze it — static, still image, photo, picture, frozen — \
unless the user wants stillness.
5. Use a few short paragraphs. The last paragraph is about sound only and begins with the exact words \
"{AUDIO_OPENING}". It covers the voices (who speaks, tone, language), sound effects and music that the idea \
names or the scene clearly produces; when nothing in the scene makes a sound, it describes a quiet ambience.
6. Stay within {MAX_WORDS} words in total; 120–220 is ideal.
7. Reply with the caption alone: no heading, no notes, no markdown, no quotation marks around the whole \
caption."""


RewriteExample = namedtuple("RewriteExample", "prompt description answer")  # description: labelled lines or ""


REWRITE_EXAMPLES: tuple[RewriteExample, ...] = (
    RewriteExample(
        prompt='A barista tells a customer "Your latte is ready, careful, it\'s hot." The customer smiles.',
        description=(
            "Visual style: Photographic, warm tungsten light, shallow focus, cosy palette of browns and cream.\n"
            "Cinematography: Medium shot at eye level across a café counter; the barista is framed on the left "
            "third, the customer soft in the right foreground.\n"
            "Visual elements: A young barista with a green apron holds a white cup on a saucer behind a wooden "
            "counter with an espresso machine; a customer in a grey scarf waits on the other side.\n"
            "On-screen text: none"
        ),
        answer=(
            "Behind a wooden café counter lit by warm tungsten bulbs, a young barista in a green apron lifts a "
            "white cup on its saucer away from the espresso machine, while a customer in a grey scarf waits on "
            "the other side, softly out of focus.\n\n"
            'The barista slides the cup forward and says, "Your latte is ready, careful, it\'s hot." The '
            "customer leans in, wraps both hands around the saucer and smiles back.\n\n"
            "The audio shows the barista's friendly female voice over the low hiss of the espresso machine and "
            "the gentle clink of porcelain on wood, with a quiet murmur of other guests in the background."
        ),
    ),
    RewriteExample(
        prompt="两个老朋友在公园下象棋。一个说“将军！”，另一个笑着说“你别得意得太早。”",
        description="",
        answer=(
            "On a sunny afternoon in a city park, two elderly friends sit on stools at a stone table, bent over "
            "a wooden Chinese chess board while leaves shift in the breeze above them.\n\n"
            "The man in a blue cap slaps a piece down and announces, “将军！” His friend in a white vest studies "
            "the board, chuckles, and answers with a grin, “你别得意得太早。” He reaches for a piece of his own.\n\n"
            "The audio shows two older men speaking in Chinese, the sharp clack of a chess piece on the board, "
            "a short laugh, and the soft rustle of leaves with distant birdsong in the park."
        ),
    ),
    RewriteExample(
        prompt="Heavy rain and thunder at night on an empty city street.",
        description=(
            "Visual style: Cinematic night photography, cool blue and sodium-orange light, wet reflections.\n"
            "Cinematography: Wide shot from a low camera at kerb height, the street running to a vanishing point "
            "in the centre, deep focus.\n"
            "Visual elements: An empty street lined with closed shops, puddles reflecting street lamps, rain "
            "streaks visible in the lamplight.\n"
            "On-screen text: OPEN 24H"
        ),
        answer=(
            "Rain hammers down on an empty city street at night, bouncing off puddles that mirror the orange "
            "street lamps and a glowing shop sign reading OPEN 24H, seen from low at the kerb as the road runs "
            "away into the dark.\n\n"
            "Gusts push sheets of water across the asphalt. A flash of lightning briefly turns the wet shop "
            "fronts white, then the street sinks back into blue shadow while the downpour keeps falling.\n\n"
            "The audio shows a steady roar of heavy rain on asphalt and metal awnings, water gurgling into a "
            "drain, and a deep roll of thunder that follows the lightning flash."
        ),
    ),
    RewriteExample(
        prompt="A street musician plays violin under a bridge and a few people stop to listen.",
        description="",
        answer=(
            "Under the stone arch of a river bridge, a street musician in a long coat tucks a violin under his "
            "chin and draws the bow across the strings, an open case at his feet.\n\n"
            "Two passers-by slow down and stop, and a woman with a shopping bag drops a coin into the case. The "
            "musician nods to her without missing a note and leans into a faster passage.\n\n"
            "The audio shows a lively solo violin melody echoing under the bridge, the faint splash of the "
            "river, and the bright ring of a coin landing in the case."
        ),
    ),
    RewriteExample(
        prompt="Sunrise over a misty mountain lake, a heron stands in the shallows.",
        description="",
        answer=(
            "Pale morning light spreads over a mountain lake as mist drifts low across the water, and a grey "
            "heron stands poised in the shallows near the reeds, its reflection rippling beneath it.\n\n"
            "The sun clears the ridge and turns the mist gold. The heron lifts one leg, steps forward slowly and "
            "lowers its beak toward the surface.\n\n"
            "The audio shows the calm ambience of the lake at dawn: soft lapping of water against the reeds, a "
            "light breeze, and the faint splash of the heron's step."
        ),
    ),
)


def language_instruction(language: str | None) -> str:
    if not language or language.strip().lower() in {"en", "english"}:
        return "Write the caption in English."
    return (f"Write the caption in {language}. Keep every quoted line in its original language, and still begin the "
            f'last paragraph with the English words "{AUDIO_OPENING}".')


def _rewrite_request(prompt: str, description: str, language: str | None) -> str:
    desc = description.strip() or "(no first frame given)"
    return f"First frame:\n{desc}\n\nUser's idea:\n{prompt.strip()}\n\n{language_instruction(language)}"


def build_rewrite_messages(prompt: str, description: FrameDescription | None = None, language: str | None = None, *,
                           previous: str | None = None, problems: Sequence[str] = ()) -> list[Message]:
    """Chat messages for a rewrite: system prompt, the in-context examples, the request (and a correction)."""
    messages: list[Message] = [{"role": "system", "content": REWRITE_SYSTEM_PROMPT}]
    for example in REWRITE_EXAMPLES:
        messages.append({"role": "user", "content": _rewrite_request(example.prompt, example.description, None)})
        messages.append({"role": "assistant", "content": example.answer})
    desc = description.to_text() if description is not None and not description.is_empty() else ""
    messages.append({"role": "user", "content": _rewrite_request(prompt, desc, language)})
    messages += correction_messages(previous, problems)
    return messages


def correction_messages(previous: str | None, problems: Sequence[str]) -> list[Message]:
    """The retry turn: the rejected answer and the list of what to fix."""
    if not problems:
        return []
    fix = "\n".join(f"- {p}" for p in problems)
    content = f"That answer breaks the rules:\n{fix}\nWrite the whole answer again with these fixed."
    return [{"role": "assistant", "content": previous}] * bool(previous) + [{"role": "user", "content": content}]


# --- 3. First-frame image prompt without an image (docs/model.md#prompt-rewriting step 1) ----------------------------

FIRST_FRAME_SYSTEM_PROMPT = """\
You write prompts for a still-image generator. The picture it makes becomes the first frame of a video the \
user has in mind, so it must show the very first instant of that video.

Write one paragraph of 100 to 250 words, in this order: first the shot size and the camera angle, then the \
visual style, then the content — the subjects with their look, clothing, pose and expression at that \
instant, the setting, the light and the colours. Describe one frozen instant only: no sequence of events and \
no words about time passing. Leave out everything that can only be heard — speech, dialogue, music, sound. \
Compose for the aspect ratio you are given. Reply with the prompt alone."""

FIRST_FRAME_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        'A chef flips a pancake in a busy kitchen and shouts "Order up!"',
        "16:9",
        "Medium shot, eye-level camera across a stainless-steel counter. Photorealistic cinematic style with "
        "warm practical lighting, shallow depth of field and a subtle film grain. A broad-shouldered chef in a "
        "white double-breasted jacket and a black cap stands at a busy restaurant stove, one hand gripping the "
        "handle of a black frying pan that holds a golden pancake, his wrist cocked and his eyes fixed on the "
        "pan with a focused half-smile. Around him, steel shelves hold stacked plates and copper pots, a ticket "
        "rail above the pass is crowded with paper orders, and two cooks in white are blurred in the background "
        "at their stations. Steam rises from a pot on the left burner and catches the warm overhead light. The "
        "palette is dominated by brushed steel, white and amber, with the pancake as the brightest warm accent "
        "near the centre of a widescreen 16:9 frame, the chef placed on the right third.",
    ),
    (
        "一个女孩在雨中的东京街头撑着红伞等人",
        "9:16",
        "Full shot, slightly low camera angle at street level. Cinematic night photography with neon "
        "reflections, soft rain haze and rich saturated colour. A young woman with a short black bob, a beige "
        "trench coat and white sneakers stands on a wet Tokyo side street holding a glossy red umbrella over her "
        "shoulder, looking to one side with a calm, expectant expression. Raindrops streak through the light "
        "around her, and the pavement mirrors glowing shop signs in pink, cyan and amber. Behind her, narrow "
        "buildings rise with stacked vertical signboards and a vending machine glows beside a closed shutter. "
        "The red umbrella is the strongest colour in the scene, set against cool blue shadows, and the girl is "
        "centred in a vertical 9:16 frame with the street receding behind her into soft bokeh.",
    ),
)


def build_first_frame_messages(prompt: str, aspect: str = "16:9", *, previous: str | None = None,
                               problems: Sequence[str] = ()) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": FIRST_FRAME_SYSTEM_PROMPT}]
    for user, example_aspect, answer in FIRST_FRAME_EXAMPLES:
        messages.append({"role": "user", "content": f"Aspect ratio: {example_aspect}\nVideo idea: {user}"})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": f"Aspect ratio: {aspect}\nVideo idea: {prompt.strip()}"})
    messages += correction_messages(previous, problems)
    return messages


def messages_as_plain_text(messages: Sequence[Message]) -> str:
    """Flatten chat messages for a model without a chat template."""
    labels = {"system": "Instructions", "user": "Request", "assistant": "Answer"}
    parts = [f"### {labels.get(m['role'], m['role'])}\n{m['content']}" for m in messages if isinstance(m["content"], str)]
    return "\n\n".join(parts) + "\n\n### Answer\n"

