/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief elevenlabs.conf: Asterisk's config framework (ACO), API keys, the
 * settings each call hands to Python, concurrency limits and debug switches.
 *
 * Threads: load, reload and CLI threads read and swap the configuration (an
 * ao2 global, so a call keeps the snapshot it started with); PBX channel
 * threads build per-call settings and count calls. No Python here.
 */

#include "asterisk.h"

#include <ctype.h>
#include <sys/stat.h>

#include "asterisk/app.h"
#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/config_options.h"
#include "asterisk/logger.h"
#include "asterisk/pbx.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

#include "convai.h"

/*
 * From the build (Makefile): python_venv's default, the venv of "make install" or empty for the
 * system Python (the Debian package), and the prefix of the Python the module links.
 */
#ifndef CONVAI_DEFAULT_VENV
#error "CONVAI_DEFAULT_VENV (python_venv's default; empty: the system Python) must be defined by the build"
#endif
#ifndef CONVAI_PYTHON_PREFIX
#error "CONVAI_PYTHON_PREFIX (python3-config --prefix) must be defined by the build"
#endif

#define CONVAI_DEFAULT_ENDPOINT "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url"
#define CONVAI_DEFAULT_OPENAI_URL "wss://api.openai.com/v1/realtime"

/*! Which providers an option applies to: a set of these bits. */
#define CONVAI_FOR(provider) (1U << (provider))
#define CONVAI_FOR_ELEVENLABS CONVAI_FOR(CONVAI_PROVIDER_ELEVENLABS)
#define CONVAI_FOR_WEBSOCKET CONVAI_FOR(CONVAI_PROVIDER_WEBSOCKET)
#define CONVAI_FOR_OPENAI CONVAI_FOR(CONVAI_PROVIDER_OPENAI_REALTIME)
#define CONVAI_FOR_ALL (CONVAI_FOR_ELEVENLABS | CONVAI_FOR_WEBSOCKET | CONVAI_FOR_OPENAI)

/* The configInfo documentation of elevenlabs.conf: convai_config_doc.xml (the Makefile adds it). */

const struct convai_override_field convai_override_fields[] = {
	{ "first_message", "ELEVENLABS_FIRST_MESSAGE", CONVAI_OVERRIDE_FIRST_MESSAGE,
		offsetof(struct convai_agent, override_first_message) },
	{ "prompt", "ELEVENLABS_PROMPT", CONVAI_OVERRIDE_PROMPT, offsetof(struct convai_agent, override_prompt) },
	{ "language", "ELEVENLABS_LANGUAGE", CONVAI_OVERRIDE_LANGUAGE, offsetof(struct convai_agent, override_language) },
	{ "voice_id", "ELEVENLABS_VOICE_ID", CONVAI_OVERRIDE_VOICE_ID, offsetof(struct convai_agent, override_voice_id) },
};

const size_t convai_override_count = ARRAY_LEN(convai_override_fields);

/*! What provider = accepts, indexed by enum convai_provider; Python is given the same names. */
static const char *const convai_provider_names[] = {
	[CONVAI_PROVIDER_ELEVENLABS] = "elevenlabs",
	[CONVAI_PROVIDER_WEBSOCKET] = "websocket",
	[CONVAI_PROVIDER_OPENAI_REALTIME] = "openai_realtime",
};

/*! \brief An API key given one of three ways: NAME, NAME_file or NAME_env. */
struct convai_key_option {
	const char *name;
	size_t value;
	size_t file;
	size_t env;
	/*! Where the key in use goes. */
	size_t resolved;
};

static const struct convai_key_option convai_elevenlabs_key = {
	"elevenlabs_api_key", offsetof(struct convai_agent, api_key), offsetof(struct convai_agent, api_key_file),
	offsetof(struct convai_agent, api_key_env), offsetof(struct convai_agent, key),
};

static const struct convai_key_option convai_openai_key = {
	"openai_api_key", offsetof(struct convai_agent, openai_api_key), offsetof(struct convai_agent, openai_api_key_file),
	offsetof(struct convai_agent, openai_api_key_env), offsetof(struct convai_agent, openai_key),
};

/*! \brief Live calls of one agent name (kept across reloads). */
struct convai_usage {
	int calls;
	char name[0];
};

/*! \brief A numeric option: its default beside its range; errors name the section. */
struct convai_range {
	const char *name;
	const char *default_value;
	unsigned int min;
	unsigned int max;
	size_t offset;
};

