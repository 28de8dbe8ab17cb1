"""Cut any ``nn.Module`` into a client part and a server part.

A *computational block* is a Conv or Linear layer together with the norm,
activation, pool and dropout layers that follow it, counted in execution
order. ``cut=k`` splits right after block ``k``: the client (head) runs the
first ``k`` blocks and the server (tail) runs the rest. ``cut="layer1"`` names
a submodule instead: the split comes right after that submodule's output.

The model is traced with ``torch.fx``, so models whose ``forward`` is not a
plain chain (residual connections, functional calls) are handled. A cut is
valid only where exactly one tensor crosses the boundary, since that single
tensor is what split learning sends over the network. Residual blocks can
therefore only be cut at their ends.

Both parts are built from a deep copy: the user's model is never changed.
Module paths (``layer1.0.conv1``) are kept, so the parts' ``state_dict`` keys
are the original model's keys.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shieldsplit.cutting import split_model
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    >>> parts = split_model(model, cut=1)
    >>> parts.valid_cuts
    (1, 2)
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.allclose(parts.tail(parts.head(x)), model(x))
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from shieldsplit.errors import InvalidCutError, UnsupportedModelError

#: Layer types that open a computational block.
COMPUTE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose2d,
    nn.Linear,
)


@dataclass(frozen=True)
class CutPoint:
    """One place where a model can be split.

    Attributes:
        index: the number of computational blocks on the client side.
        node: the name of the fx node whose output crosses the network.
        after: qualified name of the last compute layer on the client side.
    """

    index: int
    node: str
    after: str


@dataclass(frozen=True)
class SplitParts:
    """The two halves of a split model.

    Attributes:
        head: client part, ``x -> activations``.
        tail: server part, ``activations -> logits``.
        cut: the block index of the split, or the submodule name when the named
            module ends inside a block (e.g. a conv before its activation).
        valid_cuts: every valid block index of this model.
        compute_layers: qualified names of the model's compute layers, in order.
    """

    head: fx.GraphModule
    tail: fx.GraphModule
    cut: int | str
    valid_cuts: tuple[int, ...]
    compute_layers: tuple[str, ...]


class _LeafTracer(fx.Tracer):
    """Tracer that keeps every compute layer and norm as a leaf module."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or isinstance(m, COMPUTE_TYPES)


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` with ``torch.fx`` on a deep copy.

    Args:
        model: any module whose forward is symbolically traceable.

    Returns:
        A ``GraphModule`` that shares no parameters with ``model``.

    Raises:
        UnsupportedModelError: if tracing fails.
    """
    root = copy.deepcopy(model)
    try:
        graph = _LeafTracer().trace(root)
    except Exception as exc:  # fx raises many types on untraceable code
        raise UnsupportedModelError.build(
            what="model",
            expected="a module whose forward torch.fx can trace (no data-dependent control flow)",
            received=f"{type(model).__name__} ({type(exc).__name__}: {exc})",
            fix="make the control flow static, or pass cut='<submodule name>' on a traceable model",
        ) from exc
    return fx.GraphModule(root, graph, class_name=f"Traced{type(model).__name__}")


def _compute_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(modules.get(str(n.target)), COMPUTE_TYPES)
    ]


def _crossing(nodes: list[fx.Node], boundary: int) -> set[fx.Node]:
    """Nodes before ``boundary`` whose value is used at or after it (get_attr excluded)."""
    head = set(nodes[:boundary])
    crossing: set[fx.Node] = set()
    for n in nodes[boundary:]:
        for arg in n.all_input_nodes:
            if arg in head and arg.op != "get_attr":
                crossing.add(arg)
    return crossing


def _shares_state(nodes: list[fx.Node], boundary: int) -> bool:
    """Whether a parameter or module is used on both sides of ``boundary``.

    Such a cut would give client and server separate copies of one tensor, each
    receiving only part of its gradient, so the copies would drift apart.
    """
    head, tail = nodes[:boundary], nodes[boundary:]
    used_in_tail = {str(n.target) for n in tail if n.op == "call_module"}
    used_in_tail |= {str(a.target) for n in tail for a in n.all_input_nodes if a.op == "get_attr"}
    used_in_head = {str(n.target) for n in head if n.op == "call_module"}
    used_in_head |= {str(a.target) for n in head for a in n.all_input_nodes if a.op == "get_attr"}
    return bool(_overlap(used_in_head, used_in_tail))


def _overlap(a: set[str], b: set[str]) -> set[str]:
    """Names in both sets, counting a module and its sub-parameters as the same state."""
    return {x for x in a for y in b if x == y or x.startswith(y + ".") or y.startswith(x + ".")}


def _cut_points(gm: fx.GraphModule) -> tuple[list[fx.Node], list[CutPoint], list[tuple[int, int]]]:
    nodes = list(gm.graph.nodes)
    compute = _compute_nodes(gm)
    if not compute:
        raise UnsupportedModelError.build(
            what="model",
            expected="a model with at least one Conv or Linear layer",
            received="a model without any Conv or Linear layer",
            fix="wrap a classifier built from nn.Conv2d / nn.Linear layers",
        )
    out = next((n for n in reversed(nodes) if n.op == "output"), None)
    if out is not None and out.args and isinstance(out.args[0], (tuple, list, dict)):
        raise UnsupportedModelError.build(
            what="model",
            expected="a classifier whose forward returns one (N, classes) logits tensor",
            received=f"a forward that returns a {type(out.args[0]).__name__} of "
            f"{len(out.args[0])} values",
            fix="wrap the model so that forward returns the logits alone, e.g. "
            "forward(self, x): return self.model(x)[0]",
        )
    points: list[CutPoint] = []
    boundaries: list[tuple[int, int]] = []
    position = {n: i for i, n in enumerate(nodes)}
    for k in range(1, len(compute)):
        boundary = position[compute[k]]
        crossing = _crossing(nodes, boundary)
        if len(crossing) == 1 and not _shares_state(nodes, boundary):
            (node,) = crossing
            if node.op != "placeholder":
                points.append(CutPoint(k, node.name, str(compute[k - 1].target)))
                boundaries.append((k, boundary))
    return nodes, points, boundaries


def list_cut_points(model: nn.Module) -> list[CutPoint]:
    """List the places where ``model`` can be split.

    Args:
        model: the classifier to inspect (not modified).

    Returns:
        One :class:`CutPoint` per valid block index, in order.

    Raises:
        UnsupportedModelError: if the model has no Conv/Linear layer or cannot be traced.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [p.index for p in list_cut_points(m)]
        [1]
    """
    return _cut_points(trace(model))[1]


def cut_ranks(model: nn.Module, x: Tensor) -> dict[int, int]:
    """The rank of the activations that cross each valid cut, from one forward pass.

    4 means feature maps ``(N, C, H, W)`` (what PGSL's unshuffle and saliency channel
    need), 2 flat features ``(N, F)`` (the cut falls after a ``Flatten``).

    Args:
        model: the classifier (not modified: a traced copy runs, in eval mode).
        x: an example batch the model takes.

    Returns:
        ``{block index: activation rank}`` for every valid cut, in order.

    Raises:
        UnsupportedModelError: if the model has no Conv/Linear layer or cannot be traced.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                     nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(2 * 4 * 4, 3))
        >>> cut_ranks(net, torch.zeros(2, 1, 4, 4))
        {1: 4, 2: 2}
    """
    gm = trace(model).eval()
    _, points, _ = _cut_points(gm)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    by_name = {n.name: n for n in gm.graph.nodes}
    ranks = {}
    for p in points:
        meta = by_name[p.node].meta.get("tensor_meta")
        ranks[p.index] = len(meta.shape) if meta is not None and hasattr(meta, "shape") else 0
    return ranks


def describe_cuts(points: list[CutPoint]) -> str:
    """The cut points as a message lists them: ``1 (after 0), 2 (after 2)``, or ``none``."""
    return ", ".join(f"{p.index} (after {p.after})" for p in points) or "none"


def _boundary_for_name(
    gm: fx.GraphModule, nodes: list[fx.Node], name: str, points: list[CutPoint]
) -> int:
    """Position just after the last node belonging to submodule ``name``."""
    prefix = name + "."
    owned = [
        i
        for i, n in enumerate(nodes)
        if n.op == "call_module" and (str(n.target) == name or str(n.target).startswith(prefix))
    ]
    if not owned:
        names = sorted({str(n.target).split(".")[0] for n in nodes if n.op == "call_module"})
        raise InvalidCutError.build(
            what="cut",
            expected=f"a block index ({describe_cuts(points)}) or a submodule name such as {names}",
            received=repr(name),
            fix="pick one of the listed cut points",
        )
    return owned[-1] + 1


def split_model(model: nn.Module, cut: int | str) -> SplitParts:
    """Split ``model`` into a client head and a server tail.

    Args:
        model: any image classifier (not modified; the parts hold copies).
        cut: the number of computational blocks on the client side, or the
            qualified name of a submodule after which to cut.

    Returns:
        The two parts, which compose to the original model exactly.

    Raises:
        InvalidCutError: if ``cut`` is not a valid cut point; the message lists the valid ones.
        UnsupportedModelError: if the model has no Conv/Linear layer, cannot be traced, or
            returns several values (a tuple) instead of one logits tensor.
    """
    gm = trace(model)
    nodes, points, boundaries = _cut_points(gm)
    valid = tuple(p.index for p in points)
    if isinstance(cut, bool) or not isinstance(cut, (int, str)):
        raise InvalidCutError.build(
            what="cut",
            expected=f"an int block index ({describe_cuts(points)}) or a submodule name",
            received=f"{cut!r} of type {type(cut).__name__}",
            fix="pass cut=<int> or cut='<submodule name>'",
        )
    index: int | str
    if isinstance(cut, str):
        boundary = _boundary_for_name(gm, nodes, cut, points)
        crossing = _crossing(nodes, boundary)
        count = sum(1 for n in _compute_nodes(gm) if nodes.index(n) < boundary)
        if (
            len(crossing) != 1
            or next(iter(crossing)).op == "placeholder"
            or _shares_state(nodes, boundary)
            or count == len(_compute_nodes(gm))
        ):
            raise InvalidCutError.build(
                what="cut",
                expected="a point where exactly one tensor crosses, no parameter is used on both "
                f"sides and at least one layer stays on the server; valid: {describe_cuts(points)}",
                received=f"{cut!r} ({len(crossing)} tensor(s) cross there)",
                fix="cut at the end of a residual block or pass one of the listed indices",
            )
        # A name that ends exactly at a block boundary is that block index; one that
        # ends inside a block (before its norm/activation) stays a name.
        index = count if dict(boundaries).get(count) == boundary else cut
    else:
        if cut not in valid:
            raise InvalidCutError.build(
                what="cut",
                expected=f"one of {list(valid)}: {describe_cuts(points)}",
                received=cut,
                fix="pass one of the listed cut indices",
            )
        index = cut
        boundary = dict(boundaries)[cut]
    head, tail = _build_parts(gm, nodes, boundary)
    return SplitParts(
        head=head,
        tail=tail,
        cut=index,
        valid_cuts=valid,
        compute_layers=tuple(str(n.target) for n in _compute_nodes(gm)),
    )


def _build_parts(
    gm: fx.GraphModule, nodes: list[fx.Node], boundary: int
) -> tuple[fx.GraphModule, fx.GraphModule]:
    (cross,) = _crossing(nodes, boundary)
    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    head_inputs = {a for n in nodes[:boundary] for a in n.all_input_nodes}
    for n in nodes[:boundary]:
        if n.op == "get_attr" and n not in head_inputs:
            continue  # fetched early but used only by the server
        env[n] = head_graph.node_copy(n, lambda a: env[a])
    head_graph.output(env[cross])

    tail_graph = fx.Graph()
    tenv: dict[fx.Node, fx.Node] = {cross: tail_graph.placeholder("activations")}
    tail_inputs = {a for n in nodes[boundary:] for a in n.all_input_nodes}
    for n in nodes[:boundary]:  # a parameter fetched early but used only by the server
        if n.op == "get_attr" and n in tail_inputs:
            tenv[n] = tail_graph.node_copy(n, lambda a: tenv[a])
    for n in nodes[boundary:]:
        tenv[n] = tail_graph.node_copy(n, lambda a: tenv[a])
    head_graph.lint()
    tail_graph.lint()
    # Each part gets its own copy of the parameters it uses.
    head = fx.GraphModule(copy.deepcopy(gm), head_graph, class_name="ClientHead")
    tail = fx.GraphModule(copy.deepcopy(gm), tail_graph, class_name="ServerTail")
    return head, tail


__all__ = [
    "COMPUTE_TYPES", "CutPoint", "SplitParts", "cut_ranks", "describe_cuts", "list_cut_points",
    "split_model", "trace",
]
