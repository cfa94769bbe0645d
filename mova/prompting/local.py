"""A provider that runs Hugging Face models from local folders with ``transformers`` (no server, no download).

- ``rewrite`` / ``first_frame_prompt``: a causal LM (``AutoModelForCausalLM`` + its tokenizer; the chat template
  when the tokenizer has one, a plain "### Instructions / ### Request / ### Answer" layout otherwise).
- ``describe``: the ``image-text-to-text`` pipeline on ``vision_path`` (default: ``path``), e.g. a Qwen-VL folder.

torch and transformers are imported on first use; each model is loaded once per provider and kept; nothing is
fetched from the Hub. Environment: ``MOVA_PROMPT_PATH`` (LLM folder), ``MOVA_PROMPT_VISION_PATH`` (VLM folder),
``MOVA_PROMPT_DEVICE`` (cpu, cuda, cuda:1; default cuda when available), ``MOVA_PROMPT_MAX_NEW_TOKENS`` (512).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mova.prompting.base import PromptProvider, env_number
from mova.prompting.instructions import messages_as_plain_text
from mova.prompting.schema import ProviderError, ProviderErrorKind

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 512


class TransformersProvider(PromptProvider):
    """Local models through transformers.

    Args:
        path, vision_path: folders of a causal LM (config.json, weights, tokenizer files) and of an
            image-text-to-text model for ``describe`` (default ``path``).
        device, dtype: "cpu", "cuda", "cuda:1", ... (default: cuda when available); "auto" keeps the checkpoint's.
        max_new_tokens, do_sample, temperature: generation length cap; sampling (greedy by default: reproducible).
    """

    name = "transformers"

    def __init__(self, path: str | os.PathLike, vision_path: str | os.PathLike | None = None, *,
                 device: str | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, do_sample: bool = False,
                 temperature: float = 0.7, dtype: str = "auto") -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: {max_new_tokens!r} is not allowed; it must be >= 1")
        self.path = Path(path)
        self.vision_path = Path(vision_path) if vision_path else self.path
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.do_sample, self.temperature, self.dtype = do_sample, temperature, dtype
        self._lock = threading.Lock()  # loading and generation are serialised per provider
        self._text_model: tuple[Any, Any] | None = None  # (tokenizer, model), loaded on first use
        self._vision_pipe: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> TransformersProvider:
        env = os.environ if env is None else env
        if not (path := env.get("MOVA_PROMPT_PATH", "").strip()) and "path" not in overrides:
            raise ValueError("MOVA_PROMPT_PATH: not set; the transformers provider needs a local model folder")
        return cls(**{"path": path, "vision_path": env.get("MOVA_PROMPT_VISION_PATH", "").strip() or None,
                      "device": env.get("MOVA_PROMPT_DEVICE", "").strip() or None,
                      "max_new_tokens": env_number(env, "MOVA_PROMPT_MAX_NEW_TOKENS", DEFAULT_MAX_NEW_TOKENS, int),
                      **overrides})

    def _error(self, message: str, exc: Exception | None = None, kind: ProviderErrorKind = "load") -> ProviderError:
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        return ProviderError(f"transformers provider: {message}{detail}", kind=kind, provider=self.name)

    def _check_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise self._error(f"model folder {str(folder)!r} " + ("is a file" if folder.exists() else "does not exist"))
        if not (folder / "config.json").is_file():
            raise self._error(f"{str(folder)!r} has no config.json; expected a Hugging Face model folder "
                                   "(config.json, weights, tokenizer files)")

    def _resolve_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def _load_text(self) -> tuple[Any, Any]:
        if self._text_model is None:
            self._check_folder(self.path)
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype, local_files_only=True)
                model.to(self._resolve_device()).eval()
            except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for bad folders
                raise self._error(f"cannot load a causal LM from {str(self.path)!r}", exc) from exc
            logger.info("loaded %s from %s on %s", type(model).__name__, self.path, model.device)
            self._text_model = (tokenizer, model)
        return self._text_model

    def _load_vision(self) -> Any:
        if self._vision_pipe is None:
            self._check_folder(self.vision_path)
            try:
                from transformers import pipeline

                self._vision_pipe = pipeline("image-text-to-text", model=str(self.vision_path),
                                             device=self._resolve_device(), dtype=self.dtype,
                                             model_kwargs={"local_files_only": True})
            except Exception as exc:
                raise self._error(f"cannot load an image-text-to-text model from {str(self.vision_path)!r}",
                                       exc) from exc
        return self._vision_pipe

    def complete(self, messages: list[dict], *, vision: bool = False) -> str:
        with self._lock:
            return self._complete_vision(messages) if vision else self._complete_text(messages)

    def _complete_text(self, messages: list[dict]) -> str:
        tokenizer, model = self._load_text()
        import torch

        try:
            prompt = (tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                      if getattr(tokenizer, "chat_template", None) else messages_as_plain_text(messages))
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
            if limit and ids.shape[1] + self.max_new_tokens > limit:
                keep = max(1, limit - self.max_new_tokens)
                logger.warning("prompt of %d tokens cut to its last %d to fit the model's %d positions", ids.shape[1],
                               keep, limit)
                ids = ids[:, -keep:]
            max_new = self.max_new_tokens if not limit else max(1, min(self.max_new_tokens, limit - ids.shape[1]))
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            sampling = {"do_sample": True, "temperature": self.temperature} if self.do_sample else {"do_sample": False}
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(model.device), attention_mask=torch.ones_like(ids).to(model.device),
                                     max_new_tokens=max_new, pad_token_id=pad_id, **sampling)
            reply = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        except Exception as exc:
            raise self._error("generation failed", exc, "generation") from exc
        if not reply.strip():
            raise self._error("the model generated no text", kind="empty")
        return reply

    def _complete_vision(self, messages: list[dict]) -> str:
        pipe = self._load_vision()
        try:
            out = pipe(text=messages, max_new_tokens=self.max_new_tokens, return_full_text=False)
        except Exception as exc:
            raise self._error("image description failed", exc, "generation") from exc
        generated = out[0]["generated_text"] if out and isinstance(out[0], dict) else out
        if isinstance(generated, list):  # a conversation: take the last assistant turn
            generated = generated[-1].get("content", "") if generated and isinstance(generated[-1], dict) else ""
        if not isinstance(generated, str) or not generated.strip():
            raise self._error("the vision model generated no text", kind="empty")
        return generated
