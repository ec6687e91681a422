"""`gpu-node mig …` through the dispatcher and once through the installed console script."""
import json
import subprocess
import sys
from pathlib import Path

from gpu_node.cli import main


def test_layouts_text_and_json(capsys):
    assert main(["mig", "layouts", "--gpu-type", "H100-80GB"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "7g.80gb@0" and "3g.40gb@0 3g.40gb@4" in lines
    assert lines[-1] == "19 maximal layouts of H100-80GB (main profiles; 14 distinct compute-slice multisets)"
    assert len(lines) == 20
    assert main(["mig", "layouts", "--gpu-type", "A100-40GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 19 and data[1] == [{"profile": "4g.20gb", "start": 0}, {"profile": "3g.20gb", "start": 4}]
    assert main(["mig", "layouts", "--gpu-type", "H100-80GB", "--all-profiles"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("239 maximal layouts of H100-80GB (all profiles")


def test_unknown_gpu_type_is_an_error(capsys):
    assert main(["mig", "layouts", "--gpu-type", "V100"]) == 1
    assert "unknown GPU type 'V100'; known: H100-80GB" in capsys.readouterr().err


def test_enable_apply_list_on_the_simulated_backend(tmp_path, capsys):
    state = str(tmp_path / "mig.json")
    sim = ["--state", state, "--gpus", "H100-80GB:2"]
    assert main(["mig", "enable", "--gpu", "1", *sim]) == 2  # no --yes: warning only
    err = capsys.readouterr().err
    assert "every process using GPU 1 must stop" in err and "re-run with --yes" in err
    assert main(["mig", "enable", "--gpu", "1", "--disable", "--yes", *sim]) == 0
    assert "Disabled MIG Mode for GPU" in capsys.readouterr().out
    assert main(["mig", "apply", "--gpu", "1", "--layout", "3g@0", "--state", state]) == 1
    assert "MIG is disabled on GPU 1: run `gpu-node mig enable --gpu 1 --yes` first" in capsys.readouterr().err
    assert main(["mig", "apply", "--gpu", "1", "--layout", "3g@0", "--dry-run", "--state", state]) == 0
    out = capsys.readouterr().out
    assert "note: MIG is disabled on GPU 1" in out and "create  3g.40gb@0" in out

    assert main(["mig", "apply", "--gpu", "0", "--layout", "3g.40gb@0,3g.40gb@4", "--state", state]) == 0
    assert "done: 2 operations" in capsys.readouterr().out
    assert main(["mig", "apply", "--gpu", "0", "--layout", "3g.40gb@0,2g@4,1g@6", "--dry-run", "--state", state]) == 0
    out = capsys.readouterr().out
    assert "keep    3g.40gb@0" in out and "destroy 3g.40gb@4" in out and "create  2g.20gb@4 1g.10gb@6" in out
    assert "dry run: nothing changed" in out
    assert main(["mig", "apply", "--gpu", "0", "--layout", "3g.40gb@0,2g@4,1g@6", "--state", state]) == 0
    assert "done: 3 operations" in capsys.readouterr().out
    assert main(["mig", "list", "--json", "--state", state]) == 0
    gpus = json.loads(capsys.readouterr().out)
    assert [(i["profile"], i["start"]) for i in gpus[0]["instances"]] == [("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)]
    assert gpus[1]["mig_enabled"] is False
    assert main(["mig", "apply", "--gpu", "0", "--layout", "3g.40gb@2", "--state", state]) == 1
    assert "3g.40gb cannot start at slot 2" in capsys.readouterr().err


def test_installed_console_script(tmp_path):
    exe = Path(sys.executable).parent / "gpu-node"
    state = tmp_path / "mig.json"
    done = subprocess.run([str(exe), "mig", "apply", "--gpu", "0", "--layout", "4g@0,3g@4", "--state", str(state)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(exe), "mig", "list", "--state", str(state)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4g.40gb     slots 0-3" in done.stdout and "3g.40gb     slots 4-7" in done.stdout
