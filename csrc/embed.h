/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief The embedded CPython interpreter, as seen from the Asterisk glue.
 *
 * Threading rule, once for the whole module: every function here may be
 * called from any Asterisk thread (load/unload, CLI, PBX channel threads) that
 * does NOT hold the GIL and does NOT hold a channel lock. Each function takes
 * the GIL itself and gives it back before returning. Taking the GIL can wait
 * for Python, so none of these may be called from a framehook or with any
 * channel locked. The audio path never comes here: it goes through rings.
 * Two exceptions take no GIL and say so: convai_embed_set_debug() and
 * convai_embed_metrics().
 */

#ifndef CONVAI_EMBED_H
#define CONVAI_EMBED_H

#include <stdint.h>

#include "convai_wire.h"

struct convai_ring;

/*! \brief Severity of a line that pyconvai logs through Asterisk's logger. */
enum convai_log_level {
	CONVAI_LOG_DEBUG,
	CONVAI_LOG_VERBOSE,
	CONVAI_LOG_NOTICE,
	CONVAI_LOG_WARNING,
	CONVAI_LOG_ERROR,
};

/*!
 * \brief Services the Asterisk glue offers pyconvai. Called from pyconvai's
 * threads with the GIL held: they must not block on Python nor lock a channel.
 */
struct convai_host {
	/*! Write one line to Asterisk's logger. */
	void (*log)(enum convai_log_level level, const char *message);
	/*! Raise an AMI event; \a body is "Header: value\r\n" lines. */
	void (*manager_event)(const char *event, const char *body);
};

/*! \brief What a call hands to Python; the rings are shared, the rest copied. */
struct convai_call_params {
	/*! NULL-terminated list of key, value pairs (settings of this call). */
	const char *const *settings;
	/*! Caller audio, framehook -> Python. */
	struct convai_ring *uplink;
	/*! Agent audio in 20 ms frames, Python -> channel thread. */
	struct convai_ring *downlink;
	/*! Control records, Python -> channel thread. */
	struct convai_ring *control;
	/*! struct convai_clock_record for every frame written or captured, channel thread -> Python. */
	struct convai_ring *clock;
	/*! eventfd written by Python after each control record; Python dups it. */
	int wake_fd;
};

/*!
 * \brief Start the interpreter and pyconvai's threads (once per process).
 * \param venv virtual environment holding pyconvai and its dependencies, or the
 *        system Python's prefix (CONVAI_PYTHON_PREFIX: pyconvai in its dist-packages)
 * \param libpython soname to promote to RTLD_GLOBAL so that C extensions resolve
 * \param host logging and AMI services; also receives this file's own errors
 * \retval 0 running
 * \retval -1 failed (logged); later calls report the runtime as unavailable
 *
 * pyconvai.runtime.start() is given CONVAI_WIRE_VERSION and refuses to run
 * with a module whose record layouts differ from its own (convai_wire.h).
 */
int convai_embed_start(const char *venv, const char *libpython, const struct convai_host *host);

/*! \brief Nonzero once convai_embed_start() succeeded. */
int convai_embed_running(void);

/*!
 * \brief Stop pyconvai's threads within \a timeout_ms. Called at shutdown.
 * The interpreter is not finalised: CPython cannot be re-initialised in one
 * process, and finalising under live foreign threads can hang.
 */
void convai_embed_stop(unsigned int timeout_ms);

/*!
 * \brief Turn pyconvai's debug logging on or off for every call.
 * Takes no GIL (a flag pyconvai reads within 100 ms): any thread, any lock held.
 */
void convai_embed_set_debug(int on);

/*!
 * \brief Describe the runtime for "elevenlabs show runtime".
 * \return text allocated with malloc (the caller frees it), or NULL
 */
char *convai_embed_describe(void);

/*!
 * \brief Describe live calls for "elevenlabs show calls".
 * \return text allocated with malloc (the caller frees it), or NULL
 */
char *convai_embed_describe_calls(void);

/*!
 * \brief "elevenlabs check agent(s)": each agent's checklist, read from the API.
 *
 * CLI thread, no lock held: blocks up to the longest connection timeout of the agents
 * (Python waits with the GIL released).
 * \param settings NULL-terminated array of convai_call_settings() arrays, one per agent
 * \return text allocated with malloc (the caller frees it), or NULL
 */
char *convai_embed_check_agents(const char *const *const *settings);

/*!
 * \brief pyconvai's counters in Prometheus text format, as pyconvai last published
 * them (whenever a call ends). Takes no GIL: safe under res_prometheus' scrape lock.
 * \return text allocated with malloc (the caller frees it), or NULL
 */
char *convai_embed_metrics(void);

/*!
 * \brief Deliver \a text to the live conversation on \a channel (AMI, CLI; any thread,
 * no channel lock): \a kind is "contextual_update" or "user_message".
 * \retval 0 handed to the conversation
 * \retval -1 not (\a why says why, e.g. no conversation on that channel)
 */
int convai_embed_send_text(const char *channel, const char *kind, const char *text, char *why, size_t len);

/*!
 * \brief Start the Python side of one call; it connects asynchronously.
 * \return an opaque handle (a new reference), or NULL (reason logged)
 */
void *convai_embed_call_start(const struct convai_call_params *params);

/*! \brief Tell Python the caller has gone; it closes the socket with 1000. */
void convai_embed_call_hangup(void *handle, const char *reason);

/*! \brief A dialplan client tool's answer (channel thread, no channel lock). */
void convai_embed_call_tool_result(void *handle, const char *tool_call_id, const char *result, int is_error);

/*!
 * \brief AMI ElevenLabsToolResult: answer a client tool waiting on the conversation named
 * by \a channel or \a conversation_id (either may be empty).
 * \retval 0 answered
 * \retval -1 not (\a why says why)
 */
int convai_embed_ami_tool_result(const char *channel, const char *conversation_id, const char *tool_call_id,
	const char *result, int is_error, char *why, size_t len);

/*! \brief Drop the handle from convai_embed_call_start(). */
void convai_embed_call_release(void *handle);

#endif /* CONVAI_EMBED_H */
