/*
 * app_elevenlabs_convai -- ElevenLabs Conversational AI for Asterisk
 *
 * This program is free software, distributed under the terms of
 * the GNU General Public License Version 2.
 */

/*! \file
 *
 * \brief What crosses the rings between the channel thread and pyconvai.
 *
 * This header is the contract; pyconvai/wire.py is its mirror, and
 * tests/unit/test_wire.py parses this file and fails when the two differ.
 * Change anything here and bump CONVAI_WIRE_VERSION: the runtime refuses a
 * module whose version differs from its own (a venv from another build would
 * otherwise read records of another layout). Plain C, no Asterisk or Python
 * headers: both sides of the boundary include it.
 */

#ifndef CONVAI_WIRE_H
#define CONVAI_WIRE_H

#include <stdint.h>

/*! \brief Layout version of everything below; pyconvai.wire.WIRE_VERSION must match. */
#define CONVAI_WIRE_VERSION 4

/*! \brief Agent audio crosses the downlink in frames of this many milliseconds. */
#define CONVAI_FRAME_MS 20

/*! \brief What a clock record times. */
enum convai_clock_kind {
	/*! An agent frame was written; position: its first byte in the downlink stream. */
	CONVAI_CLOCK_WRITTEN = 1,
	/*! Caller audio was captured; position: the uplink stream's end after it. */
	CONVAI_CLOCK_CAPTURED = 2,
	/*! The caller pressed a key (DTMF end); position: the digit, as an ASCII code. */
	CONVAI_CLOCK_DTMF = 3,
	/*! A CONVAI_CONTROL_SEND_DTMF was carried out; position: the digits sent (0: none). */
	CONVAI_CLOCK_DTMF_SENT = 4,
	/*! A CONVAI_CONTROL_TRANSFER_CHECK was answered; position: 1 the extension exists, 0 not. */
	CONVAI_CLOCK_TRANSFER_CHECKED = 5,
};

/*!
 * \brief One timed event, channel thread -> Python through the clock ring: audio
 * (so that Python can compute exact latencies, pyconvai/stats.py), keys the
 * caller pressed, and the answers to control records that ask a question.
 * Little-endian, 24 bytes, no padding.
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
 * Each record is a CONVAI_CONTROL_HEADER-byte header (kind, 0, payload length
 * as little-endian uint16) and a payload of at most CONVAI_CONTROL_MAX_PAYLOAD
 * bytes of NUL-separated UTF-8 strings.
 */
enum convai_control {
	/*! "input_format\0output_format": the agent's formats are known. */
	CONVAI_CONTROL_FORMATS = 1,
	/*! "status\0conversation_id\0reason[\0transfer_destination]": end the call now. */
	CONVAI_CONTROL_END = 2,
	/*! "conversation_id": the agent accepted the call. */
	CONVAI_CONTROL_STARTED = 3,
	/*! "digits": send DTMF to the caller (0-9*#A-D, w/W pauses); answered by CONVAI_CLOCK_DTMF_SENT. */
	CONVAI_CONTROL_SEND_DTMF = 4,
	/*! "destination": does transfer_context,destination,1 exist? Answered by CONVAI_CLOCK_TRANSFER_CHECKED. */
	CONVAI_CONTROL_TRANSFER_CHECK = 5,
	/*!
	 * "tool_call_id\0tool_name\0VARIABLE\0value...": run the tool's Gosub with these channel
	 * variables set; answered through convai_embed_call_tool_result().
	 */
	CONVAI_CONTROL_RUN_TOOL = 6,
};

/*! \brief Size of a control record header. */
#define CONVAI_CONTROL_HEADER 4

/*! \brief Largest control record payload. */
#define CONVAI_CONTROL_MAX_PAYLOAD 8192

#endif /* CONVAI_WIRE_H */
