"""Compare a `gpu-node profile` output with the bundled H100 profile (ratio table).

    .venv/bin/python bench/compare_profiles.py NEW.json [--reference configs/profiles/h100-sxm_full-gpu.json]

One row per (variant, dtype, batch) present in both files: p50 latency (both), and p50
latency, throughput and energy per item as new / reference ratios. Ratios near 1 on an H100 mean the profiler reproduces the
bundled measurements; the reference's fp16 batch-1 small-model numbers are launch-bound and
noisy (see docs/data.md, "Measured model-variant profiles"), so judge those loosely.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = REPO / "configs" / "profiles" / "h100-sxm_full-gpu.json"
METRICS = (("lat_ms_p50", "p50 ms"), ("items_per_s", "items/s"), ("energy_j_per_item", "J/item"))


@dataclass(frozen=True)
class Row:
    variant: str
    dtype: str
    batch: int
    new: dict
    ref: dict

    def ratio(self, field: str) -> float | None:
        a, b = self.new.get(field), self.ref.get(field)
        return None if a is None or not b else a / b


def _runs(doc: dict) -> dict[tuple[str, str, int], dict]:
    return {
        (key, run["dtype"], run["batch"]): run
        for key, var in doc["variants"].items() if "runs" in var
        for run in var["runs"]
    }


def compare(new: dict, ref: dict) -> list[Row]:
    """Rows for every (variant, dtype, batch) measured in both documents, in the new file's order."""
    ref_runs = _runs(ref)
    return [Row(*k, run, ref_runs[k]) for k, run in _runs(new).items() if k in ref_runs]


def _fmt(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def print_table(rows: list[Row], new_info: dict, ref_info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"new: {new_info.get('gpu')} (torch {new_info.get('torch')}, MIG {new_info.get('mig_profile')}) "
                        f"vs reference: {ref_info.get('gpu')} (torch {ref_info.get('torch')})")
    for col in ("variant", "dtype", "batch", "p50 ms new", "p50 ms ref"):
        table.add_column(col, justify="left" if col in ("variant", "dtype") else "right")
    for _, label in METRICS:
        table.add_column(f"{label} ratio", justify="right", style="bold")
    for row in rows:
        cells = [row.variant, row.dtype, str(row.batch), _fmt(row.new["lat_ms_p50"]), _fmt(row.ref["lat_ms_p50"])]
        table.add_row(*cells, *(_fmt(row.ratio(field)) for field, _ in METRICS))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log file should not wrap the table at 80 columns
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path, help="profile JSON written by `gpu-node profile`")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    args = parser.parse_args(argv)
    new, ref = (json.loads(p.read_text()) for p in (args.new, args.reference))
    rows = compare(new, ref)
    if not rows:
        print(f"no (variant, dtype, batch) in {args.new} is also in {args.reference}")
        return 1
    print_table(rows, new["info"], ref["info"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
