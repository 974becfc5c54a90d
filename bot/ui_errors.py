"""Refusals in the Gradio tabs: a warning that goes away, not an error that stays.

When a handler raises `gr.Error`, Gradio shows a toast and also marks every output of the event
with a red "Error" pill that stays until the next update, and an output that is also an input (a
text box) is covered until the pill is dismissed (issue 13: a double-clicked "Train now", an
import with no file). A *refusal* (the admin's or user's input was wrong, or the action cannot be
done now) is not a failure of the page: handlers raise `Refusal`, and `refusals_as_warnings`, used
where the handlers are wired, turns it into a warning toast that fades, leaving every output as it
was (`gr.skip()`). Called directly, as the tests do, a handler still raises it (a `gr.Error`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

F = TypeVar("F", bound=Callable[..., Any])
WARNING_SECONDS = 8


class Refusal(gr.Error):
    """A handled refusal with a message for the person at the page."""

    def __init__(self, message: str) -> None:
        super().__init__(message, duration=WARNING_SECONDS, title="Not done")


def refusals_as_warnings(fn: F) -> F:
    """`fn` (a plain or generator handler), with a `Refusal` shown as a fading warning and no output changed.
    The signature is kept (functools.wraps), so Gradio still injects `gr.Request` and event data."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Refusal as refusal:
                gr.Warning(refusal.message, duration=WARNING_SECONDS)
                yield gr.skip()

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Refusal as refusal:
            gr.Warning(refusal.message, duration=WARNING_SECONDS)
            return gr.skip()

    return call  # type: ignore[return-value]
