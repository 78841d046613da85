"""Translatable messages (aihub.domain.messages): plain English text that remembers its template."""

from __future__ import annotations

import copy
import json
import pickle

from aihub.domain.messages import MAX_JOINED, Message, joined, msg


def test_a_message_is_its_english_text_and_keeps_its_template() -> None:
    message = msg("run {run} not found", run=7)
    assert message == "run 7 not found" and isinstance(message, str)
    assert (message.template, message.params) == ("run {run} not found", {"run": 7})
    assert json.dumps({"message": message}) == '{"message": "run 7 not found"}'


def test_the_english_text_may_say_more_than_the_template() -> None:
    message = Message("too many failed logins", {}, text="too many failed logins for this username")
    assert message == "too many failed logins for this username"
    assert message.template == "too many failed logins"


def test_copies_and_pickles_keep_text_template_and_params() -> None:
    """Regression: a str subclass with a required argument broke copy.deepcopy and pickle (TypeError)."""
    message = Message("x {a}", {"a": msg("nested")}, text="longer x nested")
    for clone in (copy.copy(message), copy.deepcopy(message), pickle.loads(pickle.dumps(message))):
        assert isinstance(clone, Message)
        assert (str(clone), clone.template, clone.params) == ("longer x nested", "x {a}", {"a": "nested"})
        assert clone.params["a"].template == "nested"


def test_joined_items_stay_messages_one_by_one() -> None:
    items = [msg("a {x}", x=1), "b", msg("c")]
    text = joined(items)
    assert text == "a 1; b; c"
    assert (text.template, text.params["first"], text.params["rest"]) == ("{first}; {rest}", items[0], "b; c")
    assert text.params["rest"].params["rest"] is items[2]
    assert joined([]) == "" and joined(["only"]) == "only"
    many = [f"x{i}" for i in range(MAX_JOINED + 1)]
    assert joined(many) == "; ".join(many) and not isinstance(joined(many), Message)
