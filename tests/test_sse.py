"""The incremental SSE parser against the WHATWG event-stream rules, in any chunking.

Rules cited from https://html.spec.whatwg.org/multipage/server-sent-events.html
("Interpreting an event stream")."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ai_usage_exporter.core.shapes.sse import SSEEvent, SSEParser, parse_sse

FIXTURES = Path(__file__).parent / "fixtures" / "streams"


def _feed_all(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    out = [e for piece in pieces for e in parser.feed(piece)]
    return out + parser.flush()


def test_event_names_data_and_the_blank_line_that_dispatches() -> None:
    body = b"event: message_start\ndata: {}\n\ndata: two\n\n"
    assert parse_sse(body) == [("message_start", "{}"), (None, "two")]


def test_every_line_ending_is_a_line_ending() -> None:
    for eol in (b"\n", b"\r\n", b"\r"):
        body = eol.join([b"event: e", b"data: a", b"", b"data: b", b"", b""])
        assert parse_sse(body) == [("e", "a"), (None, "b")], eol


def test_data_lines_join_with_newlines() -> None:
    assert parse_sse(b"data: a\ndata:\ndata:  b\n\n") == [(None, "a\n\n b")]


def test_comments_and_other_fields_are_not_data() -> None:
    # OpenRouter sends ": OPENROUTER PROCESSING" comments while it waits.
    body = b": OPENROUTER PROCESSING\n\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n"
    assert parse_sse(body) == [(None, "x")]


def test_an_event_without_data_is_not_dispatched_and_its_name_does_not_leak() -> None:
    assert parse_sse(b"event: ping\n\ndata: x\n\n") == [(None, "x")]


def test_a_field_without_a_colon_is_a_field_with_an_empty_value() -> None:
    assert parse_sse(b"data\n\n") == [(None, "")]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert parse_sse(b"data:x\n\ndata:  y\n\n") == [(None, "x"), (None, " y")]


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert parse_sse("\ufeffdata: x\n\n".encode()) == [(None, "x")]


def test_a_crlf_split_across_chunks_is_one_line_ending() -> None:
    assert _feed_all([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [(None, "a"), (None, "b")]


def test_a_character_split_across_chunks_is_decoded_whole() -> None:
    body = "data: caf\u00e9 \u2014 \U0001f600\n\n".encode()
    assert _feed_all([body[i : i + 1] for i in range(len(body))]) == [
        (None, "caf\u00e9 \u2014 \U0001f600")
    ]


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\ndata: b") == [(None, "a")]
    assert parser.feed(b"\n") == []
    assert parser.flush() == [(None, "b")]


def test_flush_gives_an_unterminated_tail() -> None:
    # The Anthropic SDK's basic_response.txt ends without a newline after message_stop.
    body = (FIXTURES / "anthropic_sdk_basic.sse").read_bytes()
    assert not body.endswith(b"\n")
    assert parse_sse(body)[-1] == ("message_stop", '{"type":"message_stop"}')
    parser = SSEParser()
    assert parser.feed(body)[-1][0] == "message_delta"


# Any character a line may hold: not CR or LF, and encodable (no lone surrogates).
_TEXT = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
fields = st.sampled_from(["data", "event", "id", "retry", ":", "data:", "x"])
values = st.text(alphabet=_TEXT, max_size=8)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(st.one_of(st.just(""), st.builds(lambda f, v: f"{f}: {v}", fields, values)))
    )
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return eol.join(lines).encode()


@settings(max_examples=300, deadline=None)
@given(body=streams(), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_chunking_gives_the_same_events(body: bytes, cuts: list[int]) -> None:
    positions = sorted({c for c in cuts if c <= len(body)})
    pieces = [body[a:b] for a, b in zip([0, *positions], [*positions, len(body)], strict=True)]
    assert _feed_all(pieces) == parse_sse(body)


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.none() | st.text(alphabet="abc_", min_size=1, max_size=5),
            st.text(alphabet=_TEXT, max_size=10),
        ),
        max_size=6,
    ),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_what_is_written_is_what_is_read(events: list[SSEEvent], eol: str) -> None:
    body = "".join(
        (f"event: {name}{eol}" if name else "") + f"data: {data}{eol}{eol}" for name, data in events
    )
    assert parse_sse(body.encode()) == events
