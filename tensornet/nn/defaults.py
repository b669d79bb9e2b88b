"""The format :func:`~tensornet.nn.compress` uses when none is given (``format="auto"``).

The rule a default must meet: for every layer kind and kernel shape, at a given parameter count,
its relative Frobenius weight error is no higher than that of the plain baseline, the truncated
SVD of the matricised kernel ``(out | in kh kw)`` at the same count, on trained weights.

Measured by ``bench/default_formats.py`` (every model of ``models/``, ResNet-18/50 and VGG-16
at widths 16-128, plus a net with 2x2 and 5x5 kernels, trained briefly on digits; each format
at fractions 0.1, 0.25, 0.5 through ``from_conv``/``from_linear`` with one rank cap, as
``compress`` does; 382 cases of a layer at a fraction; the table is
``bench/results/default_formats.md``). Error / SVD error at equal count, median (worst, share
of cases not worse):

- linear and 1x1: nothing beats the SVD. TT, TR and CP at best equal it (a matrix has one
  cut; TT loses up to 1.08 on 1x1), Tucker-2, Tucker and HT pay for their core (up to 1.05),
  grouped low rank loses in 27-56 % of the cases (up to 1.05);
- 2x2: Tucker-2 1.03 (1.08, 0 %), TT 1.04 (1.14), TR 1.06 (1.25); grouped 0.99 (1.006);
- 3x3: Tucker-2 1.004 (1.05, 30 %), TT 1.015 (1.12, 27 %), Tucker, HT and TR worse still;
  grouped low rank with 2 or 4 groups 0.97-0.98 but worse on 2 % of the layers (up to 1.011);
- 5x5: Tucker-2 and TT 0.99 (1.01-1.02, 67 %); grouped 0.98-0.99 (2x2 and 5x5: 6 cases
  each, from one small net);
- CP was never worse (0.91 on 3x3), but its ALS fit took 50x the time of all SVDs together
  while run only on kernels up to 100k elements (up to 1,000x per layer; hours for a
  512x512x3x3 kernel), so it is no default.

So no format is reliably better than SVD on any kernel class and the default is ``svd``
everywhere: a ``k x k`` conv to ``r`` channels followed by a ``1 x 1`` conv (a linear layer: two
linears). Ask for another format by name when its structure matters more than its weight
error at a parameter count.

A depthwise conv (one input and one output channel per group, ``groups = in = out``) has no
default: ``compress`` with ``format="auto"`` leaves it dense. Its conv runs ``kh kw``
multiply-adds per output, and no factored form of its ``(out, 1, kh, kw)`` kernel runs fewer:
the spatial factor alone makes ``r`` channels per group at ``kh kw`` each, and the output
factor adds ``r`` more (a rank-``r`` SVD: ``(kh kw + 1) r``), so compressing it always costs
time, for the few parameters a depthwise kernel holds. Name a format to compress it anyway.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .kinds import kind_of

__all__ = ["AUTO", "DEFAULT_FORMAT", "default_format", "kernel_class"]

#: The format name that asks :func:`~tensornet.nn.compress` for :func:`default_format`.
AUTO = "auto"
#: The default for every layer kind and kernel shape (see the module docstring for the data).
DEFAULT_FORMAT = "svd"


def _check_layer(module: Any, what: str) -> None:
    if not isinstance(module, nn.Module) or kind_of(module) is None:
        raise TypeError(f"{what}: expected an nn.Conv2d or nn.Linear, got {type(module).__name__}")


def kernel_class(module: nn.Module) -> str:
    """The kernel class a layer's default is chosen by: ``"linear"`` or ``"KHxKW"``.

    Examples
    --------
    >>> from torch import nn
    >>> kernel_class(nn.Linear(8, 4)), kernel_class(nn.Conv2d(3, 8, 3)), kernel_class(
    ...     nn.Conv2d(3, 8, (1, 5)))
    ('linear', '3x3', '1x5')
    """
    _check_layer(module, "kernel_class")
    if isinstance(module, nn.Linear):
        return "linear"
    return "x".join(str(k) for k in module.kernel_size)


def default_format(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """The ``(format, options)`` that ``compress`` gives ``module`` when no format is named.

    Never worse than a truncated SVD of the matricised kernel at the same parameter count on
    trained weights (see the module docstring): ``("svd", {})`` for every conv and linear layer
    but a depthwise conv (one input and one output channel per group), for which it is ``None``
    (left dense: any factored form runs more multiply-adds than the depthwise conv).

    Parameters
    ----------
    module : nn.Conv2d or nn.Linear
        The dense layer to be compressed.

    Returns
    -------
    (str, dict) or None
        A registered format name and its options; ``None`` for a depthwise conv.

    Raises
    ------
    TypeError
        When ``module`` is not an ``nn.Conv2d`` or ``nn.Linear``.

    Examples
    --------
    >>> from torch import nn
    >>> default_format(nn.Conv2d(16, 32, 3)), default_format(nn.Linear(64, 10))
    (('svd', {}), ('svd', {}))
    >>> default_format(nn.Conv2d(16, 16, 3, groups=16)) is None  # depthwise: stays dense
    True
    """
    _check_layer(module, "default_format")
    if isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels:
        if module.out_channels == module.groups:  # depthwise: one input, one output a group
            return None
    return DEFAULT_FORMAT, {}
