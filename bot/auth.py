"""The admin login: user `admin`, password from KAIZEN_ADMIN_PASSWORD or generated once.

Without KAIZEN_ADMIN_PASSWORD, `kaizen serve` generates a strong password the first time,
prints it once, and stores only its scrypt hash (settings key "admin_password_hash"). Later
starts keep that hash. The environment password, when set, always wins.

`AdminAuth` checks a username and password for the admin REST API (HTTP Basic, checked on every
request) and the admin tab's login. scrypt is slow on purpose (~0.1 s), so a successful check
is remembered for a minute, keyed by an HMAC that a memory dump of the cache cannot reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from feedback_db import store
from feedback_db.db import Database
from kaizen.settings import Settings

ADMIN_USER = "admin"
HASH_KEY = "admin_password_hash"
CACHE_SECONDS = 60.0
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` (hex), with a fresh random salt unless one is given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, maxmem=_MAXMEM, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2, maxmem=_MAXMEM)
    except ValueError:  # a malformed stored hash refuses every password
        return False
    return hmac.compare_digest(got.hex(), digest)


def ensure_admin_password(*, db: Database, settings: Settings) -> str | None:
    """Generate and store (as a hash) an admin password if there is none; returns it to print once."""
    if settings.admin_password:
        return None
    with db.write() as s:
        if store.get_setting(session=s, key=HASH_KEY):
            return None
        password = secrets.token_urlsafe(18)
        store.set_setting(session=s, key=HASH_KEY, value=hash_password(password))
    return password


def startup_notice(*, db: Database, settings: Settings) -> str:
    """The line `kaizen serve` prints about the admin login (the new password, only once)."""
    new = ensure_admin_password(db=db, settings=settings)
    if settings.admin_password:
        return "Admin login: user 'admin', password from KAIZEN_ADMIN_PASSWORD."
    if new:
        return (f"Admin login: user 'admin', password {new}\n"
                "  (generated now and shown only this once; set KAIZEN_ADMIN_PASSWORD to choose your own)")
    return "Admin login: user 'admin'; the password generated earlier still applies (or set KAIZEN_ADMIN_PASSWORD)."


class AdminAuth:
    """Checks admin credentials against the environment password or the stored hash."""

    def __init__(self, *, db: Database, settings: Settings, cache_seconds: float = CACHE_SECONDS):
        self.db = db
        self.settings = settings
        self.cache_seconds = cache_seconds
        self._key = secrets.token_bytes(32)
        self._ok: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def check(self, username: object, password: object) -> bool:
        if not isinstance(username, str) or not isinstance(password, str):
            return False
        user_ok = hmac.compare_digest(username.encode("utf-8"), ADMIN_USER.encode())
        if self.settings.admin_password:
            pw_ok = hmac.compare_digest(password.encode("utf-8"), self.settings.admin_password.encode("utf-8"))
            return user_ok and pw_ok
        with self.db.session() as s:
            stored = store.get_setting(session=s, key=HASH_KEY)
        if not user_ok or not isinstance(stored, str):
            return False  # no password was ever set: nobody is admin
        # The stored hash is part of the key, so a new password invalidates the cache at once.
        key = hmac.digest(self._key, stored.encode() + b"\0" + password.encode("utf-8"), "sha256")
        now = time.monotonic()
        with self._lock:
            if self._ok.get(key, 0.0) > now:
                return True
        if not verify_password(password, stored):
            return False
        with self._lock:
            self._ok = {k: t for k, t in self._ok.items() if t > now}
            self._ok[key] = now + self.cache_seconds
        return True


def check_credentials(*, db: Database, settings: Settings, username: object, password: object) -> bool:
    """One uncached check (the admin app keeps an `AdminAuth`, which caches)."""
    return AdminAuth(db=db, settings=settings, cache_seconds=0).check(username, password)
