"""Tests for batchrunner.prepare.builder: rows become bodies and token charges."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import Settings
from batchrunner.errors import ConfigError, InputError
from batchrunner.prepare.builder import (
    RequestBuilder,
    build_request,
    completion_allowance,
)
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.records import Api, Row


def make_settings(
    api: Api = Api.CHAT,
    request: dict[str, Any] | None = None,
    **columns: Any,
) -> Settings:
    """Settings for *api* with *request* parameters and input *columns* settings."""
    return Settings(api=api, request=request or {}, input=InputSettings(**columns))


def row(**fields: Any) -> Row:
    """A row on line 2 with *fields*."""
    return Row(id=str(fields.get("id", "1")), line=2, fields=fields)


def build(settings: Settings, the_row: Row, counter: TokenCounter | None = None):
    """The request a builder for *settings* makes of *the_row*."""
    return RequestBuilder(settings, path="in.jsonl", counter=counter).build(the_row)


def test_chat_prompt_becomes_a_user_message_with_request_params():
    """A prompt column becomes one user message, next to the settings' parameters."""
    settings = make_settings(request={"temperature": 0.2})
    request = build(settings, row(id="a", prompt="Hello"))
    assert request.row_id == "a"
    assert request.api is Api.CHAT
    assert request.body == {
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
    }


def test_messages_column_as_json_text_is_parsed():
    """A CSV messages cell holds a JSON array, which becomes the messages."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "42", "tool_call_id": "t1"},
    ]
    request = build(make_settings(), row(messages=json.dumps(messages)))
    assert request.body["messages"] == messages


def test_messages_column_as_json_array_is_used_as_is():
    """A JSONL messages value may be the array itself."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    request = build(make_settings(), row(messages=messages, prompt="ignored"))
    assert request.body["messages"] == messages


def test_messages_beat_prompt_and_empty_messages_fall_back_to_prompt():
    """Messages are preferred; an empty messages cell falls back to the prompt."""
    settings = make_settings()
    chosen = build(
        settings, row(messages='[{"role":"user","content":"M"}]', prompt="P")
    )
    assert chosen.body["messages"] == [{"role": "user", "content": "M"}]
    fallback = build(settings, row(messages="", prompt="P"))
    assert fallback.body["messages"] == [{"role": "user", "content": "P"}]


def test_system_column_beats_the_system_setting():
    """A row's own system cell wins over input.system; a blank cell uses the setting."""
    settings = make_settings(system="From settings")
    own = build(settings, row(prompt="Hi", system="From row"))
    assert own.body["messages"][0] == {"role": "system", "content": "From row"}
    blank = build(settings, row(prompt="Hi", system=" "))
    assert blank.body["messages"] == [
        {"role": "system", "content": "From settings"},
        {"role": "user", "content": "Hi"},
    ]


def test_system_is_not_added_before_a_system_message():
    """Messages that start with a system message keep it and get no second one."""
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    request = build(make_settings(system="Other"), row(messages=messages))
    assert request.body["messages"] == messages


def test_template_formats_the_row_columns():
    """Without messages or prompt, the template formats the row's columns."""
    settings = make_settings(template="Summarise: {text} ({lang})")
    request = build(settings, row(text="A long story", lang="en"))
    content = "Summarise: A long story (en)"
    assert request.body["messages"] == [{"role": "user", "content": content}]


def test_template_naming_a_missing_column_is_an_input_error():
    """A template placeholder the row lacks names it and the row's columns."""
    settings = make_settings(template="Summarise: {body}")
    with pytest.raises(InputError) as caught:
        build(settings, row(id="1", text="x"))
    assert str(caught.value) == (
        "in.jsonl:2: input.template uses {body}, but this row has no 'body'"
        " column; its columns are 'id', 'text'"
    )


def test_template_with_a_null_value_is_an_input_error():
    """A null value would format as 'None', so it is refused."""
    with pytest.raises(InputError, match="'text' is null"):
        build(make_settings(template="{text}"), row(text=None))


@pytest.mark.parametrize("template", ["Hello {name", "}", "{0}", "{}", "{x!z}"])
def test_bad_template_is_a_config_error(template: str):
    """A template str.format cannot use, or a positional one, is a ConfigError."""
    with pytest.raises(ConfigError, match=r"input\.template"):
        RequestBuilder(make_settings(template=template), path="in.csv")


def test_completions_body_has_the_prompt_and_params():
    """Completions send the text as prompt with every request parameter."""
    settings = make_settings(Api.COMPLETIONS, {"max_tokens": 5, "temperature": 0})
    request = build(settings, row(prompt="Once upon"))
    assert request.body == {"prompt": "Once upon", "max_tokens": 5, "temperature": 0}


def test_embeddings_body_keeps_only_embedding_params():
    """Embeddings send input plus dimensions, user and encoding_format only."""
    request_params = {"dimensions": 256, "user": "u"}
    settings = make_settings(Api.EMBEDDINGS, request_params, template="{text}")
    request = build(settings, row(text="embed me"))
    assert request.body == {"input": "embed me", "dimensions": 256, "user": "u"}


def test_embeddings_refuse_chat_params_rather_than_drop_them():
    """A chat parameter under request: is refused for embeddings, not left out."""
    request_params = {"dimensions": 256, "temperature": 1}
    settings = make_settings(Api.EMBEDDINGS, request_params, template="{text}")
    with pytest.raises(ConfigError, match=r"request.temperature.*only chat"):
        build(settings, row(text="embed me"))


def test_messages_column_is_refused_for_completions():
    """Completions cannot take chat messages; the error says to use a prompt."""
    settings = make_settings(Api.COMPLETIONS)
    with pytest.raises(InputError, match=r"only works with --api chat.*'prompt'"):
        build(settings, row(messages='[{"role":"user","content":"x"}]'))


