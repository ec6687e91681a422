"""The placement rule: layout counts, validation messages, enumeration against a brute-force oracle."""
from itertools import combinations

import pytest

from configs.loader import load_gpu_catalog
from mig.errors import PlacementError, UnknownProfileError
from mig.placement import (
    all_profile_names,
    enumerate_layouts,
    format_layout,
    is_valid_layout,
    layout_slices,
    main_profile_names,
    parse_layout,
    slice_multisets,
    validate_layout,
)
from mig.types import Placement

TYPES = ["H100-80GB", "A100-40GB", "A100-80GB", "H200-141GB"]


@pytest.mark.parametrize("gpu_type", TYPES)
def test_main_profiles_give_19_maximal_layouts_and_14_slice_multisets(gpu_type):
    layouts = enumerate_layouts(gpu_type)
    assert len(layouts) == 19
    assert len(set(layouts)) == 19
    assert len(slice_multisets(gpu_type)) == 14
    assert format_layout(layouts[0]) == f"{main_profile_names(gpu_type)[4]}@0"  # the whole GPU first
    assert layout_slices(layouts[-1]) == (1,) * 7


def test_h100_layouts_are_the_known_ones():
    got = {format_layout(x) for x in enumerate_layouts("H100-80GB")}
    assert "4g.40gb@0 3g.40gb@4" in got
    assert "3g.40gb@0 3g.40gb@4" in got
    assert "2g.20gb@0 2g.20gb@2 3g.40gb@4" in got
    assert "1g.10gb@0 1g.10gb@1 2g.20gb@2 3g.40gb@4" in got
    assert "2g.20gb@0 2g.20gb@2 2g.20gb@4 1g.10gb@6" in got
    # not maximal: a 1g.10gb still fits at slot 6
    assert "3g.40gb@0 2g.20gb@4" not in got


def test_all_profiles_add_the_1g20gb_and_me_variants():
    layouts = enumerate_layouts("H100-80GB", all_profile_names("H100-80GB"))
    assert len(layouts) == 239
    names = {p.profile for x in layouts for p in x}
    assert {"1g.20gb", "1g.10gb+me"} <= names
    assert len(slice_multisets("H100-80GB", all_profile_names("H100-80GB"))) == 22


def _brute_force(gpu_type, profile_names):
    gt = load_gpu_catalog().get(gpu_type)
    candidates = [Placement(p.name, s) for p in gt.profiles if p.name in profile_names for s in p.starts]
    found = set()
    for k in range(1, 8):
        for combo in combinations(candidates, k):
            if is_valid_layout(gt, combo):
                found.add(tuple(sorted(combo, key=lambda p: (p.start, p.profile))))
    return found


def test_enumeration_matches_brute_force_oracle():
    """Every valid layout is found exactly once, and the maximal ones are exactly those that
    cannot take one more instance."""
    gt = load_gpu_catalog().get("H100-80GB")
    names = main_profile_names(gt)
    oracle = _brute_force("H100-80GB", names)
    every = enumerate_layouts(gt, maximal=False)
    assert len(every) == len(set(every)) == len(oracle) == 297
    assert set(every) == oracle
    candidates = [Placement(p.name, s) for p in gt.profiles if p.name in names for s in p.starts]
    maximal = {x for x in oracle if not any(is_valid_layout(gt, x + (c,)) for c in candidates)}
    assert set(enumerate_layouts(gt)) == maximal


def test_enumeration_order_is_deterministic_and_cached():
    assert enumerate_layouts("A100-40GB") == enumerate_layouts("A100-40GB")
    assert enumerate_layouts("H100-80GB", ["7g", "3g", 5, "2g.20gb", "1g"]) == enumerate_layouts("H100-80GB")


def test_overlap_error_names_both_profiles_and_the_slots():
    with pytest.raises(PlacementError) as e:
        validate_layout("H100-80GB", [Placement("2g.20gb", 4), Placement("3g.40gb", 4)])
    assert str(e.value) == "3g.40gb at slot 4 overlaps 2g.20gb at slot 4 (slots 4-5)"
    with pytest.raises(PlacementError, match=r"1g.10gb at slot 6 overlaps 3g.40gb at slot 4 \(slot 6\)"):
        validate_layout("H100-80GB", [Placement("3g.40gb", 4), Placement("1g.10gb", 6)])


def test_bad_start_too_many_instances_and_slice_budget():
    with pytest.raises(PlacementError, match="3g.40gb cannot start at slot 2 on H100-80GB; allowed start slots: 0, 4"):
        validate_layout("H100-80GB", [Placement("3g.40gb", 2)])
    with pytest.raises(PlacementError, match="too many 1g.10gb\\+me instances: at most 1"):
        validate_layout("H100-80GB", [Placement("1g.10gb+me", 0), Placement("1g.10gb+me", 1)])
    # the H100 slot table never exceeds 7 slices, so check the budget on a 6-slice variant of it
    gt = load_gpu_catalog().get("H100-80GB").model_copy(update={"compute_slices": 6})
    with pytest.raises(PlacementError, match="needs 3 compute slices but only 2 of 6 are free"):
        validate_layout(gt, [Placement("4g.40gb", 0), Placement("3g.40gb", 4)])
    assert all(sum(layout_slices(x)) <= 6 for x in enumerate_layouts(gt))


def test_unknown_profile_lists_known_ones():
    with pytest.raises(UnknownProfileError) as e:
        validate_layout("A100-40GB", [Placement("3g.40gb", 0)])
    assert "unknown MIG profile '3g.40gb' for A100-40GB" in str(e.value)
    assert "3g.20gb (ID 9)" in str(e.value)


def test_validate_returns_canonical_names_and_order():
    assert validate_layout("H100-80GB", [Placement("3g.40gb", 4), Placement("4g.40gb", 0)]) == (
        Placement("4g.40gb", 0), Placement("3g.40gb", 4))


def test_parse_and_format_layout():
    layout = parse_layout("3g@4, 4g.40gb@0", "H100-80GB")
    assert format_layout(layout) == "4g.40gb@0 3g.40gb@4"
    assert parse_layout("9@0 9@4", "H100-80GB") == (Placement("3g.40gb", 0), Placement("3g.40gb", 4))
    assert parse_layout("") == ()
    with pytest.raises(PlacementError, match="write PROFILE@START"):
        parse_layout("3g.40gb:4")
    with pytest.raises(PlacementError, match="overlaps"):
        parse_layout("7g@0,1g@3", "H100-80GB")


def test_every_enumerated_layout_validates():
    for t in TYPES:
        for x in enumerate_layouts(t, all_profile_names(t)):
            assert validate_layout(t, x) == x
