r"""Data-aware decompositions: kernels factored in the metric of their layer's inputs.

A layer's output on inputs ``X`` (rows: a linear layer's input features, or a conv's unfolded
``in * kh * kw`` patches) is ``X W^T``. Compressing ``W`` to ``W'`` changes it by
``X (W - W')^T``, whose size is ``tr(D C D^T)`` with ``D = W - W'`` and ``C = X^T X``: the
inputs enter only through ``C``, so a few batches give every layer's output error and let the
decomposition minimise it instead of the weight error ``||W - W'||``.

- :func:`~tensornet.nn.covariance.input_covariances`: ``C`` (float64) and the number of rows
  for each chosen layer, from a few batches run through the model in eval mode.
- :func:`output_error`: ``||X (W - W')^T||_F / ||X W^T||_F`` from ``C``, without the data;
  :func:`whitened_spectrum`: the whitened svd's output error at every rank from one SVD.
- :func:`whitened_format`: the decomposition of a kernel that minimises that error (svd and
  tucker2); an ordinary :class:`~tensornet.formats.Format`, so layers, save/load and spectra
  work unchanged. :func:`compress_layer_whitened`: the same as a compressed layer;
  ``compress(model, ..., data=batches)`` does it for every layer, in turn, each layer fitted
  to the dense outputs from the inputs the layers compressed before give it
  (:func:`~tensornet.nn.covariance.fit_sequentially`).

What is done per format (``C = L L^T`` with ``L`` the Cholesky factor of ``C`` plus a
ridge ``ridge * tr(C) / d`` times the identity, so that directions the data never excites stay
well defined and are kept as the plain decomposition keeps them):

- ``"svd"`` (cut ``out | in kh kw``): ``W' = trunc_r(W L) L^{-1}``, the exact minimiser of the
  output error at rank ``r`` (Eckart-Young in the whitened coordinates); with ``ridge=0`` and
  ``C`` of full rank, exactly the optimum on the calibration data.
- ``"tucker2"``: the in factor ``V`` starts as the plain Tucker-2's; given ``V`` the out factor
  and core are the exact minimisers (the best rank-``r_out`` approximation of ``W L`` restricted
  to the span of ``(V kron I) ^T L``); then ``sweeps`` alternating sweeps: ``V`` by the exact
  linear least-squares solve with the out factor and core fixed, then out factor and core again.
  Every step lowers the error, so the result is never worse than the plain Tucker-2 (sweeps are
  skipped when ``in * r_in`` exceeds :data:`MAX_SWEEP_UNKNOWNS`).
- every other format (and svd / tucker2 with other cuts or modes): the plain decomposition;
  :func:`output_error` still gives its output error.

Whatever the format, the result's output error on the calibration data is never above the plain
decomposition's: should the ridge make the whitened one worse (by at most the ridge's size), the
plain one is returned. Ranks are the plain decomposition's (``ranks``, ``fraction``, or what
``trunc`` keeps of the kernel's spectrum). With a covariance that pairs the layer's inputs ``X``
with the dense model's ``X0`` (``cross``, ``target``), the kernel factored is
``W* = W K^T C^{-1}`` (``K = X^T X0``), the least-squares fit of ``X0 W^T`` from ``X``: by
Pythagoras the best rank-``r`` fit of the dense outputs is then the whitened svd of ``W*``.

Examples
--------
>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
>>> covs = input_covariances(net, torch.randn(16, 3, 8, 8) @ torch.randn(8, 8))
>>> covs["2"].matrix.shape, covs["2"].rows
(torch.Size([72, 72]), 576)
>>> w = net[2].weight.detach()
>>> from tensornet.formats import get_format
>>> plain = get_format("svd").from_dense(w, ranks=4, legs=("out", "in", "kh", "kw"))
>>> white = whitened_format(w, "svd", covs["2"], ranks=4)
>>> output_error(w, white, covs["2"]) < output_error(w, plain, covs["2"])
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..core.truncation import Truncation
from ..formats import Format, get_format
from ..weights import kernel_legs
from .covariance import MAX_FEATURES, InputCovariance, input_covariances, layer_rows
from .layers import TNConv2d, TNLayer, TNLinear

__all__ = [
    "DEFAULT_RIDGE",
    "MAX_FEATURES",
    "MAX_SWEEP_UNKNOWNS",
    "WHITENED_FORMATS",
    "InputCovariance",
    "Metric",
    "compress_layer_whitened",
    "input_covariances",
    "layer_rows",
    "output_error",
    "whitened_format",
    "whitened_spectrum",
]

#: The formats factored in the input metric (the others are decomposed plainly).
WHITENED_FORMATS = ("svd", "tucker2")
#: The ridge added to ``C``, relative to its mean eigenvalue ``tr(C) / d``.
DEFAULT_RIDGE = 1e-4
#: Tucker-2's in-factor sweeps solve ``in * r_in`` unknowns at once; above this they are skipped.
MAX_SWEEP_UNKNOWNS = 2048


# -- errors in the input metric ---------------------------------------------------------------
def _matrix(value: Any, what: str) -> torch.Tensor:
    """A kernel given as a tensor, a Format, a conv/linear layer or a compressed layer."""
    if isinstance(value, Format):
        t = value.to_dense()
    elif isinstance(value, TNLayer):
        t = value.weight.detach()
    elif isinstance(value, (nn.Linear, nn.Conv2d)):
        t = value.weight.detach()
    elif isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        raise TypeError(
            f"{what} must be a tensor, a Format or a conv/linear layer, got {type(value).__name__}"
        )
    if t.ndim < 2:
        raise ValueError(f"{what} must have at least 2 dimensions, got {t.ndim}")
    return t.reshape(t.shape[0], -1).double()


def _cov(covariance: Any, d: int, what: str) -> torch.Tensor:
    c = covariance.matrix if isinstance(covariance, InputCovariance) else covariance
    if not isinstance(c, torch.Tensor):
        raise TypeError(
            f"{what}: covariance must be an InputCovariance or a tensor, "
            f"got {type(covariance).__name__}"
        )
    if tuple(c.shape) != (d, d):
        raise ValueError(
            f"{what}: covariance has shape {tuple(c.shape)}; the kernel needs ({d}, {d})"
        )
    return c.double()


def _pair(covariance: Any, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(cross, target)`` of a covariance that has them, on ``c``'s device, else ``None``."""
    if not isinstance(covariance, InputCovariance) or covariance.cross is None:
        return None
    target = covariance.target if covariance.target is not None else c
    return covariance.cross.to(c.device).double(), target.to(c.device).double()


