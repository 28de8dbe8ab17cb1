"""Start-up cost of the command line: ``shieldsplit --help`` and ``import shieldsplit``.

Each is run ``--rounds`` times in a fresh interpreter; the script prints the
median wall time, the import time that ``python -X importtime`` reports for the
package, the heaviest imports, and whether torch or a heavy extra (Opacus,
matplotlib, MedMNIST, torchvision, Captum) was imported. Issue 14 asked for
``--help`` to answer in well under a second of import work. When the rounds
disagree by more than the stated spread (``benchmarks/spread.py``), it says the
figures are unreliable.

Usage:
    python benchmarks/import_time.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

from spread import check_spread

HEAVY = ("torch", "opacus", "matplotlib", "medmnist", "torchvision", "captum")
CASES = {
    "shieldsplit --help": [sys.executable, "-c",
                           "import sys; sys.argv = ['shieldsplit', '--help']\n"
                           "from shieldsplit.cli import main\n"
                           "try:\n    main()\nexcept SystemExit:\n    pass"],
    "import shieldsplit": [sys.executable, "-c", "import shieldsplit"],
}
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def importtime(code: list[str]) -> tuple[dict[str, int], int]:
    """Cumulative microseconds of each top-level import, and their total."""
    done = subprocess.run([code[0], "-X", "importtime", *code[1:]], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    top: dict[str, int] = {}
    for line in done.stderr.splitlines():
        m = LINE.match(line)
        if m and len(m[3]) == 1:  # imported directly by the script
            top[m[4]] = int(m[2])
    return top, sum(top.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; {platform.platform()}")
    walls: dict[str, list[float]] = {}
    for name, code in CASES.items():
        walls[name] = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(code, capture_output=True, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            walls[name].append(time.perf_counter() - start)
        top, total = importtime(code)
        modules = subprocess.run(
            [code[0], "-c", code[2] + "\nimport sys; print(' '.join(sys.modules))"],
            capture_output=True, text=True, check=True).stdout.split()
        heavy = [m for m in HEAVY if m in modules]
        heaviest = sorted(top.items(), key=lambda kv: -kv[1])[:3]
        print(f"{name}: median wall {statistics.median(walls[name]):.2f} s over {args.rounds} "
              f"runs (interpreter start included); imports {total / 1e6:.2f} s "
              f"(heaviest: {', '.join(f'{k} {v / 1e3:.0f} ms' for k, v in heaviest)}); "
              f"heavy modules imported: {', '.join(heavy) or 'none'}")
    check = check_spread(walls)
    if not check.reliable:
        print(check.warning())


if __name__ == "__main__":
    main()
