/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief Private to the module: what its C files share.
 *
 * - app_elevenlabs_convai.c: the application, the pacing loop, control
 *   records, load and unload;
 * - convai_capture.c: the capture framehook (caller audio into the uplink);
 * - convai_actions.c: what the agent makes the channel do (keys, transfer checks,
 *   dialplan tools, the sound while connecting);
 * - convai_config.c: elevenlabs.conf (ACO), API keys, per-call settings,
 *   concurrency limits and debug switches;
 * - convai_cli.c: CLI commands, metrics and res_prometheus;
 * - convai_manager.c: AMI actions.
 *
 * Nothing here takes the GIL; embed.h is the only way into Python.
 */

#ifndef CONVAI_H
#define CONVAI_H

#include "asterisk/stringfields.h"

#include "convai_wire.h"

#include "asterisk/channel.h"
#include "asterisk/pbx.h"
#include "asterisk/time.h"

struct ast_channel;
struct ast_format;
struct ast_timer;
struct convai_capture;
struct convai_ring;
struct convai_usage;
struct ast_str;
struct ast_variable;
struct ao2_container;

#define CONVAI_APP "ElevenLabsConversationalAI"
/*! The same application under a name that fits every provider. */
#define CONVAI_APP_NEUTRAL "AIConversation"

/*! \brief How a conversation ended: ELEVENLABS_STATUS. */
enum convai_status {
	CONVAI_STATUS_AGENT_ENDED,
	CONVAI_STATUS_CALLER_HANGUP,
	CONVAI_STATUS_FAILED,
	CONVAI_STATUS_CONFIG_ERROR,
	CONVAI_STATUS_BUSY,
	CONVAI_STATUS_TRANSFER,
	CONVAI_STATUS_VOICEMAIL,
	CONVAI_STATUS_REDIRECTED,
	/*! Not a status: how many there are. */
	CONVAI_STATUS_COUNT,
};

/*! \brief The dialplan's name of \a status ("AGENT_ENDED"...). */
const char *convai_status_name(enum convai_status status);

/*! \brief The status called \a name, or -1 when there is none. */
int convai_status_parse(const char *name);

/*! \brief [general] of elevenlabs.conf. */
struct convai_general {
	AST_DECLARE_STRING_FIELDS(
		AST_STRING_FIELD(python_venv);
	);
	int debug;
	unsigned int max_concurrent_calls;
};

/*! \brief Who an agent talks through: elevenlabs.conf's provider. */
enum convai_provider {
	CONVAI_PROVIDER_ELEVENLABS,
	/*! A WebSocket server of the administrator's (websocket_url). */
	CONVAI_PROVIDER_WEBSOCKET,
	CONVAI_PROVIDER_OPENAI_REALTIME,
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
		/*! Where transfers go; empty: transfers off. */
		AST_STRING_FIELD(transfer_context);
		AST_STRING_FIELD(transfer_tool);
		AST_STRING_FIELD(dtmf_tool);
		/*! user_message, contextual_update or no. */
		AST_STRING_FIELD(dtmf_to_agent);
		/*! none, ring, moh or moh:<class>. */
		AST_STRING_FIELD(while_connecting);
		/*! provider = websocket: the server, its token and what the session asks for. */
		AST_STRING_FIELD(websocket_url);
		AST_STRING_FIELD(websocket_auth_token);
		AST_STRING_FIELD(voice);
		AST_STRING_FIELD(system_prompt);
		/*! provider = websocket or openai_realtime. */
		AST_STRING_FIELD(language);
		AST_STRING_FIELD(initial_message);
		/*! provider = openai_realtime: the key, given one of three ways as for ElevenLabs. */
		AST_STRING_FIELD(openai_api_key);
		AST_STRING_FIELD(openai_api_key_file);
		AST_STRING_FIELD(openai_api_key_env);
		/*! The OpenAI key in use, from whichever of the three sources is set. */
		AST_STRING_FIELD(openai_key);
		AST_STRING_FIELD(openai_model);
		AST_STRING_FIELD(openai_voice);
		AST_STRING_FIELD(instructions);
		AST_STRING_FIELD(openai_url);
	);
	enum convai_provider provider;
	int send_caller_number;
	unsigned int buffer_ms;
	unsigned int max_connection_attempts;
	unsigned int connection_timeout_seconds;
	unsigned int max_call_duration_seconds;
	unsigned int max_concurrent_calls;
	unsigned int dtmf_timeout_ms;
	/*! enum convai_override bits from allow_overrides. */
	unsigned int allowed_overrides;
	/*! "name = dialplan expression" pairs, evaluated for each call. */
	struct ast_variable *dynamic_variables;
	/*! client_tool lines: "tool name = context" pairs. */
	struct ast_variable *client_tools;
	int client_tools_via_ami;
	unsigned int client_tool_timeout_seconds;
	int debug;
	/*! Voice activity detection of the websocket and openai_realtime providers. */
	int vad_enabled;
	/*! 0.0 to 1.0. */
	double vad_threshold;
	unsigned int vad_silence_duration_ms;
};