static const struct convai_range convai_agent_ranges[] = {
	{ "elevenlabs_audio_frames_buffer_ms", "240", 20, 1000, offsetof(struct convai_agent, buffer_ms) },
	{ "max_connection_attempts", "3", 1, 10, offsetof(struct convai_agent, max_connection_attempts) },
	{ "connection_timeout_seconds", "10", 1, 60, offsetof(struct convai_agent, connection_timeout_seconds) },
	{ "max_call_duration_seconds", "0", 0, 86400, offsetof(struct convai_agent, max_call_duration_seconds) },
	{ "max_concurrent_calls", "0", 0, 100000, offsetof(struct convai_agent, max_concurrent_calls) },
	{ "dtmf_timeout_ms", "2000", 200, 10000, offsetof(struct convai_agent, dtmf_timeout_ms) },
	{ "client_tool_timeout_seconds", "10", 1, 120, offsetof(struct convai_agent, client_tool_timeout_seconds) },
	{ "vad_silence_duration_ms", "500", 100, 5000, offsetof(struct convai_agent, vad_silence_duration_ms) },
};

static const struct convai_range convai_general_ranges[] = {
	{ "max_concurrent_calls", "0", 0, 100000, offsetof(struct convai_general, max_concurrent_calls) },
};

static AO2_GLOBAL_OBJ_STATIC(convai_globals);

/*! "elevenlabs debug on|off" for every call; set from any CLI thread. */
static int convai_debug_all;
/*! Agents whose debug was switched on with "elevenlabs debug on <agent>". */
static struct ao2_container *convai_debug_agents;
/*! Live calls per agent name: struct convai_usage, locked for check-and-count. */
static struct ao2_container *convai_usage;
/*! Live calls of every agent, under convai_usage's lock. */
static int convai_calls_active;

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

/* Configuration: load and reload threads. */

static void convai_general_destroy(void *obj)
{
	struct convai_general *general = obj;

	ast_string_field_free_memory(general);
}

static void convai_agent_destroy(void *obj)
{
	struct convai_agent *agent = obj;

	ast_variables_destroy(agent->dynamic_variables);
	ast_variables_destroy(agent->client_tools);
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

/*! \internal \brief "client_tool = tool_name,context", once per tool. */
static int convai_client_tool_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	char *context = ast_strdupa(var->value);
	char *name = ast_strip(strsep(&context, ","));
	const char *c;

	for (c = name; *c && (isalnum((unsigned char) *c) || *c == '_' || *c == '-'); c++) {
	}
	context = context ? ast_strip(context) : NULL;
	if (ast_strlen_zero(name) || *c || ast_strlen_zero(context)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] client_tool = '%s' must be tool_name,context, the name made of "
			"letters, digits, '_' and '-' (line %d)\n", agent->name, var->value, var->lineno);
		return -1;
	}
	convai_setting(&agent->client_tools, NULL, name, context);
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

/*! \internal \brief "provider = elevenlabs|websocket|openai_realtime". */
static int convai_provider_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_provider_names); i++) {
		if (!strcasecmp(var->value, convai_provider_names[i])) {
			agent->provider = i;
			return 0;
		}
	}
	ast_log(LOG_ERROR, "elevenlabs.conf: [%s] provider = '%s' is not elevenlabs, websocket or openai_realtime "
		"(line %d)\n", agent->name, var->value, var->lineno);
	return -1;
}

/*! \internal \brief "vad_threshold = 0.0 to 1.0". */
static int convai_vad_threshold_handler(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	struct convai_agent *agent = obj;
	double value;

	/* Written as !(in range) so that "nan", which compares false both ways, is refused too. */
	if (ast_parse_arg(var->value, PARSE_DOUBLE, &value) || !(value >= 0.0 && value <= 1.0)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] vad_threshold = '%s' is not a number from 0.0 to 1.0 "
			"(line %d)\n", agent->name, var->value, var->lineno);
		return -1;
	}
	agent->vad_threshold = value;
	return 0;
}

/*! \internal \brief Set the string field at \a offset, as ast_string_field_set() does a named one. */
static void convai_field_set(struct convai_agent *agent, size_t offset, const char *value)
{
	ast_string_field_ptr_set(agent, (ast_string_field *) ((char *) agent + offset), value);
}

/*! \internal \brief Warn when a key file can be read by others than Asterisk's user. */
static void convai_check_key_file(const struct convai_agent *agent, const struct convai_key_option *option)
{
	const char *file = CONVAI_FIELD(agent, option->file);
	struct stat st;

	if (!stat(file, &st) && (st.st_mode & (S_IRWXG | S_IRWXO))) {
		ast_log(LOG_WARNING, "elevenlabs.conf: [%s] %s_file %s can be read by others "
			"(mode %03o); make it 0600 and owned by Asterisk's user\n", agent->name, option->name, file,
			(unsigned int) (st.st_mode & 0777));
	}
}

/*!
 * \internal \brief Fill the key in use from the one source of \a option configured; errors name
 * the key. \a required: no source at all is an error too (else it leaves the key empty).
 */
