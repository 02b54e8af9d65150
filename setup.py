"""Install densenets and build its compiled op extension `densenets._C`.

The extension is built from `densenets/ops/csrc`: the C++ (CPU) kernels always; the
CUDA kernels when torch has CUDA support, a CUDA toolkit is found, and a GPU is visible
or `TORCH_CUDA_ARCH_LIST` is set or `FORCE_CUDA=1` (which, with no GPU and no list,
compiles for DEFAULT_CUDA_ARCHS). `FORCE_CUDA=0` always builds the CPU kernels only.
`build_plan` makes that decision and prints it in one line. Build with
`pip install --no-build-isolation .` (or `-e .`) so that the installed torch is used.
"""

import glob
import os
import re
import subprocess
import sys

from setuptools import find_packages, setup

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
        res = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
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


def build_plan(env, torch_cuda, toolkit, gpu_count, has_cu=True):
    """Decide which kernels to build. Pure, so tests can run it for every case.

    Args:
        env (Mapping[str, str]): the environment (FORCE_CUDA, TORCH_CUDA_ARCH_LIST).
        torch_cuda (str | None): `torch.version.cuda` (None for a CPU-only torch).
        toolkit (str | None): the CUDA toolkit's home (`CUDA_HOME`), None when not found.
        gpu_count (int): GPUs torch can see.
        has_cu (bool): whether the source tree has CUDA kernels.

    Returns:
        (use_cuda, arch_list, line): whether to compile the CUDA kernels, the value for
        TORCH_CUDA_ARCH_LIST (None: let torch ask the visible GPUs), and the one line to print.
    """
    force = env.get("FORCE_CUDA", "").strip()
    archs = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    how = f"set FORCE_CUDA=1 (default architectures {DEFAULT_CUDA_ARCHS}) or TORCH_CUDA_ARCH_LIST"
    if force == "0":
        return False, None, "densenets: building the CPU kernels only (FORCE_CUDA=0)"
    if not has_cu:
        return False, None, "densenets: building the CPU kernels only (no CUDA sources)"
    if torch_cuda is None:
        return False, None, "densenets: building the CPU kernels only (this torch is CPU-only)"
    if toolkit is None:
        return False, None, "densenets: building the CPU kernels only (no CUDA toolkit found: no nvcc, CUDA_HOME unset)"
    if archs:
        return True, archs, f"densenets: building the CPU and CUDA kernels for TORCH_CUDA_ARCH_LIST={archs}"
    if gpu_count > 0:
        return True, None, "densenets: building the CPU and CUDA kernels for the visible GPU(s)"
    if force == "1":
        return True, DEFAULT_CUDA_ARCHS, f"densenets: building the CPU and CUDA kernels for {DEFAULT_CUDA_ARCHS} (FORCE_CUDA=1, no GPU visible)"
    return False, None, f"densenets: building the CPU kernels only (CUDA toolkit found but no GPU visible; for the CUDA kernels {how})"


def _extensions():
    cpp = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    if not cpp:
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cu = sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    gpus = torch.cuda.device_count() if torch.version.cuda is not None else 0
    use_cuda, archs, line = build_plan(os.environ, torch.version.cuda, CUDA_HOME, gpus, has_cu=bool(cu))
    print(line)
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


if __name__ == "__main__":  # pip runs this file as __main__; tests import build_plan only
    ext_modules, cmdclass = _extensions()
    setup(
        name="densenets",
        version="0.1.0",
        description="Dense prediction on PyTorch: detection, segmentation, super-resolution",
        long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists("README.md") else "",
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        packages=find_packages(include=["densenets", "densenets.*"]),
        package_data={"densenets": ["ops/csrc/**/*"]},
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS,
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
    )
