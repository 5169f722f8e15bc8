/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief What the agent makes the channel do: press keys, check a transfer target,
 * run a dialplan client tool, and the ringing or music heard while it connects.
 *
 * Threads: the channel thread, inside the call loop, channel not locked on
 * entry (convai_handle_control() runs these for pyconvai's control records).
 * No Python here but the embed.h answers, which take the GIL with no lock held.
 */

#include "asterisk.h"

#include "asterisk/app.h"
#include "asterisk/channel.h"
#include "asterisk/indications.h"
#include "asterisk/logger.h"
#include "asterisk/musiconhold.h"
#include "asterisk/pbx.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

#include "convai.h"
#include "embed.h"

/*! Most parameters of a dialplan client tool offered as channel variables. */
#define CONVAI_TOOL_MAX_VARIABLES 64
/*! Ringing when the channel's tone zone has none: the North American ring. */
#define CONVAI_DEFAULT_RING "440+480/2000,0/4000"

/*! \internal \brief Ringing or music on hold from answer until the agent's first words. */
void convai_start_connecting_sound(struct convai_call *call)
{
	const char *sound = call->agent->while_connecting;

	if (!strcmp(sound, "ring")) {
		/*
		 * In band, as the core does for an answered channel (a Local or answered
		 * SIP channel would only pass a RINGING indication on, which nobody hears).
		 */
		struct ast_tone_zone_sound *ring = ast_get_indication_tone(ast_channel_zone(call->chan), "ring");

		ast_playtones_start(call->chan, 0, ring ? ring->data : CONVAI_DEFAULT_RING, 0);
		if (ring) {
			ast_tone_zone_sound_unref(ring);
		}
		call->connecting_sound = CONVAI_CONNECTING_RING;
	} else if (!strncmp(sound, "moh", 3)) {
		if (ast_moh_start(call->chan, sound[3] == ':' ? sound + 4 : NULL, NULL)) {
			ast_log(LOG_WARNING, "%s: no music on hold (is res_musiconhold loaded?)\n", ast_channel_name(call->chan));
			return;
		}
		call->connecting_sound = CONVAI_CONNECTING_MOH;
	}
}

/*!
 * \internal \brief Stop it before the first agent frame: a generator (MOH) makes ast_write
 * drop frames while returning 0, and stopping it restores the write format it found.
 */
void convai_stop_connecting_sound(struct convai_call *call)
{
	switch (call->connecting_sound) {
	case CONVAI_CONNECTING_NONE:
		return;
	case CONVAI_CONNECTING_RING:
		ast_playtones_stop(call->chan);
		break;
	case CONVAI_CONNECTING_MOH:
		ast_moh_stop(call->chan);
		break;
	}
	call->connecting_sound = CONVAI_CONNECTING_NONE;
	if (call->out_format) {
		ast_set_write_format(call->chan, call->out_format);
	}
}

/*!
 * \internal \brief The agent's keypad tool: send \a digits to the caller, then tell Python.
 *
 * Blocks this thread for the digits and pauses (w, W), as SendDTMF does: agent
 * audio waits in the ring meanwhile (an RFC 4733 digit drops audio written with
 * it), and the framehook still captures the caller through ast_safe_sleep().
 */
void convai_send_dtmf(struct convai_call *call, const char *digits)
{
	int res;

	convai_stop_connecting_sound(call);
	res = ast_dtmf_stream(call->chan, NULL, digits, 250, 0);
	ast_debug(3, "%s: sent DTMF '%s' for the agent (%d)\n", ast_channel_name(call->chan), digits, res);
	convai_clock_now(call, CONVAI_CLOCK_DTMF_SENT, res ? 0 : strlen(digits));
	call->playing = 0; /* the pause is not a backlog: start the deadlines again */
}

/*! \internal \brief Whether context,exten,1 exists for this caller, as Dial would check it. */
static int convai_extension_exists(struct convai_call *call, const char *context, const char *exten)
{
	char caller[AST_MAX_EXTENSION];

	if (ast_strlen_zero(context) || ast_strlen_zero(exten)) {
		return 0;
	}
	/* Copied under the lock; the dialplan lookup runs without it. */
	ast_channel_lock(call->chan);
	ast_copy_string(caller, S_COR(ast_channel_caller(call->chan)->id.number.valid,
		ast_channel_caller(call->chan)->id.number.str, ""), sizeof(caller));
	ast_channel_unlock(call->chan);
	return ast_exists_extension(call->chan, context, exten, 1, S_OR(caller, NULL));
}

int convai_transfer_exists(struct convai_call *call, const char *destination)
{
	return convai_extension_exists(call, call->agent->transfer_context, destination);
}

/*!
 * \internal \brief A client tool the dialplan answers: Gosub(context,tool_name,1) on this thread.
 *
 * \a payload: the tool call id, the tool name, then variable, value pairs pyconvai made
 * of the parameters (ELEVENLABS_TOOL_*). Agent audio is paused meanwhile (pyconvai sent
 * this only once the audio queued before the call had played); the subroutine's apps
 * read the channel, so the framehook keeps capturing the caller. Return(result) answers;
 * ELEVENLABS_TOOL_ERROR=1 makes it an error. A hangup or redirect inside ends the call.
 */
void convai_run_tool(struct convai_call *call, char *payload, size_t len)
{
	const char *parts[2 + 2 * CONVAI_TOOL_MAX_VARIABLES];
	const struct ast_variable *tool;
	char location[2 * AST_MAX_CONTEXT + 8], reason[256];
	const char *result = "", *context;
	int n = convai_split(payload, len, parts, ARRAY_LEN(parts)), i, is_error = 1;

	tool = ast_variable_find_variable_in_list(call->agent->client_tools, parts[1]);
	context = tool ? tool->value : "";
	if (!convai_extension_exists(call, context, parts[1])) {
		snprintf(reason, sizeof(reason), "no extension %s in context %s answers this tool", parts[1], context);
		ast_log(LOG_WARNING, "%s: client tool %s: %s\n", ast_channel_name(call->chan), parts[1], reason);
		convai_embed_call_tool_result(call->session, parts[0], reason, 1);
		return;
	}
	convai_stop_connecting_sound(call);
	for (i = 2; i + 1 < n; i += 2) {
		if (!ast_strlen_zero(parts[i])) {
			pbx_builtin_setvar_helper(call->chan, parts[i], parts[i + 1]);
		}
	}
	pbx_builtin_setvar_helper(call->chan, "ELEVENLABS_TOOL_ERROR", NULL);
	pbx_builtin_setvar_helper(call->chan, "GOSUB_RETVAL", NULL);
	snprintf(location, sizeof(location), "%s,%s,1", context, parts[1]);
	ast_debug(3, "%s: client tool %s: Gosub(%s)\n", ast_channel_name(call->chan), parts[1], location);
	ast_app_exec_sub(NULL, call->chan, location, 0);
	if (ast_check_hangup(call->chan)) {
		convai_call_gone(call);
		return;
	}
	ast_channel_lock(call->chan);
	result = ast_strdupa(S_OR(pbx_builtin_getvar_helper(call->chan, "GOSUB_RETVAL"), ""));
	is_error = ast_true(pbx_builtin_getvar_helper(call->chan, "ELEVENLABS_TOOL_ERROR"));
	ast_channel_unlock(call->chan);
	/* This call's parameters end with it: a later call without one must not see it. */
	for (i = 2; i + 1 < n; i += 2) {
		if (!ast_strlen_zero(parts[i])) {
			pbx_builtin_setvar_helper(call->chan, parts[i], NULL);
		}
	}
	/* The subroutine's apps may have changed the write format; the pause is no backlog. */
	if (call->out_format) {
		ast_set_write_format(call->chan, call->out_format);
	}
	call->playing = 0;
	convai_embed_call_tool_result(call->session, parts[0], result, is_error);
}

