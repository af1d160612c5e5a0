"""`make bench`: run every benchmark and write docs/benchmarks.md.

Each benchmark module exposes ``TITLE`` and ``run(quick) -> markdown``. ``--quick`` runs small
settings (a smoke test); ``--only NAME`` runs one module and replaces only its section of the page.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine  # noqa: E402

MODULES = [
    "bench_demo",
    "bench_fl_speed",
    "bench_fl_scale",
    "bench_dpsgd",
    "bench_accounting",
    "bench_mcmahan",
    "bench_mcmahan_cnn",
    "bench_mcmahan_cnn_long",
    "bench_dp_fedavg_curve",
    "bench_dp_mnist",
    "bench_deanonymization",
    "bench_inversion",
    "bench_membership",
    "bench_gradient_inversion",
    "bench_defences",
    "bench_pate",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None)
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    if args.only and args.only not in MODULES:
        parser.error(f"--only must be one of {', '.join(MODULES)}; got {args.only!r}")
    torch.set_num_threads(1)
    sections = []
    for name in MODULES:
        if args.only and name != args.only:
            continue
        mod = importlib.import_module(name)
        t0 = time.perf_counter()
        print(f"running {name} ...", flush=True)
        body = mod.run(quick=args.quick)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        sections.append(
            f"## {mod.TITLE}\n\n{body}\n\n_{name}: {time.perf_counter() - t0:.0f} s, run {when}_\n"
        )
    header = (
        "# Benchmarks\n\n"
        "Written by `make bench` (benchmarks/run_all.py); each section comes from one run of its module on "
        "the machine below (`--only NAME` reruns one section). Times are medians where repeated; ratios "
        "compare runs made in the same process.\n\n"
        f"Machine: {machine()}.\n\n"
    )
    out = Path(args.out)
    if args.only and out.exists():
        text = out.read_text()
        mod = importlib.import_module(args.only)
        head = f"## {mod.TITLE}\n"
        if head in text:
            start = text.index(head)
            nxt = text.find("\n## ", start + len(head))
            text = text[:start] + sections[0] + (text[nxt + 1 :] if nxt != -1 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + sections[0]
        out.write_text(text)
    else:
        out.write_text(header + "\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
