/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief ElevenLabsConversationalAI(): connect a caller to an ElevenLabs
 * Conversational AI agent through an embedded Python runtime.
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
#include <time.h>
#include <unistd.h>

#include "asterisk/app.h"
#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/cli.h"
#include "asterisk/config_options.h"
#include "asterisk/format_cache.h"
#include "asterisk/framehook.h"
#include "asterisk/logger.h"
#include "asterisk/manager.h"
#include "asterisk/module.h"
#include "asterisk/pbx.h"
#include "asterisk/strings.h"
#include "asterisk/stringfields.h"
#include "asterisk/timing.h"
#include "asterisk/translate.h"
#include "asterisk/utils.h"

#include "embed.h"
#include "ring.h"

#ifndef CONVAI_LIBPYTHON
#error "CONVAI_LIBPYTHON (the libpython soname) must be defined by the build"
#endif

#define CONVAI_DEFAULT_VENV "/opt/app_elevenlabs_convai/venv"
#define CONVAI_DEFAULT_ENDPOINT "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url"
/*! Agent audio is written in 20 ms frames, 50 per second. */
#define CONVAI_FRAME_MS 20
/*! Largest 20 ms frame: 48 kHz, 16-bit. */
#define CONVAI_MAX_FRAME_BYTES 1920
/*! Frames written at most per timer tick when catching up after a late tick. */
#define CONVAI_MAX_CATCHUP_FRAMES 3
/*! Two seconds of the largest format, caller -> Python. */
#define CONVAI_UPLINK_BYTES (64 * 1024 * 4)
/*! Downlink holds only a few frames; Python keeps it topped up. */
#define CONVAI_DOWNLINK_BYTES (64 * 1024)
#define CONVAI_CONTROL_BYTES (64 * 1024)
/*! Clock records of about 20 s of frames; Python drains them every 20 ms. */
#define CONVAI_CLOCK_BYTES (64 * 1024)
#define CONVAI_CONTROL_MAX_PAYLOAD 8192
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
				</variable>
				<variable name="ELEVENLABS_CONVERSATION_ID">
					<para>The ElevenLabs conversation id, when one was assigned.</para>
				</variable>
				<variable name="ELEVENLABS_END_REASON">
					<para>The close code and reason, or the error that ended the conversation.</para>
				</variable>
			</variablelist>
		</description>
		<see-also>
			<ref type="filename">elevenlabs.conf</ref>
		</see-also>
	</application>
	<configInfo name="app_elevenlabs_convai" language="en_US">
		<synopsis>ElevenLabs Conversational AI agents</synopsis>
		<configFile name="elevenlabs.conf">
			<configObject name="general">
				<synopsis>Options that apply to every agent.</synopsis>
				<configOption name="python_venv" default="/opt/app_elevenlabs_convai/venv">
					<synopsis>Virtual environment holding pyconvai (read at load; a change needs a restart).</synopsis>
				</configOption>
				<configOption name="debug" default="no">
					<synopsis>Log conversation details (VAD scores, interruptions, WebSocket lifecycle) at debug level for every agent.</synopsis>
				</configOption>
			</configObject>
			<configObject name="agent">
				<synopsis>An ElevenLabs agent; the section name is what the dialplan passes.</synopsis>
				<configOption name="elevenlabs_agent_id">
					<synopsis>The ElevenLabs agent id (required).</synopsis>
				</configOption>
				<configOption name="elevenlabs_api_key">
					<synopsis>API key used to fetch a signed URL. Without one, the agent must be public.</synopsis>
				</configOption>
				<configOption name="elevenlabs_get_signed_url_endpoint" default="https://api.elevenlabs.io/v1/convai/conversation/get-signed-url">
					<synopsis>Signed-URL endpoint; its host also gives the public WebSocket URL.</synopsis>
				</configOption>
				<configOption name="elevenlabs_send_caller_number" default="no">
					<synopsis>Send the caller's number as the conversation's user id.</synopsis>
				</configOption>
				<configOption name="elevenlabs_audio_frames_buffer_ms" default="240">
					<synopsis>Caller audio is sent in chunks of this many milliseconds (20 to 1000).</synopsis>
				</configOption>
				<configOption name="max_connection_attempts" default="3">
					<synopsis>Attempts to fetch the signed URL and connect (1 to 10).</synopsis>
				</configOption>
				<configOption name="connection_timeout_seconds" default="10">
					<synopsis>Time limit of each attempt, in seconds (1 to 60).</synopsis>
				</configOption>
				<configOption name="debug" default="no">
					<synopsis>Debug logging for this agent's calls.</synopsis>
				</configOption>
			</configObject>
		</configFile>
	</configInfo>
 ***/

static const char app[] = "ElevenLabsConversationalAI";

enum convai_exec_flags {
	OPT_HANGUP_ON_END = (1 << 0),
};