static int convai_resolve_key(struct convai_agent *agent, const struct convai_key_option *option, int required)
{
	const char *inline_key = CONVAI_FIELD(agent, option->value);
	const char *file = CONVAI_FIELD(agent, option->file);
	const char *env = CONVAI_FIELD(agent, option->env);
	int sources = !ast_strlen_zero(inline_key) + !ast_strlen_zero(file) + !ast_strlen_zero(env);
	char *text;
	const char *value;

	if (sources > 1) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] set only one of %s, %s_file and %s_env\n", agent->name,
			option->name, option->name, option->name);
		return -1;
	}
	if (!sources && required) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] provider = %s needs one of %s, %s_file and %s_env\n",
			agent->name, convai_provider_name(agent->provider), option->name, option->name, option->name);
		return -1;
	}
	if (!ast_strlen_zero(file)) {
		text = ast_read_textfile(file);
		if (!text || ast_strlen_zero(ast_strip(text))) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] %s_file: cannot read a key from %s\n",
				agent->name, option->name, file);
			ast_free(text);
			return -1;
		}
		convai_field_set(agent, option->resolved, ast_strip(text));
		ast_free(text);
		convai_check_key_file(agent, option);
	} else if (!ast_strlen_zero(env)) {
		value = getenv(env);
		if (ast_strlen_zero(value)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] %s_env: environment variable %s is not set\n",
				agent->name, option->name, env);
			return -1;
		}
		convai_field_set(agent, option->resolved, value);
	} else {
		convai_field_set(agent, option->resolved, inline_key);
	}
	return 0;
}

/*! \brief A string option of an agent: its default beside its field, and the providers it is for. */
struct convai_string_option {
	const char *name;
	const char *default_value;
	size_t offset;
	/*! CONVAI_FOR bits: set for another provider, it is ignored (with a warning). */
	unsigned int providers;
};

static const struct convai_string_option convai_agent_strings[] = {
	{ "elevenlabs_agent_id", "", offsetof(struct convai_agent, agent_id), CONVAI_FOR_ELEVENLABS },
	{ "elevenlabs_api_key", "", offsetof(struct convai_agent, api_key), CONVAI_FOR_ELEVENLABS },
	{ "elevenlabs_api_key_file", "", offsetof(struct convai_agent, api_key_file), CONVAI_FOR_ELEVENLABS },
	{ "elevenlabs_api_key_env", "", offsetof(struct convai_agent, api_key_env), CONVAI_FOR_ELEVENLABS },
	{ "elevenlabs_get_signed_url_endpoint", CONVAI_DEFAULT_ENDPOINT, offsetof(struct convai_agent, signed_url_endpoint),
		CONVAI_FOR_ELEVENLABS },
	{ "override_first_message", "", offsetof(struct convai_agent, override_first_message), CONVAI_FOR_ELEVENLABS },
	{ "override_prompt", "", offsetof(struct convai_agent, override_prompt), CONVAI_FOR_ELEVENLABS },
	{ "override_language", "", offsetof(struct convai_agent, override_language), CONVAI_FOR_ELEVENLABS },
	{ "override_voice_id", "", offsetof(struct convai_agent, override_voice_id), CONVAI_FOR_ELEVENLABS },
	{ "max_call_duration_message", "", offsetof(struct convai_agent, max_call_duration_message), CONVAI_FOR_ALL },
	{ "transfer_context", "", offsetof(struct convai_agent, transfer_context), CONVAI_FOR_ALL },
	{ "transfer_tool", "transfer_call", offsetof(struct convai_agent, transfer_tool), CONVAI_FOR_ALL },
	{ "dtmf_tool", "play_keypad_touch_tone", offsetof(struct convai_agent, dtmf_tool), CONVAI_FOR_ALL },
	{ "dtmf_to_agent", "user_message", offsetof(struct convai_agent, dtmf_to_agent), CONVAI_FOR_ALL },
	{ "while_connecting", "none", offsetof(struct convai_agent, while_connecting), CONVAI_FOR_ALL },
	{ "websocket_url", "", offsetof(struct convai_agent, websocket_url), CONVAI_FOR_WEBSOCKET },
	{ "websocket_auth_token", "", offsetof(struct convai_agent, websocket_auth_token), CONVAI_FOR_WEBSOCKET },
	{ "voice", "", offsetof(struct convai_agent, voice), CONVAI_FOR_WEBSOCKET },
	{ "system_prompt", "", offsetof(struct convai_agent, system_prompt), CONVAI_FOR_WEBSOCKET },
	{ "language", "", offsetof(struct convai_agent, language), CONVAI_FOR_WEBSOCKET | CONVAI_FOR_OPENAI },
	{ "initial_message", "", offsetof(struct convai_agent, initial_message), CONVAI_FOR_WEBSOCKET | CONVAI_FOR_OPENAI },
	{ "openai_api_key", "", offsetof(struct convai_agent, openai_api_key), CONVAI_FOR_OPENAI },
	{ "openai_api_key_file", "", offsetof(struct convai_agent, openai_api_key_file), CONVAI_FOR_OPENAI },
	{ "openai_api_key_env", "", offsetof(struct convai_agent, openai_api_key_env), CONVAI_FOR_OPENAI },
	{ "openai_model", "gpt-realtime", offsetof(struct convai_agent, openai_model), CONVAI_FOR_OPENAI },
	{ "openai_voice", "marin", offsetof(struct convai_agent, openai_voice), CONVAI_FOR_OPENAI },
	{ "instructions", "", offsetof(struct convai_agent, instructions), CONVAI_FOR_OPENAI },
	{ "openai_url", CONVAI_DEFAULT_OPENAI_URL, offsetof(struct convai_agent, openai_url), CONVAI_FOR_OPENAI },
};

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

