"""cffi builder for pyconvai._ring: the very ring.c that the Asterisk module links."""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    struct convai_ring;
    struct convai_ring *convai_ring_alloc(size_t capacity);
    void convai_ring_ref(struct convai_ring *ring);
    void convai_ring_unref(struct convai_ring *ring);
    size_t convai_ring_capacity(const struct convai_ring *ring);
    size_t convai_ring_used(const struct convai_ring *ring);
    int convai_ring_push(struct convai_ring *ring, const void *data, size_t len);
    size_t convai_ring_push_overwrite(struct convai_ring *ring, const void *data, size_t len, size_t unit);
    size_t convai_ring_pop(struct convai_ring *ring, void *out, size_t max);
    int convai_ring_pop_exact(struct convai_ring *ring, void *out, size_t len);
    int convai_ring_pop_frame(struct convai_ring *ring, void *out, size_t len, uint64_t *position);
    size_t convai_ring_discard(struct convai_ring *ring);
    uint64_t convai_ring_pushed(const struct convai_ring *ring);
    uint64_t convai_ring_popped(const struct convai_ring *ring);
    uint64_t convai_ring_overflowed(const struct convai_ring *ring);
    uint64_t convai_ring_discarded(const struct convai_ring *ring);
    int convai_ring_open_doorbell(struct convai_ring *ring);
    int convai_ring_doorbell(const struct convai_ring *ring);
    void convai_ring_notify_at(struct convai_ring *ring, size_t level);
    """
)
ffibuilder.set_source(
    "pyconvai._ring",
    '#include "ring.h"',
    sources=["csrc/ring.c"],  # relative: setuptools refuses absolute paths
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
