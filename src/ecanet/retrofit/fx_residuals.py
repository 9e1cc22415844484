"""Placement in any traceable model: find residual additions with torch.fx.

The model is traced symbolically (in eval mode, so that dropout and stochastic depth vanish);
every ``a + b`` of two values computed from the input is a candidate residual addition. The branch is the
operand computed from the other one or, when both come from a common input (a projection
shortcut), the one with more module calls of its own. From the branch operand the search walks
back through shape-preserving steps (identity, dropout, drop-path, scaling by a constant or a
parameter) to the last normalization layer, or the last convolution if the branch has none
there, and places ECA after it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ecanet.modes import evaluation_mode
from ecanet.retrofit.families import ATTENTION_REASONS
from ecanet.retrofit.places import Candidate, SkippedPlace
from ecanet.retrofit.recognize import attention_kind, conv_output, norm_output
from ecanet.retrofit.wrappers import ECAAfter, ECAInsteadOf

__all__ = ["ResidualSearch", "find_residual_places"]

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_PASS_FUNCTIONS = (operator.mul, operator.imul, operator.truediv, torch.mul, F.dropout)
_PASS_METHODS = ("mul", "mul_", "div", "div_", "contiguous")
# Modules that leave the branch's values in place at inference; matched by class name because
# every library has its own (torchvision StochasticDepth, timm DropPath and LayerScale, ...).
_PASS_MODULE_NAMES = ("DropPath", "StochasticDepth", "DropBlock", "LayerScale")

STRATEGY = "fx residual"


@dataclass
class ResidualSearch:
    """What the fx search found.

    Attributes:
        places: the branch ends that get ECA.
        skipped: additions whose branch could not take ECA, with the reason.
        additions: number of residual additions seen.
        error: why tracing failed (``None`` when it worked).
    """

    places: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedPlace] = field(default_factory=list)
    additions: int = 0
    error: str | None = None


class _Tracer(fx.Tracer):
    """Keeps attention modules, retrofit containers, normalizations and convolutions opaque: they
    are places, not code to read (timm's ``BatchNormAct2d``, read, ends in a functional batch_norm)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if (
            isinstance(m, (ECAAfter, ECAInsteadOf))
            or attention_kind(m) is not None
            or norm_output(m) is not None
            or conv_output(m) is not None
        ):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> fx.Graph:
    with evaluation_mode(model):
        return _Tracer().trace(model)


def _computed_from_inputs(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose value depends on the model's inputs (not only on parameters and constants)."""
    computed: set[fx.Node] = set()
    for node in graph.nodes:  # topological order
        if node.op == "placeholder" or any(n in computed for n in node.all_input_nodes):
            computed.add(node)
    return computed


def _is_addition(node: fx.Node, computed: set[fx.Node]) -> bool:
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )
    return is_add and len(node.args) >= 2 and all(isinstance(a, fx.Node) and a in computed for a in node.args[:2])


def _ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it is computed from."""
    seen = {node}
    stack = [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _branch_of(addition: fx.Node) -> fx.Node | None:
    """The operand of ``a + b`` that is the residual branch, or ``None`` if that is unclear."""
    a, b = addition.args[0], addition.args[1]
    from_a, from_b = _ancestors(a), _ancestors(b)
    if a in from_b:
        return b
    if b in from_a:
        return a
    work_a = sum(n.op == "call_module" for n in from_a - from_b)
    work_b = sum(n.op == "call_module" for n in from_b - from_a)
    if work_a == work_b:
        return None
    return a if work_a > work_b else b


def _attention_on_branch(addition: fx.Node, branch: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The :func:`attention_kind` of a channel attention module anywhere on the branch (computed
    for the branch and not for the shortcut), as in a RegNetY block's SE before its last
    convolution, or ``None``."""
    shortcut = addition.args[1] if branch is addition.args[0] else addition.args[0]
    for node in _ancestors(branch) - _ancestors(shortcut):
        if node.op == "call_module":
            kind = attention_kind(modules[node.target])
            if kind is not None:
                return kind
    return None


