"""User-facing errors.

Everything the user can fix (bad input, missing model, unknown id) raises a subclass of
KaizenError. Only the edges (UI, HTTP, command line) turn these into messages; code in between
lets them propagate. Store-level errors live in feedback_db (which imports nothing from here)
and are mapped at the edges too.
"""


class KaizenError(Exception):
    """An error whose message is meant for the user. `status` is the HTTP status to use."""

    status = 400
    code: str | None = None  # a machine-readable code, as OpenAI's error bodies carry

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(KaizenError):
    """The request or file the user gave is malformed or too large."""

    status = 422


class ContextLengthError(InputError):
    """The prompt leaves no room for a reply in the model's context window."""

    code = "context_length_exceeded"  # OpenAI's code for this error


class NotFoundError(KaizenError):
    status = 404


class ModelError(KaizenError):
    """The model could not be located, converted or loaded."""

    status = 500


class BusyError(KaizenError):
    """The server is at capacity; try again shortly."""

    status = 503


class ConflictError(KaizenError):
    """The action conflicts with the current state (for example a run is already going)."""

    status = 409


class AdapterError(KaizenError):
    """An adapter directory is missing, corrupt, or does not fit the base model."""

    status = 422


class AuthError(KaizenError):
    status = 401
