"""MIG backend that drives the `nvidia-smi` binary of a real GPU node.

Every call is an argument list (never a shell) with a timeout. Failures are read from the
tool's own `Unable to …: REASON` lines and mapped to MigError subclasses, so callers handle
the simulated and the real node the same way. Placement is always explicit (`-cgi 9:4 -C`):
the driver's own choice of slot depends on creation order (the MIG user guide's "3g must come
first" note) and would break the planner's layouts.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

from configs.loader import load_gpu_catalog
from configs.schema import MigProfile
from mig.errors import (
    InstanceInUseError,
    MigDisabledError,
    MigError,
    NvidiaSmiError,
    PlacementError,
    UnknownProfileError,
)
from mig.smi_parse import (
    has_no_mig_devices,
    mig_mode_enabled,
    parse_created,
    parse_failures,
    parse_lci,
    parse_lgi,
    parse_list,
    parse_query_csv,
    profiles_from_smi,
)
from mig.types import GpuInfo, GpuInstance

QUERY_FIELDS = "index,uuid,name,mig.mode.current"


def gpu_type_for_product(product_name: str, partitioning: str = "mig") -> str:
    """Catalog key for a product name under a partitioning (`NVIDIA H100 80GB HBM3` -> `H100-80GB`,
    or `H100-80GB-MPS` for MPS shares); "" if the catalog has no such entry."""
    for key, gt in load_gpu_catalog().gpu_types.items():
        if product_name in gt.product_names and gt.partitioning == partitioning:
            return key
    return ""


class NvidiaSmiBackend:
    """MigBackend over `nvidia-smi`. `runner` is injectable for tests of the retry logic.

    It needs no leases to refuse destroying a busy instance: the driver sees the processes."""

    partitioning = "mig"

    def __init__(self, binary: str = "nvidia-smi", *, timeout_s: float = 60.0, dci_retries: int = 5,
                 retry_delay_s: float = 0.5,
                 runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.dci_retries = dci_retries
        self.retry_delay_s = retry_delay_s
        self._runner = runner
        self._profiles: dict[int, list[MigProfile]] = {}

    # ----------------------------------------------------------------- running the tool
    def _run(self, *args: str) -> tuple[int, str]:
        """(exit code, stdout+stderr). Missing binary or timeout -> NvidiaSmiError."""
        cmd = [self.binary, *args]
        if self._runner is subprocess.run and shutil.which(self.binary) is None:
            raise NvidiaSmiError(
                f"{self.binary!r} not found on PATH: this node has no NVIDIA driver installed "
                "(install it, pass the binary's path, or use --backend simulated)", command=cmd)
        try:
            proc = self._runner(cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise NvidiaSmiError(f"{self.binary!r} could not be executed", command=cmd) from None
        except subprocess.TimeoutExpired:
            raise NvidiaSmiError(f"`{' '.join(cmd)}` did not finish within {self.timeout_s:.0f} s "
                                 "(driver busy or hung; check `dmesg` for NVRM errors)", command=cmd) from None
        return proc.returncode, (proc.stdout or "") + (proc.stderr or "")

    def _check(self, *args: str) -> str:
        rc, out = self._run(*args)
        if rc != 0:
            raise self._error(args, rc, out)
        return out

    def _error(self, args: tuple[str, ...], rc: int, out: str) -> MigError:
        """The MigError subclass that matches the tool's failure reason."""
        text = out.strip() or f"exit code {rc}"
        if has_no_mig_devices(out):
            return MigDisabledError(f"{text} (enable MIG with `gpu-node mig enable --gpu N --yes`)")
        failures = parse_failures(out)
        reason = failures[0].reason if failures else ""
        first = f"Unable to {failures[0].what}: {reason}" if failures else text
        if reason == "In use by another client":
            return InstanceInUseError(first)
        if reason == "Insufficient Resources":
            return PlacementError(first)
        if reason == "Invalid Argument":
            return UnknownProfileError(first)
        return NvidiaSmiError(f"`nvidia-smi {' '.join(args)}` failed: {text}", command=[self.binary, *args],
                              returncode=rc, output=out)

    # ----------------------------------------------------------------- MigBackend
    def list_gpus(self) -> list[GpuInfo]:
        out = self._check(f"--query-gpu={QUERY_FIELDS}", "--format=csv")
        return [GpuInfo(index=int(r["index"]), uuid=r["uuid"], name=r["name"],
                        gpu_type=gpu_type_for_product(r["name"]), enabled=mig_mode_enabled(r["mig.mode.current"]))
                for r in parse_query_csv(out)]

    def set_mig_mode(self, gpu: int, enabled: bool) -> str:
        """`nvidia-smi -i N -mig 0|1`. The message may say the change is pending a GPU reset."""
        self._profiles.pop(gpu, None)
        return self._check("-i", str(gpu), "-mig", "1" if enabled else "0").strip()

    def profiles(self, gpu: int) -> list[MigProfile]:
        """The GPU's own profile table (`-lgip` + `-lgipp`): the truth even for GPUs not in the catalog."""
        if gpu not in self._profiles:
            lgip = self._check("mig", "-i", str(gpu), "-lgip")
            lgipp = self._check("mig", "-i", str(gpu), "-lgipp")
            self._profiles[gpu] = profiles_from_smi(lgip, lgipp, gpu)
        return self._profiles[gpu]

    def list_instances(self, gpu: int) -> list[GpuInstance]:
        """GPU instances from `-lgi`, with MIG device UUIDs from `-L`.

        `-L` lists a GPU's MIG devices in GPU-instance-ID order (the `MIG Dev` column of the
        nvidia-smi table), one per compute instance, so UUIDs are matched in that order."""
        lgi = self._check("mig", "-i", str(gpu), "-lgi")
        if has_no_mig_devices(lgi):
            return []
        gis = [g for g in parse_lgi(lgi) if g.gpu == gpu]
        cis = sorted((c.gi_id, c.ci_id) for c in parse_lci(self._check("mig", "-i", str(gpu), "-lci")) if c.gpu == gpu)
        listed = next((g for g in parse_list(self._check("-L")) if g.index == gpu), None)
        devices = listed.mig_devices if listed else ()
        if len(devices) != len(cis):
            raise NvidiaSmiError(f"GPU {gpu}: `nvidia-smi -L` lists {len(devices)} MIG devices but `mig -lci` "
                                 f"lists {len(cis)} compute instances; retry once the driver has settled")
        uuid_by_gi: dict[int, str] = {}
        for (gi_id, _), dev in zip(cis, devices):
            uuid_by_gi.setdefault(gi_id, dev.uuid)
        return [GpuInstance(gpu_index=gpu, gi_id=g.gi_id, profile=g.profile, profile_id=g.profile_id, start=g.start,
                            size=g.size, uuid=uuid_by_gi.get(g.gi_id, ""))
                for g in sorted(gis, key=lambda g: g.gi_id)]

    def create_instance(self, gpu: int, profile: str, start: int) -> GpuInstance:
        """`nvidia-smi mig -i N -cgi PROFILE:START -C`, then the new instance as `-lgi` reports it."""
        prof = next((p for p in self.profiles(gpu) if profile in (p.name, str(p.id))), None)
        if prof is None:
            known = ", ".join(f"{p.name} (ID {p.id})" for p in self.profiles(gpu))
            raise UnknownProfileError(f"Unable to create a GPU instance on GPU {gpu} using profile {profile}: "
                                      f"Invalid Argument (the GPU offers: {known})")
        out = self._check("mig", "-i", str(gpu), "-cgi", f"{prof.id}:{start}", "-C")
        created = [c for c in parse_created(out) if c.kind == "gi" and c.gpu == gpu]
        if not created:
            raise NvidiaSmiError(f"`nvidia-smi mig -cgi {prof.id}:{start} -C` reported no new GPU instance: "
                                 f"{out.strip()}", output=out)
        gi_id = created[0].gi_id
        inst = next((i for i in self.list_instances(gpu) if i.gi_id == gi_id), None)
        if inst is None:
            raise NvidiaSmiError(f"GPU instance {gi_id} was created on GPU {gpu} but `-lgi` does not list it")
        return inst

    def destroy_instance(self, gpu: int, gi_id: int) -> None:
        """`-dci` (retried while a just-stopped process still holds it) then `-dgi`."""
        args = ("mig", "-i", str(gpu), "-gi", str(gi_id), "-dci")
        for attempt in range(self.dci_retries + 1):
            rc, out = self._run(*args)
            if rc == 0:
                break
            failures = parse_failures(out)
            if failures and failures[0].reason == "Not Found":
                break  # a GI without compute instance: nothing to destroy
            err = self._error(args, rc, out)
            if not isinstance(err, InstanceInUseError) or attempt == self.dci_retries:
                raise err
            time.sleep(self.retry_delay_s * (attempt + 1))
        self._check("mig", "-i", str(gpu), "-gi", str(gi_id), "-dgi")

    def slice_env(self, gpu: GpuInfo, inst: GpuInstance) -> dict[str, str]:
        """A process on a MIG slice sees only that MIG device."""
        return {"CUDA_VISIBLE_DEVICES": inst.uuid}
