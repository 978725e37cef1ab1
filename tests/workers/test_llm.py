"""The LLM client against a real local server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from orchestrator.core.retry import RetryPolicy
from orchestrator.errors import StageFailed, TransientStageError
from orchestrator.sdk.testing import stage_context
from orchestrator.settings import Settings
from tests.workers.openai_server import OpenAIServer, completion, running
from workers.lib.llm import LLMClient, ask, ask_json, json_object, parse_retry_after

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name one electric car maker."},
]
#: Quick in-client retries so that the tests spend their time on Retry-After only.
QUICK = RetryPolicy(max_attempts=3, backoff_s=0.05, factor=2.0, max_backoff_s=0.2, jitter=False)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with running() as server:
        yield server


@pytest.fixture
def client(server: OpenAIServer) -> Iterator[LLMClient]:
    with LLMClient(server.base_url, "test-model", "sk-test", policy=QUICK, max_wait_s=5) as c:
        yield c


def test_a_reply_carries_text_and_usage(server: OpenAIServer, client: LLMClient) -> None:
    server.reply("BYD", prompt_tokens=21, completion_tokens=2)
    reply = client.chat(MESSAGES, max_tokens=16, temperature=0.0)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("BYD", 21, 2)
    assert reply.total_tokens == 23 and not reply.usage_estimated
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {
        "model": "test-model",
        "messages": MESSAGES,
        "max_tokens": 16,
        "temperature": 0.0,
    }


def test_json_mode_asks_for_a_json_object(server: OpenAIServer, client: LLMClient) -> None:
    server.reply('{"maker": "BYD"}')
    reply = client.chat(MESSAGES, max_tokens=16, temperature=0.0, json_mode=True)
    assert json.loads(reply.text) == {"maker": "BYD"}
    assert server.requests[0].body["response_format"] == {"type": "json_object"}


def test_from_settings_is_none_without_a_base_url(server: OpenAIServer) -> None:
    assert LLMClient.from_settings(Settings()) is None
    settings = Settings(llm_base_url=server.base_url + "/", llm_model="llama3.2")
    with LLMClient.from_settings(settings) as client:  # type: ignore[union-attr]
        server.reply("ok")
        assert client.chat(MESSAGES).text == "ok"
    assert server.requests[0].body["model"] == "llama3.2"
    assert "authorization" not in server.requests[0].headers  # Ollama needs no key


def test_429_waits_for_retry_after_and_cools_down(server: OpenAIServer, client: LLMClient) -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests"}}
    server.push(429, json.dumps(error), {"Retry-After": "1"})
    server.reply("after the wait")
    cooled: list[float] = []
    reply = client.chat(MESSAGES, on_cooldown=cooled.append)
    assert reply.text == "after the wait"
    assert cooled == [1.0]
    first, second = server.requests
    assert second.at - first.at >= 1.0  # Retry-After honoured, not merely retried
    assert second.body == first.body


def test_a_500_is_retried_without_cooldown(server: OpenAIServer, client: LLMClient) -> None:
    server.push(500, '{"error": {"message": "upstream overloaded"}}')
    server.reply("recovered")
    cooled: list[float] = []
    assert client.chat(MESSAGES, on_cooldown=cooled.append).text == "recovered"
    assert len(server.requests) == 2 and cooled == []


def test_persistent_503_becomes_a_transient_stage_error(
    server: OpenAIServer, client: LLMClient
) -> None:
    for _ in range(QUICK.max_attempts):
        server.push(503, '{"error": {"message": "model loading"}}', {"Retry-After": "0"})
    with pytest.raises(TransientStageError, match="503 after 3 attempt") as caught:
        client.chat(MESSAGES)
    assert "model loading" in str(caught.value)
    assert caught.value.details == {"status": 503, "attempts": 3}
    assert len(server.requests) == QUICK.max_attempts


def test_a_long_retry_after_goes_back_to_the_engine(
    server: OpenAIServer, client: LLMClient
) -> None:
    server.push(429, '{"error": {"message": "quota"}}', {"Retry-After": "120"})
    cooled: list[float] = []
    with pytest.raises(TransientStageError) as caught:
        client.chat(MESSAGES, on_cooldown=cooled.append)
    assert caught.value.retry_after_s == 120.0
    assert cooled == [120.0]
    assert len(server.requests) == 1  # no two-minute sleep inside a worker


def test_a_400_fails_permanently_with_the_providers_message(
    server: OpenAIServer, client: LLMClient
) -> None:
    body = {"error": {"message": "max_tokens is too large: 999999", "type": "invalid_request"}}
    server.push(400, json.dumps(body))
    with pytest.raises(StageFailed, match=r"answered 400.*max_tokens is too large") as caught:
        client.chat(MESSAGES, max_tokens=999999)
    assert not caught.value.transient
    assert len(server.requests) == 1


def test_a_refused_key_names_the_setting(server: OpenAIServer, client: LLMClient) -> None:
    server.push(401, '{"error": {"message": "Incorrect API key provided"}}')
    with pytest.raises(StageFailed, match="ORCH_LLM_API_KEY") as caught:
        client.chat(MESSAGES)
    assert not caught.value.transient


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Welcome to nginx!</body></html>",
        "{not json",
        '{"object": "list", "data": []}',
        '{"choices": []}',
    ],
)
def test_a_reply_that_is_not_chat_completions_fails_clearly(
    server: OpenAIServer, client: LLMClient, body: str
) -> None:
    server.push(200, body)
    with pytest.raises(StageFailed, match="not chat-completions JSON") as caught:
        client.chat(MESSAGES)
    assert not caught.value.transient


def test_missing_usage_is_estimated(server: OpenAIServer, client: LLMClient) -> None:
    body = json.loads(completion("Tesla and BYD"))
    del body["usage"]
    server.push(200, json.dumps(body))
    reply = client.chat(MESSAGES)
    assert reply.usage_estimated
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.total_tokens == reply.prompt_tokens + reply.completion_tokens


def test_a_timeout_is_transient(server: OpenAIServer) -> None:
    server.push(200, completion("too late"), delay=1.0)
    with (
        LLMClient(server.base_url, "m", timeout_s=0.2, policy=QUICK) as client,
        pytest.raises(TransientStageError, match="timed out"),
    ):
        client.chat(MESSAGES)


def test_an_unreachable_provider_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        LLMClient(f"http://127.0.0.1:{port}/v1", "m", policy=QUICK) as client,
        pytest.raises(TransientStageError, match="unreachable"),
    ):
        client.chat(MESSAGES)


def test_ask_reports_usage_cooldown_and_rate_to_the_stage(
    server: OpenAIServer, client: LLMClient
) -> None:
    ctx, sink = stage_context("topic_researcher", "expand")
    server.push(429, "{}", {"Retry-After": "0.2"})
    server.reply(
        '```json\n{"subtopics": ["batteries"]}\n```', prompt_tokens=30, completion_tokens=9
    )
    server.reply("plain text", prompt_tokens=5, completion_tokens=2)
    assert ask_json(ctx, client, MESSAGES) == {"subtopics": ["batteries"]}
    assert ask(ctx, client, MESSAGES) == "plain text"
    assert sink.usages == [("openai_api", 39), ("openai_api", 7)]
    assert sink.cooldowns == [("openai_api", 0.2)]
    assert sink.throttles == [("openai_api", 1), ("openai_api", 1)]  # the shared rate, per call


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Sure! Here it is: {"a": "b"} Hope that helps.', {"a": "b"}),
        ("[1, 2]", None),
        ("no json here", None),
        ("{broken", None),
    ],
)
def test_json_object_tolerates_chatter_around_it(text: str, value: object) -> None:
    assert json_object(text) == value
