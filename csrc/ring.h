/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief Lock-free byte ring shared by the Asterisk channel thread and Python.
 *
 * One producer thread and one consumer thread. Neither side ever blocks or
 * takes a lock, so the framehook (channel locked) and the PBX thread can use a
 * ring without the GIL, and Python can use it without any Asterisk lock.
 *
 * Two operations break the plain SPSC rule on purpose, and both are safe
 * because the read index is advanced only by compare-and-swap:
 *  - convai_ring_push_overwrite() lets the producer drop the oldest bytes;
 *  - convai_ring_discard() lets the producer drop everything queued (barge-in).
 * A consumer whose copy raced with either simply retries.
 *
 * A ring is reference counted: the module and the Python session each hold a
 * reference, and whichever lets go last frees it. No Asterisk or Python
 * headers may be included here: this file is compiled into both.
 */

#ifndef CONVAI_RING_H
#define CONVAI_RING_H

#include <stddef.h>
#include <stdint.h>

struct convai_ring;

/*!
 * \brief Allocate a ring holding at least \a capacity bytes, with one reference.
 * \retval NULL on allocation failure
 */
struct convai_ring *convai_ring_alloc(size_t capacity);

/*! \brief Take another reference (any thread). */
void convai_ring_ref(struct convai_ring *ring);

/*! \brief Drop a reference (any thread); the last one frees the ring. */
void convai_ring_unref(struct convai_ring *ring);

/*! \brief Usable size in bytes (a power of two). */
size_t convai_ring_capacity(const struct convai_ring *ring);

/*! \brief Bytes queued now (either side; a snapshot). */
size_t convai_ring_used(const struct convai_ring *ring);

/*!
 * \brief Producer: append all of \a len bytes, or nothing.
 * \retval 0 written
 * \retval -1 not enough room; nothing written
 */
int convai_ring_push(struct convai_ring *ring, const void *data, size_t len);

/*!
 * \brief Producer: append \a len bytes, dropping the oldest queued bytes to
 * make room (in steps of \a unit bytes, so samples stay aligned).
 * \return the number of bytes dropped (also added to the overflow counter)
 */
size_t convai_ring_push_overwrite(struct convai_ring *ring, const void *data, size_t len, size_t unit);

/*! \brief Consumer: copy out and remove up to \a max bytes. \return bytes copied */
size_t convai_ring_pop(struct convai_ring *ring, void *out, size_t max);

/*!
 * \brief Consumer: copy out and remove exactly \a len bytes, or nothing.
 * \retval 0 a whole frame was taken
 * \retval -1 fewer than \a len bytes queued
 */
int convai_ring_pop_exact(struct convai_ring *ring, void *out, size_t len);

/*!
 * \brief Consumer: like convai_ring_pop_exact(), and tell where the frame was.
 * \param[out] position the frame's first byte as an absolute stream index
 *             (the producer's convai_ring_pushed() when it pushed that byte)
 */
int convai_ring_pop_frame(struct convai_ring *ring, void *out, size_t len, uint64_t *position);

/*!
 * \brief Producer: drop everything queued now (barge-in flush).
 * Bytes pushed after this call are kept.
 * \return the number of bytes dropped
 */
size_t convai_ring_discard(struct convai_ring *ring);

/*! \brief Counters since allocation, in bytes (either side; snapshots). */
uint64_t convai_ring_pushed(const struct convai_ring *ring);
uint64_t convai_ring_popped(const struct convai_ring *ring);
uint64_t convai_ring_overflowed(const struct convai_ring *ring);
uint64_t convai_ring_discarded(const struct convai_ring *ring);

/*!
 * \brief Give the ring a doorbell: an eventfd (non-blocking) that the producer
 * writes when the consumer's notify level is reached, so that the consumer
 * can sleep in poll() instead of polling the ring. Call before sharing the
 * ring; the ring closes the eventfd when it is freed.
 * \return the eventfd, or -1 on failure (the ring then works without one)
 */
int convai_ring_open_doorbell(struct convai_ring *ring);

/*! \brief The doorbell's eventfd, or -1 (any thread; the consumer dups it to poll it). */
int convai_ring_doorbell(const struct convai_ring *ring);

/*!
 * \brief Consumer: ring the doorbell once, when \a level bytes are queued
 * (SIZE_MAX: never). The producer checks after each push, so a level already
 * reached when this is called rings only at the next push: check
 * convai_ring_used() after setting it.
 */
void convai_ring_notify_at(struct convai_ring *ring, size_t level);

/*! \brief Ring the doorbell now, whatever the level (any thread, never blocks). */
void convai_ring_wake(struct convai_ring *ring);

#endif /* CONVAI_RING_H */
