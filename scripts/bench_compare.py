"""Print `index bench` beside hnswlib (bench_hnswlib.py) from alternating rounds on the same
vectors: medians over rounds, and our queries/s as a multiple of hnswlib's.

    bench_compare.py OURS.json... -- HNSWLIB.json...
"""
import json
import statistics as st
import sys


def main():
    args = sys.argv[1:]
    cut = args.index("--")
    ours = [json.load(open(f)) for f in args[:cut]]
    theirs = [json.load(open(f)) for f in args[cut + 1:]]
    med = lambda xs: st.median(xs)
    print(f"{ours[0]['name']}: {ours[0]['vectors']} vectors x {ours[0]['dim']}, "
          f"medians of {len(ours)} alternating rounds, 1 thread")
    ob, tb = med(o["build_seconds"] for o in ours), med(t["build_seconds"] for t in theirs)
    print(f"  build: ours {ob:.2f} s, hnswlib {tb:.2f} s (ours / hnswlib {ob / tb:.2f}x)")
    oe = med(o["brute_force_queries_per_s"] for o in ours)
    te = med(t["numpy_exact_queries_per_s"] for t in theirs)
    print(f"  exact search: ours {oe:,.0f} q/s, numpy {te:,.0f} q/s (ratio {oe / te:.2f})")
    rss = [o.get("peak_rss_growth_per_vector") for o in ours if o.get("peak_rss_growth_per_vector")]
    if rss:
        print(f"  memory: {med(rss):,.0f} bytes per indexed vector (peak RSS growth over the build)")
    print("  ef   recall@10 ours / hnswlib   queries/s ours / hnswlib (per call; batch)   ratio")
    for i, row in enumerate(ours[0]["rows"]):
        ef = row["ef"]
        oq = med(o["rows"][i]["queries_per_s"] for o in ours)
        orc = med(o["rows"][i]["recall_at_10"] for o in ours)
        tq = med(t["rows"][i]["queries_per_s"] for t in theirs)
        tbq = med(t["rows"][i].get("batch_queries_per_s", 0) for t in theirs)
        trc = med(t["rows"][i]["recall_at_10"] for t in theirs)
        print(f"  {ef:<4} {orc:.4f} / {trc:.4f}          {oq:>9,.0f} / {tq:,.0f}; {tbq:,.0f}"
              f"        {oq / tq:.2f}x ({oq / max(tbq, 1):.2f}x of batch)")


if __name__ == "__main__":
    main()
