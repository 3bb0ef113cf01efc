"""Events as JSON-ready dicts, so they can cross between nodes on a bus.

Only what other nodes may show travels: the sending session (C{Message.origin}) stays on its
node, and L{Identity} (it holds a login token) is refused outright.
"""

from __future__ import annotations

from typing import Any

from chatd.events import Error, Event, History, Message, Notice, Presence


def _message(m: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"id": m.id, "time": m.time, "sender": m.sender, "text": m.text}
    if m.to is not None:
        data["to"] = m.to
    if m.late:
        data["late"] = True
    return data


def _message_from(d: dict[str, Any]) -> Message:
    return Message(
        int(d["id"]),
        float(d["time"]),
        str(d["sender"]),
        str(d["text"]),
        d.get("to"),
        late=bool(d.get("late", False)),
    )


def to_wire(event: Event) -> dict[str, Any]:
    """The dict form of C{event}, with its C{kind}; json.dumps can write it."""
    if isinstance(event, Message):
        return {"kind": event.kind, **_message(event)}
    if isinstance(event, (Notice, Error)):
        return {"kind": event.kind, "text": event.text}
    if isinstance(event, Presence):
        return {"kind": event.kind, "names": list(event.names), "update": event.update}
    if isinstance(event, History):
        return {
            "kind": event.kind,
            "reason": event.reason,
            "messages": [_message(m) for m in event.messages],
        }
    raise ValueError(f"a {event.kind} event does not leave its node")


def from_wire(data: dict[str, Any]) -> Event:
    """The event L{to_wire} made C{data} from; ValueError for anything else."""
    try:
        kind = data["kind"]
        if kind == Message.kind:
            return _message_from(data)
        if kind == Notice.kind:
            return Notice(str(data["text"]))
        if kind == Error.kind:
            return Error(str(data["text"]))
        if kind == Presence.kind:
            return Presence([str(n) for n in data["names"]], bool(data["update"]))
        if kind == History.kind:
            return History([_message_from(m) for m in data["messages"]], str(data["reason"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed {data.get('kind', 'event')!r} on the bus: {e!r}") from e
    raise ValueError(f"unknown event kind {kind!r} on the bus")
