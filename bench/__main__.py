"""`python -m bench [--quick]`: run every benchmark in one process and print one table of ratios."""

import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import print_table

SKIP = {"common", "bounds", "real_shapes_child", "__main__"}


def main() -> None:
    quick = "--quick" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name in SKIP or (only and info.name not in only):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        print(f"# running bench.{info.name}", file=sys.stderr, flush=True)
        rows.extend(module.measure(quick=quick))
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
