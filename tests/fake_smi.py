"""A fake `nvidia-smi` driven by the simulated backend, for testing the real nvidia-smi backend.

`tests/fake_nvidia_smi/nvidia-smi` runs `main()`. It implements the subset Clover uses — `-L`,
`-i N -mig 0|1`, `--query-gpu=… --format=csv`, and `mig -lgip/-lgipp/-lgi/-lci/-cgi/-cci/-dci/-dgi`
— printing the real tool's formats (tables laid out like driver 580's, byte-identical to the
captured H100 `-lgip`/`-lgipp`) and its failure lines. State lives in the JSON file named by
`CLOVER_FAKE_SMI_STATE`; a new state file gets the GPUs of `CLOVER_FAKE_SMI_GPUS`
(default `H100-80GB:1`) with MIG mode `CLOVER_FAKE_SMI_MIG` (`1` default, `0` = disabled).
Processes on an instance are the live leases of `<state>.leases.json` (mig/leases.py): a test
that takes one there makes `-dci`/`-dgi` fail "In use by another client", as a running process would.

Exit codes follow nvidia-smi(1) RETURN VALUE: 0 success, 2 invalid argument, 6 object not
found, 255 other errors (the driver's "Insufficient Resources", "In use by another client").
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from configs.loader import load_gpu_catalog
from mig.errors import (
    InstanceInUseError,
    MigDisabledError,
    MigError,
    PlacementError,
    UnknownProfileError,
)
from mig.leases import LeaseBook
from mig.placement import first_free_start, resolve_profile
from mig.simulated import SimulatedMigBackend, parse_gpus_spec
from mig.smi_parse import NO_MIG_DEVICES
from mig.types import GpuInstance, Placement

RC_OK, RC_INVALID, RC_NOT_FOUND, RC_OTHER = 0, 2, 6, 255
# NVML compute-instance profile IDs of the full-size CI for each slice count (…_PROFILE_1_SLICE = 0, …).
CI_PROFILE_ID = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}
# memory.total: the H100 value is from the capture; the others are the nominal product sizes.
_MEMORY_MIB = {"H100-80GB": 81559, "A100-40GB": 40960, "A100-80GB": 81920, "H200-141GB": 143771}


class _Usage(Exception):
    """Bad command line: nvidia-smi prints the reason and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise _Usage(message)


def _reason(exc: MigError) -> tuple[str, int]:
    if isinstance(exc, MigDisabledError):
        return "Not Supported", RC_NOT_FOUND
    if isinstance(exc, UnknownProfileError):
        return "Invalid Argument", RC_INVALID
    if isinstance(exc, PlacementError):
        return "Insufficient Resources", RC_OTHER
    if isinstance(exc, InstanceInUseError):
        return "In use by another client", RC_OTHER
    return "Not Found", RC_NOT_FOUND


# ------------------------------------------------------------------------- table formatters
def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> str:
    bar = "+" + "-" * (width - 2) + "+"
    lines = [bar, f"| {title:<{width - 4}} |"] + [f"|{h:<{width - 2}}|" for h in header]
    lines.append("|" + "=" * (width - 2) + "|")
    for row in rows:
        lines.extend(row)
        lines.append(bar)
    return "\n".join(lines)


def format_lgip(b: SimulatedMigBackend, gpus: Sequence[int]) -> str:
    rows = []
    for gpu in gpus:
        gt = load_gpu_catalog().get(b.gpu_type(gpu))
        existing = [i.placement for i in b.list_instances(gpu)]
        for p in gt.profiles:
            free, placed = 0, list(existing)
            while (start := first_free_start(gt, placed, p.name)) is not None:
                free += 1
                placed.append(Placement(p.name, start))
            # engines as on the H100 capture: one decoder/JPEG/copy engine per slice, the full GPU
            # has 8 copy engines, and only `+me` profiles and the full GPU get the OFA
            dec = jpeg = p.compute_slices
            ce = p.size if p.compute_slices == gt.compute_slices else p.compute_slices
            ofa = 1 if ("+me" in p.name or p.compute_slices == gt.compute_slices) else 0
            rows.append([
                "|{:>4}  MIG {:<15}{:>3}     {:>3}        {:<11}{:<7}{:<7}{:<6}{:<4}|".format(
                    gpu, p.name, p.id, f"{free}/{p.max_instances}", f"{p.memory_gib:.2f}", "No", p.sms, dec, 0),
                f"|{ce:>64}{jpeg:>6}{ofa:>6}   |",
            ])
    return _table("GPU instance profiles:", [
        " GPU   Name               ID    Instances   Memory     P2P    SM    DEC   ENC  ",
        "                                Free/Total   GiB              CE    JPEG  OFA  "], rows, 81)