AST_APP_OPTIONS(convai_exec_options, {
	AST_APP_OPTION('h', OPT_HANGUP_ON_END),
});

/*! \brief [general] of elevenlabs.conf. */
struct convai_general {
	AST_DECLARE_STRING_FIELDS(
		AST_STRING_FIELD(python_venv);
	);
	int debug;
};

/*! \brief One agent section of elevenlabs.conf; immutable once applied. */
struct convai_agent {
	AST_DECLARE_STRING_FIELDS(
		AST_STRING_FIELD(name);
		AST_STRING_FIELD(agent_id);
		AST_STRING_FIELD(api_key);
		AST_STRING_FIELD(signed_url_endpoint);
	);
	int send_caller_number;
	unsigned int buffer_ms;
	unsigned int max_connection_attempts;
	unsigned int connection_timeout_seconds;
	int debug;
};

/*! \brief A whole elevenlabs.conf; a call keeps the snapshot it started with. */
struct convai_config {
	struct convai_general *general;
	struct ao2_container *agents;
};

static AO2_GLOBAL_OBJ_STATIC(convai_globals);

/*! "elevenlabs debug on|off" for every call; set from any CLI thread. */
static int convai_debug_all;

/*! \brief Numeric options whose ranges are checked with a message naming the section. */
struct convai_range {
	const char *name;
	unsigned int min;
	unsigned int max;
	size_t offset;
};

static const struct convai_range convai_agent_ranges[] = {
	{ "elevenlabs_audio_frames_buffer_ms", 20, 1000, offsetof(struct convai_agent, buffer_ms) },
	{ "max_connection_attempts", 1, 10, offsetof(struct convai_agent, max_connection_attempts) },
	{ "connection_timeout_seconds", 1, 60, offsetof(struct convai_agent, connection_timeout_seconds) },
};

/*! \brief State of the capture framehook; an ao2 object owned by the hook. */
struct convai_capture {
	/*! Caller audio goes here; a ring reference held by the hook. */
	struct convai_ring *uplink;
	/*! The agent's input format; NULL until the metadata arrives. */
	struct ast_format *format;
	/*! Native format the translation path starts from. */
	struct ast_format *source;
	struct ast_trans_pvt *path;
	/*! Bytes per sample of format, so overflow drops whole samples. */
	unsigned int sample_bytes;
};

/*! \brief One conversation, on the stack of the channel thread that runs it. */
struct convai_call {
	struct ast_channel *chan;
	struct convai_agent *agent;
	struct convai_ring *uplink;
	struct convai_ring *downlink;
	struct convai_ring *control;
	struct convai_ring *clock;
	struct convai_capture *capture;
	struct ast_timer *timer;
	/*! Python's call object (embed.c handle). */
	void *session;
	int wake_fd;
	int hook_id;
	/*! The write format before the call, restored on exit. */
	struct ast_format *saved_write_format;
	/*! The agent's output format; NULL until the metadata arrives. */
	struct ast_format *out_format;
	unsigned int frame_bytes;
	unsigned int frame_samples;
	/*! Pacing: frames written since play_epoch (absolute deadlines, no drift). */
	struct timeval play_epoch;
	unsigned int frames_since_epoch;
	int playing;
	int ended;
	struct timeval started;
	char status[32];
	char conversation_id[128];
	char reason[512];
};

static void *convai_config_alloc(void);
static int convai_config_validate(void);
static void *convai_agent_alloc(const char *name);
static void *convai_agent_find(struct ao2_container *agents, const char *name);

static struct aco_type convai_general_type = {
	.type = ACO_GLOBAL,
	.name = "general",
	.item_offset = offsetof(struct convai_config, general),
	.category_match = ACO_WHITELIST_EXACT,
	.category = "general",
};

static struct aco_type convai_agent_type = {
	.type = ACO_ITEM,
	.name = "agent",
	.category_match = ACO_BLACKLIST_EXACT,
	.category = "general",
	.item_alloc = convai_agent_alloc,
	.item_find = convai_agent_find,
	.item_offset = offsetof(struct convai_config, agents),
};

static struct aco_type *convai_general_types[] = ACO_TYPES(&convai_general_type);
static struct aco_type *convai_agent_types[] = ACO_TYPES(&convai_agent_type);

static struct aco_file convai_conf = {
	.filename = "elevenlabs.conf",
	.types = ACO_TYPES(&convai_general_type, &convai_agent_type),
};

CONFIG_INFO_STANDARD(convai_cfg_info, convai_globals, convai_config_alloc,
	.files = ACO_FILES(&convai_conf),
	.pre_apply_config = convai_config_validate,
);

/* Configuration */

static void convai_general_destroy(void *obj)
{
	struct convai_general *general = obj;

	ast_string_field_free_memory(general);
}

static void convai_agent_destroy(void *obj)
{
	struct convai_agent *agent = obj;

	ast_string_field_free_memory(agent);
}

