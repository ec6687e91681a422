"""CPU package and DRAM energy through the Linux powercap RAPL interface.

Reads `<root>/intel-rapl:N/energy_uj` (package N) and its `dram` sub-zone; core/uncore
sub-zones are skipped because the package already contains them. Each counter wraps at
`max_energy_range_uj`; one wrap per window is unwrapped (a package at 200 W wraps about every
20 minutes at the usual 2^38 uJ range, so windows must stay shorter than that).

Since Linux 5.10 `energy_uj` is readable by root only: permission denied is reported once and
the meter returns estimated, empty measurements rather than a guessed TDP.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from gpu_node.meters.base import WindowMeter, counter_delta

DEFAULT_ROOT = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE = re.compile(r"^intel-rapl:(\d+):(\d+)$")


class RaplMeter(WindowMeter):
    source = "rapl"

    def __init__(self, root: str | Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._zones: dict[str, Path] = {}  # device id ("cpu0", "cpu0-dram") -> zone directory
        self._ranges: dict[str, float] = {}
        root = Path(root)
        for zone in sorted(root.glob("intel-rapl:*")):
            pkg = _PACKAGE.match(zone.name)
            if pkg:
                self._add(f"cpu{pkg.group(1)}", zone)
                for child in sorted(zone.glob("intel-rapl:*")):
                    if _SUBZONE.match(child.name) and _name(child) == "dram":
                        self._add(f"cpu{pkg.group(1)}-dram", child)
        if not self._zones:
            self._mark_unavailable(f"no RAPL zones under {root} (not an Intel/AMD CPU with powercap, or a VM)")
            return
        try:
            self._read()
        except PermissionError as exc:
            self._mark_unavailable(
                f"cannot read {exc.filename}: permission denied (Linux >= 5.10 restricts energy_uj to root; "
                "grant read access, e.g. a udev rule or `chmod o+r` on the energy_uj files, to measure the CPU)"
            )
        except OSError as exc:
            self._mark_unavailable(f"cannot read RAPL counters: {exc}")

    def _add(self, dev: str, zone: Path) -> None:
        self._zones[dev] = zone
        try:
            self._ranges[dev] = float((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            self._ranges[dev] = 0.0  # unknown range: a backwards step cannot be unwrapped

    def devices(self) -> list[str]:
        return list(self._zones)

    def _read(self) -> dict[str, float]:
        return {dev: float((zone / "energy_uj").read_text()) for dev, zone in self._zones.items()}

    def _measure(self, start: dict[str, float], end: dict[str, float], duration_s: float
                 ) -> tuple[dict[str, float], list[str]]:
        energy: dict[str, float] = {}
        notes: list[str] = []
        for dev in self._zones:
            delta = counter_delta(start[dev], end[dev], self._ranges[dev] or None)
            if delta is None:
                notes.append(f"{dev}: energy counter went backwards and its range is unknown; no figure")
            else:
                energy[dev] = delta / 1e6
        return energy, notes


def _name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError:
        return ""
