"""Run the speed benchmarks: each times the fast path against a plain reference
implementation in the same process and prints both times and the ratio.

  python benchmarks/run.py                 # all, readable table
  python benchmarks/run.py eval_prw oim_update --json
  python benchmarks/run.py --quick         # reduced sizes (what the tests run)

Benchmarks live in benchmarks/bench_*.py as BENCHMARKS = {name: fn(quick) -> dict}.
With --json one JSON object per line: name, reference_s, fast_s, speedup, agree
(+ floor_s for ProtoNorm = torch BatchNorm's time; step_s, peak_mb for training steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the reference implementations live in tests/


def collect() -> dict:
    out = {}
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, fn in getattr(module, "BENCHMARKS", {}).items():
            out[name] = fn
    return out


def _fmt(result: dict) -> str:
    parts = [f"{result['name']:<22s}"]
    for key, unit in (
        ("reference_s", "s"),
        ("fast_s", "s"),
        ("floor_s", "s"),
        ("step_s", "s"),
        ("peak_mb", " MB"),
        ("images_per_s", " img/s"),
    ):
        if key in result and result[key] is not None:
            parts.append(f"{key}={result[key]:.4g}{unit}")
    if result.get("speedup") is not None:
        parts.append(f"speedup={result['speedup']:.1f}x")
    if "agree" in result:
        parts.append(f"agree={result['agree']}")
    return "  ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quick", action="store_true", help="reduced sizes")
    p.add_argument("--list", action="store_true", help="list the benchmark names")
    args = p.parse_args(argv)
    benches = collect()
    if args.list:
        print("\n".join(benches))
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(benches)}", file=sys.stderr)
        return 2
    ok = True
    for name in args.names or list(benches):
        result = benches[name](args.quick)
        result.setdefault("name", name)
        ok &= result.get("agree", True) is not False
        print(json.dumps(result) if args.json else _fmt(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
