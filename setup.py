# The package is described in pyproject.toml; this file only lets `python setup.py ...` and
# older tools that look for it find the same description.
from setuptools import setup

setup()
