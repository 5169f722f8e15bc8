/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief The capture framehook: caller audio into the uplink ring, in the
 * agent's input format, each piece timed on the clock ring.
 *
 * Threads: the hook runs in ast_read() on the channel thread with the
 * channel LOCKED, so it only copies bytes: no GIL, no blocking, no Python.
 * The rest runs on the same channel thread, channel not locked on entry.
 */

#include "asterisk.h"

#include <time.h>

#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/format_cache.h"
#include "asterisk/framehook.h"
#include "asterisk/logger.h"
#include "asterisk/translate.h"

#include "convai.h"
#include "ring.h"

/*! \brief State of the capture framehook; an ao2 object owned by the hook. */
struct convai_capture {
	/*! Caller audio goes here; a ring reference held by the hook. */
	struct convai_ring *uplink;
	/*! When it was captured goes here; a ring reference held by the hook. */
	struct convai_ring *clock;
	/*! The agent's input format; NULL until the metadata arrives. */
	struct ast_format *format;
	/*! Native format the translation path starts from. */
	struct ast_format *source;
	struct ast_trans_pvt *path;
	/*! Bytes per sample of format, so overflow drops whole samples. */
	unsigned int sample_bytes;
	/*! Set once when no translation path exists; the channel thread then ends the call (atomic). */
	int untranslatable;
};

static void convai_capture_destroy(void *obj)
{
	struct convai_capture *capture = obj;

	if (capture->path) {
		ast_translator_free_path(capture->path);
	}
	ao2_cleanup(capture->source);
	ao2_cleanup(capture->format);
	convai_ring_unref(capture->uplink);
	convai_ring_unref(capture->clock);
}

/*! \internal \brief The current CLOCK_MONOTONIC time, in nanoseconds. */
static uint64_t convai_now_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t) now.tv_sec * 1000000000ULL + (uint64_t) now.tv_nsec;
}

void convai_clock(struct convai_ring *clock, enum convai_clock_kind kind, uint64_t position)
{
	struct convai_clock_record record = { .position = position, .at_ns = convai_now_ns(), .kind = kind };

	convai_ring_push(clock, &record, sizeof(record));
}

/*! \internal \brief Append captured caller audio and time it. */
static void convai_capture_push(struct convai_capture *capture, const void *data, size_t len)
{
	convai_ring_push_overwrite(capture->uplink, data, len, capture->sample_bytes);
	convai_clock(capture->clock, CONVAI_CLOCK_CAPTURED, convai_ring_pushed(capture->uplink));
}

/*! \internal \brief Copy one voice frame into the uplink, translating native audio if needed. */
static void convai_capture_voice(struct ast_channel *chan, struct convai_capture *capture, struct ast_frame *frame)
{
	struct ast_frame *translated, *cur;

	if (ast_format_cmp(frame->subclass.format, capture->format) == AST_FORMAT_CMP_EQUAL) {
		convai_capture_push(capture, frame->data.ptr, frame->datalen);
		return;
	}
	/* A read framehook sees the native codec, before read translation. */
	if (!capture->path || ast_format_cmp(capture->source, frame->subclass.format) != AST_FORMAT_CMP_EQUAL) {
		if (capture->path) {
			ast_translator_free_path(capture->path);
		}
		ao2_replace(capture->source, frame->subclass.format);
		capture->path = ast_translator_build_path(capture->format, frame->subclass.format);
		if (!capture->path) {
			/* Once, not per frame: the channel thread ends the call as FAILED. */
			ast_log(LOG_ERROR, "%s: no translation path from the caller's %s to the agent's %s "
				"(is the codec module loaded?); ending the call\n", ast_channel_name(chan),
				ast_format_get_name(frame->subclass.format), ast_format_get_name(capture->format));
			__atomic_store_n(&capture->untranslatable, 1, __ATOMIC_RELEASE);
			return;
		}
		/* Once per path, not per frame: what the caller's audio goes through to the agent. */
		if (VERBOSITY_ATLEAST(3)) {
			struct ast_str *steps = ast_str_alloca(256);

			ast_verb(3, "%s: caller audio to the agent: %s\n", ast_channel_name(chan),
				ast_translate_path_to_str(capture->path, &steps));
		}
	}
	/* The translator owns its output frames; ast_frfree only frees what is malloc'd. */
	translated = ast_translate(capture->path, frame, 0);
	for (cur = translated; cur; cur = AST_LIST_NEXT(cur, frame_list)) {
		convai_capture_push(capture, cur->data.ptr, cur->datalen);
	}
	if (translated) {
		ast_frfree(translated);
	}
}

static struct ast_frame *convai_capture_framehook(struct ast_channel *chan, struct ast_frame *frame,
	enum ast_framehook_event event, void *data)
{
	struct convai_capture *capture = data;

	/* Never block here and never call Python: only copy bytes. */
	if (frame && event == AST_FRAMEHOOK_EVENT_READ && frame->frametype == AST_FRAME_VOICE
		&& capture->format && frame->datalen && !capture->untranslatable) {
		convai_capture_voice(chan, capture, frame);
	}
	return frame;
}

static int convai_capture_consume(void *data, enum ast_frame_type type)
{
	return type == AST_FRAME_VOICE;
}

static void convai_capture_framehook_destroy(void *data)
{
	/* Runs from ast_hangup() with the channel locked: only drop the reference. */
	ao2_ref(data, -1);
}

struct convai_capture *convai_capture_attach(struct ast_channel *chan, struct convai_ring *uplink,
	struct convai_ring *clock, int *hook_id)
{
	struct ast_framehook_interface hook = {
		.version = AST_FRAMEHOOK_INTERFACE_VERSION,
		.event_cb = convai_capture_framehook,
		.consume_cb = convai_capture_consume,
		.destroy_cb = convai_capture_framehook_destroy,
		.disable_inheritance = 1,
	};
	struct convai_capture *capture = ao2_alloc(sizeof(*capture), convai_capture_destroy);

	if (!capture) {
		return NULL;
	}
	convai_ring_ref(uplink);
	capture->uplink = uplink;
	convai_ring_ref(clock);
	capture->clock = clock;
	/* The hook owns one reference, released by its destroy callback. */
	hook.data = ao2_bump(capture);
	ast_channel_lock(chan);
	*hook_id = ast_framehook_attach(chan, &hook);
	ast_channel_unlock(chan);
	if (*hook_id < 0) {
		ao2_ref(capture, -2);
		return NULL;
	}
	return capture;
}

void convai_capture_detach(struct ast_channel *chan, int *hook_id)
{
	if (*hook_id < 0) {
		return;
	}
	ast_channel_lock(chan);
	ast_framehook_detach(chan, *hook_id);
	ast_channel_unlock(chan);
	*hook_id = -1;
}

void convai_capture_set_format(struct convai_capture *capture, struct ast_channel *chan, struct ast_format *format)
{
	/* The hook reads these under the channel lock. */
	ast_channel_lock(chan);
	ao2_replace(capture->format, format);
	capture->sample_bytes = format == ast_format_ulaw ? 1 : 2;
	ast_channel_unlock(chan);
}

int convai_capture_untranslatable(const struct convai_capture *capture)
{
	return __atomic_load_n(&capture->untranslatable, __ATOMIC_ACQUIRE);
}
