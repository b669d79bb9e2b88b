"""Bad input is refused up front, by tensornet itself, with the culprit named.

One row per entry point and kind of bad input. Each row checks the exception type, that the
message names the culprit (field, leg, node, weight), and that the exception was raised by
tensornet's own code (not LAPACK, the allocator or opt_einsum, deep inside a computation).
"""

import os
import traceback

import pytest
import torch

import tensornet as tn
from tensornet import CP, HT, TT, Node, TensorNetwork, Truncation, TTMatrix, Tucker
from tensornet.analysis import truncation_sweep

DT = torch.float64
NAN = float("nan")
PACKAGE = os.path.dirname(tn.__file__)


def w(*shape, bad=None, seed=0):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    if bad is not None:
        t.view(-1)[1] = bad
    return t


def node(bad=None, name="T"):
    return Node(w(4, 5, 6, bad=bad), ("a", "b", "c"), name=name)


def chain(bad=None):
    """A -- B -- C (bonds j, k); B may hold a bad value."""
    return TensorNetwork(
        [
            Node(w(2, 3), ("i", "j"), name="A"),
            Node(w(3, 4, 2, bad=bad), ("j", "x", "k"), name="B"),
            Node(w(2, 5), ("k", "l"), name="C"),
        ]
    )


def loop():
    return TensorNetwork(
        [
            Node(w(2, 3), ("a", "b"), name="A"),
            Node(w(3, 2), ("b", "c"), name="B"),
            Node(w(2, 2), ("c", "a"), name="C"),
        ]
    )


def two_devices():
    return TensorNetwork(
        [Node(w(2, 3), ("i", "j"), name="A"), Node(torch.empty(3, 4, device="meta"), ("j", "k"),
                                                   name="B")]
    )


def conv_model(bad=None):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten()).double()
    if bad is not None:
        with torch.no_grad():
            model[0].weight[1, 0, 0, 0] = bad
    return model


def evaluate(model):
    return 0.0


