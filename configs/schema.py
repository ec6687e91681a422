"""Pydantic models of the configuration files (the single definition of their shape)."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The GPU-instance shapes an MPS GPU type gets when its YAML entry lists no profiles: the five
# MIG shapes Clover plans with (id, compute slices, memory slots, starts, max instances), so the
# placement rule and the planner treat an MPS GPU exactly like a MIG one.
MPS_SHAPES: tuple[tuple[int, int, int, tuple[int, ...], int], ...] = (
    (19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7),
    (14, 2, 2, (0, 2, 4), 3),
    (9, 3, 4, (0, 4), 2),
    (5, 4, 4, (0,), 1),
    (0, 7, 8, (0,), 1),
)


# The catalog key of the host CPU (`--execution real` on a machine without a GPU): one device that
# is never cut, so its only "slice" is the whole of it (`partitioning: none`).
HOST_CPU = "CPU"


def whole_device_profiles(memory_gib: float, total_sms: int, memory_slots: int = 8,
                          compute_slices: int = 7) -> list[dict]:
    """The one profile of a device that is never partitioned: all of it, named like a GPU's whole-device
    profile (`7g.whole`; ID 0 as MIG's 7g) so plans, columns and accounting read it as they read a 7g slice."""
    return [{"id": 0, "name": f"{compute_slices}g.whole", "compute_slices": compute_slices, "sms": total_sms,
            "memory_gib": memory_gib, "max_instances": 1, "starts": (0,), "size": memory_slots}]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MigProfile(_Strict):
    """One MIG GPU-instance profile as `nvidia-smi mig -lgip/-lgipp` reports it."""

    id: int = Field(ge=0)
    name: str
    compute_slices: int = Field(ge=1, le=7)
    sms: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    max_instances: int = Field(ge=1, le=7)
    starts: tuple[int, ...]
    size: int = Field(ge=1, le=8)

    @property
    def short(self) -> str:
        """Compute-slice label Clover uses (`3g`)."""
        return f"{self.compute_slices}g"


def mps_percent(compute_slices: int, total_slices: int = 7) -> int:
    """`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` of an MPS share of `compute_slices`/7 of the GPU (14, 29, 43, 57, 100)."""
    return round(100 * compute_slices / total_slices)


def mps_profiles(memory_gib: float, total_sms: int, memory_slots: int = 8, compute_slices: int = 7) -> list[dict]:
    """Profiles of an MPS GPU type: the MIG shapes, SMs from the thread percentage, memory by slots.

    Names follow NVIDIA's `<c>g.<GB>gb` with the share's memory rounded up (`3g.40gb` on an
    80 GB H100, as with MIG), so plans read the same on both kinds of GPU."""
    out = []
    for pid, c, size, starts, count in MPS_SHAPES:
        mem = memory_gib * size / memory_slots
        out.append({"id": pid, "name": f"{c}g.{math.ceil(mem - 1e-9)}gb", "compute_slices": c,
                    "sms": max(1, round(total_sms * mps_percent(c, compute_slices) / 100)),
                    "memory_gib": round(mem, 2), "max_instances": count, "starts": starts, "size": size})
    return out


class GpuType(_Strict):
    """A GPU model: its partition profiles and the physical numbers the models need.

    `partitioning: mig` types list the driver's MIG profiles; `partitioning: mps` types (GPUs
    without MIG, or MIG-capable ones run with MIG off) get `mps_profiles` unless they list their
    own: shares of the SMs through the MPS control daemon, in MIG's shapes. `partitioning: none`
    (the host CPU) gets `whole_device_profiles`; its `total_sms` counts cores."""

    name: str = ""
    partitioning: Literal["mig", "mps", "none"] = "mig"
    product_names: tuple[str, ...] = ()
    memory_gib: float = Field(gt=0)
    total_sms: int = Field(gt=0)
    memory_slots: int = Field(default=8, ge=1)
    compute_slices: int = Field(default=7, ge=1)
    idle_power_w: float = Field(gt=0)
    max_power_w: float = Field(gt=0)
    relative_speed: float = Field(default=1.0, gt=0)
    source: str = ""
    verified: bool = True
    # Prefix of this type's bundled performance profiles (configs/profiles/<prefix>_*.json), what
    # `--execution real` predicts with on such a GPU; "" when none are bundled.
    bundled_profiles: str = ""
    profiles: tuple[MigProfile, ...]

    @model_validator(mode="before")
    @classmethod
    def _derive_profiles(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        derive = {"mps": mps_profiles, "none": whole_device_profiles}.get(data.get("partitioning", "mig"))
        if derive is None or "profiles" in data or "memory_gib" not in data or "total_sms" not in data:
            return data  # MIG lists its profiles; else the field checks say what is missing
        return {**data, "profiles": derive(float(data["memory_gib"]), int(data["total_sms"]),
                                           int(data.get("memory_slots", 8)), int(data.get("compute_slices", 7)))}

    def scaled_to(self, cores: int, idle_power_w: float | None = None, max_power_w: float | None = None) -> GpuType:
        """This type fitted to one machine: `cores` of them (`total_sms`, the whole profile's SMs) and its
        power figures — measured ones where given, else the catalog's scaled by cores/`total_sms`.

        Why: the catalog cannot know a host's CPU; its entry describes a nominal one, and a CPU
        profile (gpu_node/cpu_profile.py) says how many cores this host gives Clover."""
        if cores < 1:
            raise ValueError(f"{self.name}: cores must be >= 1, got {cores}")
        share = cores / self.total_sms
        idle = idle_power_w if idle_power_w is not None else self.idle_power_w * share
        top = max(max_power_w if max_power_w is not None else self.max_power_w * share, idle + 1e-3)
        profiles = tuple(p.model_copy(update={"sms": max(1, round(p.sms * share))}) for p in self.profiles)
        return self.model_copy(update={"total_sms": cores, "idle_power_w": idle, "max_power_w": top,
                                       "profiles": profiles})

    def mps_percent(self, profile: MigProfile) -> int:
        """The MPS active-thread percentage of a profile (its compute slices out of the GPU's)."""
        return mps_percent(profile.compute_slices, self.compute_slices)

    @model_validator(mode="after")
    def _check_profiles(self) -> GpuType:
        ids = [p.id for p in self.profiles]
        names = [p.name for p in self.profiles]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate profile id in {ids}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate profile name in {names}")
        for p in self.profiles:
            bad = [s for s in p.starts if s < 0 or s + p.size > self.memory_slots]
            if bad:
                raise ValueError(
                    f"profile {p.name}: start slots {bad} with size {p.size} do not fit "
                    f"in {self.memory_slots} memory slots"
                )
        return self

    def profile(self, key: str | int) -> MigProfile:
        """Look a profile up by ID, name (`3g.40gb`) or compute-slice label (`3g`)."""
        for p in self.profiles:
            if key == p.id or key == p.name or (isinstance(key, str) and key.isdigit() and int(key) == p.id):
                return p
        main = [p for p in self.profiles if p.short == key and "+" not in p.name]
        if main:
            return min(main, key=lambda p: p.memory_gib)
        known = ", ".join(f"{p.name} (ID {p.id})" for p in self.profiles)
        raise KeyError(f"unknown MIG profile {key!r} for {self.name}; known: {known}")


class GpuCatalog(_Strict):
    gpu_types: dict[str, GpuType]
    main_profile_ids: tuple[int, ...]

    @model_validator(mode="after")
    def _name_types(self) -> GpuCatalog:
        for key, gt in self.gpu_types.items():
            object.__setattr__(gt, "name", key)
            defined = {p.id for p in gt.profiles}
            missing = set(self.main_profile_ids) - defined
            if gt.partitioning == "none" and defined & set(self.main_profile_ids):
                continue  # a device that is never cut has only its whole-device profile
            if missing:
                raise ValueError(f"gpu_types.{key}: main profile ids {sorted(missing)} are not defined")
        return self

    def with_type(self, gt: GpuType) -> GpuCatalog:
        """This catalog with `gt` in place of the entry of the same name (a machine's own CPU)."""
        self.get(gt.name)
        return self.model_copy(update={"gpu_types": {**self.gpu_types, gt.name: gt}})

    def get(self, name: str) -> GpuType:
        try:
            return self.gpu_types[name]
        except KeyError:
            raise KeyError(
                f"unknown GPU type {name!r}; known: {', '.join(self.gpu_types)}"
            ) from None

    def for_partitioning(self, gpu_type: str, partitioning: str) -> str:
        """The catalog key of `gpu_type` partitioned by `partitioning`: itself, or its `<key>-MPS` twin
        (an H100 run with MIG off is `H100-80GB-MPS`)."""
        if self.get(gpu_type).partitioning == partitioning:
            return gpu_type
        twin = f"{gpu_type}-MPS" if partitioning == "mps" else gpu_type.removesuffix("-MPS")
        if twin in self.gpu_types and self.gpu_types[twin].partitioning == partitioning:
            return twin
        fitting = [k for k, gt in self.gpu_types.items() if gt.partitioning == partitioning]
        raise KeyError(f"GPU type {gpu_type!r} has no {partitioning.upper()} entry in the GPU catalog; "
                       f"{partitioning.upper()} types: {', '.join(fitting)}")

    def main_profiles(self, gpu_type: str | GpuType) -> tuple[MigProfile, ...]:
        """The profiles Clover plans with on this type: the main IDs it defines (all five on a GPU, the
        whole device alone on a `partitioning: none` type)."""
        gt = self.get(gpu_type) if isinstance(gpu_type, str) else gpu_type
        defined = {p.id for p in gt.profiles}
        return tuple(gt.profile(i) for i in self.main_profile_ids if i in defined)


class Variant(_Strict):
    name: str
    profile_key: str
    accuracy: float = Field(gt=0, le=100)
    params_m: float = Field(gt=0)
    accuracy_source: str = Field(min_length=3)
    clover: bool = False


class Service(_Strict):
    name: str = ""
    task: str
    metric: str
    input: str = Field(pattern="^(image|qa-json)$")
    default_sla_ms: float | None = Field(default=None, gt=0)
    base_variant: str
    variants: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_base(self) -> Service:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names in {names}")
        if self.base_variant not in names:
            raise ValueError(f"base_variant {self.base_variant!r} is not one of {names}")
        return self

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"unknown variant {name!r} of service {self.name!r}; known: {[v.name for v in self.variants]}")

    @property
    def base(self) -> Variant:
        return self.variant(self.base_variant)


class ServiceCatalog(_Strict):
    services: dict[str, Service]

    @model_validator(mode="after")
    def _name_services(self) -> ServiceCatalog:
        for key, svc in self.services.items():
            object.__setattr__(svc, "name", key)
        return self

    def get(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"unknown service {name!r}; known: {', '.join(self.services)}") from None
