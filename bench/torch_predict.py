#!/usr/bin/env python3
"""Per-image latency of a PyTorch CPU forward pass in eval mode under no_grad, batch 1,
with the same normalisation and softmax as cxr::Model::predict (bench/predict_latency.cpp
is the cxr side). Same architectures as bench/torch_train_step.py. Prints one JSON line.

  torch_predict.py --model simple_cnn|resnet18 [--size 224] [--iters 50] [--threads 2]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train_step import resnet18, simple_cnn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = simple_cnn(1, 2) if a.model == "simple_cnn" else resnet18(1, 2, "imagenet" if a.size > 64 else "small")
    model.eval()
    img = torch.rand(1, 1, a.size, a.size)
    times = []
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            x = (img - 0.5) / 0.25
            p = torch.softmax(model(x), dim=1)
            float(p[0, 0])
            dt = (time.perf_counter() - t0) * 1000.0
            if i >= a.warmup:
                times.append(dt)
    times.sort()
    print(json.dumps({"engine": "pytorch " + torch.__version__, "model": a.model, "size": a.size,
                      "threads": torch.get_num_threads(), "median_ms": round(times[len(times) // 2], 3),
                      "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3), "min_ms": round(times[0], 3)}))


if __name__ == "__main__":
    main()
