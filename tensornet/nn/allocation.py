"""The result of :func:`~tensornet.nn.allocate.allocate`: per-layer choices and their totals.

Examples
--------
>>> c = LayerChoice("conv", "grouped", (4,), 2, 120, None, 0.1, 576)
>>> c.label, c.options
('grouped[k=2]', {'channel_groups': 2})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .alloc_candidates import Candidate

__all__ = ["Allocation", "LayerChoice"]


@dataclass(frozen=True)
class LayerChoice:
    """The format and ranks chosen for one layer, with its cost and errors.

    ``error`` is the error the allocation minimised (``spectral_error`` for ``error="true"``,
    the ALDS proxy for ``"proxy"``; for ``auto`` the relative Frobenius error of the kernel, or
    what its ``errors`` function returned); ``spectral_error`` and ``frobenius_error`` are the
    true relative errors of the chosen approximation (0 for a dense choice). ``flops``,
    ``seconds`` and ``plan`` describe the forward plan the layer runs for the allocation's
    example input (``None`` without one). ``format_options`` (``auto``) are the format's
    options as ``(name, value)`` pairs, e.g. TT's ``order``; :attr:`options` gives them as a
    dict, as ``compress`` passes them.
    """

    name: str
    format: str  # "grouped" or "dense"; auto: any format of its candidates
    ranks: tuple[int, ...]
    groups: int
    params: int
    flops: int | None
    error: float
    dense_params: int
    spectral_error: float = 0.0
    frobenius_error: float = 0.0
    seconds: float | None = None
    plan: str | None = None
    dense_flops: int | None = None
    dense_seconds: float | None = None
    format_options: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """The options that, with shape, legs and ranks, rebuild the structure."""
        if self.format_options:
            return dict(self.format_options)
        return {"channel_groups": self.groups} if self.format == "grouped" else {}

    @property
    def label(self) -> str:
        """The format with its options: ``"tt[in,kh,kw,out]"``, ``"grouped[k=4]"``, ``"svd"``."""
        if self.format == "grouped":
            return f"grouped[k={self.groups}]"
        order = self.options.get("order")
        return f"{self.format}[{','.join(order)}]" if order else self.format


@dataclass
class Allocation:
    """Per-layer choices of a global allocation, and the totals it reaches.

    ``budget`` is absolute, in the allocation's measure (parameters, FLOPs or seconds).
    ``auto`` also fills ``objective`` (``"sum"`` or ``"max"``), ``score`` (the objective's
    value: ``sum w e^2`` or the largest error), ``bound`` (a lower bound of the optimum; see
    :attr:`gap`) and ``frontiers``: per layer the candidates it chose from
    (:class:`~tensornet.nn.alloc_candidates.Candidate`, cheapest first, ``cost`` in the
    measure), drawn by :func:`tensornet.plot_alloc.allocation_frontiers`, and ``dense``: per
    layer the dense layer as a candidate in the same measure.
    """

    method: str
    measure: str
    budget: float
    layers: dict[str, LayerChoice]
    total_params: int
    total_flops: int | None
    model_params: int
    model_flops: int | None
    history: list[float] = field(default_factory=list)
    error: str = "true"
    total_seconds: float | None = None
    model_seconds: float | None = None
    objective: str | None = None
    frontiers: dict[str, tuple[Candidate, ...]] = field(default_factory=dict)
    score: float | None = None
    bound: float | None = None
    dense: dict[str, Candidate] = field(default_factory=dict)

    @property
    def gap(self) -> float | None:
        """``auto``: the objective's value less a lower bound of its optimum (0: optimal)."""
        if self.score is None or self.bound is None:
            return None
        return max(self.score - self.bound, 0.0)

    @property
    def max_error(self) -> float:
        """The largest layer error in the allocation's objective (see :class:`LayerChoice`)."""
        return max(c.error for c in self.layers.values())

    @property
    def max_spectral_error(self) -> float:
        """The largest true relative spectral error of a layer."""
        return max(c.spectral_error for c in self.layers.values())

    @property
    def max_frobenius_error(self) -> float:
        """The largest true relative Frobenius error of a layer."""
        return max(c.frobenius_error for c in self.layers.values())

    @property
    def total(self) -> float:
        """The allocation's total in its measure (parameters, FLOPs or seconds)."""
        if self.measure == "params":
            return self.total_params
        if self.measure == "flops":
            return int(self.total_flops or 0)
        return float(self.total_seconds or 0.0)

    def __str__(self) -> str:
        timed = self.total_flops is not None
        auto = self.method == "auto"
        head = (
            f"{'layer':<24} "
            + (f"{'format':<20} {'ranks':<14}" if auto else f"{'k':>3} {'j':>5}")
            + f" {'params':>10}"
        )
        if timed:
            head += f" {'MFLOP':>9} {'ms':>8} {'plan':<12}"
        lines = [head + f" {'spectral':>8} {'frob':>8}"]
        for c in self.layers.values():
            j = c.ranks[0] if c.ranks else "-"
            ranks = ",".join(map(str, c.ranks)) or "-"
            row = (
                f"{c.name:<24} "
                + (f"{c.label[:20]:<20} {ranks[:14]:<14}" if auto else f"{c.groups:>3} {j:>5}")
                + f" {c.params:>10,}"
            )
            if timed:
                plan = (c.plan or "-")[:12]
                row += f" {c.flops / 1e6:>9.2f} {c.seconds * 1e3:>8.3f} {plan:<12}"
            lines.append(row + f" {c.spectral_error:>8.4f} {c.frobenius_error:>8.4f}")
        if self.measure == "time":
            total, budget = f"{self.total * 1e3:.3f} ms", f"{self.budget * 1e3:.3f} ms"
        else:
            total, budget = f"{self.total:,}", f"{self.budget:,.0f}"
        how = f"objective={self.objective}" if auto else f"error={self.error}"
        lines.append(
            f"{self.method} ({self.measure}, {how}): total {total} of budget "
            f"{budget}; max error {self.max_error:.4f} (true spectral "
            f"{self.max_spectral_error:.4f}, Frobenius {self.max_frobenius_error:.4f})"
            + (f"; objective {self.score:.4g}, gap {self.gap:.3g}" if auto else "")
        )
        return "\n".join(lines)
