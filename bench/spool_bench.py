"""The old entry point, kept for .ci/run: ``python -m bench`` replaces it (issue 11).

python bench/spool_bench.py            # = python -m bench --quick --only spool
python bench/spool_bench.py --docker   # = python -m bench --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, its own folder would come first on the path (and shadow modules).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.__main__ import main as bench_main  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docker", action="store_true")
    args = parser.parse_args()
    return bench_main(["--quick"] if args.docker else ["--quick", "--only", "spool"])


if __name__ == "__main__":
    sys.exit(main())
