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

#include <ctype.h>
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
#include "asterisk/res_prometheus.h"
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
/*! Python keeps 500 ms queued here: 48000 bytes at 48 kHz, the largest format. */
#define CONVAI_DOWNLINK_BYTES (64 * 1024)
#define CONVAI_CONTROL_BYTES (64 * 1024)
/*! Clock records of about 20 s of frames; Python drains them on every uplink chunk, at least every 100 ms. */
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
					<value name="BUSY">The agent (or the whole module) is at its max_concurrent_calls; the call was not answered.</value>
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
				<configOption name="max_concurrent_calls" default="0">
					<synopsis>Most conversations at once over all agents (0: no limit); a call over the limit gets ELEVENLABS_STATUS=BUSY.</synopsis>
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
				<configOption name="elevenlabs_api_key_file">
					<synopsis>Read the API key from this file instead (keep it readable by Asterisk only).</synopsis>
				</configOption>
				<configOption name="elevenlabs_api_key_env">
					<synopsis>Read the API key from this environment variable of the Asterisk process instead.</synopsis>
				</configOption>
				<configOption name="dynamic_variable">
					<synopsis>A dynamic variable for the agent, as name=value; the value may use dialplan variables and functions, evaluated for each call. Repeat for more.</synopsis>
					<description><para>Example: <literal>dynamic_variable = customer_tier=${CUSTOMER_TIER}</literal>.
					Every call also sends <literal>caller_number</literal>, <literal>caller_name</literal>,
					<literal>called_number</literal> and <literal>call_uniqueid</literal>, and the channel
					variables named <literal>ELEVENLABS_VAR_name</literal>.</para></description>
				</configOption>
				<configOption name="allow_overrides">
					<synopsis>Overrides this agent may send: a list of first_message, prompt, language, voice_id (enable the same ones in the agent's security settings at ElevenLabs).</synopsis>
				</configOption>
				<configOption name="override_first_message">
					<synopsis>First message sent as an override (when allowed); ELEVENLABS_FIRST_MESSAGE replaces it for one call.</synopsis>
				</configOption>
				<configOption name="override_prompt">
					<synopsis>System prompt sent as an override (when allowed); ELEVENLABS_PROMPT replaces it for one call.</synopsis>
				</configOption>
				<configOption name="override_language">
					<synopsis>Language sent as an override (when allowed); ELEVENLABS_LANGUAGE replaces it for one call.</synopsis>
				</configOption>
				<configOption name="override_voice_id">
					<synopsis>Voice id sent as an override (when allowed); ELEVENLABS_VOICE_ID replaces it for one call.</synopsis>
				</configOption>
				<configOption name="max_call_duration_seconds" default="0">
					<synopsis>After this many seconds the agent is asked to say goodbye, then the call ends (0: no limit).</synopsis>
				</configOption>
				<configOption name="max_call_duration_message">
					<synopsis>What the agent is told when the duration limit is reached (sent as a user message).</synopsis>
				</configOption>
				<configOption name="max_concurrent_calls" default="0">
					<synopsis>Most conversations at once with this agent (0: no limit); a call over the limit gets ELEVENLABS_STATUS=BUSY.</synopsis>
				</configOption>
			</configObject>
		</configFile>
	</configInfo>
 ***/

static const char app[] = "ElevenLabsConversationalAI";

enum convai_exec_flags {
	OPT_HANGUP_ON_END = (1 << 0),
};

#define CONVAI_OPTION_LETTERS "h"

AST_APP_OPTIONS(convai_exec_options, {
	AST_APP_OPTION('h', OPT_HANGUP_ON_END),
});

/*! \brief [general] of elevenlabs.conf. */
struct convai_general {
	AST_DECLARE_STRING_FIELDS(
		AST_STRING_FIELD(python_venv);
	);
	int debug;
	unsigned int max_concurrent_calls;
};

/*! \brief Overrides an agent may send (they must also be enabled at ElevenLabs). */
enum convai_override {
	CONVAI_OVERRIDE_FIRST_MESSAGE = (1 << 0),
	CONVAI_OVERRIDE_PROMPT = (1 << 1),
	CONVAI_OVERRIDE_LANGUAGE = (1 << 2),
	CONVAI_OVERRIDE_VOICE_ID = (1 << 3),
};

/*! \brief One agent section of elevenlabs.conf; immutable once applied. */
struct convai_agent {
	AST_DECLARE_STRING_FIELDS(
		AST_STRING_FIELD(name);
		AST_STRING_FIELD(agent_id);
		AST_STRING_FIELD(api_key);
		AST_STRING_FIELD(api_key_file);
		AST_STRING_FIELD(api_key_env);
		/*! The key in use, from whichever of the three sources is set. */
		AST_STRING_FIELD(key);
		AST_STRING_FIELD(signed_url_endpoint);
		AST_STRING_FIELD(override_first_message);
		AST_STRING_FIELD(override_prompt);
		AST_STRING_FIELD(override_language);
		AST_STRING_FIELD(override_voice_id);
		AST_STRING_FIELD(max_call_duration_message);
	);
	int send_caller_number;
	unsigned int buffer_ms;
	unsigned int max_connection_attempts;
	unsigned int connection_timeout_seconds;
	unsigned int max_call_duration_seconds;
	unsigned int max_concurrent_calls;
	/*! enum convai_override bits from allow_overrides. */
	unsigned int allowed_overrides;
	/*! "name = dialplan expression" pairs, evaluated for each call. */
	struct ast_variable *dynamic_variables;
	int debug;
};

/*! \brief An override: its allow_overrides name, per-call variable and agent default. */
struct convai_override_field {
	const char *name;
	const char *variable;
	unsigned int flag;
	size_t offset;
};

static const struct convai_override_field convai_override_fields[] = {
	{ "first_message", "ELEVENLABS_FIRST_MESSAGE", CONVAI_OVERRIDE_FIRST_MESSAGE,
		offsetof(struct convai_agent, override_first_message) },
	{ "prompt", "ELEVENLABS_PROMPT", CONVAI_OVERRIDE_PROMPT, offsetof(struct convai_agent, override_prompt) },
	{ "language", "ELEVENLABS_LANGUAGE", CONVAI_OVERRIDE_LANGUAGE, offsetof(struct convai_agent, override_language) },
	{ "voice_id", "ELEVENLABS_VOICE_ID", CONVAI_OVERRIDE_VOICE_ID, offsetof(struct convai_agent, override_voice_id) },
};

#define CONVAI_FIELD(agent, offset) (*(const char **) ((const char *) (agent) + (offset)))

/*! \brief Live calls of one agent name (kept across reloads). */
struct convai_usage {
	int calls;
	char name[0];
};

/*! Statuses a call can end with; the order of convai_outcomes. */
static const char *const convai_statuses[] = {
	"AGENT_ENDED", "CALLER_HANGUP", "FAILED", "CONFIG_ERROR", "BUSY",
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
	{ "max_call_duration_seconds", 0, 86400, offsetof(struct convai_agent, max_call_duration_seconds) },
	{ "max_concurrent_calls", 0, 100000, offsetof(struct convai_agent, max_concurrent_calls) },
};

static const struct convai_range convai_general_ranges[] = {
	{ "max_concurrent_calls", 0, 100000, offsetof(struct convai_general, max_concurrent_calls) },
};

/*! Live calls per agent name: struct convai_usage, locked for check-and-count. */
static struct ao2_container *convai_usage;
/*! Live calls of every agent. */
static int convai_calls_active;
/*! Calls by how they ended, in the order of convai_statuses. */
static int convai_outcomes[ARRAY_LEN(convai_statuses)];
/*! Agents whose debug was switched on with "elevenlabs debug on <agent>". */
static struct ao2_container *convai_debug_agents;

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

	ast_variables_destroy(agent->dynamic_variables);
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

/*! \internal \brief Set a ranged number from \a ranges; the error names \a section. */
static int convai_set_ranged(const struct convai_range *ranges, size_t count, const char *section,
	struct ast_variable *var, void *obj)
{
	unsigned int value;
	size_t i;

	for (i = 0; i < count; i++) {
		if (strcasecmp(var->name, ranges[i].name)) {
			continue;
		}
		if (ast_parse_arg(var->value, PARSE_UINT32 | PARSE_IN_RANGE, &value, ranges[i].min, ranges[i].max)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] %s = '%s' is not a number from %u to %u (line %d)\n",
				section, var->name, var->value, ranges[i].min, ranges[i].max, var->lineno);
			return -1;
		}
		*(unsigned int *) ((char *) obj + ranges[i].offset) = value;
		return 0;
	}
	return -1;
}

