"""Parsers for `nvidia-smi` output (pure: text in, values out).

Formats are those of the real tool: the H100 captures in tests/fixtures/nvidia-smi/ (driver
580.159.04) and NVIDIA's MIG user guide samples for the commands that change state. Column
spacing differs between driver versions (`Device 0:` vs `Device  0:`, `ID  9`), so every
pattern is whitespace-tolerant, and table rows are recognised by shape rather than position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from configs.schema import MigProfile

NO_MIG_DEVICES = "No MIG-enabled devices found."


def has_no_mig_devices(text: str) -> bool:
    """`nvidia-smi mig -lgi/-lci/...` say this (exit 0) when no GPU is in MIG mode."""
    return NO_MIG_DEVICES in text


@dataclass(frozen=True)
class SmiMigDevice:
    profile: str  # "3g.40gb"
    device_index: int
    uuid: str  # MIG-…


@dataclass(frozen=True)
class SmiGpu:
    index: int
    name: str
    uuid: str
    mig_devices: tuple[SmiMigDevice, ...] = ()


_L_GPU = re.compile(r"^GPU\s+(\d+):\s+(.+?)\s+\(UUID:\s+(GPU-[0-9A-Fa-f-]+)\)\s*$")
_L_MIG = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s+\(UUID:\s+(MIG-[0-9A-Za-z/-]+)\)\s*$")


def parse_list(text: str) -> list[SmiGpu]:
    """`nvidia-smi -L`: GPUs with the MIG devices listed under each."""
    gpus: list[SmiGpu] = []
    for line in text.splitlines():
        if m := _L_GPU.match(line):
            gpus.append(SmiGpu(int(m[1]), m[2], m[3]))
        elif (m := _L_MIG.match(line)) and gpus:
            g = gpus[-1]
            gpus[-1] = SmiGpu(g.index, g.name, g.uuid, g.mig_devices + (SmiMigDevice(m[1], int(m[2]), m[3]),))
    return gpus


@dataclass(frozen=True)
class SmiGiProfile:
    gpu: int
    name: str
    id: int
    free: int
    total: int
    memory_gib: float
    p2p: bool
    sms: int
    dec: int
    enc: int
    ce: int | None = None
    jpeg: int | None = None
    ofa: int | None = None


_LGIP_ROW = re.compile(
    r"^\|\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+(Yes|No|N/A)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s*$"
)
_LGIP_CONT = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s*$")


def parse_lgip(text: str) -> list[SmiGiProfile]:
    """`nvidia-smi mig -lgip`: GPU-instance profiles (each row has a CE/JPEG/OFA continuation)."""
    rows: list[SmiGiProfile] = []
    for line in text.splitlines():
        if m := _LGIP_ROW.match(line):
            rows.append(SmiGiProfile(int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5]), float(m[6]),
                                     m[7] == "Yes", int(m[8]), int(m[9]), int(m[10])))
        elif (m := _LGIP_CONT.match(line)) and rows and rows[-1].ce is None:
            r = rows[-1]
            rows[-1] = SmiGiProfile(r.gpu, r.name, r.id, r.free, r.total, r.memory_gib, r.p2p, r.sms, r.dec,
                                    r.enc, int(m[1]), int(m[2]), int(m[3]))
    return rows


@dataclass(frozen=True)
class SmiPlacements:
    gpu: int
    profile_id: int
    starts: tuple[int, ...]
    size: int


_LGIPP = re.compile(r"^GPU\s+(\d+)\s+Profile ID\s+(\d+)\s+Placements?\s*:\s*\{([\d,\s]*)\}:(\d+)\s*$")


def parse_lgipp(text: str) -> list[SmiPlacements]:
    """`nvidia-smi mig -lgipp`: `GPU  0 Profile ID  9 Placements: {0,4}:4` (start slots : size)."""
    out = []
    for line in text.splitlines():
        if m := _LGIPP.match(line.strip()):
            starts = tuple(int(s) for s in m[3].split(",") if s.strip())
            out.append(SmiPlacements(int(m[1]), int(m[2]), starts, int(m[4])))
    return out


def profiles_from_smi(lgip: str, lgipp: str, gpu: int = 0) -> list[MigProfile]:
    """The catalog's MigProfile entries for one GPU, built from `-lgip` and `-lgipp` output.

    Compute slices come from the name (`3g.40gb` -> 3, NVIDIA's naming rule); the instance
    count is the `Total` column, which does not depend on what is already created."""
    placements = {p.profile_id: p for p in parse_lgipp(lgipp) if p.gpu == gpu}
    out = []
    for r in parse_lgip(lgip):
        if r.gpu != gpu:
            continue
        pl = placements.get(r.id)
        if pl is None:
            raise ValueError(f"profile {r.name} (ID {r.id}) is in -lgip but has no -lgipp placement line")
        slices = re.match(r"(\d+)g\.", r.name)
        out.append(MigProfile(id=r.id, name=r.name, compute_slices=int(slices[1]) if slices else 1, sms=r.sms,
                              memory_gib=r.memory_gib, max_instances=r.total, starts=pl.starts, size=pl.size))
    return out


@dataclass(frozen=True)
class SmiGpuInstance:
    gpu: int
    profile: str
    profile_id: int
    gi_id: int
    start: int
    size: int


_LGI_ROW = re.compile(r"^\|\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s+\|\s*$")


def parse_lgi(text: str) -> list[SmiGpuInstance]:
    """`nvidia-smi mig -lgi`: GPU | Name | Profile ID | Instance ID | Placement Start:Size."""
    return [SmiGpuInstance(int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5]), int(m[6]))
            for line in text.splitlines() if (m := _LGI_ROW.match(line))]


@dataclass(frozen=True)
class SmiComputeInstance:
    gpu: int
    gi_id: int
    profile: str
    profile_id: int
    ci_id: int
    start: int | None = None  # placement columns appear in newer drivers only
    size: int | None = None


_LCI_ROW = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)(?:\s+(\d+):(\d+))?\s+\|\s*$")


def parse_lci(text: str) -> list[SmiComputeInstance]:
    """`nvidia-smi mig -lci`: GPU | GPU instance ID | Name | Profile ID | Instance ID [| Placement]."""
    out = []
    for line in text.splitlines():
        if m := _LCI_ROW.match(line):
            out.append(SmiComputeInstance(int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5]),
                                          int(m[6]) if m[6] else None, int(m[7]) if m[7] else None))
    return out


@dataclass(frozen=True)
class SmiCreated:
    kind: str  # "gi" or "ci"
    gpu: int
    gi_id: int
    profile: str
    profile_id: int
    ci_id: int | None = None


_CREATED_GI = re.compile(
    r"Successfully created GPU instance ID\s+(\d+) on GPU\s+(\d+) using profile MIG (\S+) \(ID\s+(\d+)\)")
_CREATED_CI = re.compile(
    r"Successfully created compute instance(?: ID\s+(\d+))? on GPU\s+(\d+) GPU instance ID\s+(\d+) "
    r"using profile MIG (\S+) \(ID\s+(\d+)\)")


def parse_created(text: str) -> list[SmiCreated]:
    """`nvidia-smi mig -cgi … [-C]` / `-cci`: the instances that were created, in order."""
    out = []
    for line in text.splitlines():
        if m := _CREATED_GI.search(line):
            out.append(SmiCreated("gi", int(m[2]), int(m[1]), m[3], int(m[4])))
        elif m := _CREATED_CI.search(line):
            out.append(SmiCreated("ci", int(m[2]), int(m[3]), m[4], int(m[5]), int(m[1]) if m[1] else None))
    return out


@dataclass(frozen=True)
class SmiDestroyed:
    kind: str  # "gi" or "ci"
    gpu: int
    gi_id: int
    ci_id: int | None = None


_DESTROYED_CI = re.compile(r"Successfully destroyed compute instance ID\s+(\d+) from GPU\s+(\d+) GPU instance ID\s+(\d+)")
_DESTROYED_GI = re.compile(r"Successfully destroyed GPU instance ID\s+(\d+) from GPU\s+(\d+)")


def parse_destroyed(text: str) -> list[SmiDestroyed]:
    """`nvidia-smi mig -dci` / `-dgi`: the instances that were destroyed."""
    out = []
    for line in text.splitlines():
        if m := _DESTROYED_CI.search(line):
            out.append(SmiDestroyed("ci", int(m[2]), int(m[3]), int(m[1])))
        elif m := _DESTROYED_GI.search(line):
            out.append(SmiDestroyed("gi", int(m[2]), int(m[1])))
    return out


@dataclass(frozen=True)
class SmiFailure:
    what: str  # "create a GPU instance on GPU  0 using profile 9"
    reason: str  # "Insufficient Resources", "In use by another client", "Invalid Argument", …


_FAILURE = re.compile(r"^(?:Unable|Failed) to (.+): ([^:]+?)\s*$")


def parse_failures(text: str) -> list[SmiFailure]:
    """The `Unable to …: REASON` / `Failed to …: REASON` lines nvidia-smi prints when a MIG op fails."""
    return [SmiFailure(m[1], m[2]) for line in text.splitlines() if (m := _FAILURE.match(line.strip()))]


def parse_query_csv(text: str) -> list[dict[str, str]]:
    """`nvidia-smi --query-gpu=… --format=csv`: one dict per GPU keyed by field name without unit
    (`memory.total [MiB]` -> `memory.total`); values keep their units (`81559 MiB`)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    keys = [re.sub(r"\s*\[.*\]$", "", k.strip()) for k in lines[0].split(",")]
    rows = []
    for ln in lines[1:]:
        values = [v.strip() for v in ln.split(",")]
        if len(values) != len(keys):
            raise ValueError(f"CSV row has {len(values)} fields but the header has {len(keys)}: {ln!r}")
        rows.append(dict(zip(keys, values)))
    return rows


def mig_mode_enabled(value: str) -> bool:
    """`mig.mode.current` column: `Enabled` / `Disabled` / `[N/A]` (GPU without MIG)."""
    return value.strip().lower() == "enabled"
