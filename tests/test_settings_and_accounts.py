"""Settings, database migrations and account rules, without HTTP."""

from __future__ import annotations

import pytest

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.platform.db import Database, current_revision, head_revision
from scriptflow_prefect.platform.settings import SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("SCRIPTFLOW_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_it_names_the_variable_of_a_bad_setting(clean_env):
    clean_env.setenv("SCRIPTFLOW_PORT", "eighty")
    with pytest.raises(SettingsError, match="SCRIPTFLOW_PORT"):
        load_settings()


def test_it_refuses_an_unknown_time_zone(clean_env):
    clean_env.setenv("SCRIPTFLOW_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match="SCRIPTFLOW_TIMEZONE"):
        load_settings()


def test_it_reads_a_secret_from_a_file(clean_env, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    clean_env.setenv("SCRIPTFLOW_ADMIN_PASSWORD_FILE", str(secret))
    assert load_settings().admin_password.get_secret_value() == "from-a-file"


def test_it_says_which_file_it_cannot_read(clean_env, tmp_path):
    clean_env.setenv("SCRIPTFLOW_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SCRIPTFLOW_SECRET_KEY_FILE"):
        load_settings()


def test_it_keeps_generated_secrets_in_the_home(clean_env, tmp_path):
    clean_env.setenv("SCRIPTFLOW_HOME", str(tmp_path))
    first = load_settings()
    assert first.session_secret == load_settings().session_secret
    assert first.auth_string.startswith("scriptflow:")
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_it_migrates_to_the_head_revision_and_knows_it(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    assert current_revision(db.engine) is None
    db.migrate()
    assert current_revision(db.engine) == head_revision() is not None
    db.migrate()  # a second start is a no-op


@pytest.fixture
def session(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.session() as s:
        yield s


def test_it_generates_the_first_admin_password_only_once(session):
    generated = accounts.ensure_first_admin(session, None)
    assert generated and len(generated) >= 12
    assert accounts.authenticate(session, "admin", generated).is_admin
    assert accounts.ensure_first_admin(session, None) is None


def test_it_uses_the_configured_admin_password(session):
    assert accounts.ensure_first_admin(session, "configured-pw") is None
    assert accounts.authenticate(session, "admin", "configured-pw") is not None


def test_it_refuses_short_passwords_and_duplicate_names(session):
    accounts.create_user(session, "alice", "long-enough")
    with pytest.raises(accounts.AccountError):
        accounts.create_user(session, "ALICE", "long-enough")
    with pytest.raises(accounts.AccountError):
        accounts.create_user(session, "bob", "short")
    with pytest.raises(accounts.AccountError):
        accounts.create_user(session, "bad name!", "long-enough")


def test_it_stores_tokens_hashed_and_honours_revocation(session):
    user = accounts.create_user(session, "alice", "long-enough")
    token, row = accounts.create_token(session, user)
    assert token not in row.token_hash and row.token_hash != token
    assert accounts.user_for_token(session, token).id == user.id
    assert accounts.revoke_token(session, user, row.id)
    assert accounts.user_for_token(session, token) is None


def test_it_throttles_one_user_name_from_one_address_only():
    throttle = accounts.LoginThrottle(per_user=3, per_address=100, window=60)
    for _ in range(3):
        throttle.failed("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") > 0
    assert throttle.retry_after("alice", "10.0.0.2") == 0
    assert throttle.retry_after("bob", "10.0.0.1") == 0
