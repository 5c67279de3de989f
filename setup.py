"""Build and install nrnm_fast.

Build against an installed torch without build isolation, so that pip does not
fetch another torch into a throw-away environment:

    pip install torch
    pip install --no-build-isolation -e ".[test]"
"""

from setuptools import setup

setup(
    name="nrnm_fast",
    version="0.1.0",
    description="Non-local Recurrent Neural Memory (NRNM): a drop-in torch.nn.LSTM replacement with fast kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["nrnm_fast"],
    python_requires=">=3.10",
    # torch.library custom ops with registered autograd need 2.4; any later release works.
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"test": ["pytest", "pytest-benchmark", "numpy"]},
)
