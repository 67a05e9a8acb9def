"""The trainer's default training step in PyTorch, for `scripts/bench.sh --torch`: the same
network (the `small` encoder: 3x3 stride-2 stem, four BasicBlock stages of widths 32/64/128/256,
global average pool, 128-d linear, 128-d projection head), the same step (two views of a batch
of 128 at 64 px, NT-Xent at temperature 0.2, AdamW lr 2e-3, weight decay 1e-4), on the CPU with
the same number of threads. Compute only: the views are random tensors, so this measures what
the frameworks do, not the data pipeline. Prints one JSON object.

    bench_torch_twin.py [--steps 10] [--threads 2] [--batch-size 128] [--image-size 64]
                        [--channels-last]

--channels-last puts the model and inputs in NHWC memory order (what our LibTorch backend does
for convolutions): the best this PyTorch does on this network, beside the default a user writes.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        s = self.down(x) if self.down is not None else x
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + s)


class Encoder(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), dim=128, head_dim=128):
        super().__init__()
        w = widths
        self.conv1 = nn.Conv2d(3, w[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.layers = nn.Sequential(Block(w[0], w[0], 1), Block(w[0], w[1], 2),
                                    Block(w[1], w[2], 2), Block(w[2], w[3], 2))
        self.fc = nn.Linear(w[3], dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, head_dim))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.head(self.fc(x.mean((2, 3))))


def nt_xent(a, b, t=0.2):
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.t() / t
    n = a.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Encoder().to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    shape = (a.batch_size, 3, a.image_size, a.image_size)
    views = [tuple(torch.randn(shape).contiguous(memory_format=fmt) for _ in range(2))
             for _ in range(2)]

    def step(i):
        v1, v2 = views[i % 2]
        loss = nt_xent(model(v1), model(v2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)  # warm-up
    t = time.perf_counter()
    for i in range(a.steps):
        step(i)
    secs = time.perf_counter() - t
    print(json.dumps({
        "framework": f"PyTorch {torch.__version__}",
        "memory_format": "channels_last" if a.channels_last else "default (NCHW)",
        "threads": a.threads,
        "batch_size": a.batch_size,
        "image_size": a.image_size,
        "steps": a.steps,
        "train_images_per_s": round(a.steps * a.batch_size / secs, 1),
    }))


if __name__ == "__main__":
    main()
