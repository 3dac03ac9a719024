#!/usr/bin/env python3
"""Times one PyTorch training step (forward, cross-entropy, backward, Adam update) of the
same architectures cxr's zoo builds (bench/train_step.cpp does the cxr side).

  torch_train_step.py --model simple_cnn --batch 64 --size 28 [--threads 2] [--device cuda --tf32 1] ...
On CUDA each step ends with torch.cuda.synchronize() (as the cxr side synchronizes), and
cuDNN autotuning (cudnn.benchmark) is on, as cxr picks its cuDNN algorithms by timing.
Prints one JSON line like the cxr benchmark.
"""
import argparse
import json
import time

import torch
import torch.nn as nn


def simple_cnn(in_ch, classes, channels=(32, 64, 128), hidden=128, dropout=0.25):
    layers, c = [], in_ch
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2, 2)]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, classes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


def resnet18(in_ch, classes, stem):
    if stem == "imagenet":
        layers = [nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    else:
        layers = [nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c = 64
    for i, w in enumerate([64, 128, 256, 512]):
        for b in range(2):
            layers.append(BasicBlock(c, w, 2 if (b == 0 and i > 0) else 1))
            c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--stem", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tf32", type=int, default=1)
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
        torch.backends.cudnn.allow_tf32 = bool(a.tf32)
        torch.backends.cudnn.benchmark = True
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.model == "simple_cnn":
        model = simple_cnn(a.channels, a.classes)
    elif a.model == "resnet18":
        stem = a.stem if a.stem != "auto" else ("imagenet" if a.size > 64 else "small")
        model = resnet18(a.channels, a.classes, stem)
    else:
        raise SystemExit(f"unknown model {a.model}")
    model.train()
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(a.batch, a.channels, a.size, a.size).to(dev)
    y = (torch.arange(a.batch) % a.classes).to(dev)
    times = []
    for it in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) * 1000.0
        if it >= a.warmup:
            times.append(dt)
    times.sort()
    med = times[len(times) // 2]
    devname = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(json.dumps({"engine": "pytorch " + torch.__version__, "device": devname,
                      "tf32": int(dev.type == "cuda" and bool(a.tf32)), "model": a.model, "batch": a.batch, "size": a.size,
                      "channels": a.channels, "threads": torch.get_num_threads(), "iters": a.iters,
                      "median_ms": round(med, 3), "min_ms": round(times[0], 3),
                      "images_per_s": round(1000.0 * a.batch / med, 1)}))


if __name__ == "__main__":
    main()
