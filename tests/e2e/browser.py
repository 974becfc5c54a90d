"""Driving Kaizen's chat and admin tabs in Debian's chromium with Playwright (sync API).

`launch_chromium` starts the system browser (never a downloaded one) with the flags that keep
it off the network. `ChatPage` and `AdminPage` wrap the elem_ids of bot/ui_chat.py and
bot/ui_admin.py, so the tests read like what a user does.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Browser, Locator, Page, Playwright, expect

from tests.harness import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 900}
REPLY_TIMEOUT_S = 180  # a reply on a busy 2-core machine; generous, never a timing assertion

# Records every distinct text the newest bot message shows, so a test can see a reply stream in
# even when the updates come faster than Python could poll.
_WATCH_STREAM = """() => {
  window.__kzSeen = [];
  const chat = document.querySelector('#chatbot');
  const note = () => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText : '';
    const seen = window.__kzSeen;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(note).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG once no Gradio event is pending (outputs are drawn faded until then)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=status-tracker]:not(.hide)')")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def upload_file(page: Page, selector: str, path: Path) -> None:
    """Put `path` into the Gradio file component `selector` and wait until the server holds it.

    Waits for state (the upload request answered, the component's link pointing at the stored
    copy), never for how the widget draws the file name: Gradio splits it into pieces whose
    spacing differs between browser builds.
    """
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url) as answer:
        page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    assert answer.value.ok, f"upload of {path.name} failed: HTTP {answer.value.status}"
    expect(page.locator(f"{selector} a[href*='{quote(path.name)}']").first).to_be_attached()


class ChatPage:
    """The chat tab at `/`."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        page.goto(url + "/")
        expect(page.locator("#message textarea")).to_be_visible()
        page.evaluate(_WATCH_STREAM)

    @property
    def bot_messages(self):
        return self.page.locator('#chatbot [data-testid="bot"]')

    def send(self, text: str, stored) -> list[str]:
        """Send a message, wait until its answer is stored and shown; returns the texts it streamed through."""
        before = stored()
        self.page.evaluate("() => { window.__kzSeen = []; }")
        self.page.locator("#message textarea").fill(text)
        self.page.locator("#send").click()
        wait_until(lambda: stored() > before, REPLY_TIMEOUT_S, f"the answer to {text!r} to be stored")
        # The last streamed piece reaches the page just after the exchange is stored.
        last = [None]

        def settled() -> bool:
            now = self.page.evaluate("() => window.__kzSeen.slice(-1)[0] || ''")
            done, last[0] = now == last[0] and bool(now), now
            return done

        wait_until(settled, 30, "the streamed answer to settle", interval_s=1.0)
        return self.page.evaluate("() => window.__kzSeen")

    def last_bot_text(self) -> str:
        return self.bot_messages.last.inner_text()

    def rating_buttons(self, message_index: int) -> Locator:
        """The 👍/👎 buttons under bot message `message_index` (0 = first); a chosen one is labelled
        "Liked"/"Disliked"."""
        return self.page.locator("#chatbot .message-buttons-left").nth(message_index)

    def rate(self, message_index: int, like: bool) -> str:
        """Click 👍 or 👎 under the bot message `message_index` (0 = first); returns the status line."""
        buttons = self.rating_buttons(message_index)
        buttons.get_by_role("button", name="Like" if like else "Dislike", exact=True).click()
        status = self.page.locator("#status")
        expect(status).to_contain_text("Rated 👍" if like else "Rated 👎")
        return status.inner_text()

    def withdraw_rating(self, message_index: int, like: bool) -> str:
        """Click the chosen 👍 or 👎 again (Gradio then labels it "Liked"/"Disliked"); returns the status line."""
        buttons = self.rating_buttons(message_index)
        buttons.get_by_role("button", name="Liked" if like else "Disliked", exact=True).click()
        status = self.page.locator("#status")
        expect(status).to_contain_text("Rating withdrawn")
        return status.inner_text()

    def submit_better_answer(self, text: str) -> str:
        self.page.locator("#better textarea").fill(text)
        self.page.locator("#submit-better").click()
        status = self.page.locator("#status")
        expect(status).to_contain_text("Saved your better answer")
        return status.inner_text()


class AdminPage:
    """The admin tab at `/admin/`, behind Gradio's login form."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    def open_login(self) -> None:
        self.page.goto(self.url + "/admin/")
        expect(self.page.get_by_role("button", name="Login")).to_be_visible()

    def submit_login(self, username: str, password: str) -> None:
        # Gradio clears both fields after a failed attempt, so fill both every time.
        self.page.get_by_label("username").fill(username)
        self.page.get_by_label("password").fill(password)
        self.page.get_by_role("button", name="Login").click()

    def login(self, password: str) -> None:
        self.open_login()
        self.submit_login("admin", password)
        expect(self.page.get_by_role("tab", name="Dashboard")).to_be_visible(timeout=60_000)

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()
        expect(self.page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")