static void convai_config_destroy(void *obj)
{
	struct convai_config *cfg = obj;

	ao2_cleanup(cfg->general);
	ao2_cleanup(cfg->agents);
}

static void *convai_config_alloc(void)
{
	struct convai_config *cfg = ao2_alloc(sizeof(*cfg), convai_config_destroy);

	if (!cfg) {
		return NULL;
	}
	cfg->general = ao2_alloc(sizeof(*cfg->general), convai_general_destroy);
	if (!cfg->general || ast_string_field_init(cfg->general, 128)) {
		goto failure;
	}
	cfg->agents = ao2_container_alloc_hash(AO2_ALLOC_OPT_LOCK_MUTEX, 0, 17,
		NULL, NULL, NULL);
	if (!cfg->agents) {
		goto failure;
	}
	return cfg;

failure:
	ao2_ref(cfg, -1);
	return NULL;
}

static void *convai_agent_alloc(const char *name)
{
	struct convai_agent *agent = ao2_alloc(sizeof(*agent), convai_agent_destroy);

	if (!agent) {
		return NULL;
	}
	if (ast_string_field_init(agent, 256)) {
		ao2_ref(agent, -1);
		return NULL;
	}
	ast_string_field_set(agent, name, name);
	return agent;
}

static int convai_agent_match(void *obj, void *arg, int flags)
{
	struct convai_agent *agent = obj;

	return !strcasecmp(agent->name, arg) ? CMP_MATCH | CMP_STOP : 0;
}

static void *convai_agent_find(struct ao2_container *agents, const char *name)
{
	return ao2_callback(agents, 0, convai_agent_match, (void *) name);
}

/*! \internal \brief ACO handler for ranged numbers: names the section on error. */
static int convai_range_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	unsigned int value;
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_agent_ranges); i++) {
		const struct convai_range *range = &convai_agent_ranges[i];

		if (strcasecmp(var->name, range->name)) {
			continue;
		}
		if (ast_parse_arg(var->value, PARSE_UINT32 | PARSE_IN_RANGE, &value, range->min, range->max)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] %s = '%s' is not a number from %u to %u (line %d)\n",
				agent->name, var->name, var->value, range->min, range->max, var->lineno);
			return -1;
		}
		*(unsigned int *) ((char *) agent + range->offset) = value;
		return 0;
	}
	return -1;
}

/*! \internal \brief Checks ACO cannot express; runs before a new config is applied. */
static int convai_config_validate(void)
{
	struct convai_config *cfg = aco_pending_config(&convai_cfg_info);
	struct ao2_iterator it;
	struct convai_agent *agent;
	int res = 0;

	if (!cfg || !ao2_container_count(cfg->agents)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: no agent sections; add one such as [sales_agent] with elevenlabs_agent_id\n");
		return -1;
	}
	it = ao2_iterator_init(cfg->agents, 0);
	for (; (agent = ao2_iterator_next(&it)); ao2_ref(agent, -1)) {
		if (ast_strlen_zero(agent->agent_id)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] is missing the required key elevenlabs_agent_id\n",
				agent->name);
			res = -1;
		}
		if (strncasecmp(agent->signed_url_endpoint, "https://", 8)
			&& strncasecmp(agent->signed_url_endpoint, "http://", 7)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] elevenlabs_get_signed_url_endpoint must be an http(s) URL\n",
				agent->name);
			res = -1;
		}
	}
	ao2_iterator_destroy(&it);
	return res;
}

static int convai_register_options(void)
{
	size_t i;

	if (aco_info_init(&convai_cfg_info)) {
		return -1;
	}
	aco_option_register(&convai_cfg_info, "python_venv", ACO_EXACT, convai_general_types,
		CONVAI_DEFAULT_VENV, OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_general, python_venv));
	aco_option_register(&convai_cfg_info, "debug", ACO_EXACT, convai_general_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_general, debug));

	aco_option_register(&convai_cfg_info, "elevenlabs_agent_id", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, agent_id));
	aco_option_register(&convai_cfg_info, "elevenlabs_api_key", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, api_key));
	aco_option_register(&convai_cfg_info, "elevenlabs_get_signed_url_endpoint", ACO_EXACT, convai_agent_types,
		CONVAI_DEFAULT_ENDPOINT, OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, signed_url_endpoint));
	aco_option_register(&convai_cfg_info, "elevenlabs_send_caller_number", ACO_EXACT, convai_agent_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_agent, send_caller_number));
	aco_option_register(&convai_cfg_info, "debug", ACO_EXACT, convai_agent_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_agent, debug));
	for (i = 0; i < ARRAY_LEN(convai_agent_ranges); i++) {
		static const char *const defaults[] = { "240", "3", "10" };

		aco_option_register_custom(&convai_cfg_info, convai_agent_ranges[i].name, ACO_EXACT,
			convai_agent_types, defaults[i], convai_range_handler, 0);
	}
	return 0;
}