static int convai_agent_range_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	return convai_set_ranged(convai_agent_ranges, ARRAY_LEN(convai_agent_ranges),
		((struct convai_agent *) obj)->name, var, obj);
}

static int convai_general_range_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	return convai_set_ranged(convai_general_ranges, ARRAY_LEN(convai_general_ranges), "general", var, obj);
}

/*! \internal \brief Append name = value to a variable list (\a tail: its last element, or NULL); survives allocation failure. */
static struct ast_variable *convai_setting(struct ast_variable **head, struct ast_variable *tail,
	const char *name, const char *value)
{
	struct ast_variable *setting = ast_variable_new(name, S_OR(value, ""), "");

	return setting ? ast_variable_list_append_hint(head, tail, setting) : tail;
}

/*! \internal \brief "dynamic_variable = name=expression", once per variable. */
static int convai_dynamic_variable_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	char *expression = ast_strdupa(var->value);
	char *name = ast_strip(strsep(&expression, "="));
	const char *c;

	for (c = name; *c && (isalnum((unsigned char) *c) || *c == '_'); c++) {
	}
	if (!expression || ast_strlen_zero(name) || *c || !strncmp(name, "system__", 8)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] dynamic_variable = '%s' must be name=value, the name made of "
			"letters, digits and '_' and not starting with system__ (line %d)\n", agent->name, var->value,
			var->lineno);
		return -1;
	}
	convai_setting(&agent->dynamic_variables, NULL, name, ast_strip(expression));
	return 0;
}

