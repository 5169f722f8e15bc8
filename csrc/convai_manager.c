/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2. See the LICENSE file
 * at the top of the source tree.
 */

/*! \file
 *
 * \brief AMI actions: text for a live conversation, from a CRM or a supervisor, and
 * answers to the client tools an AMI client carries out.
 *
 * Threads: AMI session threads, never with a channel locked; the text reaches
 * pyconvai through embed.h (which takes the GIL) and is sent on its asyncio
 * thread. Nothing here touches the channel.
 */

#include "asterisk.h"

#include "asterisk/logger.h"
#include "asterisk/manager.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

#include "convai.h"
#include "embed.h"

/*** DOCUMENTATION
	<manager name="ElevenLabsContextualUpdate" language="en_US">
		<synopsis>Give a live ElevenLabs conversation context (a contextual_update).</synopsis>
		<syntax>
			<parameter name="ActionID">
				<para>ActionID for this transaction. Will be returned.</para>
			</parameter>
			<parameter name="Channel" required="true">
				<para>The channel running ElevenLabsConversationalAI() or AIConversation().</para>
			</parameter>
			<parameter name="Text" required="true">
				<para>The text. An AMI header holds one line: repeat Text for more lines, which are
				joined with line feeds in the order given.</para>
			</parameter>
		</syntax>
		<description>
			<para>The agent is told, without being asked to reply (e.g. "the customer's order just
			shipped"). The response is an error when the channel has no live conversation.</para>
		</description>
	</manager>
	<manager name="ElevenLabsUserMessage" language="en_US">
		<synopsis>Send a live ElevenLabs conversation a message as if the caller had said it (a user_message).</synopsis>
		<syntax>
			<parameter name="ActionID">
				<para>ActionID for this transaction. Will be returned.</para>
			</parameter>
			<parameter name="Channel" required="true">
				<para>The channel running ElevenLabsConversationalAI() or AIConversation().</para>
			</parameter>
			<parameter name="Text" required="true">
				<para>The text; repeat Text for more lines, joined with line feeds in order.</para>
			</parameter>
		</syntax>
		<description>
			<para>The agent answers it as a turn of the caller. The response is an error when the
			channel has no live conversation.</para>
		</description>
	</manager>
	<manager name="ElevenLabsToolResult" language="en_US">
		<synopsis>Answer a client tool call of a live ElevenLabs conversation (client_tools_via_ami).</synopsis>
		<syntax>
			<parameter name="ActionID">
				<para>ActionID for this transaction. Will be returned.</para>
			</parameter>
			<parameter name="Channel">
				<para>The channel running ElevenLabsConversationalAI() or AIConversation() (or give ConversationID).</para>
			</parameter>
			<parameter name="ConversationID">
				<para>The conversation, as in the ElevenLabsToolCall event (or give Channel).</para>
			</parameter>
			<parameter name="ToolCallID" required="true">
				<para>The ToolCallID of the ElevenLabsToolCall event.</para>
			</parameter>
			<parameter name="Result" required="true">
				<para>What the agent is told the tool returned.</para>
			</parameter>
			<parameter name="IsError">
				<para>yes: the tool failed (the agent is told so).</para>
			</parameter>
		</syntax>
		<description>
			<para>A tool no client_tool line maps is announced with ElevenLabsToolCall (IsError: pending)
			when client_tools_via_ami is on, and waits client_tool_timeout_seconds for this answer.</para>
		</description>
	</manager>
 ***/

/*! \internal \brief Every Text header, in order, joined with line feeds; NULL when there is none. */
static struct ast_str *convai_manager_text(const struct message *m)
{
	struct ast_str *text = NULL;
	unsigned int i;

	for (i = 0; i < m->hdrcount; i++) {
		const char *header = m->headers[i];

		if (strncasecmp(header, "Text:", 5)) {
			continue;
		}
		header += 5;
		/* "Text: value": one space separates; more is part of the text. */
		if (*header == ' ') {
			header++;
		}
		if (!text) {
			text = ast_str_create(1024);
			if (!text) {
				return NULL;
			}
		} else {
			ast_str_append(&text, 0, "\n");
		}
		ast_str_append(&text, 0, "%s", header);
	}
	return text;
}

static int convai_manager_send(struct mansession *s, const struct message *m, const char *kind)
{
	const char *channel = astman_get_header(m, "Channel");
	RAII_VAR(struct ast_str *, text, convai_manager_text(m), ast_free);
	char why[256];

	if (ast_strlen_zero(channel)) {
		astman_send_error(s, m, "Channel is required");
	} else if (!text) {
		astman_send_error(s, m, "Text is required");
	} else if (convai_embed_send_text(channel, kind, ast_str_buffer(text), why, sizeof(why))) {
		astman_send_error(s, m, why);
	} else {
		astman_send_ack(s, m, "Sent to the conversation");
	}
	return 0;
}

static int convai_manager_contextual_update(struct mansession *s, const struct message *m)
{
	return convai_manager_send(s, m, "contextual_update");
}

static int convai_manager_user_message(struct mansession *s, const struct message *m)
{
	return convai_manager_send(s, m, "user_message");
}

static int convai_manager_tool_result(struct mansession *s, const struct message *m)
{
	const char *channel = astman_get_header(m, "Channel");
	const char *conversation = astman_get_header(m, "ConversationID");
	const char *id = astman_get_header(m, "ToolCallID");
	char why[256];

	if (ast_strlen_zero(channel) && ast_strlen_zero(conversation)) {
		astman_send_error(s, m, "Channel or ConversationID is required");
	} else if (ast_strlen_zero(id)) {
		astman_send_error(s, m, "ToolCallID is required");
	} else if (convai_embed_ami_tool_result(channel, conversation, id, astman_get_header(m, "Result"),
			ast_true(astman_get_header(m, "IsError")), why, sizeof(why))) {
		astman_send_error(s, m, why);
	} else {
		astman_send_ack(s, m, "Answered");
	}
	return 0;
}

int convai_manager_register(void)
{
	/* No module, as for the application: a forced unload must not free what AMI still calls. */
	return ast_manager_register2("ElevenLabsContextualUpdate", EVENT_FLAG_CALL, convai_manager_contextual_update,
			NULL, NULL, NULL)
		| ast_manager_register2("ElevenLabsUserMessage", EVENT_FLAG_CALL, convai_manager_user_message,
			NULL, NULL, NULL)
		| ast_manager_register2("ElevenLabsToolResult", EVENT_FLAG_CALL, convai_manager_tool_result,
			NULL, NULL, NULL);
}

void convai_manager_unregister(void)
{
	ast_manager_unregister("ElevenLabsContextualUpdate");
	ast_manager_unregister("ElevenLabsUserMessage");
	ast_manager_unregister("ElevenLabsToolResult");
}
