"""Reference updates for kiln's optimizers, computed with PyTorch.

Runs torch.optim.AdamW and torch.optim.SGD (momentum) for three steps on a small fixed case and prints
the parameter values after each step as f32 bit patterns and decimals. The values are written into the
unit tests of src/train/optim.rs; run this again to check them:

    python3 -m pip install torch
    python3 benches/reference/optimizer_reference.py
"""

import struct

import torch

INITIAL = [0.5, -1.25, 2.0, 0.0, 3.5, -0.75]
GRADIENTS = [
    [0.1, -0.2, 0.3, -0.4, 0.5, -0.6],
    [-0.05, 0.15, 0.0, 0.25, -0.35, 0.45],
    [1.0, -1.0, 0.5, -0.5, 0.25, -0.25],
]


def bits(values):
    return [hex(struct.unpack("<I", struct.pack("<f", v))[0]) for v in values]


def run(name, make):
    param = torch.nn.Parameter(torch.tensor(INITIAL, dtype=torch.float32).reshape(2, 3))
    optimizer = make([param])
    print(name)
    for step, grad in enumerate(GRADIENTS, start=1):
        param.grad = torch.tensor(grad, dtype=torch.float32).reshape(2, 3)
        optimizer.step()
        values = param.detach().flatten().tolist()
        print(f"  step {step}: {bits(values)}")
        print(f"          {values}")


torch.set_num_threads(1)
run("adamw lr=0.01 betas=(0.9,0.999) eps=1e-8 weight_decay=0.01",
    lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01))
run("sgd lr=0.1 momentum=0.9 weight_decay=0.01",
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