/*! \internal \brief "allow_overrides = first_message, prompt, language, voice_id". */
static int convai_allow_overrides_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	char *list = ast_strdupa(var->value);
	char *item;
	size_t i;

	agent->allowed_overrides = 0;
	while ((item = strsep(&list, ","))) {
		item = ast_strip(item);
		if (ast_strlen_zero(item)) {
			continue;
		}
		for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
			if (!strcasecmp(item, convai_override_fields[i].name)) {
				agent->allowed_overrides |= convai_override_fields[i].flag;
				break;
			}
		}
		if (i == ARRAY_LEN(convai_override_fields)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] allow_overrides: unknown override '%s' "
				"(known: first_message, prompt, language, voice_id) (line %d)\n", agent->name, item, var->lineno);
			return -1;
		}
	}
	return 0;
}

/*! \internal \brief Fill agent->key from the one source configured; errors name the key. */
static int convai_resolve_key(struct convai_agent *agent)
{
	int sources = !ast_strlen_zero(agent->api_key) + !ast_strlen_zero(agent->api_key_file)
		+ !ast_strlen_zero(agent->api_key_env);
	char *text;
	const char *value;

	if (sources > 1) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] set only one of elevenlabs_api_key, elevenlabs_api_key_file "
			"and elevenlabs_api_key_env\n", agent->name);
		return -1;
	}
	if (!ast_strlen_zero(agent->api_key_file)) {
		text = ast_read_textfile(agent->api_key_file);
		if (!text || ast_strlen_zero(ast_strip(text))) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] elevenlabs_api_key_file: cannot read a key from %s\n",
				agent->name, agent->api_key_file);
			ast_free(text);
			return -1;
		}
		ast_string_field_set(agent, key, ast_strip(text));
		ast_free(text);
	} else if (!ast_strlen_zero(agent->api_key_env)) {
		value = getenv(agent->api_key_env);
		if (ast_strlen_zero(value)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] elevenlabs_api_key_env: environment variable %s is not set\n",
				agent->name, agent->api_key_env);
			return -1;
		}
		ast_string_field_set(agent, key, value);
	} else {
		ast_string_field_set(agent, key, agent->api_key);
	}
	return 0;
}

/*! \internal \brief An override value the agent does not allow would never be sent: say so. */
static void convai_warn_unsent_overrides(const struct convai_agent *agent)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		const struct convai_override_field *field = &convai_override_fields[i];

		if (!ast_strlen_zero(CONVAI_FIELD(agent, field->offset)) && !(agent->allowed_overrides & field->flag)) {
			ast_log(LOG_WARNING, "elevenlabs.conf: [%s] override_%s is set but '%s' is not in allow_overrides; "
				"it will not be sent\n", agent->name, field->name, field->name);
		}
	}
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
		if (convai_resolve_key(agent)) {
			res = -1;
		}
		convai_warn_unsent_overrides(agent);
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
	aco_option_register_custom(&convai_cfg_info, "max_concurrent_calls", ACO_EXACT, convai_general_types,
		"0", convai_general_range_handler, 0);

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
	aco_option_register(&convai_cfg_info, "elevenlabs_api_key_file", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, api_key_file));
	aco_option_register(&convai_cfg_info, "elevenlabs_api_key_env", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, api_key_env));
	aco_option_register(&convai_cfg_info, "override_first_message", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, override_first_message));
	aco_option_register(&convai_cfg_info, "override_prompt", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, override_prompt));
	aco_option_register(&convai_cfg_info, "override_language", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, override_language));
	aco_option_register(&convai_cfg_info, "override_voice_id", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, override_voice_id));
	aco_option_register(&convai_cfg_info, "max_call_duration_message", ACO_EXACT, convai_agent_types,
		"", OPT_STRINGFIELD_T, 0, STRFLDSET(struct convai_agent, max_call_duration_message));
	aco_option_register_custom(&convai_cfg_info, "allow_overrides", ACO_EXACT, convai_agent_types,
		"", convai_allow_overrides_handler, 0);
	aco_option_register_custom(&convai_cfg_info, "dynamic_variable", ACO_EXACT, convai_agent_types,
		NULL, convai_dynamic_variable_handler, 0);
	for (i = 0; i < ARRAY_LEN(convai_agent_ranges); i++) {
		static const char *const defaults[] = { "240", "3", "10", "0", "0" };

		aco_option_register_custom(&convai_cfg_info, convai_agent_ranges[i].name, ACO_EXACT,
			convai_agent_types, defaults[i], convai_agent_range_handler, 0);
	}
	return 0;
}

/*! \internal \brief Parse elevenlabs.conf; on error the previous config stays. */
static int convai_load_config(int reload)
{
	RAII_VAR(struct convai_config *, cfg, NULL, ao2_cleanup);

	switch (aco_process_config(&convai_cfg_info, reload)) {
	case ACO_PROCESS_OK:
		ast_verb(3, "elevenlabs.conf loaded\n");
		/* The file's [general] debug wins over "elevenlabs debug" at each (re)load. */
		cfg = ao2_global_obj_ref(convai_globals);
		convai_debug_all = cfg && cfg->general->debug;
		convai_embed_set_debug(convai_debug_all);
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
	convai_ring_unref(capture->clock);
}

/*! \internal \brief The current CLOCK_MONOTONIC time, in nanoseconds. */
static uint64_t convai_now_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t) now.tv_sec * 1000000000ULL + (uint64_t) now.tv_nsec;
}