def _energy(m: torch.Tensor, c: torch.Tensor) -> float:
    """``tr(M C M^T)``."""
    return float(((m @ c) * m).sum())


def output_error(layer_or_kernel: Any, approx: Any, covariance: Any) -> float:
    """Relative output error on the calibration data: ``||X (W - W')^T||_F / ||X W^T||_F``.

    Computed from the covariance as ``sqrt(tr(D C D^T) / tr(W C W^T))``, ``D = W - W'``,
    without the data. ``0.0`` when the data gives ``W`` no output and ``W'`` none either. With
    ``cross`` and ``target`` (inputs ``X`` of a partly compressed model, ``X0`` of the dense
    one): ``||X0 W^T - X W'^T||_F / ||X0 W^T||_F``.

    Parameters
    ----------
    layer_or_kernel, approx : tensor, Format or layer
        The kernel and its approximation (any of: a tensor, a Format, an ``nn.Conv2d`` /
        ``nn.Linear``, a compressed layer), the same shape.
    covariance : InputCovariance or tensor
        ``C = X^T X`` of the layer's input rows.

    Examples
    --------
    >>> import torch
    >>> x, w = torch.randn(20, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    >>> w2 = w.clone(); w2[0, 0] += 0.1
    >>> direct = float((x @ (w - w2).T).norm() / (x @ w.T).norm())
    >>> abs(output_error(w, w2, x.T @ x) - direct) < 1e-12
    True
    """
    w = _matrix(layer_or_kernel, "output_error: layer_or_kernel")
    return Metric(w, covariance, what="output_error").error(approx)


