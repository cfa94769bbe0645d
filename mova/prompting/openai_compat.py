"""Any server speaking OpenAI chat completions (sglang, vLLM, Ollama, LM Studio, hosted), through the ``openai`` SDK.
The SDK does the transport: ``timeout`` bounds connecting and each read; connection errors, timeouts and statuses
408/409/429/5xx are retried ``max_retries`` times with backoff, or after ``Retry-After`` when that is ≤ 2 minutes.
What still fails becomes a ``ProviderError`` whose ``kind`` says why. Images go as PNG data URIs.

Environment (``OpenAICompatibleProvider.from_env``):
    MOVA_PROMPT_BASE_URL      e.g. http://127.0.0.1:30000/v1 (sglang), http://127.0.0.1:11434/v1 (Ollama)
    MOVA_PROMPT_MODEL         the served model name
    MOVA_PROMPT_VISION_MODEL  model for first-frame description (default: MOVA_PROMPT_MODEL)
    MOVA_PROMPT_API_KEY       sent as "Authorization: Bearer ..." when set
    MOVA_PROMPT_TIMEOUT       seconds for one request (default 30)
    MOVA_PROMPT_MAX_RETRIES   retries after connection errors, timeouts, 408/409/429/5xx (default 2)
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import openai
from PIL import Image

from mova.prompting.base import PromptProvider, env_number
from mova.prompting.schema import ProviderError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
BODY_EXCERPT_CHARS = 300
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
EXAMPLE_URL = "http://127.0.0.1:30000/v1"
NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore this one


def image_data_uri(image: Image.Image, max_side: int = 1024) -> str:
    """PNG data URI of an RGB image, downscaled so that its longest side is at most ``max_side``."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    image.convert("RGB").save(buf := io.BytesIO(), format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICompatibleProvider(PromptProvider):
    """Chat completions over HTTP.

    Args:
        base_url: the API root, usually ending in ``/v1``.
        model: the model name the server serves.
        api_key: bearer token, or None for local servers.
        timeout: seconds allowed to connect and for each read of the reply.
        max_retries: extra attempts after connection errors, timeouts and statuses 408/409/429/5xx.
        vision_model: model for ``describe`` (default ``model``).
        temperature, max_tokens: sampling settings sent with every request.
        image_max_side: images are downscaled to this longest side before upload.
        http_client: an ``httpx2.Client`` for the SDK (tests, proxies); None: the default, no proxy for 127.0.0.1.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, *, vision_model: str | None = None, temperature: float = 0.7,
                 max_tokens: int = 1024, image_max_side: int = 1024, http_client: Any = None) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: {base_url!r} is not allowed; give an http(s) URL such as {EXAMPLE_URL}")
        if not model or not str(model).strip():
            raise ValueError(f"model: {model!r} is empty; give the model name the server serves")
        if timeout <= 0 or max_retries < 0:
            raise ValueError(f"timeout={timeout!r}, max_retries={max_retries!r}: not allowed; timeout must be > 0 s "
                             "and max_retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = str(model).strip()
        self.vision_model = (vision_model or "").strip() or self.model
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.temperature, self.max_tokens, self.image_max_side = temperature, max_tokens, image_max_side
        if http_client is None:
            local = urlsplit(self.base_url).hostname in LOOPBACK_HOSTS
            http_client = openai.DefaultHttpxClient(trust_env=not local)
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or NO_KEY, timeout=self.timeout,
                                    max_retries=self.max_retries, http_client=http_client)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OpenAICompatibleProvider:
        """Build from the ``MOVA_PROMPT_*`` variables (see the module docstring); ``overrides`` win."""
        env = os.environ if env is None else env
        text = {key: env.get(f"MOVA_PROMPT_{key.upper()}", "").strip() or None
                for key in ("base_url", "model", "api_key", "vision_model")}
        kwargs = {**text, "timeout": env_number(env, "MOVA_PROMPT_TIMEOUT", DEFAULT_TIMEOUT, float),
                  "max_retries": env_number(env, "MOVA_PROMPT_MAX_RETRIES", DEFAULT_MAX_RETRIES, int), **overrides}
        if not kwargs["base_url"]:
            raise ValueError(f"MOVA_PROMPT_BASE_URL: not set; the openai provider needs the server URL, e.g. {EXAMPLE_URL}")
        if not kwargs["model"]:
            raise ValueError("MOVA_PROMPT_MODEL: not set; the openai provider needs the served model name")
        return cls(**kwargs)

    def _wire(self, content: Any) -> Any:
        """Our image parts → ``image_url`` parts with a data URI; text is sent as is."""
        if not isinstance(content, list):
            return content
        return [{"type": "image_url", "image_url": {"url": image_data_uri(part["image"], self.image_max_side)}}
                if part.get("type") == "image" else part for part in content]

    def complete(self, messages: list[dict], *, vision: bool = False) -> str:
        where = f"{self.name} provider ({self.base_url})"
        try:
            reply = self.client.chat.completions.create(
                model=self.vision_model if vision else self.model, temperature=self.temperature,
                messages=[{"role": m["role"], "content": self._wire(m["content"])} for m in messages],
                max_tokens=self.max_tokens)
        except openai.APITimeoutError:
            raise ProviderError(f"{where}: no reply within {self.timeout:g} s", kind="timeout", provider=self.name) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(f"{where}: connection failed: {exc}", kind="connection", provider=self.name) from None
        except openai.APIStatusError as exc:
            excerpt = " ".join(exc.response.text.split())[:BODY_EXCERPT_CHARS]
            retry_after = exc.response.headers.get("retry-after", "")  # seconds; an HTTP date is not kept
            retry_after = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            raise ProviderError(f"{where}: HTTP {exc.status_code}: {excerpt or '(empty body)'}", kind="http_status",
                                provider=self.name, status_code=exc.status_code, body_excerpt=excerpt,
                                retry_after=retry_after) from None
        except (openai.OpenAIError, ValueError) as exc:  # a reply the SDK cannot read (not JSON, wrong shape)
            raise ProviderError(f"{where}: unreadable reply: {exc}", kind="malformed", provider=self.name) from None
        if not isinstance(reply, openai.BaseModel) or not reply.choices:  # the SDK does not validate replies
            excerpt = (reply.model_dump_json() if isinstance(reply, openai.BaseModel) else str(reply))[:BODY_EXCERPT_CHARS]
            raise ProviderError(f"{where}: reply has no choices: {excerpt}", kind="empty", provider=self.name)
        choice = reply.choices[0]
        content = getattr(choice.message, "content", None)
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            raise ProviderError(f"{where}: the first choice's message is empty", kind="empty", provider=self.name)
        if choice.finish_reason == "length":
            logger.warning("%s: reply was cut at max_tokens=%d", where, self.max_tokens)
        return content
