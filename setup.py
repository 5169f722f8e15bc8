from setuptools import setup

setup(cffi_modules=["csrc/ring_build.py:ffibuilder"])