/*! \internal \brief Tell Python when something happened to the audio (never blocks). */
static void convai_clock(struct convai_ring *clock, enum convai_clock_kind kind, uint64_t position)
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
static void convai_capture_voice(struct convai_capture *capture, struct ast_frame *frame)
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
			ast_log(LOG_WARNING, "No translation path from %s to %s; caller audio is not sent\n",
				ast_format_get_name(frame->subclass.format), ast_format_get_name(capture->format));
			return;
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
	convai_ring_ref(call->clock);
	call->capture->clock = call->clock;
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

/*! \internal \brief The overrides this call sends: per-call variable, else the agent's value. */
static struct ast_variable *convai_call_overrides(struct convai_call *call, struct ast_variable **head,
	struct ast_variable *tail, struct ast_variable *channel_values)
{
	char name[64];
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		const struct convai_override_field *field = &convai_override_fields[i];
		const char *value = ast_variable_find_in_list(channel_values, field->variable);

		if (!(call->agent->allowed_overrides & field->flag)) {
			if (!ast_strlen_zero(value)) {
				ast_log(LOG_WARNING, "%s: %s is set but agent '%s' does not allow the %s override "
					"(allow_overrides); not sent\n", ast_channel_name(call->chan), field->variable,
					call->agent->name, field->name);
			}
			continue;
		}
		if (ast_strlen_zero(value)) {
			value = CONVAI_FIELD(call->agent, field->offset);
		}
		if (!ast_strlen_zero(value)) {
			snprintf(name, sizeof(name), "override:%s", field->name);
			tail = convai_setting(head, tail, name, value);
		}
	}
	return tail;
}

/*!
 * \internal \brief Everything Python needs for this call, as name, value settings.
 *
 * Channel thread, channel not locked on entry: dialplan expressions are
 * evaluated here, channel variables read under the channel lock.
 */
static struct ast_variable *convai_call_settings(struct convai_call *call, int debug)
{
	struct convai_agent *agent = call->agent;
	struct ast_channel *chan = call->chan;
	struct ast_variable *head = NULL, *tail = NULL, *channel_values = NULL, *var;
	struct ast_var_t *chanvar;
	struct ast_str *value = ast_str_create(256);
	char name[128], number[16];
	size_t i;

	/* Copy what the channel holds now; nothing below runs with the lock held. */
	ast_channel_lock(chan);
	convai_setting(&channel_values, NULL, "caller_number", S_COR(ast_channel_caller(chan)->id.number.valid,
		ast_channel_caller(chan)->id.number.str, ""));
	convai_setting(&channel_values, NULL, "caller_name", S_COR(ast_channel_caller(chan)->id.name.valid,
		ast_channel_caller(chan)->id.name.str, ""));
	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		convai_setting(&channel_values, NULL, convai_override_fields[i].variable,
			pbx_builtin_getvar_helper(chan, convai_override_fields[i].variable));
	}
	AST_LIST_TRAVERSE(ast_channel_varshead(chan), chanvar, entries) {
		if (!strncmp(ast_var_name(chanvar), "ELEVENLABS_VAR_", 15) && ast_var_name(chanvar)[15]) {
			convai_setting(&channel_values, NULL, ast_var_name(chanvar), ast_var_value(chanvar));
		}
	}
	ast_channel_unlock(chan);

	tail = convai_setting(&head, tail, "channel", ast_channel_name(chan));
	tail = convai_setting(&head, tail, "uniqueid", ast_channel_uniqueid(chan));
	tail = convai_setting(&head, tail, "agent", agent->name);
	tail = convai_setting(&head, tail, "agent_id", agent->agent_id);
	tail = convai_setting(&head, tail, "api_key", agent->key);
	tail = convai_setting(&head, tail, "signed_url_endpoint", agent->signed_url_endpoint);
	snprintf(number, sizeof(number), "%u", agent->buffer_ms);
	tail = convai_setting(&head, tail, "buffer_ms", number);
	snprintf(number, sizeof(number), "%u", agent->max_connection_attempts);
	tail = convai_setting(&head, tail, "max_connection_attempts", number);
	snprintf(number, sizeof(number), "%u", agent->connection_timeout_seconds);
	tail = convai_setting(&head, tail, "connection_timeout_seconds", number);
	snprintf(number, sizeof(number), "%u", agent->max_call_duration_seconds);
	tail = convai_setting(&head, tail, "max_call_duration_seconds", number);
	tail = convai_setting(&head, tail, "max_call_duration_message", agent->max_call_duration_message);
	tail = convai_setting(&head, tail, "debug", debug ? "1" : "0");
	if (agent->send_caller_number) {
		tail = convai_setting(&head, tail, "user_id", ast_variable_find_in_list(channel_values, "caller_number"));
	}

	/* Dynamic variables: always offered, then the agent's, then ELEVENLABS_VAR_*; later ones win. */
	tail = convai_setting(&head, tail, "var:caller_number", ast_variable_find_in_list(channel_values, "caller_number"));
	tail = convai_setting(&head, tail, "var:caller_name", ast_variable_find_in_list(channel_values, "caller_name"));
	tail = convai_setting(&head, tail, "var:called_number", ast_channel_exten(chan));
	tail = convai_setting(&head, tail, "var:call_uniqueid", ast_channel_uniqueid(chan));
	for (var = agent->dynamic_variables; var && value; var = var->next) {
		ast_str_substitute_variables(&value, 0, chan, var->value);
		snprintf(name, sizeof(name), "var:%s", var->name);
		tail = convai_setting(&head, tail, name, ast_str_buffer(value));
	}
	for (var = channel_values; var; var = var->next) {
		if (!strncmp(var->name, "ELEVENLABS_VAR_", 15)) {
			snprintf(name, sizeof(name), "var:%s", var->name + 15);
			tail = convai_setting(&head, tail, name, var->value);
		}
	}
	convai_call_overrides(call, &head, tail, channel_values);

	ast_variables_destroy(channel_values);
	ast_free(value);
	return head;
}

