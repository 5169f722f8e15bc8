/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief Concurrency proof of csrc/ring.c: two real threads, millions of items.
 *
 * The producer pushes a counter stream (4-byte values) in chunks of random
 * length; the consumer checks what it takes. Each mode ends when the
 * producer has pushed everything and the consumer has drained the ring, so
 * the verdict never depends on how fast the machine is:
 *  - lossless: push and pop, the consumer sleeping on the doorbell; a wait
 *    that ends by its (generous) timeout with data queued is a lost wake-up;
 *  - overwrite: push_overwrite while the consumer reads; values stay whole
 *    and strictly increasing, and received + dropped == sent;
 *  - discard: the producer flushes at random while the consumer reads;
 *    values stay strictly increasing and received + discarded == sent.
 *
 * Usage: ring_stress ITEMS SEED [MODE...] (default: every mode). Exit 0 on
 * success; on failure, 1 and a line on stderr saying what broke.
 */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "ring.h"

#define STRESS_MAX_CHUNK 97
#define STRESS_POP_BYTES 1000

enum stress_mode {
	STRESS_LOSSLESS,
	STRESS_OVERWRITE,
	STRESS_DISCARD,
};

struct stress {
	struct convai_ring *ring;
	enum stress_mode mode;
	uint32_t items;
	unsigned int seed;
	/*! Set by the producer after its last push (release), read by the consumer. */
	volatile int done;
	/* Consumer results. */
	uint64_t received;
	uint64_t doorbell_waits;
	uint64_t wake_timeouts;
	const char *error;
};

static uint32_t stress_random(unsigned int *state)
{
	*state = *state * 1103515245u + 12345u;
	return (*state >> 16) & 0x7fff;
}

static void *stress_produce(void *arg)
{
	struct stress *s = arg;
	uint32_t chunk[STRESS_MAX_CHUNK];
	uint32_t next = 0;
	unsigned int state = s->seed;

	while (next < s->items) {
		uint32_t n = 1 + stress_random(&state) % STRESS_MAX_CHUNK;
		uint32_t i;

		if (n > s->items - next) {
			n = s->items - next;
		}
		for (i = 0; i < n; i++) {
			chunk[i] = next + i;
		}
		switch (s->mode) {
		case STRESS_LOSSLESS:
			/* Full: give the consumer the core; sched_yield keeps this fair on a busy machine. */
			while (convai_ring_push(s->ring, chunk, n * sizeof(uint32_t))) {
				sched_yield();
			}
			break;
		case STRESS_OVERWRITE:
			convai_ring_push_overwrite(s->ring, chunk, n * sizeof(uint32_t), sizeof(uint32_t));
			/* Let the consumer read between pushes, so that drops race real reads. */
			sched_yield();
			break;
		case STRESS_DISCARD:
			while (convai_ring_push(s->ring, chunk, n * sizeof(uint32_t))) {
				sched_yield();
			}
			if (stress_random(&state) % 64 == 0) {
				convai_ring_discard(s->ring);
			}
			break;
		}
		next += n;
	}
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	/* Wake a consumer asleep on the doorbell so that it sees done. */
	if (convai_ring_doorbell(s->ring) >= 0) {
		eventfd_write(convai_ring_doorbell(s->ring), 1);
	}
	return NULL;
}

/*! \brief Consumer: sleep until something is queued (lossless mode uses the doorbell). */
static void stress_wait(struct stress *s)
{
	struct pollfd pfd = { .fd = convai_ring_doorbell(s->ring), .events = POLLIN };
	eventfd_t ignored;

	if (pfd.fd < 0) {
		sched_yield();
		return;
	}
	/* Set the level first, then look: a push in between rings (see ring.h). */
	convai_ring_notify_at(s->ring, 1);
	if (convai_ring_used(s->ring) || __atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
		return;
	}
	s->doorbell_waits++;
	/*
	 * The timeout only keeps a lost wake-up from hanging the run. Timing out
	 * with nothing queued is a starved producer (a busy machine), not an error;
	 * timing out with data queued means its push did not ring.
	 */
	if (poll(&pfd, 1, 5000) == 0 && convai_ring_used(s->ring)) {
		s->wake_timeouts++;
	}
	eventfd_read(pfd.fd, &ignored);
}

