"""Embed a folder of cell images on a Ray cluster with the standalone runtime.

Why Ray: a Python package from PyPI with nothing else to install (no JVM, unlike Spark), a
local cluster from one call for tests, `ray://` or `ray start` clusters for real work, task
retries when a worker dies, and `runtime_env.working_dir` to ship our runtime bundle (binary,
libonnxruntime, model, card) to every worker. The workers run the `runtime` binary; nothing
here embeds an image.

One task per shard runs `runtime embed DIR --shard I/N -o OUT/shard-I-of-N`. A task that
fails or whose worker is killed is run again by Ray (max_retries); `runtime embed` reuses the
rows its shard folder already holds, so a rerun loses nothing and redoes only unsaved work.
Then `runtime merge` makes OUT/merged, the same, row for row, as one `runtime embed DIR`.
DIR and OUT must be on storage every worker sees (one machine, or a shared filesystem).

    cluster_embed.py DIR_OR_LIST --bundle BUNDLE --shards N -o OUT [--workers W | --address A]
"""
import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

import ray


def ort_library(bundle):
    """The bundle's onnxruntime library (libonnxruntime.so.VERSION)."""
    return sorted(glob.glob(os.path.join(bundle, "lib", "libonnxruntime.so.*")))[0]


@ray.remote(max_retries=3, retry_exceptions=True)
def embed_shard(root, index, count, out, kill_shard):
    bundle = os.getcwd()  # the runtime_env working_dir: our bundle, shipped by Ray
    shard_out = os.path.join(out, f"shard-{index}-of-{count}")
    marker = shard_out + ".attempts"
    attempts = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(attempts + 1))
    env = dict(os.environ, ORT_DYLIB_PATH=ort_library(bundle))
    cmd = [os.path.join(bundle, "runtime"), "embed", root, "--shard", f"{index}/{count}",
           "-o", shard_out, "--model", os.path.join(bundle, "model", "cellspace.json"),
           "--device", "cpu", "--threads", "1", "--json"]
    started = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if kill_shard == index and attempts == 0:
        # the test's fault: this task dies midway, its worker killed outright
        time.sleep(0.3)
        print(f"shard {index}/{count}: killed on purpose (test fault), attempt {attempts + 1}",
              file=sys.stderr, flush=True)
        p.kill()
        p.wait()
        os.kill(os.getpid(), signal.SIGKILL)
    stdout, stderr = p.communicate()
    if p.returncode not in (0, 2):  # 2: some files could not be embedded (listed, kept)
        raise RuntimeError(f"shard {index}/{count}: runtime exited {p.returncode}: "
                           f"{stderr.decode(errors='replace')[-2000:]}")
    summary = json.loads(stdout)
    summary["seconds_in_task"] = time.time() - started
    summary["attempt"] = attempts + 1
    return summary


def list_to_folder(listing, out):
    """A folder of links to the images of a list file (paths or file:// URIs, one per line),
    keeping each image's last two path components (CLASS/file)."""
    root = os.path.join(out, "input")
    os.makedirs(root, exist_ok=True)
    for n, line in enumerate(open(listing)):
        uri = line.strip()
        if not uri or uri.startswith("#"):
            continue
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        if "://" in path:
            sys.exit(f"{listing}:{n + 1}: {uri}: only local paths and file:// URIs can be "
                     "embedded in place; copy other URIs to shared storage first")
        parts = os.path.abspath(path).split(os.sep)
        dest = os.path.join(root, *parts[-2:])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.lexists(dest):
            os.symlink(os.path.abspath(path), dest)
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input", help="image folder, or a file listing image paths / file:// URIs")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--workers", type=int, default=2, help="local cluster size (no --address)")
    ap.add_argument("--address", help="an existing Ray cluster (ray://host:10001 or auto)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    root = os.path.abspath(a.input)
    if os.path.isfile(root):
        root = list_to_folder(root, out)
    kill_shard = int(os.environ.get("CELLSPACE_TEST_KILL_SHARD", "-1"))
    runtime_env = {"working_dir": a.bundle}
    t0 = time.time()
    if a.address:
        ray.init(address=a.address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=a.workers, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=True)
    started = time.time()
    tasks = [embed_shard.remote(root, i, a.shards, out, kill_shard) for i in range(a.shards)]
    summaries = ray.get(tasks)
    embedded = time.time() - started
    ray.shutdown()
    for i, s in enumerate(summaries):
        note = " (its first attempt was killed on purpose; Ray ran it again)" \
            if i == kill_shard and s["attempt"] > 1 else ""
        print(f"shard {i}/{a.shards}: {s['embedded']} embedded, {s['reused']} reused, "
              f"{s['failed']} failed, attempt {s['attempt']}, {s['seconds_in_task']:.1f} s{note}")
    shards = [os.path.join(out, f"shard-{i}-of-{a.shards}") for i in range(a.shards)]
    merged = os.path.join(out, "merged")
    env = dict(os.environ, ORT_DYLIB_PATH=ort_library(a.bundle))
    m = subprocess.run([os.path.join(a.bundle, "runtime"), "merge", *shards, "-o", merged,
                        "--json"], capture_output=True, text=True, env=env)
    if m.returncode not in (0, 2):
        sys.exit(f"merge failed: {m.stderr}")
    rows = json.loads(m.stdout)["rows"]
    total = time.time() - t0
    print(json.dumps({
        "images": rows, "shards": a.shards, "workers": a.workers if not a.address else None,
        "seconds_total": round(total, 2), "seconds_embedding": round(embedded, 2),
        "images_per_s": round(rows / embedded, 1) if embedded > 0 else None,
        "merged": merged,
    }))


if __name__ == "__main__":
    main()
