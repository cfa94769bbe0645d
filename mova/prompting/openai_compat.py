"""A client for any server speaking the OpenAI chat-completions protocol (sglang, vLLM, Ollama, LM Studio, hosted).

``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature", "max_tokens"}``; images go as
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` content parts. Every failure is a
``ProviderError`` whose ``kind`` says what happened; nothing waits forever: connect, read and write have
timeouts, and the whole reply must arrive before a total deadline.

Environment (``OpenAICompatibleProvider.from_env``):
    MOVA_PROMPT_BASE_URL      e.g. http://127.0.0.1:30000/v1 (sglang), http://127.0.0.1:11434/v1 (Ollama)
    MOVA_PROMPT_MODEL         the served model name
    MOVA_PROMPT_VISION_MODEL  model for first-frame description (default: MOVA_PROMPT_MODEL)
    MOVA_PROMPT_API_KEY       sent as "Authorization: Bearer ..." when set
    MOVA_PROMPT_TIMEOUT       seconds for one request (default 30)
    MOVA_PROMPT_MAX_RETRIES   retries after connection errors, 408/429/5xx (default 2)
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from mova.prompting.base import ChatProvider
from mova.prompting.schema import ProviderError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_REPLY_BYTES = 8 * 1024 * 1024
BODY_EXCERPT_CHARS = 300
MAX_RETRY_AFTER_S = 10.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def image_data_uri(image: Image.Image, max_side: int = 1024) -> str:
    """PNG data URI of an RGB image, downscaled so that its longest side is at most ``max_side``."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _env_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not a number; give seconds, e.g. 30") from None
    if value <= 0:
        raise ValueError(f"{key}: {raw!r} must be > 0")
    return value


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{key}: {raw!r} must be >= 0")
    return value