/*! \internal \brief Whether \a url starts with \a scheme and "://". */
static int convai_url_has_scheme(const char *url, const char *scheme)
{
	size_t len = strlen(scheme);

	return !strncasecmp(url, scheme, len) && !strncmp(url + len, "://", 3);
}

/*!
 * \internal \brief A \a secure URL (https, wss), or a \a plain one (http, ws) to this machine:
 * a local test server, a local proxy. Keys and audio never cross the network in clear text.
 */
static int convai_endpoint_is_private(const char *url, const char *secure, const char *plain)
{
	const char *host;
	size_t len;

	if (convai_url_has_scheme(url, secure)) {
		return 1;
	}
	if (!convai_url_has_scheme(url, plain)) {
		return 0;
	}
	host = url + strlen(plain) + 3;
	len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/?#");
	return (len == 9 && !strncasecmp(host, "localhost", 9)) || (len == 5 && !strncmp(host, "[::1]", 5))
		|| (len >= 7 && !strncmp(host, "127.", 4) && strspn(host, "0123456789.") == len);
}

/*! \internal \brief The call-control options whose values are words: one of those known. */
static int convai_check_call_control(const struct convai_agent *agent)
{
	static const char *const dtmf_modes[] = { "user_message", "contextual_update", "no" };
	const char *connecting = agent->while_connecting;
	size_t i;
	int res = 0;

	for (i = 0; i < ARRAY_LEN(dtmf_modes) && strcmp(agent->dtmf_to_agent, dtmf_modes[i]); i++) {
	}
	if (i == ARRAY_LEN(dtmf_modes)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] dtmf_to_agent = '%s' is not user_message, contextual_update "
			"or no\n", agent->name, agent->dtmf_to_agent);
		res = -1;
	}
	if (strcmp(connecting, "none") && strcmp(connecting, "ring") && strcmp(connecting, "moh")
		&& (strncmp(connecting, "moh:", 4) || ast_strlen_zero(connecting + 4))) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] while_connecting = '%s' is not none, ring, moh or "
			"moh:<class>\n", agent->name, connecting);
		res = -1;
	}
	if (ast_strlen_zero(agent->transfer_tool) || ast_strlen_zero(agent->dtmf_tool)) {
		ast_log(LOG_ERROR, "elevenlabs.conf: [%s] transfer_tool and dtmf_tool need a tool name\n", agent->name);
		res = -1;
	}
	return res;
}

/*! \internal \brief Options set for another provider are ignored: say which. */
static void convai_warn_ignored(const struct convai_agent *agent)
{
	const char *provider = convai_provider_name(agent->provider);
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_agent_strings); i++) {
		const struct convai_string_option *option = &convai_agent_strings[i];

		if (!(option->providers & CONVAI_FOR(agent->provider))
			&& strcmp(CONVAI_FIELD(agent, option->offset), option->default_value)) {
			ast_log(LOG_WARNING, "elevenlabs.conf: [%s] %s is ignored with provider = %s\n", agent->name,
				option->name, provider);
		}
	}
	if (agent->allowed_overrides && agent->provider != CONVAI_PROVIDER_ELEVENLABS) {
		ast_log(LOG_WARNING, "elevenlabs.conf: [%s] allow_overrides is ignored with provider = %s\n",
			agent->name, provider);
	}
}

/*!
 * \internal \brief What the agent's provider needs. Only its own key is resolved: a key file
 * of another provider's, ignored, cannot fail the configuration.
 */
static int convai_check_provider(struct convai_agent *agent)
{
	int res = 0;

	convai_warn_ignored(agent);
	switch (agent->provider) {
	case CONVAI_PROVIDER_ELEVENLABS:
		if (ast_strlen_zero(agent->agent_id)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] is missing the required key elevenlabs_agent_id\n",
				agent->name);
			res = -1;
		}
		if (!convai_endpoint_is_private(agent->signed_url_endpoint, "https", "http")) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] elevenlabs_get_signed_url_endpoint must be an https:// URL "
				"(http:// only to this machine: the API key would cross the network in clear text)\n",
				agent->name);
			res = -1;
		}
		if (convai_resolve_key(agent, &convai_elevenlabs_key, 0)) {
			res = -1;
		}
		convai_warn_unsent_overrides(agent);
		break;
	case CONVAI_PROVIDER_WEBSOCKET:
		if (ast_strlen_zero(agent->websocket_url)) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] provider = websocket needs websocket_url\n", agent->name);
			res = -1;
		} else if (!convai_endpoint_is_private(agent->websocket_url, "wss", "ws")) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] websocket_url must be a wss:// URL (ws:// only to this "
				"machine: the token and the call's audio would cross the network in clear text)\n", agent->name);
			res = -1;
		}
		break;
	case CONVAI_PROVIDER_OPENAI_REALTIME:
		if (!convai_endpoint_is_private(agent->openai_url, "wss", "ws")) {
			ast_log(LOG_ERROR, "elevenlabs.conf: [%s] openai_url must be a wss:// URL (ws:// only to this "
				"machine: the API key and the call's audio would cross the network in clear text)\n", agent->name);
			res = -1;
		}
		if (convai_resolve_key(agent, &convai_openai_key, 1)) {
			res = -1;
		}
		break;
	}
	return res;
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
		if (convai_check_provider(agent)) {
			res = -1;
		}
		if (convai_check_call_control(agent)) {
			res = -1;
		}
	}
	ao2_iterator_destroy(&it);
	return res;
}

