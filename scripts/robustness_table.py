#!/usr/bin/env python3
"""Side-by-side README table from several `trainer robustness` / `trainer cv --shifts` runs.

    scripts/robustness_table.py NAME=RUN_DIR/robustness.json[@CANDIDATE] [NAME=...]

One column per run: kNN-200 mean ± SD over the folds of the colour histogram, or with
@CANDIDATE of that learned candidate (a name in the run's table, e.g. "learned head" or
"head + colour, w 0.7"; `trainer cv --shifts` runs only). The last two rows are the mean over the shifts and the
worst shift, as `trainer robustness` prints them.

    scripts/robustness_table.py --few-label NAME=RUN_DIR/robustness.json[@CANDIDATE] [...]

Few-label accuracy instead (N labelled originals per class): one row per N, the clean figure
(mean ± SD over the folds) and the mean over the shifts of each run's candidate (default: the
histogram).
"""
import json
import statistics
import sys


def cell(values):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def read_runs(argv):
    """NAME=robustness.json[@CANDIDATE] arguments: (name, candidate, the report's rows)."""
    runs = []
    for a in argv:
        name, spec = a.split("=", 1)
        path, _, candidate = spec.partition("@")
        with open(path) as f:
            runs.append((name, candidate, json.load(f)["rows"]))
    return runs


def few_label(argv):
    runs = read_runs(argv)
    table = {}
    for name, candidate, rows in runs:
        key = candidate or "histogram of the window"
        table[name] = [(r["shift"], r.get("few_label", {}).get(key, {})) for r in rows]
    heads = []
    for n, _, _ in runs:
        heads += [f"{n}: clean", f"{n}: mean over the shifts"]
    print("| labelled originals per class | " + " | ".join(heads) + " |")
    print("| --- |" + " --- |" * len(heads))
    ns = sorted({int(k) for rows in table.values() for _, m in rows for k in m})
    for n in ns:
        cells = []
        for name, _, _ in runs:
            rows = table[name]
            clean = rows[0][1].get(str(n), [])
            shifted = [statistics.mean(m[str(n)]) for s, m in rows[1:] if m.get(str(n))]
            cells += [cell(clean), f"{statistics.mean(shifted):.3f}" if shifted else "-"]
        print(f"| {n} | " + " | ".join(cells) + " |")


def main(argv):
    if argv and argv[0] == "--few-label":
        return few_label(argv[1:])
    runs = read_runs(argv)
    tables = {}
    for name, candidate, rows in runs:
        tables[name] = {
            r["shift"]: (r["learned"].get(candidate, []) if candidate else r["histogram"])
            for r in rows
        }
    shifts = list(next(iter(tables.values())).keys())
    print("| shift | " + " | ".join(n for n, _, _ in runs) + " |")
    print("| --- |" + " --- |" * len(runs))
    for s in shifts:
        print(f"| {s} | " + " | ".join(cell(tables[n].get(s, [])) for n, _, _ in runs) + " |")
    summary = {}
    for n, _, _ in runs:
        means = {s: statistics.mean(v) for s, v in tables[n].items() if s != "clean" and v}
        if means:
            worst = min(means, key=means.get)
            summary[n] = (f"{statistics.mean(means.values()):.3f}", f"{means[worst]:.3f} ({worst})")
        else:
            summary[n] = ("-", "-")
    print("| **mean over the shifts** | " + " | ".join(summary[n][0] for n, _, _ in runs) + " |")
    print("| **worst shift** | " + " | ".join(summary[n][1] for n, _, _ in runs) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
