/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief Lock-free byte ring (see ring.h for the threading contract).
 *
 * Indexes grow without wrapping (64 bits) and are masked on access, so
 * "head - tail" is always the number of queued bytes. The producer owns head;
 * tail moves only by compare-and-swap, by the consumer after a copy and by the
 * producer when it drops data. A consumer copy that raced with a producer drop
 * may have read bytes being overwritten: its CAS then fails and the copy is
 * thrown away, as in a seqlock.
 */

#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ring.h"

struct convai_ring {
	atomic_uint refcount;
	size_t capacity;
	size_t mask;
	_Atomic uint64_t head;
	_Atomic uint64_t tail;
	_Atomic uint64_t pushed;
	_Atomic uint64_t popped;
	_Atomic uint64_t overflowed;
	_Atomic uint64_t discarded;
	/*! eventfd the producer writes once notify_level bytes are queued; -1 for none. */
	int doorbell;
	/*! Set by the consumer, taken (reset to SIZE_MAX) by the producer that rings. */
	_Atomic size_t notify_level;
	unsigned char data[];
};

struct convai_ring *convai_ring_alloc(size_t capacity)
{
	struct convai_ring *ring;
	size_t size = 64;

	while (size < capacity) {
		if (size > SIZE_MAX / 2) {
			return NULL;
		}
		size *= 2;
	}
	/*
	 * Straight from the kernel, zeroed, and back to it when freed: a call's rings
	 * (hundreds of KiB, allocated on one thread and freed on another) would
	 * otherwise fragment malloc's per-thread arenas and keep memory after the call.
	 */
	ring = mmap(NULL, sizeof(*ring) + size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ring == MAP_FAILED) {
		return NULL;
	}
	atomic_init(&ring->refcount, 1);
	atomic_init(&ring->notify_level, SIZE_MAX);
	ring->capacity = size;
	ring->mask = size - 1;
	ring->doorbell = -1;
	return ring;
}

void convai_ring_ref(struct convai_ring *ring)
{
	atomic_fetch_add_explicit(&ring->refcount, 1, memory_order_relaxed);
}

void convai_ring_unref(struct convai_ring *ring)
{
	if (!ring) {
		return;
	}
	if (atomic_fetch_sub_explicit(&ring->refcount, 1, memory_order_acq_rel) == 1) {
		if (ring->doorbell >= 0) {
			close(ring->doorbell);
		}
		munmap(ring, sizeof(*ring) + ring->capacity);
	}
}

size_t convai_ring_capacity(const struct convai_ring *ring)
{
	return ring->capacity;
}

size_t convai_ring_used(const struct convai_ring *ring)
{
	uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);

	return (size_t) (head - tail);
}

/*! \internal \brief Copy into the ring at index \a at, wrapping as needed. */
static void ring_copy_in(struct convai_ring *ring, uint64_t at, const unsigned char *src, size_t len)
{
	size_t offset = (size_t) (at & ring->mask);
	size_t first = ring->capacity - offset;

	if (first > len) {
		first = len;
	}
	memcpy(ring->data + offset, src, first);
	memcpy(ring->data, src + first, len - first);
}

/*! \internal \brief Copy out of the ring from index \a at, wrapping as needed. */
static void ring_copy_out(const struct convai_ring *ring, uint64_t at, unsigned char *dst, size_t len)
{
	size_t offset = (size_t) (at & ring->mask);
	size_t first = ring->capacity - offset;

	if (first > len) {
		first = len;
	}
	memcpy(dst, ring->data + offset, first);
	memcpy(dst + first, ring->data, len - first);
}

/*! \internal \brief Producer: ring the doorbell if the consumer's level is reached; once per level. */
static void ring_doorbell_check(struct convai_ring *ring)
{
	size_t level = atomic_load_explicit(&ring->notify_level, memory_order_acquire);

	if (level == SIZE_MAX || convai_ring_used(ring) < level) {
		return;
	}
	if (atomic_compare_exchange_strong_explicit(&ring->notify_level, &level, SIZE_MAX,
			memory_order_acq_rel, memory_order_acquire)) {
		eventfd_write(ring->doorbell, 1);
	}
}

/*! \internal \brief Producer: publish \a len bytes already known to fit at head. */
static void ring_publish(struct convai_ring *ring, uint64_t head, const void *data, size_t len)
{
	ring_copy_in(ring, head, data, len);
	atomic_store_explicit(&ring->head, head + len, memory_order_release);
	atomic_fetch_add_explicit(&ring->pushed, len, memory_order_relaxed);
	if (ring->doorbell >= 0) {
		/* Store head, then load the level; the consumer stores the level, then loads
		 * head: without a full fence on both sides each could miss the other. */
		atomic_thread_fence(memory_order_seq_cst);
		ring_doorbell_check(ring);
	}
}

