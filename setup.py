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
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as e:  # pragma: no cover - a build-environment problem, explained to the user
    raise SystemExit(
        "nrnm_fast builds its C++ extension against an installed torch: install torch first, then "
        "`pip install --no-build-isolation .`"
    ) from e

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/python_module.cpp", "csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp", root_dir=HERE))]

setup(
    name="nrnm_fast",
    version="0.1.0",
    description="Non-local Recurrent Neural Memory (NRNM): a drop-in torch.nn.LSTM replacement with fast kernels",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["nrnm_fast"],
    python_requires=">=3.10",
    # torch.library custom ops with registered autograd need 2.4; any later release works.
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"test": ["pytest", "pytest-benchmark", "numpy"]},
    ext_modules=[
        CppExtension(
            "nrnm_fast._C",
            CPU_SOURCES,
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