/*! \internal \brief Flatten settings into the NULL-terminated pairs embed.h takes. */
static const char **convai_settings_pairs(const struct ast_variable *settings)
{
	const struct ast_variable *var;
	const char **pairs;
	size_t n = 0;

	for (var = settings; var; var = var->next) {
		n++;
	}
	pairs = ast_calloc(2 * n + 1, sizeof(*pairs));
	if (!pairs) {
		return NULL;
	}
	n = 0;
	for (var = settings; var; var = var->next) {
		pairs[n++] = var->name;
		pairs[n++] = var->value;
	}
	return pairs;
}

/* Concurrency: any PBX thread; convai_usage's lock makes check-and-count atomic. */

static int convai_usage_hash(const void *obj, const int flags)
{
	const char *name = (flags & OBJ_SEARCH_KEY) ? obj : ((const struct convai_usage *) obj)->name;

	return ast_str_case_hash(name);
}

static int convai_usage_cmp(void *obj, void *arg, int flags)
{
	const char *name = (flags & OBJ_SEARCH_KEY) ? arg : ((const struct convai_usage *) arg)->name;

	return !strcasecmp(((struct convai_usage *) obj)->name, name) ? CMP_MATCH : 0;
}

/*! \internal \brief Count a new call, or say (in \a reason) which limit it is over. */
static struct convai_usage *convai_usage_acquire(const struct convai_agent *agent, char *reason, size_t len)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);
	unsigned int general_max = cfg ? cfg->general->max_concurrent_calls : 0;
	struct convai_usage *usage;

	ao2_lock(convai_usage);
	usage = ao2_find(convai_usage, agent->name, OBJ_SEARCH_KEY | OBJ_NOLOCK);
	if (!usage) {
		usage = ao2_alloc_options(sizeof(*usage) + strlen(agent->name) + 1, NULL, AO2_ALLOC_OPT_LOCK_NOLOCK);
		if (usage) {
			strcpy(usage->name, agent->name); /* Safe: allocated to fit */
			ao2_link_flags(convai_usage, usage, OBJ_NOLOCK);
		}
	}
	if (usage && general_max && convai_calls_active >= (int) general_max) {
		snprintf(reason, len, "%d conversations in progress, the max_concurrent_calls of [general]", convai_calls_active);
		ao2_cleanup(usage);
		usage = NULL;
	} else if (usage && agent->max_concurrent_calls && usage->calls >= (int) agent->max_concurrent_calls) {
		snprintf(reason, len, "agent '%s' has %d conversations in progress, its max_concurrent_calls",
			agent->name, usage->calls);
		ao2_cleanup(usage);
		usage = NULL;
	} else if (usage) {
		usage->calls++;
		convai_calls_active++;
	} else {
		ast_copy_string(reason, "out of memory", len);
	}
	ao2_unlock(convai_usage);
	return usage;
}

static void convai_usage_release(struct convai_usage *usage)
{
	if (!usage) {
		return;
	}
	ao2_lock(convai_usage);
	usage->calls--;
	convai_calls_active--;
	ao2_unlock(convai_usage);
	ao2_ref(usage, -1);
}

static int convai_agent_debug(const struct convai_agent *agent)
{
	RAII_VAR(char *, name, NULL, ao2_cleanup);

	name = convai_debug_agents ? ao2_find(convai_debug_agents, agent->name, OBJ_SEARCH_KEY) : NULL;
	return convai_debug_all || agent->debug || name;
}