def _single_computed_input(node: fx.Node, computed: set[fx.Node]) -> fx.Node | None:
    """The only input of ``node`` computed from the model's inputs (parameters aside), if there is one."""
    inputs = [n for n in node.all_input_nodes if n in computed]
    return inputs[0] if len(inputs) == 1 else None


def _passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    if node.op == "call_method":
        return node.target in _PASS_METHODS
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)):
            return True
        return any(part in type(module).__name__ for part in _PASS_MODULE_NAMES)
    return False


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


def _branch_end(
    addition: fx.Node, branch: fx.Node, modules: dict[str, nn.Module], computed: set[fx.Node]
) -> tuple[fx.Node | None, str]:
    """The module call ECA should follow on the ``branch`` operand of ``addition`` and ``""``, or
    the reason it gets none.

    A branch that already ends in a retrofit container returns that node with a reason. ECA
    changes the end module's output for every use of it, so a branch whose value (at the end or
    on the way to the addition) is used elsewhere too gets none.
    """
    node, on_branch = branch, addition
    while True:
        others = sorted(user.name for user in node.users if user is not on_branch)
        if others:
            return None, f"{_describe(node, modules)}'s output is used off the branch too ({', '.join(others)})"
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, ECAAfter):
                return node, "already has ECA"
            if isinstance(module, ECAInsteadOf) or attention_kind(module) is not None:
                return None, f"the branch already ends in channel attention ({_describe(node, modules)})"
            if norm_output(module) is not None or conv_output(module) is not None:
                return node, ""
        if not _passes_through(node, modules):
            return None, f"the branch ends in {_describe(node, modules)}, not a normalization or convolution"
        previous = _single_computed_input(node, computed)
        if previous is None:
            return None, f"the branch ends in {_describe(node, modules)} of several tensors"
        node, on_branch = previous, node


def _location(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack), "") if stack else ""
    return f"{owner} ({node.name})" if owner else node.name


def find_residual_places(model: nn.Module) -> ResidualSearch:
    """Places at the end of every residual branch fx can find in ``model``.

    Args:
        model: the model to trace; its training flags are restored afterwards.

    Returns:
        A :class:`ResidualSearch`; ``error`` says why tracing failed, if it did.

    Example:
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv, self.bn = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        ...     def forward(self, x):
        ...         return torch.relu(x + self.bn(self.conv(x)))
        >>> search = find_residual_places(nn.Sequential(Block(), Block()))
        >>> [p.name for p in search.places], search.additions
        (['0.bn', '1.bn'], 2)
    """
    try:
        graph = _trace(model)
    except Exception as error:  # tracing runs arbitrary user code: any failure means "not traceable"
        return ResidualSearch(error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    computed = _computed_from_inputs(graph)
    search = ResidualSearch()
    seen: set[str] = set()
    for node in graph.nodes:
        if not _is_addition(node, computed):
            continue
        search.additions += 1
        branch = _branch_of(node)
        if branch is None:
            search.skipped.append(SkippedPlace(_location(node), "cannot tell the residual branch from the shortcut"))
            continue
        end, reason = _branch_end(node, branch, modules, computed)
        if reason:
            search.skipped.append(SkippedPlace(_location(node) if end is None else str(end.target), reason))
            continue
        name = str(end.target)
        attention = _attention_on_branch(node, branch, modules)
        if attention is not None:
            search.skipped.append(SkippedPlace(name, ATTENTION_REASONS[attention]))
        elif calls[name] > 1:
            search.skipped.append(SkippedPlace(name, f"module is called {calls[name]} times; ECA would follow each"))
        elif name not in seen:
            seen.add(name)
            module = modules[name]
            channels, channel_dim = norm_output(module) or conv_output(module)  # type: ignore[misc]
            search.places.append(Candidate(name, "insert", STRATEGY, type(module).__name__, channels, channel_dim))
    return search
