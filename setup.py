"""Only the compiled field kernel needs setup.py (cffi's setuptools hook); everything else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["crypto/_field_kernel_build.py:ffibuilder"])
