"""Compare every number of two results.json files, timings aside.

    python tests/compare_results.py A/results.json B/results.json

Prints each number that differs (its path in the JSON, both values) and exits 1 if any does.
Left out: keys about time or the machine (seconds, ms, latency, images/s, speed ratios,
dates, versions, paths, hosts), which differ from run to run by nature.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

TIMING = re.compile(
    r"seconds|^s$|_s$|s/epoch|per_epoch|\bms\b|_ms|latency|images/s|img/s|speed|time|date|started|"
    r"finished|version|path|run_dir|host|python|torch|platform|hash|duration|elapsed|"
    r"throughput|threads|cores|^source$|^skipped$|load_average|^rounds$|faster|^ddp$|^bench$|"
    r"^measured",  # source: the notebook's digest; skipped: resumed; bench, ddp, measured: speed
    re.I,
)


def numbers(value: Any, path: str = "") -> dict[str, float]:
    """Every number in ``value`` by its path (timing keys left out)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if not TIMING.search(str(key)):
                out |= numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out |= numbers(item, f"{path}[{i}]")
    elif isinstance(value, bool):
        out[path] = float(value)
    elif isinstance(value, int | float):
        out[path] = float(value)
    elif isinstance(value, str) and not TIMING.search(path.rsplit("/", 1)[-1]):
        # numbers written into words: verdicts, "93.4 ± 1.5 %", per-seed lists
        for j, found in enumerate(re.findall(r"[-+]?\d+(?:\.\d+)?", value)):
            out[f"{path}#{j}"] = float(found)
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    a, b = (numbers(json.load(open(p, encoding="utf-8"))) for p in argv)
    differ = [
        f"{key}: {a.get(key)} -> {b.get(key)}"
        for key in sorted(a.keys() | b.keys())
        if key not in a or key not in b or not same(a[key], b[key])
    ]
    print("\n".join(differ) if differ else f"all {len(a)} numbers equal (timings aside)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