/*! \internal \brief Parse elevenlabs.conf; on error the previous config stays. */
static int convai_load_config(int reload)
{
	switch (aco_process_config(&convai_cfg_info, reload)) {
	case ACO_PROCESS_OK:
		ast_verb(3, "elevenlabs.conf loaded\n");
		return 0;
	case ACO_PROCESS_UNCHANGED:
		return 0;
	case ACO_PROCESS_ERROR:
		break;
	}
	if (reload) {
		ast_log(LOG_ERROR, "elevenlabs.conf has errors (see above); keeping the previous configuration\n");
	} else {
		ast_log(LOG_ERROR, "elevenlabs.conf has errors (see above); no agent is available until it is fixed and 'elevenlabs reload' is run\n");
	}
	return -1;
}

static const char *convai_venv_path(void)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);
	static char venv[PATH_MAX];

	ast_copy_string(venv, cfg && !ast_strlen_zero(cfg->general->python_venv)
		? cfg->general->python_venv : CONVAI_DEFAULT_VENV, sizeof(venv));
	return venv;
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
	convai_embed_set_debug(convai_debug_all);
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

/* Capture framehook: runs in ast_read() on the channel thread, channel LOCKED. */

static void convai_capture_destroy(void *obj)
{
	struct convai_capture *capture = obj;

	if (capture->path) {
		ast_translator_free_path(capture->path);
	}
	ao2_cleanup(capture->source);
	ao2_cleanup(capture->format);
	convai_ring_unref(capture->uplink);
}

/*! \internal \brief Copy one voice frame into the uplink, translating native audio if needed. */
static void convai_capture_voice(struct convai_capture *capture, struct ast_frame *frame)
{
	struct ast_frame *translated, *cur;

	if (ast_format_cmp(frame->subclass.format, capture->format) == AST_FORMAT_CMP_EQUAL) {
		convai_ring_push_overwrite(capture->uplink, frame->data.ptr, frame->datalen, capture->sample_bytes);
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
			ast_log(LOG_WARNING, "No translation path from %s to %s; caller audio is not sent\n",
				ast_format_get_name(frame->subclass.format), ast_format_get_name(capture->format));
			return;
		}
	}
	/* The translator owns its output frames; ast_frfree only frees what is malloc'd. */
	translated = ast_translate(capture->path, frame, 0);
	for (cur = translated; cur; cur = AST_LIST_NEXT(cur, frame_list)) {
		convai_ring_push_overwrite(capture->uplink, cur->data.ptr, cur->datalen, capture->sample_bytes);
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
		&& capture->format && frame->datalen) {
		convai_capture_voice(capture, frame);
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

static int convai_capture_attach(struct convai_call *call)
{
	struct ast_framehook_interface hook = {
		.version = AST_FRAMEHOOK_INTERFACE_VERSION,
		.event_cb = convai_capture_framehook,
		.consume_cb = convai_capture_consume,
		.destroy_cb = convai_capture_framehook_destroy,
		.disable_inheritance = 1,
	};

	call->capture = ao2_alloc(sizeof(*call->capture), convai_capture_destroy);
	if (!call->capture) {
		return -1;
	}
	convai_ring_ref(call->uplink);
	call->capture->uplink = call->uplink;
	/* The hook owns one reference, released by its destroy callback. */
	hook.data = ao2_bump(call->capture);
	ast_channel_lock(call->chan);
	call->hook_id = ast_framehook_attach(call->chan, &hook);
	ast_channel_unlock(call->chan);
	if (call->hook_id < 0) {
		ao2_ref(call->capture, -1);
		return -1;
	}
	return 0;
}

static void convai_capture_detach(struct convai_call *call)
{
	if (call->hook_id < 0) {
		return;
	}
	ast_channel_lock(call->chan);
	ast_framehook_detach(call->chan, call->hook_id);
	ast_channel_unlock(call->chan);
	call->hook_id = -1;
}

/* The call loop and its helpers: channel thread, channel NOT locked unless stated. */

static void convai_call_end(struct convai_call *call, const char *status, const char *reason)
{
	if (call->ended) {
		return;
	}
	call->ended = 1;
	ast_copy_string(call->status, status, sizeof(call->status));
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
		convai_call_end(call, "FAILED", reason);
		convai_embed_call_hangup(call->session, reason);
		return;
	}
	if (ast_set_write_format(call->chan, out)) {
		snprintf(reason, sizeof(reason), "cannot write %s to this channel", ast_format_get_name(out));
		ast_log(LOG_ERROR, "%s: %s\n", ast_channel_name(call->chan), reason);
		convai_call_end(call, "FAILED", reason);
		convai_embed_call_hangup(call->session, reason);
		return;
	}
	ao2_replace(call->out_format, out);
	call->frame_samples = ast_format_get_sample_rate(out) * CONVAI_FRAME_MS / 1000;
	call->frame_bytes = out == ast_format_ulaw ? call->frame_samples : call->frame_samples * 2;

	/* The hook reads these under the channel lock. */
	ast_channel_lock(call->chan);
	ao2_replace(call->capture->format, in);
	call->capture->sample_bytes = in == ast_format_ulaw ? 1 : 2;
	ast_channel_unlock(call->chan);
	ast_debug(3, "%s: agent formats %s in, %s out\n", ast_channel_name(call->chan), input, output);
}

