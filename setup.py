"""Builds the C++ CPU ops in csrc/ into grumem._C (metadata lives in pyproject.toml).

Install with `pip install --no-build-isolation -e .` so the build sees the torch already installed.
"""
import glob

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

sources = sorted(glob.glob("csrc/*.cpp"))
ext_modules = [CppExtension("grumem._C", sources, extra_compile_args=["-O3", "-march=native", "-ffast-math", "-fopenmp"], extra_link_args=["-fopenmp"])]

setup(ext_modules=ext_modules if sources else [], cmdclass={"build_ext": BuildExtension})
