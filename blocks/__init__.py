"""Blocks: the block contract and the built-in palette.

``blocks`` depends on nothing of flowwarden's but sees the run only through the
:class:`BlockContext` protocol it defines; the engine implements that protocol.
"""

from ._builtins import (
    FLOW_NAME_PATTERN,
    RESERVED_NAMES,
    BreakParams,
    CallFlowParams,
    ConditionParams,
    FailParams,
    ForEachParams,
    HttpParams,
    LogParams,
    ParallelParams,
    RepeatParams,
    ReturnParams,
    RouterParams,
    SetParams,
    WaitParams,
    is_flow_name,
)
from ._contract import (
    ENTRY_POINT_GROUP,
    BlockContext,
    BlockDefinition,
    BlockError,
    BlockFunction,
    Params,
    Port,
    RunInfo,
    block,
)
from ._registry import BlockRegistry
from ._values import CelTypes, Expression, ExpressionError, Template

__all__ = [
    "ENTRY_POINT_GROUP",
    "FLOW_NAME_PATTERN",
    "RESERVED_NAMES",
    "BlockContext",
    "BlockDefinition",
    "BlockError",
    "BlockFunction",
    "BlockRegistry",
    "BreakParams",
    "CallFlowParams",
    "CelTypes",
    "ConditionParams",
    "Expression",
    "ExpressionError",
    "FailParams",
    "ForEachParams",
    "HttpParams",
    "LogParams",
    "ParallelParams",
    "Params",
    "Port",
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
