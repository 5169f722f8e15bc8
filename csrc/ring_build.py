"""cffi builder for pyconvai._ring: the very ring.c that the Asterisk module links."""

import re
from pathlib import Path

from cffi import FFI


def ring_cdef(header: Path = Path(__file__).with_name("ring.h")) -> str:
    """ring.h as cffi reads it: its declarations without comments or preprocessor lines.
    Derived, not copied, so that the binding can never disagree with the C."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(ring_cdef())
ffibuilder.set_source(
    "pyconvai._ring",
    '#include "ring.h"',
    sources=["csrc/ring.c"],  # relative: setuptools refuses absolute paths
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
