"""environment.yml (conda users) and pkg/pyproject.toml (pip) must list the same dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pkg" / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(r): r.replace(" ", "") for r in extra})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    assert set(listed) == set(wanted), (set(listed) ^ set(wanted))
    for name, req in wanted.items():
        if name in ("torch", "torchvision"):
            continue  # the yml pins the exact pair the Makefile installs; pyproject only bounds it
        assert listed[name] == req, f"{name}: environment.yml has {listed[name]!r}, pyproject {req!r}"


def test_torch_pins_agree_with_the_makefile():
    pins = re.search(r"TORCH_PINS := (.*)", (ROOT / "Makefile").read_text()).group(1).split()
    env = (ROOT / "environment.yml").read_text()
    for pin in pins:
        assert pin in env, f"{pin} from the Makefile is missing in environment.yml"
