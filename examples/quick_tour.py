"""A five-minute tour of the graph core. Run: `make demo` or `python examples/quick_tour.py`."""

import torch

import tensornet as tn

torch.manual_seed(0)

# 1. Nodes are tensors with named legs; a leg shared by two nodes is a bond.
a = tn.Node(torch.randn(8, 16, dtype=torch.float64), ("i", "j"), name="A")
b = tn.Node(torch.randn(16, 4, 32, dtype=torch.float64), ("j", "x", "k"), name="B")
c = tn.Node(torch.randn(32, 8, dtype=torch.float64), ("k", "l"), name="C")
net = tn.TensorNetwork([a, b, c])
print(net)
print("bonds:", [(bond.leg, bond.nodes, bond.dim) for bond in net.bonds])

# 2. Contraction is planned by opt_einsum; the plan (cost, largest intermediate) is known first
#    and cached, so repeating the contraction does no planning.
print(net.plan(output=("l", "x", "i")))
result = net.contract(output=("l", "x", "i"))
dense = torch.einsum("ij,jxk,kl->lxi", a.tensor, b.tensor, c.tensor)
print("contract == einsum:", torch.allclose(result.tensor, dense), result)

# 3. Split a node along any cut with a truncation policy; the error is reported and equals the
#    Eckart-Young-Mirsky optimum sqrt(sum of discarded s^2) / ||T||.
t = tn.Node(result.tensor, result.legs, name="T")
left, right, info = tn.split(t, ["l"], trunc=tn.Truncation(rel_tol=0.5, max_rank=6))
approx = tn.contract(left, right, output=t.legs).tensor
measured = float(torch.linalg.norm(approx - t.tensor) / torch.linalg.norm(t.tensor))
print(
    f"kept rank {info.rank} of {len(info.singular_values)}; "
    f"reported error {info.error:.6f}, measured {measured:.6f}"
)

# 4. Gradients flow through contraction and splits (the SVD backward is stable even for
#    repeated singular values).
w = torch.randn(6, 6, 6, dtype=torch.float64, requires_grad=True)
left, right, _ = tn.split(tn.Node(w, ("a", "b", "c")), ["a"], trunc=3)
loss = tn.contract(left, right).tensor.square().sum()
loss.backward()
print("gradient norm through a truncated split:", float(w.grad.norm()))

# 5. Any number of legs: a 64-site MPS norm (128 tensors) contracts through the cached plan.
sites, chi = 64, 16
nodes = []
for i in range(sites):
    shape = ([] if i == 0 else [chi]) + [2] + ([] if i == sites - 1 else [chi])
    core = torch.randn(*shape, dtype=torch.float64) / (2 * chi) ** 0.5
    for side in ("k", "b"):
        legs = ([] if i == 0 else [f"{side}{i}"]) + [f"p{i}"]
        legs += [] if i == sites - 1 else [f"{side}{i + 1}"]
        nodes.append(tn.Node(core, legs))
mps_norm = tn.TensorNetwork(nodes)
print(
    f"<psi|psi> of a 64-site MPS: {float(mps_norm.contract().tensor):.6g}; "
    f"plan flops {mps_norm.plan().flops:.3g}"
)
print("plan cache:", tn.cache_info())
