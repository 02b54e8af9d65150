"""setup.py's build decision (`build_plan`) for every machine, without building anything,
and the build step that puts configs/ inside the package."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
CPU = "densenets: building the CPU kernels only"
BOTH = "densenets: building the CPU and CUDA kernels"
DEFAULT = "8.0;8.6;8.9;9.0+PTX"
HINT = f"set FORCE_CUDA=1 (architectures {DEFAULT}) or TORCH_CUDA_ARCH_LIST"


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module; setuptools.setup raises, so importing must not run it."""

    def _no_setup(**kwargs):
        raise AssertionError("importing setup.py ran setup()")

    patch = pytest.MonkeyPatch()
    patch.setattr(setuptools, "setup", _no_setup)
    try:
        spec = importlib.util.spec_from_file_location("densenets_setup", ROOT / "setup.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        patch.undo()
    return module


def _plan(setup_py, env=None, torch_cuda="13.0", toolkit="/usr/local/cuda", gpus=0, has_cu=True):
    return setup_py.build_plan(env or {}, torch_cuda, toolkit, gpus, has_cu)


def test_default_architectures_are_the_documented_ones(setup_py):
    assert setup_py.DEFAULT_CUDA_ARCHS == DEFAULT
    assert DEFAULT in (ROOT / "README.md").read_text()


# (env, torch.version.cuda, CUDA_HOME, visible GPUs) -> (CUDA kernels?, arch list, printed line)
CASES = {
    "gpu visible": (
        ({}, "13.0", "/usr/local/cuda", 1),
        (True, None, f"{BOTH} for the visible GPU(s)"),
    ),
    "arch list, no gpu": (
        ({"TORCH_CUDA_ARCH_LIST": "8.0;9.0"}, "13.0", "/usr/local/cuda", 0),
        (True, "8.0;9.0", f"{BOTH} for TORCH_CUDA_ARCH_LIST=8.0;9.0"),
    ),
    "arch list wins over the gpu": (
        ({"TORCH_CUDA_ARCH_LIST": "9.0"}, "13.0", "/usr/local/cuda", 2),
        (True, "9.0", f"{BOTH} for TORCH_CUDA_ARCH_LIST=9.0"),
    ),
    "FORCE_CUDA=1, no list, no gpu": (
        ({"FORCE_CUDA": "1"}, "13.0", "/usr/local/cuda", 0),
        (True, DEFAULT, f"{BOTH} for {DEFAULT} (FORCE_CUDA=1, no GPU visible)"),
    ),
    "FORCE_CUDA=1 with a list": (
        ({"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}, "13.0", "/usr/local/cuda", 0),
        (True, "9.0", f"{BOTH} for TORCH_CUDA_ARCH_LIST=9.0"),
    ),
    "FORCE_CUDA=1, gpu visible": (
        ({"FORCE_CUDA": "1"}, "13.0", "/usr/local/cuda", 1),
        (True, None, f"{BOTH} for the visible GPU(s)"),
    ),
    "toolkit, no gpu, nothing forced": (
        ({}, "13.0", "/usr/local/cuda", 0),
        (False, None, f"{CPU} (CUDA toolkit found but no GPU visible; for the CUDA kernels {HINT})"),
    ),
    "empty list and FORCE_CUDA count as unset": (
        ({"TORCH_CUDA_ARCH_LIST": " ", "FORCE_CUDA": ""}, "13.0", "/usr/local/cuda", 0),
        (False, None, f"{CPU} (CUDA toolkit found but no GPU visible; for the CUDA kernels {HINT})"),
    ),
    "no toolkit, gpu visible": (
        ({}, "13.0", None, 1),
        (False, None, f"{CPU} (no CUDA toolkit found: no nvcc on PATH, CUDA_HOME unset)"),
    ),
    "no toolkit, arch list set": (
        ({"TORCH_CUDA_ARCH_LIST": "9.0"}, "13.0", None, 0),
        (False, None, f"{CPU} (no CUDA toolkit found: no nvcc on PATH, CUDA_HOME unset)"),
    ),
    "cpu-only torch": (
        ({"TORCH_CUDA_ARCH_LIST": "9.0"}, None, "/usr/local/cuda", 0),
        (False, None, f"{CPU} (this torch is built without CUDA)"),
    ),
    "FORCE_CUDA=0 beats a gpu and a list": (
        ({"FORCE_CUDA": "0", "TORCH_CUDA_ARCH_LIST": "9.0"}, "13.0", "/usr/local/cuda", 1),
        (False, None, f"{CPU} (FORCE_CUDA=0)"),
    ),
    "FORCE_CUDA=0, cpu-only torch, no toolkit": (
        ({"FORCE_CUDA": "0"}, None, None, 0),
        (False, None, f"{CPU} (FORCE_CUDA=0)"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_build_plan(setup_py, case):
    (env, torch_cuda, toolkit, gpus), expected = CASES[case]
    assert setup_py.build_plan(env, torch_cuda, toolkit, gpus, True) == expected


def test_no_cuda_sources_builds_cpu_kernels(setup_py):
    assert _plan(setup_py, gpus=1, has_cu=False) == (False, None, f"{CPU} (no CUDA sources)")


@pytest.mark.parametrize(
    ("torch_cuda", "toolkit", "has_cu", "reason"),
    [
        ("13.0", None, True, "no CUDA toolkit found"),
        (None, "/usr/local/cuda", True, "this torch is built without CUDA"),
        ("13.0", "/usr/local/cuda", False, "no CUDA sources"),
    ],
)
def test_force_cuda_that_cannot_be_honoured_is_an_error(setup_py, torch_cuda, toolkit, has_cu, reason):
    # A CUDA compile check (FORCE_CUDA=1 in CI) must fail, not quietly build the CPU kernels.
    env = {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}
    with pytest.raises(
        setup_py.BuildPlanError, match=f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {reason}"
    ):
        _plan(setup_py, env, torch_cuda, toolkit, 1, has_cu)


def test_force_cuda_other_values_are_an_error(setup_py):
    with pytest.raises(setup_py.BuildPlanError, match=r"FORCE_CUDA='yes': expected 0 .* or 1"):
        _plan(setup_py, {"FORCE_CUDA": "yes"})


def test_build_plan_command_prints_the_line():
    # What `make install` shows before pip (quiet) builds: this machine's torch, forced CPU.
    env = {**os.environ, "FORCE_CUDA": "0"}
    res = subprocess.run(
        [sys.executable, "setup.py", "--build-plan"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{CPU} (FORCE_CUDA=0)\n"
    res = subprocess.run(
        [sys.executable, "setup.py", "--build-plan"],
        cwd=ROOT,
        env={**env, "FORCE_CUDA": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1 and res.stderr.strip().endswith(
        "FORCE_CUDA='2': expected 0 (CPU kernels only) or 1 (CPU and CUDA kernels)"
    )


def test_build_py_puts_configs_in_the_package(setup_py, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    dist = setuptools.Distribution({"name": "densenets", "packages": ["densenets", "densenets.config"]})
    dist.script_name = "setup.py"
    cmd = setup_py.BuildPyWithConfigs(dist)
    cmd.build_lib = str(tmp_path)
    cmd.ensure_finalized()
    cmd.run()
    shipped = sorted(
        p.relative_to(tmp_path / "densenets" / "configs")
        for p in (tmp_path / "densenets" / "configs").rglob("*.yaml")
    )
    assert shipped == sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
    assert (tmp_path / "densenets" / "config" / "paths.py").is_file()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # compiles the extension: minutes, more on a busy machine
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    """The wheel route of the README: build, install into a new virtualenv, run elsewhere."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TORCH_CUDA_ARCH_LIST")
    }
    env["FORCE_CUDA"] = "0"  # CPU kernels: the CUDA compile is CI's separate step

    def run(args, cwd=tmp_path, extra_env=None):
        res = subprocess.run(
            args, cwd=cwd, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=1800
        )
        assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
        return res.stdout

    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)])
    (wheel,) = (tmp_path / "dist").glob("densenets-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    # The new environment sees this one's packages (torch, ...) but not its densenets:
    # a plain path entry, so this environment's .pth files (an editable densenets) are not run.
    (site_dir,) = (venv / "lib").glob("python3*/site-packages")
    (site_dir / "base_env.pth").write_text(str(Path(setuptools.__file__).parents[1]) + "\n")
    run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "print-config" in run([str(venv / "bin" / "densenets"), "--help"], cwd=elsewhere)
    check = (
        "import densenets, densenets.ops, pathlib\n"
        "print(pathlib.Path(densenets.__file__).parent, densenets.ops.extension_available())\n"
    )
    package, loaded = run([str(venv / "bin" / "python"), "-c", check], cwd=elsewhere).split()
    assert Path(package) == site_dir / "densenets" and loaded == "True"
    shipped = sorted(
        p.relative_to(site_dir / "densenets" / "configs")
        for p in (site_dir / "densenets" / "configs").rglob("*.yaml")
    )
    assert shipped == sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
    config = "configs/demo/faster_rcnn_r18_fpn_shapes.yaml"
    installed = run([str(venv / "bin" / "densenets"), "print-config", "--config", config], cwd=elsewhere)
    source = run(
        [sys.executable, "-m", "densenets", "print-config", "--config", config],
        ROOT,
        {"PYTHONPATH": str(ROOT)},
    )
    assert installed == source and "FasterRCNN" in installed