/*! \internal \brief The ranged options of \a types, each with its default. */
static void convai_register_ranges(struct aco_type **types, const struct convai_range *ranges, size_t count,
	aco_option_handler handler)
{
	size_t i;

	for (i = 0; i < count; i++) {
		aco_option_register_custom(&convai_cfg_info, ranges[i].name, ACO_EXACT, types,
			ranges[i].default_value, handler, 0);
	}
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
	convai_register_ranges(convai_general_types, convai_general_ranges, ARRAY_LEN(convai_general_ranges),
		convai_general_range_handler);

	for (i = 0; i < ARRAY_LEN(convai_agent_strings); i++) {
		/* What STRFLDSET() gives, for a field known by its offset. */
		aco_option_register(&convai_cfg_info, convai_agent_strings[i].name, ACO_EXACT, convai_agent_types,
			convai_agent_strings[i].default_value, OPT_STRINGFIELD_T, 0, convai_agent_strings[i].offset,
			offsetof(struct convai_agent, __field_mgr_pool), offsetof(struct convai_agent, __field_mgr));
	}
	aco_option_register(&convai_cfg_info, "elevenlabs_send_caller_number", ACO_EXACT, convai_agent_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_agent, send_caller_number));
	aco_option_register(&convai_cfg_info, "debug", ACO_EXACT, convai_agent_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_agent, debug));
	aco_option_register_custom(&convai_cfg_info, "allow_overrides", ACO_EXACT, convai_agent_types,
		"", convai_allow_overrides_handler, 0);
	aco_option_register_custom(&convai_cfg_info, "dynamic_variable", ACO_EXACT, convai_agent_types,
		NULL, convai_dynamic_variable_handler, 0);
	aco_option_register_custom(&convai_cfg_info, "client_tool", ACO_EXACT, convai_agent_types,
		NULL, convai_client_tool_handler, 0);
	aco_option_register(&convai_cfg_info, "client_tools_via_ami", ACO_EXACT, convai_agent_types,
		"no", OPT_BOOL_T, 1, FLDSET(struct convai_agent, client_tools_via_ami));
	aco_option_register_custom(&convai_cfg_info, "provider", ACO_EXACT, convai_agent_types,
		"elevenlabs", convai_provider_handler, 0);
	aco_option_register(&convai_cfg_info, "vad_enabled", ACO_EXACT, convai_agent_types,
		"yes", OPT_BOOL_T, 1, FLDSET(struct convai_agent, vad_enabled));
	aco_option_register_custom(&convai_cfg_info, "vad_threshold", ACO_EXACT, convai_agent_types,
		"0.5", convai_vad_threshold_handler, 0);
	convai_register_ranges(convai_agent_types, convai_agent_ranges, ARRAY_LEN(convai_agent_ranges),
		convai_agent_range_handler);
	return 0;
}