int convai_ring_push(struct convai_ring *ring, const void *data, size_t len)
{
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);

	if (len > ring->capacity - (size_t) (head - tail)) {
		return -1;
	}
	ring_publish(ring, head, data, len);
	return 0;
}

size_t convai_ring_push_overwrite(struct convai_ring *ring, const void *data, size_t len, size_t unit)
{
	const unsigned char *bytes = data;
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
	size_t dropped = 0;

	if (!unit) {
		unit = 1;
	}
	if (len > ring->capacity) {
		/* Only the newest capacity bytes can survive; skip whole units. */
		size_t skip = ((len - ring->capacity + unit - 1) / unit) * unit;

		dropped += skip;
		bytes += skip;
		len -= skip;
	}
	for (;;) {
		uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
		size_t used = (size_t) (head - tail);
		size_t room = ring->capacity - used;
		size_t drop;

		if (len <= room) {
			break;
		}
		drop = ((len - room + unit - 1) / unit) * unit;
		if (drop > used) {
			drop = used;
		}
		if (atomic_compare_exchange_weak_explicit(&ring->tail, &tail, tail + drop,
				memory_order_acq_rel, memory_order_acquire)) {
			dropped += drop;
		}
	}
	ring_publish(ring, head, bytes, len);
	if (dropped) {
		atomic_fetch_add_explicit(&ring->overflowed, dropped, memory_order_relaxed);
	}
	return dropped;
}

/*! \internal \brief Consumer: take \a min..\a max bytes, or none if fewer than \a min are queued. */
static size_t ring_take(struct convai_ring *ring, void *out, size_t min, size_t max, uint64_t *position)
{
	for (;;) {
		uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
		uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
		size_t count = (size_t) (head - tail);

		if (count < min || !count) {
			return 0;
		}
		if (count > max) {
			count = max;
		}
		ring_copy_out(ring, tail, out, count);
		/* Valid only if the producer did not drop these bytes meanwhile. */
		if (atomic_compare_exchange_strong_explicit(&ring->tail, &tail, tail + count,
				memory_order_acq_rel, memory_order_acquire)) {
			atomic_fetch_add_explicit(&ring->popped, count, memory_order_relaxed);
			if (position) {
				*position = tail;
			}
			return count;
		}
	}
}

size_t convai_ring_pop(struct convai_ring *ring, void *out, size_t max)
{
	return ring_take(ring, out, 1, max, NULL);
}

int convai_ring_pop_exact(struct convai_ring *ring, void *out, size_t len)
{
	if (!len) {
		return 0;
	}
	return ring_take(ring, out, len, len, NULL) == len ? 0 : -1;
}

int convai_ring_pop_frame(struct convai_ring *ring, void *out, size_t len, uint64_t *position)
{
	if (!len) {
		return -1;
	}
	return ring_take(ring, out, len, len, position) == len ? 0 : -1;
}

size_t convai_ring_discard(struct convai_ring *ring)
{
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);

	while (tail != head) {
		if (atomic_compare_exchange_weak_explicit(&ring->tail, &tail, head,
				memory_order_acq_rel, memory_order_acquire)) {
			atomic_fetch_add_explicit(&ring->discarded, head - tail, memory_order_relaxed);
			return (size_t) (head - tail);
		}
	}
	return 0;
}

uint64_t convai_ring_pushed(const struct convai_ring *ring)
{
	return atomic_load_explicit(&ring->pushed, memory_order_relaxed);
}

uint64_t convai_ring_popped(const struct convai_ring *ring)
{
	return atomic_load_explicit(&ring->popped, memory_order_relaxed);
}

uint64_t convai_ring_overflowed(const struct convai_ring *ring)
{
	return atomic_load_explicit(&ring->overflowed, memory_order_relaxed);
}

uint64_t convai_ring_discarded(const struct convai_ring *ring)
{
	return atomic_load_explicit(&ring->discarded, memory_order_relaxed);
}

int convai_ring_open_doorbell(struct convai_ring *ring)
{
	if (ring->doorbell < 0) {
		ring->doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	}
	return ring->doorbell;
}

int convai_ring_doorbell(const struct convai_ring *ring)
{
	return ring->doorbell;
}

void convai_ring_wake(struct convai_ring *ring)
{
	if (ring->doorbell >= 0) {
		eventfd_write(ring->doorbell, 1);
	}
}

void convai_ring_notify_at(struct convai_ring *ring, size_t level)
{
	atomic_store_explicit(&ring->notify_level, level ? level : 1, memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);  /* pairs with ring_publish() */
}
