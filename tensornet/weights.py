r"""The ground floor under spectra, analysis, nn and the CLI: a model's weights and layers.

- :data:`KERNEL_LEGS`: the leg names of a weight by its number of dimensions (one table).
- Choosing layers: :func:`matches` (a name against a glob or regex), :func:`layer_aliases`,
  :func:`end_layers` (the layers next to a model's inputs and outputs) and
  :func:`select_layers` (by pattern, explicit names or predicate, minus ``skip``).
- :func:`replace_module`: put a module at a dotted name; :func:`layer_inputs`: the input shape
  of named layers on one forward; :func:`eval_mode`: a forward in eval mode, modes restored.

A pattern matches a layer's whole name as a glob (``"layer1.*"``, ``"fc*"``) or as a regular
expression (``"conv[12]"``, ``r"layer\d\.0\.conv1"``). A module registered under several names
(shared, tied) is one layer, named by its first name; a pattern matching any of its names
matches it.

``skip`` may hold ``"first"`` and ``"last"``, which name the model's *input* and *output*
layers (:func:`end_layers`): ``"last"`` is every conv/linear layer whose output reaches a model
output without passing through another conv/linear layer (all the heads of a multi-head model),
``"first"`` every conv/linear layer fed by a model input without another conv/linear layer in
between (every stem of a multi-input model). They are found by tracing the model with
``torch.fx``, or by hooks on one forward of ``example_input``; when neither works, they are the
first and last registered conv/linear layers (with a warning). Every other ``skip`` entry is a
pattern and must match some layer.

This module imports only torch: the packages above it register their own layer types (a
compressed layer counts as a conv/linear layer) with :func:`register_layer_type`.

Examples
--------
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
>>> select_layers(net), select_layers(net, skip=("first", "last")), select_layers(net, "2|3")
(['0', '1', '3'], ['1'], ['3'])
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "KERNEL_LEGS",
    "EndLayers",
    "NoMatchingLayer",
    "end_layers",
    "eval_mode",
    "kernel_legs",
    "layer_aliases",
    "layer_inputs",
    "layer_kernel",
    "matches",
    "register_layer_type",
    "replace_module",
    "select_layers",
]

#: Leg names of a weight by its number of dimensions (linear, conv1d, conv2d, conv3d).
KERNEL_LEGS: dict[int, tuple[str, ...]] = {
    2: ("out", "in"),
    3: ("out", "in", "k"),
    4: ("out", "in", "kh", "kw"),
    5: ("out", "in", "kd", "kh", "kw"),
}
#: The legs of a linear layer's weight and of a 2-d convolution's kernel.
MATRIX_LEGS = KERNEL_LEGS[2]
CONV2D_LEGS = KERNEL_LEGS[4]

Selector = str | Sequence[str] | Callable[[str, nn.Module], bool] | None
#: ``module -> why it cannot be chosen`` (``None``: it can).
Refusal = Callable[[nn.Module], "str | None"]


def kernel_legs(ndim: int) -> tuple[str, ...]:
    """The leg names of a weight with ``ndim`` dimensions: :data:`KERNEL_LEGS`, else ``d0, d1...``.

    Examples
    --------
    >>> kernel_legs(4), kernel_legs(1)
    (('out', 'in', 'kh', 'kw'), ('d0',))
    """
    return KERNEL_LEGS.get(ndim, tuple(f"d{i}" for i in range(ndim)))


class NoMatchingLayer(ValueError):
    """A layer name or pattern matched no layer (or no weight)."""


def matches(name: str, pattern: str | None) -> bool:
    """Whole-name match of ``pattern`` as a glob, or as a regular expression.

    ``"layer1.*"`` and ``"conv[12]"`` work either way; ``"fc*"`` matches ``fc`` and ``fc1`` but
    not ``classifier``; ``"1"`` matches only ``1``. Globs that are not valid regexes (``"*conv"``)
    are matched as globs only. ``None`` matches everything.

    Examples
    --------
    >>> matches("fc1", "fc*"), matches("classifier", "fc*"), matches("a1", None)
    (True, False, True)
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"a layer pattern is a str (glob or regex), got {type(pattern).__name__}")
    if pattern is None or fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


