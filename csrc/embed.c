/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief The embedded CPython interpreter: start-up, GIL entry, calls into
 * pyconvai.runtime. No Asterisk header is included here (Python.h must come
 * first in its file); logging reaches Asterisk through a callback.
 *
 * GIL rule: every exported function enters through embed_enter(), which takes
 * the GIL with PyGILState_Ensure(), and leaves through embed_leave(). Callers
 * hold no channel lock (see embed.h). After start-up the thread that
 * initialised Python has released the GIL, so pyconvai's own threads run
 * freely between calls.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "embed.h"

#ifndef CONVAI_PYTHON_PREFIX
#error "CONVAI_PYTHON_PREFIX (python3-config --prefix) must be defined by the build"
#endif

/*! pyconvai.runtime; a strong reference kept for the life of the process. */
static PyObject *runtime;
static const struct convai_host *host;
static int running;
/*! "elevenlabs debug on" for every call; written by any Asterisk thread, read by pyconvai. */
static int debug_all;
/*! pyconvai's counters in Prometheus text, published by pyconvai (malloc'd; under metrics_lock). */
static char *metrics_text;
static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;

static void embed_log(enum convai_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void embed_log(enum convai_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (host) {
		host->log(level, line);
	}
}

/*! \internal \brief Log and clear the pending Python exception. GIL held. */
static void embed_log_exception(const char *what)
{
	PyObject *type, *value, *traceback, *text = NULL;
	const char *message = "unknown error";

	PyErr_Fetch(&type, &value, &traceback);
	PyErr_NormalizeException(&type, &value, &traceback);
	if (value) {
		/* text is a new reference */
		text = PyObject_Str(value);
	}
	if (text && PyUnicode_Check(text)) {
		message = PyUnicode_AsUTF8(text);
	}
	embed_log(CONVAI_LOG_ERROR, "%s failed: %s: %s", what,
		type ? ((PyTypeObject *) type)->tp_name : "?", message ? message : "?");
	Py_XDECREF(text);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(traceback);
	PyErr_Clear();
}

/* _convai_host: the few host services pyconvai calls back into. */

static PyObject *host_module_log(PyObject *self, PyObject *args)
{
	int level;
	const char *message;

	if (!PyArg_ParseTuple(args, "is", &level, &message)) {
		return NULL;
	}
	if (level < CONVAI_LOG_DEBUG || level > CONVAI_LOG_ERROR) {
		level = CONVAI_LOG_NOTICE;
	}
	/* Keep the GIL: ast_log only queues the line and takes no channel lock. */
	if (host) {
		host->log(level, message);
	}
	Py_RETURN_NONE;
}

static PyObject *host_module_manager_event(PyObject *self, PyObject *args)
{
	const char *event, *body;

	if (!PyArg_ParseTuple(args, "ss", &event, &body)) {
		return NULL;
	}
	/* manager_event takes no channel lock and never calls back into Python. */
	if (host) {
		host->manager_event(event, body);
	}
	Py_RETURN_NONE;
}

static PyObject *host_module_debug(PyObject *self, PyObject *args)
{
	return PyBool_FromLong(__atomic_load_n(&debug_all, __ATOMIC_RELAXED));
}

static PyObject *host_module_set_metrics(PyObject *self, PyObject *args)
{
	const char *text;
	char *copy;

	if (!PyArg_ParseTuple(args, "s", &text)) {
		return NULL;
	}
	copy = strdup(text);
	if (!copy) {
		return PyErr_NoMemory();
	}
	/* Held only for a pointer swap: res_prometheus' scrape thread reads it. */
	pthread_mutex_lock(&metrics_lock);
	free(metrics_text);
	metrics_text = copy;
	pthread_mutex_unlock(&metrics_lock);
	Py_RETURN_NONE;
}

static PyMethodDef host_module_methods[] = {
	{ "log", host_module_log, METH_VARARGS, "log(level, message): write a line to Asterisk's logger" },
	{ "manager_event", host_module_manager_event, METH_VARARGS,
		"manager_event(event, body): raise an AMI event; body is 'Header: value\\r\\n' lines" },
	{ "debug", host_module_debug, METH_NOARGS, "debug(): whether 'elevenlabs debug on' is set for every call" },
	{ "set_metrics", host_module_set_metrics, METH_VARARGS,
		"set_metrics(text): publish pyconvai's counters (Prometheus text) for scrapes that take no GIL" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef host_module_def = {
	PyModuleDef_HEAD_INIT,
	.m_name = "_convai_host",
	.m_doc = "Services of the Asterisk module that embeds pyconvai.",
	.m_size = -1,
	.m_methods = host_module_methods,
};

static PyObject *host_module_init(void)
{
	PyObject *module = PyModule_Create(&host_module_def);

	if (module) {
		PyModule_AddIntConstant(module, "DEBUG", CONVAI_LOG_DEBUG);
		PyModule_AddIntConstant(module, "VERBOSE", CONVAI_LOG_VERBOSE);
		PyModule_AddIntConstant(module, "NOTICE", CONVAI_LOG_NOTICE);
		PyModule_AddIntConstant(module, "WARNING", CONVAI_LOG_WARNING);
		PyModule_AddIntConstant(module, "ERROR", CONVAI_LOG_ERROR);
	}
	return module;
}

static int embed_enter(PyGILState_STATE *state)
{
	if (!running) {
		return -1;
	}
	*state = PyGILState_Ensure();
	return 0;
}

static void embed_leave(PyGILState_STATE state)
{
	PyGILState_Release(state);
}

/*!
 * \internal \brief Initialise CPython with an isolated config rooted in \a venv (a virtual
 * environment, or CONVAI_PYTHON_PREFIX for the system Python).
 */
static int embed_initialize(const char *venv)
{
	char executable[4096];
	PyConfig config;
	PyStatus status;

	if (snprintf(executable, sizeof(executable), "%s/bin/python3", venv) >= (int) sizeof(executable)) {
		embed_log(CONVAI_LOG_ERROR, "python_venv path is too long");
		return -1;
	}
	if (access(executable, X_OK)) {
		if (!strcmp(venv, CONVAI_PYTHON_PREFIX)) {
			embed_log(CONVAI_LOG_ERROR, "no system Python %s for an empty python_venv "
				"(install python3, or set python_venv to a venv)", executable);
		} else {
			embed_log(CONVAI_LOG_ERROR, "python_venv '%s' has no bin/python3 (install it with 'make install')", venv);
		}
		return -1;
	}
	if (PyImport_AppendInittab("_convai_host", host_module_init) < 0) {
		embed_log(CONVAI_LOG_ERROR, "cannot register the _convai_host module");
		return -1;
	}
	/*
	 * Isolated: ignore PYTHON* environment variables, leave LC_CTYPE alone and
	 * install no signal handlers (Asterisk owns the signals). Pointing
	 * executable into the venv makes Python find pyvenv.cfg and its
	 * site-packages, exactly as if that venv's python3 were running. The
	 * system Python has no pyvenv.cfg: site adds the distribution's
	 * directories (/usr/lib/python3/dist-packages on Debian, where the
	 * package puts pyconvai), as for /usr/bin/python3 -I.
	 */
	PyConfig_InitIsolatedConfig(&config);
	status = PyConfig_SetBytesString(&config, &config.executable, executable);
	if (!PyStatus_Exception(status)) {
		status = PyConfig_SetBytesString(&config, &config.program_name, executable);
	}
	if (!PyStatus_Exception(status)) {
		status = Py_InitializeFromConfig(&config);
	}
	PyConfig_Clear(&config);
	if (PyStatus_Exception(status)) {
		embed_log(CONVAI_LOG_ERROR, "Python initialisation failed: %s%s%s",
			status.func ? status.func : "", status.func ? ": " : "", status.err_msg ? status.err_msg : "?");
		return -1;
	}
	return 0;
}

/*!
 * \internal \brief Import pyconvai.runtime and start it. GIL held; on failure the
 * reason is logged and nothing of pyconvai stays imported.
 */
static int embed_start_runtime(void)
{
	PyObject *result;

	/* runtime is a new reference, kept until the process exits */
	runtime = PyImport_ImportModule("pyconvai.runtime");
	if (!runtime) {
		embed_log_exception("import pyconvai.runtime");
		goto failed;
	}
	/* start() refuses a pyconvai built for another record layout (convai_wire.h). */
	result = PyObject_CallMethod(runtime, "start", "i", CONVAI_WIRE_VERSION);
	if (!result) {
		embed_log_exception("pyconvai.runtime.start()");
		Py_CLEAR(runtime);
		goto failed;
	}
	Py_DECREF(result);
	return 0;

failed:
	/*
	 * Forget every pyconvai module this attempt imported, so that the next one
	 * (after "make install" and "elevenlabs reload") reads the venv afresh.
	 */
	if (PyRun_SimpleString("import importlib, sys\n"
			"for name in [n for n in sys.modules if n == 'pyconvai' or n.startswith('pyconvai.')]:\n"
			"    del sys.modules[name]\n"
			"importlib.invalidate_caches()\n")) {
		PyErr_Clear();
	}
	return -1;
}

int convai_embed_start(const char *venv, const char *libpython, const struct convai_host *services)
{
	/* The venv the interpreter was initialised from; a restart is needed to change it. */
	static char initialized_from[4096];
	PyGILState_STATE state;
	int res;

	host = services;
	if (running) {
		return 0;
	}
	if (*initialized_from) {
		/* An earlier start failed after Python was up: try pyconvai again, same interpreter. */
		if (strcmp(initialized_from, venv)) {
			embed_log(CONVAI_LOG_ERROR, "python_venv changed from %s to %s: restart Asterisk to use it",
				initialized_from, venv);
			return -1;
		}
		state = PyGILState_Ensure();
		res = embed_start_runtime();
		PyGILState_Release(state);
		running = !res;
		return res;
	}
	if (Py_IsInitialized()) {
		embed_log(CONVAI_LOG_ERROR, "another module already embeds Python in this Asterisk; refusing to share it");
		return -1;
	}
	/*
	 * Asterisk opens modules RTLD_LOCAL, so libpython (our dependency) is not
	 * visible to the C extensions Python loads later (_ssl, _asyncio, our
	 * ring binding): promote it to the global scope. The handle is never closed.
	 */
	if (!dlopen(libpython, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) {
		embed_log(CONVAI_LOG_ERROR, "cannot promote %s to RTLD_GLOBAL: %s", libpython, dlerror());
		return -1;
	}
	if (embed_initialize(venv)) {
		return -1;
	}
	snprintf(initialized_from, sizeof(initialized_from), "%s", venv);
	res = embed_start_runtime();
	/* Give the GIL away for good; Asterisk threads come back through embed_enter(). */
	PyEval_SaveThread();
	running = !res;
	return res;
}

int convai_embed_running(void)
{
	return running;
}

void convai_embed_stop(unsigned int timeout_ms)
{
	PyGILState_STATE state;
	PyObject *result;

	if (embed_enter(&state)) {
		return;
	}
	result = PyObject_CallMethod(runtime, "stop", "d", timeout_ms / 1000.0);
	if (!result) {
		embed_log_exception("pyconvai.runtime.stop()");
	} else if (!PyObject_IsTrue(result)) {
		embed_log(CONVAI_LOG_WARNING, "pyconvai threads did not stop within %u ms", timeout_ms);
	}
	Py_XDECREF(result);
	running = 0;
	embed_leave(state);
}

void convai_embed_set_debug(int on)
{
	/* No GIL: pyconvai reads it (_convai_host.debug()) on its own threads. */
	__atomic_store_n(&debug_all, on, __ATOMIC_RELAXED);
}

/*!
 * \internal \brief A str result copied out with malloc. GIL held; consumes \a result
 * (a new reference, or NULL with an exception set).
 */
static char *embed_text(PyObject *result, const char *what)
{
	char *text = NULL;

	if (result && PyUnicode_Check(result)) {
		const char *utf8 = PyUnicode_AsUTF8(result);

		text = utf8 ? strdup(utf8) : NULL;
	}
	if (!result || PyErr_Occurred()) {
		embed_log_exception(what);
	}
	Py_XDECREF(result);
	return text;
}

/*! \internal \brief Call a runtime method returning str; copy it out with malloc. */
static char *embed_call_text(const char *method)
{
	PyGILState_STATE state;
	char *text;

	if (embed_enter(&state)) {
		return NULL;
	}
	text = embed_text(PyObject_CallMethod(runtime, method, NULL), method);
	embed_leave(state);
	return text;
}

char *convai_embed_describe(void)
{
	return embed_call_text("describe");
}

char *convai_embed_describe_calls(void)
{
	return embed_call_text("describe_calls");
}

char *convai_embed_metrics(void)
{
	char *text;

	/* The copy pyconvai last published: a scrape never waits for the GIL. */
	pthread_mutex_lock(&metrics_lock);
	text = metrics_text ? strdup(metrics_text) : NULL;
	pthread_mutex_unlock(&metrics_lock);
	return text;
}

/*!
 * \internal \brief An operator request's answer: "" done, else why not. GIL held;
 * consumes \a result (a new reference, or NULL with an exception set).
 */
static int embed_answer(PyObject *result, const char *what, char *why, size_t len)
{
	const char *answer = result && PyUnicode_Check(result) ? PyUnicode_AsUTF8(result) : NULL;
	int res = -1;

	if (!answer) {
		embed_log_exception(what);
		snprintf(why, len, "internal error (see the log)");
	} else if (*answer) {
		snprintf(why, len, "%s", answer);
	} else {
		res = 0;
	}
	Py_XDECREF(result);
	return res;
}

int convai_embed_send_text(const char *channel, const char *kind, const char *text, char *why, size_t len)
{
	PyGILState_STATE state;
	PyObject *result, *unicode;
	int res = -1;

	if (embed_enter(&state)) {
		snprintf(why, len, "the Python runtime is not running");
		return -1;
	}
	/* unicode is a new reference, stolen by "N"; errors="replace" keeps any bytes usable. */
	unicode = PyUnicode_DecodeUTF8(text, strlen(text), "replace");
	result = unicode ? PyObject_CallMethod(runtime, "send_text", "ssN", channel, kind, unicode) : NULL;
	res = embed_answer(result, "pyconvai.runtime.send_text()", why, len);
	embed_leave(state);
	return res;
}

/*! \internal \brief Build a dict from NULL-terminated key, value pairs. GIL held. */
static PyObject *embed_settings_dict(const char *const *settings)
{
	/* dict is a new reference, returned to the caller */
	PyObject *dict = PyDict_New();

	for (; dict && settings && settings[0] && settings[1]; settings += 2) {
		PyObject *value = PyUnicode_DecodeUTF8(settings[1], strlen(settings[1]), "replace");

		/* PyDict_SetItemString does not steal value */
		if (!value || PyDict_SetItemString(dict, settings[0], value)) {
			Py_XDECREF(value);
			Py_CLEAR(dict);
			break;
		}
		Py_DECREF(value);
	}
	return dict;
}

char *convai_embed_check_agents(const char *const *const *settings)
{
	PyGILState_STATE state;
	PyObject *agents, *agent;
	char *text = NULL;

	if (embed_enter(&state)) {
		return NULL;
	}
	/* agents is a new reference; PyList_Append does not steal agent */
	agents = PyList_New(0);
	for (; agents && *settings; settings++) {
		agent = embed_settings_dict(*settings);
		if (!agent || PyList_Append(agents, agent)) {
			Py_XDECREF(agent);
			Py_CLEAR(agents);
			break;
		}
		Py_DECREF(agent);
	}
	if (agents) {
		text = embed_text(PyObject_CallMethod(runtime, "check_agents", "O", agents), "pyconvai.runtime.check_agents()");
		Py_DECREF(agents);
	} else {
		embed_log_exception("check_agents settings");
	}
	embed_leave(state);
	return text;
}

void *convai_embed_call_start(const struct convai_call_params *params)
{
	PyGILState_STATE state;
	PyObject *settings, *call = NULL;

	if (embed_enter(&state)) {
		embed_log(CONVAI_LOG_ERROR, "the Python runtime is not running");
		return NULL;
	}
	settings = embed_settings_dict(params->settings);
	if (settings) {
		/*
		 * Python takes its own reference on each ring and dups wake_fd before
		 * start_call returns, so either side may finish first.
		 */
		call = PyObject_CallMethod(runtime, "start_call", "OKKKKi", settings,
			(unsigned long long) (uintptr_t) params->uplink,
			(unsigned long long) (uintptr_t) params->downlink,
			(unsigned long long) (uintptr_t) params->control,
			(unsigned long long) (uintptr_t) params->clock,
			params->wake_fd);
	}
	if (!call) {
		embed_log_exception("pyconvai.runtime.start_call()");
	}
	Py_XDECREF(settings);
	embed_leave(state);
	/* call is a new reference, owned by the caller until convai_embed_call_release() */
	return call;
}

void convai_embed_call_hangup(void *handle, const char *reason)
{
	PyGILState_STATE state;
	PyObject *result;

	if (!handle || embed_enter(&state)) {
		return;
	}
	result = PyObject_CallMethod((PyObject *) handle, "hangup", "s", reason);
	if (!result) {
		embed_log_exception("pyconvai call hangup()");
	}
	Py_XDECREF(result);
	embed_leave(state);
}

void convai_embed_call_tool_result(void *handle, const char *tool_call_id, const char *result, int is_error)
{
	PyGILState_STATE state;
	PyObject *ret;

	if (!handle || embed_enter(&state)) {
		return;
	}
	ret = PyObject_CallMethod((PyObject *) handle, "tool_result", "ssO", tool_call_id, result,
		is_error ? Py_True : Py_False);
	if (!ret) {
		embed_log_exception("pyconvai call tool_result()");
	}
	Py_XDECREF(ret);
	embed_leave(state);
}

int convai_embed_ami_tool_result(const char *channel, const char *conversation_id, const char *tool_call_id,
	const char *result, int is_error, char *why, size_t len)
{
	PyGILState_STATE state;
	PyObject *ret;
	int res = -1;

	if (embed_enter(&state)) {
		snprintf(why, len, "the Python runtime is not running");
		return -1;
	}
	ret = PyObject_CallMethod(runtime, "tool_result", "ssssO", channel, conversation_id, tool_call_id, result,
		is_error ? Py_True : Py_False);
	res = embed_answer(ret, "pyconvai.runtime.tool_result()", why, len);
	embed_leave(state);
	return res;
}

void convai_embed_call_release(void *handle)
{
	PyGILState_STATE state;

	if (!handle || embed_enter(&state)) {
		return;
	}
	Py_DECREF((PyObject *) handle);
	embed_leave(state);
}