/*! \brief A whole elevenlabs.conf; a call keeps the snapshot it started with. */
struct convai_config {
	struct convai_general *general;
	struct ao2_container *agents;
};

/*! \brief An override: its allow_overrides name, per-call variable and agent default. */
struct convai_override_field {
	const char *name;
	const char *variable;
	unsigned int flag;
	size_t offset;
};

extern const struct convai_override_field convai_override_fields[];
extern const size_t convai_override_count;

/*! \brief The agent's value of an override field. */
#define CONVAI_FIELD(agent, offset) (*(const char **) ((const char *) (agent) + (offset)))

/* convai_config.c: any thread, no channel locked unless stated. */

/*! \brief Register the options and read elevenlabs.conf; a file with errors leaves no agent. */
int convai_config_init(void);

/*! \brief Free the configuration and its containers (unload, or a declined load). */
void convai_config_release(void);

/*!
 * \brief Read elevenlabs.conf again; on errors the previous configuration stays.
 * \retval 0 applied or unchanged
 * \retval -1 errors (logged)
 */
int convai_config_reload(void);

/*! \brief The configuration in force (a reference, or NULL). */
struct convai_config *convai_config_get(void);

/*! \brief The agent called \a name (a reference), or NULL. */
struct convai_agent *convai_agent_get(const char *name);

/*!
 * \brief Where the embedded Python runs from: python_venv, or the system Python's prefix
 * (CONVAI_PYTHON_PREFIX) when python_venv is empty. A static buffer: load and CLI threads.
 */
const char *convai_venv_path(void);

/*! \brief elevenlabs.conf's name of \a provider, also what Python is given ("elevenlabs"...). */
const char *convai_provider_name(enum convai_provider provider);

/*!
 * \brief The secret of the agent's provider: the ElevenLabs or OpenAI key in use, the
 * WebSocket auth token ("" when there is none). For the CLI, which redacts it.
 */
const char *convai_agent_secret(const struct convai_agent *agent);

/*! \brief Where convai_agent_secret() came from, for the CLI. */
const char *convai_key_source(const struct convai_agent *agent);

/*! \brief Whether calls of \a agent log at debug level. */
int convai_agent_debug(const struct convai_agent *agent);

/*! \brief "elevenlabs debug on|off": for every agent (\a agent NULL) or one. */
void convai_set_debug(const struct convai_agent *agent, int on);

/*! \brief "elevenlabs debug on|off" for every agent, or [general] debug. */
int convai_debug_everywhere(void);

/*! \brief Live calls of one agent name (kept across reloads). */
struct convai_usage;

/*!
 * \brief Count a new call against the limits, or say (in \a reason) which one it is over.
 * \return the usage to release when the call ends, or NULL (busy or out of memory)
 */
struct convai_usage *convai_usage_acquire(const struct convai_agent *agent, char *reason, size_t len);

/*! \brief The call counted by convai_usage_acquire() has ended (NULL: nothing). */
void convai_usage_release(struct convai_usage *usage);

/*! \brief Live calls of the agent called \a name. */
int convai_usage_calls(const char *name);

/*! \brief Append one "asterisk_elevenlabs_calls_active{agent=...}" line per agent ever used. */
void convai_usage_metrics(struct ast_str **out);

/*!
 * \brief Everything Python needs for one call, as NULL-terminated name, value pairs.
 *
 * Channel thread, channel not locked: dialplan expressions are evaluated here. With
 * \a chan NULL (elevenlabs check agent), the settings of a call with no caller details.
 * \return an array allocated with ast_malloc (free it with convai_settings_free()), or NULL
 */
const char **convai_call_settings(struct ast_channel *chan, const struct convai_agent *agent);

/*! \brief Free what convai_call_settings() returned. */
void convai_settings_free(const char **pairs);

