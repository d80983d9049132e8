"""Bearer tokens: made at random, stored as digests, mapped to identities."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import yaml

from engine._cli import main
from engine._http.auth import Authenticator, TokenFileAuthenticator, add_token, token_digest
from engine._model.errors import InvalidWorkspace, Unauthenticated
from permissions import ANONYMOUS, Identity


def test_add_token_stores_only_the_digest_of_a_random_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    first = add_token(path, "alice", ["Manager", "Auditor"])
    second = add_token(path, "alice", ["Manager"])
    assert first != second and len(first) >= 40
    text = path.read_text()
    assert first not in text and second not in text
    stored = yaml.safe_load(text)
    assert stored["admin_role"] == "Administrator"
    assert stored["tokens"] == [
        {
            "sha256": hashlib.sha256(first.encode()).hexdigest(),
            "user": "alice",
            "roles": ["Auditor", "Manager"],
        },
        {"sha256": token_digest(second), "user": "alice", "roles": ["Manager"]},
    ]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]


def test_tokens_map_to_their_identities_and_no_token_is_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    alice = add_token(path, "alice", ["Manager"])
    bot = add_token(path, "ci-bot")
    authenticator = TokenFileAuthenticator(path)
    assert isinstance(authenticator, Authenticator)
    assert authenticator.authenticate(alice) == Identity(user_id="alice", roles={"Manager"})
    assert authenticator.authenticate(bot) == Identity(user_id="ci-bot")
    assert authenticator.authenticate(None) is ANONYMOUS


@pytest.mark.parametrize("token", ["", "wrong", "x" * 500])
def test_an_unknown_token_is_refused_not_anonymous(tmp_path: Path, token: str) -> None:
    path = tmp_path / "tokens.yaml"
    real = add_token(path, "alice")
    authenticator = TokenFileAuthenticator(path)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(token)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(token_digest(real))  # the digest is not the token


def test_a_missing_file_means_no_tokens(tmp_path: Path) -> None:
    authenticator = TokenFileAuthenticator(tmp_path / "tokens.yaml")
    assert authenticator.admin_role == "Administrator"
    assert authenticator.authenticate(None) is ANONYMOUS
    with pytest.raises(Unauthenticated):
        authenticator.authenticate("anything")


def test_a_token_added_later_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    add_token(path, "alice")
    authenticator = TokenFileAuthenticator(path)
    later = add_token(path, "bob", ["Ops"])
    authenticator._checked = 0.0  # skip the once-a-second throttle
    assert authenticator.authenticate(later) == Identity(user_id="bob", roles={"Ops"})


def test_a_later_broken_edit_keeps_the_tokens_last_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = add_token(path, "alice")
    authenticator = TokenFileAuthenticator(path)
    path.write_text("tokens: [oops\n")
    authenticator._checked = 0.0
    assert authenticator.authenticate(token).user_id == "alice"


def test_the_admin_role_comes_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("admin_role: Operators\ntokens: []\n")
    assert TokenFileAuthenticator(path).admin_role == "Operators"
    add_token(path, "ops", ["Operators"])
    assert yaml.safe_load(path.read_text())["admin_role"] == "Operators"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("tokens: [{sha256: abc, user: alice}]", "tokens[0].sha256"),
        (f"tokens: [{{sha256: {'A' * 64}, user: alice}}]", "tokens[0].sha256"),
        (f"tokens: [{{sha256: {'a' * 64}}}]", "tokens[0].user"),
        (f"tokens: [{{sha256: {'a' * 64}, user: x, roles: [AuthenticatedUser]}}]", "tokens[0]"),
        (f"tokens: [{{sha256: {'a' * 64}, user: x, roles: Manager}}]", "tokens[0]"),
        (f"tokens: [{{sha256: {'a' * 64}, user: x, token: secret}}]", "tokens[0].token"),
        ("admin_role: NonAuthenticatedUser", "admin_role"),
        ("users: []", "users"),
        ("tokens: {}", "tokens"),
        ("- just a list", None),
        ("tokens: [oops", None),
    ],
)
def test_a_broken_tokens_file_says_where(tmp_path: Path, text: str, where: str | None) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(InvalidWorkspace) as caught:
        TokenFileAuthenticator(path)
    assert all(problem.file == str(path) for problem in caught.value.problems)
    if where is not None:
        assert where in [problem.field for problem in caught.value.problems]
    with pytest.raises(InvalidWorkspace):
        add_token(path, "alice")  # never extends a broken file


def test_the_same_token_listed_twice_is_refused(tmp_path: Path) -> None:
    digest = "b" * 64
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens: [{{sha256: {digest}, user: a}}, {{sha256: {digest}, user: b}}]\n")
    with pytest.raises(InvalidWorkspace, match="twice"):
        TokenFileAuthenticator(path)


@pytest.mark.parametrize(
    ("user", "roles"),
    [("", []), ("alice", ["NonAuthenticatedUser"]), ("alice", [""])],
)
def test_add_token_refuses_identities_that_cannot_exist(
    tmp_path: Path, user: str, roles: list[str]
) -> None:
    path = tmp_path / "tokens.yaml"
    with pytest.raises(ValueError):
        add_token(path, user, roles)
    assert not path.exists()


def test_flowwarden_token_add_prints_the_token_once_and_stores_its_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "add", str(tmp_path), "--user", "ci-bot", "--role", "Deployer"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token and token not in err and "shown only this once" in err
    path = tmp_path / "tokens.yaml"
    assert token not in path.read_text()
    identity = TokenFileAuthenticator(path).authenticate(token)
    assert identity == Identity(user_id="ci-bot", roles={"Deployer"})


@pytest.mark.parametrize(
    "args",
    [
        ["--user", "x", "--role", "NonAuthenticatedUser"],
        ["--user", ""],
    ],
)
def test_flowwarden_token_add_refuses_bad_identities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["token", "add", str(tmp_path), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error:")
    assert not (tmp_path / "tokens.yaml").exists()


def test_flowwarden_token_add_needs_a_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "add", str(tmp_path / "missing"), "--user", "a"]) == 2
    assert "not a workspace directory" in capsys.readouterr().err
