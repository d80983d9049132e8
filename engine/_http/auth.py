"""Authentication for the HTTP API: bearer tokens mapped to identities.

An :class:`Authenticator` turns the token of a request (``None`` when the request has
no ``Authorization`` header) into an :class:`~permissions.Identity`: no token is the
anonymous identity, a token it does not know raises :class:`Unauthenticated` (401) —
a bad token is never taken as anonymous.

The default, :class:`TokenFileAuthenticator`, reads a workspace's ``tokens.yaml``,
which holds only SHA-256 hex digests of the tokens::

    admin_role: Administrator
    tokens:
      - {sha256: 9f86d08…, user: alice, roles: [Manager]}

:func:`add_token` makes a new random token, stores its digest and returns the token:
it is shown once and never stored or logged in clear.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from permissions import ANONYMOUS, Identity

from .._model.errors import InvalidWorkspace, Problem, Unauthenticated
from .._model.limits import load_yaml

__all__ = [
    "DEFAULT_ADMIN_ROLE",
    "Authenticator",
    "TokenFileAuthenticator",
    "add_token",
    "token_digest",
]

DEFAULT_ADMIN_ROLE = "Administrator"
"""The role that may use the management API when ``tokens.yaml`` names none."""

_DIGEST = re.compile(r"[0-9a-f]{64}")  # matched in full


@runtime_checkable
class Authenticator(Protocol):
    """Maps a request's bearer token to the identity it stands for.

    ``token`` is ``None`` when the request has no ``Authorization`` header; return the
    anonymous identity for it (or raise, to require authentication everywhere). Raise
    :class:`Unauthenticated` for a token you do not accept. Called once per request
    on the server's event loop, so it must not block for long.
    """

    def authenticate(self, token: str | None) -> Identity: ...


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenFileAuthenticator:
    """The default authenticator: the token digests of a ``tokens.yaml`` file.

    The file is read when the authenticator is made and read again when it changes
    (checked at most once a second), so a token added with ``flowwarden token add``
    works without a restart. A missing file means no tokens: every caller is
    anonymous or refused. A file that cannot be used raises :class:`InvalidWorkspace`
    when first read; a later broken edit keeps the tokens last read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tokens: dict[str, Identity] = {}
        self._admin_role = DEFAULT_ADMIN_ROLE
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._load(self._file_stamp())

    @property
    def admin_role(self) -> str:
        """The role ``tokens.yaml`` names as the administrators' (``Administrator``)."""
        return self._admin_role

    def authenticate(self, token: str | None) -> Identity:
        if token is None:
            return ANONYMOUS
        self._refresh()
        identity = self._tokens.get(token_digest(token))
        if identity is None:
            raise Unauthenticated("the bearer token is not valid")
        return identity

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp != self._stamp:
            try:
                self._load(stamp)
            except InvalidWorkspace:
                self._stamp = stamp  # keep the tokens last read until the file is fixed

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _load(self, stamp: tuple[int, int] | None) -> None:
        raw = _read(self.path) if stamp is not None else {}
        self._admin_role, self._tokens = _parse(raw, str(self.path))
        self._stamp = stamp


def add_token(path: str | Path, user: str, roles: Iterable[str] = ()) -> str:
    """Make a new random token for ``user`` with ``roles`` and store only its digest.

    ``path`` is the ``tokens.yaml`` file (created, readable by its owner only, when
    missing). Returns the token, which cannot be recovered later.
    """
    identity = Identity(user_id=user, roles=roles)  # refuses system roles and empty names
    path = Path(path)
    raw: dict[str, Any] = _read(path) if path.exists() else {"admin_role": DEFAULT_ADMIN_ROLE}
    _parse(raw, str(path))  # never extend a file that is already broken
    token = secrets.token_urlsafe(32)
    entries = list(raw.get("tokens") or [])
    entries.append(
        {"sha256": token_digest(token), "user": identity.user_id, "roles": sorted(identity.roles)}
    )
    raw["tokens"] = entries
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return token


def _read(path: Path) -> dict[str, Any]:
    file = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidWorkspace([Problem(f"cannot read: {exc}", file=file)]) from exc
    if not isinstance(raw, dict):
        raise InvalidWorkspace([Problem("must be a mapping", file=file)])
    return raw


def _parse(raw: Mapping[str, Any], file: str) -> tuple[str, dict[str, Identity]]:
    problems: list[Problem] = []
    for key in raw:
        if key not in ("admin_role", "tokens"):
            problems.append(Problem("unknown field", field=str(key), file=file))
    admin_role = raw.get("admin_role", DEFAULT_ADMIN_ROLE)
    try:
        Identity(user_id="-", roles=[admin_role])
    except (TypeError, ValueError) as exc:
        problems.append(Problem(f"not a usable role name: {exc}", field="admin_role", file=file))
    entries = raw.get("tokens")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        problems.append(Problem("must be a list", field="tokens", file=file))
        entries = []
    tokens: dict[str, Identity] = {}
    for index, entry in enumerate(entries):
        where = f"tokens[{index}]"
        if not isinstance(entry, dict):
            problems.append(Problem("must be a mapping", field=where, file=file))
            continue
        for key in entry:
            if key not in ("sha256", "user", "roles"):
                problems.append(Problem("unknown field", field=f"{where}.{key}", file=file))
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            message = "must be the 64-character lowercase SHA-256 hex digest of a token"
            problems.append(Problem(message, field=f"{where}.sha256", file=file))
            continue
        roles = entry.get("roles")
        roles = [] if roles is None else roles
        try:
            if not isinstance(roles, list):
                raise TypeError("roles must be a list of role names")
            identity = Identity(user_id=entry.get("user"), roles=roles)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(str(exc), field=where, file=file))
            continue
        if identity.user_id is None:
            problems.append(Problem("a token needs a user", field=f"{where}.user", file=file))
        elif digest in tokens:
            problems.append(Problem("the same token is listed twice", field=where, file=file))
        else:
            tokens[digest] = identity
    if problems:
        raise InvalidWorkspace(problems)
    return str(admin_role), tokens