def format_lgipp(b: SimulatedMigBackend, gpus: Sequence[int]) -> str:
    lines = []
    for gpu in gpus:
        for p in load_gpu_catalog().get(b.gpu_type(gpu)).profiles:
            word = "Placements" if len(p.starts) > 1 else "Placement "
            lines.append(f"GPU {gpu:>2} Profile ID {p.id:>2} {word}: {{{','.join(map(str, p.starts))}}}:{p.size}")
    return "\n".join(lines)


def _profile_order(b: SimulatedMigBackend, gpu: int) -> Callable[[GpuInstance], tuple[int, int]]:
    order = {p.name: n for n, p in enumerate(load_gpu_catalog().get(b.gpu_type(gpu)).profiles)}
    return lambda i: (order[i.profile], i.gi_id)


def format_lgi(b: SimulatedMigBackend, gpus: Sequence[int]) -> str:
    rows = []
    for gpu in gpus:
        for i in sorted(b.list_instances(gpu), key=_profile_order(b, gpu)):
            rows.append(["|{:>4}  MIG {:<15}{:>5}{:>9}{:>13}     |".format(
                gpu, i.profile, i.profile_id, i.gi_id, f"{i.start}:{i.size}")])
    return _table("GPU instances:", [
        " GPU   Name               Profile  Instance   Placement  ",
        "                            ID       ID       Start:Size "], rows, 59)


def format_lci(b: SimulatedMigBackend, gpus: Sequence[int], gi_ids: set[int] | None = None) -> str:
    rows = []
    for gpu in gpus:
        for i in sorted(b.list_instances(gpu), key=_profile_order(b, gpu)):
            if b.has_compute_instance(gpu, i.gi_id) and (gi_ids is None or i.gi_id in gi_ids):
                slices = resolve_profile(b.gpu_type(gpu), i.profile).compute_slices
                rows.append(["|{:>4}{:>7}       MIG {:<14}{:>4}{:>10}{:>13}     |".format(
                    gpu, i.gi_id, i.profile, CI_PROFILE_ID[slices], 0, f"0:{slices}")])
    return _table("Compute instances:", [
        " GPU     GPU       Name             Profile   Instance   Placement  ",
        "       Instance                       ID        ID       Start:Size ",
        "         ID                                                         "], rows, 70)


def mig_devices(b: SimulatedMigBackend, gpu: int) -> list[GpuInstance]:
    """MIG devices in `nvidia-smi` order: by GPU-instance ID (the `MIG Dev` column)."""
    return [i for i in b.list_instances(gpu) if b.has_compute_instance(gpu, i.gi_id)]


def format_list(b: SimulatedMigBackend, gpus: Sequence[int]) -> str:
    lines = []
    infos = {g.index: g for g in b.list_gpus()}
    for gpu in gpus:
        g = infos[gpu]
        lines.append(f"GPU {gpu}: {g.name} (UUID: {g.uuid})")
        if g.mig_enabled:
            for n, i in enumerate(mig_devices(b, gpu)):
                lines.append(f"  MIG {i.profile:<12}Device {n:>2}: (UUID: {i.uuid})")
    return "\n".join(lines)


_QUERY_FIELDS: dict[str, tuple[str, Callable[[SimulatedMigBackend, int], str]]] = {
    "index": ("index", lambda b, g: str(g)),
    "uuid": ("uuid", lambda b, g: b.list_gpus()[g].uuid),
    "name": ("name", lambda b, g: b.list_gpus()[g].name),
    "pci.bus_id": ("pci.bus_id", lambda b, g: b.pci_bus_id(g)),
    "mig.mode.current": ("mig.mode.current", lambda b, g: "Enabled" if b.list_gpus()[g].mig_enabled else "Disabled"),
    "mig.mode.pending": ("mig.mode.pending", lambda b, g: "Enabled" if b.list_gpus()[g].mig_enabled else "Disabled"),
    "memory.total": ("memory.total [MiB]", lambda b, g: f"{_MEMORY_MIB.get(b.gpu_type(g), 0)} MiB"),
}


def format_query(b: SimulatedMigBackend, gpus: Sequence[int], fields: list[str], fmt: str) -> str:
    opts = {o.strip() for o in fmt.split(",")}
    if "csv" not in opts:
        raise _Usage(f'"{fmt}" is not a valid format. Only "csv" with optional "noheader" and "nounits" is supported')
    for f in fields:
        if f not in _QUERY_FIELDS:
            raise _Usage(f'Field "{f}" is not a valid field to query.')
    lines = []
    if "noheader" not in opts:
        lines.append(", ".join(_QUERY_FIELDS[f][0] if "nounits" not in opts else f for f in fields))
    for gpu in gpus:
        values = [_QUERY_FIELDS[f][1](b, gpu) for f in fields]
        if "nounits" in opts:
            values = [v.removesuffix(" MiB") for v in values]
        lines.append(", ".join(values))
    return "\n".join(lines)


