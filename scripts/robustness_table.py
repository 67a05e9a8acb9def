#!/usr/bin/env python3
"""Side-by-side README table from several `trainer robustness` / `trainer cv --shifts` runs.

    scripts/robustness_table.py NAME=RUN_DIR/robustness.json[@CANDIDATE] [NAME=...]

One column per run: kNN-200 mean ± SD over the folds of the colour histogram, or with
@CANDIDATE of that learned candidate (a name in the run's table, e.g. "learned head" or
"head + colour, w 0.7"; `trainer cv --shifts` runs only). The last two rows are the mean over the shifts and the
worst shift, as `trainer robustness` prints them.
"""
import json
import statistics
import sys


def cell(values):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv):
    runs = [a.split("=", 1) for a in argv]
    tables = {}
    for name, spec in runs:
        path, _, candidate = spec.partition("@")
        with open(path) as f:
            rows = json.load(f)["rows"]
        tables[name] = {
            r["shift"]: (r["learned"].get(candidate, []) if candidate else r["histogram"])
            for r in rows
        }
    shifts = list(next(iter(tables.values())).keys())
    print("| shift | " + " | ".join(n for n, _ in runs) + " |")
    print("| --- |" + " --- |" * len(runs))
    for s in shifts:
        print(f"| {s} | " + " | ".join(cell(tables[n].get(s, [])) for n, _ in runs) + " |")
    summary = {}
    for n, _ in runs:
        means = {s: statistics.mean(v) for s, v in tables[n].items() if s != "clean" and v}
        if means:
            worst = min(means, key=means.get)
            summary[n] = (f"{statistics.mean(means.values()):.3f}", f"{means[worst]:.3f} ({worst})")
        else:
            summary[n] = ("-", "-")
    print("| **mean over the shifts** | " + " | ".join(summary[n][0] for n, _ in runs) + " |")
    print("| **worst shift** | " + " | ".join(summary[n][1] for n, _ in runs) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
