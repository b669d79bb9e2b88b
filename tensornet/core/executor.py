"""Run a pairwise contraction path as matrix products whose memory layouts are planned ahead.

Every step of a network contraction joins two tensors over the legs they share. ``torch.mm``
multiplies two matrices without copying either when each is a contiguous block of memory,
read straight or transposed. An operand can be read as such a matrix when the legs it sums over
form one block at the start or at the end of its memory order; otherwise it must be copied into
that shape first. For a step that joins a large intermediate with a small tensor, that copy costs
as much as the product itself, so a path with few FLOPs can run slower than one with more (the
memory-bound steps of a hyper-optimized PEPS path).

:class:`Contraction` therefore decides, once per structure and shapes, for every step:

- which operand is the left factor (the result's legs are the left factor's free legs, then the
  right factor's),
- whether an operand is read in place (straight or transposed) or copied, and in which leg order
  a copy is written, looking one step ahead so that the result's legs summed at its next step end
  up in one block at one end.

The plan is compiled into straight-line Python (``Contraction.source``), so a call runs
``reshape``/``permute``/``mm`` and nothing else. Intermediates are freed as soon as they are
used. Legs of dimension 1 never force a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Contraction", "linear_to_pairs"]


def linear_to_pairs(n_inputs: int, path: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Turn an opt_einsum (linear) path into pairwise steps on single-assignment ids.

    Ids ``0 .. n_inputs-1`` are the inputs, and the ``k``-th pair produces id ``n_inputs + k``.
    Steps naming one operand are no-ops; steps naming more than two are folded left to right.
    Raises ValueError naming the step at fault when a step names no tensor, a position twice or
    a position beyond the tensors left at that point, and when the path leaves several tensors.
    """
    steps = tuple(tuple(int(p) for p in step) for step in path)
    live = list(range(n_inputs))
    pairs: list[tuple[int, ...]] = []
    next_id = n_inputs
    for number, step in enumerate(steps):
        bad = [p for p in step if not 0 <= p < len(live)]
        if not step or bad or len(set(step)) != len(step):
            why = (
                "names no tensor" if not step
                else f"names position {bad[0]}, but only {len(live)} tensors are left"
                if bad else "names a position twice"
            )  # fmt: skip
            raise ValueError(f"path step {number} {step} {why}; path {steps}")
        taken = [live.pop(p) for p in sorted(step, reverse=True)]
        current = taken[0]
        for other in taken[1:]:
            pairs.append((current, other))
            current = next_id
            next_id += 1
        live.append(current)
    if len(live) != 1:
        raise ValueError(
            f"path {steps} leaves {len(live)} tensors of {n_inputs}, not one; "
            "each step must contract tensors until one is left"
        )
    return pairs


# A summed block in the middle of an operand is read in place by a batched product when the
# legs after it hold at least this many elements (below that, copying is faster; measured).
MIN_BATCH_INNER = 16
# ... and, when the other factor has more than MAX_BATCH_ROWS rows, at least this many.
MAX_BATCH_ROWS = 64
MIN_BATCH_INNER_WIDE = 256


def _block(layout: tuple[str, ...], block: frozenset[str], dims: dict[str, int]) -> Any:
    """Where ``block`` sits in ``layout`` (both without legs of dimension 1).

    'tail' or 'head' when it is one contiguous run at that end; ``(i, j)`` when it is the run
    ``layout[i:j]`` in the middle with at least ``MIN_BATCH_INNER`` elements after it; else None.
    """
    k = len(block)
    if k == 0 or k == len(layout):
        return "tail"
    if frozenset(layout[-k:]) == block:
        return "tail"
    if frozenset(layout[:k]) == block:
        return "head"
    positions = [i for i, leg in enumerate(layout) if leg in block]
    i, j = positions[0], positions[-1] + 1
    if j - i == k and math.prod(dims[leg] for leg in layout[j:]) >= MIN_BATCH_INNER:
        return (i, j)
    return None