/*! \internal \brief Split a NUL-separated payload into at most \a max strings. */
static int convai_split(char *payload, size_t len, const char **parts, int max)
{
	int n = 0;
	size_t i = 0;

	payload[len] = '\0';
	while (n < max && i <= len) {
		parts[n++] = payload + i;
		i += strlen(payload + i) + 1;
	}
	while (n < max) {
		parts[n++] = "";
	}
	return n;
}

static void convai_handle_control(struct convai_call *call)
{
	unsigned char header[CONVAI_CONTROL_HEADER];
	char payload[CONVAI_CONTROL_MAX_PAYLOAD + 1];
	const char *parts[3];
	eventfd_t ignored;

	eventfd_read(call->wake_fd, &ignored);
	while (!convai_ring_pop_exact(call->control, header, sizeof(header))) {
		size_t len = header[2] | (header[3] << 8);

		if (len > CONVAI_CONTROL_MAX_PAYLOAD || convai_ring_pop_exact(call->control, payload, len)) {
			ast_log(LOG_ERROR, "%s: corrupt control record from pyconvai; ending the call\n",
				ast_channel_name(call->chan));
			convai_call_end(call, "FAILED", "internal error: corrupt control record");
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
			convai_call_end(call, parts[0], parts[2]);
			break;
		case CONVAI_CONTROL_SETVAR:
			pbx_builtin_setvar_helper(call->chan, parts[0], parts[1]);
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
	struct convai_clock_record record;
	struct timespec written_at;
	unsigned int due, written = 0;

	if (!call->out_format) {
		return;
	}
	if (!call->playing) {
		call->play_epoch = now;
		call->frames_since_epoch = 0;
	}
	/* Round to the nearest deadline: a tick a few microseconds early is still that tick. */
	due = (ast_tvdiff_us(now, call->play_epoch) + CONVAI_FRAME_MS * 500) / (CONVAI_FRAME_MS * 1000) + 1;
	while (call->frames_since_epoch < due && written < CONVAI_MAX_CATCHUP_FRAMES) {
		if (convai_ring_pop_frame(call->downlink, frame.data.ptr, call->frame_bytes, &record.position)) {
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
		clock_gettime(CLOCK_MONOTONIC, &written_at);
		record.written_ns = (uint64_t) written_at.tv_sec * 1000000000ULL + (uint64_t) written_at.tv_nsec;
		convai_ring_push(call->clock, &record, sizeof(record));
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

/*! \internal \brief Settings handed to Python for this call (key, value pairs). */
static void convai_call_settings(struct convai_call *call, const char **kv, size_t max,
	char *numbers, size_t numbers_len)
{
	struct convai_agent *agent = call->agent;
	struct ast_channel *chan = call->chan;
	const char *caller_number, *caller_name;
	size_t n = 0;
	int debug = convai_debug_all || agent->debug;
	char *buffer_ms = numbers, *attempts = numbers + 16, *timeout = numbers + 32;

	ast_assert(numbers_len >= 48);
	snprintf(buffer_ms, 16, "%u", agent->buffer_ms);
	snprintf(attempts, 16, "%u", agent->max_connection_attempts);
	snprintf(timeout, 16, "%u", agent->connection_timeout_seconds);

	ast_channel_lock(chan);
	caller_number = ast_strdupa(S_COR(ast_channel_caller(chan)->id.number.valid,
		ast_channel_caller(chan)->id.number.str, ""));
	caller_name = ast_strdupa(S_COR(ast_channel_caller(chan)->id.name.valid,
		ast_channel_caller(chan)->id.name.str, ""));
	ast_channel_unlock(chan);

#define CONVAI_KV(key, value) do { if (n + 2 < max) { kv[n++] = (key); kv[n++] = (value); } } while (0)
	CONVAI_KV("channel", ast_channel_name(chan));
	CONVAI_KV("uniqueid", ast_channel_uniqueid(chan));
	CONVAI_KV("agent", agent->name);
	CONVAI_KV("agent_id", agent->agent_id);
	CONVAI_KV("api_key", agent->api_key);
	CONVAI_KV("signed_url_endpoint", agent->signed_url_endpoint);
	CONVAI_KV("buffer_ms", buffer_ms);
	CONVAI_KV("max_connection_attempts", attempts);
	CONVAI_KV("connection_timeout_seconds", timeout);
	CONVAI_KV("send_caller_number", agent->send_caller_number ? "1" : "0");
	CONVAI_KV("debug", debug ? "1" : "0");
	CONVAI_KV("caller_number", caller_number);
	CONVAI_KV("caller_name", caller_name);
	CONVAI_KV("called_number", ast_channel_exten(chan));
#undef CONVAI_KV
	kv[n] = NULL;
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
}

/*! \internal \brief Wait on the channel, the timer and Python until the call ends. */
static void convai_call_run(struct convai_call *call)
{
	struct timeval started = ast_tvnow();
	int fds[2] = { ast_timer_fd(call->timer), call->wake_fd };

	while (!call->ended) {
		struct ast_channel *ready;
		struct ast_frame *frame;
		int ms = 1000, outfd = -1;

		ready = ast_waitfor_nandfds(&call->chan, 1, fds, ARRAY_LEN(fds), NULL, &outfd, &ms);
		if (ready) {
			/* Reading drives the capture framehook; the frame itself is not needed. */
			frame = ast_read(call->chan);
			if (!frame) {
				convai_call_end(call, "CALLER_HANGUP", "caller hung up");
				break;
			}
			ast_frfree(frame);
		} else if (outfd == fds[0]) {
			ast_timer_ack(call->timer, 1);
			convai_play_due_frames(call);
		} else if (outfd == fds[1]) {
			convai_handle_control(call);
		} else if (ms < 0) {
			convai_call_end(call, "CALLER_HANGUP", "channel wait failed");
			break;
		}
		if (!call->out_format && !call->ended
			&& ast_tvdiff_ms(ast_tvnow(), started) > 1000 * (CONVAI_STARTUP_GRACE_SECONDS
				+ call->agent->max_connection_attempts * (call->agent->connection_timeout_seconds * 2 + 2))) {
			convai_call_end(call, "FAILED", "no response from the Python runtime");
			convai_embed_call_hangup(call->session, "startup timeout");
		}
	}
	if (!strcmp(call->status, "CALLER_HANGUP")) {
		convai_embed_call_hangup(call->session, "caller hung up");
	}
}

static void convai_set_result(struct ast_channel *chan, const char *status, const char *conversation_id,
	const char *reason)
{
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_STATUS", status);
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_CONVERSATION_ID", conversation_id);
	pbx_builtin_setvar_helper(chan, "ELEVENLABS_END_REASON", reason);
}

static struct convai_agent *convai_find_agent(const char *name)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);

	return cfg ? convai_agent_find(cfg->agents, name) : NULL;
}

static int convai_exec(struct ast_channel *chan, const char *data)
{
	struct convai_call call = { .chan = chan, .wake_fd = -1, .hook_id = -1, .started = ast_tvnow() };
	struct convai_call_params params = { 0 };
	struct ast_flags flags = { 0 };
	const char *kv[64];
	char numbers[48];
	char *parse;
	int res = 0;
	AST_DECLARE_APP_ARGS(args,
		AST_APP_ARG(agent);
		AST_APP_ARG(options);
	);

	parse = ast_strdupa(S_OR(data, ""));
	AST_STANDARD_APP_ARGS(args, parse);
	if (ast_strlen_zero(args.agent)) {
		ast_log(LOG_WARNING, "%s: %s requires an agent name, e.g. %s(sales_agent)\n",
			ast_channel_name(chan), app, app);
		convai_set_result(chan, "CONFIG_ERROR", "", "no agent name given");
		return 0;
	}
	if (!ast_strlen_zero(args.options)
		&& ast_app_parse_options(convai_exec_options, &flags, NULL, args.options)) {
		ast_log(LOG_WARNING, "%s: %s: invalid options '%s'\n", ast_channel_name(chan), app, args.options);
		convai_set_result(chan, "CONFIG_ERROR", "", "invalid options");
		return 0;
	}
	call.agent = convai_find_agent(args.agent);
	if (!call.agent) {
		ast_log(LOG_WARNING, "%s: %s: no agent '%s' in elevenlabs.conf\n",
			ast_channel_name(chan), app, args.agent);
		convai_set_result(chan, "CONFIG_ERROR", "", "unknown agent");
		return 0;
	}
	if (ast_channel_state(chan) != AST_STATE_UP && ast_answer(chan)) {
		convai_call_end(&call, "CALLER_HANGUP", "answer failed");
		goto end;
	}
	if (convai_call_open(&call)) {
		convai_call_end(&call, "FAILED", "cannot allocate call resources");
		goto end;
	}
	call.saved_write_format = ao2_bump(ast_channel_writeformat(chan));

	convai_call_settings(&call, kv, ARRAY_LEN(kv), numbers, sizeof(numbers));
	params.settings = kv;
	params.uplink = call.uplink;
	params.downlink = call.downlink;
	params.control = call.control;
	params.clock = call.clock;
	params.wake_fd = call.wake_fd;
	call.session = convai_embed_call_start(&params);
	if (!call.session) {
		convai_call_end(&call, "FAILED", "the Python runtime is not available");
		goto end;
	}
	if (convai_capture_attach(&call)) {
		ast_log(LOG_ERROR, "%s: cannot attach the capture framehook\n", ast_channel_name(chan));
		convai_call_end(&call, "FAILED", "cannot attach the capture framehook");
		convai_embed_call_hangup(call.session, "framehook failed");
		goto end;
	}
	ast_verb(3, "%s: talking to ElevenLabs agent '%s'\n", ast_channel_name(chan), call.agent->name);
	convai_call_run(&call);

end:
	convai_capture_detach(&call);
	if (call.saved_write_format) {
		ast_set_write_format(chan, call.saved_write_format);
	}
	convai_set_result(chan, call.status, call.conversation_id, call.reason);
	ast_verb(3, "%s: ElevenLabs conversation ended: %s (%s)\n", ast_channel_name(chan), call.status,
		call.reason);
	manager_event(EVENT_FLAG_CALL, "ElevenLabsConversationEnded",
		"Channel: %s\r\nUniqueid: %s\r\nAgent: %s\r\nConversationID: %s\r\nStatus: %s\r\n"
		"Reason: %s\r\nDuration: %.3f\r\n",
		ast_channel_name(chan), ast_channel_uniqueid(chan), call.agent->name, call.conversation_id,
		call.status, call.reason, ast_tvdiff_ms(ast_tvnow(), call.started) / 1000.0);
	if (!strcmp(call.status, "CALLER_HANGUP")
		|| (!strcmp(call.status, "AGENT_ENDED") && ast_test_flag(&flags, OPT_HANGUP_ON_END))) {
		res = -1;
	}
	convai_call_close(&call);
	ao2_cleanup(call.agent);
	return res;
}

/* CLI: any CLI thread; never with a channel locked. */

/*! \internal \brief Show an API key as "sk-…abcd": enough to tell keys apart, never the key. */
static const char *convai_redact(const char *key, char *buf, size_t len)
{
	size_t n = strlen(key);

	if (!n) {
		return "(none)";
	}
	if (n < 12) {
		return "****";
	}
	snprintf(buf, len, "%.3s\xe2\x80\xa6%s", key, key + n - 4);
	return buf;
}

static char *convai_cli_show_agents(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	RAII_VAR(struct convai_config *, cfg, NULL, ao2_cleanup);
	struct ao2_iterator it;
	struct convai_agent *agent;
	char key[32];

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show agents";
		e->usage = "Usage: elevenlabs show agents\n"
			"       List the agents of elevenlabs.conf (API keys redacted).\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	cfg = ao2_global_obj_ref(convai_globals);
	if (!cfg) {
		ast_cli(a->fd, "No configuration loaded (see the log for elevenlabs.conf errors).\n");
		return CLI_SUCCESS;
	}
	ast_cli(a->fd, "%-20s %-32s %-12s %-9s %-8s %-7s %-5s\n",
		"Agent", "Agent ID", "API key", "Buffer", "Attempts", "Timeout", "Debug");
	it = ao2_iterator_init(cfg->agents, 0);
	for (; (agent = ao2_iterator_next(&it)); ao2_ref(agent, -1)) {
		ast_cli(a->fd, "%-20s %-32s %-12s %6u ms %-8u %5u s %-5s\n",
			agent->name, agent->agent_id, convai_redact(agent->api_key, key, sizeof(key)),
			agent->buffer_ms, agent->max_connection_attempts, agent->connection_timeout_seconds,
			AST_CLI_YESNO(agent->debug || convai_debug_all));
	}
	ao2_iterator_destroy(&it);
	ast_cli(a->fd, "%d agent(s)\n", ao2_container_count(cfg->agents));
	return CLI_SUCCESS;
}

static char *convai_cli_show_runtime(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	char *text;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show runtime";
		e->usage = "Usage: elevenlabs show runtime\n"
			"       Show the embedded Python runtime: version, prefix, virtual\n"
			"       environment and the packages pyconvai needs.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	ast_cli(a->fd, "Configured venv: %s\n", convai_venv_path());
	ast_cli(a->fd, "libpython:       %s\n", CONVAI_LIBPYTHON);
	if (!convai_embed_running()) {
		ast_cli(a->fd, "Runtime:         not running (see the log)\n");
		return CLI_SUCCESS;
	}
	text = convai_embed_describe();
	ast_cli(a->fd, "Runtime:         running\n%s", S_OR(text, "(no description)\n"));
	ast_std_free(text);
	return CLI_SUCCESS;
}

static char *convai_cli_show_calls(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	char *text;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show calls";
		e->usage = "Usage: elevenlabs show calls\n"
			"       List live conversations: channel, agent, conversation id, duration,\n"
			"       caller frames in, agent frames out, underruns, interruptions and the\n"
			"       last downlink latency (agent audio received -> first frame written).\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	if (!convai_embed_running()) {
		ast_cli(a->fd, "The Python runtime is not running.\n");
		return CLI_SUCCESS;
	}
	text = convai_embed_describe_calls();
	ast_cli(a->fd, "%s", S_OR(text, "(no answer from the runtime)\n"));
	ast_std_free(text);
	return CLI_SUCCESS;
}

static char *convai_cli_debug(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	static const char *const choices[] = { "on", "off", NULL };

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs debug";
		e->usage = "Usage: elevenlabs debug {on|off}\n"
			"       Log conversation details (VAD scores, interruptions, WebSocket\n"
			"       lifecycle) at debug level for every call.\n";
		return NULL;
	case CLI_GENERATE:
		return a->pos == 2 ? ast_cli_complete(a->word, choices, a->n) : NULL;
	}
	if (a->argc != 3) {
		return CLI_SHOWUSAGE;
	}
	if (ast_true(a->argv[2])) {
		convai_debug_all = 1;
	} else if (ast_false(a->argv[2])) {
		convai_debug_all = 0;
	} else {
		return CLI_SHOWUSAGE;
	}
	convai_embed_set_debug(convai_debug_all);
	ast_cli(a->fd, "ElevenLabs debug logging %s\n", convai_debug_all ? "enabled" : "disabled");
	return CLI_SUCCESS;
}

static int convai_reload(void)
{
	int res = convai_load_config(1);

	/* A runtime that failed at load (say, a missing venv) gets another chance. */
	if (!convai_embed_running()) {
		convai_start_runtime();
	}
	return res;
}

static char *convai_cli_reload(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs reload";
		e->usage = "Usage: elevenlabs reload\n"
			"       Reload elevenlabs.conf. Calls in progress keep their settings;\n"
			"       a file with errors leaves the current configuration in place.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	ast_cli(a->fd, convai_reload() ? "elevenlabs.conf has errors; kept the previous configuration\n"
		: "elevenlabs.conf reloaded\n");
	return CLI_SUCCESS;
}

