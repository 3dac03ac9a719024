#!/usr/bin/env python3
"""Trains a model with PyTorch + torchvision on a PNG image folder, end to end (decoding,
augmentation, forward, backward, update), timing the training loop of every epoch: the
PyTorch side of bench/compare_train_folder.sh (`cxr train` is the other).

  torch_train_folder.py DATA [--model simple_cnn] [--size 64] [--batch 32] [--threads 2]
                        [--workers 2] [--epochs 3] [--order resize-first]

DATA is the folder `cxr train` is given; the images of DATA/train/<class>/ are read with
torchvision.datasets.ImageFolder (as 1-channel images) and the transforms of cxr's training
pipeline: resize to SIZE x SIZE, RandomAffine (+-10 degrees, 5 % shift, scale 0.9-1.1,
bilinear), brightness and contrast jitter 0.1, ToTensor, Normalize(0.5, 0.25). cxr applies
the affine transform before resizing (at the file's resolution); `--order augment-first`
does the same here, the default resizes first (less work for PyTorch).
DataLoader(shuffle, drop_last, num_workers=W, persistent workers); AdamW (lr 1e-3, weight
decay 1e-4 except biases and BatchNorm, as cxr), cross-entropy, constant learning rate.
Each step reads the loss and counts correct predictions, as cxr train does. An epoch's time
runs from asking the DataLoader for its first batch to the last optimizer step.
Prints one JSON line: images_per_s per epoch and their median over epochs 2..N.
--loader-only times the DataLoader alone (decode + transforms + collation, no model).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torchvision import transforms as T

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train_step import resnet18, simple_cnn  # noqa: E402  (same architectures as cxr's zoo)


def load_gray(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("L")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--order", choices=["resize-first", "augment-first"], default="resize-first")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loader-only", action="store_true", help="iterate the DataLoader without training")
    a = ap.parse_args()
    if a.epochs < 1 or a.batch < 1 or a.size < 8 or a.workers < 0 or a.threads < 1:
        raise SystemExit("torch_train_folder.py: --epochs, --batch, --threads >= 1, --size >= 8, --workers >= 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    resize = T.Resize((a.size, a.size), interpolation=T.InterpolationMode.BILINEAR)
    affine = T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1),
                            interpolation=T.InterpolationMode.BILINEAR)
    geometric = [resize, affine] if a.order == "resize-first" else [affine, resize]
    tf = T.Compose(geometric + [T.ColorJitter(brightness=0.1, contrast=0.1), T.ToTensor(),
                                T.Normalize(mean=[0.5], std=[0.25])])
    train_dir = os.path.join(a.data, "train")
    ds = torchvision.datasets.ImageFolder(train_dir, transform=tf, loader=load_gray)
    if len(ds) < a.batch:
        raise SystemExit(f"torch_train_folder.py: {train_dir} has {len(ds)} images, fewer than one batch")
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                     drop_last=True, persistent_workers=a.workers > 0)
    classes = len(ds.classes)
    if a.model == "simple_cnn":
        model = simple_cnn(1, classes)
    elif a.model == "resnet18":
        model = resnet18(1, classes, "imagenet" if a.size > 64 else "small")
    else:
        raise SystemExit(f"torch_train_folder.py: unknown model {a.model} (simple_cnn or resnet18)")
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3)
    model.train()
    epochs = []
    for e in range(a.epochs):
        seen = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        for x, y in dl:
            if a.loader_only:
                seen += x.shape[0]
                continue
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * x.shape[0]
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += x.shape[0]
        secs = time.perf_counter() - t0
        epochs.append({"epoch": e + 1, "images": seen, "seconds": round(secs, 3),
                       "images_per_s": round(seen / secs, 2), "train_loss": round(loss_sum / seen, 4),
                       "train_accuracy": round(correct / seen, 4)})
    later = [r["images_per_s"] for r in epochs[1:]] or [epochs[0]["images_per_s"]]
    print(json.dumps({"engine": "pytorch " + torch.__version__, "torchvision": torchvision.__version__,
                      "model": a.model, "parameters": params, "images": len(ds), "size": a.size, "batch": a.batch,
                      "threads": torch.get_num_threads(), "workers": a.workers, "order": a.order,
                      "loader_only": a.loader_only,
                      "epochs": epochs, "images_per_s_median_after_first": round(statistics.median(later), 2)}))


if __name__ == "__main__":
    main()
