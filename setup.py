"""Install densenets and build its compiled op extension `densenets._C`.

The extension is built from `densenets/ops/csrc`: the C++ (CPU) kernels always; the
CUDA kernels when torch has CUDA support, a CUDA toolkit is found, and a GPU is visible
or `TORCH_CUDA_ARCH_LIST` is set or `FORCE_CUDA=1` (which, with no GPU and no list,
compiles for DEFAULT_CUDA_ARCHS). `FORCE_CUDA=0` always builds the CPU kernels only;
`FORCE_CUDA=1` where CUDA kernels cannot be built is an error. `build_plan` makes that
decision and prints it in one line; `python setup.py --build-plan` prints it alone. Build
with `pip install --no-build-isolation .` (or `-e .`) so that the installed torch is used.
The configs/ folder is installed inside the package as `densenets/configs`.
"""

import glob
import logging
import os
import re
import subprocess
import sys
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("densenets", "ops", "csrc")

INSTALL_REQUIRES = [
    "torch>=2.6",
    "torchvision>=0.21",
    "numpy",
    "opencv-python-headless>=4.8",
    "albumentations>=1.4",
    "pycocotools>=2.0.7",
    "scipy>=1.10",
    "PyYAML>=6.0",
    "tqdm>=4.60",
    "tensorboard>=2.14",
    "matplotlib>=3.7",
]
EXTRAS = {
    "dev": ["pytest>=7", "pytest-xdist", "pytest-timeout", "scikit-image>=0.21", "ruff", "ninja"],
    "fast-eval": ["faster-coco-eval>=1.6"],
    # Peer implementations timed side by side in benchmarks/ (optional).
    "bench": ["transformers>=4.48"],
    # tools/export.py: ONNX files and running them (docs/export.md).
    "export": ["onnx>=1.16", "onnxruntime>=1.18"],
}


