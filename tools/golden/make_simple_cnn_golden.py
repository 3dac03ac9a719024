#!/usr/bin/python3
"""Writes the golden files for tests/test_golden.cpp with PyTorch (CPU).

One training step of cxr's `simple_cnn` on fixed inputs, computed independently by
PyTorch: the training-mode forward (logits, BatchNorm running statistics), the mean
cross-entropy loss, every parameter gradient, and the parameters after one step of
Adam (L2 weight decay added to the gradient) and, separately from the same start, one
step of Nesterov SGD.

Two files come out of one set of random numbers:
  golden_simple_cnn_f64.safetensors  everything in float64 (the C++ test compares at ~1e-10)
  golden_simple_cnn_f32.safetensors  the same inputs and initial weights rounded to
                                     float32, and PyTorch's float32 results
Both carry, in __metadata__, the model spec and the optimizer settings the test uses.

Tensor names in the files:
  input (N, 1, H, W), target i64 (N)
  init.<state-dict name>     initial parameters and buffers (num_batches_tracked is i64)
  logits (N, classes), loss () mean cross entropy
  grad.<parameter name>      d loss / d parameter after backward
  after_forward.<buffer>     BatchNorm buffers after the training-mode forward
  adam.<parameter name>      parameters after one Adam step
  sgd.<parameter name>       parameters after one SGD step

Run with Debian's interpreter, which has python3-torch:
  /usr/bin/python3 tools/golden/make_simple_cnn_golden.py tests/data
The safetensors format is written here by hand so that only torch and numpy are needed.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

SPEC = {"arch": "simple_cnn", "in_channels": 1, "num_classes": 3, "input_size": [12, 12],
        "channels": [4, 8], "hidden": 16, "dropout": 0}
BATCH = 4
TARGET = [0, 2, 1, 2]
ADAM = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
SGD = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
SEED = 20240607


def build_model(spec):
    """simple_cnn as cxr expands it (nn/zoo.cpp), as a Sequential so that parameter
    names are the same positional paths cxr uses ("0.weight", "1.running_mean", ...)."""
    layers = []
    c_in = spec["in_channels"]
    for c in spec["channels"]:
        layers += [torch.nn.Conv2d(c_in, c, 3, stride=1, padding=1, bias=False),
                   torch.nn.BatchNorm2d(c), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2)]
        c_in = c
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
               torch.nn.Linear(c_in, spec["hidden"]), torch.nn.ReLU(),
               torch.nn.Linear(spec["hidden"], spec["num_classes"])]
    return torch.nn.Sequential(*layers)


def random_state(model, gen):
    """Initial values drawn here (not cxr's init) so the test depends on nothing but the
    file. Running statistics start away from (0, 1) so their update is visible."""
    state = {}
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(3, dtype=torch.int64)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith("running_mean"):
            state[name] = 0.2 * torch.randn(shape, generator=gen)
        elif t.dim() == 1 and name.startswith(bn_prefixes(model)) and name.endswith("weight"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif t.dim() == 1:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def bn_prefixes(model):
    return tuple(f"{i}." for i, m in enumerate(model) if isinstance(m, torch.nn.BatchNorm2d))


def run(dtype, state, x, target):
    """One forward/backward and the two optimizer steps in `dtype`; returns name -> tensor."""
    out = {"input": x.to(dtype), "target": target}
    cast = {k: (v if v.dtype == torch.int64 else v.to(dtype)) for k, v in state.items()}
    out.update({f"init.{k}": v for k, v in cast.items()})

    model = build_model(SPEC).to(dtype)
    model.load_state_dict(cast)
    model.train()
    logits = model(x.to(dtype))
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach()
    for name, p in model.named_parameters():
        out[f"grad.{name}"] = p.grad.detach().clone()
    for name, b in model.named_buffers():
        out[f"after_forward.{name}"] = b.detach().clone()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}

    for key, make in (("adam", lambda ps: torch.optim.Adam(
                          ps, lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"],
                          weight_decay=ADAM["weight_decay"])),
                      ("sgd", lambda ps: torch.optim.SGD(
                          ps, lr=SGD["lr"], momentum=SGD["momentum"], nesterov=SGD["nesterov"],
                          weight_decay=SGD["weight_decay"]))):
        # Each optimizer starts from the initial weights with the gradients above.
        fresh = build_model(SPEC).to(dtype)
        fresh.load_state_dict(cast)
        for name, p in fresh.named_parameters():
            p.grad = grads[name].clone()
        opt = make(fresh.parameters())
        opt.step()
        for name, p in fresh.named_parameters():
            out[f"{key}.{name}"] = p.detach().clone()
    return out


DTYPES = {torch.float32: ("F32", "<f4"), torch.float64: ("F64", "<f8"), torch.int64: ("I64", "<i8")}


def write_safetensors(path, tensors, metadata):
    """8-byte little-endian header size, JSON header padded with spaces to a multiple of
    8 bytes, then each tensor's little-endian bytes in header order."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        code, np_dtype = DTYPES[t.dtype]
        data = t.numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data")
    torch.set_default_dtype(torch.float64)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    state = random_state(build_model(SPEC), gen)
    h, w = SPEC["input_size"]
    x = torch.randn((BATCH, SPEC["in_channels"], h, w), generator=gen)
    target = torch.tensor(TARGET, dtype=torch.int64)

    metadata = {
        "golden.spec": json.dumps(SPEC),
        "golden.adam": json.dumps(ADAM),
        "golden.sgd": json.dumps(SGD),
        "golden.loss": "cross_entropy, mean over the batch",
        "golden.generator": f"tools/golden/make_simple_cnn_golden.py, torch {torch.__version__}, seed {SEED}",
    }
    # The float32 run starts from the float64 draws rounded to float32, so both files
    # describe the same problem.
    for dtype, suffix in ((torch.float64, "f64"), (torch.float32, "f32")):
        tensors = run(dtype, state, x, target)
        path = os.path.join(out_dir, f"golden_simple_cnn_{suffix}.safetensors")
        write_safetensors(path, tensors, dict(metadata, **{"golden.dtype": suffix}))
        print(f"{path}: {len(tensors)} tensors, loss {tensors['loss'].item():.17g}")


if __name__ == "__main__":
    main()
