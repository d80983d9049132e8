"""The public surface: exported names, the error tree, the status enums."""

from __future__ import annotations

import enum

import pytest

import blocks
import engine
from engine import (
    ActivationDenied,
    ActivationError,
    FlowError,
    FlowNotFound,
    FlowNotLive,
    InvalidFlow,
    InvalidInputs,
    InvalidTransition,
    Permission,
    Problem,
    RunNotFound,
    RunStatus,
    StoreError,
    VersionStatus,
)


def test_engine_exports_exactly_its_public_names() -> None:
    assert sorted(engine.__all__) == [
        "ANONYMOUS",
        "Activation",
        "ActivationDenied",
        "ActivationError",
        "Admission",
        "Authenticator",
        "BlockSpec",
        "Decision",
        "Engine",
        "FlowDocument",
        "FlowError",
        "FlowNotFound",
        "FlowNotLive",
        "Gate",
        "Identity",
        "InvalidFlow",
        "InvalidInputs",
        "InvalidTransition",
        "InvalidWorkspace",
        "Limits",
        "MemoryStore",
        "Permission",
        "Problem",
        "RetryPolicy",
        "Role",
        "RunError",
        "RunNotFound",
        "RunPage",
        "RunResult",
        "RunStatus",
        "RunStep",
        "RunSummary",
        "Store",
        "StoreError",
        "TokenFileAuthenticator",
        "TraceEntry",
        "Unauthenticated",
        "User",
        "VersionInfo",
        "VersionStatus",
        "Worker",
        "WorkspaceReport",
        "add_token",
        "create_app",
        "open_store",
        "parse_document",
        "validate_document",
    ]


def test_blocks_exports_exactly_its_public_names() -> None:
    assert sorted(blocks.__all__) == [
        "BlockContext",
        "BlockDefinition",
        "BlockError",
        "BlockFunction",
        "BlockRegistry",
        "BreakParams",
        "CallFlowParams",
        "CelTypes",
        "ConditionParams",
        "ENTRY_POINT_GROUP",
        "Expression",
        "ExpressionError",
        "FLOW_NAME_PATTERN",
        "FailParams",
        "ForEachParams",
        "HttpParams",
        "LogParams",
        "ParallelParams",
        "Params",
        "Port",
        "RESERVED_NAMES",
        "RepeatParams",
        "ReturnParams",
        "RouterParams",
        "RunInfo",
        "SetParams",
        "Template",
        "WaitParams",
        "block",
        "is_flow_name",
    ]


@pytest.mark.parametrize("package", [engine, blocks])
def test_every_exported_name_exists_once(package: object) -> None:
    names: list[str] = package.__all__  # type: ignore[attr-defined]

    assert len(names) == len(set(names))
    assert all(hasattr(package, name) for name in names)


def test_the_documented_imports_work() -> None:
    from engine import Engine, Identity, RunStatus, VersionStatus  # noqa: F401
    from permissions import Permission, Role, User  # noqa: F401

    assert engine.Permission is Permission
    assert engine.Identity is Identity


@pytest.mark.parametrize(
    "error",
    [
        ActivationError,
        ActivationDenied,
        FlowNotFound,
        FlowNotLive,
        InvalidInputs,
        InvalidFlow,
        InvalidTransition,
        RunNotFound,
        StoreError,
        engine.InvalidWorkspace,
    ],
)
def test_every_error_derives_from_flow_error(error: type[Exception]) -> None:
    assert issubclass(error, FlowError)


@pytest.mark.parametrize("error", [ActivationDenied, FlowNotFound, FlowNotLive, InvalidInputs])
def test_gate_refusals_are_activation_errors(error: type[Exception]) -> None:
    assert issubclass(error, ActivationError)


@pytest.mark.parametrize(
    "error", [InvalidFlow, InvalidTransition, RunNotFound, StoreError, engine.InvalidWorkspace]
)
def test_other_errors_are_not_activation_errors(error: type[Exception]) -> None:
    assert not issubclass(error, ActivationError)


def test_every_exported_exception_is_in_the_tree() -> None:
    exported = [getattr(engine, name) for name in engine.__all__]
    errors = [item for item in exported if isinstance(item, type) and issubclass(item, Exception)]

    assert errors
    assert all(issubclass(error, FlowError) for error in errors)


def test_errors_carry_keyword_context_and_codes() -> None:
    denied = ActivationDenied("no", flow="f", reason="depth_limit", version=2)
    invalid = InvalidInputs("bad", flow="f", problems=["(root): x"])
    flow = InvalidFlow([Problem("unknown field", block="a", field="b")], flow="f")

    assert (denied.flow, denied.version, denied.reason, denied.decision) == (
        "f",
        2,
        "depth_limit",
        None,
    )
    assert (invalid.flow, invalid.problems) == ("f", ["(root): x"])
    assert flow.problems == [Problem("unknown field", block="a", field="b")]
    assert "block 'a': field 'b': unknown field" in str(flow)
    assert {
        error.code
        for error in (ActivationDenied, FlowNotFound, FlowNotLive, InvalidInputs, InvalidFlow)
    } == {"activation_denied", "flow_not_found", "flow_not_live", "invalid_inputs", "invalid_flow"}


@pytest.mark.parametrize("kind", [VersionStatus, RunStatus, Permission])
def test_status_enums_are_strings_equal_to_their_names(kind: type[enum.Enum]) -> None:
    for member in kind:
        assert isinstance(member, str)
        assert member == member.name
        assert member.value == member.name
        assert kind(member.name) is member


def test_status_enum_members() -> None:
    assert [s.value for s in VersionStatus] == ["INVALID", "READY", "LIVE", "PAUSED"]
    assert [s.value for s in RunStatus] == [
        "QUEUED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert RunStatus.COMPLETED == "COMPLETED"
    assert {s for s in RunStatus if s.finished} == {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    }
