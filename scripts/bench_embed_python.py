#!/usr/bin/env python3
"""The anchor of the embedding benchmark: a plain PIL + onnxruntime loop over a folder, as a
notebook would write it (decode, central square resized to the model's input, normalised by the
card's mean/std, batches through onnxruntime on the CPU). It does not locate the white cell,
standardise colour or measure the red-cell scale, which `runtime embed` does: it is the floor
a user compares us with.

    scripts/bench_embed_python.py MODEL_CARD DIR [--limit N] [--batch 32] [--threads 2]

Prints JSON: images, seconds, images_per_s (end to end: files to embeddings).
"""
import argparse, json, os, pathlib, time

import numpy as np
import onnxruntime as ort
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("card")
p.add_argument("dir")
p.add_argument("--limit", type=int, default=2000)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()
card = json.load(open(a.card))
pre = card["preprocess"]
size, mean, std = pre["size"], np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
files = sorted(f for f in pathlib.Path(a.dir).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[: a.limit]
opts = ort.SessionOptions()
opts.intra_op_num_threads = a.threads
sess = ort.InferenceSession(str(pathlib.Path(a.card).with_name(card["onnx_file"])), opts, providers=["CPUExecutionProvider"])


def load(f):
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BILINEAR)
    x = (np.asarray(im, np.float32) / 255.0 - mean) / std
    return x.transpose(2, 0, 1)


t = time.perf_counter()
n = 0
for i in range(0, len(files), a.batch):
    x = np.stack([load(f) for f in files[i : i + a.batch]])
    out = sess.run([card["output_name"]], {card["input_name"]: x})[0]
    n += len(out)
secs = time.perf_counter() - t
print(json.dumps({"images": n, "seconds": secs, "images_per_s": n / secs, "batch": a.batch, "threads": a.threads}))