static void convai_count_outcome(const char *status)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_statuses); i++) {
		if (!strcmp(status, convai_statuses[i])) {
			ast_atomic_fetchadd_int(&convai_outcomes[i], 1);
			return;
		}
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
			if (!call->playing) {
				/* Python woke us because agent audio arrived to a silent call. */
				convai_play_due_frames(call);
			}
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
	struct convai_usage *usage = NULL;
	struct ast_variable *settings = NULL;
	const char **pairs = NULL;
	struct ast_flags flags = { 0 };
	char *parse, busy[256];
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
		convai_call_end(&call, "CONFIG_ERROR", "no agent name given");
		goto end;
	}
	/* ast_app_parse_options() skips letters it does not know: check them first. */
	if (!ast_strlen_zero(args.options)
		&& (strspn(args.options, CONVAI_OPTION_LETTERS) != strlen(args.options)
			|| ast_app_parse_options(convai_exec_options, &flags, NULL, args.options))) {
		ast_log(LOG_WARNING, "%s: %s: invalid options '%s' (known: h)\n", ast_channel_name(chan), app, args.options);
		convai_call_end(&call, "CONFIG_ERROR", "invalid options");
		goto end;
	}
	call.agent = convai_find_agent(args.agent);
	if (!call.agent) {
		ast_log(LOG_WARNING, "%s: %s: no agent '%s' in elevenlabs.conf\n", ast_channel_name(chan), app, args.agent);
		convai_call_end(&call, "CONFIG_ERROR", "unknown agent");
		goto end;
	}
	usage = convai_usage_acquire(call.agent, busy, sizeof(busy));
	if (!usage) {
		ast_log(LOG_NOTICE, "%s: %s busy: %s\n", ast_channel_name(chan), app, busy);
		convai_call_end(&call, "BUSY", busy);
		goto end;
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

	settings = convai_call_settings(&call, convai_agent_debug(call.agent));
	pairs = convai_settings_pairs(settings);
	if (!pairs) {
		convai_call_end(&call, "FAILED", "out of memory");
		goto end;
	}
	params.settings = pairs;
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
	convai_usage_release(usage);
	convai_set_result(chan, call.status, call.conversation_id, call.reason);
	convai_count_outcome(call.status);
	ast_verb(3, "%s: ElevenLabs conversation ended: %s (%s)\n", ast_channel_name(chan), call.status,
		call.reason);
	manager_event(EVENT_FLAG_CALL, "ElevenLabsConversationEnded",
		"Channel: %s\r\nUniqueid: %s\r\nAgent: %s\r\nConversationID: %s\r\nStatus: %s\r\n"
		"Reason: %s\r\nDuration: %.3f\r\n",
		ast_channel_name(chan), ast_channel_uniqueid(chan), S_OR(args.agent, ""), call.conversation_id,
		call.status, call.reason, ast_tvdiff_ms(ast_tvnow(), call.started) / 1000.0);
	if (!strcmp(call.status, "CALLER_HANGUP")
		|| (!strcmp(call.status, "AGENT_ENDED") && ast_test_flag(&flags, OPT_HANGUP_ON_END))) {
		res = -1;
	}
	convai_call_close(&call);
	ast_free(pairs);
	ast_variables_destroy(settings);
	ao2_cleanup(call.agent);
	return res;
}

/* CLI: any CLI thread; never with a channel locked. */

/*! \internal \brief Characters (not bytes) in a UTF-8 string, for column padding. */
static int convai_utf8_len(const char *text)
{
	int n = 0;

	for (; *text; text++) {
		n += ((unsigned char) *text & 0xC0) != 0x80;
	}
	return n;
}

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
		/* The redacted key has a 3-byte ellipsis: pad by hand to keep the columns. */
		const char *shown = convai_redact(agent->key, key, sizeof(key));

		ast_cli(a->fd, "%-20s %-32s %s%*s %6u ms %-8u %5u s %-5s\n",
			agent->name, agent->agent_id, shown, 12 - convai_utf8_len(shown), "",
			agent->buffer_ms, agent->max_connection_attempts, agent->connection_timeout_seconds,
			AST_CLI_YESNO(convai_agent_debug(agent)));
	}
	ao2_iterator_destroy(&it);
	ast_cli(a->fd, "%d agent(s)\n", ao2_container_count(cfg->agents));
	return CLI_SUCCESS;
}

/*! \internal \brief Offer agent names for tab completion. */
static char *convai_complete_agent(const char *word)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);
	struct ao2_iterator it;
	struct convai_agent *agent;
	size_t len = strlen(word);

	if (!cfg) {
		return NULL;
	}
	it = ao2_iterator_init(cfg->agents, 0);
	for (; (agent = ao2_iterator_next(&it)); ao2_ref(agent, -1)) {
		if (!strncasecmp(agent->name, word, len)) {
			ast_cli_completion_add(ast_strdup(agent->name));
		}
	}
	ao2_iterator_destroy(&it);
	return NULL;
}

static const char *convai_key_source(const struct convai_agent *agent)
{
	if (!ast_strlen_zero(agent->api_key_file)) {
		return "file";
	} else if (!ast_strlen_zero(agent->api_key_env)) {
		return "environment";
	}
	return ast_strlen_zero(agent->key) ? "none (public agent)" : "elevenlabs.conf";
}