class Contraction:
    """A compiled contraction: matrix products along a planned path, with planned layouts.

    Parameters
    ----------
    inputs : sequence of tuple of str
        Leg names of each operand (in the order of the operands' dimensions).
    path : sequence of tuple of int
        Pairwise order in opt_einsum's (linear) format.
    output : tuple of str
        Leg names of the result, in order.
    shapes : sequence of tuple of int, optional
        Shapes of the operands. Without them the program is compiled at the first call and
        recompiled whenever the shapes change.

    Every leg must be on one or two operands; legs on two are summed, legs on one are kept and
    must all be listed in ``output`` (a tensor network's contraction).

    Examples
    --------
    >>> import torch
    >>> c = Contraction([("i", "j"), ("j", "k")], [(0, 1)], ("k", "i"), shapes=[(2, 3), (3, 4)])
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> c(a, b).shape
    torch.Size([4, 2])
    >>> print(c.source.splitlines()[1].strip())  # (k, i) = B^T A^T: no copy, no permute
    t2 = mm(t1.reshape(3, 4).T, t0.reshape(2, 3).T)
    """

    __slots__ = ("inputs", "path", "output", "shapes", "source", "copied", "_run", "_lazy")

    def __init__(
        self,
        inputs: Sequence[tuple[str, ...]],
        path: Sequence[tuple[int, ...]],
        output: tuple[str, ...],
        shapes: Sequence[tuple[int, ...]] | None = None,
    ) -> None:
        self.inputs = tuple(tuple(x) for x in inputs)
        self.path = tuple(tuple(int(i) for i in step) for step in path)
        self.output = tuple(output)
        self._lazy: dict[tuple, tuple[Any, str, int]] = {}
        pairs = linear_to_pairs(len(self.inputs), self.path)  # validates the path now
        if shapes is None:
            self.shapes = None
            self.source = ""
            self.copied = 0
            self._run = None
        else:
            self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
            self._run, self.source, self.copied = _compile(
                self.inputs, self.shapes, pairs, self.output
            )

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the compiled steps on ``tensors`` (in the planned order and shapes)."""
        run = self._run
        if run is None:
            shapes = tuple(tuple(t.shape) for t in tensors)
            hit = self._lazy.get(shapes)
            if hit is None:
                pairs = linear_to_pairs(len(self.inputs), self.path)
                hit = _compile(self.inputs, shapes, pairs, self.output)
                self._lazy[shapes] = hit
            run = hit[0]
        return run(*tensors)

    def __repr__(self) -> str:
        return (
            f"Contraction({len(self.inputs)} tensors, {len(self.path)} steps, "
            f"-> {self.output}, copies {self.copied:,} elements per call)"
        )


def _compile(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    pairs: list[tuple[int, ...]],
    output: tuple[str, ...],
) -> tuple[Any, str, int]:
    """Plan layouts for every step and generate the straight-line program.

    Returns the function, its source, and the number of elements copied per call.
    """
    n = len(inputs)
    if len(shapes) != n:
        raise ValueError(f"{len(shapes)} shapes for {n} operands")
    dims: dict[str, int] = {}
    for legs, shape in zip(inputs, shapes):
        if len(legs) != len(shape):
            raise ValueError(f"operand with legs {legs} has shape {shape}")
        for leg, d in zip(legs, shape):
            if dims.setdefault(leg, d) != d:
                raise ValueError(f"leg {leg!r} has dimensions {dims[leg]} and {d}")

    # leg sets of every id; the legs each id sums where it is consumed; when each leg is summed
    sets: list[frozenset[str]] = [frozenset(x) for x in inputs]
    summed_next: dict[int, frozenset[str]] = {}
    death: dict[str, int] = dict.fromkeys(output, len(pairs))
    for k, (a, b) in enumerate(pairs):
        shared = sets[a] & sets[b]
        summed_next[a] = summed_next[b] = shared
        death.update(dict.fromkeys(shared, k))
        sets.append(sets[a] ^ sets[b])
    final = n + len(pairs) - 1 if pairs else 0
    if set(output) != set(sets[final]) or len(output) != len(sets[final]):
        raise ValueError(
            f"output {output} does not match the legs left after the path {tuple(sets[final])}"
        )
    planner = _Planner(dims, death, output, sets, pairs, n)
    layout: dict[int, tuple[str, ...]] = {i: inputs[i] for i in range(n)}
    lines: list[str] = []
    copied = 0
    for k, (a, b) in enumerate(pairs):
        r = n + k
        choice = planner.step(r, layout[a], layout[b], sets[a] & sets[b], summed_next.get(r))
        copied += choice.copied
        layout[r] = choice.result
        names = {"a": (a, layout[a]), "b": (b, layout[b])}
        lines.append(f"t{r} = {choice.source(names, n, dims)}")
        dead = [f"t{x}" for x in (a, b) if x >= n]
        if dead:
            lines.append("del " + ", ".join(dead))

    last = layout[final]
    out_shape = tuple(dims[x] for x in output)
    if planner.big(last) == planner.big(output):
        if final < n and last == output:
            ret = f"t{final}"
        else:
            ret = f"t{final}.reshape({out_shape!r})"
    else:
        nd = tuple(dims[x] for x in last)
        perm = tuple(last.index(x) for x in output)
        ret = f"t{final}.reshape({nd!r}).permute({perm!r})"
    args = ", ".join(f"t{i}" for i in range(n))
    body = "\n".join(["    " + line for line in lines] + [f"    return {ret}"])
    source = f"def run({args}):\n{body}\n"
    namespace: dict[str, Any] = {"mm": torch.mm, "bmm": torch.bmm}
    exec(compile(source, "<tensornet contraction>", "exec"), namespace)
    return namespace["run"], source, copied


class _Form:
    """How one operand enters a product: read in place or copied, and in which leg order."""

    __slots__ = ("copy", "free", "summed", "pre", "post")

    def __init__(
        self,
        copy: bool,
        free: tuple[str, ...],
        summed: tuple[str, ...] | None,
        pre: tuple[str, ...] = (),
        post: tuple[str, ...] = (),
    ) -> None:
        self.copy = copy  # written into a new buffer in the order (free, summed) / (summed, free)
        self.free = free  # the free legs in the order they reach the result
        self.summed = summed  # in-place order of the summed legs; None: the copy takes any
        self.pre, self.post = pre, post  # batched form: legs before / after the summed block


class _Choice:
    """The plan of one step: a matrix product, or a batched product over leading legs."""

    __slots__ = ("left", "right", "batched", "summed", "result", "copied")

    def __init__(self, left, right, batched, summed, result, copied) -> None:
        self.left, self.right = left, right  # (("a"|"b"), _Form)
        self.batched = batched
        self.summed = summed
        self.result = result
        self.copied = copied

    def source(self, names: dict, n_inputs: int, dims: dict[str, int]) -> str:
        lname, lform = self.left
        rname, rform = self.right
        lx, llay = names[lname]
        rx, rlay = names[rname]
        left = _matrix(lx, llay, lform, self.summed, True, n_inputs, dims)
        if not self.batched:
            right = _matrix(rx, rlay, rform, self.summed, False, n_inputs, dims)
            return f"mm({left}, {right})"
        p = math.prod(dims[leg] for leg in rform.pre)
        q = math.prod(dims[leg] for leg in rform.post)
        k = math.prod(dims[leg] for leg in self.summed)
        m = math.prod(dims[leg] for leg in lform.free)
        return f"bmm({left}.expand({p}, {m}, {k}), t{rx}.reshape({p}, {k}, {q}))"


class _Planner:
    """Chooses the forms of both operands of each step (see the module docstring).

    A candidate's cost is the elements it copies now plus the elements that later steps along
    the result's chain of consumers would copy, simulated a few steps ahead: each later step
    replaces its summed legs by its partner's free legs where they stood, and a step whose
    summed legs are not one readable block copies the tensor, sorted by when legs are summed.
    """

    LOOKAHEAD = 3

    def __init__(
        self,
        dims: dict[str, int],
        death: dict[str, int],
        output: tuple[str, ...],
        sets: list[frozenset[str]],
        pairs: list[tuple[int, ...]],
        n_inputs: int,
    ) -> None:
        self.dims = dims
        self.death = death
        self.output = output
        self.out_big = self.big(output)
        self.sets = sets
        self.consumer: dict[int, tuple[int, int]] = {}
        for k, (a, b) in enumerate(pairs):
            self.consumer[a] = (n_inputs + k, b)
            self.consumer[b] = (n_inputs + k, a)
        self.sizes = [self.size(x) for x in sets]

    def big(self, legs: Sequence[str]) -> tuple[str, ...]:
        return tuple(x for x in legs if self.dims[x] != 1)

    def size(self, legs: Sequence[str]) -> int:
        return math.prod(self.dims[x] for x in legs)

    def by_death(self, legs: Sequence[str], reverse: bool = False) -> tuple[str, ...]:
        return tuple(sorted(legs, key=self.death.__getitem__, reverse=reverse))

    def forms(self, lay: tuple[str, ...], shared: frozenset[str], final: bool) -> list[_Form]:
        """Matrix forms of an operand: in place when its summed legs end a block, and copies."""
        free = tuple(leg for leg in lay if leg not in shared)
        out = []
        if _block(self.big(lay), frozenset(self.big(shared)), self.dims) in ("head", "tail"):
            out.append(_Form(False, free, tuple(leg for leg in lay if leg in shared)))
        orders = {free}
        if len(free) > 1:
            orders.add(self.by_death(free))
            orders.add(self.by_death(free, reverse=True))
            if final:
                orders.add(tuple(leg for leg in self.output if leg in free))
        out.extend(_Form(True, order, None) for order in sorted(orders))
        return out

    def penalty(self, result: tuple[str, ...], r: int) -> int:
        """Elements that the steps after ``r`` would copy, given ``r``'s layout ``result``."""
        nxt = self.consumer.get(r)
        if nxt is None:
            return 0 if self.big(result) == self.out_big else 1
        cur = self.big(result)
        cur_id = r
        cost = 0
        for _ in range(self.LOOKAHEAD):
            nxt = self.consumer.get(cur_id)
            if nxt is None:
                break
            r2, partner = nxt
            if self.sizes[partner] > self.sizes[cur_id]:
                break  # the partner carries the chain on; its layout is not known here
            summed = frozenset(self.big(self.sets[cur_id] & self.sets[partner]))
            where = _block(cur, summed, self.dims)
            if where is None:
                cost += self.sizes[cur_id]
                cur = self.by_death(cur, reverse=True)  # the legs summed next at the tail
                where = "tail"
            new = self.big(self.sets[partner] - self.sets[cur_id])
            if where == "tail":
                cur = tuple(x for x in cur if x not in summed) + self.by_death(new, True)
            elif where == "head":
                cur = self.by_death(new) + tuple(x for x in cur if x not in summed)
            else:
                i, j = where
                cur = cur[:i] + self.by_death(new) + cur[j:]
            cur_id = r2
        return cost

    def step(
        self,
        r: int,
        lay_a: tuple[str, ...],
        lay_b: tuple[str, ...],
        shared: frozenset[str],
        nxt: frozenset[str] | None,
    ) -> _Choice:
        size_a, size_b = self.size(lay_a), self.size(lay_b)
        final = nxt is None
        forms_a = self.forms(lay_a, shared, final)
        forms_b = self.forms(lay_b, shared, final)
        penalties: dict[tuple[str, ...], int] = {}

        def penalty(result: tuple[str, ...]) -> int:
            value = penalties.get(result)
            if value is None:
                value = penalties[result] = self.penalty(result, r)
            return value

        best: tuple | None = None
        for fa in forms_a:
            for fb in forms_b:
                if fa.summed is not None and fb.summed is not None:
                    if self.big(fa.summed) != self.big(fb.summed):
                        continue  # both in place, but the summed legs are in different orders
                cost = (size_a if fa.copy else 0) + (size_b if fb.copy else 0)
                if best is not None and cost > best[0][0]:
                    continue
                for swap in (False, True):
                    result = fb.free + fa.free if swap else fa.free + fb.free
                    key = (cost + penalty(result), cost, swap)
                    if best is None or key < best[0]:
                        left, right = (("b", fb), ("a", fa)) if swap else (("a", fa), ("b", fb))
                        summed = fa.summed or fb.summed
                        if summed is None:
                            summed = tuple(leg for leg in lay_a if leg in shared)
                        best = (key, _Choice(left, right, False, summed, result, cost))
                        if key[0] == 0:
                            return best[1]
        # batched: one operand keeps its summed legs in the middle, read in place
        for big_name, lay, other_name, other_lay, other_size in (
            ("a", lay_a, "b", lay_b, size_b),
            ("b", lay_b, "a", lay_a, size_a),
        ):
            big_lay = self.big(lay)
            where = _block(big_lay, frozenset(self.big(shared)), self.dims)
            if not isinstance(where, tuple):
                continue
            hi = lay.index(big_lay[where[1] - 1]) + 1
            # legs of dimension 1 may sit anywhere: free ones inside the block join `pre`
            pre = tuple(leg for leg in lay[:hi] if leg not in shared)
            post = tuple(leg for leg in lay[hi:] if leg not in shared)
            summed = tuple(leg for leg in lay if leg in shared)
            inner = _Form(False, (), summed, pre, post)
            rows = self.size(other_lay) // max(self.size(summed), 1)
            if rows > MAX_BATCH_ROWS and self.size(post) < MIN_BATCH_INNER_WIDE:
                continue  # many narrow products with a wide left factor: copying is faster
            for fo in self.forms(other_lay, shared, final):
                if fo.summed is not None and self.big(fo.summed) != self.big(summed):
                    continue
                cost = other_size if fo.copy else 0
                result = pre + fo.free + post
                key = (cost + penalty(result), cost, True)
                if best is None or key < best[0]:
                    choice = _Choice(
                        (other_name, fo), (big_name, inner), True, summed, result, cost
                    )
                    best = (key, choice)
        assert best is not None
        return best[1]