# ------------------------------------------------------------------------- commands
def _ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _Usage(f'Invalid ID list "{text}"') from None


def _targets(b: SimulatedMigBackend, index: str | None, mig_only: bool) -> list[int]:
    gpus = b.list_gpus()
    wanted = _ints(index)
    if wanted is not None:
        for i in wanted:
            if not 0 <= i < len(gpus):
                raise _Usage(f"Invalid GPU index {i}: this machine has GPUs 0-{len(gpus) - 1}")
    chosen = wanted if wanted is not None else [g.index for g in gpus]
    return [i for i in chosen if gpus[i].mig_enabled] if mig_only else chosen


def _mig(b: SimulatedMigBackend, argv: list[str], out: list[str]) -> int:
    p = _Parser(prog="nvidia-smi mig", add_help=False, allow_abbrev=False)
    actions = p.add_mutually_exclusive_group(required=True)
    for flag in ("-lgip", "-lgipp", "-lgi", "-lci", "-dci", "-dgi"):
        actions.add_argument(flag, action="store_true")
    actions.add_argument("-cgi", metavar="PROFILES")
    actions.add_argument("-cci", nargs="?", const="", metavar="PROFILES")
    p.add_argument("-i", dest="index")
    p.add_argument("-gi", dest="gi")
    p.add_argument("-ci", dest="ci")
    p.add_argument("-C", dest="default_ci", action="store_true")
    a = p.parse_args(argv)

    if a.lgip or a.lgipp:  # profiles are listed whether or not MIG is on (see the H100 capture)
        gpus = _targets(b, a.index, mig_only=False)
        out.append(format_lgip(b, gpus) if a.lgip else format_lgipp(b, gpus))
        return RC_OK
    gpus = _targets(b, a.index, mig_only=True)
    if not gpus:
        out.append(NO_MIG_DEVICES)
        return RC_OK if (a.lgi or a.lci) else RC_NOT_FOUND
    if a.lgi:
        out.append(format_lgi(b, gpus))
    elif a.lci:
        ids = _ints(a.gi)
        out.append(format_lci(b, gpus, set(ids) if ids is not None else None))
    elif a.cgi is not None:
        return _create(b, gpus, a.cgi, a.default_ci, out)
    elif a.cci is not None:
        return _each(b, gpus, a.gi, out, "cci")
    elif a.dci:
        return _each(b, gpus, a.gi, out, "dci")
    else:
        return _each(b, gpus, a.gi, out, "dgi")
    return RC_OK


def _create(b: SimulatedMigBackend, gpus: list[int], spec: str, with_ci: bool, out: list[str]) -> int:
    for gpu in gpus:
        for token in (t.strip() for t in spec.split(",") if t.strip()):
            key, _, start = token.partition(":")
            try:
                if start and not start.isdigit():
                    raise UnknownProfileError(f"bad placement {start!r}")
                inst = b.create_gpu_instance(gpu, key, int(start) if start else None, with_ci=with_ci)
            except MigError as exc:
                reason, rc = _reason(exc)
                out.append(f"Unable to create a GPU instance on GPU {gpu:>2} using profile {token}: {reason}")
                out.append(f"Failed to create GPU instances: {reason}")
                return rc
            out.append(f"Successfully created GPU instance ID {inst.gi_id:>2} on GPU {gpu:>2} "
                       f"using profile MIG {inst.profile} (ID {inst.profile_id:>2})")
            if with_ci:
                out.append(_ci_created(b, gpu, inst))
    return RC_OK


def _ci_created(b: SimulatedMigBackend, gpu: int, inst: GpuInstance) -> str:
    slices = resolve_profile(b.gpu_type(gpu), inst.profile).compute_slices
    return (f"Successfully created compute instance ID  0 on GPU {gpu:>2} GPU instance ID {inst.gi_id:>2} "
            f"using profile MIG {inst.profile} (ID {CI_PROFILE_ID[slices]:>2})")


