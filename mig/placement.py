"""The MIG placement rule: which sets of GPU instances a GPU can hold at once (pure, no I/O).

A GPU has `memory_slots` (8) memory slots and `compute_slices` (7) compute slices. A GPU-instance
profile may start only at its listed start slots (`nvidia-smi mig -lgipp`) and then occupies
`size` consecutive slots; instances never share a slot, their compute slices add up to at most
the GPU's, and no profile exceeds its instance count (`-lgip` "Total"). These four checks are
everything the driver enforces for instances created *with an explicit placement*, which is how
Clover always creates them, so one function here decides both what the planner may choose and
what the simulated backend accepts.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

from configs.loader import load_gpu_catalog
from configs.schema import GpuType, MigProfile
from mig.errors import PlacementError, UnknownProfileError
from mig.types import Layout, Placement, canonical

_SLICES_RE = re.compile(r"^(\d+)g\.")


def gpu_type_of(gpu_type: GpuType | str) -> GpuType:
    """Accept a catalog key (`"H100-80GB"`) wherever a GpuType is expected."""
    return load_gpu_catalog().get(gpu_type) if isinstance(gpu_type, str) else gpu_type


def resolve_profile(gpu_type: GpuType | str, key: str | int) -> MigProfile:
    """A profile by name (`3g.40gb`), ID (`9`, `"9"`) or compute-slice label (`3g`)."""
    gt = gpu_type_of(gpu_type)
    try:
        return gt.profile(key)
    except KeyError:
        known = ", ".join(f"{p.name} (ID {p.id})" for p in gt.profiles)
        raise UnknownProfileError(
            f"unknown MIG profile {key!r} for {gt.name}; known profiles: {known}"
        ) from None


def compute_slices_of(profile_name: str) -> int:
    """Compute slices of a profile from its name: NVIDIA names every GI profile `<n>g.<mem>gb…`."""
    m = _SLICES_RE.match(profile_name)
    if not m:
        raise UnknownProfileError(
            f"{profile_name!r} is not a MIG GPU-instance profile name (expected e.g. '3g.40gb')"
        )
    return int(m.group(1))


def tree_gi_id(memory_slots: int, start: int, size: int, taken: set[int]) -> int:
    """The driver's GI ID for a placement: node `slots/size - 1 + start/size` of the slot tree.

    Observed on A100/H100/RTX PRO: the full GPU is GI 0, halves 1-2, quarters 3-6, eighths
    7-14, so the same placement always gets the same ID (the simulated backends and the MPS
    share book number slices this way too)."""
    if memory_slots % size == 0 and start % size == 0:
        gi = memory_slots // size - 1 + start // size
        if gi not in taken:
            return gi
    return min(set(range(len(taken) + 1)) - taken)


def layout_slices(layout: Iterable[Placement]) -> tuple[int, ...]:
    """The compute-slice sizes of a layout, largest first (`(4, 2, 1)`): what the planner assigns."""
    return tuple(sorted((compute_slices_of(p.profile) for p in layout), reverse=True))


def _slot_range(a: int, b: int) -> str:
    return f"slot {a}" if a == b else f"slots {a}-{b}"


def _check_add(gt: GpuType, placed: Sequence[tuple[Placement, MigProfile]], new: Placement) -> MigProfile:
    """Raise PlacementError if `new` cannot join `placed`; return its profile."""
    prof = resolve_profile(gt, new.profile)
    if new.start not in prof.starts:
        raise PlacementError(
            f"{prof.name} cannot start at slot {new.start} on {gt.name}; "
            f"allowed start slots: {', '.join(map(str, prof.starts))}"
        )
    lo, hi = new.start, new.start + prof.size - 1
    for old, old_prof in sorted(placed, key=lambda x: x[0].start):
        olo, ohi = old.start, old.start + old_prof.size - 1
        if lo <= ohi and olo <= hi:
            raise PlacementError(
                f"{prof.name} at slot {new.start} overlaps {old_prof.name} at slot {old.start} "
                f"({_slot_range(max(lo, olo), min(hi, ohi))})"
            )
    same = sum(1 for _, p in placed if p.id == prof.id)
    if same + 1 > prof.max_instances:
        raise PlacementError(
            f"too many {prof.name} instances: at most {prof.max_instances} on {gt.name}"
        )
    used = sum(p.compute_slices for _, p in placed)
    if used + prof.compute_slices > gt.compute_slices:
        raise PlacementError(
            f"{prof.name} at slot {new.start} needs {prof.compute_slices} compute slices but only "
            f"{gt.compute_slices - used} of {gt.compute_slices} are free on {gt.name}"
        )
    return prof


def check_addition(gpu_type: GpuType | str, existing: Iterable[Placement], new: Placement) -> MigProfile:
    """Can `new` be created next to the `existing` instances? Returns its profile or raises.

    The existing instances are taken as they are (a real GPU may hold them already)."""
    gt = gpu_type_of(gpu_type)
    placed = [(p, resolve_profile(gt, p.profile)) for p in existing]
    return _check_add(gt, placed, new)


def validate_layout(gpu_type: GpuType | str, layout: Iterable[Placement]) -> Layout:
    """The canonical form of `layout` (profile names normalised) if the GPU can hold it, else raise.

    Raises UnknownProfileError (naming the known profiles) or PlacementError naming the
    conflicting profiles and slots, e.g. "3g.40gb at slot 4 overlaps 2g.20gb at slot 4 (slots 4-5)".
    """
    gt = gpu_type_of(gpu_type)
    placed: list[tuple[Placement, MigProfile]] = []
    for p in layout:
        prof = _check_add(gt, placed, p)
        placed.append((Placement(prof.name, p.start), prof))
    return canonical([p for p, _ in placed])


def is_valid_layout(gpu_type: GpuType | str, layout: Iterable[Placement]) -> bool:
    try:
        validate_layout(gpu_type, layout)
    except PlacementError:
        return False
    return True


def first_free_start(gpu_type: GpuType | str, existing: Iterable[Placement], profile: str | int) -> int | None:
    """The lowest start slot where `profile` fits next to `existing`, or None (no room)."""
    gt = gpu_type_of(gpu_type)
    placed = [(p, resolve_profile(gt, p.profile)) for p in existing]
    prof = resolve_profile(gt, profile)
    for start in prof.starts:
        try:
            _check_add(gt, placed, Placement(prof.name, start))
        except PlacementError:
            continue
        return start
    return None


def main_profile_names(gpu_type: GpuType | str) -> tuple[str, ...]:
    """The profiles Clover plans with (catalog `main_profile_ids`: 1g, 2g, 3g, 4g, 7g; a device that
    is never cut, the host CPU, has only the whole-device one)."""
    return tuple(p.name for p in load_gpu_catalog().main_profiles(gpu_type_of(gpu_type)))


def _layout_order(gt: GpuType):
    """Sort key: biggest instances first at each slot, so `7g@0` comes first and `1g`×7 last."""
    slices = {p.name: p.compute_slices for p in gt.profiles}

    def key(layout: Layout) -> tuple:
        return tuple((p.start, -slices[p.profile], p.profile) for p in layout)

    return key


def _search(gt: GpuType, profiles: tuple[MigProfile, ...]) -> Iterator[tuple[list[Placement], int, dict[int, int]]]:
    """Every valid layout once: at the lowest undecided slot either leave it empty or start an
    instance there (an instance covering that slot must start there, so no layout repeats)."""
    chosen: list[Placement] = []
    counts = {p.id: 0 for p in profiles}

    def rec(slot: int, used: int) -> Iterator[tuple[list[Placement], int, dict[int, int]]]:
        if slot >= gt.memory_slots:
            yield chosen, used, counts
            return
        yield from rec(slot + 1, used)
        for p in profiles:
            if (slot in p.starts and slot + p.size <= gt.memory_slots
                    and used + p.compute_slices <= gt.compute_slices and counts[p.id] < p.max_instances):
                chosen.append(Placement(p.name, slot))
                counts[p.id] += 1
                yield from rec(slot + p.size, used + p.compute_slices)
                counts[p.id] -= 1
                chosen.pop()

    yield from rec(0, 0)


def _is_maximal(gt: GpuType, profiles: tuple[MigProfile, ...], layout: list[Placement], used: int,
                counts: dict[int, int]) -> bool:
    """True if no instance of any allowed profile could still be added."""
    size = {p.name: p.size for p in gt.profiles}
    occupied = {s for pl in layout for s in range(pl.start, pl.start + size[pl.profile])}
    for p in profiles:
        if used + p.compute_slices > gt.compute_slices or counts[p.id] >= p.max_instances:
            continue
        for start in p.starts:
            if start + p.size <= gt.memory_slots and occupied.isdisjoint(range(start, start + p.size)):
                return False
    return True


@lru_cache(maxsize=64)
def _enumerate(gt: GpuType, names: tuple[str, ...], maximal: bool) -> tuple[Layout, ...]:
    profiles = tuple(resolve_profile(gt, n) for n in names)
    found = [
        canonical(layout)
        for layout, used, counts in _search(gt, profiles)
        if layout and (not maximal or _is_maximal(gt, profiles, layout, used, counts))
    ]
    return tuple(sorted(found, key=_layout_order(gt)))


def enumerate_layouts(gpu_type: GpuType | str, profiles: Sequence[str | int] | None = None,
                      maximal: bool = True) -> list[Layout]:
    """All layouts of a GPU type built from `profiles`, in a canonical, deterministic order.

    `profiles=None` uses the main profiles (one per slice count: with them an H100-80GB or an
    A100-40GB has exactly 19 maximal layouts); pass `all_profile_names(gt)` to include 1g.20gb
    and the `+me` variants. `maximal=False` also lists every non-empty layout that still has
    room. Results are cached: the planner calls this for every GPU on every re-plan.
    """
    gt = gpu_type_of(gpu_type)
    keys = main_profile_names(gt) if profiles is None else profiles
    names = tuple(sorted({resolve_profile(gt, k).name for k in keys}))
    return list(_enumerate(gt, names, maximal))


def all_profile_names(gpu_type: GpuType | str) -> tuple[str, ...]:
    return tuple(p.name for p in gpu_type_of(gpu_type).profiles)


def slice_multisets(gpu_type: GpuType | str, profiles: Sequence[str | int] | None = None,
                    maximal: bool = True) -> dict[tuple[int, ...], Layout]:
    """Distinct compute-slice multisets (`(3, 2, 1, 1)`) with the first layout realising each.

    Many layouts differ only in where equal slices sit; the planner needs one per multiset."""
    out: dict[tuple[int, ...], Layout] = {}
    for layout in enumerate_layouts(gpu_type, profiles, maximal):
        out.setdefault(layout_slices(layout), layout)
    return out


def whole_gpu(gpu_type: GpuType | str) -> Layout:
    """The layout of one instance over the whole GPU (`7g.80gb@0` on an H100-80GB)."""
    multisets = slice_multisets(gpu_type)
    return multisets[(max(s for m in multisets for s in m),)]


def format_layout(layout: Iterable[Placement], sep: str = " ") -> str:
    """`3g.40gb@0 3g.40gb@4`: the operator-facing spelling of a layout."""
    return sep.join(f"{p.profile}@{p.start}" for p in layout)


def parse_layout(text: str, gpu_type: GpuType | str | None = None) -> Layout:
    """Parse `3g.40gb@0,3g.40gb@4` (commas or spaces). With a GPU type, profile keys may be IDs
    or slice labels (`3g@4`) and the layout is validated; an empty string is the empty layout."""
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    out: list[Placement] = []
    for item in items:
        name, at, start = item.partition("@")
        if not at or not start.strip().isdigit() or not name:
            raise PlacementError(
                f"cannot read {item!r} in layout {text!r}: write PROFILE@START, e.g. '3g.40gb@4'"
            )
        out.append(Placement(name, int(start)))
    if gpu_type is None:
        return canonical(out)
    gt = gpu_type_of(gpu_type)
    return validate_layout(gt, [Placement(resolve_profile(gt, p.profile).name, p.start) for p in out])
