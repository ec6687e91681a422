"""The repository stands alone: Ray pinned to the minor version under test, docs that link only
inside the repository."""
from __future__ import annotations

import re
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = "../" + "shared"  # spelt in two parts so this file does not match itself


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {r.name: r for r in reqs}


def test_ray_is_pinned_to_the_installed_minor_version():
    ray = _requirements()["ray"]
    (spec,) = ray.specifier
    assert spec.operator == "==" and re.fullmatch(r"\d+\.\d+\.\*", spec.version), "pin ray to one minor: ==X.Y.*"
    assert ray.specifier.contains(version("ray")), f"installed ray {version('ray')} is not the pinned {spec}"


def test_codecarbon_test_dependency_is_installed_in_range():
    assert _requirements()["codecarbon"].specifier.contains(version("codecarbon"))


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if Path(n).suffix in (".md", ".py", ".yaml", ".toml", ".txt", "") and
            (ROOT / n).is_file()]


def test_no_file_points_outside_the_repository():
    offenders = [str(p.relative_to(ROOT)) for p in _tracked_text_files()
                 if OUTSIDE in p.read_text(errors="replace")]
    assert offenders == []


def test_relative_links_in_markdown_resolve():
    broken = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", md.read_text()):
            if "://" not in target and not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert broken == []
