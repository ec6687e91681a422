"""MPS profiles of another GPU against the performance model fitted on the bundled H100 data.

    .venv/bin/python bench/mps_compare.py merge DIR --prefix h200 --out configs/profiles
    .venv/bin/python bench/mps_compare.py report --prefix h200 --gpu-type H200-141GB-MPS [--pair pair.json]

`merge` joins the per-service files `gpu-node profile --mps-percent` wrote (`<prefix>_<service>_
mps-<pct>pct.json`) into one file per share (`<prefix>_mps-<pct>pct.json`, all variants, the
bundled files' shape; `idle_power_w` is the median of the services' idle readings). `report`
prints Markdown tables: measured vs predicted mean batch latency and dynamic power per point,
the error of a model fitted on the new files themselves, and, with `--pair` (bench/gpu_mps_pair.py
output), two replicas sharing the GPU against the model's prediction for that layout.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.loader import PROFILE_DIR, load_gpu_catalog, profile_paths
from models.performance import PerformanceModel

SHARE_FILE = re.compile(r"^(?P<prefix>.+?)_(?P<service>[a-z]+)_mps-(?P<pct>\d+)pct\.json$")


def merge(src: Path, prefix: str, out: Path) -> list[Path]:
    by_share: dict[int, list[dict]] = defaultdict(list)
    for f in sorted(src.glob(f"{prefix}_*_mps-*pct.json")):
        m = SHARE_FILE.match(f.name)
        if m:
            by_share[int(m["pct"])].append({"file": f.name, **json.loads(f.read_text())})
    written = []
    for pct, docs in sorted(by_share.items()):
        info = {k: v for k, v in docs[0]["info"].items()}
        info["idle_power_w"] = round(median(d["info"]["idle_power_w"] for d in docs), 2)
        info["merged_from"] = [d["file"] for d in docs]
        variants = {k: v for d in docs for k, v in d["variants"].items()}
        path = out / f"{prefix}_mps-{pct}pct.json"
        path.write_text(json.dumps({"info": info, "variants": variants}, indent=1) + "\n")
        written.append(path)
    return written


def _slices(gpu_type: str) -> dict[int, int]:
    """MPS thread percentage -> compute slices of the catalog's main profiles (14 -> 1, …, 100 -> 7)."""
    cat = load_gpu_catalog()
    gt = cat.get(gpu_type)
    return {gt.mps_percent(p): p.compute_slices for p in cat.main_profiles(gpu_type)}


def _points(files: list[Path]) -> list[tuple[str, int, int, float, float | None]]:
    """(variant, pct, batch, measured mean ms, measured dynamic W) for every fp16 run."""
    out = []
    for f in files:
        doc = json.loads(f.read_text())
        pct, idle = int(doc["info"]["mps_active_thread_pct"]), doc["info"]["idle_power_w"]
        for key, var in doc["variants"].items():
            for run in var.get("runs", []):
                power = run.get("avg_power_w_counter")
                out.append((key, pct, run["batch"], run["lat_ms_mean"], None if power is None else power - idle))
    return sorted(out)


def _pct_err(pred: float, meas: float) -> float:
    return 100.0 * (pred - meas) / meas


def report(prefix: str, gpu_type: str, pair: Path | None) -> None:
    h100 = PerformanceModel.default()
    files = profile_paths(prefix)
    own = PerformanceModel.from_profiles(files)
    slices = _slices(gpu_type)
    print("| variant | batch | share | measured ms | H100-fit ms | error | own-fit ms | error | "
          "measured dyn. W | H100-fit W |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    errs, own_errs, by_share = [], [], defaultdict(list)
    for key, pct, batch, lat, dyn in _points(files):
        c = slices[pct]
        pred = h100.batch_latency_ms(key, gpu_type, c, batch)
        mine = own.batch_latency_ms(key, gpu_type, c, batch)
        pw = h100.busy_power_w(key, gpu_type, c, batch)
        errs.append(abs(_pct_err(pred, lat)))
        own_errs.append(abs(_pct_err(mine, lat)))
        by_share[pct].append(abs(_pct_err(pred, lat)))
        print(f"| {key} | {batch} | {pct} % | {lat:.1f} | {pred:.1f} | {_pct_err(pred, lat):+.0f} % | {mine:.1f} | "
              f"{_pct_err(mine, lat):+.0f} % | {'—' if dyn is None else f'{dyn:.0f}'} | {pw:.0f} |")
    print(f"\nH100-fitted model on {gpu_type}: median |error| {median(errs):.0f} %, max {max(errs):.0f} % "
          f"({len(errs)} points); per share: "
          + ", ".join(f"{p} %: {median(v):.0f} %" for p, v in sorted(by_share.items())))
    print(f"model fitted on these files themselves: median |error| {median(own_errs):.0f} %, "
          f"max {max(own_errs):.0f} %")
    if pair is not None:
        _pair_report(json.loads(pair.read_text()), h100, gpu_type, slices)


def _pair_report(doc: dict, perf: PerformanceModel, gpu_type: str, slices: dict[int, int]) -> None:
    cat = load_gpu_catalog()
    print("\n| replica | share | phase | measured items/s | predicted items/s | error |")
    print("|---|---|---|---:|---:|---:|")
    dyn = 0.0
    for name, r in doc["replicas"].items():
        key = r["profile_key"]
        c = slices[int(r["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"])]
        pred = perf.throughput_rps(key, gpu_type, c, r["batch"])
        dyn += perf.busy_power_w(key, gpu_type, c, r["batch"])
        for phase, ph in doc["phases"].items():
            if name in ph["replicas"]:
                got = ph["replicas"][name]["items_per_s"]
                print(f"| {name}: {key} b{r['batch']} | {r['share']} ({r['env']['CUDA_MPS_ACTIVE_THREAD_PERCENTAGE']} %) "
                      f"| {phase} | {got:.0f} | {pred:.0f} | {_pct_err(pred, got):+.0f} % |")
    idle = cat.get(gpu_type).idle_power_w
    pred_w = min(idle + dyn, perf.max_power_w(gpu_type))
    together = doc["phases"]["together"]
    print(f"\nGPU power with both replicas busy: measured {together['avg_w']:.0f} W (NVML counter over "
          f"{together['duration_s']:.1f} s, {together['energy_j']:.0f} J), predicted {pred_w:.0f} W "
          f"(idle {idle:.0f} W + dynamic {dyn:.0f} W), error {_pct_err(pred_w, together['avg_w']):+.0f} %; "
          f"measured idle {doc['idle']['avg_w']:.0f} W")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("src", type=Path)
    m.add_argument("--prefix", required=True)
    m.add_argument("--out", type=Path, default=PROFILE_DIR)
    r = sub.add_parser("report")
    r.add_argument("--prefix", required=True)
    r.add_argument("--gpu-type", required=True)
    r.add_argument("--pair", type=Path, default=None)
    args = p.parse_args()
    if args.cmd == "merge":
        for path in merge(args.src, args.prefix, args.out):
            print(f"wrote {path}")
    else:
        report(args.prefix, args.gpu_type, args.pair)
    return 0


if __name__ == "__main__":
    sys.exit(main())
