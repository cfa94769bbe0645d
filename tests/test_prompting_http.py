"""The OpenAI-compatible client (the ``openai`` SDK) against a real HTTP server on 127.0.0.1 with scripted
chat-completions replies: protocol, timeouts, retries (429 with Retry-After, 5xx), errors, and the workflow's
check-retry-fallback on top."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mova.prompting import (
    FrameDescription,
    OpenAICompatibleProvider,
    ProviderError,
    check_rewrite,
    describe_first_frame,
    dialogue_lines,
    get_provider,
    make_first_frame_prompt,
    rewrite,
)
from mova.prompting.instructions import FIRST_FRAME_EXAMPLES, REWRITE_EXAMPLES


@pytest.fixture(autouse=True)
def _no_prompt_env(monkeypatch):
    for key in (
        "MOVA_PROMPT_PROVIDER",
        "MOVA_PROMPT_BASE_URL",
        "MOVA_PROMPT_MODEL",
        "MOVA_PROMPT_PATH",
        "MOVA_PROMPT_API_KEY",
        "MOVA_PROMPT_VISION_MODEL",
        "MOVA_PROMPT_TIMEOUT",
        "MOVA_PROMPT_MAX_RETRIES",
    ):
        monkeypatch.delenv(key, raising=False)


# --- the scripted server ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict → JSON, str/bytes → sent as is
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between single body bytes (a server that never quite finishes)
    headers: dict = field(default_factory=dict)


def chat(content: str | None, finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
    }


class ScriptedServer:
    """Chat-completions on 127.0.0.1 (random port): answers POSTs with queued replies, records the requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "json": json.loads(raw)})
                reply = server.replies.pop(0) if server.replies else Reply(500, {"error": "no scripted reply"})
                if reply.delay and server.stop.wait(reply.delay):
                    return
                body = reply.body
                data = (
                    json.dumps(body).encode()
                    if isinstance(body, (dict, list))
                    else (body.encode() if isinstance(body, str) else body or b"")
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.trickle:
                        for i in range(len(data)):
                            if server.stop.wait(reply.trickle):
                                return
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def add(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


def provider_for(srv: ScriptedServer, **kwargs) -> OpenAICompatibleProvider:
    options = {"timeout": 5.0, "max_retries": 0}
    options.update(kwargs)
    return OpenAICompatibleProvider(srv.url, "test-model", **options)


PROMPT = 'A barista tells a customer "Your latte is ready, careful, it\'s hot." The customer smiles.'
CONFORMING = REWRITE_EXAMPLES[0].answer  # written for PROMPT's dialogue
DROPS_QUOTE = "A barista hands over a latte and warns that it is hot.\n\nThe audio shows a friendly voice."


# --- the client ----------------------------------------------------------------------------------------------------


def test_success_sends_the_protocol_and_returns_the_content(server):
    server.add(Reply(body=chat("  Hello there.  ")))
    provider = provider_for(server, api_key="sk-test", temperature=0.2, max_tokens=77)
    assert provider.complete([{"role": "user", "content": "Hi"}]) == "  Hello there.  "
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["json"] == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "max_tokens": 77,
    }
    assert "sk-test" not in repr(provider)


def test_rewrite_through_the_server_uses_system_prompt_and_examples(server):
    server.add(Reply(body=chat("<think>plan</think>" + CONFORMING)))
    result = rewrite(PROMPT, "Visual elements: a café counter", provider=provider_for(server))
    assert result.text == CONFORMING and result.provider == "openai"
    assert not result.fell_back and result.attempts == 1 and result.warnings == []
    assert "dialogue_verbatim" in result.rules_enforced
    messages = server.requests[0]["json"]["messages"]
    assert messages[0]["role"] == "system" and "The audio shows" in messages[0]["content"]
    assert len(messages) == 2 + 2 * len(REWRITE_EXAMPLES)
    assert "Visual elements: a café counter" in messages[-1]["content"] and PROMPT in messages[-1]["content"]


def test_image_arrives_as_a_png_data_uri_content_part(server):
    reply = {
        "style": "Flat graphic",
        "cinematography": "Wide shot",
        "elements": "A red square on blue",
        "on_screen_text": "",
    }
    server.add(Reply(body=chat(json.dumps(reply))))
    frame = np.zeros((36, 64, 3), np.uint8)
    frame[:] = (0, 0, 255)
    frame[12:24, 24:40] = (255, 0, 0)
    description = describe_first_frame(frame, provider=provider_for(server, vision_model="vision-model"))
    assert (description.style, description.elements, description.provider) == (
        "Flat graphic",
        "A red square on blue",
        "openai",
    )
    assert description.facts["orientation"] == "landscape"  # pixel facts are always attached
    body = server.requests[0]["json"]
    assert body["model"] == "vision-model"
    parts = body["messages"][0]["content"]
    image_part = next(p for p in parts if p["type"] == "image_url")
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.size == (64, 36)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), frame)
    assert any(p["type"] == "text" and "JSON" in p["text"] for p in parts)