/*! \brief What the caller hears while the agent connects (while_connecting). */
enum convai_connecting_sound {
	CONVAI_CONNECTING_NONE,
	CONVAI_CONNECTING_RING,
	CONVAI_CONNECTING_MOH,
};

/*! \brief One conversation, on the stack of the channel thread that runs it. */
struct convai_call {
	struct ast_channel *chan;
	/*! The application as the dialplan named it (CONVAI_APP or CONVAI_APP_NEUTRAL), for the log. */
	char app[AST_MAX_APP];
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
	enum convai_status status;
	/*! Counted against the agent's and the module's limits; NULL if not (yet). */
	struct convai_usage *usage;
	/*! Ringing or music on hold until the first agent frame, else NONE. */
	enum convai_connecting_sound connecting_sound;
	char conversation_id[128];
	char reason[512];
	/*! Where a TRANSFER goes: an extension of the agent's transfer_context. */
	char transfer_destination[AST_MAX_EXTENSION];
};

/* app_elevenlabs_convai.c, for convai_actions.c: the channel thread. */

/*! \brief End the call with \a status (the first ending wins). */
void convai_call_end(struct convai_call *call, enum convai_status status, const char *reason);

/*! \brief ast_read() said the channel is gone: a hangup, or a redirect. */
void convai_call_gone(struct convai_call *call);

/*! \brief Split a NUL-separated control payload into at most \a max strings (see the definition). */
int convai_split(char *payload, size_t len, const char **parts, int max);

/* convai_actions.c: the channel thread, channel not locked on entry. */

/*! \brief Ringing or music on hold from the answer until the agent's first words. */
void convai_start_connecting_sound(struct convai_call *call);

/*! \brief Stop it (before the first agent frame, and on every ending). */
void convai_stop_connecting_sound(struct convai_call *call);

/*! \brief The agent's keypad tool: send \a digits to the caller, then tell Python. */
void convai_send_dtmf(struct convai_call *call, const char *digits);

/*! \brief Whether transfer_context,destination,1 exists for this caller. */
int convai_transfer_exists(struct convai_call *call, const char *destination);

/*! \brief A dialplan client tool: Gosub on this thread, answered through embed.h. */
void convai_run_tool(struct convai_call *call, char *payload, size_t len);

/* convai_capture.c: the channel thread, channel not locked on entry. */

/*! \brief The capture framehook's state (an ao2 object). */
struct convai_capture;

/*!
 * \brief Attach the capture framehook: caller audio goes to \a uplink, its timing to \a clock.
 * \param[out] hook_id the framehook's id, for convai_capture_detach()
 * \return a reference to the capture state, or NULL (nothing attached)
 */
struct convai_capture *convai_capture_attach(struct ast_channel *chan, struct convai_ring *uplink,
	struct convai_ring *clock, int *hook_id);

/*! \brief Detach the framehook (\a hook_id -1: nothing to do); sets \a hook_id to -1. */
void convai_capture_detach(struct ast_channel *chan, int *hook_id);

/*! \brief Capture in the agent's input format from now on (takes the channel lock). */
void convai_capture_set_format(struct convai_capture *capture, struct ast_channel *chan, struct ast_format *format);

/*! \brief Nonzero once the caller's codec was found to have no translation path. */
int convai_capture_untranslatable(const struct convai_capture *capture);

/*! \brief Tell Python when something happened to the audio (any thread, never blocks). */
void convai_clock(struct convai_ring *clock, enum convai_clock_kind kind, uint64_t position);

/*!
 * \brief Tell Python something it must act on at once (a key, an answer): the record,
 * then the uplink's doorbell, which wakes Python's reader (records about audio wait
 * for the next chunk or the sweep). Channel thread.
 */
void convai_clock_now(struct convai_call *call, enum convai_clock_kind kind, uint64_t position);

/* convai_manager.c: AMI session threads. */

/*! \brief Register the AMI actions (with no module, as the application). */
int convai_manager_register(void);

/*! \brief Unregister them. */
void convai_manager_unregister(void);

/* convai_cli.c: CLI threads, the res_prometheus scrape thread. */

/*! \brief Register the CLI commands and the metrics. */
int convai_cli_register(void);

/*! \brief Unregister them (safe when they were never registered). */
void convai_cli_unregister(void);

/*! \brief Export metrics through res_prometheus, if it is loaded now (any later reload retries). */
void convai_prometheus_attach(void);

/*! \brief Count a finished call by its status (any thread). */
void convai_count_outcome(enum convai_status status);

#endif /* CONVAI_H */
