"""Training throughput side by side, for `scripts/bench.sh --torch`: medians over the rounds of
`trainer bench` (flex, LibTorch) and the PyTorch twin (default and channels-last memory order),
and the ratios to the twin. Reads DIR/{flex,libtorch,twin,twin-cl}-N.json.

    bench_train_compare.py DIR
"""
import glob
import json
import statistics
import sys


def runs(d, name):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{d}/{name}-[0-9]*.json"))]


def main():
    d = sys.argv[1]
    twin, twin_cl = runs(d, "twin"), runs(d, "twin-cl")
    if not twin:
        sys.exit(f"no twin results in {d}")
    base = statistics.median(r["train_images_per_s"] for r in twin)
    cl = statistics.median(r["train_images_per_s"] for r in twin_cl) if twin_cl else None
    print(f"{'training step, images/s (median of ' + str(len(twin)) + ' rounds; range)':<66} {'median':>7} {'range':>13} {'vs twin':>8} {'vs NHWC twin':>13}")

    def row(label, values):
        v = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        ratio_cl = f"{v / cl:.2f}x" if cl else "-"
        print(f"{label:<66} {v:>7.1f} {spread:>13} {v / base:>7.2f}x {ratio_cl:>13}")

    for name, label in [("flex", "trainer bench, flex"), ("libtorch", "trainer bench, LibTorch (patched burn-tch)")]:
        rs = runs(d, name)
        if not rs:
            continue
        row(f"{label}: compute only", [r["train_compute_images_per_s"] for r in rs])
        row(f"{label}: with augmentation", [r["train_images_per_s"] for r in rs])
    fw = twin[0]["framework"]
    row(f"{fw} twin, default memory order (compute only)", [r["train_images_per_s"] for r in twin])
    if cl:
        row(f"{fw} twin, channels-last (compute only)", [r["train_images_per_s"] for r in twin_cl])


if __name__ == "__main__":
    main()