def test_passthrough_holds_the_other_columns():
    """Every column but id, messages, prompt and system is carried through."""
    the_row = row(id="7", prompt="P", system="S", messages="", topic="t", n=3)
    request = build(make_settings(), the_row)
    assert request.passthrough == {"topic": "t", "n": 3}


def test_renamed_columns_are_used_and_left_out_of_passthrough():
    """Column name settings pick the columns, which are then not passed through."""
    settings = make_settings(id_column="key", prompt_column="question")
    request = build(
        settings, Row(id="k1", line=2, fields={"key": "k1", "question": "Q"})
    )
    assert request.body["messages"] == [{"role": "user", "content": "Q"}]
    assert request.passthrough == {}


def test_prompt_tokens_are_counted_when_a_counter_is_given():
    """The counter counts chat messages; without one the count is 0."""
    counter = TokenCounter("gpt-4o")
    settings = make_settings()
    counted = build(settings, row(prompt="hello world"), counter)
    expected = counter.count_chat([{"role": "user", "content": "hello world"}])
    assert counted.prompt_tokens == expected > 0
    assert build(settings, row(prompt="hello world")).prompt_tokens == 0


def test_completions_prompt_tokens_count_the_text():
    """Completions count the prompt text itself."""
    counter = TokenCounter("gpt-4o")
    request = build(make_settings(Api.COMPLETIONS), row(prompt="hello world"), counter)
    assert request.prompt_tokens == 2


def test_charged_tokens_add_max_tokens_times_n():
    """Chat charges prompt tokens plus max_tokens for each of n choices."""
    counter = TokenCounter("gpt-4o")
    settings = make_settings(request={"max_tokens": 100, "n": 3})
    request = build(settings, row(prompt="hello world"), counter)
    assert request.charged_tokens == request.prompt_tokens + 300


@pytest.mark.parametrize(
    ("api", "params", "allowance"),
    [
        (Api.CHAT, {}, 0),
        (Api.CHAT, {"max_completion_tokens": 50, "n": 2}, 100),
        (Api.COMPLETIONS, {}, 16),
        (Api.COMPLETIONS, {"max_tokens": 10, "n": 2, "best_of": 5}, 50),
        (Api.COMPLETIONS, {"max_tokens": 10, "n": 4, "best_of": 2}, 40),
        (Api.EMBEDDINGS, {"max_tokens": 10}, 0),
    ],
)
def test_completion_allowance(api: Api, params: dict[str, Any], allowance: int):
    """The up-front charge follows max_tokens, the defaults, n and best_of."""
    assert completion_allowance(api, params) == allowance


def test_embeddings_charge_prompt_tokens_only():
    """Embeddings are charged their input tokens and nothing more."""
    counter = TokenCounter("text-embedding-3-small")
    settings = make_settings(Api.EMBEDDINGS, {})
    request = build(settings, row(prompt="hello world"), counter)
    assert request.charged_tokens == request.prompt_tokens == 2
    # max_tokens is refused for embeddings; were it given, it would not count.
    assert completion_allowance(Api.EMBEDDINGS, {"max_tokens": 100}) == 0


@pytest.mark.parametrize(
    ("messages", "fault"),
    [
        ("[{]", "the 'messages' cell is not valid JSON: Expecting property name"),
        ('{"role": "user"}', "must be a JSON array of messages, not an object"),
        ("[]", "is an empty array"),
        ('[{"role":"user","content":"a"}, "hi"]', "message 2 of 2 is a string"),
        ('[{"role":"bot","content":"a"}]', "message 1 of 1 has role 'bot'"),
        ('[{"role":"user"}]', "message 1 of 1 has no 'content'"),
        ('[{"role":"user","content":null}]', "has null content"),
        ('[{"role":"user","content":7}]', "has a number content"),
    ],
)
def test_bad_messages_say_what_is_wrong(messages: str, fault: str):
    """Each wrong shape of messages is an InputError naming the wrong element."""
    with pytest.raises(InputError) as caught:
        build(make_settings(), row(messages=messages))
    assert fault in str(caught.value)
    assert str(caught.value).startswith("in.jsonl:2: ")


def test_empty_prompt_is_an_input_error():
    """A blank prompt with no template to fall back on is refused."""
    with pytest.raises(InputError, match="empty prompt: the 'prompt' cell is empty"):
        build(make_settings(), row(prompt="  "))


def test_row_without_any_source_lists_its_columns():
    """A row with no messages, prompt or template says what it has."""
    with pytest.raises(InputError, match="its columns are 'id', 'text'"):
        build(make_settings(), row(id="1", text="x"))


def test_non_text_prompt_is_an_input_error():
    """A JSON number is not a prompt."""
    with pytest.raises(InputError, match="must be text, not a number"):
        build(make_settings(), row(prompt=42))


@pytest.mark.parametrize("key", ["messages", "prompt", "input"])
def test_request_settings_cannot_set_the_row_text(key: str):
    """Row text never comes from request: in the settings."""
    with pytest.raises(ConfigError, match=f"request.{key} cannot be set"):
        RequestBuilder(make_settings(request={key: "x"}), path="in.csv")


def test_bad_max_tokens_is_a_config_error():
    """A max_tokens that is not a whole number fails when the builder is made."""
    with pytest.raises(
        ConfigError, match=r"request\.max_tokens must be a whole number"
    ):
        RequestBuilder(make_settings(request={"max_tokens": "lots"}), path="in.csv")


def test_build_request_matches_the_builder():
    """The one-row wrapper builds the same request as a builder."""
    settings = make_settings(request={"max_tokens": 4})
    the_row = row(id="x", prompt="Hi", extra=1)
    assert build_request(the_row, settings, None) == build(settings, the_row)
