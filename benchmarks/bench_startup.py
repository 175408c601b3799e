"""How fast the plugin answers: median wall time of whole processes, as a user at a terminal sees it.

    python benchmarks/bench_startup.py [--runs 21] [--zipapp dist/kubectl-kvbackup]

Measures the installed console scripts (kubectl-kvbackup, kubectl_complete-kvbackup next to this Python) and,
given --zipapp, the krew archive's single file run by python3 -I. Targets: --help and a completion under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DEMO = os.path.join(REPO, "examples", "demo")


def commands(plugin: list[str], complete: list[str]) -> list[tuple[str, list[str]]]:
    return [
        ("--help", [*plugin, "--help"]),
        ("version", [*plugin, "version"]),
        ("completion (graph vm)", [*complete, "graph", "vm"]),
        ("graph -f examples/demo --all", [*plugin, "graph", "-f", DEMO, "-n", "demo", "--all", "-o", "name"]),
    ]


def median_ms(argv: list[str], runs: int) -> float:
    env = {**os.environ, "KUBECONFIG": os.devnull}
    subprocess.run(argv, capture_output=True, env=env, check=True)  # warm the bytecode cache and the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--zipapp", help="the krew archive's kubectl-kvbackup, built by tools/build_krew_archive.py")
    args = parser.parse_args()
    variants = [("console scripts", [os.path.join(BIN, "kubectl-kvbackup")],
                 [os.path.join(BIN, "kubectl_complete-kvbackup")])]
    if args.zipapp:
        python = getattr(sys, "_base_executable", sys.executable)
        link = os.path.join(os.path.dirname(os.path.abspath(args.zipapp)), "kubectl_complete-kvbackup")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(args.zipapp), link)
        variants.append(("zipapp, python3 -I", [python, "-I", args.zipapp], [python, "-I", link]))
    baseline = median_ms([sys.executable, "-c", "pass"], args.runs)
    print(f"python3 -c pass: {baseline:.0f} ms (the interpreter's own start)")
    print(f"{'variant':<20} {'command':<32} {'median':>8}")
    for name, plugin, complete in variants:
        for label, argv in commands(plugin, complete):
            print(f"{name:<20} {label:<32} {median_ms(argv, args.runs):>6.0f} ms")


if __name__ == "__main__":
    main()