def _nvidia_include_dirs():
    """Headers that torch's CUDA headers include but a bare CUDA toolkit may lack
    (cusparse.h, ...): the CUDA torch wheel ships them under site-packages/nvidia."""
    dirs = []
    for site in sys.path:
        dirs += glob.glob(os.path.join(site, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def _toolkit_dirs(cuda_home):
    """(include dirs, library dirs) of the toolkit nvcc belongs to, as nvcc reports them:
    CUDA_HOME may be /usr/local with nvcc a wrapper script, whose include/ and lib64/
    hold no CUDA files."""
    nvcc = os.path.join(cuda_home or "", "bin", "nvcc")
    try:
        res = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return [], []
    includes, libraries = [], []
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith("#$ INCLUDES="):
            includes += [os.path.normpath(d) for d in re.findall(r'-I"?([^"\s]+)', line)]
        elif line.startswith("#$ LIBRARIES="):
            libraries += [os.path.normpath(d) for d in re.findall(r'-L"?([^"\s]+)', line)]
    libraries = [d for d in libraries if os.path.basename(d) != "stubs"]
    return [d for d in includes if os.path.isdir(d)], [d for d in libraries if os.path.isdir(d)]


# Architectures compiled for when FORCE_CUDA=1 and no GPU or TORCH_CUDA_ARCH_LIST says
# otherwise: Ampere (A100, RTX 30xx), Ada (L4, RTX 40xx), Hopper (H100/H200), plus PTX of
# the newest so that later GPUs JIT-compile it.
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0+PTX"


class BuildPlanError(ValueError):
    """The environment asks for a build that cannot be made (e.g. FORCE_CUDA=1 without nvcc)."""


def build_plan(env, torch_cuda, toolkit, gpu_count, has_cu=True):
    """Decide which kernels to build. Pure, so tests can run it for every case.

    CUDA kernels need a CUDA torch, a CUDA toolkit and CUDA sources; given those they are
    built when a GPU is visible, TORCH_CUDA_ARCH_LIST is set or FORCE_CUDA=1. FORCE_CUDA=0
    always builds the CPU kernels only; FORCE_CUDA=1 that cannot be honoured is an error,
    so that a CUDA compile check never passes by building the CPU kernels instead.

    Args:
        env (Mapping[str, str]): the environment (FORCE_CUDA, TORCH_CUDA_ARCH_LIST).
        torch_cuda (str | None): `torch.version.cuda` (None for a torch without CUDA).
        toolkit (str | None): the CUDA toolkit's home (`CUDA_HOME`), None when not found.
        gpu_count (int): GPUs torch can see.
        has_cu (bool): whether the source tree has CUDA kernels.

    Returns:
        (use_cuda, arch_list, line): whether to compile the CUDA kernels, the value for
        TORCH_CUDA_ARCH_LIST (None: let torch ask the visible GPUs), and the one line to print.

    Raises:
        BuildPlanError: FORCE_CUDA is not 0 or 1, or is 1 where CUDA kernels cannot be built.
    """
    force = env.get("FORCE_CUDA", "").strip()
    archs = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if force not in ("", "0", "1"):
        raise BuildPlanError(
            f"FORCE_CUDA={force!r}: expected 0 (CPU kernels only) or 1 (CPU and CUDA kernels)"
        )
    cpu = "densenets: building the CPU kernels only"
    if force == "0":
        return False, None, f"{cpu} (FORCE_CUDA=0)"
    missing = None
    if not has_cu:
        missing = "no CUDA sources"
    elif torch_cuda is None:
        missing = "this torch is built without CUDA"
    elif toolkit is None:
        missing = "no CUDA toolkit found: no nvcc on PATH, CUDA_HOME unset"
    if missing and force == "1":
        raise BuildPlanError(f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {missing}")
    if missing:
        return False, None, f"{cpu} ({missing})"
    both = "densenets: building the CPU and CUDA kernels"
    if archs:
        return True, archs, f"{both} for TORCH_CUDA_ARCH_LIST={archs}"
    if gpu_count > 0:
        return True, None, f"{both} for the visible GPU(s)"
    if force == "1":
        return True, DEFAULT_CUDA_ARCHS, f"{both} for {DEFAULT_CUDA_ARCHS} (FORCE_CUDA=1, no GPU visible)"
    how = f"set FORCE_CUDA=1 (architectures {DEFAULT_CUDA_ARCHS}) or TORCH_CUDA_ARCH_LIST"
    return False, None, f"{cpu} (CUDA toolkit found but no GPU visible; for the CUDA kernels {how})"


def current_plan():
    """build_plan for this machine: the installed torch, its CUDA_HOME, the visible GPUs."""
    import torch

    # Without a GPU torch warns "No CUDA runtime is found" when it looks for the toolkit;
    # the plan's line already says what that means for the build.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import CUDA_HOME

    cu = glob.glob(os.path.join(HERE, CSRC, "cuda", "*.cu"))
    gpus = torch.cuda.device_count() if torch.version.cuda is not None else 0
    return build_plan(os.environ, torch.version.cuda, CUDA_HOME, gpus, has_cu=bool(cu))


def _extensions():
    cpp = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    if not cpp:
        return [], {}
    use_cuda, archs, line = current_plan()
    print(line, flush=True)
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cu = sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    cxx = ["-O3", "-fopenmp"] if sys.platform.startswith("linux") else ["-O3"]
    extra = {"cxx": cxx}
    define = []
    library_dirs = []
    include = [os.path.join(HERE, CSRC)]
    if use_cuda:
        if archs:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by torch when it writes nvcc's -gencode flags
        ext_cls = CUDAExtension
        sources = cpp + cu
        define.append(("WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        # The toolkit's own headers first: the wheel's copies of cuda_runtime*.h may be of a
        # newer minor version than nvcc, which CCCL rejects; the wheel dirs only fill gaps.
        toolkit_include, library_dirs = _toolkit_dirs(CUDA_HOME)
        include += toolkit_include
        include += _nvidia_include_dirs()
    else:
        ext_cls = CppExtension
        sources = cpp
    ext = ext_cls(
        "densenets._C",
        sources=sources,
        include_dirs=include,
        library_dirs=library_dirs,
        define_macros=define,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"] if sys.platform.startswith("linux") else [],
        py_limited_api=False,
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


class BuildPyWithConfigs(build_py):
    """build_py that also copies configs/ into the package as densenets/configs, so that an
    installed densenets (`pip install .`, a wheel) has its experiment configs; an editable
    install reads them from the checkout instead (densenets.config.paths)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = os.path.join(HERE, "configs")
        for src in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
            if os.path.isfile(src):
                dst = os.path.join(self.build_lib, "densenets", "configs", os.path.relpath(src, root))
                self.mkpath(os.path.dirname(dst))
                self.copy_file(src, dst)


def main():
    if sys.argv[1:] == ["--build-plan"]:  # `make install` prints the decision before pip hides it
        try:
            print(current_plan()[2])
        except BuildPlanError as e:
            sys.exit(f"densenets: error: {e}")
        return
    try:
        ext_modules, cmdclass = _extensions()
    except BuildPlanError as e:
        sys.exit(f"densenets: error: {e}")
    # setuptools' "Editable installation" notice (folders named like the package) is about
    # layouts other than this one, and pip shows it even with -q.
    warnings.filterwarnings("ignore", message=r"\s*Editable installation")
    readme = os.path.join(HERE, "README.md")
    setup(
        name="densenets",
        version="0.1.0",
        description="Dense prediction on PyTorch: detection, segmentation, super-resolution",
        long_description=open(readme).read() if os.path.exists(readme) else "",
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        packages=find_packages(include=["densenets", "densenets.*"]),
        package_data={"densenets": ["ops/csrc/**/*"]},
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS,
        entry_points={"console_scripts": ["densenets = densenets.cli:main"]},
        ext_modules=ext_modules,
        cmdclass={"build_py": BuildPyWithConfigs, **cmdclass},
        zip_safe=False,
    )


if __name__ == "__main__":  # pip runs this file as __main__; tests import build_plan only
    main()
