/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief A call's clock records counted at C speed (see clockstats.h).
 *
 * Runs on Python's asyncio thread, through cffi, holding the GIL; it only
 * touches the struct and the bytes it is handed.
 */

#include <string.h>

#include "clockstats.h"
#include "convai_wire.h"

#define NS_PER_MS 1000000ULL

void convai_clockstats_written(struct convai_clockstats *stats, uint64_t at_ns)
{
	if (stats->frames_written) {
		uint64_t gap = at_ns - stats->last_write_ns;

		/* Rounded to the nearest millisecond; a frame reported out of order is no interval. */
		if (at_ns >= stats->last_write_ns && gap <= CONVAI_CLOCKSTATS_IDLE_GAP_MS * NS_PER_MS) {
			stats->intervals_ms[(gap + NS_PER_MS / 2) / NS_PER_MS]++;
		}
	} else {
		stats->first_write_ns = at_ns;
	}
	stats->frames_written++;
	stats->last_write_ns = at_ns;
}

/*! \brief Forget the oldest capture kept. */
static void clockstats_forget_oldest(struct convai_clockstats *stats)
{
	stats->capture_first = (stats->capture_first + 1) % CONVAI_CLOCKSTATS_CAPTURES;
	stats->capture_count--;
}

static void clockstats_captured(struct convai_clockstats *stats, uint64_t position, uint64_t at_ns)
{
	uint32_t slot;

	if (stats->capture_count == CONVAI_CLOCKSTATS_CAPTURES) {
		/* Python is seconds behind: the oldest capture goes (a sample is lost, none is wrong). */
		stats->capture_dropped_to = stats->capture_position[stats->capture_first];
		clockstats_forget_oldest(stats);
	}
	slot = (stats->capture_first + stats->capture_count) % CONVAI_CLOCKSTATS_CAPTURES;
	stats->capture_position[slot] = position;
	stats->capture_at_ns[slot] = at_ns;
	stats->capture_count++;
}

size_t convai_clockstats_digest(struct convai_clockstats *stats, const void *records, size_t length)
{
	const unsigned char *bytes = records;
	struct convai_clock_record record;
	size_t offset;

	for (offset = 0; offset + sizeof(record) <= length; offset += sizeof(record)) {
		/* Copied: Python's bytes need not be aligned for the struct. */
		memcpy(&record, bytes + offset, sizeof(record));
		if (record.kind == CONVAI_CLOCK_WRITTEN && record.at_ns < stats->hand_over_writes_from_ns) {
			convai_clockstats_written(stats, record.at_ns);
		} else if (record.kind == CONVAI_CLOCK_CAPTURED) {
			clockstats_captured(stats, record.position, record.at_ns);
		} else {
			return offset;
		}
	}
	return offset;
}

int convai_clockstats_captured_at(struct convai_clockstats *stats, uint64_t stream_end, uint64_t *at_ns)
{
	if (stream_end <= stats->capture_dropped_to) {
		return -1;
	}
	while (stats->capture_count && stats->capture_position[stats->capture_first] < stream_end) {
		clockstats_forget_oldest(stats);
	}
	if (!stats->capture_count) {
		return 0;
	}
	*at_ns = stats->capture_at_ns[stats->capture_first];
	return 1;
}
