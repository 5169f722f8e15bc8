"""URL helpers of pyconvai.client (no network)."""

import pytest

from pyconvai.client import ConnectFailed, public_url, redact_url, require_encryption
from pyconvai.runtime import safe_log_line


def test_redact_signed_url_hides_signature_only():
    url = (
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_123"
        "&conversation_signature=SECRET123&source=x"
    )
    out = redact_url(url)
    assert "SECRET123" not in out
    assert out == (
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_123"
        "&conversation_signature=***&source=x"
    )


@pytest.mark.parametrize("key", ["token", "xi-api-key", "xi_api_key", "api_key", "Token"])
def test_redact_other_secret_keys(key):
    out = redact_url(f"ws://h/p?{key}=sk-live-abc&agent_id=a")
    assert "sk-live-abc" not in out and out.endswith("=***&agent_id=a")


def test_redact_password_in_netloc():
    out = redact_url("https://user:hunter2@example.com/x?agent_id=a")
    assert "hunter2" not in out and out.startswith("https://user:***@example.com/x")


def test_redact_leaves_plain_urls_alone():
    url = "http://127.0.0.1:8080/v1/convai/conversation/get-signed-url?agent_id=a"
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "endpoint, expected",
    [
        (
            "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url",
            "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_1",
        ),
        (
            "http://127.0.0.1:9000/v1/convai/conversation/get-signed-url",
            "ws://127.0.0.1:9000/v1/convai/conversation?agent_id=agent_1",
        ),
        (
            "https://api.eu.residency.elevenlabs.io/v1/convai/conversation/get_signed_url",
            "wss://api.eu.residency.elevenlabs.io/v1/convai/conversation?agent_id=agent_1",
        ),
    ],
)
def test_public_url(endpoint, expected):
    assert public_url(endpoint, "agent_1") == expected


def test_public_url_quotes_agent_id_and_rejects_bad_endpoint():
    assert public_url("https://h/x", "a b&c").endswith("agent_id=a+b%26c")
    with pytest.raises(ValueError):
        public_url("ftp://h/x", "a")


@pytest.mark.parametrize("url", ["https://api.elevenlabs.io/x", "wss://api.elevenlabs.io/x?token=1",
                                 "http://127.0.0.1:9000/x", "ws://127.8.9.10/x", "http://localhost/x",
                                 "ws://[::1]:80/x"])
def test_encrypted_or_local_urls_are_allowed(url):
    require_encryption(url, "signed URL")


@pytest.mark.parametrize("url", ["http://api.elevenlabs.io/x", "ws://10.0.0.5/x?conversation_signature=S3CRET",
                                 "http://127.example.com/x", "ws://localhost.evil.com/x"])
def test_clear_text_beyond_this_machine_is_refused_without_showing_the_token(url):
    with pytest.raises(ConnectFailed) as refused:
        require_encryption(url, "signed URL")
    assert "is not encrypted" in refused.value.reason and "S3CRET" not in refused.value.reason


def test_log_lines_never_carry_tokens_or_keys():
    traceback_line = ("  File x, line 3: InvalidURI('wss://h/v1?agent_id=a&conversation_signature=abc.def&token=T0K'), "
                      "headers={'xi-api-key': 'sk_live_0123456789abcdef'}\r\nforged line")
    line = safe_log_line(traceback_line)
    for secret in ("abc.def", "T0K", "0123456789abcdef", "\r", "\n"):
        assert secret not in line
    assert "agent_id=a" in line


@pytest.mark.parametrize("line", ["> Authorization: Bearer s3cret-token", "headers={'Authorization': 'Bearer s3cret-token'}",
                                  "authorization=s3cret-token"])
def test_log_lines_never_carry_a_bearer_token(line):
    assert "s3cret" not in safe_log_line(line)
    assert "uthorization" in safe_log_line(line)