# -- layers of a model --------------------------------------------------------------------------
_LAYER_TYPES: list[type] = []
_KERNELS: dict[type, Callable[[nn.Module], Any]] = {}


def register_layer_type(
    cls: type, kernel: Callable[[nn.Module], Any] | None = None
) -> type:
    """Count modules of type ``cls`` as conv/linear layers where :func:`end_layers` stops.

    The nn package registers its compressed layers, so a compressed model has the same input
    and output layers as the dense one. ``kernel``, if given, maps a module of this type to
    its kernel as a :class:`~tensornet.formats.Format` (:func:`layer_kernel`), so that spectra
    reach compressed layers without importing the package that defines them. Returns ``cls``
    (usable as a class decorator).
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be a torch.nn.Module subclass, got {cls!r}")
    if kernel is not None and not callable(kernel):
        raise TypeError(f"kernel must be callable (module -> Format), got {kernel!r}")
    if cls not in _LAYER_TYPES:
        _LAYER_TYPES.append(cls)
    if kernel is not None:
        _KERNELS[cls] = kernel
    return cls


def layer_kernel(module: nn.Module) -> Any:
    """The kernel of a registered layer type as its Format (``None`` for other modules).

    Examples
    --------
    >>> from torch import nn
    >>> layer_kernel(nn.Linear(2, 2)) is None
    True
    """
    for cls, kernel in _KERNELS.items():
        if isinstance(module, cls):
            return kernel(module)
    return None


def _is_layer(module: nn.Module) -> bool:
    """A conv/linear layer (any kind, registered ones included): where end-layer walks stop."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, *_LAYER_TYPES))


def layer_aliases(model: nn.Module, *, transposed: bool = False) -> dict[str, tuple[str, ...]]:
    """Every name of each conv/linear layer with a weight, keyed by its first name.

    In module order; transposed convolutions are left out (their weights are laid out
    ``(in, out, k...)``) unless ``transposed``. A module registered at two places (the same
    object under two names) has two names.

    Examples
    --------
    >>> from torch import nn
    >>> lin = nn.Linear(4, 4)
    >>> layer_aliases(nn.Sequential(lin, nn.ReLU(), lin, nn.ConvTranspose2d(4, 4, 3)))
    {'0': ('0', '2')}
    """
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if (
            isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
            and m.weight is not None
            and (transposed or not getattr(m, "transposed", False))  # a Linear has no flag
        ):
            names.setdefault(id(m), []).append(name)
    return {group[0]: tuple(group) for group in names.values()}


