"""A small MediaWiki client: the Wikipedia summary that best answers a question.

Kaizen keeps the questions it could not answer; an admin may ask for a Wikipedia summary of one,
which becomes a PENDING knowledge item with its source URL. `WikipediaClient.summary(question)`
makes two GET requests against `https://{lang}.wikipedia.org`:

1. Search (MediaWiki core REST API, https://www.mediawiki.org/wiki/API:REST_API):
   `GET /w/rest.php/v1/search/page?q=<question>&limit=1` answers
   `{"pages": [{"id": 13707, "key": "Hanoi", "title": "Hanoi", "excerpt": "<html snippet>",
   "matched_title": null, "description": "Capital of Vietnam", "thumbnail": {...} | null}]}`;
   `key` is the title in URL form (underscores for spaces). No page -> NotFoundError.
2. Summary (RESTBase, https://en.wikipedia.org/api/rest_v1/, response spec
   https://www.mediawiki.org/wiki/Specs/Summary/1.4.1):
   `GET /api/rest_v1/page/summary/<key, percent-encoded, "/" included>` answers
   `{"type": "standard" | "disambiguation" | "no-extract" | "mainpage" | ..., "title": "Hanoi",
   "extract": "<plain text>", "extract_html": "<p>...</p>", "content_urls": {"desktop": {"page":
   "https://en.wikipedia.org/wiki/Hanoi", ...}, "mobile": {...}}, "lang": "en", ...}`;
   a redirect title answers 302 to the target's summary (followed). 404 -> NotFoundError.

The language is "vi" when the question carries Vietnamese diacritics or đ, else "en"
(`language_of`). Every failure is a KaizenError subclass with a message meant for the admin:

- NotFoundError (404): no search result, or the summary endpoint answered 404;
- NoSummaryError (422): the best match is a disambiguation page, or has no text extract;
- SourceUnavailable (503): no network, DNS failure, connection refused, HTTP 5xx, another 4xx;
  - SourceTimeout (504): no answer within `timeout_s` seconds;
  - SourceRateLimited (429): Wikipedia answered 429 (the message says how long to wait);
  - SourceResponseError (502): the body is not JSON, or lacks the fields above.

Wikimedia asks every client for a descriptive User-Agent with contact information
(https://foundation.wikimedia.org/wiki/Policy:Wikimedia_Foundation_User-Agent_Policy): see
`default_user_agent`. Only the standard library and httpx are used; this module imports nothing
from bot/ or trainer/.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from kaizen.errors import InputError, KaizenError, NotFoundError
from kaizen.text import fold

DEFAULT_BASE_URL = "https://{lang}.wikipedia.org"
DISTRIBUTION = "kaizen-chat"  # the installed distribution whose version goes into the User-Agent
# What this client is, for Wikimedia's operators. Their User-Agent policy asks for a URL or an e-mail
# address: the project has no public URL of its own, so the operator's contact (a setting) says who runs it.
ABOUT = "self-hosted Kaizen chatbot"
MAX_EXTRACT_CHARS = 4000  # = kaizen.prompts.MAX_CORRECTION_CHARS, the longest answer a knowledge item holds
MAX_QUERY_CHARS = 300  # CirrusSearch refuses longer full-text queries
DEFAULT_TIMEOUT_S = 10.0

_LANG = re.compile(r"[a-z]{2,12}(?:-[a-z0-9]+)*")  # "en", "vi", "simple", "zh-min-nan"
# A sentence ends with . ! ? … (or their full-width forms), optionally closed by a quote or bracket,
# followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*(?=\s)")
_SNIPPET_CHARS = 160


class SourceUnavailable(KaizenError):
    """Wikipedia could not be used right now: no network, DNS failure, connection refused, an HTTP
    5xx or an unexpected 4xx answer. Trying again later may work."""

    status = 503


class SourceTimeout(SourceUnavailable):
    """Wikipedia did not answer within the client's timeout."""

    status = 504