class Metric:
    """One layer's input metric: its kernel, ``C`` and what every error on it shares.

    :func:`output_error` against one kernel and covariance for many approximations, and the
    whitened decompositions of that kernel (:meth:`whitened`), compute the kernel's output
    energy, the Cholesky root of ``C`` and the fitted kernel once (values as computed afresh).

    Examples
    --------
    >>> import torch
    >>> x, w = torch.randn(20, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    >>> metric = Metric(w, x.T @ x)
    >>> metric.error(w * 0.9) == output_error(w, w * 0.9, x.T @ x)
    True
    """

    def __init__(
        self, kernel: Any, covariance: Any, ridge: float = DEFAULT_RIDGE, what: str = "Metric"
    ) -> None:
        self.w = _matrix(kernel, f"{what}: kernel")
        self.covariance, self.ridge, self.what = covariance, float(ridge), what
        self.c = _cov(covariance, self.w.shape[1], what).to(self.w.device)
        self.pair = _pair(covariance, self.c)
        target = self.c if self.pair is None else self.pair[1]
        self.total = _energy(self.w, target)
        self._roots: tuple | None = None
        self._fit: torch.Tensor | None = None

    def error(self, approx: Any) -> float:
        """``||X0 W^T - X W'^T||_F / ||X0 W^T||_F`` (``X0 = X`` without ``cross``)."""
        w, w2 = self.w, _matrix(approx, f"{self.what}: approx").to(self.w.device)
        if w.shape != w2.shape:
            raise ValueError(
                f"{self.what}: approx has shape {tuple(w2.shape)}, the kernel {tuple(w.shape)}"
            )
        if self.pair is None:
            lost = max(_energy(w - w2, self.c), 0.0)
        else:  # ||X0 W^T - X W'^T||^2 = tr(W T W^T) - 2 tr(W' K W^T) + tr(W' C W'^T)
            cross = self.pair[0]
            lost = max(self.total - 2 * float(((w2 @ cross) * w).sum()) + _energy(w2, self.c), 0.0)
        if self.total <= 0:
            return 0.0 if lost == 0 else math.inf
        return math.sqrt(lost / self.total)

    def roots(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`_roots` of ``C`` with the ridge (computed once)."""
        if self._roots is None:
            self._roots = (_roots(self.c, self.ridge, self.what),)  # type: ignore[assignment]
        return self._roots[0]  # type: ignore[index]

    def fit(self) -> torch.Tensor:
        """The kernel factored: ``W``, or ``W K^T C^{-1}`` with ``cross`` (computed once)."""
        if self._fit is None:
            pair, roots = self.pair, self.roots()
            self._fit = self.w
            if pair is not None and roots is not None:
                self._fit = torch.cholesky_solve(pair[0] @ self.w.T, roots[0]).T
        return self._fit

    def whitened(self, plain: Format, sweeps: int, dtype: torch.dtype) -> tuple[Format, float]:
        """:func:`_whiten` of ``plain`` without its weight error, and its output error."""
        plain_error = self.error(plain)
        if not _whitenable(plain) or self.roots() is None:
            return plain, plain_error
        roots, fit = self.roots(), self.fit()
        base = plain.to(self.w.device, torch.float64)
        if plain.structure.format == "svd":
            new = _svd_whitened(base, fit, roots)
        else:
            new = _tucker2_whitened(base, fit, roots, sweeps)
        new = new.to(self.w.device, dtype)
        error = self.error(new)
        return (plain, plain_error) if error > plain_error else (new, error)


def whitened_spectrum(kernel: Any, covariance: InputCovariance | torch.Tensor) -> torch.Tensor:
    """Singular values of ``W L`` (``C = L L^T``): the spectrum of the outputs ``X W^T``.

    The whitened svd at rank ``r`` has the output error ``||s[r:]|| / ||s||`` (exactly with
    ``ridge=0``; within the ridge's size otherwise), so one call prices every rank. With ``C``
    from the data these are the singular values of ``X W^T`` itself (a covariance's ``cross``
    and ``target`` are not used).

    Parameters
    ----------
    kernel : tensor, Format or layer
        ``(out, ...)``; the cut is ``out | rest``.
    covariance : InputCovariance or tensor

    Examples
    --------
    >>> import torch
    >>> x, w = torch.randn(30, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    >>> s = whitened_spectrum(w, x.T @ x)
    >>> bool(torch.allclose(s, torch.linalg.svdvals(x @ w.T)))
    True
    """
    w = _matrix(kernel, "whitened_spectrum: kernel")
    c = _cov(covariance, w.shape[1], "whitened_spectrum").to(w.device)
    energies = torch.linalg.eigvalsh(w @ ((c + c.T) / 2) @ w.T)  # s^2: eigenvalues of W C W^T
    return energies.clamp(min=0).sqrt().flip(0)[: min(w.shape)]


# -- whitened decompositions ------------------------------------------------------------------
def _roots(c: torch.Tensor, ridge: float, what: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``L`` (lower Cholesky factor) and ``C + ridge tr(C)/d I = L L^T`` (``None`` when C=0).

    Any ``L`` with ``L L^T = C`` gives ``tr(D C D^T) = ||D L||_F^2``; Cholesky costs a third of
    a ``d^3`` and needs no inverse. With ``ridge=0`` a singular ``C`` is refused.
    """
    trace = float(torch.trace(c))
    if trace <= 0:
        return None
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    regular = (c + c.T) / 2 + ridge * trace / c.shape[0] * eye
    lo, info = torch.linalg.cholesky_ex(regular)
    if int(info) != 0:
        raise ValueError(
            f"{what}: the covariance is singular (the data spans fewer than its "
            f"{c.shape[0]} directions); use ridge > 0"
        )
    return lo, regular


def _svd_whitened(plain: Format, w: torch.Tensor, roots: tuple) -> Format:
    """``trunc_r(W L) L^{-1}``, singular values split evenly between ``U`` and ``V``."""
    lo = roots[0]
    r = plain.ranks[0]
    u, s, vh = torch.linalg.svd(w @ lo, full_matrices=False)
    root = s[:r].sqrt()
    tensors = plain.factor_tensors()
    shape_v = tensors["V"].shape
    new = {
        "U": (u[:, :r] * root).reshape(tensors["U"].shape),
        "V": _right_solve(root[:, None] * vh[:r], lo).reshape(shape_v),
    }
    return type(plain).from_factors(plain.structure, new)


def _right_solve(y: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """``Y L^{-1}`` for a lower-triangular ``L``."""
    return torch.linalg.solve_triangular(lo, y, upper=False, left=False)


def _out_and_core(
    wl: torch.Tensor, lo: torch.Tensor, v: torch.Tensor, r_out: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Given the in factor ``V``, the out factor and core minimising ``||(W - W') L||``.

    ``W' = U G (V kron I_k)^T``; with ``L^T (V kron I_k) = Q R``, the best ``U G R^T`` is the
    rank-``r_out`` truncation of ``W L Q`` (Eckart-Young), so ``U`` are its leading left
    singular vectors and ``G = U^T W L Q R^{-T}``. ``wl`` is ``W L``.
    """
    q, rr = torch.linalg.qr(_times_kron_eye(lo.T, v, k))
    t = wl @ q
    u = torch.linalg.svd(t, full_matrices=True)[0][:, :r_out]
    g = torch.linalg.solve_triangular(rr, (u.T @ t).T, upper=True).T
    return u, g


def _in_step(
    w: torch.Tensor, c: torch.Tensor, u: torch.Tensor, g: torch.Tensor, shape: tuple
) -> torch.Tensor:
    """Given the out factor and core, the in factor minimising ``||(W - W') L||`` (linear LS).

    ``W'[a, (j, s)] = sum_b G[a, b, s] V[j, b]`` is linear in ``V``; its normal equations have
    the Hessian ``H[j b, j' b'] = sum_{s s'} P[b s, b' s'] C[j s, j' s']`` with ``P = G^T G``.
    """
    n_in, r_in, k = shape
    g3 = g.reshape(-1, r_in, k)
    c4 = c.reshape(n_in, k, n_in, k)
    p = torch.einsum("abs,act->bsct", g3, g3)
    h = torch.einsum("bsct,jskt->jbkc", p, c4).reshape(n_in * r_in, n_in * r_in)
    ac = ((u.T @ w) @ c).reshape(-1, n_in, k)
    rhs = torch.einsum("abs,ajs->jb", g3, ac).reshape(-1)
    lo, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        solution = torch.cholesky_solve(rhs[:, None], lo)[:, 0]
    else:  # a singular H (a core with dependent slices): the least-norm solution
        solution = torch.linalg.pinv(h, hermitian=True) @ rhs
    return solution.reshape(n_in, r_in)


def _tucker2_whitened(plain: Format, w: torch.Tensor, roots: tuple, sweeps: int) -> Format:
    """Tucker-2 in the input metric: out factor and core given the plain in factor, then sweeps."""
    lo, c_ridge = roots
    core_shape = tuple(plain.core.shape)
    r_out, r_in, k = core_shape[0], core_shape[1], math.prod(core_shape[2:])
    n_in = plain.factors[1].shape[0]
    v = plain.factors[1].to(w.dtype)
    wl = w @ lo
    u, g = _out_and_core(wl, lo, v, r_out, k)
    best = (_energy(w - _tucker2_dense(u, g, v, k), c_ridge), u, g, v)
    if n_in * r_in <= MAX_SWEEP_UNKNOWNS:
        for _ in range(sweeps):
            v = torch.linalg.qr(_in_step(w, c_ridge, u, g, (n_in, r_in, k)))[0]
            u, g = _out_and_core(wl, lo, v, r_out, k)
            lost = _energy(w - _tucker2_dense(u, g, v, k), c_ridge)
            if lost < best[0]:
                best = (lost, u, g, v)
    _, u, g, v = best
    modes = plain.modes
    tensors = {"core": g.reshape(core_shape), f"U_{modes[0]}": u, f"U_{modes[1]}": v}
    return type(plain).from_factors(plain.structure, tensors)


def _tucker2_dense(u: torch.Tensor, g: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """``U G (V kron I_k)^T`` as an ``(out, in * k)`` matrix (without forming the Kronecker).

    ``(X (V kron I_k)^T)[o, j k + s] = sum_b X[o, b k + s] V[j, b]``.
    """
    ug = (u @ g).reshape(u.shape[0], v.shape[1], k)
    return torch.einsum("obs,jb->ojs", ug, v).reshape(u.shape[0], -1)


def _times_kron_eye(a: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """``A (V kron I_k)`` without forming the Kronecker.

    ``V kron I_k`` holds ``V[j, b]`` at row ``j k + s``, column ``b k + s``, so the product
    holds ``sum_j A[p, j k + t] V[j, b]`` at ``(p, b k + t)``.
    """
    a3 = a.reshape(a.shape[0], v.shape[0], k)
    return torch.einsum("pjt,jb->pbt", a3, v).reshape(a.shape[0], -1)


def _whitenable(plain: Format) -> bool:
    """True for svd cut ``out | rest`` and tucker2 on ``(out, in)``: where the metric acts."""
    legs = plain.legs
    if plain.structure.format == "svd":
        return plain.options.get("left") == legs[:1]
    if plain.structure.format == "tucker2":
        return plain.options.get("modes") == legs[:2]
    return False


def _whiten(
    plain: Format, kernel: torch.Tensor, covariance: Any, ridge: float, sweeps: int, what: str
) -> Format:
    """The whitened counterpart of ``plain`` (same structure), or ``plain`` when not better.

    With ``cross`` (inputs ``X`` that differ from the dense ``X0``) the kernel factored is
    ``W* = W K^T C^{-1}``, the least-squares fit of ``X0 W^T`` by ``X W*^T``: by Pythagoras the
    best rank-``r`` fit of ``X0 W^T`` is the best rank-``r`` ``W'`` in the metric of ``C``.
    """
    metric = Metric(kernel.detach(), covariance, ridge, what)
    new, _ = metric.whitened(plain, sweeps, kernel.dtype)
    if new is plain:
        return plain
    w = metric.w
    dense = new.to_dense().reshape(w.shape).double()
    norm = float(w.norm())
    error = float((w - dense).norm()) / norm if norm > 0 else 0.0
    return type(new).from_factors(new.structure, new.factor_tensors(), error)


def _check_knobs(ridge: Any, sweeps: Any, what: str) -> None:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not 0 <= ridge < math.inf:
        raise ValueError(f"{what}: ridge must be a finite number >= 0, got {ridge!r}")
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 0:
        raise ValueError(f"{what}: sweeps must be an int >= 0, got {sweeps!r}")


def whitened_format(
    kernel: torch.Tensor,
    format: str,
    covariance: InputCovariance | torch.Tensor,
    trunc: Truncation | int | None = None,
    ranks: Any = None,
    fraction: float | None = None,
    *,
    legs: tuple[str, ...] | None = None,
    ridge: float = DEFAULT_RIDGE,
    sweeps: int = 2,
    **options: Any,
) -> Format:
    """A kernel decomposed to minimise its output error on the calibration data.

    Parameters
    ----------
    kernel : tensor
        ``(out, in)`` or ``(out, in, kh, kw)``.
    format : str
        Any registered format; ``"svd"`` and ``"tucker2"`` are whitened (see the module
        docstring), the others decomposed plainly.
    covariance : InputCovariance or tensor
        ``C = X^T X`` of the layer's input rows (``d x d``, ``d = in * kh * kw``).
    trunc, ranks, fraction
        At most one, as for ``from_dense``: the ranks are the plain decomposition's.
    legs : tuple of str, optional
        The kernel's legs (default ``("out", "in")`` / ``("out", "in", "kh", "kw")``).
    ridge : float
        Added to ``C`` as ``ridge * tr(C) / d`` times the identity (0: none; then ``C`` must
        be of full rank).
    sweeps : int
        Tucker-2 only: alternating sweeps after the first out-factor and core step.
    **options
        The format's options (as for ``from_dense``).

    Returns
    -------
    Format
        The same structure as the plain decomposition; ``error`` is its relative weight error.
        Its output error (:func:`output_error`) is never above the plain one's.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    >>> w = torch.randn(5, 6, dtype=torch.float64)
    >>> fmt = whitened_format(w, "svd", x.T @ x, ranks=2, ridge=0)
    >>> u, s, vh = torch.linalg.svd(x @ w.T)  # the best rank-2 output: Eckart-Young on X W^T
    >>> best = float(s[2:].norm() / s.norm())
    >>> fmt.ranks, abs(output_error(w, fmt, x.T @ x) - best) < 1e-9
    ((2,), True)
    """
    what = "whitened_format"
    _check_knobs(ridge, sweeps, what)
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"{what}: kernel must be a tensor, got {type(kernel).__name__}")
    legs = kernel_legs(kernel.ndim) if legs is None else tuple(legs)
    plain = get_format(format).from_dense(
        kernel.detach(), trunc, ranks, fraction, legs=legs, **options
    )
    return _whiten(plain, kernel, covariance, float(ridge), sweeps, what)


def compress_layer_whitened(
    module: nn.Module,
    format: str,
    covariance: InputCovariance | torch.Tensor,
    trunc: Truncation | int | None = None,
    ranks: Any = None,
    fraction: float | None = None,
    *,
    plan: str = "auto",
    ridge: float = DEFAULT_RIDGE,
    sweeps: int = 2,
    **options: Any,
) -> TNLayer:
    """``TNConv2d.from_conv`` / ``TNLinear.from_linear`` with the kernel whitened.

    The layer is built as ``from_conv``/``from_linear`` builds it (same checks, ranks, plan and
    options), then its factors are replaced by the whitened decomposition of the same
    structure (:func:`whitened_format`); ``decomposition_error`` is the weight error.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(8, 6)
    >>> x = torch.randn(100, 8) @ torch.randn(8, 8)
    >>> layer = compress_layer_whitened(lin, "svd", (x.T @ x).double(), ranks=2)
    >>> type(layer).__name__, layer.ranks
    ('TNLinear', (2,))
    """
    what = "compress_layer_whitened"
    _check_knobs(ridge, sweeps, what)
    sizes = {"trunc": trunc, "ranks": ranks, "fraction": fraction}
    if isinstance(module, nn.Linear):
        layer: TNLayer = TNLinear.from_linear(module, format, plan=plan, **sizes, **options)
    elif isinstance(module, nn.Conv2d):
        layer = TNConv2d.from_conv(module, format, plan=plan, **sizes, **options)
    else:
        raise TypeError(f"{what}: expected an nn.Conv2d or nn.Linear, got {type(module).__name__}")
    fmt = _whiten(layer.to_format(), module.weight, covariance, float(ridge), sweeps, what)
    with torch.no_grad():
        for name, t in fmt.factor_tensors().items():
            layer.factors[name].copy_(t)
    layer.decomposition_error = fmt.error
    return layer
