"""One OpenAI-compatible chat-completions client: OpenAI, Ollama and vLLM all speak it.

Configuration is three settings (``llm_base_url`` such as ``https://api.openai.com/v1`` or
``http://127.0.0.1:11434/v1``, ``llm_api_key``, ``llm_model``); unset base URL means no LLM and
the workers use their offline methods. A 429 or 5xx is retried here, honouring Retry-After
within a bounded number of attempts and total wait; what is still failing after that, and
timeouts, surface as ``TransientStageError`` so the engine's retry policy takes over. Anything
else (a refused key, an unknown model, a reply that is not chat-completions JSON) is a
``StageFailed``: another attempt would get the same answer.

Workers call ``ask`` (or ``ask_json``), which also reports the tokens as ``openai_api`` usage
(the engine prices them from ``resources.yaml``) and puts ``openai_api`` on cooldown for every
process when the provider answers 429.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from orchestrator.core.retry import RetryPolicy, compute_backoff
from orchestrator.errors import StageFailed, TransientStageError

if TYPE_CHECKING:
    from orchestrator.sdk import StageContext
    from orchestrator.settings import Settings

log = logging.getLogger(__name__)

#: The resource LLM tokens are reserved, rate-limited, cooled down and priced as.
RESOURCE = "openai_api"
#: Statuses worth retrying in place: rate limited, or the provider (or its proxy) hiccupped.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: In-client retries: a few quick ones; longer outages go back to the engine's policy.
DEFAULT_POLICY = RetryPolicy(max_attempts=4, backoff_s=1.0, factor=2.0, max_backoff_s=20.0)

Message = dict[str, str]


@dataclass(frozen=True)
class ChatReply:
    """The assistant's text and the tokens it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model: str = ""
    #: True when the provider reported no usage and the counts are estimated from lengths.
    usage_estimated: bool = False


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def estimate_tokens(text: str) -> int:
    """A provider-independent guess (about four characters a token) when usage is missing."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _provider_message(response: httpx.Response) -> str:
    """The provider's own error message (``{"error": {"message": ...}}``) or the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    if isinstance(error, str):
        return error[:500]
    return json.dumps(body)[:200]


class LLMClient:
    """A synchronous chat-completions client with bounded, Retry-After-aware retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.policy = policy
        #: The most this client sleeps between attempts of one ``chat`` call, in total.
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No connection is opened until the first request.
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> LLMClient | None:
        """The configured client, or None when no LLM is configured (offline methods)."""
        if not settings.llm_base_url:
            return None
        api_key = settings.llm_api_key.get_secret_value()
        return cls(settings.llm_base_url, settings.llm_model, api_key, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.2,
        json_mode: bool = False,
        on_cooldown: Callable[[float], None] | None = None,
    ) -> ChatReply:
        """Send one chat completion; retry 429/5xx in place, raise clear errors otherwise."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            response = self._post(body)
            if response.status_code == 200:
                return self._reply(response, messages)
            if response.status_code not in RETRYABLE_STATUSES:
                raise self._permanent(response)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = compute_backoff(self.policy, attempt, retry_after_s=retry_after)
            if response.status_code == 429 and on_cooldown is not None:
                on_cooldown(retry_after if retry_after is not None else delay)
            if attempt >= self.policy.max_attempts or waited + delay > self.max_wait_s:
                raise TransientStageError(
                    f"LLM provider at {self.url} answered {response.status_code} "
                    f"after {attempt} attempt(s): {_provider_message(response)}",
                    retry_after_s=retry_after,
                    details={"status": response.status_code, "attempts": attempt},
                )
            log.info(
                "LLM %s answered %s; retrying in %.2f s", self.url, response.status_code, delay
            )
            self._sleep(delay)
            waited += delay

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise TransientStageError(
                f"LLM request to {self.url} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise TransientStageError(f"LLM provider at {self.url} unreachable: {exc}") from exc

    def _permanent(self, response: httpx.Response) -> StageFailed:
        status = response.status_code
        hint = {
            401: "the API key was refused (check ORCH_LLM_API_KEY)",
            403: "the API key may not use this model (check ORCH_LLM_API_KEY)",
            404: f"no such endpoint or model {self.model!r} (check ORCH_LLM_BASE_URL, "
            "which should end in /v1, and ORCH_LLM_MODEL)",
        }.get(status, "the request was refused")
        return StageFailed(
            f"LLM provider at {self.url} answered {status}: {hint}: {_provider_message(response)}",
            details={"status": status},
        )

    def _reply(self, response: httpx.Response, messages: list[Message]) -> ChatReply:
        try:
            body = response.json()
            message = body["choices"][0]["message"]
            text = message.get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StageFailed(
                f"LLM provider at {self.url} sent a reply that is not chat-completions JSON: "
                f"{response.text[:200]!r}"
            ) from exc
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        prompt_n, completion_n = usage.get("prompt_tokens"), usage.get("completion_tokens")
        estimated = not (isinstance(prompt_n, int) and isinstance(completion_n, int))
        if isinstance(prompt_n, int) and isinstance(completion_n, int):
            prompt, completion = prompt_n, completion_n
        else:
            prompt = estimate_tokens("".join(m.get("content", "") for m in messages))
            completion = estimate_tokens(text)
        total = usage.get("total_tokens")
        if not isinstance(total, int) or estimated:
            total = prompt + completion
        return ChatReply(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            model=str(body.get("model") or self.model),
            usage_estimated=estimated,
        )


def ask(
    ctx: StageContext,
    client: LLMClient,
    messages: list[Message],
    *,
    max_tokens: int = 512,
    temperature: float = 0.2,
    json_mode: bool = False,
) -> str:
    """Chat on behalf of a stage: wait for the shared rate, report the tokens as usage,
    cool down on 429."""
    ctx.throttle(RESOURCE)
    reply = client.chat(
        messages,
        max_tokens=max_tokens,
        temperature=temperature,
        json_mode=json_mode,
        on_cooldown=lambda seconds: ctx.cooldown(RESOURCE, seconds),
    )
    ctx.usage(RESOURCE, reply.total_tokens)
    return reply.text


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's reply (code fences and chatter around it tolerated)."""
    fenced = _FENCE.match(text)
    candidate = fenced.group(1) if fenced else text.strip()
    start, end = candidate.find("{"), candidate.rfind("}")
    for attempt in (candidate, candidate[start : end + 1] if 0 <= start < end else ""):
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def ask_json(
    ctx: StageContext,
    client: LLMClient,
    messages: list[Message],
    *,
    max_tokens: int = 1024,
    temperature: float = 0.2,
) -> dict[str, Any] | None:
    """``ask`` in JSON mode; None when the reply holds no JSON object (callers fall back)."""
    text = ask(
        ctx, client, messages, max_tokens=max_tokens, temperature=temperature, json_mode=True
    )
    value = json_object(text)
    if value is None:
        log.warning("LLM reply for %s held no JSON object: %r", ctx.stage_id, text[:200])
    return value
