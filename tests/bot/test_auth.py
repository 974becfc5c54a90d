"""The admin password: hashing, generating it once, the environment password winning."""

import pytest

from bot import auth
from feedback_db import store


def _stored_hash(kaizen):
    with kaizen.db.session() as s:
        return store.get_setting(session=s, key=auth.HASH_KEY)


def test_hash_is_salted_and_verifies():
    a, b = auth.hash_password("mật khẩu"), auth.hash_password("mật khẩu")
    assert a != b and a.startswith("scrypt$") and "mật khẩu" not in a
    assert auth.verify_password("mật khẩu", a) and auth.verify_password("mật khẩu", b)
    assert not auth.verify_password("mat khau", a)
    assert not auth.verify_password("mật khẩu", "scrypt$garbage")
    assert not auth.verify_password("x", "pbkdf2$1$2$3$00$00")


def test_generated_password_is_returned_once_and_only_its_hash_is_stored(kaizen):
    password = auth.ensure_admin_password(db=kaizen.db, settings=kaizen.settings)
    assert password and len(password) >= 24
    stored = _stored_hash(kaizen)
    assert password not in stored and auth.verify_password(password, stored)
    # A second start keeps the stored hash and has nothing new to print.
    assert auth.ensure_admin_password(db=kaizen.db, settings=kaizen.settings) is None
    assert _stored_hash(kaizen) == stored
    assert "still applies" in auth.startup_notice(db=kaizen.db, settings=kaizen.settings)
    assert auth.check_credentials(db=kaizen.db, settings=kaizen.settings, username="admin", password=password)


def test_startup_notice_prints_a_new_password_once(kaizen):
    first = auth.startup_notice(db=kaizen.db, settings=kaizen.settings)
    second = auth.startup_notice(db=kaizen.db, settings=kaizen.settings)
    password = first.split("password ", 1)[1].split()[0]
    assert auth.check_credentials(db=kaizen.db, settings=kaizen.settings, username="admin", password=password)
    assert password not in second


def test_environment_password_wins_over_the_stored_hash(kaizen):
    generated = auth.ensure_admin_password(db=kaizen.db, settings=kaizen.settings)
    env = kaizen.settings.replace(admin_password="đúng-rồi")
    assert auth.ensure_admin_password(db=kaizen.db, settings=env) is None
    assert auth.check_credentials(db=kaizen.db, settings=env, username="admin", password="đúng-rồi")
    assert not auth.check_credentials(db=kaizen.db, settings=env, username="admin", password=generated)
    assert "KAIZEN_ADMIN_PASSWORD" in auth.startup_notice(db=kaizen.db, settings=env)


@pytest.mark.parametrize(("username", "password"), [
    ("admin", "wrong"), ("Admin", "secret"), ("root", "secret"), ("admin", ""), ("", ""), (None, "secret"),
    ("admin", None), ("admin", "secret\x00"),
])
def test_wrong_credentials_are_refused(kaizen, username, password):
    env = kaizen.settings.replace(admin_password="secret")
    assert auth.check_credentials(db=kaizen.db, settings=env, username="admin", password="secret")
    assert not auth.check_credentials(db=kaizen.db, settings=env, username=username, password=password)


def test_nobody_is_admin_before_a_password_exists(kaizen):
    assert not auth.check_credentials(db=kaizen.db, settings=kaizen.settings, username="admin", password="")


def test_cache_remembers_success_but_not_a_changed_password(kaizen):
    first = auth.ensure_admin_password(db=kaizen.db, settings=kaizen.settings)
    checker = auth.AdminAuth(db=kaizen.db, settings=kaizen.settings)
    assert checker.check("admin", first) and checker.check("admin", first)
    assert not checker.check("admin", first + "x")
    with kaizen.db.write() as s:  # an operator resets the password
        store.set_setting(session=s, key=auth.HASH_KEY, value=auth.hash_password("new one"))
    assert not checker.check("admin", first)
    assert checker.check("admin", "new one")