def replace_module(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at the dotted ``name`` inside ``model``; return the module it replaces.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    >>> old = replace_module(net, "1.0", nn.Tanh())
    >>> type(old).__name__, type(net[1][0]).__name__
    ('ReLU', 'Tanh')
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        old = parent._modules[child]
    except (AttributeError, KeyError):
        raise NoMatchingLayer(f"name {name!r}: the model has no submodule of that name") from None
    setattr(parent, child, module)
    return old


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode; every module's own ``training`` flag is restored on exit.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Dropout(), nn.Dropout()).train()
    >>> net[1].eval()  # doctest: +ELLIPSIS
    Dropout(...)
    >>> with eval_mode(net):
    ...     net[0].training
    False
    >>> net[0].training, net[1].training
    (True, False)
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def _inputs(example_input: Any) -> tuple:
    """The positional inputs: a tuple is several inputs, anything else one."""
    return example_input if isinstance(example_input, tuple) else (example_input,)


def layer_inputs(
    model: nn.Module, example_input: Any, names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Input shape of each named layer when ``model`` runs on ``example_input``.

    The forward runs in eval mode without gradients; every module's mode is restored after.
    ``example_input`` is a tensor, or a tuple of positional inputs. A layer called several
    times keeps its first input's shape; a layer the forward never reaches is left out.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    >>> layer_inputs(net, torch.randn(5, 3, 4, 4), ["0", "2"])
    {'0': (5, 3, 4, 4), '2': (5, 16)}
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(mod, args, name=name):
            shapes.setdefault(name, tuple(args[0].shape))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(*_inputs(example_input))
    finally:
        for h in handles:
            h.remove()
    return {n: shapes[n] for n in names if n in shapes}


# -- input and output layers ---------------------------------------------------------------------
@dataclass(frozen=True)
class EndLayers:
    """A model's input layers (``first``) and output layers (``last``), and how they were found.

    ``method`` is ``"fx"`` (traced), ``"hooks"`` (one forward of an example input) or
    ``"order"`` (the first and last registered layers: neither worked); ``note`` says why.
    """

    first: tuple[str, ...]
    last: tuple[str, ...]
    method: str
    note: str | None = None


def end_layers(model: nn.Module, example_input: Any = None) -> EndLayers:
    """The conv/linear layers next to the model's inputs and outputs.

    ``last``: every conv/linear layer whose output reaches a model output without passing
    through another conv/linear layer; ``first``: every one fed by a model input without
    another in between. With ``example_input`` (a tensor, or a tuple of positional inputs) one
    forward with hooks finds them (the model runs in eval mode, no state changes); otherwise,
    or when that fails, ``torch.fx`` traces the model; when both fail (data-dependent control
    flow without an example), they are the first and last registered layers and ``note`` says
    so. Registered layer types (:func:`register_layer_type`, e.g. compressed layers) count as
    conv/linear layers. Names are first names (see :func:`layer_aliases`), in module order.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class TwoHeads(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.trunk, self.cls, self.reg = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 1)
    ...     def forward(self, x):
    ...         h = self.trunk(x).relu()
    ...         return self.cls(h), self.reg(h)
    >>> ends = end_layers(TwoHeads())
    >>> ends.first, ends.last, ends.method
    (('trunk',), ('cls', 'reg'), 'fx')
    """
    order = list(_first_names(model).values())
    failed = None  # why the forward with hooks failed
    if example_input is not None:
        try:
            first, last = _hook_ends(model, example_input)
            return EndLayers(_ordered(first, order), _ordered(last, order), "hooks")
        except Exception as err:  # any failure: fall back to tracing
            failed = f"the forward with hooks failed ({type(err).__name__}: {err})"
    try:
        first, last = _fx_ends(model)
        note = None if failed is None else failed + "; found by torch.fx"
        return EndLayers(_ordered(first, order), _ordered(last, order), "fx", note)
    except Exception as err:  # fx refuses many models
        untraced = f"torch.fx could not trace the model ({type(err).__name__})"
    note = (
        ("" if failed is None else failed + "; ")
        + untraced
        + ": 'first'/'last' are the first/last registered conv/linear layers"
        + ("" if example_input is not None else " (give example_input to find them by a forward)")
    )
    return EndLayers(tuple(order[:1]), tuple(order[-1:]), "order", note)


def _ordered(names: set[str], order: list[str]) -> tuple[str, ...]:
    return tuple(n for n in order if n in names)


def _first_names(model: nn.Module) -> dict[int, str]:
    """``id(module) -> first name`` of every conv/linear layer (any kind)."""
    out: dict[int, str] = {}
    for name, m in model.named_modules():
        if _is_layer(m):
            out.setdefault(id(m), name)
    return out


class _LayerTracer(torch.fx.Tracer):
    """A tracer that keeps conv/linear layers (registered ones too) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_layer(m) or super().is_leaf_module(m, qualname)


def _fx_ends(model: nn.Module) -> tuple[set[str], set[str]]:
    graph = _LayerTracer().trace(model)
    names = _first_names(model)
    layer_of = {}
    for node in graph.nodes:
        if node.op == "call_module":
            name = names.get(id(model.get_submodule(node.target)))
            if name is not None:
                layer_of[node] = name
    last: set[str] = set()
    outputs = [n for n in graph.nodes if n.op == "output"]
    _walk(outputs, lambda n: n.all_input_nodes, layer_of, last)
    first: set[str] = set()
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    _walk(inputs, lambda n: list(n.users), layer_of, first)
    return first, last


def _walk(start, step, stops: dict, found: set[str]) -> None:
    """Follow ``step`` from ``start``; record and stop at nodes in ``stops``."""
    seen = set()
    todo = [n for s in start for n in step(s)]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in stops:
            found.add(stops[node])
        else:
            todo.extend(step(node))


def _hook_ends(model: nn.Module, example_input: Any) -> tuple[set[str], set[str]]:
    """One forward in which every conv/linear output (and each input) starts a fresh graph.

    Each layer's output is replaced by a clone of a new leaf tensor, so walking the autograd
    graph back from a model output (or from a layer's input) ends at the leaves of the layers
    it comes from, or at the model inputs' leaves.
    """
    names = _first_names(model)
    # id(leaf) -> (layer name, or "" for a model input; the leaf, kept alive so ids stay unique)
    leaves: dict[int, tuple[str, torch.Tensor]] = {}
    first: set[str] = set()

    def fresh(t: torch.Tensor, tag: str) -> torch.Tensor:
        if not (isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())):
            return t
        leaf = t.detach().requires_grad_()
        leaves[id(leaf)] = (tag, leaf)
        return leaf.clone()

    def pre(args: Any, name: str) -> None:
        for t in torch.utils._pytree.tree_leaves(args):
            if "" in _sources(t, leaves):
                first.add(name)

    handles = []
    for m in model.modules():
        if id(m) in names:
            name = names[id(m)]
            handles.append(m.register_forward_pre_hook(lambda _, a, n=name: pre(a, n)))
            handles.append(m.register_forward_hook(lambda _, a, o, n=name: fresh(o, n)))
    try:
        with eval_mode(model), torch.enable_grad():
            out = model(*[fresh(a, "") for a in _inputs(example_input)])
    finally:
        for h in handles:
            h.remove()
    last: set[str] = set()
    for t in torch.utils._pytree.tree_leaves(out):
        last |= _sources(t, leaves) - {""}
    if names and not last:
        raise RuntimeError("no layer output reaches a model output through autograd")
    return first, last


def _sources(t: Any, leaves: dict[int, tuple[str, torch.Tensor]]) -> set[str]:
    """Tags of the tagged leaves the autograd graph of ``t`` reaches."""
    if not isinstance(t, torch.Tensor):
        return set()
    found = set()
    todo = [t.grad_fn]
    seen = set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) in leaves:
                found.add(leaves[id(variable)][0])
            continue
        todo.extend(fn for fn, _ in node.next_functions)
    return found


# -- choosing layers -----------------------------------------------------------------------------
def select_layers(
    model: nn.Module,
    layers: Selector = None,
    skip: Sequence[str] = (),
    *,
    strict: bool = True,
    refuse: Refusal | None = None,
    example_input: Any = None,
) -> list[str]:
    """Names of the conv and linear layers of ``model`` chosen by ``layers`` minus ``skip``.

    Parameters
    ----------
    layers : str, sequence of str, callable or None
        A pattern (glob or regex on the whole name), explicit names, or a predicate
        ``(name, module) -> bool``; ``None`` takes every layer.
    skip : sequence of str
        ``"first"``/``"last"`` (the model's input/output layers, see :func:`end_layers`) and/or
        patterns to leave out; a pattern that matches no conv/linear layer raises
        :class:`NoMatchingLayer` naming the layers.
    strict : bool
        Raise :class:`NoMatchingLayer` when nothing is chosen, and ValueError when an explicitly
        named or matched layer is refused by ``refuse``.
    refuse : callable, optional
        ``module -> reason or None``: why a layer cannot be a candidate (e.g. what
        :mod:`tensornet.nn` cannot compress). With ``layers=None`` refused layers are simply
        not candidates. ``None``: every conv/linear layer is a candidate.
    example_input : tensor or tuple, optional
        Finds ``"first"``/``"last"`` by one forward (see :func:`end_layers`).

    Returns
    -------
    list of str
        First names (see :func:`layer_aliases`) in module order.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.Flatten(), nn.Linear(8, 2))
    >>> select_layers(net, ["2"]), select_layers(net, lambda name, m: m.weight.ndim == 4)
    (['2'], ['0'])
    """
    chosen, notes = select_with_notes(model, layers, skip, strict, refuse, example_input)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return chosen


def shown_names(names: Sequence[str]) -> str:
    """At most 12 names, comma-separated, with the total when some are left out."""
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def _chosen(
    aliases: dict[str, tuple[str, ...]],
    modules: dict[str, nn.Module],
    layers: Selector,
    refuse: Refusal | None,
) -> list[str]:
    """The layers ``layers`` picks (before ``skip``); ``None`` leaves refused ones out."""
    names = list(aliases)
    if layers is None:
        return [n for n in names if refuse is None or refuse(modules[n]) is None]
    if isinstance(layers, str):
        return [n for n in names if any(matches(a, layers) for a in aliases[n])]
    if callable(layers):
        return [n for n in names if any(layers(a, modules[n]) for a in aliases[n])]
    known = {a for group in aliases.values() for a in group}
    missing = [n for n in layers if n not in known]
    if missing:
        raise NoMatchingLayer(f"layers {missing} are not conv/linear layers; found {names}")
    return [n for n in names if set(layers) & set(aliases[n])]


def _skipped(
    model: nn.Module,
    aliases: dict[str, tuple[str, ...]],
    skip: Sequence[str],
    example_input: Any,
) -> tuple[set[str], list[str]]:
    """The layers ``skip`` leaves out, and notes on how ``"first"``/``"last"`` were found."""
    drop: set[str] = set()
    wanted = any(entry in ("first", "last") for entry in skip)
    ends = end_layers(model, example_input) if wanted else None
    notes = [ends.note] if ends is not None and ends.note else []
    for entry in skip:
        if entry in ("first", "last"):
            drop.update(ends.first if entry == "first" else ends.last)
            continue
        hits = [n for n, group in aliases.items() if any(matches(a, entry) for a in group)]
        if not hits:
            raise NoMatchingLayer(
                f"skip entry {entry!r} matches no conv/linear layer; layers are: "
                f"{shown_names(list(aliases))}"
            )
        drop.update(hits)
    return drop, notes


def select_with_notes(
    model: nn.Module,
    layers: Selector,
    skip: Sequence[str],
    strict: bool,
    refuse: Refusal | None,
    example_input: Any,
    transposed: bool = False,
) -> tuple[list[str], list[str]]:
    """:func:`select_layers` and its notes (how ``"first"``/``"last"`` were found).

    Returns the chosen names and notes (one line each) for a report; ``compress`` prints them
    in its report where ``select_layers`` warns. ``transposed``: see :func:`layer_aliases`.
    """
    if isinstance(skip, str):
        skip = (skip,)
    aliases = layer_aliases(model, transposed=transposed)
    modules = {n: model.get_submodule(n) for n in aliases}
    chosen = _chosen(aliases, modules, layers, refuse)
    if strict and layers is not None and refuse is not None:
        for n in chosen:
            reason = refuse(modules[n])
            if reason:
                raise ValueError(f"layer {n!r} cannot be compressed: {reason}")
    drop, notes = _skipped(model, aliases, skip, example_input)
    chosen = [n for n in chosen if n not in drop]
    if strict and not chosen:
        raise NoMatchingLayer(
            f"no conv/linear layer matches {layers!r} (skip={tuple(skip)}); layers are: "
            f"{shown_names(list(aliases))}"
        )
    return chosen, notes
