"""Packaging: the three top-level folders install as one ``vugan`` namespace (``vugan.pipeline``,
``vugan.components``, ``vugan.models``), so nothing generic lands in site-packages.

Static metadata lives in pyproject.toml; only the package mapping is computed here, so that a new sub-package is
never left out of the wheel.
"""
from setuptools import find_packages, setup

TOP_LEVEL = ("pipeline", "components", "models")

packages, package_dir = [], {}
for top in TOP_LEVEL:
    package_dir[f"vugan.{top}"] = top
    packages += [f"vugan.{top}"] + [f"vugan.{top}.{sub}" for sub in find_packages(top)]

setup(packages=packages, package_dir=package_dir)