class OpenAICompatibleProvider(ChatProvider):
    """Chat-completions over HTTP.

    Args:
        base_url: the API root, usually ending in ``/v1``; a URL ending in ``/chat/completions`` is used as is.
        model: the model name the server serves.
        api_key: bearer token, or None for local servers.
        timeout: seconds allowed for one request, from connecting to the last byte of the reply.
        max_retries: extra attempts after connection errors and statuses 408/429/500/502/503/504 (timeouts are
            not retried: a model that was too slow once will be again).
        vision_model: model for ``describe`` (default ``model``).
        connect_timeout: seconds to connect (default ``min(timeout, 10)``).
        retry_backoff: first wait between attempts in seconds, doubled each time; ``Retry-After`` wins if ≤ 10 s.
        temperature, max_tokens: sampling settings sent with every request.
        image_max_side: images are downscaled to this longest side before upload.
        transport: an ``httpx`` transport (tests, proxies); None for the default.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        vision_model: str | None = None,
        connect_timeout: float | None = None,
        retry_backoff: float = 0.5,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        image_max_side: int = 1024,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url: {base_url!r} is not allowed; give an http(s) URL such as http://127.0.0.1:30000/v1"
            )
        if not model or not str(model).strip():
            raise ValueError(f"model: {model!r} is empty; give the model name the server serves")
        if timeout <= 0:
            raise ValueError(f"timeout: {timeout!r} must be > 0 seconds")
        if max_retries < 0:
            raise ValueError(f"max_retries: {max_retries!r} must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = str(model).strip()
        self.vision_model = (vision_model or "").strip() or self.model
        self.api_key = api_key or None
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout else min(self.timeout, 10.0)
        self.max_retries = int(max_retries)
        self.retry_backoff = float(retry_backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.image_max_side = image_max_side
        self.transport = transport

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OpenAICompatibleProvider:
        """Build from the ``MOVA_PROMPT_*`` variables (see the module docstring); ``overrides`` win."""
        env = os.environ if env is None else env
        base_url = env.get("MOVA_PROMPT_BASE_URL", "").strip()
        model = env.get("MOVA_PROMPT_MODEL", "").strip()
        if not base_url and "base_url" not in overrides:
            raise ValueError(
                "MOVA_PROMPT_BASE_URL: not set; the openai provider needs the server URL, e.g. http://127.0.0.1:30000/v1"
            )
        if not model and "model" not in overrides:
            raise ValueError("MOVA_PROMPT_MODEL: not set; the openai provider needs the served model name")
        kwargs: dict[str, Any] = {
            "base_url": base_url,
            "model": model,
            "api_key": env.get("MOVA_PROMPT_API_KEY", "").strip() or None,
            "vision_model": env.get("MOVA_PROMPT_VISION_MODEL", "").strip() or None,
            "timeout": _env_float(env, "MOVA_PROMPT_TIMEOUT", DEFAULT_TIMEOUT),
            "max_retries": _env_int(env, "MOVA_PROMPT_MAX_RETRIES", DEFAULT_MAX_RETRIES),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def endpoint(self) -> str:
        return self.base_url if self.base_url.endswith("/chat/completions") else f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleProvider(base_url={self.base_url!r}, model={self.model!r}, timeout={self.timeout})"

    # --- protocol ---------------------------------------------------------------------------------------------

    def _wire_messages(self, messages: list[dict]) -> list[dict]:
        wire = []
        for message in messages:
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image":
                        parts.append(
                            {
                                "type": "image_url",
                                "image_url": {"url": image_data_uri(part["image"], self.image_max_side)},
                            }
                        )
                    else:
                        parts.append(part)
                content = parts
            wire.append({"role": message["role"], "content": content})
        return wire

    def complete(self, messages: list[dict], *, vision: bool = False) -> str:
        payload = {
            "model": self.vision_model if vision else self.model,
            "messages": self._wire_messages(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": False,
        }
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except ProviderError as err:
                retryable = err.kind == "connection" or (
                    err.kind == "http_status" and err.status_code in RETRY_STATUSES
                )
                if not retryable or attempt == self.max_retries:
                    raise
                wait = self.retry_backoff * 2**attempt
                if err.retry_after is not None and 0 <= err.retry_after <= MAX_RETRY_AFTER_S:
                    wait = err.retry_after
                logger.warning(
                    "%s; retrying in %.2f s (attempt %d of %d)", err, wait, attempt + 2, self.max_retries + 1
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _post(self, body: bytes) -> str:
        """One request: status, size and deadline checked while the reply streams in."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
        deadline = time.monotonic() + self.timeout
        where = f"{self.name} provider ({self.endpoint})"
        try:
            # a server on this machine is never reached through an HTTP(S)_PROXY from the environment
            local = urlsplit(self.endpoint).hostname in LOOPBACK_HOSTS
            with httpx.Client(timeout=timeout, transport=self.transport, trust_env=not local) as client:
                with client.stream("POST", self.endpoint, content=body, headers=headers) as response:
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > MAX_REPLY_BYTES:
                            raise ProviderError(
                                f"{where}: reply larger than {MAX_REPLY_BYTES} bytes",
                                kind="malformed",
                                provider=self.name,
                            )
                        if time.monotonic() > deadline:
                            raise ProviderError(
                                f"{where}: no complete reply within {self.timeout:g} s",
                                kind="timeout",
                                provider=self.name,
                            )
                    raw = b"".join(chunks)
                    status = response.status_code
                    retry_after_header = response.headers.get("retry-after")
        except httpx.ConnectTimeout:
            raise ProviderError(
                f"{where}: could not connect within {self.connect_timeout:g} s", kind="timeout", provider=self.name
            ) from None
        except httpx.TimeoutException:
            raise ProviderError(
                f"{where}: no reply within {self.timeout:g} s", kind="timeout", provider=self.name
            ) from None
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{where}: connection failed: {type(exc).__name__}: {exc}", kind="connection", provider=self.name
            ) from None
        text = raw.decode("utf-8", errors="replace")
        if status >= 400:
            excerpt = " ".join(text.split())[:BODY_EXCERPT_CHARS]
            try:
                retry_after = float(retry_after_header) if retry_after_header else None
            except ValueError:
                retry_after = None
            raise ProviderError(
                f"{where}: HTTP {status}: {excerpt or '(empty body)'}",
                kind="http_status",
                provider=self.name,
                status_code=status,
                body_excerpt=excerpt,
                retry_after=retry_after,
            )
        return self._parse_reply(text, where)

    def _parse_reply(self, text: str, where: str) -> str:
        excerpt = " ".join(text.split())[:BODY_EXCERPT_CHARS]
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"{where}: reply is not JSON ({exc.msg} at char {exc.pos}): {excerpt!r}",
                kind="malformed",
                provider=self.name,
                body_excerpt=excerpt,
            ) from None
        if not isinstance(data, dict):
            raise ProviderError(
                f"{where}: reply JSON is a {type(data).__name__}, not an object: {excerpt!r}",
                kind="malformed",
                provider=self.name,
                body_excerpt=excerpt,
            )
        if "error" in data and not data.get("choices"):
            error = data["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderError(
                f"{where}: server returned an error: {message}",
                kind="malformed",
                provider=self.name,
                body_excerpt=excerpt,
            )
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ProviderError(
                f"{where}: reply has no choices: {excerpt!r}", kind="empty", provider=self.name, body_excerpt=excerpt
            )
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        if not isinstance(message, dict):
            raise ProviderError(
                f"{where}: first choice has no message object: {excerpt!r}",
                kind="malformed",
                provider=self.name,
                body_excerpt=excerpt,
            )
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            raise ProviderError(
                f"{where}: the first choice's message is empty", kind="empty", provider=self.name, body_excerpt=excerpt
            )
        if choice.get("finish_reason") == "length":
            logger.warning("%s: reply was cut at max_tokens=%d", where, self.max_tokens)
        return content
