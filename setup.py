"""Build and install nrnm_fast with its C++ extension (nrnm_fast._C).

The extension is compiled against the installed torch, so build without
isolation (pip would otherwise fetch another torch into a throw-away environment):

    pip install torch
    pip install --no-build-isolation -e ".[test]"
"""

import glob
import os

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pragma: no cover - a build-environment problem, explained to the user
    raise SystemExit(
        "nrnm_fast builds its C++ extension against an installed torch: install torch first, then "
        "`pip install --no-build-isolation .`"
    ) from e

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = sorted(glob.glob("csrc/*.cpp", root_dir=HERE)) + sorted(glob.glob("csrc/cpu/*.cpp", root_dir=HERE))
CUDA_SOURCES = sorted(glob.glob("csrc/cuda/*.cpp", root_dir=HERE)) + sorted(glob.glob("csrc/cuda/*.cu", root_dir=HERE))

# -fno-trapping-math: without it GCC keeps the branches of the float gate math (csrc/nrnm_cell.h) rather
# than compute a division that might trap, and vectorizes the step loops only where AVX-512 masks them:
# on AVX2 and baseline x86-64 they ran one unit at a time (about 4x the time). Nothing here enables FP traps.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]

# The CUDA kernels are built when this torch has CUDA and nvcc is found (NRNM_FAST_CPU_ONLY=1 opts out);
# for sm_80 and sm_90 unless TORCH_CUDA_ARCH_LIST says otherwise.
WITH_CUDA = torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("NRNM_FAST_CPU_ONLY") != "1"
if WITH_CUDA:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    extension = CUDAExtension(
        "nrnm_fast._C",
        CPU_SOURCES + CUDA_SOURCES,
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": ["-O3", "-std=c++17"]},
        extra_link_args=["-fopenmp"],
    )
else:
    extension = CppExtension(
        "nrnm_fast._C", CPU_SOURCES, extra_compile_args=CXX_FLAGS, extra_link_args=["-fopenmp"]
    )

setup(
    name="nrnm_fast",
    version="0.1.0",
    description="Non-local Recurrent Neural Memory (NRNM): a drop-in torch.nn.LSTM replacement with fast kernels",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["nrnm_fast", "nrnm_fast.kernels"],
    package_dir={"nrnm_fast.kernels": "kernels"},
    python_requires=">=3.10",
    # torch.library custom ops with registered autograd need 2.4; any later release works. triton is not
    # pinned: torch's CUDA wheels pin their own, which must stay.
    install_requires=["torch>=2.4", "numpy", "triton; platform_system == 'Linux' and platform_machine == 'x86_64'"],
    extras_require={"test": ["pytest", "pytest-benchmark", "numpy"]},
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
