"""The in-process bus and the wire form of events (no Redis needed)."""

from __future__ import annotations

import json

import pytest

from chatd.bus import LocalBus
from chatd.bus.wire import from_wire, to_wire
from chatd.events import History, Identity, Message, Notice, Presence


def test_events_survive_the_wire_as_json():
    events = [
        Message(7, 1700000000.5, "ann", "hi there"),
        Message(8, 1700000001.0, "ann", "psst", to="bob", late=True),
        Notice("bob joined"),
        Presence(["ann", "bob"], update=True),
        History([Message(3, 1.0, "cy", "old")], "missed while you were away"),
    ]
    for event in events:
        back = from_wire(json.loads(json.dumps(to_wire(event))))
        assert type(back) is type(event)
        assert to_wire(back) == to_wire(event)
    message = from_wire(to_wire(events[1]))
    assert (message.id, message.sender, message.text, message.to, message.late) == (
        8,
        "ann",
        "psst",
        "bob",
        True,
    )


def test_the_sending_session_and_login_tokens_stay_on_their_node():
    assert "origin" not in to_wire(Message(1, 1.0, "ann", "hi", origin=object()))
    with pytest.raises(ValueError, match="identity"):
        to_wire(Identity("ann", "ann", "secret-token"))


@pytest.mark.parametrize(
    "data",
    [{"kind": "message", "id": 1}, {"kind": "launch"}, {"text": "no kind"}, {"kind": "notice"}],
)
def test_malformed_wire_data_is_a_clear_value_error(data):
    with pytest.raises(ValueError, match="bus"):
        from_wire(data)


def test_local_buses_in_one_group_tell_each_other_but_not_themselves():
    group: list[LocalBus] = []
    a, b, c = LocalBus(group), LocalBus(group), LocalBus(group)
    got: dict[str, list] = {"a": [], "b": [], "c": []}
    for name, bus in zip("abc", (a, b, c), strict=True):
        bus.subscribe(lambda kind, payload, name=name: got[name].append((kind, payload)))
        bus.startService()
    c.stopService()

    a.publish("event", to_wire(Message(5, 1.0, "ann", "one")))
    a.publish("event", to_wire(Message(6, 1.0, "ann", "two")))

    assert [from_wire(p).text for _, p in got["b"]] == ["one", "two"]
    assert got["a"] == got["c"] == []
    assert b.last_id == a.last_id == 6


def test_local_presence_lists_every_running_node():
    group: list[LocalBus] = []
    a, b = LocalBus(group), LocalBus(group)
    notified = []
    a.subscribe(lambda kind, payload: notified.append((kind, payload)))
    a.startService()
    b.startService()
    a.set_present(["zoe"])
    b.set_present(["Bob", "amy"])
    assert a.online().result == ["amy", "Bob", "zoe"]
    assert notified == [("presence", {"names": ["amy", "Bob"]})]
    b.stopService()
    assert a.online().result == ["zoe"]


def test_a_lone_local_bus_lists_its_own_users():
    bus = LocalBus()
    bus.set_present(["ann"])
    assert bus.online().result == ["ann"]
