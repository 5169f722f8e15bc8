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
 */

#ifndef CONVAI_EMBED_H
#define CONVAI_EMBED_H

#include <stdint.h>

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

/*! \brief What a clock record times. */
enum convai_clock_kind {
	/*! An agent frame was written; position: its first byte in the downlink stream. */
	CONVAI_CLOCK_WRITTEN = 1,
	/*! Caller audio was captured; position: the uplink stream's end after it. */
	CONVAI_CLOCK_CAPTURED = 2,
};

/*!
 * \brief One timed audio event, channel thread -> Python through the clock ring,
 * so that Python can compute exact latencies (pyconvai/stats.py).
 */
struct convai_clock_record {
	uint64_t position;
	/*! CLOCK_MONOTONIC in nanoseconds. */
	uint64_t at_ns;
	/*! enum convai_clock_kind */
	uint32_t kind;
	uint32_t reserved;
};

/*!
 * \brief Control records, Python -> channel thread, through the control ring.
 *
 * Each record is a 4-byte header (type, 0, payload length as little-endian
 * uint16) and a payload of NUL-separated UTF-8 strings. pyconvai/runtime.py
 * mirrors these values.
 */
enum convai_control {
	/*! "input_format\0output_format": the agent's formats are known. */
	CONVAI_CONTROL_FORMATS = 1,
	/*! "status\0conversation_id\0reason": end the call now. */
	CONVAI_CONTROL_END = 2,
	/*! "conversation_id": the agent accepted the call. */
	CONVAI_CONTROL_STARTED = 3,
};

/*! \brief Size of a control record header. */
#define CONVAI_CONTROL_HEADER 4

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
 * \param venv virtual environment holding pyconvai and its dependencies
 * \param libpython soname to promote to RTLD_GLOBAL so that C extensions resolve
 * \param host logging and AMI services; also receives this file's own errors
 * \retval 0 running
 * \retval -1 failed (logged); later calls report the runtime as unavailable
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

/*! \brief Turn pyconvai's debug logging on or off for every call. */
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
 * \brief pyconvai's counters in Prometheus text format.
 * \return text allocated with malloc (the caller frees it), or NULL
 */
char *convai_embed_metrics(void);

/*!
 * \brief Start the Python side of one call; it connects asynchronously.
 * \return an opaque handle (a new reference), or NULL (reason logged)
 */
void *convai_embed_call_start(const struct convai_call_params *params);

/*! \brief Tell Python the caller has gone; it closes the socket with 1000. */
void convai_embed_call_hangup(void *handle, const char *reason);

/*! \brief Drop the handle from convai_embed_call_start(). */
void convai_embed_call_release(void *handle);

#endif /* CONVAI_EMBED_H */
