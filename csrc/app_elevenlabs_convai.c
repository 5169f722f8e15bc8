/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief ElevenLabsConversationalAI(), also registered as AIConversation():
 * connect a caller to a conversational AI agent (ElevenLabs, OpenAI Realtime or
 * a WebSocket server, elevenlabs.conf's provider) through an embedded Python runtime.
 *
 * This file: the application, the pacing loop, control records from Python,
 * load and unload. The capture framehook lives in convai_capture.c,
 * elevenlabs.conf in convai_config.c, the CLI and metrics in convai_cli.c
 * (see convai.h).
 *
 * Threads: the application runs on the channel's PBX thread and owns the
 * channel for the whole conversation: it reads it (so the framehook fires),
 * writes exactly one 20 ms agent frame per timer tick, and executes control
 * records from Python. Python (asyncio thread, playback thread) never touches
 * the channel; audio crosses through lock-free rings (ring.h) and control
 * through a ring plus an eventfd. The GIL is taken only in embed.c, never
 * with a channel locked.
 *
 * \ingroup applications
 */

/*** MODULEINFO
	<support_level>extended</support_level>
 ***/

#include "asterisk.h"

#include <dlfcn.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "asterisk/app.h"
#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/format_cache.h"
#include "asterisk/indications.h"
#include "asterisk/logger.h"
#include "asterisk/manager.h"
#include "asterisk/module.h"
#include "asterisk/musiconhold.h"
#include "asterisk/pbx.h"
#include "asterisk/strings.h"
#include "asterisk/timing.h"
#include "asterisk/utils.h"

#include "convai.h"
#include "convai_wire.h"
#include "embed.h"
#include "ring.h"

#ifndef CONVAI_LIBPYTHON
#error "CONVAI_LIBPYTHON (the libpython soname) must be defined by the build"
#endif

/*! Largest 20 ms frame: 48 kHz, 16-bit. */
#define CONVAI_MAX_FRAME_BYTES 1920
/*! Frames written at most per timer tick when catching up after a late tick. */
#define CONVAI_MAX_CATCHUP_FRAMES 3
/*
 * Ring sizes. A ring costs the pages it has cycled through, i.e. all of it after a
 * while: sized to what each carries, not more (they were most of a call's memory).
 */
/*! Caller -> Python: 8 s of μ-law, 2 s at 16 kHz, 680 ms at 48 kHz; Python takes audio
 * at least every quarter of it (UPLINK_NOTIFY_MAX in pyconvai/call.py), so long
 * chunks of wide formats are gathered in Python. */
#define CONVAI_UPLINK_BYTES (64 * 1024)
/*! Python keeps up to 500 ms here: 4000 bytes for μ-law, 16000 at 16 kHz (at 48 kHz the
 * lead is what fits, 340 ms). */
#define CONVAI_DOWNLINK_BYTES (32 * 1024)
/*! Rare, short records (a tool result is at most CONVAI_CONTROL_MAX_PAYLOAD). */
#define CONVAI_CONTROL_BYTES (64 * 1024)
/*! About 6 s of records (100 a second): Python drains them on every uplink chunk and on
 * its sweep, at least once a second. */
#define CONVAI_CLOCK_BYTES (16 * 1024)
/*! How long Python may stay silent after start before the call is failed. */
#define CONVAI_STARTUP_GRACE_SECONDS 5
#define CONVAI_SHUTDOWN_TIMEOUT_MS 3000

/*** DOCUMENTATION
	<application name="ElevenLabsConversationalAI" language="en_US">
		<synopsis>
			Connect the caller to an ElevenLabs Conversational AI agent.
		</synopsis>
		<syntax>
			<parameter name="agent" required="true">
				<para>Name of an agent section in <filename>elevenlabs.conf</filename>.</para>
			</parameter>
			<parameter name="options">
				<optionlist>
					<option name="h">
						<para>Hang up when the agent ends the conversation, instead of
						continuing in the dialplan.</para>
					</option>
				</optionlist>
			</parameter>
		</syntax>
		<description>
			<para>Answers the channel if needed and holds it for the whole conversation:
			the caller's audio streams to the agent and the agent's speech is played to
			the caller, with barge-in. The agent's audio formats are taken from the
			conversation metadata; <literal>ulaw_8000</literal> passes through with no
			transcoding.</para>
			<para>The application returns when the agent ends the call (after its last
			words have played), when the caller hangs up, or when the conversation
			fails. It sets these channel variables:</para>
			<variablelist>
				<variable name="ELEVENLABS_STATUS">
					<value name="AGENT_ENDED">The agent ended the conversation; the dialplan continues (or hangs up with option <literal>h</literal>).</value>
					<value name="CALLER_HANGUP">The caller hung up.</value>
					<value name="FAILED">The conversation could not start or broke off; the dialplan continues so the caller can be routed elsewhere.</value>
					<value name="CONFIG_ERROR">Unknown agent, bad option, or the service rejected the configuration (close 1008).</value>
					<value name="BUSY">The agent (or the whole module) is at its max_concurrent_calls; the call was not answered.</value>
					<value name="TRANSFER">The agent put the caller through: the channel continues at transfer_context, ELEVENLABS_TRANSFER_DESTINATION, 1.</value>
					<value name="VOICEMAIL">The agent reached a voicemail (its voicemail_detection tool) and its message has played; as AGENT_ENDED.</value>
					<value name="REDIRECTED">The channel was redirected (AMI Redirect, ChannelRedirect()); it continues where it was sent.</value>
				</variable>
				<variable name="ELEVENLABS_TRANSFER_DESTINATION">
					<para>With TRANSFER: the extension of transfer_context the agent asked for.</para>
				</variable>
				<variable name="ELEVENLABS_CONVERSATION_ID">
					<para>The ElevenLabs conversation id, when one was assigned.</para>
				</variable>
				<variable name="ELEVENLABS_END_REASON">
					<para>The close code and reason, or the error that ended the conversation.</para>
				</variable>
			</variablelist>
			<para>These channel variables, when set before the call, adjust it:</para>
			<variablelist>
				<variable name="ELEVENLABS_FIRST_MESSAGE">
					<para>First message override (if the agent allows <literal>first_message</literal>).</para>
				</variable>
				<variable name="ELEVENLABS_PROMPT">
					<para>System prompt override (if the agent allows <literal>prompt</literal>).</para>
				</variable>
				<variable name="ELEVENLABS_LANGUAGE">
					<para>Language override (if the agent allows <literal>language</literal>).</para>
				</variable>
				<variable name="ELEVENLABS_VOICE_ID">
					<para>Voice override (if the agent allows <literal>voice_id</literal>).</para>
				</variable>
				<variable name="ELEVENLABS_VAR_name">
					<para>Sent as the dynamic variable <replaceable>name</replaceable>.</para>
				</variable>
			</variablelist>
		</description>
		<see-also>
			<ref type="application">AIConversation</ref>
			<ref type="filename">elevenlabs.conf</ref>
		</see-also>
	</application>
	<application name="AIConversation" language="en_US">
		<synopsis>
			Connect the caller to a conversational AI agent of any provider.
		</synopsis>
		<syntax>
			<parameter name="agent" required="true">
				<para>Name of an agent section in <filename>elevenlabs.conf</filename>.</para>
			</parameter>
			<parameter name="options">
				<para>As for <literal>ElevenLabsConversationalAI</literal>.</para>
			</parameter>
		</syntax>
		<description>
			<para>The same application as <literal>ElevenLabsConversationalAI</literal>, under a name
			that does not name a provider: the agent section's <literal>provider</literal>
			(<literal>elevenlabs</literal>, <literal>websocket</literal> or
			<literal>openai_realtime</literal>) decides whom the caller talks to. See
			<literal>ElevenLabsConversationalAI</literal> for the options and the channel
			variables.</para>
			<para>The channel variables keep their <literal>ELEVENLABS_</literal> prefix whatever
			the provider: <variable>ELEVENLABS_STATUS</variable>,
			<variable>ELEVENLABS_END_REASON</variable> and the others are set, and read, as
			they are for <literal>ElevenLabsConversationalAI</literal>.</para>
		</description>
		<see-also>
			<ref type="application">ElevenLabsConversationalAI</ref>
			<ref type="filename">elevenlabs.conf</ref>
		</see-also>
	</application>
 ***/

static const char app[] = CONVAI_APP;
static const char app_neutral[] = CONVAI_APP_NEUTRAL;

/*! The dialplan's names of enum convai_status. */
static const char *const convai_status_names[CONVAI_STATUS_COUNT] = {
	[CONVAI_STATUS_AGENT_ENDED] = "AGENT_ENDED",
	[CONVAI_STATUS_CALLER_HANGUP] = "CALLER_HANGUP",
	[CONVAI_STATUS_FAILED] = "FAILED",
	[CONVAI_STATUS_CONFIG_ERROR] = "CONFIG_ERROR",
	[CONVAI_STATUS_BUSY] = "BUSY",
	[CONVAI_STATUS_TRANSFER] = "TRANSFER",
	[CONVAI_STATUS_VOICEMAIL] = "VOICEMAIL",
	[CONVAI_STATUS_REDIRECTED] = "REDIRECTED",
};

enum convai_exec_flags {
	OPT_HANGUP_ON_END = (1 << 0),
};

#define CONVAI_OPTION_LETTERS "h"

AST_APP_OPTIONS(convai_exec_options, {
	AST_APP_OPTION('h', OPT_HANGUP_ON_END),
});

const char *convai_status_name(enum convai_status status)
{
	return status >= 0 && status < CONVAI_STATUS_COUNT ? convai_status_names[status] : "FAILED";
}

int convai_status_parse(const char *name)
{
	int i;

	for (i = 0; i < CONVAI_STATUS_COUNT; i++) {
		if (!strcmp(name, convai_status_names[i])) {
			return i;
		}
	}
	return -1;
}

/* Host services for pyconvai: called from its threads, GIL held, no channel lock. */

static void convai_log_from_python(enum convai_log_level level, const char *message)
{
	switch (level) {
	case CONVAI_LOG_DEBUG:
		ast_log(LOG_DEBUG, "%s\n", message);
		break;
	case CONVAI_LOG_VERBOSE:
		ast_verb(3, "%s\n", message);
		break;
	case CONVAI_LOG_NOTICE:
		ast_log(LOG_NOTICE, "%s\n", message);
		break;
	case CONVAI_LOG_WARNING:
		ast_log(LOG_WARNING, "%s\n", message);
		break;
	case CONVAI_LOG_ERROR:
		ast_log(LOG_ERROR, "%s\n", message);
		break;
	}
}

static void convai_manager_event_from_python(const char *event, const char *body)
{
	manager_event(EVENT_FLAG_CALL, event, "%s", body);
}

static const struct convai_host convai_host_services = {
	.log = convai_log_from_python,
	.manager_event = convai_manager_event_from_python,
};

static int convai_start_runtime(void)
{
	const char *venv = convai_venv_path();

	if (convai_embed_running()) {
		return 0;
	}
	if (convai_embed_start(venv, CONVAI_LIBPYTHON, &convai_host_services)) {
		ast_log(LOG_ERROR, "The Python runtime did not start (venv %s); calls will fail until it does ('elevenlabs reload' retries)\n",
			venv);
		return -1;
	}
	convai_embed_set_debug(convai_debug_everywhere());
	ast_verb(2, "ElevenLabs Python runtime started from %s\n", venv);
	return 0;
}

/* Audio formats named by the ElevenLabs metadata */

static struct ast_format *convai_format_by_name(const char *name)
{
	if (!strcmp(name, "ulaw_8000")) {
		return ast_format_ulaw;
	} else if (!strcmp(name, "pcm_8000")) {
		return ast_format_slin;
	} else if (!strcmp(name, "pcm_16000")) {
		return ast_format_slin16;
	} else if (!strcmp(name, "pcm_24000")) {
		return ast_format_slin24;
	} else if (!strcmp(name, "pcm_44100")) {
		return ast_format_slin44;
	} else if (!strcmp(name, "pcm_48000")) {
		return ast_format_slin48;
	}
	return NULL;
}

/* The call loop and its helpers: channel thread, channel NOT locked unless stated. */

void convai_clock_now(struct convai_call *call, enum convai_clock_kind kind, uint64_t position)
{
	convai_clock(call->clock, kind, position);
	convai_ring_wake(call->uplink);
}

void convai_call_end(struct convai_call *call, enum convai_status status, const char *reason)
{
	if (call->ended) {
		return;
	}
	call->ended = 1;
	call->status = status;
	if (reason) {
		ast_copy_string(call->reason, reason, sizeof(call->reason));
	}
}

static void convai_set_formats(struct convai_call *call, const char *input, const char *output)
{
	struct ast_format *in = convai_format_by_name(input);
	struct ast_format *out = convai_format_by_name(output);
	char reason[256];

	if (!in || !out) {
		snprintf(reason, sizeof(reason), "unsupported agent audio format %s / %s", input, output);
		ast_log(LOG_ERROR, "%s: %s\n", ast_channel_name(call->chan), reason);
		convai_call_end(call, CONVAI_STATUS_FAILED, reason);
		convai_embed_call_hangup(call->session, reason);
		return;
	}
	if (ast_set_write_format(call->chan, out)) {
		snprintf(reason, sizeof(reason), "cannot write %s to this channel", ast_format_get_name(out));
		ast_log(LOG_ERROR, "%s: %s\n", ast_channel_name(call->chan), reason);
		convai_call_end(call, CONVAI_STATUS_FAILED, reason);
		convai_embed_call_hangup(call->session, reason);
		return;
	}
	ao2_replace(call->out_format, out);
	call->frame_samples = ast_format_get_sample_rate(out) * CONVAI_FRAME_MS / 1000;
	call->frame_bytes = out == ast_format_ulaw ? call->frame_samples : call->frame_samples * 2;

	convai_capture_set_format(call->capture, call->chan, in);
	ast_debug(3, "%s: agent formats %s in, %s out\n", ast_channel_name(call->chan), input, output);
}

/*!
 * \internal \brief Split a NUL-separated payload into at most \a max strings.
 *
 * These strings reach AMI headers, channel variables and the log, and some
 * came from the network: control characters (a CR/LF would forge AMI headers)
 * become spaces here too, whatever pyconvai already did.
 */
int convai_split(char *payload, size_t len, const char **parts, int max)
{
	int n = 0;
	size_t i;

	payload[len] = '\0';
	for (i = 0; i < len; i++) {
		if (payload[i] && ((unsigned char) payload[i] < 0x20 || payload[i] == 0x7f)) {
			payload[i] = ' ';
		}
	}
	i = 0;
	while (n < max && i <= len) {
		parts[n++] = payload + i;
		i += strlen(payload + i) + 1;
	}
	while (n < max) {
		parts[n++] = "";
	}
	return n;
}

/*!
 * \internal \brief ast_read() said the channel is gone: a hangup, or a redirect (AMI
 * Redirect, ChannelRedirect()) whose new location the PBX runs once we return 0.
 */
void convai_call_gone(struct convai_call *call)
{
	int redirected;

	ast_channel_lock(call->chan);
	redirected = ast_channel_softhangup_internal_flag(call->chan) & AST_SOFTHANGUP_ASYNCGOTO;
	ast_channel_unlock(call->chan);
	if (redirected) {
		convai_call_end(call, CONVAI_STATUS_REDIRECTED, "the channel was redirected");
		convai_embed_call_hangup(call->session, "the channel was redirected");
	} else {
		convai_call_end(call, CONVAI_STATUS_CALLER_HANGUP, "caller hung up");
	}
}

static void convai_handle_control(struct convai_call *call)
{
	unsigned char header[CONVAI_CONTROL_HEADER];
	char payload[CONVAI_CONTROL_MAX_PAYLOAD + 1];
	const char *parts[4];
	eventfd_t ignored;
	int status;

	eventfd_read(call->wake_fd, &ignored);
	while (!convai_ring_pop_exact(call->control, header, sizeof(header))) {
		size_t len = header[2] | (header[3] << 8);

		if (len > CONVAI_CONTROL_MAX_PAYLOAD || convai_ring_pop_exact(call->control, payload, len)) {
			ast_log(LOG_ERROR, "%s: corrupt control record from pyconvai; ending the call\n",
				ast_channel_name(call->chan));
			convai_call_end(call, CONVAI_STATUS_FAILED, "internal error: corrupt control record");
			return;
		}
		convai_split(payload, len, parts, ARRAY_LEN(parts));
		switch (header[0]) {
		case CONVAI_CONTROL_FORMATS:
			convai_set_formats(call, parts[0], parts[1]);
			break;
		case CONVAI_CONTROL_STARTED:
			ast_copy_string(call->conversation_id, parts[0], sizeof(call->conversation_id));
			pbx_builtin_setvar_helper(call->chan, "ELEVENLABS_CONVERSATION_ID", call->conversation_id);
			manager_event(EVENT_FLAG_CALL, "ElevenLabsConversationStarted",
				"Channel: %s\r\nUniqueid: %s\r\nAgent: %s\r\nConversationID: %s\r\n",
				ast_channel_name(call->chan), ast_channel_uniqueid(call->chan), call->agent->name,
				call->conversation_id);
			break;
		case CONVAI_CONTROL_END:
			if (!ast_strlen_zero(parts[1])) {
				ast_copy_string(call->conversation_id, parts[1], sizeof(call->conversation_id));
			}
			status = convai_status_parse(parts[0]);
			if (status < 0) {
				ast_log(LOG_ERROR, "%s: unknown status from pyconvai; ending the call as FAILED\n",
					ast_channel_name(call->chan));
				status = CONVAI_STATUS_FAILED;
			}
			ast_copy_string(call->transfer_destination, parts[3], sizeof(call->transfer_destination));
			convai_call_end(call, status, parts[2]);
			break;
		case CONVAI_CONTROL_SEND_DTMF:
			convai_send_dtmf(call, parts[0]);
			break;
		case CONVAI_CONTROL_TRANSFER_CHECK:
			convai_clock_now(call, CONVAI_CLOCK_TRANSFER_CHECKED, convai_transfer_exists(call, parts[0]));
			break;
		case CONVAI_CONTROL_RUN_TOOL:
			convai_run_tool(call, payload, len);
			break;
		default:
			ast_log(LOG_WARNING, "%s: unknown control record %u from pyconvai\n",
				ast_channel_name(call->chan), header[0]);
			break;
		}
	}
}

/*!
 * \internal \brief Timer tick: write the agent frames now due.
 *
 * Frames are due on absolute deadlines from play_epoch, so a late tick is
 * caught up (up to CONVAI_MAX_CATCHUP_FRAMES) instead of slowing playback
 * down. An empty ring writes nothing: no silence padding, no format switch.
 * Also called on a wake from Python while silent, so that the first frame of
 * new audio goes out at once; the timer is then re-armed in step with it.
 */
static void convai_play_due_frames(struct convai_call *call)
{
	unsigned char buf[AST_FRIENDLY_OFFSET + CONVAI_MAX_FRAME_BYTES];
	struct ast_frame frame = {
		.frametype = AST_FRAME_VOICE,
		.src = "ElevenLabs",
		.offset = AST_FRIENDLY_OFFSET,
		.data.ptr = buf + AST_FRIENDLY_OFFSET,
	};
	struct timeval now = ast_tvnow();
	uint64_t position;
	unsigned int due, written = 0;

	if (!call->out_format) {
		return;
	}
	if (!call->playing) {
		if (!convai_ring_used(call->downlink)) {
			return;
		}
		/* Playback starts now: put the timer's ticks in step with this first frame. */
		convai_stop_connecting_sound(call);
		call->play_epoch = now;
		call->frames_since_epoch = 0;
		ast_timer_set_rate(call->timer, 1000 / CONVAI_FRAME_MS);
	}
	/* Round to the nearest deadline: a tick a few microseconds early is still that tick. */
	due = (ast_tvdiff_us(now, call->play_epoch) + CONVAI_FRAME_MS * 500) / (CONVAI_FRAME_MS * 1000) + 1;
	while (call->frames_since_epoch < due && written < CONVAI_MAX_CATCHUP_FRAMES) {
		if (convai_ring_pop_frame(call->downlink, frame.data.ptr, call->frame_bytes, &position)) {
			/* Nothing queued: restart the deadlines when audio comes back. */
			call->playing = 0;
			return;
		}
		frame.subclass.format = call->out_format;
		frame.datalen = call->frame_bytes;
		frame.samples = call->frame_samples;
		if (ast_write(call->chan, &frame)) {
			ast_debug(3, "%s: ast_write of an agent frame failed\n", ast_channel_name(call->chan));
		}
		/* Tell Python when this frame went out: latency, barge-in and pacing figures. */
		convai_clock(call->clock, CONVAI_CLOCK_WRITTEN, position);
		call->playing = 1;
		call->frames_since_epoch++;
		written++;
	}
	if (call->frames_since_epoch < due) {
		/* Too far behind: drop the backlog of deadlines rather than burst. */
		call->play_epoch = now;
		call->frames_since_epoch = 0;
	}
}

static int convai_call_open(struct convai_call *call)
{
	call->uplink = convai_ring_alloc(CONVAI_UPLINK_BYTES);
	call->downlink = convai_ring_alloc(CONVAI_DOWNLINK_BYTES);
	call->control = convai_ring_alloc(CONVAI_CONTROL_BYTES);
	call->clock = convai_ring_alloc(CONVAI_CLOCK_BYTES);
	if (!call->uplink || !call->downlink || !call->control || !call->clock) {
		return -1;
	}
	/* Python sleeps until the framehook has captured a whole chunk (no polling). */
	if (convai_ring_open_doorbell(call->uplink) < 0) {
		ast_log(LOG_WARNING, "%s: eventfd failed: %s; caller audio is polled every 100 ms instead\n",
			ast_channel_name(call->chan), strerror(errno));
	}
	call->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (call->wake_fd < 0) {
		ast_log(LOG_ERROR, "%s: eventfd failed: %s\n", ast_channel_name(call->chan), strerror(errno));
		return -1;
	}
	call->timer = ast_timer_open();
	if (!call->timer) {
		ast_log(LOG_ERROR, "%s: no timing source; load res_timing_timerfd\n", ast_channel_name(call->chan));
		return -1;
	}
	if (ast_timer_set_rate(call->timer, 1000 / CONVAI_FRAME_MS)) {
		ast_log(LOG_ERROR, "%s: cannot set the timer to %d Hz\n", ast_channel_name(call->chan),
			1000 / CONVAI_FRAME_MS);
		return -1;
	}
	return 0;
}

static void convai_call_close(struct convai_call *call)
{
	if (call->session) {
		convai_embed_call_release(call->session);
	}
	if (call->timer) {
		ast_timer_close(call->timer);
	}
	if (call->wake_fd >= 0) {
		close(call->wake_fd);
	}
	convai_ring_unref(call->uplink);
	convai_ring_unref(call->downlink);
	convai_ring_unref(call->control);
	convai_ring_unref(call->clock);
	ao2_cleanup(call->capture);
	ao2_cleanup(call->out_format);
	ao2_cleanup(call->saved_write_format);
	ao2_cleanup(call->agent);
}

/*! \internal \brief Wait on the channel, the timer and Python until the call ends. */
static void convai_call_run(struct convai_call *call)
{
	struct timeval started = ast_tvnow();
	int fds[2] = { ast_timer_fd(call->timer), call->wake_fd };

	/* Keys arrive as END frames at once, not after the core's emulated duration. */
	ast_set_flag(ast_channel_flags(call->chan), AST_FLAG_END_DTMF_ONLY);
	while (!call->ended) {
		struct ast_channel *ready;
		struct ast_frame *frame;
		int ms = 1000, outfd = -1;

		ready = ast_waitfor_nandfds(&call->chan, 1, fds, ARRAY_LEN(fds), NULL, &outfd, &ms);
		if (ready) {
			/* Reading drives the capture framehook; of the frames, only keys matter here. */
			frame = ast_read(call->chan);
			if (!frame) {
				convai_call_gone(call);
				break;
			}
			if (frame->frametype == AST_FRAME_DTMF_END) {
				convai_clock_now(call, CONVAI_CLOCK_DTMF, (unsigned char) frame->subclass.integer);
			}
			ast_frfree(frame);
			if (convai_capture_untranslatable(call->capture)) {
				convai_call_end(call, CONVAI_STATUS_FAILED, "the caller's codec cannot be translated "
					"to the agent's input format");
				convai_embed_call_hangup(call->session, "untranslatable caller codec");
			}
		} else if (outfd == fds[0]) {
			ast_timer_ack(call->timer, 1);
			convai_play_due_frames(call);
		} else if (outfd == fds[1]) {
			convai_handle_control(call);
			if (!call->playing) {
				/* Python woke us because agent audio arrived to a silent call. */
				convai_play_due_frames(call);
			}
		} else if (ms < 0) {
			convai_call_end(call, CONVAI_STATUS_CALLER_HANGUP, "channel wait failed");
			break;
		}
		if (!call->out_format && !call->ended
			&& ast_tvdiff_ms(ast_tvnow(), started) > 1000 * (CONVAI_STARTUP_GRACE_SECONDS
				+ call->agent->max_connection_attempts * (call->agent->connection_timeout_seconds * 2 + 2))) {
			convai_call_end(call, CONVAI_STATUS_FAILED, "no response from the Python runtime");
			convai_embed_call_hangup(call->session, "startup timeout");
		}
	}
	ast_clear_flag(ast_channel_flags(call->chan), AST_FLAG_END_DTMF_ONLY);
	if (call->status == CONVAI_STATUS_CALLER_HANGUP) {
		convai_embed_call_hangup(call->session, "caller hung up");
	}
}

/*!
 * \internal \brief Answer, hand the call to Python and start capturing.
 * \retval 0 the conversation is under way
 * \retval -1 the call was ended (status and reason set)
 */
static int convai_call_start(struct convai_call *call)
{
	struct convai_call_params params = { 0 };
	char busy[256];

	call->usage = convai_usage_acquire(call->agent, busy, sizeof(busy));
	if (!call->usage) {
		ast_log(LOG_NOTICE, "%s: %s busy: %s\n", ast_channel_name(call->chan), call->app, busy);
		convai_call_end(call, CONVAI_STATUS_BUSY, busy);
		return -1;
	}
	if (ast_channel_state(call->chan) != AST_STATE_UP && ast_answer(call->chan)) {
		convai_call_end(call, CONVAI_STATUS_CALLER_HANGUP, "answer failed");
		return -1;
	}
	if (convai_call_open(call)) {
		convai_call_end(call, CONVAI_STATUS_FAILED, "cannot allocate call resources");
		return -1;
	}
	call->saved_write_format = ao2_bump(ast_channel_writeformat(call->chan));
	params.settings = convai_call_settings(call->chan, call->agent);
	if (!params.settings) {
		convai_call_end(call, CONVAI_STATUS_FAILED, "out of memory");
		return -1;
	}
	params.uplink = call->uplink;
	params.downlink = call->downlink;
	params.control = call->control;
	params.clock = call->clock;
	params.wake_fd = call->wake_fd;
	/* Python copies the settings before returning. */
	call->session = convai_embed_call_start(&params);
	convai_settings_free((const char **) params.settings);
	if (!call->session) {
		convai_call_end(call, CONVAI_STATUS_FAILED, "the Python runtime is not available");
		return -1;
	}
	call->capture = convai_capture_attach(call->chan, call->uplink, call->clock, &call->hook_id);
	if (!call->capture) {
		ast_log(LOG_ERROR, "%s: cannot attach the capture framehook\n", ast_channel_name(call->chan));
		convai_call_end(call, CONVAI_STATUS_FAILED, "cannot attach the capture framehook");
		convai_embed_call_hangup(call->session, "framehook failed");
		return -1;
	}
	convai_start_connecting_sound(call);
	return 0;
}

/*!
 * \internal \brief The one way out of a call, however far it got: restore the
 * channel, publish the result (variables, AMI, counters) and free everything.
 * \return the application's result: -1 hangs up
 */
static int convai_call_finish(struct convai_call *call, const char *agent_name, int hangup_on_end)
{
	struct ast_channel *chan = call->chan;
	const char *status = convai_status_name(call->status);
	int agent_ended = call->status == CONVAI_STATUS_AGENT_ENDED || call->status == CONVAI_STATUS_VOICEMAIL;
	int res = call->status == CONVAI_STATUS_CALLER_HANGUP || (agent_ended && hangup_on_end) ? -1 : 0;

	convai_stop_connecting_sound(call);
	convai_capture_detach(call->chan, &call->hook_id);
	if (call->saved_write_format) {
		ast_set_write_format(chan, call->saved_write_format);
	}
	convai_usage_release(call->usage);
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_STATUS", status);
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_CONVERSATION_ID", call->conversation_id);
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_END_REASON", call->reason);
	if (call->status == CONVAI_STATUS_TRANSFER) {
		pbx_builtin_setvar_helper(chan, "ELEVENLABS_TRANSFER_DESTINATION", call->transfer_destination);
		/* Continue there once we return 0 (a pending redirect wins: ast_explicit_goto refuses). */
		if (ast_explicit_goto(chan, call->agent->transfer_context, call->transfer_destination, 1)) {
			ast_log(LOG_WARNING, "%s: cannot continue at %s,%s,1\n", ast_channel_name(chan),
				call->agent->transfer_context, call->transfer_destination);
		}
	}
	convai_count_outcome(call->status);
	ast_verb(3, "%s: %s() ended: %s (%s)\n", ast_channel_name(chan), call->app, status, call->reason);
	manager_event(EVENT_FLAG_CALL, "ElevenLabsConversationEnded",
		"Channel: %s\r\nUniqueid: %s\r\nAgent: %s\r\nConversationID: %s\r\nStatus: %s\r\n"
		"Reason: %s\r\nDuration: %.3f\r\n%s%s%s",
		ast_channel_name(chan), ast_channel_uniqueid(chan), S_OR(agent_name, ""), call->conversation_id,
		status, call->reason, ast_tvdiff_ms(ast_tvnow(), call->started) / 1000.0,
		call->status == CONVAI_STATUS_TRANSFER ? "TransferDestination: " : "",
		call->status == CONVAI_STATUS_TRANSFER ? call->transfer_destination : "",
		call->status == CONVAI_STATUS_TRANSFER ? "\r\n" : "");
	convai_call_close(call);
	return res;
}

/*! \internal \brief The options argument; -1 when it holds a letter that is not an option. */
static int convai_parse_options(char *options, struct ast_flags *flags)
{
	if (ast_strlen_zero(options)) {
		return 0;
	}
	/* ast_app_parse_options() skips letters it does not know: check them first. */
	if (strspn(options, CONVAI_OPTION_LETTERS) != strlen(options)) {
		return -1;
	}
	return ast_app_parse_options(convai_exec_options, flags, NULL, options) ? -1 : 0;
}

/*!
 * \internal \brief ElevenLabsConversationalAI() and AIConversation(), one function: the
 * channel's PBX thread.
 */
static int convai_exec(struct ast_channel *chan, const char *data)
{
	struct convai_call call = { .chan = chan, .wake_fd = -1, .hook_id = -1, .started = ast_tvnow() };
	struct ast_flags flags = { 0 };
	char *parse;
	AST_DECLARE_APP_ARGS(args,
		AST_APP_ARG(agent);
		AST_APP_ARG(options);
	);

	/* Which of our two names the dialplan used: pbx_exec() set it, under this lock, before calling us. */
	ast_channel_lock(chan);
	ast_copy_string(call.app, S_OR(ast_channel_appl(chan), app), sizeof(call.app));
	ast_channel_unlock(chan);

	parse = ast_strdupa(S_OR(data, ""));
	AST_STANDARD_APP_ARGS(args, parse);
	if (ast_strlen_zero(args.agent)) {
		ast_log(LOG_WARNING, "%s: %s requires an agent name, e.g. %s(sales_agent)\n",
			ast_channel_name(chan), call.app, call.app);
		convai_call_end(&call, CONVAI_STATUS_CONFIG_ERROR, "no agent name given");
	} else if (convai_parse_options(args.options, &flags)) {
		ast_log(LOG_WARNING, "%s: %s: invalid options '%s' (known: h)\n", ast_channel_name(chan), call.app,
			args.options);
		convai_call_end(&call, CONVAI_STATUS_CONFIG_ERROR, "invalid options");
	} else if (!(call.agent = convai_agent_get(args.agent))) {
		ast_log(LOG_WARNING, "%s: %s: no agent '%s' in elevenlabs.conf\n", ast_channel_name(chan), call.app,
			args.agent);
		convai_call_end(&call, CONVAI_STATUS_CONFIG_ERROR, "unknown agent");
	} else if (!convai_call_start(&call)) {
		ast_verb(3, "%s: talking to agent '%s' (provider %s)\n", ast_channel_name(chan), call.agent->name,
			convai_provider_name(call.agent->provider));
		convai_call_run(&call);
	}
	return convai_call_finish(&call, args.agent, ast_test_flag(&flags, OPT_HANGUP_ON_END));
}

/*!
 * \internal \brief "module reload" and "elevenlabs reload" (which goes through the
 * loader too): the loader's reload lock is held, so reloads never overlap.
 */
static int reload_module(void)
{
	int res = convai_config_reload();

	convai_embed_set_debug(convai_debug_everywhere());
	/* A runtime that failed at load (say, a missing venv) gets another chance. */
	if (!convai_embed_running()) {
		convai_start_runtime();
	}
	convai_prometheus_attach();
	return res ? AST_MODULE_LOAD_DECLINE : AST_MODULE_LOAD_SUCCESS;
}

/*! \internal \brief Keep our code mapped even if the loader is forced to dlclose us. */
static void convai_pin_code(void)
{
	Dl_info info;

	if (dladdr((void *) convai_pin_code, &info) && info.dli_fname
		&& !dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
		ast_log(LOG_WARNING, "Cannot pin %s: %s\n", info.dli_fname, dlerror());
	}
}

/*!
 * \internal \brief Asterisk is exiting: close every conversation (1000) and stop
 * pyconvai's threads while the process, OpenSSL included, is still whole.
 * "core stop now" never unloads modules, and a forced unload leaves no
 * unload_module() to come; Asterisk runs this in every case, on its quit thread.
 */
static void convai_atexit(void)
{
	convai_embed_stop(CONVAI_SHUTDOWN_TIMEOUT_MS);
}

static int unload_module(void)
{
	/*
	 * CPython cannot be re-initialised in one process, and its threads run
	 * our code: refuse to unload except when Asterisk itself is exiting.
	 */
	if (!ast_shutting_down()) {
		ast_log(LOG_WARNING, "app_elevenlabs_convai cannot be unloaded: it embeds a Python interpreter, "
			"which cannot be restarted in a running Asterisk. Use 'elevenlabs reload' or "
			"'module reload app_elevenlabs_convai' to apply configuration changes, "
			"or restart Asterisk to upgrade the module.\n");
		return -1;
	}
	convai_cli_unregister();
	convai_manager_unregister();
	ast_unregister_application(app_neutral);
	ast_unregister_application(app);
	ast_unregister_atexit(convai_atexit);
	convai_embed_stop(CONVAI_SHUTDOWN_TIMEOUT_MS);
	convai_config_release();
	return 0;
}

static int load_module(void)
{
	if (convai_config_init()) {
		convai_config_release();
		return AST_MODULE_LOAD_DECLINE;
	}
	convai_pin_code();
	convai_start_runtime();
	/*
	 * Registered with no module (NULL), like CLI commands in convai_cli.c: tied to
	 * the module, "module unload -f" would hang up every live call before our
	 * refusal, and "-h" would free the module under a registered application. The
	 * code stays mapped for the life of the process (convai_pin_code()). Both names
	 * run convai_exec(); the second one's failure takes the first back.
	 */
	if (ast_register_application2(app, convai_exec, NULL, NULL, NULL)) {
		goto decline;
	}
	if (ast_register_application2(app_neutral, convai_exec, NULL, NULL, NULL)) {
		/* Asterisk logged why (most likely another module's application of that name). */
		ast_unregister_application(app);
		goto decline;
	}
	convai_cli_register();
	convai_manager_register();
	convai_prometheus_attach();
	ast_register_atexit(convai_atexit);
	return AST_MODULE_LOAD_SUCCESS;

decline:
	/* A declined module leaves no pyconvai threads behind (no atexit would stop them). */
	convai_embed_stop(CONVAI_SHUTDOWN_TIMEOUT_MS);
	convai_config_release();
	return AST_MODULE_LOAD_DECLINE;
}

AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER, "ElevenLabs Conversational AI",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = load_module,
	.unload = unload_module,
	.reload = reload_module,
	.load_pri = AST_MODPRI_DEFAULT,
	.optional_modules = "res_prometheus",
);
