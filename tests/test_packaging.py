"""The built wheel, installed on its own, is a provider Airflow discovers.

Builds the wheel from a copy of the source tree, installs it with ``--no-deps`` into a throwaway
venv that sees this venv's packages (Airflow and friends) but not this project's editable install,
and asks Airflow's ProvidersManager and ``airflow providers list`` what they found. The checks
also prove the provider was imported from the throwaway venv, not from the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
DIST_NAME = "airflow-provider-m3ter"
PACKAGE = "airflow_provider_m3ter"


def _setuptools_can_build_here() -> bool:
    """pyproject's SPDX ``license`` string needs setuptools >= 77 for a build without isolation."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return False
    return major >= 77


def _build_wheel(workdir: Path) -> Path:
    """Build the wheel from a copy of the tree (never writes build/ or egg-info into the repo)."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "LICENSE", "README.md", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    outdir = workdir / "dist"
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(src)]
    if _setuptools_can_build_here():
        cmd.insert(4, "--no-isolation")  # offline and fast; otherwise the index supplies setuptools
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = list(outdir.glob("airflow_provider_m3ter-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}, found {wheels}"
    return wheels[0]


def _throwaway_venv(workdir: Path) -> tuple[Path, Path]:
    """A venv whose extra site dir mirrors this venv's site-packages minus this project's files."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # mirror every top-level entry except the editable install (its .pth finder and dist-info)
    mirror = workdir / "mirror-site-packages"
    mirror.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        lowered = entry.name.lower()
        if PACKAGE in lowered or "airflow-provider-m3ter" in lowered:
            continue
        (mirror / entry.name).symlink_to(entry)
    # appended after the venv's own site-packages, so the installed wheel comes first
    (venv_site / "zz_mirror.pth").write_text(f"import site; site.addsitedir({str(mirror)!r})\n")
    return python, venv_site


def _clean_env(workdir: Path) -> dict[str, str]:
    """Environment for the throwaway interpreter: no PYTHONPATH, its own AIRFLOW_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AIRFLOW", "VIRTUAL_ENV"))}
    env["AIRFLOW_HOME"] = str(workdir / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return env


PROBE = textwrap.dedent(
    """
    import importlib, inspect, json
    from importlib import metadata

    import jsonschema
    from airflow.providers_manager import ProvidersManager
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow < 3.2: the core providers manager lists the hooks
        ProvidersManagerTaskRuntime = ProvidersManager

    import airflow

    pm = ProvidersManager()
    providers = pm.providers
    info = providers["airflow-provider-m3ter"]
    hook = ProvidersManagerTaskRuntime().hooks["m3ter"]
    module_name, _, class_name = hook.hook_class_name.rpartition(".")
    hook_class = getattr(importlib.import_module(module_name), class_name)
    import airflow_provider_m3ter

    schema_path = airflow.__path__[0] + "/provider_info.schema.json"
    with open(schema_path) as fh:
        schema = json.load(fh)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(
        airflow_provider_m3ter.get_provider_info())]
    dists = [d for d in metadata.distributions()
             if (d.metadata["Name"] or "").lower() == "airflow-provider-m3ter"]
    print(json.dumps({
        "version": info.version,
        "provider_name": info.data["name"],
        "hook_name": hook.hook_name,
        "connection_type": hook.connection_type,
        "hook_class": hook.hook_class_name,
        "hook_file": inspect.getfile(hook_class),
        "package_file": airflow_provider_m3ter.__file__,
        "dist_paths": [str(d.locate_file("")) for d in dists],
        "schema_errors": errors,
        "field_behaviour": pm.field_behaviours.get("m3ter"),
        "widgets": sorted(k for k in pm.connection_form_widgets if k.startswith("extra__m3ter__")),
        "extra_links": sorted(pm.extra_links_class_names),
    }))
    """
)


def test_wheel_installs_and_airflow_discovers_the_provider(tmp_path: Path) -> None:
    """Wheel -> throwaway venv -> ProvidersManager and ``airflow providers list`` both see m3ter."""
    wheel = _build_wheel(tmp_path)
    python, venv_site = _throwaway_venv(tmp_path)
    env = _clean_env(tmp_path)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    probe = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-5000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    from airflow_provider_m3ter import __version__
    from airflow_provider_m3ter.compat import AIRFLOW_VERSION
    from airflow_provider_m3ter.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    assert found["version"] == __version__
    assert found["provider_name"] == "m3ter"
    assert found["hook_name"] == "m3ter"
    assert found["connection_type"] == "m3ter"
    assert found["hook_class"] == "airflow_provider_m3ter.hooks.m3ter.M3terHook"
    assert found["schema_errors"] == []
    # the provider really came from the wheel in the throwaway venv, not the source tree
    assert Path(found["hook_file"]).is_relative_to(venv_site), found["hook_file"]
    assert Path(found["package_file"]).is_relative_to(venv_site), found["package_file"]
    assert not Path(found["package_file"]).is_relative_to(REPO)
    assert len(found["dist_paths"]) == 1, found["dist_paths"]
    assert Path(found["dist_paths"][0]).resolve() == venv_site.resolve()
    # the connection form reached Airflow from provider info (3.2+; before that Airflow builds the
    # widgets from the hook with Flask-AppBuilder, which this venv does not have)
    if AIRFLOW_VERSION >= (3, 2):
        assert found["widgets"] == sorted(f"extra__m3ter__{name}" for name in CONN_FIELDS)
    assert found["field_behaviour"]["hidden_fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert found["field_behaviour"]["relabeling"] == UI_FIELD_BEHAVIOUR["relabeling"]
    assert "airflow_provider_m3ter.links.M3terConsoleLink" in found["extra_links"]

    listed = subprocess.run(
        [str(python), "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-4000:]
    start = listed.stdout.index("[")
    rows = json.loads(listed.stdout[start:])
    ours = [row for row in rows if row["package_name"] == DIST_NAME]
    assert len(ours) == 1, rows
    assert ours[0]["version"] == __version__