ROWS = [
    # Node / TensorNetwork construction and lookup
    ("Node tags int", lambda: Node(w(2), ("i",), tags=5), TypeError, r"tags must be a str or"),
    ("Node tag not str", lambda: Node(w(2), ("i",), tags=[1]), TypeError, r"every tag must be"),
    ("Node name int", lambda: Node(w(2), ("i",), name=5), TypeError, r"Node name must be a str"),
    ("Node legs str", lambda: Node(w(2, 2), "ij"), TypeError, r"single string 'ij'"),
    ("Node legs count", lambda: Node(w(2, 2), ("i",)), ValueError, r"1 leg names \('i',\)"),
    ("Network None", lambda: TensorNetwork(None), TypeError, r"iterable of Node objects"),
    ("Network non-node", lambda: TensorNetwork([1]), TypeError, r"holds Node objects, got int"),
    ("net.node missing", lambda: chain().node("Z"), ValueError, r"no node named 'Z'"),
    ("net.node int", lambda: chain().node(3), TypeError, r"node names are str, got int"),
    ("net.bond open leg", lambda: chain().bond("i"), ValueError, r"'i' is an open leg"),
    (
        "net.bond foreign Bond",
        lambda: chain().bond(tn.Bond("j", ("X", "Y"), 3)),
        ValueError,
        r"joins nodes \('X', 'Y'\).*another network",
    ),
    ("net.spectrum int", lambda: chain().spectrum(5), TypeError, r"leg name \(str\) or a Bond"),
    # split / qr_split
    ("split left None", lambda: tn.split(node(), None), TypeError, r"left_legs must be a leg"),
    ("split unknown leg", lambda: tn.split(node(), ["z"]), ValueError, r"has no leg 'z'"),
    ("split NaN", lambda: tn.split(node(NAN), ["a"]), ValueError, r"split: node 'T' holds NaN"),
    ("split inf", lambda: tn.split(node(float("inf")), ["a"]), ValueError, r"node 'T' holds"),
    ("split trunc str", lambda: tn.split(node(), ["a"], trunc="3"), TypeError, r"trunc must be"),
    ("split trunc 0", lambda: tn.split(node(), ["a"], trunc=0), ValueError, r"max_rank.*>= 1"),
    ("split absorb", lambda: tn.split(node(), ["a"], absorb="up"), ValueError, r"absorb must be"),
    ("split bond int", lambda: tn.split(node(), ["a"], bond=5), TypeError, r"bond must be a str"),
    ("split non-node", lambda: tn.split(w(2, 2), ["a"]), TypeError, r"node must be a Node"),
    ("split names", lambda: tn.split(node(), ["a"], names="LR"), TypeError, r"names must be a"),
    ("qr_split NaN", lambda: tn.qr_split(node(NAN), ["a"]), ValueError, r"qr_split: node 'T'"),
    ("qr_split leg int", lambda: tn.qr_split(node(), [3]), TypeError, r"leg names \(str\)"),
    ("net.split NaN", lambda: TensorNetwork([node(NAN)]).split("T", ["a"]), ValueError, r"'T'"),
    # gauges on trees
    ("canonicalize towards", lambda: chain().canonicalize("Q"), ValueError, r"towards='Q'"),
    ("canonicalize NaN", lambda: chain(NAN).canonicalize("A"), ValueError, r"node 'B' holds"),
    ("canonicalize devices", lambda: two_devices().canonicalize("A"), ValueError, r"devices"),
    ("canonicalize loop", lambda: loop().canonicalize("A"), ValueError, r"closes a loop"),
    ("spectrum NaN", lambda: chain(NAN).spectrum("j"), ValueError, r"spectrum: node 'B'"),
    ("spectrum devices", lambda: two_devices().spectrum("j"), ValueError, r"different devices"),
    ("truncate no trunc", lambda: chain().truncate("j", None), ValueError, r"trunc must be"),
    ("truncate NaN", lambda: chain(NAN).truncate("k", 1), ValueError, r"truncate: node 'B'"),
    ("truncate open leg", lambda: chain().truncate("x", 1), ValueError, r"'x' is an open leg"),
    ("cut unknown leg", lambda: chain().cut(["zz"]), ValueError, r"'zz' is not an open leg"),
    ("cut None", lambda: chain().cut(None), TypeError, r"left_legs must be a leg name"),
    ("cut NaN", lambda: chain(NAN).cut(["i", "l"]), ValueError, r"cut: node 'B' holds NaN"),
    # the truncation policy
    ("max_rank float", lambda: Truncation(max_rank=1.5), TypeError, r"max_rank must be an int"),
    ("rel_tol > 1", lambda: Truncation(rel_tol=2), ValueError, r"rel_tol must be >= 0.0 and <="),
    ("abs_tol NaN", lambda: Truncation(abs_tol=NAN), ValueError, r"abs_tol must be finite"),
    ("keep_energy 0", lambda: Truncation(keep_energy=0), ValueError, r"keep_energy must be > 0"),
    ("rel_tol str", lambda: Truncation(rel_tol="x"), TypeError, r"rel_tol must be a real"),
    # dense spectra and truncation
    ("spectrum NaN", lambda: tn.spectrum(w(4, 3, bad=NAN), ["out"]), ValueError, r"x holds NaN"),
    ("spectrum leg", lambda: tn.spectrum(w(4, 3), ["zz"]), ValueError, r"no leg 'zz'"),
    ("spectrum axis", lambda: tn.spectrum(w(4, 3), [5]), ValueError, r"axis 5 is out of range"),
    (
        "kernel_spectra NaN",
        lambda: tn.kernel_spectra({"conv": w(4, 2, 3, 3, bad=NAN)}),
        ValueError,
        r"weight 'conv' holds NaN or inf values \(1 of 72",
    ),
    ("kernel_spectra None", lambda: tn.kernel_spectra(None), TypeError, r"takes a tensor"),
    (
        "model_spectra NaN",
        lambda: tn.model_spectra(conv_model(NAN)),
        ValueError,
        r"weight '0' holds NaN",
    ),
    (
        "weight_spectra collision",
        lambda: tn.weight_spectra({"c.weight": w(2, 3), "c": w(2, 3)}),
        ValueError,
        r"'c.weight' and 'c' would both be layer 'c'",
    ),
    ("weight_spectra list", lambda: tn.weight_spectra([w(2, 3)]), TypeError, r"takes a mapping"),
    ("truncate NaN", lambda: tn.truncate(w(4, 3, bad=NAN), ["out"], 2), ValueError, r"x holds"),
    ("truncate no trunc", lambda: tn.truncate(w(4, 3), ["out"], None), ValueError, r"trunc must"),
    ("truncate float", lambda: tn.truncate(w(4, 3), ["out"], 2.5), TypeError, r"trunc must be a"),
    # every format's from_dense goes through one checked entry
    ("TT NaN", lambda: TT.from_dense(w(3, 4, 5, bad=NAN)), ValueError, r"TT.from_dense: x holds"),
    ("Tucker inf", lambda: Tucker.from_dense(w(3, 4, bad=-float("inf"))), ValueError, r"Tucker"),
    ("HT NaN", lambda: HT.from_dense(w(2, 3, 2, 3, bad=NAN)), ValueError, r"HT.from_dense: x"),
    ("CP NaN", lambda: CP.from_dense(w(3, 4, 5, bad=NAN), ranks=2), ValueError, r"holds NaN"),
    (
        "TTMatrix NaN",
        lambda: TTMatrix.from_matrix(w(6, 4, bad=NAN), (2, 3), (2, 2)),
        ValueError,
        r"holds NaN",
    ),
    (
        "TT named node NaN",
        lambda: TT.from_dense(Node(w(3, 4, bad=NAN), ("p", "q"), name="W")),
        ValueError,
        r"node 'W' holds NaN",
    ),
    ("TT size 0", lambda: TT.from_dense(torch.ones(3, 0, 2)), ValueError, r"leg 'd1' has size 0"),
    ("TT ranks str", lambda: TT.from_dense(w(3, 4, 5), ranks="a"), ValueError, r"ranks must be"),
    ("Tucker rank 0", lambda: Tucker.from_dense(w(3, 4), ranks=[2, 0]), ValueError, r"positive"),
    # linear algebra
    ("svd int", lambda: tn.svd(torch.ones(2, 2, dtype=torch.int64)), TypeError, r"floating"),
    ("qr vector", lambda: tn.qr(torch.ones(3)), ValueError, r"qr needs a matrix"),
    ("svd degenerate", lambda: tn.svd(w(2, 2), degenerate="x"), ValueError, r"degenerate must"),
    # analysis
    (
        "sweep cut nowhere",
        lambda: truncation_sweep(conv_model(), evaluate, cuts=[("kd",)], progress=False),
        ValueError,
        r"cuts \[\('kd',\)\] apply to none",
    ),
    (
        "sweep chis float",
        lambda: truncation_sweep(conv_model(), evaluate, chis=[1.5], progress=False),
        TypeError,
        r"chis must hold ints",
    ),
    (
        "sweep NaN",
        lambda: truncation_sweep(conv_model(NAN), evaluate, progress=False),
        ValueError,
        r"layer '0' weight holds NaN",
    ),
    ("Spectrum chi", lambda: tn.spectrum(w(3, 2), ["out"]).relative_error(-1), ValueError, r"chi"),
]


def test_the_table_is_large_enough():
    assert len(ROWS) >= 40
    assert len({row[0] + str(i) for i, row in enumerate(ROWS)}) == len(ROWS)


@pytest.mark.parametrize(
    "call, kind, message", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_bad_input_is_refused_by_tensornet_naming_the_culprit(call, kind, message):
    with pytest.raises(kind, match=message) as info:
        call()
    # raised by tensornet's own checks, not deep inside torch, LAPACK or opt_einsum
    frames = traceback.extract_tb(info.tb)
    assert frames[-1].filename.startswith(PACKAGE), frames[-1]
