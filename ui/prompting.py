"""Prompt rewriting tab (docs/model.md#prompt-rewriting): describe the first frame → edit the description → rewrite the prompt → send it
to a generation tab. No first frame yet: write an image prompt for a text-to-image model.

Public API events: ``describe(image)`` → (description, notes); ``rewrite(prompt, description, language)`` →
(rewritten prompt, notes); ``first_frame_prompt(prompt, aspect)`` → (image prompt, notes). They call
``mova.prompting`` (its provider from ``MOVA_PROMPT_PROVIDER`` unless one is given; offline without one), need no
model and do not use the GPU queue.

Run alone: ``build().launch()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from mova import prompting
from mova.validation import MAX_IMAGE_PIXELS
from ui.generate import image_path, user_errors

LANGUAGES = ("English", "Chinese", "Japanese", "Korean", "French", "German", "Spanish")
ASPECTS = ("16:9", "9:16")
PROMPTING_CONCURRENCY_ID = "prompting"


@dataclass
class PromptingTab:
    image: gr.Image
    prompt: gr.Textbox
    description: gr.Textbox
    rewritten: gr.Textbox
    send_it2va: gr.Button
    send_t2va: gr.Button


def notes_markdown(provider: str, rules: list[str] | None = None, warnings: list[str] | None = None,
                   fell_back: bool = False) -> str:
    lines = [f"**Provider:** {provider or 'offline'}" + (" (fallback)" if fell_back else "")]
    if rules:
        lines.append("**Rules checked:** " + ", ".join(rules))
    for warning in warnings or []:
        lines.append(f"- ⚠ {warning}")
    return "\n\n".join(lines)


def render(provider: Any = None) -> PromptingTab:
    """Build the tab inside the current layout; the send buttons are wired by ``build_app``."""
    gr.Markdown("Describe the first frame, edit the description if needed, then rewrite your prompt in the "
                "caption style MOVA was trained on (dialogue kept verbatim, a closing audio paragraph).")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            image = gr.Image(label="First frame (optional)", type="filepath", sources=["upload", "clipboard"],
                             height=240, elem_id="prompting-image")
            prompt = gr.Textbox(label="Prompt", lines=4, elem_id="prompting-prompt",
                                placeholder='Your idea, e.g. A man at a desk looks up and says "We did it."')
            language = gr.Dropdown(list(LANGUAGES), value="English", allow_custom_value=True, label="language",
                                   info="of the narration; dialogue is never translated", elem_id="prompting-language")
            with gr.Row():
                describe_button = gr.Button("1. Describe first frame", elem_id="prompting-describe")
                rewrite_button = gr.Button("2. Rewrite prompt", variant="primary", elem_id="prompting-rewrite")
        with gr.Column(scale=1, min_width=320):
            description = gr.Textbox("", label="First-frame description (editable)", lines=6,
                                     elem_id="prompting-description")
            rewritten = gr.Textbox("", label="Rewritten prompt (editable)", lines=10, elem_id="prompting-rewritten")
            notes = gr.Markdown(label="notes", elem_id="prompting-notes")
            with gr.Row():
                send_it2va = gr.Button("Send to Image+Text → Video+Audio", elem_id="prompting-send-it2va")
                send_t2va = gr.Button("Send to Text → Video+Audio", elem_id="prompting-send-t2va")
    with gr.Accordion("No first frame yet? Write an image prompt for it", open=False):
        with gr.Row():
            aspect = gr.Radio(list(ASPECTS), value="16:9", label="aspect", elem_id="prompting-aspect")
            first_frame_button = gr.Button("Write first-frame image prompt", elem_id="prompting-first-frame")
        image_prompt = gr.Textbox(label="First-frame image prompt", lines=6, elem_id="prompting-image-prompt")

    @user_errors
    def describe(image: Any) -> tuple[str, str]:
        """Describe a first frame in MOVA's caption style (the scene, the people, what could sound), as the start
        of a generation prompt.

        Args:
            image: the first frame: an image file (PNG, JPEG or WebP) uploaded to this app

        Returns:
            the description and notes on how it was made (which provider, warnings)
        """
        path = image_path(image)
        if path is None:
            raise ValueError("image is missing: upload a first frame to describe")
        from mova import media

        frame = media.load_image(path, max_pixels=MAX_IMAGE_PIXELS)  # a clear ValueError for a non-image
        result = prompting.describe_first_frame(frame, provider=provider)
        return result.to_text(), notes_markdown(result.provider, warnings=result.warnings)

    @user_errors
    def rewrite(prompt: str, description: str | None, language: str | None) -> tuple[str, str]:
        """Rewrite a short prompt in MOVA's training-caption style: quoted dialogue kept verbatim, and a final
        "The audio shows..." paragraph naming the sounds.

        Args:
            prompt: what should happen and be heard in the clip
            description: optional description of the first frame (from describe)
            language: the language of the rewritten prompt (default English)

        Returns:
            the rewritten prompt and notes on how it was made (which provider, the rules enforced, warnings)
        """
        english = (language or "").strip().lower() in ("", "english", "en")
        result = prompting.rewrite(prompt, description or None, None if english else language, provider=provider)
        return result.text, notes_markdown(result.provider, result.rules_enforced, result.warnings, result.fell_back)

    @user_errors
    def first_frame_prompt(prompt: str, aspect: str) -> tuple[str, str]:
        """Write a text-to-image prompt for a first frame that fits a video prompt, for an image model.

        Args:
            prompt: the video prompt
            aspect: the frame's aspect ratio, 16:9 or 9:16

        Returns:
            the image prompt and notes on how it was made
        """
        result = prompting.make_first_frame_prompt(prompt, aspect, provider=provider)
        return result.text, notes_markdown(result.provider, result.rules_enforced, result.warnings, result.fell_back)

    shared = dict(concurrency_id=PROMPTING_CONCURRENCY_ID, concurrency_limit=2)
    # preprocess=False: a non-image upload reaches describe, which says so clearly.
    describe_button.click(describe, image, [description, notes], api_name="describe", preprocess=False, **shared)
    rewrite_button.click(rewrite, [prompt, description, language], [rewritten, notes], api_name="rewrite", **shared)
    first_frame_button.click(first_frame_prompt, [prompt, aspect], [image_prompt, notes], api_name="first_frame_prompt",
                             **shared)
    return PromptingTab(image, prompt, description, rewritten, send_it2va, send_t2va)


def build(provider: Any = None) -> gr.Blocks:
    """The tab as an app of its own (no send buttons target)."""
    with gr.Blocks(title="MOVA Studio · Prompt rewriting") as demo:
        render(provider)
    return demo