static char *convai_cli_show_agent(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	RAII_VAR(struct convai_agent *, agent, NULL, ao2_cleanup);
	RAII_VAR(struct convai_usage *, usage, NULL, ao2_cleanup);
	struct ast_variable *var;
	char key[32];
	size_t i;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show agent";
		e->usage = "Usage: elevenlabs show agent <name>\n"
			"       Show one agent's settings (API key redacted) and its live calls.\n";
		return NULL;
	case CLI_GENERATE:
		return a->pos == 3 ? convai_complete_agent(a->word) : NULL;
	}
	if (a->argc != 4) {
		return CLI_SHOWUSAGE;
	}
	agent = convai_find_agent(a->argv[3]);
	if (!agent) {
		ast_cli(a->fd, "No agent '%s' in elevenlabs.conf\n", a->argv[3]);
		return CLI_FAILURE;
	}
	usage = ao2_find(convai_usage, agent->name, OBJ_SEARCH_KEY);
	ast_cli(a->fd, "Agent:                %s\n", agent->name);
	ast_cli(a->fd, "Agent ID:             %s\n", agent->agent_id);
	ast_cli(a->fd, "API key:              %s (from %s)\n", convai_redact(agent->key, key, sizeof(key)),
		convai_key_source(agent));
	ast_cli(a->fd, "Signed URL endpoint:  %s\n", agent->signed_url_endpoint);
	ast_cli(a->fd, "Caller audio chunks:  %u ms\n", agent->buffer_ms);
	ast_cli(a->fd, "Connection:           %u attempt(s), %u s each\n", agent->max_connection_attempts,
		agent->connection_timeout_seconds);
	ast_cli(a->fd, "Send caller number:   %s\n", AST_CLI_YESNO(agent->send_caller_number));
	ast_cli(a->fd, "Max call duration:    %s%u\n", agent->max_call_duration_seconds ? "" : "none ",
		agent->max_call_duration_seconds);
	ast_cli(a->fd, "Max concurrent calls: %u (0: no limit)\n", agent->max_concurrent_calls);
	ast_cli(a->fd, "Live calls:           %d\n", usage ? usage->calls : 0);
	ast_cli(a->fd, "Debug:                %s\n", AST_CLI_YESNO(convai_agent_debug(agent)));
	ast_cli(a->fd, "Overrides allowed:   ");
	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		if (agent->allowed_overrides & convai_override_fields[i].flag) {
			const char *value = CONVAI_FIELD(agent, convai_override_fields[i].offset);

			ast_cli(a->fd, " %s%s%s%s", convai_override_fields[i].name, ast_strlen_zero(value) ? "" : " (\"",
				S_OR(value, ""), ast_strlen_zero(value) ? "" : "\")");
		}
	}
	ast_cli(a->fd, "%s\n", agent->allowed_overrides ? "" : " none");
	ast_cli(a->fd, "Dynamic variables:    caller_number, caller_name, called_number, call_uniqueid, ELEVENLABS_VAR_*\n");
	for (var = agent->dynamic_variables; var; var = var->next) {
		ast_cli(a->fd, "                      %s = %s\n", var->name, var->value);
	}
	return CLI_SUCCESS;
}

/*! \internal \brief Metrics in Prometheus text format: the module's counters, then Python's. */
static void convai_metrics(struct ast_str **out)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);
	struct ao2_iterator it;
	struct convai_usage *usage;
	char *python;
	size_t i;

	ast_str_append(out, 0, "# HELP asterisk_elevenlabs_calls_active Conversations in progress.\n"
		"# TYPE asterisk_elevenlabs_calls_active gauge\n");
	ao2_lock(convai_usage);
	it = ao2_iterator_init(convai_usage, AO2_ITERATOR_DONTLOCK);
	for (; (usage = ao2_iterator_next(&it)); ao2_ref(usage, -1)) {
		ast_str_append(out, 0, "asterisk_elevenlabs_calls_active{agent=\"%s\"} %d\n", usage->name, usage->calls);
	}
	ao2_iterator_destroy(&it);
	ao2_unlock(convai_usage);
	ast_str_append(out, 0, "# HELP asterisk_elevenlabs_calls_total Conversations by how they ended.\n"
		"# TYPE asterisk_elevenlabs_calls_total counter\n");
	for (i = 0; i < ARRAY_LEN(convai_statuses); i++) {
		ast_str_append(out, 0, "asterisk_elevenlabs_calls_total{status=\"%s\"} %d\n", convai_statuses[i],
			convai_outcomes[i]);
	}
	ast_str_append(out, 0, "# HELP asterisk_elevenlabs_agents Agents configured.\n"
		"# TYPE asterisk_elevenlabs_agents gauge\nasterisk_elevenlabs_agents %d\n",
		cfg ? ao2_container_count(cfg->agents) : 0);
	python = convai_embed_metrics();
	if (python) {
		ast_str_append(out, 0, "%s", python);
		ast_std_free(python);
	}
}