def _matrix(
    x: int,
    lay: tuple[str, ...],
    form: _Form,
    summed: tuple[str, ...],
    left: bool,
    n_inputs: int,
    dims: dict[str, int],
) -> str:
    """Source for operand ``x`` as the left (free x summed) or right (summed x free) factor."""
    free = form.free
    f = math.prod(dims[leg] for leg in free)
    s = math.prod(dims[leg] for leg in summed)
    rows, cols = (f, s) if left else (s, f)
    name = f"t{x}"
    if form.copy:
        order = free + summed if left else summed + free
        perm = tuple(lay.index(leg) for leg in order)
        nd = tuple(dims[leg] for leg in lay)
        src = name if x < n_inputs else f"{name}.reshape({nd!r})"
        if perm == tuple(range(len(perm))):
            return f"{src}.reshape({rows}, {cols})"
        return f"{src}.permute({perm!r}).reshape({rows}, {cols})"
    # read in place: the summed legs are one block at the head or the tail of ``lay``
    big_lay = tuple(leg for leg in lay if dims[leg] != 1)
    big_sum = frozenset(leg for leg in summed if dims[leg] != 1)
    where = _block(big_lay, big_sum, dims)
    if where == "head" and len(big_sum) != len(big_lay):
        stored, transpose = (s, f), left  # memory holds (summed, free)
    else:
        stored, transpose = (f, s), not left  # memory holds (free, summed)
    return f"{name}.reshape({stored[0]}, {stored[1]})" + (".T" if transpose else "")
