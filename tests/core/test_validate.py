"""The shared argument checks (core/validate.py): exact results and exact messages."""

import numpy as np
import pytest
import torch

from tensornet.core.validate import (
    as_int,
    check_devices,
    check_finite,
    check_str,
    is_int,
    short_list,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, True), (np.int64(3), True), (np.uint8(3), True), (torch.tensor(3), True),
        (torch.tensor(3, dtype=torch.int8), True), (True, False), (np.bool_(True), False),
        (torch.tensor(True), False), (3.0, False), (np.float32(3), False),
        (torch.tensor(3.0), False), (torch.tensor(3 + 0j), False), (torch.tensor([3]), False),
        (torch.tensor([[3]]), False), ("3", False), (None, False),
    ],
)  # fmt: skip
def test_is_int(value, expected):
    assert is_int(value) is expected


def test_as_int_values_and_messages():
    assert as_int(np.int32(4), "max_rank", low=1) == 4 and type(as_int(np.int32(4), "f")) is int
    assert as_int(torch.tensor(-2), "f") == -2  # no lower bound without `low`
    assert as_int(1, "f", low=1) == 1  # the bound is inclusive
    with pytest.raises(ValueError, match=r"^max_rank must be >= 1, got 0$"):
        as_int(0, "max_rank", low=1)
    with pytest.raises(TypeError, match=r"^chi must be an int, got float 2\.5$"):
        as_int(2.5, "chi")
    with pytest.raises(TypeError, match=r"^chi must be an int, got bool True$"):
        as_int(True, "chi", low=0)


def test_check_finite():
    check_finite(torch.ones(3), "node 'A'")
    check_finite(torch.empty(0), "node 'A'")  # nothing to check
    check_finite(torch.tensor([1, 2]), "node 'A'")  # integers cannot hold NaN
    check_finite(torch.ones(2, dtype=torch.complex128), "node 'A'")
    with pytest.raises(
        ValueError,
        match=r"^node 'A' holds NaN or inf values \(2 of 3 entries\); refusing to work on it$",
    ):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "node 'A'")
    with pytest.raises(ValueError, match=r"^w holds NaN or inf values \(1 of 1 entries\)"):
        check_finite(torch.tensor([complex(1, float("inf"))]), "w")
    with pytest.raises(ValueError, match=r"^w holds NaN or inf values \(1 of 1 entries\)"):
        check_finite(torch.tensor(float("nan")), "w")  # a single (0-d) entry is checked too


def test_check_devices():
    cpu = torch.ones(1)
    meta = torch.ones(1, device="meta")
    assert check_devices([("A", cpu), ("B", cpu)], "op") == torch.device("cpu")
    assert check_devices([("A", meta)], "op") == torch.device("meta")
    with pytest.raises(
        ValueError,
        match=r"^canonicalize: nodes live on different devices "
        r"\{'cpu': \['A', 'C'\], 'meta': \['B'\]\}; move them with \.to\(device\) first$",
    ):
        check_devices([("A", cpu), ("B", meta), ("C", cpu)], "canonicalize")
    many = [(f"n{i}", cpu) for i in range(6)] + [("m", meta)]
    with pytest.raises(ValueError, match=r"\['n0', 'n1', 'n2', 'n3', \.\.\. \(6 in all\)\]"):
        check_devices(many, "op")
    with pytest.raises(ValueError, match=r"^op: nothing to work on \(no nodes\)$"):
        check_devices([], "op")


def test_check_str():
    assert check_str("A", "name") == "A"
    assert check_str(None, "name", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^name must be a non-empty str, got NoneType None$"):
        check_str(None, "name")
    with pytest.raises(TypeError, match=r"^name must be a non-empty str, got str ''$"):
        check_str("", "name")
    with pytest.raises(TypeError, match=r"^leg must be a non-empty str or None, got int 5$"):
        check_str(5, "leg", allow_none=True)
    with pytest.raises(TypeError, match=r"^leg must be a non-empty str or None, got str ''$"):
        check_str("", "leg", allow_none=True)


def test_short_list():
    assert short_list(range(20), 3) == "[0, 1, 2, ... (20 in all)]"
    assert short_list(["a", "b"], 2) == "['a', 'b']"  # exactly at the limit: nothing elided
    assert short_list(iter(["a", 1]), 8) == "['a', 1]"
    assert short_list(range(9)) == "[0, 1, 2, 3, 4, 5, 6, 7, ... (9 in all)]"  # default limit 8
    assert short_list([]) == "[]"
    assert short_list([np.int64(3), "a"]) == "[3, 'a']"  # str() for non-strings, repr() for strings