static char *convai_cli_show_metrics(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	RAII_VAR(struct ast_str *, out, ast_str_create(2048), ast_free);

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show metrics";
		e->usage = "Usage: elevenlabs show metrics\n"
			"       The counters res_prometheus exports, in Prometheus text format.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	if (!out) {
		return CLI_FAILURE;
	}
	convai_metrics(&out);
	ast_cli(a->fd, "%s", ast_str_buffer(out));
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
	RAII_VAR(struct convai_agent *, agent, NULL, ao2_cleanup);
	int on;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs debug";
		e->usage = "Usage: elevenlabs debug {on|off} [agent]\n"
			"       Log conversation details (VAD scores, interruptions, WebSocket\n"
			"       lifecycle) at debug level, for every agent or for one; applies to\n"
			"       calls that start afterwards.\n";
		return NULL;
	case CLI_GENERATE:
		if (a->pos == 2) {
			return ast_cli_complete(a->word, choices, a->n);
		}
		return a->pos == 3 ? convai_complete_agent(a->word) : NULL;
	}
	if (a->argc != 3 && a->argc != 4) {
		return CLI_SHOWUSAGE;
	}
	if (ast_true(a->argv[2])) {
		on = 1;
	} else if (ast_false(a->argv[2])) {
		on = 0;
	} else {
		return CLI_SHOWUSAGE;
	}
	if (a->argc == 3) {
		convai_debug_all = on;
		convai_embed_set_debug(on);
		ast_cli(a->fd, "ElevenLabs debug logging %s\n", on ? "enabled" : "disabled");
		return CLI_SUCCESS;
	}
	agent = convai_find_agent(a->argv[3]);
	if (!agent) {
		ast_cli(a->fd, "No agent '%s' in elevenlabs.conf\n", a->argv[3]);
		return CLI_FAILURE;
	}
	if (on) {
		ast_str_container_add(convai_debug_agents, agent->name);
	} else {
		ast_str_container_remove(convai_debug_agents, agent->name);
	}
	ast_cli(a->fd, "ElevenLabs debug logging %s for agent %s\n", on ? "enabled" : "disabled", agent->name);
	return CLI_SUCCESS;
}

static void convai_prometheus_callback(struct ast_str **output)
{
	convai_metrics(output);
}

static struct prometheus_callback convai_prometheus = {
	.name = "app_elevenlabs_convai",
	.callback_fn = convai_prometheus_callback,
};

/*! res_prometheus's register/unregister, when that module is loaded (found at run time). */
static int (*convai_prometheus_register)(struct prometheus_callback *callback);
static void (*convai_prometheus_unregister)(struct prometheus_callback *callback);

/*! \internal \brief Export metrics through res_prometheus if it is loaded; no hard dependency. */
static void convai_prometheus_attach(void)
{
	if (convai_prometheus_register) {
		return;
	}
	convai_prometheus_register = dlsym(RTLD_DEFAULT, "prometheus_callback_register");
	convai_prometheus_unregister = dlsym(RTLD_DEFAULT, "prometheus_callback_unregister");
	if (!convai_prometheus_register || !convai_prometheus_unregister
		|| convai_prometheus_register(&convai_prometheus)) {
		convai_prometheus_register = NULL;
		ast_debug(1, "res_prometheus not loaded; metrics through 'elevenlabs show metrics' only\n");
		return;
	}
	ast_verb(3, "ElevenLabs metrics exported through res_prometheus\n");
}

static int convai_reload(void)
{
	int res = convai_load_config(1);

	/* A runtime that failed at load (say, a missing venv) gets another chance. */
	if (!convai_embed_running()) {
		convai_start_runtime();
	}
	convai_prometheus_attach();
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
	AST_CLI_DEFINE(convai_cli_show_agent, "Show one ElevenLabs agent"),
	AST_CLI_DEFINE(convai_cli_show_metrics, "Show ElevenLabs metrics"),
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

/*! \internal \brief Free the configuration and the containers (unload, or a declined load). */
static void convai_release_globals(void)
{
	aco_info_destroy(&convai_cfg_info);
	ao2_global_obj_release(convai_globals);
	ao2_cleanup(convai_usage);
	convai_usage = NULL;
	ao2_cleanup(convai_debug_agents);
	convai_debug_agents = NULL;
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
	if (convai_prometheus_register) {
		convai_prometheus_unregister(&convai_prometheus);
		convai_prometheus_register = NULL;
	}
	convai_embed_stop(CONVAI_SHUTDOWN_TIMEOUT_MS);
	convai_release_globals();
	return 0;
}

static int load_module(void)
{
	convai_usage = ao2_container_alloc_hash(AO2_ALLOC_OPT_LOCK_MUTEX, 0, 31, convai_usage_hash, NULL,
		convai_usage_cmp);
	convai_debug_agents = ast_str_container_alloc(7);
	if (!convai_usage || !convai_debug_agents) {
		goto declined;
	}
	if (convai_register_options()) {
		ast_log(LOG_ERROR, "Cannot register elevenlabs.conf options (is the module's XML documentation installed?)\n");
		goto declined;
	}
	/* A broken file must not stop Asterisk: load with no agents and say so. */
	convai_load_config(0);
	convai_pin_code();
	convai_start_runtime();
	if (ast_register_application_xml(app, convai_exec)) {
		goto declined;
	}
	ast_cli_register_multiple(convai_cli, ARRAY_LEN(convai_cli));
	convai_prometheus_attach();
	return AST_MODULE_LOAD_SUCCESS;

declined:
	convai_release_globals();
	return AST_MODULE_LOAD_DECLINE;
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
	.optional_modules = "res_prometheus",
);