def _each(b: SimulatedMigBackend, gpus: list[int], gi: str | None, out: list[str], op: str) -> int:
    """-cci / -dci / -dgi on the listed GPU instances (all of them without -gi)."""
    wanted = _ints(gi)
    noun = "GPU instances" if op == "dgi" else "compute instances"
    verb = "create" if op == "cci" else "destroy"
    done = 0
    for gpu in gpus:
        insts = {i.gi_id: i for i in b.list_instances(gpu)}
        ids = wanted if wanted is not None else sorted(
            g for g in insts if op == "dgi" or b.has_compute_instance(gpu, g) != (op == "cci"))
        for gid in ids:
            inst = insts.get(gid)
            try:
                if inst is None:
                    raise MigError("not found")
                if op == "cci":
                    b.create_compute_instance(gpu, gid)
                    out.append(_ci_created(b, gpu, inst))
                elif op == "dci":
                    b.destroy_compute_instance(gpu, gid)
                    out.append(f"Successfully destroyed compute instance ID  0 from GPU {gpu:>2} GPU instance ID {gid:>2}")
                else:
                    b.destroy_gpu_instance(gpu, gid)
                    out.append(f"Successfully destroyed GPU instance ID {gid:>2} from GPU {gpu:>2}")
                done += 1
            except MigError as exc:
                reason, rc = _reason(exc)
                what = {"cci": f"create a compute instance on GPU {gpu:>2} GPU instance ID {gid:>2}",
                        "dci": f"destroy compute instance ID  0 from GPU {gpu:>2} GPU instance ID {gid:>2}",
                        "dgi": f"destroy GPU instance ID {gid:>2} from GPU {gpu:>2}"}[op]
                out.append(f"Unable to {what}: {reason}")
                out.append(f"Failed to {verb} {noun}: {reason}")
                return rc
    if not done:
        out.append(f"Failed to {verb} {noun}: Not Found")
        return RC_NOT_FOUND
    return RC_OK


def run(b: SimulatedMigBackend, argv: list[str]) -> tuple[int, str]:
    """Run one nvidia-smi command line against a simulated node: (exit code, output)."""
    out: list[str] = []
    try:
        if argv[:1] == ["mig"]:
            rc = _mig(b, argv[1:], out)
        else:
            rc = _top(b, argv, out)
    except _Usage as exc:
        out.append(str(exc))
        out.append("Run with [--help | -h] switch to get more information.")
        rc = RC_INVALID
    return rc, "\n".join(out) + ("\n" if out else "")


def _top(b: SimulatedMigBackend, argv: list[str], out: list[str]) -> int:
    p = _Parser(prog="nvidia-smi", add_help=False, allow_abbrev=False)
    p.add_argument("-L", "--list-gpus", action="store_true")
    p.add_argument("-i", "--id", dest="index")
    p.add_argument("-mig", "--multi-instance-gpu", dest="mig", choices=["0", "1"])
    p.add_argument("--query-gpu", dest="query")
    p.add_argument("--format", dest="fmt", default="csv")
    a = p.parse_args(argv)
    gpus = _targets(b, a.index, mig_only=False)
    if a.list_gpus:
        out.append(format_list(b, gpus))
    elif a.mig is not None:
        for gpu in gpus:
            try:
                out.append(b.set_mig_mode(gpu, a.mig == "1").removesuffix("\nAll done."))
            except MigError as exc:
                out.append(f"Unable to {'enable' if a.mig == '1' else 'disable'} MIG Mode for GPU "
                           f"{b.pci_bus_id(gpu)}: {_reason(exc)[0]}")
                return RC_OTHER
        out.append("All done.")
    elif a.query:
        out.append(format_query(b, gpus, [f.strip() for f in a.query.split(",") if f.strip()], a.fmt))
    else:
        raise _Usage("this fake nvidia-smi supports -L, -mig, --query-gpu and the mig sub-command")
    return RC_OK


def leases_file(state: str | os.PathLike[str]) -> str:
    """Where the fake reads the leases (processes) of the state file `state`."""
    return f"{os.fspath(state)}.leases.json"


def main(argv: list[str] | None = None) -> int:
    state = os.environ.get("CLOVER_FAKE_SMI_STATE")
    if not state:
        print("fake nvidia-smi: set CLOVER_FAKE_SMI_STATE to the simulated node's state file", file=sys.stderr)
        return RC_OTHER
    try:
        gpus = None if os.path.exists(state) else parse_gpus_spec(os.environ.get("CLOVER_FAKE_SMI_GPUS", "H100-80GB:1"))
        backend = SimulatedMigBackend(gpus=gpus, state_file=state, users=LeaseBook(leases_file(state)).live_owners,
                                      mig_enabled=os.environ.get("CLOVER_FAKE_SMI_MIG", "1") != "0")
    except (MigError, ValueError) as exc:
        print(f"fake nvidia-smi: {exc}", file=sys.stderr)
        return RC_OTHER
    rc, text = run(backend, list(sys.argv[1:] if argv is None else argv))
    sys.stdout.write(text)
    return rc
