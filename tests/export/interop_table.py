"""Print the NIR interop table (direction x peer x network) from the cases test_interop.py runs.

    python -m tests.export.interop_table > results/nir-interop/table.md
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings

from tests.export._interop import DIRECTIONS, NETWORKS, PEERS, case

LABEL = {"snntorch": "snnTorch", "norse": "Norse", "spikingjelly": "SpikingJelly", "nirtorch": "nirtorch"}


def _cell(out, notes: list[str], key: str) -> str:
    at = re.search(r"Read at dt=(\S+?)\.", out.note)
    loads = f"loads at dt={at.group(1)}" if at else "loads"
    if out.status == "identical":
        return f"{loads}, **identical**"
    if out.status == "n/a":
        return "n/a (no such export)"
    notes.append(f"{key}: {out.note}" + (f" The alternative, run: {out.alternative}" if out.alternative else ""))
    mark = f"[{len(notes)}]"
    if out.status == "refused":
        why = re.search(r"has no (\w+) node|takes one (\w+) per layer", out.note)
        short = (f"no {why.group(1)} node" if why.group(1) else f"one {why.group(2)} per layer") if why else "refused"
        alt = "; the alternative **identical**" if out.alternative.startswith("identical") else ""
        return f"refused {mark}: {short}{alt}"
    return f"{loads}, **differs** {mark}"


def main() -> None:
    warnings.simplefilter("ignore")
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("snntorch", "norse", "spikingjelly",
                                                                          "nirtorch", "nir"))
    print(f"NIR interop of spikescan with each peer's own importer / exporter ({versions}).")
    print("Spikes compared exactly (float64 where the peer allows, float32 for snnTorch and Norse, inputs kept")
    print("5e-4 from every threshold); LI readouts to 1e-5 of their scale. Made by")
    print("`python -m tests.export.interop_table`, the cases of `tests/export/test_interop.py`.\n")
    notes: list[str] = []
    for direction in DIRECTIONS:
        print(f"**{direction}**\n")
        print("| network | " + " | ".join(LABEL[p] for p in PEERS) + " |")
        print("|---|" + "---|" * len(PEERS))
        for network in NETWORKS:
            cells = [_cell(case(direction, p, network), notes, f"{direction}, {LABEL[p]}, {network}") for p in PEERS]
            print(f"| {network} | " + " | ".join(cells) + " |")
        print()
    for i, note in enumerate(notes, 1):
        print(f"[{i}] {note}\n")


if __name__ == "__main__":
    main()
