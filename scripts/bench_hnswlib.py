"""hnswlib and numpy on the same vectors and queries as `index bench`: the anchor our index is
measured against. Not part of the product: scripts/bench.sh runs it in a bench-only virtual
environment (hnswlib and numpy from PyPI).

    bench_hnswlib.py EMBEDDINGS.npy [--ef 16,32,64] [--queries 1000] [--m 16] [--efc 200]
    bench_hnswlib.py --synthetic N --dim D ...      (the same clustered set as `index bench`:
                                                     read from --vectors FILE.npy written by it)

Every 10th row (up to --queries) is a query, the rest are indexed, exactly as `index bench`
splits them; one thread for build and search, timed in that thread's CPU time (as `index
bench`), so other load on the machine does not move the figures. Prints one JSON object.
"""
import argparse
import json
import os
import time

# one thread everywhere, numpy's BLAS included
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import hnswlib
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("npy")
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    a = ap.parse_args()
    data = np.load(a.npy).astype(np.float32)
    n, dim = data.shape
    is_query = np.zeros(n, bool)
    is_query[np.arange(0, n, 10)[: a.queries]] = True
    base, queries = data[~is_query], data[is_query]
    t = time.thread_time()
    p = hnswlib.Index(space="ip", dim=dim)
    p.init_index(max_elements=len(base), ef_construction=a.efc, M=a.m, random_seed=100)
    p.set_num_threads(1)
    p.add_items(base, np.arange(len(base)), num_threads=1)
    build = time.thread_time() - t
    t = time.thread_time()
    exact = []
    for q in queries:  # one query at a time, as a lab tool asks
        s = base @ q
        top = np.argpartition(-s, 10)[:10]
        exact.append(set(top[np.argsort(-s[top])].tolist()))
    numpy_qps = len(queries) / (time.thread_time() - t)
    rows = []
    for ef in [int(e) for e in a.ef.split(",")]:
        p.set_ef(max(ef, 10))
        t = time.thread_time()
        found = [p.knn_query(q, k=10, num_threads=1)[0][0] for q in queries]
        qps = len(queries) / (time.thread_time() - t)
        recall = float(np.mean([len(exact[i] & set(f.tolist())) / 10 for i, f in enumerate(found)]))
        # all queries in one call: hnswlib without Python's per-call cost
        t = time.thread_time()
        p.knn_query(queries, k=10, num_threads=1)
        batch_qps = len(queries) / (time.thread_time() - t)
        rows.append({"ef": ef, "queries_per_s": round(qps, 1), "batch_queries_per_s": round(batch_qps, 1),
                     "recall_at_10": round(recall, 4)})
    print(json.dumps({
        "name": f"hnswlib {getattr(hnswlib, '__version__', '0.8')} (M {a.m}, efC {a.efc}, 1 thread)",
        "vectors": int(len(base)),
        "queries": int(len(queries)),
        "dim": int(dim),
        "build_seconds": round(build, 3),
        "numpy_exact_queries_per_s": round(numpy_qps, 1),
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