/*! \internal \brief Parse elevenlabs.conf; on error the previous config stays. */
static int convai_load_config(int reload)
{
	RAII_VAR(struct convai_config *, cfg, NULL, ao2_cleanup);

	/*
	 * Always read the file (0: never "unchanged"): a rotated key file or key
	 * variable must be picked up by a reload even when elevenlabs.conf is the same.
	 */
	switch (aco_process_config(&convai_cfg_info, 0)) {
	case ACO_PROCESS_OK:
		ast_verb(3, "elevenlabs.conf loaded\n");
		/* The file's [general] debug wins over "elevenlabs debug" at each (re)load. */
		cfg = ao2_global_obj_ref(convai_globals);
		convai_debug_all = cfg && cfg->general->debug;
		return 0;
	case ACO_PROCESS_UNCHANGED:
		return 0;
	case ACO_PROCESS_ERROR:
		break;
	}
	if (reload) {
		ast_log(LOG_ERROR, "elevenlabs.conf has errors (see above); keeping the previous configuration\n");
	} else {
		ast_log(LOG_ERROR, "elevenlabs.conf has errors (see above); no agent is available until it is fixed "
			"and 'elevenlabs reload' is run\n");
	}
	return -1;
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

struct convai_usage *convai_usage_acquire(const struct convai_agent *agent, char *reason, size_t len)
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

void convai_usage_release(struct convai_usage *usage)
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

int convai_usage_calls(const char *name)
{
	RAII_VAR(struct convai_usage *, usage, ao2_find(convai_usage, name, OBJ_SEARCH_KEY), ao2_cleanup);

	return usage ? usage->calls : 0;
}

void convai_usage_metrics(struct ast_str **out)
{
	struct ao2_iterator it;
	struct convai_usage *usage;

	ao2_lock(convai_usage);
	it = ao2_iterator_init(convai_usage, AO2_ITERATOR_DONTLOCK);
	for (; (usage = ao2_iterator_next(&it)); ao2_ref(usage, -1)) {
		ast_str_append(out, 0, "asterisk_elevenlabs_calls_active{agent=\"%s\"} %d\n", usage->name, usage->calls);
	}
	ao2_iterator_destroy(&it);
	ao2_unlock(convai_usage);
}

/* Debug switches: CLI threads set them, PBX threads read them at call start. */

int convai_agent_debug(const struct convai_agent *agent)
{
	RAII_VAR(char *, name, NULL, ao2_cleanup);

	name = convai_debug_agents ? ao2_find(convai_debug_agents, agent->name, OBJ_SEARCH_KEY) : NULL;
	return convai_debug_all || agent->debug || name;
}

void convai_set_debug(const struct convai_agent *agent, int on)
{
	if (!agent) {
		convai_debug_all = on;
	} else if (on) {
		ast_str_container_add(convai_debug_agents, agent->name);
	} else {
		ast_str_container_remove(convai_debug_agents, agent->name);
	}
}

int convai_debug_everywhere(void)
{
	return convai_debug_all;
}

const char *convai_provider_name(enum convai_provider provider)
{
	return provider < ARRAY_LEN(convai_provider_names) ? convai_provider_names[provider] : "unknown";
}

const char *convai_agent_secret(const struct convai_agent *agent)
{
	switch (agent->provider) {
	case CONVAI_PROVIDER_WEBSOCKET:
		return agent->websocket_auth_token;
	case CONVAI_PROVIDER_OPENAI_REALTIME:
		return agent->openai_key;
	case CONVAI_PROVIDER_ELEVENLABS:
		break;
	}
	return agent->key;
}

/*! \internal \brief Where the key of \a option came from; \a none when there is no key. */
static const char *convai_key_option_source(const struct convai_agent *agent, const struct convai_key_option *option,
	const char *none)
{
	if (!ast_strlen_zero(CONVAI_FIELD(agent, option->file))) {
		return "file";
	} else if (!ast_strlen_zero(CONVAI_FIELD(agent, option->env))) {
		return "environment";
	}
	return ast_strlen_zero(CONVAI_FIELD(agent, option->resolved)) ? none : "elevenlabs.conf";
}

const char *convai_key_source(const struct convai_agent *agent)
{
	switch (agent->provider) {
	case CONVAI_PROVIDER_WEBSOCKET:
		return ast_strlen_zero(agent->websocket_auth_token) ? "none (no token sent)" : "elevenlabs.conf";
	case CONVAI_PROVIDER_OPENAI_REALTIME:
		return convai_key_option_source(agent, &convai_openai_key, "none");
	case CONVAI_PROVIDER_ELEVENLABS:
		break;
	}
	return convai_key_option_source(agent, &convai_elevenlabs_key, "none (public agent)");
}

/* Per-call settings: the channel thread, before Python sees the call. */

/*! \internal \brief The overrides this call sends: per-call variable, else the agent's value. */
static struct ast_variable *convai_call_overrides(struct ast_channel *chan, const struct convai_agent *agent,
	struct ast_variable **head, struct ast_variable *tail, struct ast_variable *channel_values)
{
	char name[64];
	size_t i;

	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		const struct convai_override_field *field = &convai_override_fields[i];
		const char *value = ast_variable_find_in_list(channel_values, field->variable);

		if (!(agent->allowed_overrides & field->flag)) {
			if (!ast_strlen_zero(value)) {
				ast_log(LOG_WARNING, "%s: %s is set but agent '%s' does not allow the %s override "
					"(allow_overrides); not sent\n", ast_channel_name(chan), field->variable,
					agent->name, field->name);
			}
			continue;
		}
		if (ast_strlen_zero(value)) {
			value = CONVAI_FIELD(agent, field->offset);
		}
		if (!ast_strlen_zero(value)) {
			snprintf(name, sizeof(name), "override:%s", field->name);
			tail = convai_setting(head, tail, name, value);
		}
	}
	return tail;
}

/*! \internal \brief What the channel holds now: caller id, override and ELEVENLABS_VAR_ variables. */
static struct ast_variable *convai_channel_values(struct ast_channel *chan)
{
	struct ast_variable *values = NULL;
	struct ast_var_t *chanvar;
	size_t i;

	if (!chan) {
		return NULL;
	}

