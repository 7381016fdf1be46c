"""Users, passwords, API tokens and the login throttle: rules testable without HTTP."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, object_session

from scriptflow_prefect.accounts.models import ApiToken, User, WebSession
from scriptflow_prefect.platform.i18n import N_
from scriptflow_prefect.platform.models import utcnow

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as for a known one.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
USERNAME_MAX = 64
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "sf_"


class AccountError(ValueError):
    """A rule about users or tokens was broken; the message is for a person (msgid)."""

    def __init__(self, message: str, **params):
        super().__init__(message % params if params else message)
        self.msgid = message
        self.params = params


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(N_("The password must have at least %(n)s characters."), n=MIN_PASSWORD)


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    is_admin: bool = False,
    email: str | None = None,
    is_power_user: bool = False,
) -> User:
    if not USERNAME_RE.match(username):
        raise AccountError(N_("A user name has 1 to 64 letters, digits or the characters . _ @ -"))
    check_password_rules(password)
    exists = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if exists:
        raise AccountError(N_("There is already a user named %(name)s."), name=username)
    user = User(
        username=username,
        password_hash=hash_password(password),
        is_admin=is_admin,
        is_power_user=is_power_user,
        email=email or None,
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """A new password ends every web session of the user and revokes their API tokens: who
    changes a password may be shutting someone out. (A page that changes it starts a new
    session for the browser that asked.)"""
    check_password_rules(password)
    user.password_hash = hash_password(password)
    user.session_epoch = (user.session_epoch or 0) + 1
    session = object_session(user)
    if session is not None and user.id is not None:
        end_sessions(session, user)
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = find_user(session, username)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def ensure_first_admin(session: Session, password: str | None) -> str | None:
    """Create `admin` if there is no user. Returns the password only when it was generated."""
    if session.scalar(select(func.count(User.id))):
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    create_user(session, "admin", password, is_admin=True)
    return generated


# -- API tokens ------------------------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, user: User, label: str = "", ttl: timedelta | None = None
) -> tuple[str, ApiToken]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        label=label[:100],
        token_hash=_digest(token),
        prefix=token[:10],
        expires_at=utcnow() + ttl if ttl else None,
    )
    session.add(row)
    session.flush()
    return token, row


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    now = utcnow()
    if row is None or row.revoked_at or (row.expires_at and row.expires_at <= now):
        return None
    if not row.user.is_active:
        return None
    # Writing on every request would serialize SQLite; a minute's precision is plenty.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return row.user


def revoke_token(session: Session, user: User, token_id: int) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != user.id and not user.is_admin) or row.revoked_at:
        return False
    row.revoked_at = utcnow()
    return True


# -- web sessions ----------------------------------------------------------------------------
SESSION_IDLE = timedelta(days=14)  # the cookie's max age: a session unused this long is over
_TOUCH_EVERY = timedelta(hours=1)  # last_seen_at precision (a write per page would be waste)


def start_session(session: Session, user: User) -> str:
    """A new web session for `user`; the returned id goes into the (signed) cookie."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.last_seen_at < now - SESSION_IDLE))
    sid = secrets.token_urlsafe(32)
    session.add(WebSession(id_hash=_digest(sid), user_id=user.id, created_at=now, last_seen_at=now))
    session.flush()
    return sid


def session_user(session: Session, sid: str) -> User | None:
    """The user of a live web session, or None (ended, expired, unknown)."""
    row = session.get(WebSession, _digest(sid))
    now = utcnow()
    if row is None or row.last_seen_at < now - SESSION_IDLE:
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now
    return session.get(User, row.user_id)


def end_session(session: Session, sid: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_hash == _digest(sid)))


def end_sessions(session: Session, user: User) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


# -- login throttle --------------------------------------------------------------------------
class LoginThrottle:
    """Counts failed logins per (user name, client address) in a sliding window.

    Keyed on the pair so that someone guessing at `alice` from one address neither locks
    alice out from her own machine nor slows anyone else down. A second, looser limit per
    address stops one client spraying many user names.

    Memory is bounded: at most `max_keys` pairs and as many addresses are remembered, the
    least recently failed forgotten first. Pushing a pair out takes `max_keys` failures from
    other pairs, each an argon2 check, and at most `per_address` of them per address."""

    def __init__(
        self,
        per_user: int = 5,
        per_address: int = 30,
        window: float = 900.0,
        max_keys: int = 10_000,
    ):
        self.per_user, self.per_address, self.window = per_user, per_address, window
        self.max_keys = max_keys
        self._fails: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._by_addr: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _user_key(username: str) -> str:
        # The API refuses longer names (422); the page's form does too. Cut anyway: a key
        # is never bigger than a real user name.
        return username[:USERNAME_MAX].lower()

    def _wait(self, q: deque[float] | None, limit: int, now: float) -> int:
        if q is None:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        return int(q[0] + self.window - now) + 1 if len(q) >= limit else 0

    def retry_after(self, username: str, address: str) -> int:
        """Seconds to wait before another attempt is allowed; 0 when allowed."""
        now = time.monotonic()
        with self._lock:
            return max(
                self._wait(
                    self._fails.get((self._user_key(username), address)), self.per_user, now
                ),
                self._wait(self._by_addr.get(address), self.per_address, now),
            )

    def _add(self, table: OrderedDict, key, limit: int, now: float) -> None:
        q = table.pop(key, None)
        if q is None:
            q = deque(maxlen=limit)
        q.append(now)
        table[key] = q  # the most recent at the end
        while len(table) > self.max_keys:
            table.popitem(last=False)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._add(self._fails, (self._user_key(username), address), self.per_user, now)
            self._add(self._by_addr, address, self.per_address, now)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._fails.pop((self._user_key(username), address), None)
