"""Credentials in URLs are removed from any text (user:password@, credential-named query values),
and ordinary text is left as it was."""

from __future__ import annotations

import pytest

from promptgen.redact import MARK, redact

REMOVED = {
    "password with @": ("defaults.api-base=http://alice:p@ss@host/v1", "http://host/v1", ["alice", "p@ss", "ss@"]),
    "key parameters": ("https://h/v1?api-key=AAA&x-api-key=BBB&access_token=CCC&password=DDD&sig=EEE&x=1",
                       "x=1", ["AAA", "BBB", "CCC", "DDD", "EEE"]),
    "a quote ends the value": ('{"base": "https://h/v1?key=abc"}', '"}', ["abc"]),
}
KEPT = ["see https://example.com?email=bob@example.org",
        '{"url":"https://a.com","contact":"x@y.com"}',
        "https://h/v1?max_tokens=200&design=flat&keyword=cat&tokenizer=bpe",
        "mail bob@example.org about https://docs.litellm.ai/docs/providers"]


@pytest.mark.parametrize("case", sorted(REMOVED))
def test_credentials_in_urls_are_removed(case):
    text, still_there, gone = REMOVED[case]
    cleaned = redact(text)
    assert still_there in cleaned
    for secret in gone:
        assert secret not in cleaned.replace(MARK, "")


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text
