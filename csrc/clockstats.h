/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief The bulk of a call's clock records, counted at C speed for pyconvai.stats.
 *
 * The channel thread sends Python a clock record (convai_wire.h) for every
 * agent frame it writes and every piece of caller audio it captures: a
 * hundred a second per call. Most of them only add to counters, the pacing
 * histogram and the list of recent captures; a Python iteration each was the
 * largest share of the asyncio thread's own time after the WebSocket.
 * convai_clockstats_digest() does that part, and stops at each record that
 * needs Python's judgement (a frame written while Python waits for the first
 * frame of new audio or measures a barge-in, keys, answers to control
 * records), which pyconvai.stats handles as before.
 *
 * Python's asyncio thread alone feeds and reads a struct convai_clockstats
 * (allocated by cffi, owned by its CallStats); other threads may read the
 * counters as snapshots. No Asterisk or Python headers: built into the cffi
 * binding only (pyconvai._ring), next to ring.c.
 */

#ifndef CONVAI_CLOCKSTATS_H
#define CONVAI_CLOCKSTATS_H

#include <stddef.h>
#include <stdint.h>

/*! \brief A longer silence between two frames is not a pacing interval (pyconvai.stats.IDLE_GAP_SECONDS). */
#define CONVAI_CLOCKSTATS_IDLE_GAP_MS 60

/*! \brief Captures kept for matching with the chunks sent (about 5 s of 20 ms frames). */
#define CONVAI_CLOCKSTATS_CAPTURES 256

/*! \brief One call's figures from its clock records. Zeroed: no record yet. */
struct convai_clockstats {
	/*! Agent frames written, and when the first and the last were (CLOCK_MONOTONIC ns). */
	uint64_t frames_written;
	uint64_t first_write_ns;
	uint64_t last_write_ns;
	/*! A frame written at or after this time is left to the caller (UINT64_MAX: none is). */
	uint64_t hand_over_writes_from_ns;
	/*! Intervals between consecutive frames, counted by whole milliseconds (rounded). */
	uint64_t intervals_ms[CONVAI_CLOCKSTATS_IDLE_GAP_MS + 1];
	/*! Recent captures: the uplink stream's end after each and when; oldest at capture_first. */
	uint64_t capture_position[CONVAI_CLOCKSTATS_CAPTURES];
	uint64_t capture_at_ns[CONVAI_CLOCKSTATS_CAPTURES];
	uint32_t capture_first;
	uint32_t capture_count;
	/*! The stream end of the last capture dropped to make room (0: none). */
	uint64_t capture_dropped_to;
};

/*!
 * \brief Count the records in \a records (\a length bytes of whole struct
 * convai_clock_record) up to the first one left to the caller: a frame
 * written at or after hand_over_writes_from_ns, or a record of any kind
 * other than WRITTEN and CAPTURED.
 * \return the bytes consumed: every whole record, or the offset of that record
 */
size_t convai_clockstats_digest(struct convai_clockstats *stats, const void *records, size_t length);

/*! \brief Count one frame written at \a at_ns (for the records the caller handles itself). */
void convai_clockstats_written(struct convai_clockstats *stats, uint64_t at_ns);

/*!
 * \brief When the caller audio up to \a stream_end had been captured: the
 * first capture whose stream end is at least \a stream_end. Earlier captures
 * are forgotten; that one is kept (the next chunk may end in it too).
 * \retval 1 found; \a at_ns set
 * \retval 0 not captured yet
 * \retval -1 its capture was dropped to make room: no figure for this chunk
 */
int convai_clockstats_captured_at(struct convai_clockstats *stats, uint64_t stream_end, uint64_t *at_ns);

#endif /* CONVAI_CLOCKSTATS_H */
