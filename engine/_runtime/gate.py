"""The gate: the one function every activation passes before any run exists.

Checks, in this order, and nothing of a run exists until all pass:

1. permission for the identity (an unknown flow has only app-wide settings, so a denied
   caller learns nothing about which flows exist);
2. the flow exists (:class:`FlowNotFound`);
3. the selected version is LIVE (:class:`FlowNotLive`);
4. the target's ``callable_by`` policy, for Call Flow activations;
5. the depth limit (:class:`ActivationDenied`, reason ``depth_limit``);
6. the inputs: a JSON object within the size limit that fits the ``inputs`` schema
   (:class:`InvalidInputs`), then converted to the schema's number types
   (:func:`conform`). Inputs may arrive as raw JSON bytes (an HTTP body): they
   are parsed here, at this step, so a caller refused earlier learns nothing from them.

Steps 1 to 3 are decided on one read of the store (:meth:`Store.gate_view`): the
settings and the version's status, from one snapshot where the store can give one.
Any unexpected error while deciding denies: the gate fails closed. Each decision is
logged as ``activation.allowed`` or ``activation.denied``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, Protocol

from permissions import Decision, Identity

from .._model.errors import (
    ActivationDenied,
    ActivationError,
    FlowNotFound,
    FlowNotLive,
    InvalidInputs,
    StoreUnavailable,
)
from .._model.limits import check_value, loads_json
from .._model.logs import get_logger, keeps_loggers
from .._model.records import RunHeader
from .._model.types import Limits, VersionStatus, json_safe
from .._store.base import Store
from .interpreter import Program, RunState
from .permissions import decide_and_select

__all__ = ["Activation", "Admission", "Gate", "Observer", "Via", "hypothetical", "outside"]

Via = Literal["api", "http", "cli", "call_flow"]

_RAW = (bytes, bytearray)  # inputs as they came off the wire


class Activation(NamedTuple):
    """A request to start a run: what, with which data, for whom, from where."""

    flow: str
    inputs: Any
    identity: Identity
    via: Via
    version: int | None = None
    parent: RunState | None = None


class Admission(NamedTuple):
    """What the gate hands back when every check passed."""

    flow: str
    version: int
    program: Program
    inputs: dict[str, Any]
    depth: int
    decision: Decision


class Observer(Protocol):
    """Told of every decision of :meth:`Gate.admit`, after it is logged (metrics, traces)."""

    def allowed(self, activation: Activation) -> None: ...

    async def refused(self, activation: Activation, refusal: ActivationError) -> None: ...


class Gate:
    """Decides and enforces; owns no state beyond what it is given."""

    def __init__(
        self,
        store: Store,
        programs: Callable[[str, int], Awaitable[Program]],
        limits: Limits,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._programs = programs
        self._limits = limits
        self._observer = observer
        self._logger = get_logger("flowwarden.gate")
        self._bound: Any = None  # the logger itself, once structlog says it may be kept
        self._quiet = False  # the kept logger drops info events: nothing to build for it

    def _events(self) -> Any:
        """The gate's logger, without the lazy proxy's cost once that cost is pointless;
        ``None`` when the kept logger would drop the gate's (info) events anyway.

        With ``cache_logger_on_first_use`` (the production setting) structlog binds a
        logger once and keeps it, so the gate keeps it too and skips the proxy's lookup
        (about a microsecond an event, even a filtered one); a level-filtering logger
        says once whether info events pass, so filtered ones are not even built.
        Otherwise every event goes through the proxy, which follows configuration
        changes, as tests need. While a command's configuration, not applied yet, drops
        info events, there is no structlog to ask and nothing is built either.
        """
        bound = self._bound
        if bound is not None:
            return None if self._quiet else bound
        if not self._logger.emits(logging.INFO):
            return None
        if keeps_loggers():
            bound = self._bound = self._logger.resolve().bind()
            enabled = getattr(bound, "is_enabled_for", None)
            self._quiet = enabled is not None and not enabled(logging.INFO)
            return None if self._quiet else bound
        return self._logger

    async def admit(self, activation: Activation) -> Admission:
        """Pass every check or raise the :class:`ActivationError` of the first that fails."""
        try:
            outcome = await self._check(activation)
        except StoreUnavailable:
            # not a refusal: nothing runs, and the caller may try again (HTTP 503)
            self._logger.warning("activation.store_unavailable", flow=activation.flow)
            raise
        except Exception as exc:
            refusal = _refusal(activation, exc)
            self._log(activation, refusal)
            if self._observer is not None:
                await self._observer.refused(activation, refusal)
            if refusal is exc:
                raise
            raise refusal from exc
        if not self._quiet:  # a kept logger that drops info events: nothing to build
            self._log(activation, outcome)
        if isinstance(outcome, Admission):
            if self._observer is not None:
                self._observer.allowed(activation)
            return outcome
        if self._observer is not None:
            await self._observer.refused(activation, outcome)
        try:
            raise outcome
        finally:  # the traceback holds this frame: no cycle back to the refusal
            del outcome

    async def examine(self, activation: Activation) -> Admission | ActivationError:
        """A dry run of :meth:`admit` for ``flowwarden check``: every check but the
        inputs, in the same order, failing closed the same way; the refusal is returned,
        and nothing is logged or created."""
        try:
            return await self._check(activation, inputs=False)
        except Exception as exc:
            return _refusal(activation, exc)

    async def _check(
        self, activation: Activation, *, inputs: bool = True
    ) -> Admission | ActivationError:
        """Every check, in order: the admission, or the refusal of the first check that
        fails, returned rather than raised (a raise through each await costs more than
        the checks themselves); an unexpected error raises, and :meth:`admit` denies."""
        flow = activation.flow
        identity = activation.identity
        if not isinstance(identity, Identity):
            raise TypeError(f"identity must be an Identity, not {type(identity).__name__}")
        store = self._store
        decision, selected = await decide_and_select(store, flow, activation.version, identity)
        if not decision.allowed:
            return ActivationDenied(
                f"activation of flow {flow!r} denied: {decision.reason}",
                flow=flow,
                reason=decision.reason,
                decision=decision,
            )
        if selected is None:
            which = (
                f"flow {flow!r}"
                if activation.version is None
                else f"version {activation.version} of flow {flow!r}"
            )
            return FlowNotFound(f"{which} does not exist", flow=flow, version=activation.version)
        version, status = selected
        if status is not VersionStatus.LIVE:
            return FlowNotLive(
                f"flow {flow!r} version {version} is {status.value}, not LIVE",
                flow=flow,
                version=version,
                status=status,
            )
        program = await self._programs(flow, version)
        parent = activation.parent
        if activation.via == "call_flow" and program.callable_by is not None:
            caller = parent.header.flow if parent is not None else None
            if caller not in program.callable_by:
                allowed = ", ".join(sorted(program.callable_by)) or "no flow"
                return ActivationDenied(
                    f"flow {flow!r} may not be called by flow {caller!r} (callable_by: {allowed})",
                    flow=flow,
                    version=version,
                    reason="callable_by",
                    decision=decision,
                )
        depth = parent.header.depth + 1 if parent is not None else 0
        if depth > self._limits.max_depth:
            return ActivationDenied(
                f"activation of flow {flow!r} denied: depth {depth} is over the limit of "
                f"{self._limits.max_depth}",
                flow=flow,
                version=version,
                reason="depth_limit",
                decision=decision,
            )
        if not inputs or (activation.inputs is None and program.input_validator is None):
            data: dict[str, Any] = {}  # nothing to check: no inputs, no schema
        else:
            data = self._inputs(activation, program, version)
        return Admission(flow, version, program, data, depth, decision)

    def _inputs(self, activation: Activation, program: Program, version: int) -> dict[str, Any]:
        flow = activation.flow
        inputs = activation.inputs
        limits = self._limits
        raw = isinstance(inputs, _RAW)
        if raw:  # a raw body, parsed only at this step (its size is checked there)
            inputs = _parse_body(bytes(inputs), flow, version, limits)
        elif inputs is not None:  # handed over already built: walked before it is read
            try:
                check_value(
                    inputs, max_nesting=limits.max_nesting, max_nodes=limits.max_input_bytes
                )
            except ValueError as exc:
                raise InvalidInputs(
                    f"inputs of flow {flow!r} are over a limit: {exc}", flow=flow, version=version
                ) from exc
        if inputs is None:
            inputs = {}
        if activation.via == "call_flow":
            inputs = json_safe(inputs)
        if not isinstance(inputs, dict):
            raise InvalidInputs(
                f"inputs of flow {flow!r} must be a JSON object, not {type(inputs).__name__}",
                flow=flow,
                version=version,
            )
        if inputs and not raw:  # values handed over: JSON, and within the size limit
            try:
                size = len(json.dumps(inputs, separators=(",", ":")).encode())
            except (TypeError, ValueError) as exc:
                raise InvalidInputs(
                    f"inputs of flow {flow!r} are not JSON: {exc}", flow=flow, version=version
                ) from exc
            if size > self._limits.max_input_bytes:
                raise InvalidInputs(
                    f"inputs of flow {flow!r} are {size} bytes, over the limit of "
                    f"{self._limits.max_input_bytes}",
                    flow=flow,
                    version=version,
                )
        validator = program.input_validator
        if validator is not None:
            errors = sorted(validator.iter_errors(inputs), key=lambda e: list(e.absolute_path))
            if errors:
                problems = [
                    f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                    for e in errors
                ]
                raise InvalidInputs(
                    f"inputs of flow {flow!r} are invalid: {'; '.join(problems)}",
                    flow=flow,
                    version=version,
                    problems=problems,
                )
            return conform(inputs, program.document.inputs)
        return inputs

    def _log(self, activation: Activation, outcome: Admission | ActivationError) -> None:
        events = self._events()
        if events is None:
            return
        identity = activation.identity
        parent = activation.parent
        if isinstance(outcome, Admission):  # the common case, kept to one call
            decision = outcome.decision
            events.info(
                "activation.allowed",
                flow=activation.flow,
                version=outcome.version,
                via=activation.via,
                user=identity.user_id,
                roles=list(identity.sorted_roles),
                layer=decision.layer,
                reason=decision.reason,
                parent_run_id=parent.header.run_id if parent is not None else None,
            )
            return
        genuine = isinstance(identity, Identity)  # a forged one was refused; claim nothing of it
        fields: dict[str, Any] = {
            "flow": activation.flow,
            "via": activation.via,
            "user": identity.user_id if genuine else None,
            "roles": list(identity.sorted_roles) if genuine else None,
            "parent_run_id": parent.header.run_id if parent is not None else None,
        }
        denied_by = outcome.decision if isinstance(outcome, ActivationDenied) else None
        events.info(
            "activation.denied",
            version=outcome.version,
            layer=denied_by.layer if denied_by is not None else None,
            reason=outcome.reason if isinstance(outcome, ActivationDenied) else outcome.code,
            error=outcome.code,
            **fields,
        )


def conform(inputs: dict[str, Any], schema: Any) -> dict[str, Any]:
    """Valid inputs in the types their schema gives, as expressions were type-checked
    with: an ``integer`` given ``27.0`` becomes ``27``, a ``number`` given ``5`` becomes
    ``5.0``, in nested objects (``properties``, ``additionalProperties``) and arrays
    (``prefixItems``, ``items``) too. Only a single string ``type`` converts; the
    inputs are returned as they are when nothing changes, else converted in a copy."""
    changes: list[tuple[tuple[Any, ...], int | float]] = []
    pending: list[tuple[tuple[Any, ...], Any, Any]] = [((), inputs, schema)]
    while pending:  # iterative: the inputs' depth is limited, this walk's stack is not
        path, value, sub = pending.pop()
        kind = sub.get("type") if isinstance(sub, dict) else None
        if kind == "integer" and type(value) is float and value.is_integer():
            changes.append((path, int(value)))
        elif kind == "number" and type(value) is int and abs(value) < 2**1023:
            changes.append((path, float(value)))
        elif isinstance(value, dict) and isinstance(sub, dict):
            properties = sub.get("properties")
            named: dict[str, Any] = properties if isinstance(properties, dict) else {}
            for key, item in value.items():
                pending.append(
                    ((*path, key), item, named.get(key, sub.get("additionalProperties")))
                )
        elif isinstance(value, list) and isinstance(sub, dict):
            given = sub.get("prefixItems")
            prefix: list[Any] = given if isinstance(given, list) else []
            for index, item in enumerate(value):
                each = prefix[index] if index < len(prefix) else sub.get("items")
                pending.append(((*path, index), item, each))
    if not changes:
        return inputs
    converted = dict(inputs)  # copied along the changed paths only, the rest shared
    copies: dict[tuple[Any, ...], Any] = {(): converted}
    for path, number in changes:
        target: Any = converted
        for depth, step in enumerate(path[:-1], start=1):
            child = copies.get(path[:depth])
            if child is None:
                child = copies[path[:depth]] = copy.copy(target[step])
                target[step] = child
            target = child
        target[path[-1]] = number
    return converted


def outside(
    flow: str, inputs: Any, identity: Identity, via: Via, version: int | None
) -> Activation:
    """An activation from outside the engine's runs: any edge but a Call Flow block's."""
    if via == "call_flow":
        raise ValueError("'call_flow' activations come from Call Flow blocks only")
    return Activation(flow, inputs, identity, via, version)


def hypothetical(
    flow: str, identity: Identity, *, version: int | None, caller: str | None, depth: int
) -> Activation:
    """The activation ``check`` asks about: from a Call Flow block of ``caller`` at call
    depth ``depth`` (a calling run that holds only what the gate reads of it), or from
    the API when no caller is named; without inputs."""
    if caller is None:
        return Activation(flow, None, identity, "api", version)
    parent = RunState(RunHeader("(examined)", caller, 0, identity, {}, depth=depth - 1))
    return Activation(flow, None, identity, "call_flow", version, parent)


def _refusal(activation: Activation, exc: Exception) -> ActivationError:
    """What the gate answers for a failed check: the check's own refusal, or, for any
    other error, a denial (the gate fails closed: whatever went wrong, nothing runs)."""
    if isinstance(exc, ActivationError):
        return exc
    return ActivationDenied(
        f"activation of flow {activation.flow!r} denied: the gate failed ({exc})",
        flow=activation.flow,
        reason="error",
    )


def _parse_body(body: bytes, flow: str, version: int, limits: Limits) -> Any:
    """Inputs that arrived as raw JSON bytes (the HTTP API): empty means ``{}``.

    Strict JSON (no ``NaN`` or ``Infinity``), nesting within the limit, checked before
    the parser recurses."""
    limit = limits.max_input_bytes
    if len(body) > limit:
        raise InvalidInputs(
            f"inputs of flow {flow!r} are {len(body)} bytes, over the limit of {limit}",
            flow=flow,
            version=version,
        )
    if not body.strip():
        return {}
    try:
        return loads_json(body, max_nesting=limits.max_nesting)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidInputs(
            f"inputs of flow {flow!r} are not valid JSON: {exc}", flow=flow, version=version
        ) from exc