	/* Copied under the lock; nothing else runs with it held. */
	ast_channel_lock(chan);
	convai_setting(&values, NULL, "caller_number", S_COR(ast_channel_caller(chan)->id.number.valid,
		ast_channel_caller(chan)->id.number.str, ""));
	convai_setting(&values, NULL, "caller_name", S_COR(ast_channel_caller(chan)->id.name.valid,
		ast_channel_caller(chan)->id.name.str, ""));
	for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
		convai_setting(&values, NULL, convai_override_fields[i].variable,
			pbx_builtin_getvar_helper(chan, convai_override_fields[i].variable));
	}
	AST_LIST_TRAVERSE(ast_channel_varshead(chan), chanvar, entries) {
		if (!strncmp(ast_var_name(chanvar), "ELEVENLABS_VAR_", 15) && ast_var_name(chanvar)[15]) {
			convai_setting(&values, NULL, ast_var_name(chanvar), ast_var_value(chanvar));
		}
	}
	ast_channel_unlock(chan);
	return values;
}

/*! \internal \brief Append "name = number". */
static struct ast_variable *convai_setting_uint(struct ast_variable **head, struct ast_variable *tail,
	const char *name, unsigned int value)
{
	char number[16];

	snprintf(number, sizeof(number), "%u", value);
	return convai_setting(head, tail, name, number);
}

/*!
 * \internal \brief The keys of the websocket and openai_realtime providers, sent for every
 * provider ("" when unset) so that Python reads them all the same way.
 */
static struct ast_variable *convai_provider_settings(struct ast_variable **head, struct ast_variable *tail,
	const struct convai_agent *agent)
{
	char threshold[32];

	tail = convai_setting(head, tail, "websocket_url", agent->websocket_url);
	tail = convai_setting(head, tail, "websocket_auth_token", agent->websocket_auth_token);
	tail = convai_setting(head, tail, "voice", agent->voice);
	tail = convai_setting(head, tail, "language", agent->language);
	tail = convai_setting(head, tail, "system_prompt", agent->system_prompt);
	tail = convai_setting(head, tail, "initial_message", agent->initial_message);
	tail = convai_setting(head, tail, "vad_enabled", agent->vad_enabled ? "1" : "0");
	snprintf(threshold, sizeof(threshold), "%g", agent->vad_threshold);
	tail = convai_setting(head, tail, "vad_threshold", threshold);
	tail = convai_setting_uint(head, tail, "vad_silence_duration_ms", agent->vad_silence_duration_ms);
	tail = convai_setting(head, tail, "openai_api_key", agent->openai_key);
	tail = convai_setting(head, tail, "openai_model", agent->openai_model);
	tail = convai_setting(head, tail, "openai_voice", agent->openai_voice);
	tail = convai_setting(head, tail, "instructions", agent->instructions);
	return convai_setting(head, tail, "openai_url", agent->openai_url);
}

/*!
 * \internal \brief The call's settings as a list (see config.py for the keys). With no
 * channel (elevenlabs check agent), those of a call with no caller details.
 */
static struct ast_variable *convai_settings_list(struct ast_channel *chan, const struct convai_agent *agent)
{
	struct ast_variable *head = NULL, *tail = NULL, *channel_values = convai_channel_values(chan), *var;
	struct ast_str *value = ast_str_create(256);
	char name[128];
	size_t i;

	tail = convai_setting(&head, tail, "channel", chan ? ast_channel_name(chan) : "CLI");
	tail = convai_setting(&head, tail, "uniqueid", chan ? ast_channel_uniqueid(chan) : "");
	tail = convai_setting(&head, tail, "agent", agent->name);
	tail = convai_setting(&head, tail, "provider", convai_provider_name(agent->provider));
	tail = convai_setting(&head, tail, "agent_id", agent->agent_id);
	tail = convai_setting(&head, tail, "api_key", agent->key);
	tail = convai_setting(&head, tail, "signed_url_endpoint", agent->signed_url_endpoint);
	tail = convai_provider_settings(&head, tail, agent);
	tail = convai_setting_uint(&head, tail, "buffer_ms", agent->buffer_ms);
	tail = convai_setting_uint(&head, tail, "max_connection_attempts", agent->max_connection_attempts);
	tail = convai_setting_uint(&head, tail, "connection_timeout_seconds", agent->connection_timeout_seconds);
	tail = convai_setting_uint(&head, tail, "max_call_duration_seconds", agent->max_call_duration_seconds);
	tail = convai_setting(&head, tail, "max_call_duration_message", agent->max_call_duration_message);
	tail = convai_setting(&head, tail, "debug", convai_agent_debug(agent) ? "1" : "0");
	tail = convai_setting(&head, tail, "transfer_context", agent->transfer_context);
	tail = convai_setting(&head, tail, "transfer_tool", agent->transfer_tool);
	tail = convai_setting(&head, tail, "dtmf_tool", agent->dtmf_tool);
	tail = convai_setting(&head, tail, "dtmf_to_agent", agent->dtmf_to_agent);
	tail = convai_setting_uint(&head, tail, "dtmf_timeout_ms", agent->dtmf_timeout_ms);
	tail = convai_setting(&head, tail, "client_tools_via_ami", agent->client_tools_via_ami ? "1" : "0");
	tail = convai_setting_uint(&head, tail, "client_tool_timeout_seconds", agent->client_tool_timeout_seconds);
	for (var = agent->client_tools; var; var = var->next) {
		snprintf(name, sizeof(name), "tool:%s", var->name);
		tail = convai_setting(&head, tail, name, var->value);
	}
	if (agent->send_caller_number) {
		tail = convai_setting(&head, tail, "user_id", ast_variable_find_in_list(channel_values, "caller_number"));
	}