static void *stress_consume(void *arg)
{
	struct stress *s = arg;
	uint32_t buf[STRESS_POP_BYTES / sizeof(uint32_t) + 1];
	unsigned char partial[sizeof(uint32_t)];
	size_t partial_len = 0;
	int64_t last = -1;

	for (;;) {
		int done = __atomic_load_n(&s->done, __ATOMIC_ACQUIRE);
		size_t got, i, values;
		unsigned char *bytes = (unsigned char *) buf;

		/* Overwrite and discard drop whole values only when pops are whole values. */
		got = convai_ring_pop(s->ring, bytes + partial_len, STRESS_POP_BYTES);
		if (s->mode != STRESS_LOSSLESS && got % sizeof(uint32_t)) {
			s->error = "a pop returned a torn value";
			return NULL;
		}
		if (!got) {
			if (done && !convai_ring_used(s->ring)) {
				break;
			}
			stress_wait(s);
			continue;
		}
		memcpy(bytes, partial, partial_len);
		got += partial_len;
		values = got / sizeof(uint32_t);
		partial_len = got % sizeof(uint32_t);
		memcpy(partial, bytes + values * sizeof(uint32_t), partial_len);
		for (i = 0; i < values; i++) {
			uint32_t v;

			memcpy(&v, bytes + i * sizeof(uint32_t), sizeof(v));
			if (s->mode == STRESS_LOSSLESS ? (int64_t) v != last + 1 : (int64_t) v <= last) {
				s->error = s->mode == STRESS_LOSSLESS ? "lost or reordered value" : "reordered value";
				return NULL;
			}
			last = v;
		}
		s->received += values;
	}
	if (partial_len) {
		s->error = "a torn value at the end";
	} else if (s->mode == STRESS_LOSSLESS && s->received != s->items) {
		s->error = "values missing at the end";
	}
	return NULL;
}

static int stress_run(enum stress_mode mode, const char *name, uint32_t items, unsigned int seed, size_t capacity)
{
	struct stress s = { .mode = mode, .items = items, .seed = seed };
	pthread_t producer, consumer;
	uint64_t lost;

	s.ring = convai_ring_alloc(capacity);
	if (!s.ring || (mode == STRESS_LOSSLESS && convai_ring_open_doorbell(s.ring) < 0)) {
		fprintf(stderr, "%s: cannot allocate the ring: %s\n", name, strerror(errno));
		return 1;
	}
	pthread_create(&consumer, NULL, stress_consume, &s);
	pthread_create(&producer, NULL, stress_produce, &s);
	pthread_join(producer, NULL);
	pthread_join(consumer, NULL);
	lost = (convai_ring_overflowed(s.ring) + convai_ring_discarded(s.ring)) / sizeof(uint32_t);
	if (!s.error && s.received + lost != items) {
		s.error = "received + dropped != sent";
	}
	if (!s.error && convai_ring_pushed(s.ring) != (uint64_t) items * sizeof(uint32_t)) {
		s.error = "the pushed counter disagrees";
	}
	printf("%s: %" PRIu32 " sent, %" PRIu64 " received, %" PRIu64 " dropped, %" PRIu64
		" doorbell waits, %" PRIu64 " lost wake-ups\n",
		name, items, s.received, lost, s.doorbell_waits, s.wake_timeouts);
	convai_ring_unref(s.ring);
	if (s.error) {
		fprintf(stderr, "%s: FAILED: %s\n", name, s.error);
		return 1;
	}
	if (s.wake_timeouts) {
		fprintf(stderr, "%s: FAILED: %" PRIu64 " doorbell wake-ups were lost\n", name, s.wake_timeouts);
		return 1;
	}
	return 0;
}

/*! \brief Whether MODE was asked for (no modes named: all of them). */
static int stress_wanted(int argc, char **argv, const char *mode)
{
	int i;

	for (i = 3; i < argc; i++) {
		if (!strcmp(argv[i], mode)) {
			return 1;
		}
	}
	return argc <= 3;
}

int main(int argc, char **argv)
{
	uint32_t items = argc > 1 ? (uint32_t) strtoul(argv[1], NULL, 10) : 5000000;
	unsigned int seed = argc > 2 ? (unsigned int) strtoul(argv[2], NULL, 10) : 1;
	int failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (stress_wanted(argc, argv, "lossless")) {
		failed |= stress_run(STRESS_LOSSLESS, "lossless", items, seed, 4096);
	}
	if (stress_wanted(argc, argv, "overwrite")) {
		failed |= stress_run(STRESS_OVERWRITE, "overwrite", items, seed + 1, 1024);
	}
	if (stress_wanted(argc, argv, "discard")) {
		failed |= stress_run(STRESS_DISCARD, "discard", items, seed + 2, 4096);
	}
	return failed;
}