def test_large_images_are_downscaled_before_upload(server):
    server.add(Reply(body=chat('{"style": "s", "cinematography": "c", "elements": "e", "on_screen_text": ""}')))
    provider_for(server, image_max_side=128).describe(Image.new("RGB", (1000, 500), "white"))
    url = server.requests[0]["json"]["messages"][0]["content"][0]["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (128, 64)


def test_timeout_is_an_error_within_the_limit(server):
    server.add(Reply(body=chat("too late"), delay=5.0))
    provider = provider_for(server, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        provider.complete([{"role": "user", "content": "Hi"}])
    elapsed = time.monotonic() - start
    assert info.value.kind == "timeout" and "0.5 s" in str(info.value)
    assert elapsed < 2.0


def test_a_timeout_is_retried_when_retries_are_allowed(server):
    server.add(Reply(body=chat("too late"), delay=5.0), Reply(body=chat("in time")))
    assert provider_for(server, timeout=0.5, max_retries=1).complete([{"role": "user", "content": "Hi"}]) == "in time"
    assert len(server.requests) == 2


def test_429_waits_for_retry_after_then_succeeds(server):
    server.add(Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"}), Reply(body=chat("ok")))
    start = time.monotonic()
    assert provider_for(server, max_retries=1).complete([{"role": "user", "content": "Hi"}]) == "ok"
    waited = time.monotonic() - start
    assert waited >= 1.0 and len(server.requests) == 2  # Retry-After honoured (the 3600 s case fails at once)


def test_429_with_a_retry_after_too_long_to_wait_is_an_error_at_once(server):
    server.add(Reply(429, "rate limited", headers={"Retry-After": "3600"}), Reply(body=chat("never sent")))
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        provider_for(server, max_retries=2).complete([{"role": "user", "content": "Hi"}])
    err = info.value
    assert (err.kind, err.status_code, err.retry_after) == ("http_status", 429, 3600.0)
    assert "HTTP 429" in str(err) and time.monotonic() - start < 1.0 and len(server.requests) == 1


def test_4xx_is_not_retried_and_carries_status_and_body(server):
    server.add(Reply(401, {"error": {"message": "invalid api key"}}), Reply(body=chat("never sent")))
    with pytest.raises(ProviderError) as info:
        provider_for(server, max_retries=3).complete([{"role": "user", "content": "Hi"}])
    err = info.value
    assert (err.kind, err.status_code) == ("http_status", 401)
    assert "HTTP 401" in str(err) and "invalid api key" in err.body_excerpt
    assert len(server.requests) == 1


def test_5xx_is_retried_then_succeeds(server):
    server.add(
        Reply(503, "overloaded", headers={"Retry-After": "0.01"}), Reply(502, "bad gateway"), Reply(body=chat("ok"))
    )
    assert provider_for(server, max_retries=2).complete([{"role": "user", "content": "Hi"}]) == "ok"
    assert len(server.requests) == 3


def test_5xx_after_the_last_retry_is_an_error(server):
    server.add(Reply(500, "boom " * 200), Reply(500, "boom again"))
    with pytest.raises(ProviderError) as info:
        provider_for(server, max_retries=1).complete([{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 500 and "boom again" in str(info.value)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ("this is not json {", "malformed", "unreadable reply"),
        ([1, 2, 3], "empty", "no choices"),
        ({"error": {"message": "model not found"}}, "empty", "model not found"),
        ({"choices": []}, "empty", "no choices"),
        ({"choices": [{"index": 0}]}, "empty", "empty"),
        (chat(""), "empty", "empty"),
        (chat(None), "empty", "empty"),
    ],
)
def test_malformed_and_empty_replies(server, body, kind, message):
    server.add(Reply(body=body))
    with pytest.raises(ProviderError) as info:
        provider_for(server).complete([{"role": "user", "content": "Hi"}])
    assert info.value.kind == kind and message in str(info.value)


def test_content_parts_reply_is_joined(server):
    server.add(
        Reply(
            body={"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}
        )
    )
    assert provider_for(server).complete([{"role": "user", "content": "Hi"}]) == "ab"


def test_connection_refused_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAICompatibleProvider(f"http://127.0.0.1:{port}/v1", "m", timeout=2.0, max_retries=1)
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        provider.complete([{"role": "user", "content": "Hi"}])
    assert info.value.kind == "connection" and time.monotonic() - start < 2.0


# --- checks, retry and fallback --------------------------------------------------------------------------------------


def test_nonconforming_rewrite_is_retried_once_then_falls_back(server, caplog):
    server.add(Reply(body=chat(DROPS_QUOTE)), Reply(body=chat(DROPS_QUOTE)))
    with caplog.at_level("WARNING", logger="mova.prompting"):
        result = rewrite(PROMPT, provider=provider_for(server))
    assert len(server.requests) == 2
    retry_messages = server.requests[1]["json"]["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": DROPS_QUOTE}
    assert "dialogue not kept verbatim" in retry_messages[-1]["content"]
    assert "Your latte is ready, careful, it's hot." in retry_messages[-1]["content"]
    assert result.fell_back and result.provider == "offline" and result.attempts == 2
    assert check_rewrite(PROMPT, result.text) == []
    assert any("dialogue not kept verbatim" in w for w in result.warnings)
    assert "used the offline provider" in result.warnings[-2] and "unchanged" in result.warnings[-1]
    assert "used the offline provider" in caplog.text


def test_retry_with_the_problems_can_fix_the_answer(server):
    server.add(Reply(body=chat(DROPS_QUOTE)), Reply(body=chat(CONFORMING)))
    result = rewrite(PROMPT, provider=provider_for(server))
    assert result.text == CONFORMING and result.provider == "openai" and not result.fell_back
    assert result.attempts == 2 and len(result.warnings) == 1


def test_provider_error_falls_back_at_once_with_the_reason(server):
    server.add(Reply(500, "internal error"))
    result = rewrite(PROMPT, provider=provider_for(server))
    assert result.fell_back and result.attempts == 1 and len(server.requests) == 1
    assert "HTTP 500" in result.warnings[0] and check_rewrite(PROMPT, result.text) == []


def test_timeout_during_rewrite_falls_back_without_hanging(server):
    server.add(Reply(body=chat(CONFORMING), delay=5.0))
    start = time.monotonic()
    result = rewrite(PROMPT, provider=provider_for(server, timeout=0.4))
    assert time.monotonic() - start < 2.0
    assert result.fell_back and "no reply within 0.4 s" in result.warnings[0]


@pytest.mark.parametrize(
    ("prompt", "bad_answer"),
    [
        (
            "他轻声说：「又下雨了。」然后端起茶杯。",  # translated dialogue
            'An old man says softly, "It\'s raining again." He lifts his tea.\n\nThe audio shows a quiet voice.',
        ),
        (
            "哥哥问：“作业写完了吗？”妹妹说：“早就写完了！”",  # one of two speakers' lines paraphrased
            "哥哥问：“作业写完了吗？”妹妹说她写完了。\n\nThe audio shows two children speaking in Chinese.",
        ),
        (
            'Tom says "See you tomorrow." and Li Wei replies “明天见！”',  # mixed: punctuation changed inside a quote
            'Tom says "See you tomorrow" and Li Wei replies “明天见!”\n\nThe audio shows two voices.',
        ),
    ],
)
def test_dialogue_is_verbatim_through_the_fallback_path(server, prompt, bad_answer):
    server.add(Reply(body=chat(bad_answer)), Reply(body=chat(bad_answer)))
    result = rewrite(prompt, provider=provider_for(server))
    assert result.fell_back
    for line in dialogue_lines(prompt):
        assert line in dialogue_lines(result.text)
    assert check_rewrite(prompt, result.text) == []


def test_quote_style_change_alone_is_accepted(server):
    prompt = "他轻声说：「又下雨了。」"
    answer = "一位老人坐在窗边，轻声说：“又下雨了。”\n\nThe audio shows an old man speaking softly in Chinese."
    server.add(Reply(body=chat(answer)))
    result = rewrite(prompt, provider=provider_for(server))
    assert result.text == answer and not result.fell_back


def test_describe_falls_back_to_pixel_facts_on_error(server):
    server.add(Reply(404, "no such model"))
    description = describe_first_frame(np.full((90, 160, 3), 200, np.uint8), provider=provider_for(server))
    assert description.provider == "offline" and description.facts["aspect"] == "16:9"
    assert "HTTP 404" in description.warnings[0]


def test_describe_with_an_unusable_reply_falls_back(server):
    server.add(Reply(body=chat("{}")))
    description = describe_first_frame(np.zeros((64, 64, 3), np.uint8), provider=provider_for(server))
    assert description.provider == "offline" and "no usable text" in description.warnings[0]


def test_first_frame_prompt_through_the_server(server):
    good = FIRST_FRAME_EXAMPLES[0][2]
    server.add(Reply(body=chat(good)))
    result = make_first_frame_prompt("A chef at work", "16:9", provider=provider_for(server))
    assert result.text == good and result.provider == "openai"
    assert "Aspect ratio: 16:9" in server.requests[0]["json"]["messages"][-1]["content"]


def test_first_frame_prompt_with_sound_and_time_falls_back(server):
    bad = "Wide shot. A chef flips a pancake, then shouts and we hear the kitchen."
    server.add(Reply(body=chat(bad)), Reply(body=chat(bad)))
    result = make_first_frame_prompt('A chef shouts "Order up!"', "9:16", provider=provider_for(server))
    assert result.fell_back and result.provider == "offline" and len(server.requests) == 2
    assert any("temporal words" in w for w in result.warnings)
    assert "vertical 9:16" in result.text


def test_provider_from_env_talks_to_the_server(server, monkeypatch):
    monkeypatch.setenv("MOVA_PROMPT_BASE_URL", server.url)
    monkeypatch.setenv("MOVA_PROMPT_MODEL", "env-model")
    monkeypatch.setenv("MOVA_PROMPT_API_KEY", "env-key")
    monkeypatch.setenv("MOVA_PROMPT_TIMEOUT", "3")
    monkeypatch.setenv("MOVA_PROMPT_MAX_RETRIES", "0")
    server.add(Reply(body=chat(CONFORMING)))
    provider = get_provider()
    assert provider.name == "openai" and provider.timeout == 3.0 and provider.max_retries == 0
    result = rewrite(PROMPT, FrameDescription(elements="a café"))  # provider=None: chosen from the environment
    assert result.provider == "openai"
    request = server.requests[0]
    assert request["json"]["model"] == "env-model" and request["headers"]["authorization"] == "Bearer env-key"