	/* Dynamic variables: always offered, then the agent's, then ELEVENLABS_VAR_*; later ones win. */
	tail = convai_setting(&head, tail, "var:caller_number", ast_variable_find_in_list(channel_values, "caller_number"));
	tail = convai_setting(&head, tail, "var:caller_name", ast_variable_find_in_list(channel_values, "caller_name"));
	tail = convai_setting(&head, tail, "var:called_number", chan ? ast_channel_exten(chan) : "");
	tail = convai_setting(&head, tail, "var:call_uniqueid", chan ? ast_channel_uniqueid(chan) : "");
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
	/* Overrides are ElevenLabs' own: other providers ignore them (the load warned). */
	if (agent->provider == CONVAI_PROVIDER_ELEVENLABS) {
		for (i = 0; i < ARRAY_LEN(convai_override_fields); i++) {
			if (agent->allowed_overrides & convai_override_fields[i].flag) {
				snprintf(name, sizeof(name), "allowed:%s", convai_override_fields[i].name);
				tail = convai_setting(&head, tail, name, "1");
			}
		}
		convai_call_overrides(chan, agent, &head, tail, channel_values);
	}

	ast_variables_destroy(channel_values);
	ast_free(value);
	return head;
}

const char **convai_call_settings(struct ast_channel *chan, const struct convai_agent *agent)
{
	struct ast_variable *settings = convai_settings_list(chan, agent);
	const struct ast_variable *var;
	const char **pairs;
	char *text;
	size_t n = 0, bytes = 0;

	/* One block: the pointers, then the strings they point to. */
	for (var = settings; var; var = var->next) {
		n++;
		bytes += strlen(var->name) + strlen(var->value) + 2;
	}
	pairs = ast_malloc((2 * n + 1) * sizeof(*pairs) + bytes);
	if (pairs) {
		text = (char *) (pairs + 2 * n + 1);
		n = 0;
		for (var = settings; var; var = var->next) {
			pairs[n++] = strcpy(text, var->name); /* Safe: sized above */
			text += strlen(text) + 1;
			pairs[n++] = strcpy(text, var->value); /* Safe: sized above */
			text += strlen(text) + 1;
		}
		pairs[n] = NULL;
	}
	ast_variables_destroy(settings);
	return pairs;
}

void convai_settings_free(const char **pairs)
{
	ast_free(pairs);
}

/* Lifecycle: load and unload threads. */

struct convai_config *convai_config_get(void)
{
	return ao2_global_obj_ref(convai_globals);
}

struct convai_agent *convai_agent_get(const char *name)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);

	return cfg ? convai_agent_find(cfg->agents, name) : NULL;
}

const char *convai_venv_path(void)
{
	RAII_VAR(struct convai_config *, cfg, ao2_global_obj_ref(convai_globals), ao2_cleanup);
	static char venv[PATH_MAX];
	const char *configured = cfg ? cfg->general->python_venv : CONVAI_DEFAULT_VENV;

	/* Empty: the system Python, whose prefix holds bin/python3 as a venv does. */
	ast_copy_string(venv, S_OR(configured, CONVAI_PYTHON_PREFIX), sizeof(venv));
	return venv;
}

int convai_config_reload(void)
{
	return convai_load_config(1);
}

int convai_config_init(void)
{
	convai_usage = ao2_container_alloc_hash(AO2_ALLOC_OPT_LOCK_MUTEX, 0, 31, convai_usage_hash, NULL,
		convai_usage_cmp);
	convai_debug_agents = ast_str_container_alloc(7);
	if (!convai_usage || !convai_debug_agents) {
		return -1;
	}
	if (convai_register_options()) {
		ast_log(LOG_ERROR, "Cannot register elevenlabs.conf options (is the module's XML documentation installed?)\n");
		return -1;
	}
	/* A broken file must not stop Asterisk: load with no agents and say so. */
	convai_load_config(0);
	return 0;
}

void convai_config_release(void)
{
	aco_info_destroy(&convai_cfg_info);
	ao2_global_obj_release(convai_globals);
	ao2_cleanup(convai_usage);
	convai_usage = NULL;
	ao2_cleanup(convai_debug_agents);
	convai_debug_agents = NULL;
}
