"""End-to-end: `dvc repro` in a fresh copy of the repository, on a small generated operation.

This is what `make run` does on a new machine, shrunk so that it runs in CI in about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _fresh_copy(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "copy"], cwd=dst, check=True, env=env)


@pytest.mark.slow
def test_dvc_repro_from_a_fresh_copy(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _fresh_copy(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["generate"].update({"units": 3000, "months": 8})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
    }
    stages = ["generate", "validate", "label"]
    r = subprocess.run(
        [str(BIN / "dvc"), "repro", *stages], cwd=repo, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    vm = json.loads((repo / "data/validated/validation_metrics.json").read_text())
    assert vm["orders"]["quarantined_rows"] == 0, "generated data must validate cleanly"
    assert vm["orders"]["valid_rows"] == vm["orders"]["input_rows"] > 1000
    lab = pd.read_parquet(repo / "data/labelled/labelled.parquet")
    assert lab["rework"].notna().sum() > 100 and lab["dissatisfied"].notna().sum() > 100
    m = subprocess.run(
        [str(BIN / "dvc"), "metrics", "show", "--json"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert m.returncode == 0 and "label_metrics" in m.stdout
