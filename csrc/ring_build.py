"""cffi builder for pyconvai._ring: the very ring.c that the Asterisk module links, and
clockstats.c, which counts a call's clock records for pyconvai.stats."""

import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).parent
HEADERS = ("ring.h", "clockstats.h")


def header_cdef(header: Path) -> str:
    """A header as cffi reads it: its declarations without comments or preprocessor lines,
    array lengths left to the compiler. Derived, not copied, so that the binding can never
    disagree with the C."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    text = re.sub(r"\[[A-Z_][A-Z0-9_ +]*\]", "[...]", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def ring_cdef() -> str:
    """Every header of the binding, as one cdef."""
    return "\n".join(header_cdef(CSRC / name) for name in HEADERS)


ffibuilder = FFI()
ffibuilder.cdef(ring_cdef())
ffibuilder.set_source(
    "pyconvai._ring",
    "".join(f'#include "{name}"\n' for name in HEADERS),
    sources=["csrc/ring.c", "csrc/clockstats.c"],  # relative: setuptools refuses absolute paths
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
