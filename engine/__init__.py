"""flowwarden's engine: documents, validation, the interpreter, the gate, the store.

Use :class:`Engine`::

    async with Engine() as engine:
        version = await engine.add_version(Path("flows/order-approval.yaml"))
        await engine.start("order-approval", version)
        result = await engine.call_flow("order-approval", {"amount": 5},
                                        identity=Identity(user_id="alice"))
"""

from typing import TYPE_CHECKING, Any

from permissions import ANONYMOUS, Decision, Identity, Permission, Role, User

from ._model.document import BlockSpec, FlowDocument, RetryPolicy, parse_document, validate_document
from ._model.errors import (
    ActivationDenied,
    ActivationError,
    FlowError,
    FlowNotFound,
    FlowNotLive,
    InvalidFlow,
    InvalidInputs,
    InvalidTransition,
    InvalidWorkspace,
    Problem,
    RunNotFound,
    StoreError,
    Unauthenticated,
)
from ._model.listing import RunPage, RunSummary
from ._model.steps import RunStep
from ._model.types import (
    Limits,
    RunError,
    RunResult,
    RunStatus,
    TraceEntry,
    VersionInfo,
    VersionStatus,
)
from ._runtime.engine import Engine
from ._runtime.gate import Activation, Admission, Gate
from ._runtime.worker import Worker
from ._runtime.workspace import WorkspaceReport
from ._store import open_store
from ._store.base import Store
from ._store.memory import MemoryStore

__all__ = [
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

# The HTTP names load the web stack: imported on first use, so that library users and
# the commands that serve nothing never pay for it.
_HTTP = {
    "Authenticator": "auth",
    "TokenFileAuthenticator": "auth",
    "add_token": "auth",
    "create_app": "app",
}

if TYPE_CHECKING:
    from ._http.app import create_app
    from ._http.auth import Authenticator, TokenFileAuthenticator, add_token


def __getattr__(name: str) -> Any:
    module = _HTTP.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"._http.{module}", __name__), name)
    globals()[name] = value
    return value