class SourceRateLimited(SourceUnavailable):
    """Wikipedia answered 429 Too Many Requests. `retry_after_s` is its Retry-After in seconds, if given."""

    status = 429

    def __init__(self, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceResponseError(SourceUnavailable):
    """Wikipedia answered 200 with a body that is not JSON or lacks the documented fields."""

    status = 502


class NoSummaryError(KaizenError):
    """The best-matching page has no usable summary: a disambiguation page, the main page, or an
    article without a text extract. `title` and `url` name the page, for the admin to look at."""

    status = 422

    def __init__(self, message: str, title: str = "", url: str = ""):
        super().__init__(message)
        self.title = title
        self.url = url


@dataclass(frozen=True)
class WikiSummary:
    """One article's summary. `extract` is plain text of at most MAX_EXTRACT_CHARS characters; `url`
    is the article's desktop page (content_urls.desktop.page); `lang` is the wiki's language code
    ("en", "vi"); `question` is the question it was fetched for, as given."""

    title: str
    extract: str
    url: str
    lang: str
    question: str


def language_of(question: str) -> Literal["vi", "en"]:
    """ "vi" when the text carries Vietnamese diacritics or đ (folding changes it), else "en".

    Any other diacritic (as in "café") also counts: Kaizen's users write Vietnamese or English.
    """
    return "vi" if fold(question) != question else "en"


def package_version() -> str:
    """The installed `kaizen-chat` distribution's version, or "dev" when it is not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "dev"


def default_user_agent(contact: str | None = None) -> str:
    """A User-Agent per Wikimedia's policy: "Kaizen/<version> (self-hosted Kaizen chatbot; <contact>) httpx/<version>".

    `contact` is an admin's e-mail address or web page (`Settings.wikipedia_contact`), so that Wikimedia
    can reach the operator of this instance, as its policy asks; without one the agent says so.
    """
    about = f"{ABOUT}; {contact}" if contact else f"{ABOUT}; operator contact not configured"
    return f"Kaizen/{package_version()} ({about}) httpx/{httpx.__version__}"


def search_query(question: str) -> str:
    """The question as a full-text query: NFC, single spaces, without the wildcards ? and * of
    CirrusSearch's syntax (a trailing "?" would otherwise demand one more letter), at most
    MAX_QUERY_CHARS characters, cut at a word boundary."""
    text = unicodedata.normalize("NFC", question).replace("?", " ").replace("*", " ").replace("？", " ")
    text = " ".join(text.split()).rstrip(".!。！ ")
    if len(text) > MAX_QUERY_CHARS:
        head = text[: MAX_QUERY_CHARS + 1]  # +1: a word may end exactly at the limit
        text = head.rsplit(" ", 1)[0] if " " in head else text[:MAX_QUERY_CHARS]
    return text


def cut_extract(text: str, limit: int = MAX_EXTRACT_CHARS) -> str:
    """`text` stripped, and when longer than `limit` characters cut at the last sentence end within
    the limit; with no sentence end in its second half, cut at the last space and end with "…"."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[: limit + 1]  # +1: a sentence may end exactly at the limit, before a space
    ends = [m.end() for m in _SENTENCE_END.finditer(head) if m.end() <= limit]
    if ends and ends[-1] >= limit // 2:
        return text[: ends[-1]].rstrip()
    words = text[: limit - 1].rsplit(None, 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return words.rstrip() + "…"


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"


def _seconds(value: float) -> str:
    return f"{value:g} s"


class WikipediaClient:
    """Fetches the Wikipedia summary that best matches a question (see the module docstring).

    `base_url` is the wiki's origin, a template in which "{lang}" becomes the language code
    ("https://{lang}.wikipedia.org"; tests give "http://127.0.0.1:PORT/{lang}" or a fixed
    "http://127.0.0.1:PORT"). `timeout_s` bounds, in seconds, each network step (connecting, each
    read, each write); a call makes two requests, plus one per redirect. `user_agent` defaults to
    `default_user_agent()`. `transport` replaces httpx's network transport (for tests).
    The client holds no connection between calls: each `summary` opens and closes its own.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout_s: float = DEFAULT_TIMEOUT_S,
                 user_agent: str | None = None, transport: httpx.BaseTransport | None = None):
        if urlsplit(base_url.replace("{lang}", "xx")).scheme not in ("http", "https"):
            raise InputError(f"The Wikipedia base URL must start with http:// or https://, not {base_url!r}.")
        if not timeout_s > 0:
            raise InputError(f"The Wikipedia timeout must be a positive number of seconds, not {timeout_s!r}.")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.user_agent = user_agent or default_user_agent()
        self.transport = transport

    def base_for(self, lang: str) -> str:
        """The wiki's origin for `lang`: "https://vi.wikipedia.org" for "vi" with the default template."""
        return self.base_url.replace("{lang}", lang)

    def summary(self, question: str, *, lang: str | None = None) -> WikiSummary:
        """The summary of the article that Wikipedia's search ranks first for `question`.

        `lang` is the wiki's language code; None picks it from the question (`language_of`). Raises
        InputError (empty question, bad language code), NotFoundError, NoSummaryError or a
        SourceUnavailable subclass; never an httpx or JSON exception.
        """
        query = search_query(question)
        if not query:
            raise InputError("The question is empty: there is nothing to look up on Wikipedia.")
        lang = lang or language_of(question)
        if not _LANG.fullmatch(lang):
            raise InputError(f"{lang!r} is not a Wikipedia language code (such as 'en' or 'vi').")
        base = self.base_for(lang)
        with httpx.Client(timeout=self.timeout_s, headers={"User-Agent": self.user_agent, "Accept": "application/json"},
                          follow_redirects=True, transport=self.transport) as client:
            search_url = f"{base}/w/rest.php/v1/search/page"
            found = self._get_json(client, search_url, lang, params={"q": query, "limit": 1}, what="search",
                                   not_found=f"Wikipedia ({lang}) has no search endpoint at {search_url} (HTTP 404); "
                                             "is the base URL right?")
            key = _first_page_key(found, lang, question)
            title = key.replace("_", " ")
            data = self._get_json(client, f"{base}/api/rest_v1/page/summary/{quote(key, safe='')}", lang,
                                  what=f"summary of '{title}'",
                                  not_found=f"Wikipedia ({lang}) has no article '{title}' (HTTP 404).")
        return _summary_from(data, lang, question)

    def _get_json(self, client: httpx.Client, url: str, lang: str, *, what: str, not_found: str,
                  params: dict[str, str | int] | None = None) -> dict[str, Any]:
        """GET `url` and return its JSON object, or raise the error that fits (see the module docstring);
        `what` names the request in messages, `not_found` is the NotFoundError message for a 404."""
        try:
            response = client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise SourceTimeout(f"Wikipedia ({lang}) did not answer within {_seconds(self.timeout_s)} "
                                f"(the {what}); try again later.") from exc
        except httpx.TooManyRedirects as exc:
            raise SourceResponseError(f"Wikipedia ({lang}) redirected the {what} too many times.") from exc
        except httpx.TransportError as exc:  # DNS failure, refused connection, reset, bad protocol
            detail = str(exc) or type(exc).__name__
            raise SourceUnavailable(f"Wikipedia cannot be reached (no network?): {detail} "
                                    f"({urlsplit(url).netloc}).") from exc
        status = response.status_code
        if status == 404:
            raise NotFoundError(not_found)
        if status == 429:
            retry = response.headers.get("Retry-After", "").strip()
            wait = int(retry) if retry.isdigit() else None
            when = f"wait {wait} s" if wait is not None else "wait a minute"
            raise SourceRateLimited(f"Wikipedia ({lang}) is limiting how often Kaizen may ask (HTTP 429); "
                                    f"{when} and try again.", retry_after_s=wait)
        if status >= 500:
            raise SourceUnavailable(f"Wikipedia ({lang}) had a server error (HTTP {status}) for the {what}; "
                                    "try again later.")
        if status != 200:
            raise SourceUnavailable(f"Wikipedia ({lang}) refused the {what} (HTTP {status}): "
                                    f"{_snippet(response.text)!r}")
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("Content-Type", "no content type")
            raise SourceResponseError(f"Wikipedia ({lang}) answered the {what} with something that is not JSON "
                                      f"({kind}): {_snippet(response.text)!r}") from exc
        if not isinstance(data, dict):
            raise SourceResponseError(f"Wikipedia ({lang}) answered the {what} with JSON that is not an object: "
                                      f"{_snippet(response.text)!r}")
        return data


def _first_page_key(data: dict[str, Any], lang: str, question: str) -> str:
    """The `key` of the first search result, NotFoundError when there is none."""
    pages = data.get("pages")
    if not isinstance(pages, list):
        raise SourceResponseError(f"Wikipedia ({lang}) answered the search without a 'pages' list.")
    if not pages:
        raise NotFoundError(f"Wikipedia ({lang}) has no article for '{question.strip()}'.")
    key = pages[0].get("key") if isinstance(pages[0], dict) else None
    if not isinstance(key, str) or not key.strip():
        raise SourceResponseError(f"Wikipedia ({lang}) answered the search with a page without a 'key'.")
    return key


def _summary_from(data: dict[str, Any], lang: str, question: str) -> WikiSummary:
    """A WikiSummary from a page/summary response, or the error that fits."""
    title, kind, extract = data.get("title"), data.get("type"), data.get("extract", "")
    urls = data.get("content_urls")
    desktop = urls.get("desktop") if isinstance(urls, dict) else None
    url = desktop.get("page") if isinstance(desktop, dict) else None
    if not (isinstance(title, str) and title and isinstance(kind, str) and kind and isinstance(url, str) and url
            and isinstance(extract, str)):
        fields = {"title": title, "type": kind, "content_urls.desktop.page": url}
        missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
        missing += [] if isinstance(extract, str) else ["extract"]
        raise SourceResponseError(f"Wikipedia ({lang}) answered the summary without {', '.join(missing)}.")
    if kind == "disambiguation":
        raise NoSummaryError(f"Wikipedia ({lang}): '{title}' is a disambiguation page (several topics share "
                             f"the name), not an article; ask a more specific question. {url}", title, url)
    if kind == "mainpage":
        raise NoSummaryError(f"Wikipedia ({lang}) matched its main page, not an article, for "
                             f"'{question.strip()}'.", title, url)
    if not extract.strip():
        raise NoSummaryError(f"Wikipedia ({lang}): the article '{title}' has no summary text. {url}", title, url)
    if kind != "standard":
        raise NoSummaryError(f"Wikipedia ({lang}): '{title}' is not a standard article (type {kind!r}). {url}",
                             title, url)
    return WikiSummary(title=title, extract=cut_extract(extract), url=url, lang=lang, question=question)
