/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief The "elevenlabs" CLI commands, and metrics for them and res_prometheus.
 *
 * Threads: CLI threads and res_prometheus' scrape thread, never with a
 * channel locked. What Python knows (runtime, live calls, its counters)
 * comes through embed.h, which takes the GIL.
 */

#include "asterisk.h"

#include <dlfcn.h>

#include "asterisk/astobj2.h"
#include "asterisk/cli.h"
#include "asterisk/config.h"
#include "asterisk/module.h"
#include "asterisk/res_prometheus.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

#include "convai.h"
#include "embed.h"

/*! Calls by how they ended, indexed by enum convai_status. */
static int convai_outcomes[CONVAI_STATUS_COUNT];

void convai_count_outcome(enum convai_status status)
{
	if (status >= 0 && status < CONVAI_STATUS_COUNT) {
		ast_atomic_fetchadd_int(&convai_outcomes[status], 1);
	}
}

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
	/* A short key shown as 7 characters would be half shown: show none of it. */
	if (n < 24) {
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
			"       List the agents of elevenlabs.conf and their providers (API keys and\n"
			"       tokens redacted).\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != e->args) {
		return CLI_SHOWUSAGE;
	}
	cfg = convai_config_get();
	if (!cfg) {
		ast_cli(a->fd, "No configuration loaded (see the log for elevenlabs.conf errors).\n");
		return CLI_SUCCESS;
	}
	/* Provider: 15 wide, the length of "openai_realtime". */
	ast_cli(a->fd, "%-20s %-15s %-32s %-12s %-9s %-8s %-7s %-5s\n",
		"Agent", "Provider", "Agent ID", "API key", "Buffer", "Attempts", "Timeout", "Debug");
	it = ao2_iterator_init(cfg->agents, 0);
	for (; (agent = ao2_iterator_next(&it)); ao2_ref(agent, -1)) {
		/* The redacted key has a 3-byte ellipsis: pad by hand to keep the columns. */
		const char *shown = convai_redact(convai_agent_secret(agent), key, sizeof(key));

		ast_cli(a->fd, "%-20s %-15s %-32s %s%*s %6u ms %-8u %5u s %-5s\n",
			agent->name, convai_provider_name(agent->provider),
			agent->provider == CONVAI_PROVIDER_ELEVENLABS ? agent->agent_id : "-",
			shown, 12 - convai_utf8_len(shown), "",
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
	RAII_VAR(struct convai_config *, cfg, convai_config_get(), ao2_cleanup);
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

/*! \internal \brief The keys of the agent's provider, its secret redacted as in "show agents". */
static void convai_cli_show_provider(int fd, const struct convai_agent *agent)
{
	char key[32];
	const char *secret = convai_redact(convai_agent_secret(agent), key, sizeof(key));

	switch (agent->provider) {
	case CONVAI_PROVIDER_ELEVENLABS:
		ast_cli(fd, "Agent ID:             %s\n", agent->agent_id);
		ast_cli(fd, "API key:              %s (from %s)\n", secret, convai_key_source(agent));
		ast_cli(fd, "Signed URL endpoint:  %s\n", agent->signed_url_endpoint);
		return;
	case CONVAI_PROVIDER_WEBSOCKET:
		ast_cli(fd, "WebSocket URL:        %s\n", agent->websocket_url);
		ast_cli(fd, "Auth token:           %s (from %s)\n", secret, convai_key_source(agent));
		ast_cli(fd, "Voice:                %s\n", S_OR(agent->voice, "(server default)"));
		ast_cli(fd, "System prompt:        %s\n", S_OR(agent->system_prompt, "(none)"));
		break;
	case CONVAI_PROVIDER_OPENAI_REALTIME:
		ast_cli(fd, "OpenAI URL:           %s\n", agent->openai_url);
		ast_cli(fd, "API key:              %s (from %s)\n", secret, convai_key_source(agent));
		ast_cli(fd, "Model:                %s\n", agent->openai_model);
		ast_cli(fd, "Voice:                %s\n", agent->openai_voice);
		ast_cli(fd, "Instructions:         %s\n", S_OR(agent->instructions, "(none)"));
		break;
	}
	ast_cli(fd, "Language:             %s\n", S_OR(agent->language, "(not set)"));
	ast_cli(fd, "Initial message:      %s\n", S_OR(agent->initial_message, "(none)"));
	ast_cli(fd, "Voice activity:       %s, threshold %g, %u ms of silence ends a turn\n",
		agent->vad_enabled ? "on" : "off", agent->vad_threshold, agent->vad_silence_duration_ms);
}

static char *convai_cli_show_agent(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	RAII_VAR(struct convai_agent *, agent, NULL, ao2_cleanup);
	struct ast_variable *var;
	size_t i;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs show agent";
		e->usage = "Usage: elevenlabs show agent <name>\n"
			"       Show one agent's provider, its settings (API keys and tokens redacted)\n"
			"       and its live calls.\n";
		return NULL;
	case CLI_GENERATE:
		return a->pos == 3 ? convai_complete_agent(a->word) : NULL;
	}
	if (a->argc != 4) {
		return CLI_SHOWUSAGE;
	}
	agent = convai_agent_get(a->argv[3]);
	if (!agent) {
		ast_cli(a->fd, "No agent '%s' in elevenlabs.conf\n", a->argv[3]);
		return CLI_FAILURE;
	}
	ast_cli(a->fd, "Agent:                %s\n", agent->name);
	ast_cli(a->fd, "Provider:             %s\n", convai_provider_name(agent->provider));
	convai_cli_show_provider(a->fd, agent);
	ast_cli(a->fd, "Caller audio chunks:  %u ms\n", agent->buffer_ms);
	ast_cli(a->fd, "Connection:           %u attempt(s), %u s each\n", agent->max_connection_attempts,
		agent->connection_timeout_seconds);
	ast_cli(a->fd, "Send caller number:   %s\n", AST_CLI_YESNO(agent->send_caller_number));
	ast_cli(a->fd, "Max call duration:    %s%u\n", agent->max_call_duration_seconds ? "" : "none ",
		agent->max_call_duration_seconds);
	ast_cli(a->fd, "Max concurrent calls: %u (0: no limit)\n", agent->max_concurrent_calls);
	ast_cli(a->fd, "Live calls:           %d\n", convai_usage_calls(agent->name));
	ast_cli(a->fd, "Debug:                %s\n", AST_CLI_YESNO(convai_agent_debug(agent)));
	/* Overrides are ElevenLabs' own: other providers ignore them (see convai_settings_list()). */
	if (agent->provider == CONVAI_PROVIDER_ELEVENLABS) {
		ast_cli(a->fd, "Overrides allowed:   ");
		for (i = 0; i < convai_override_count; i++) {
			if (agent->allowed_overrides & convai_override_fields[i].flag) {
				const char *value = CONVAI_FIELD(agent, convai_override_fields[i].offset);

				ast_cli(a->fd, " %s%s%s%s", convai_override_fields[i].name, ast_strlen_zero(value) ? "" : " (\"",
					S_OR(value, ""), ast_strlen_zero(value) ? "" : "\")");
			}
		}
		ast_cli(a->fd, "%s\n", agent->allowed_overrides ? "" : " none");
	}
	ast_cli(a->fd, "Dynamic variables:    caller_number, caller_name, called_number, call_uniqueid, ELEVENLABS_VAR_*\n");
	for (var = agent->dynamic_variables; var; var = var->next) {
		/* ElevenLabs keeps secret__ variables out of its logs: so do we. */
		ast_cli(a->fd, "                      %s = %s\n", var->name,
			strncmp(var->name, "secret__", 8) ? var->value : "(secret, not shown)");
	}
	return CLI_SUCCESS;
}

/*! \internal \brief Metrics in Prometheus text format: the module's counters, then Python's. */
static void convai_metrics(struct ast_str **out)
{
	RAII_VAR(struct convai_config *, cfg, convai_config_get(), ao2_cleanup);
	char *python;
	size_t i;

	ast_str_append(out, 0, "# HELP asterisk_elevenlabs_calls_active Conversations in progress.\n"
		"# TYPE asterisk_elevenlabs_calls_active gauge\n");
	convai_usage_metrics(out);
	ast_str_append(out, 0, "# HELP asterisk_elevenlabs_calls_total Conversations by how they ended.\n"
		"# TYPE asterisk_elevenlabs_calls_total counter\n");
	for (i = 0; i < CONVAI_STATUS_COUNT; i++) {
		ast_str_append(out, 0, "asterisk_elevenlabs_calls_total{status=\"%s\"} %d\n", convai_status_name(i),
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
	const char *venv;
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
	venv = convai_venv_path();
	if (!strcmp(venv, CONVAI_PYTHON_PREFIX)) {
		/* python_venv is empty (the Debian package): no venv, the system Python. */
		ast_cli(a->fd, "Configured venv: none, the system Python (%s)\n", venv);
	} else {
		ast_cli(a->fd, "Configured venv: %s\n", venv);
	}
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

/*!
 * \internal \brief "elevenlabs check agent <name>" and "elevenlabs check agents": each agent's
 * settings at ElevenLabs against elevenlabs.conf. CLI thread: waits for Python (no lock held)
 * up to the agents' connection timeout.
 */
static char *convai_cli_check(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	static const char * const choices[] = { "agent", "agents", NULL };
	RAII_VAR(struct convai_config *, cfg, NULL, ao2_cleanup);
	struct ao2_iterator it;
	struct convai_agent *agent;
	const char **settings[64] = { NULL };
	size_t n = 0, i;
	char *text;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs check";
		e->usage = "Usage: elevenlabs check {agent <name>|agents}\n"
			"       Read the agent from the ElevenLabs API with its key and check what a call\n"
			"       needs: audio formats, authentication against the key, the overrides in\n"
			"       allow_overrides, the client tools, the client events; then fetch a signed\n"
			"       URL. Waits at most the agent's connection_timeout_seconds. Agents of\n"
			"       other providers (websocket, openai_realtime) are not checked.\n";
		return NULL;
	case CLI_GENERATE:
		if (a->pos == 2) {
			return ast_cli_complete(a->word, choices, a->n);
		}
		return a->pos == 3 && !strcasecmp(a->argv[2], "agent") ? convai_complete_agent(a->word) : NULL;
	}
	if (!((a->argc == 4 && !strcasecmp(a->argv[2], "agent")) || (a->argc == 3 && !strcasecmp(a->argv[2], "agents")))) {
		return CLI_SHOWUSAGE;
	}
	if (!convai_embed_running()) {
		ast_cli(a->fd, "The Python runtime is not running (see 'elevenlabs show runtime').\n");
		return CLI_FAILURE;
	}
	cfg = convai_config_get();
	if (!cfg) {
		ast_cli(a->fd, "No configuration loaded (see the log for elevenlabs.conf errors).\n");
		return CLI_FAILURE;
	}
	it = ao2_iterator_init(cfg->agents, 0);
	for (; (agent = ao2_iterator_next(&it)); ao2_ref(agent, -1)) {
		if (n == ARRAY_LEN(settings) - 1 || (a->argc == 4 && strcasecmp(agent->name, a->argv[3]))) {
			continue;
		}
		settings[n] = convai_call_settings(NULL, agent);
		n += settings[n] != NULL;
	}
	ao2_iterator_destroy(&it);
	if (!n) {
		ast_cli(a->fd, a->argc == 4 ? "No agent '%s' in elevenlabs.conf\n" : "No agents in elevenlabs.conf\n",
			a->argv[3]);
		return CLI_FAILURE;
	}
	text = convai_embed_check_agents((const char *const *const *) settings);
	ast_cli(a->fd, "%s", S_OR(text, "The check failed (see the log).\n"));
	ast_std_free(text);
	for (i = 0; i < n; i++) {
		convai_settings_free(settings[i]);
	}
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
		convai_set_debug(NULL, on);
		convai_embed_set_debug(on);
		ast_cli(a->fd, "ElevenLabs debug logging %s\n", on ? "enabled" : "disabled");
		return CLI_SUCCESS;
	}
	agent = convai_agent_get(a->argv[3]);
	if (!agent) {
		ast_cli(a->fd, "No agent '%s' in elevenlabs.conf\n", a->argv[3]);
		return CLI_FAILURE;
	}
	convai_set_debug(agent, on);
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

/* res_prometheus is optional: found at run time, no hard dependency. */
void convai_prometheus_attach(void)
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
	/*
	 * Through the loader, as "module reload" does: its reload lock keeps two
	 * reloads (two consoles, or this and "module reload") from racing inside
	 * ACO's single pending configuration.
	 */
	switch (ast_module_reload(AST_MODULE)) {
	case AST_MODULE_RELOAD_SUCCESS:
		ast_cli(a->fd, "elevenlabs.conf reloaded\n");
		return CLI_SUCCESS;
	case AST_MODULE_RELOAD_QUEUED:
		ast_cli(a->fd, "Asterisk is still starting; the reload will run once it has\n");
		return CLI_SUCCESS;
	case AST_MODULE_RELOAD_IN_PROGRESS:
		ast_cli(a->fd, "Another reload is in progress; try again when it has finished\n");
		return CLI_FAILURE;
	case AST_MODULE_RELOAD_ERROR:
		ast_cli(a->fd, "elevenlabs.conf has errors; kept the previous configuration\n");
		return CLI_FAILURE;
	default:
		ast_cli(a->fd, "The module could not be reloaded (see the log)\n");
		return CLI_FAILURE;
	}
}

static char *convai_cli_send(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	static const char *const kinds[] = { "context", "message", NULL };
	RAII_VAR(struct ast_str *, text, NULL, ast_free);
	char why[256];
	int i;

	switch (cmd) {
	case CLI_INIT:
		e->command = "elevenlabs send";
		e->usage = "Usage: elevenlabs send {context|message} <channel> <text>\n"
			"       Give the live conversation on <channel> context (contextual_update), or a\n"
			"       message as if the caller had said it (user_message).\n";
		return NULL;
	case CLI_GENERATE:
		if (a->pos == 2) {
			return ast_cli_complete(a->word, kinds, a->n);
		}
		return a->pos == 3 ? ast_complete_channels(a->line, a->word, a->pos, a->n, 3) : NULL;
	}
	if (a->argc < 5 || (strcmp(a->argv[2], "context") && strcmp(a->argv[2], "message"))) {
		return CLI_SHOWUSAGE;
	}
	text = ast_str_create(256);
	for (i = 4; text && i < a->argc; i++) {
		ast_str_append(&text, 0, "%s%s", i > 4 ? " " : "", a->argv[i]);
	}
	if (!text) {
		return CLI_FAILURE;
	}
	if (convai_embed_send_text(a->argv[3], strcmp(a->argv[2], "context") ? "user_message" : "contextual_update",
			ast_str_buffer(text), why, sizeof(why))) {
		ast_cli(a->fd, "%s\n", why);
		return CLI_FAILURE;
	}
	ast_cli(a->fd, "Sent to the conversation on %s\n", a->argv[3]);
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
	AST_CLI_DEFINE(convai_cli_send, "Send text to a live ElevenLabs conversation"),
	AST_CLI_DEFINE(convai_cli_check, "Check ElevenLabs agents' settings against elevenlabs.conf"),
};

int convai_cli_register(void)
{
	/* No module, as for the application (see load_module()): forced unloads stay safe. */
	return __ast_cli_register_multiple(convai_cli, ARRAY_LEN(convai_cli), NULL);
}

void convai_cli_unregister(void)
{
	ast_cli_unregister_multiple(convai_cli, ARRAY_LEN(convai_cli));
	if (convai_prometheus_register) {
		convai_prometheus_unregister(&convai_prometheus);
		convai_prometheus_register = NULL;
	}
}