static struct ast_cli_entry convai_cli[] = {
	AST_CLI_DEFINE(convai_cli_show_agents, "List ElevenLabs agents"),
	AST_CLI_DEFINE(convai_cli_show_runtime, "Show the embedded Python runtime"),
	AST_CLI_DEFINE(convai_cli_show_calls, "List live ElevenLabs conversations"),
	AST_CLI_DEFINE(convai_cli_debug, "Enable or disable ElevenLabs debug logging"),
	AST_CLI_DEFINE(convai_cli_reload, "Reload elevenlabs.conf"),
};

/*! \internal \brief Keep our code mapped even if the loader is forced to dlclose us. */
static void convai_pin_code(void)
{
	Dl_info info;

	if (dladdr((void *) convai_pin_code, &info) && info.dli_fname
		&& !dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
		ast_log(LOG_WARNING, "Cannot pin %s: %s\n", info.dli_fname, dlerror());
	}
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
	ast_cli_unregister_multiple(convai_cli, ARRAY_LEN(convai_cli));
	ast_unregister_application(app);
	convai_embed_stop(CONVAI_SHUTDOWN_TIMEOUT_MS);
	aco_info_destroy(&convai_cfg_info);
	ao2_global_obj_release(convai_globals);
	return 0;
}

static int load_module(void)
{
	if (convai_register_options()) {
		ast_log(LOG_ERROR, "Cannot register elevenlabs.conf options (is the module's XML documentation installed?)\n");
		aco_info_destroy(&convai_cfg_info);
		return AST_MODULE_LOAD_DECLINE;
	}
	/* A broken file must not stop Asterisk: load with no agents and say so. */
	convai_load_config(0);
	{
		RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);

		convai_debug_all = cfg && cfg->general->debug;
	}
	convai_pin_code();
	convai_start_runtime();
	if (ast_register_application_xml(app, convai_exec)) {
		aco_info_destroy(&convai_cfg_info);
		ao2_global_obj_release(convai_globals);
		return AST_MODULE_LOAD_DECLINE;
	}
	ast_cli_register_multiple(convai_cli, ARRAY_LEN(convai_cli));
	return AST_MODULE_LOAD_SUCCESS;
}

static int reload_module(void)
{
	return convai_reload() ? AST_MODULE_LOAD_DECLINE : AST_MODULE_LOAD_SUCCESS;
}

AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER, "ElevenLabs Conversational AI",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = load_module,
	.unload = unload_module,
	.reload = reload_module,
	.load_pri = AST_MODPRI_DEFAULT,
);
