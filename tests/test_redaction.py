"""What the ledger stores: credentials redacted, prompt and response text only when asked,
and then redacted and truncated to `Limits.max_text_bytes`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from ai_usage_exporter.core.events.model import EventError, Limits
from ai_usage_exporter.core.redact import redact_value
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.recorder.recorder import Recorder

OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv"
ANTHROPIC_KEY = "sk-ant-api03-Zy9xWv8uTs7rQp6oNm5lKj4i"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9abcdefghij"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, AWS_KEY, "eyJhbGciOiJIUzI1NiJ9abcdefghij", "hunter2")


def _recorder(tmp_path: Path, **kwargs: Any) -> Recorder:
    return Recorder(str(tmp_path / "ledger.db"), CollectorRegistry(), **kwargs)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    with _recorder(tmp_path) as rec:
        yield rec


def _only_row(rec: Recorder) -> dict[str, Any]:
    rows = rec.ledger.events()
    assert len(rows) == 1
    return rows[0]


def _base(**fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1, **fields}


def test_secrets_in_metadata_values_are_redacted(recorder: Recorder) -> None:
    recorder.record_many(
        [
            _base(
                metadata={
                    "note": f"called with {OPENAI_KEY} then {ANTHROPIC_KEY}",
                    "header": f"Authorization: {BEARER}",
                    "aws": f"key id {AWS_KEY} in us-east-1",
                    "url": "https://api.example.com/v1?api_key=hunter2&page=2",
                    "nested": {"list": [f"x {OPENAI_KEY} y", 3, None]},
                    "harmless": "sk-short and AKIA lowercase",
                }
            )
        ]
    )
    row = _only_row(recorder)
    assert json.loads(row["metadata"]) == {
        "note": "called with [REDACTED] then [REDACTED]",
        "header": "Authorization: [REDACTED]",
        "aws": "key id [REDACTED] in us-east-1",
        "url": "https://api.example.com/v1?api_key=[REDACTED]&page=2",
        "nested": {"list": ["x [REDACTED] y", 3, None]},
        "harmless": "sk-short and AKIA lowercase",
    }
    assert not any(secret in row["metadata"] for secret in SECRETS)


def test_metadata_under_secret_looking_keys_is_redacted_whole(recorder: Recorder) -> None:
    recorder.record_many(
        [
            _base(
                metadata={
                    "api_key": "plain-value-without-a-known-prefix",
                    "Authorization": "Basic dXNlcjpwYXNz",
                    "db_password": 12345,
                    "client_secret": {"nested": "object"},
                    "empty_token": "",
                    "model_family": "gpt-4o",
                }
            )
        ]
    )
    assert json.loads(_only_row(recorder)["metadata"]) == {
        "api_key": "[REDACTED]",
        "Authorization": "[REDACTED]",
        "db_password": "[REDACTED]",
        "client_secret": "[REDACTED]",
        "empty_token": "",
        "model_family": "gpt-4o",
    }


def test_token_counts_in_metadata_are_kept_but_tokens_are_not(recorder: Recorder) -> None:
    # "token" in a key names a credential (access_token) or a count (max_tokens); the
    # counts were once stored as [REDACTED].
    metadata = {
        "max_tokens": 1024,
        "prompt_tokens_details": {"cached_tokens": 2},
        "token_count": 7,
        "tokenizer": "o200k_base",
        "access_token": "ya29.plain-looking-value",
        "refresh-token": 12345,
        "session_token": {"nested": "object"},
    }
    recorder.record_many([_base(metadata=metadata)])
    assert json.loads(_only_row(recorder)["metadata"]) == {
        "max_tokens": 1024,
        "prompt_tokens_details": {"cached_tokens": 2},
        "token_count": 7,
        "tokenizer": "o200k_base",
        "access_token": "[REDACTED]",
        "refresh-token": "[REDACTED]",
        "session_token": "[REDACTED]",
    }


def test_call_logs_and_the_ledger_redact_alike() -> None:
    out = io.StringIO()
    CallLogger(out).log("info", "call", request={"api_key": 3, "max_tokens": 5}, note=OPENAI_KEY)
    record = orjson.loads(out.getvalue())
    assert (record["request"], record["note"]) == (
        redact_value({"api_key": 3, "max_tokens": 5}),
        "[REDACTED]",
    )
    assert record["request"] == {"api_key": "[REDACTED]", "max_tokens": 5}


def test_error_type_is_redacted(recorder: Recorder) -> None:
    recorder.record_many([_base(status="error", error_type=f"AuthError: bad key {OPENAI_KEY}")])
    row = _only_row(recorder)
    assert row["error_type"] == "AuthError: bad key [REDACTED]"
    assert row["status"] == "error"


def test_text_is_not_stored_by_default(recorder: Recorder) -> None:
    recorder.record_many([_base(prompt_text="what is 2+2?", response_text="4")])
    row = _only_row(recorder)
    assert row["prompt_text"] is None
    assert row["response_text"] is None


def test_stored_text_is_redacted(tmp_path: Path) -> None:
    with _recorder(tmp_path, store_text=True) as rec:
        rec.record_many(
            [
                _base(
                    prompt_text=f"use {OPENAI_KEY} and password=hunter2 please",
                    response_text=f"ok, {BEARER} sent",
                )
            ]
        )
        row = _only_row(rec)
    assert row["prompt_text"] == "use [REDACTED] and password=[REDACTED] please"
    assert row["response_text"] == "ok, [REDACTED] sent"


def test_stored_text_is_truncated_to_max_text_bytes(tmp_path: Path) -> None:
    limits = Limits(max_text_bytes=64)
    with _recorder(tmp_path, store_text=True, limits=limits) as rec:
        rec.record_many(
            [
                _base(idempotency_key="ascii", prompt_text="a" * 100, response_text="short"),
                # 3-byte characters: 64 bytes hold 21 of them; the 22nd would be cut in half.
                _base(idempotency_key="multibyte", prompt_text="€" * 40),
                # 4-byte emoji after 62 ASCII bytes: the emoji does not fit and is dropped whole.
                _base(idempotency_key="emoji", prompt_text="b" * 62 + "🚀" + "c" * 10),
                _base(idempotency_key="exact", prompt_text="d" * 64),
            ]
        )
        rows = {r["idempotency_key"]: r for r in rec.ledger.events()}
    assert rows["ascii"]["prompt_text"] == "a" * 64
    assert rows["ascii"]["response_text"] == "short"
    assert rows["multibyte"]["prompt_text"] == "€" * 21
    assert rows["emoji"]["prompt_text"] == "b" * 62
    assert rows["exact"]["prompt_text"] == "d" * 64


def test_truncation_happens_after_redaction(tmp_path: Path) -> None:
    # A cut through the key would leave a fragment the patterns no longer recognise.
    limits = Limits(max_text_bytes=20)
    with _recorder(tmp_path, store_text=True, limits=limits) as rec:
        rec.record_many([_base(prompt_text=f"key {OPENAI_KEY} more text after it")])
        row = _only_row(rec)
    assert row["prompt_text"] == "key [REDACTED] more "
    assert "sk-" not in row["prompt_text"]


def test_long_text_within_the_body_limit_is_accepted_not_rejected(tmp_path: Path) -> None:
    with _recorder(tmp_path, store_text=True) as rec:
        big = "x" * (rec.limits.max_text_bytes * 4)
        assert rec.record_many([_base(prompt_text=big)]).accepted == 1
        row = _only_row(rec)
    assert row["prompt_text"] == "x" * rec.limits.max_text_bytes


def test_text_with_a_lone_surrogate_is_rejected_not_stored(tmp_path: Path) -> None:
    with _recorder(tmp_path, store_text=True) as rec:
        with pytest.raises(EventError) as info:
            rec.record(_base(prompt_text="bad \ud800 text"))
        assert [d.field for d in info.value.details] == ["prompt_text"]
        rec.record(_base(prompt_text="fine"))
        rec.flush(10)
        assert _only_row(rec)["prompt_text"] == "fine"
