"""Tests for kaizen.wikipedia: the real httpx client against a local stdlib HTTP server.

The server (`FakeWiki`) answers by path with recorded JSON from tests/kaizen/data/mediawiki/. The
machine has no network, so those bodies were written by hand to follow the real shapes field for
field (see the README there):
- search: MediaWiki core REST API, `GET /w/rest.php/v1/search/page` — the search result object
  example and schema of https://www.mediawiki.org/wiki/API:REST_API/Reference;
- summary: RESTBase, `GET /api/rest_v1/page/summary/{title}` (https://en.wikipedia.org/api/rest_v1/) —
  https://www.mediawiki.org/wiki/Specs/Summary/1.3.0 and full responses recorded in public projects'
  test data; the 404 body is RESTBase's HyperSwitch problem JSON.
The base URL template is http://127.0.0.1:PORT/{lang}, so the server sees the language as the first
path segment.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest

from kaizen import errors
from kaizen.wikipedia import (
    MAX_EXTRACT_CHARS,
    MAX_QUERY_CHARS,
    NoSummaryError,
    SourceRateLimited,
    SourceResponseError,
    SourceTimeout,
    SourceUnavailable,
    WikipediaClient,
    WikiSummary,
    cut_extract,
    default_user_agent,
    language_of,
    search_query,
)

DATA = Path(__file__).parent / "data" / "mediawiki"
SEARCH = "/w/rest.php/v1/search/page"
SUMMARY = "/api/rest_v1/page/summary/"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict or list is sent as JSON, a str as text/html
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    raw_path: str  # as on the request line, still percent-encoded
    path: str  # decoded
    query: dict[str, list[str]]
    headers: dict[str, str]


class FakeWiki:
    """Routes by decoded path ("/en/api/rest_v1/page/summary/Hanoi"); records every request."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/{{lang}}"
        self.requests: list[Seen] = []
        self.routes: dict[str, Reply] = {
            f"/en{SEARCH}": Reply(body=recorded("search_en_hanoi.json")),
            f"/en{SUMMARY}Hanoi": Reply(body=recorded("summary_en_hanoi.json")),
            f"/vi{SEARCH}": Reply(body=recorded("search_vi_ha_noi.json")),
            f"/vi{SUMMARY}Hà_Nội": Reply(body=recorded("summary_vi_ha_noi.json")),
        }

    def reply(self, path: str, *args: Any, **kwargs: Any) -> None:
        self.routes[path] = Reply(*args, **kwargs)

    def search_returns(self, lang: str, *pages: dict[str, Any]) -> None:
        self.reply(f"/{lang}{SEARCH}", body={"pages": list(pages)})

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        self.requests.append(Seen(split.path, path, parse_qs(split.query), dict(handler.headers.items())))
        reply = self.routes.get(path)
        if reply is None:  # RESTBase's 404 for a title it does not know
            reply = Reply(404, {**recorded("summary_not_found.json"), "uri": path})
        time.sleep(reply.delay_s)
        if isinstance(reply.body, str):
            body, kind = reply.body.encode(), "text/html; charset=utf-8"
        else:
            body, kind = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
        handler.send_response(reply.status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def wiki() -> Iterator[FakeWiki]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                state.answer(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = FakeWiki(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(wiki: FakeWiki) -> WikipediaClient:
    return WikipediaClient(wiki.base, timeout_s=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the two happy paths ---------------------------------------------------------------------------


def test_an_english_question_gets_the_english_summary(wiki, client):
    got = client.summary("What is Hanoi?")
    expected = recorded("summary_en_hanoi.json")
    assert got == WikiSummary(title="Hanoi", extract=expected["extract"], url="https://en.wikipedia.org/wiki/Hanoi",
                              lang="en", question="What is Hanoi?")
    search, summary = wiki.requests
    assert search.path == f"/en{SEARCH}"
    assert search.query == {"q": ["What is Hanoi"], "limit": ["1"]}  # "?" is a search wildcard: dropped
    assert summary.path == f"/en{SUMMARY}Hanoi"


def test_a_vietnamese_question_asks_the_vietnamese_wikipedia(wiki, client):
    got = client.summary("Hà Nội ở đâu?")
    assert (got.lang, got.title) == ("vi", "Hà Nội")
    assert got.url == "https://vi.wikipedia.org/wiki/H%C3%A0_N%E1%BB%99i"
    assert got.extract.startswith("Hà Nội là thủ đô")
    assert [r.path for r in wiki.requests] == [f"/vi{SEARCH}", f"/vi{SUMMARY}Hà_Nội"]
    assert wiki.requests[0].query["q"] == ["Hà Nội ở đâu"]


def test_the_lang_argument_overrides_the_guess(wiki, client):
    assert client.summary("Hanoi", lang="vi").title == "Hà Nội"
    assert all(r.path.startswith("/vi/") for r in wiki.requests)


def test_a_base_url_without_lang_is_used_as_is(wiki):
    fixed = wiki.base.replace("{lang}", "en")
    assert WikipediaClient(fixed).summary("Hà Nội", lang="vi").title == "Hanoi"  # the server's /en routes
    assert wiki.requests[0].path == f"/en{SEARCH}"


def test_the_server_receives_a_descriptive_user_agent(wiki, client):
    client.summary("Hanoi")
    version = importlib.metadata.version("kaizen-chat")
    for request in wiki.requests:
        agent = request.headers["User-Agent"]
        assert agent.startswith(f"Kaizen/{version} (self-hosted Kaizen chatbot; ")
        assert agent.endswith(f") httpx/{httpx.__version__}")
    assert "; admin@example.org) httpx/" in default_user_agent("admin@example.org")
    assert "operator contact not configured" in default_user_agent()


# --- not found, no summary -------------------------------------------------------------------------


def test_no_search_result_is_not_found(wiki, client):
    wiki.reply(f"/vi{SEARCH}", body=recorded("search_empty.json"))
    with pytest.raises(errors.NotFoundError) as info:
        client.summary("Phở bò có gì?")
    assert str(info.value) == "Wikipedia (vi) has no article for 'Phở bò có gì?'."
    assert len(wiki.requests) == 1  # no summary asked


def test_a_summary_404_is_not_found(wiki, client):
    del wiki.routes[f"/en{SUMMARY}Hanoi"]  # the server answers RESTBase's 404 body
    with pytest.raises(errors.NotFoundError, match=r"Wikipedia \(en\) has no article 'Hanoi' \(HTTP 404\)"):
        client.summary("Hanoi")


def test_a_disambiguation_page_is_refused(wiki, client):
    wiki.reply(f"/en{SEARCH}", body=recorded("search_en_mercury.json"))
    wiki.reply(f"/en{SUMMARY}Mercury", body=recorded("summary_en_mercury_disambiguation.json"))
    with pytest.raises(NoSummaryError, match="'Mercury' is a disambiguation page") as info:
        client.summary("Mercury")
    assert info.value.url == "https://en.wikipedia.org/wiki/Mercury"
    assert info.value.status == 422


@pytest.mark.parametrize(("kind", "extract", "message"), [
    ("standard", "", "has no summary text"),
    ("no-extract", "   ", "has no summary text"),
    ("mainpage", "Welcome to Wikipedia,", "main page"),
    ("wikidata_preview", "A city.", "not a standard article"),
])
def test_a_page_without_a_usable_extract_is_refused(wiki, client, kind, extract, message):
    wiki.reply(f"/en{SUMMARY}Hanoi", body={**recorded("summary_en_hanoi.json"), "type": kind, "extract": extract})
    with pytest.raises(NoSummaryError, match=message):
        client.summary("Hanoi")


# --- broken answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/en{SEARCH}", f"/en{SUMMARY}Hanoi"])
def test_a_body_that_is_not_json_is_a_clear_error(wiki, client, path):
    wiki.reply(path, body="<!DOCTYPE html><html><body>Wikimedia Error</body></html>")
    with pytest.raises(SourceResponseError, match=r"not JSON \(text/html; charset=utf-8\): '<!DOCTYPE html>") as info:
        client.summary("Hanoi")
    assert info.value.status == 502


@pytest.mark.parametrize(("path", "body", "message"), [
    (f"/en{SEARCH}", {"results": []}, "without a 'pages' list"),
    (f"/en{SEARCH}", {"pages": [{"id": 1, "title": "Hanoi"}]}, "a page without a 'key'"),
    (f"/en{SEARCH}", [1, 2], "JSON that is not an object"),
    (f"/en{SUMMARY}Hanoi", {"type": "standard", "title": "Hanoi", "extract": "A city."},
     "without content_urls.desktop.page"),
    (f"/en{SUMMARY}Hanoi", {"title": "Hanoi", "content_urls": {"desktop": {"page": "https://x"}}, "extract": 3},
     "without type, extract"),
])
def test_json_without_the_expected_fields_is_a_clear_error(wiki, client, path, body, message):
    wiki.reply(path, body=body)
    with pytest.raises(SourceResponseError, match=message):
        client.summary("Hanoi")


@pytest.mark.parametrize("path", [f"/en{SEARCH}", f"/en{SUMMARY}Hanoi"])
@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_a_clear_error(wiki, client, path, status):
    wiki.reply(path, status, body="<html>Our servers are currently under maintenance</html>")
    with pytest.raises(SourceUnavailable, match=rf"Wikipedia \(en\) had a server error \(HTTP {status}\)") as info:
        client.summary("Hanoi")
    assert type(info.value) is SourceUnavailable and info.value.status == 503


@pytest.mark.parametrize(("headers", "wait", "retry_after_s"), [
    ({"Retry-After": "30"}, "wait 30 s", 30),
    ({}, "wait a minute", None),
])
def test_429_says_to_wait(wiki, client, headers, wait, retry_after_s):
    wiki.reply(f"/en{SEARCH}", 429, body="Too many requests", headers=headers)
    with pytest.raises(SourceRateLimited, match=f"HTTP 429.*{wait} and try again") as info:
        client.summary("Hanoi")
    assert info.value.retry_after_s == retry_after_s
    assert info.value.status == 429


def test_another_4xx_quotes_the_answer(wiki, client):
    wiki.reply(f"/en{SEARCH}", 403, body="Please set a user-agent and respect our robot policy")
    with pytest.raises(SourceUnavailable, match=r"refused the search \(HTTP 403\): 'Please set a user-agent"):
        client.summary("Hanoi")


# --- the network ---------------------------------------------------------------------------------


def test_a_server_slower_than_the_timeout_is_a_timeout_error(wiki):
    wiki.reply(f"/en{SUMMARY}Hanoi", body=recorded("summary_en_hanoi.json"), delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(SourceTimeout, match=r"Wikipedia \(en\) did not answer within 0\.3 s") as info:
        WikipediaClient(wiki.base, timeout_s=0.3).summary("Hanoi")
    assert time.monotonic() - started < 1.2  # it gave up; it did not wait for the answer
    assert info.value.status == 504


def test_a_closed_port_cannot_be_reached():
    client = WikipediaClient(f"http://127.0.0.1:{closed_port()}/{{lang}}", timeout_s=5)
    with pytest.raises(SourceUnavailable, match=r"^Wikipedia cannot be reached \(no network\?\): ") as info:
        client.summary("Hanoi")
    assert type(info.value) is SourceUnavailable


def test_a_dns_failure_cannot_be_reached():
    def no_dns(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    client = WikipediaClient(transport=httpx.MockTransport(no_dns))
    with pytest.raises(SourceUnavailable, match=r"cannot be reached \(no network\?\): \[Errno -3\] Temporary "
                                                r"failure in name resolution \(en\.wikipedia\.org\)"):
        client.summary("Hanoi")


# --- URLs ----------------------------------------------------------------------------------------


def test_titles_and_questions_are_quoted_on_the_way(wiki, client):
    wiki.search_returns("vi", {"id": 7, "key": "Hồ_Hoàn_Kiếm", "title": "Hồ Hoàn Kiếm", "excerpt": "",
                               "matched_title": None, "description": None, "thumbnail": None})
    wiki.reply(f"/vi{SUMMARY}Hồ_Hoàn_Kiếm", body={**recorded("summary_vi_ha_noi.json"), "title": "Hồ Hoàn Kiếm"})
    assert client.summary("Hồ Gươm & Tháp Rùa #1?").title == "Hồ Hoàn Kiếm"
    search, summary = wiki.requests
    assert search.query == {"q": ["Hồ Gươm & Tháp Rùa #1"], "limit": ["1"]}
    assert summary.raw_path == "/vi/api/rest_v1/page/summary/H%E1%BB%93_Ho%C3%A0n_Ki%E1%BA%BFm"


def test_a_slash_in_a_title_stays_in_the_title(wiki, client):
    wiki.search_returns("en", {"id": 8, "key": "AC/DC", "title": "AC/DC", "excerpt": "", "matched_title": None,
                               "description": None, "thumbnail": None})
    wiki.reply(f"/en{SUMMARY}AC/DC", body={**recorded("summary_en_hanoi.json"), "title": "AC/DC"})
    assert client.summary("AC/DC").title == "AC/DC"
    assert wiki.requests[1].raw_path == "/en/api/rest_v1/page/summary/AC%2FDC"


def test_a_redirected_summary_is_followed(wiki, client):
    wiki.search_returns("vi", {"id": 9, "key": "Ha_Noi", "title": "Ha Noi", "excerpt": "", "matched_title": "Ha Noi",
                               "description": None, "thumbnail": None})
    # RESTBase answers a redirect title with 302 and a Location relative to the summary path
    wiki.reply(f"/vi{SUMMARY}Ha_Noi", 302, body={}, headers={"Location": quote("Hà_Nội")})
    assert client.summary("Hà Noi").title == "Hà Nội"
    assert [r.path for r in wiki.requests][-1] == f"/vi{SUMMARY}Hà_Nội"


# --- long extracts, queries, languages -----------------------------------------------------------


def test_a_long_extract_is_cut_at_a_sentence_end(wiki, client):
    sentence = "Hanoi has many lakes, old streets and a thousand years of history. "
    long = sentence * 100  # about 6,700 characters
    wiki.reply(f"/en{SUMMARY}Hanoi", body={**recorded("summary_en_hanoi.json"), "extract": long})
    extract = client.summary("Hanoi").extract
    assert MAX_EXTRACT_CHARS - len(sentence) < len(extract) <= MAX_EXTRACT_CHARS
    assert long.startswith(extract) and extract.endswith("history.")


def test_cut_extract_without_a_sentence_end_cuts_at_a_word():
    text = "word " * 50
    assert cut_extract(text, 42) == "word word word word word word word word…"
    assert cut_extract("Short. Text.", 42) == "Short. Text."
    # a sentence end in the first half of the limit is not used
    assert cut_extract("Xin chào. Đây là Hà Nội thủ đô Việt Nam", 20) == "Xin chào. Đây là…"


def test_the_search_query_is_cleaned_and_bounded():
    assert search_query("  Giờ mở   cửa?? ") == "Giờ mở cửa"
    assert search_query("what*is it?") == "what is it"
    long = search_query("mot " * 200)
    assert len(long) <= MAX_QUERY_CHARS and long.endswith("mot")


@pytest.mark.parametrize(("question", "lang"), [
    ("Hà Nội ở đâu?", "vi"),
    ("Đi đâu", "vi"),
    ("gio mo cua", "en"),
    ("What time do you open?", "en"),
])
def test_language_of(question, lang):
    assert language_of(question) == lang


@pytest.mark.parametrize(("question", "lang", "message"), [
    (" ?? ", None, "The question is empty"),
    ("Hanoi", "en.evil.com/", "not a Wikipedia language code"),
])
def test_bad_input_is_refused_before_any_request(wiki, client, question, lang, message):
    with pytest.raises(errors.InputError, match=message):
        client.summary(question, lang=lang)
    assert wiki.requests == []


def test_every_error_is_a_kaizen_error():
    for cls in (SourceUnavailable, SourceTimeout, SourceRateLimited, SourceResponseError, NoSummaryError):
        assert issubclass(cls, errors.KaizenError)
    with pytest.raises(errors.InputError, match="http:// or https://"):
        WikipediaClient("ftp://{lang}.wikipedia.org")
