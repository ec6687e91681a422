"""Fixtures around the fake MPS control daemon (tests/fake_mps/nvidia-cuda-mps-control)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_MPS_DIR = Path(__file__).resolve().parent / "fake_mps"


def control(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `nvidia-cuda-mps-control` as an operator would (the fake one, first on PATH)."""
    return subprocess.run(["nvidia-cuda-mps-control", *args], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture()
def mps_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake control tool on PATH (run by this Python) and a private pipe directory; yields it.

    A daemon a test started is stopped at the end, as an operator would: `echo quit | …`."""
    pybin = tmp_path / "pybin"
    pybin.mkdir()
    (pybin / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (pybin / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(pybin), str(FAKE_MPS_DIR), os.environ["PATH"]]))
    pipe = tmp_path / "mps-pipe"
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    yield pipe
    control(stdin="quit\n")
