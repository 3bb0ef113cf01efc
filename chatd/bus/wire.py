"""Events as JSON-ready dicts, so they can cross between nodes on a bus.

Only what other nodes may show travels: the sending session (C{Message.origin}) stays on its
node, and L{Identity} (it holds a login token) is refused outright.
"""

from __future__ import annotations

from typing import Any

from chatd.events import DEFAULT_ROOM, Error, Event, History, Message, Notice, Presence


def _message(m: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"id": m.id, "time": m.time, "sender": m.sender, "text": m.text}
    if m.to is not None:
        data["to"] = m.to
    if m.late:
        data["late"] = True
    if m.room and m.to is None:
        data["room"] = m.room
    return data


def _message_from(d: dict[str, Any]) -> Message:
    return Message(
        int(d["id"]),
        float(d["time"]),
        str(d["sender"]),
        str(d["text"]),
        d.get("to"),
        late=bool(d.get("late", False)),
        room=str(d.get("room", DEFAULT_ROOM)),
    )


def to_wire(event: Event) -> dict[str, Any]:
    """The dict form of C{event}, with its C{kind}; json.dumps can write it."""
    if isinstance(event, Message):
        return {"kind": event.kind, **_message(event)}
    if isinstance(event, Notice):
        data = {"kind": event.kind, "text": event.text, "room": event.room}
        if event.about is not None:
            data["about"] = event.about
            data["subject"] = list(event.subject)
        return data
    if isinstance(event, Error):
        return {"kind": event.kind, "text": event.text}
    if isinstance(event, Presence):
        names = list(event.names)
        return {"kind": event.kind, "names": names, "update": event.update, "room": event.room}
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
            room = data.get("room")
            about = data.get("about")
            return Notice(
                str(data["text"]),
                None if room is None else str(room),
                None if about is None else str(about),
                tuple(str(n) for n in data.get("subject", ())),
            )
        if kind == Error.kind:
            return Error(str(data["text"]))
        if kind == Presence.kind:
            room = data.get("room")
            names = [str(n) for n in data["names"]]
            return Presence(names, bool(data["update"]), None if room is None else str(room))
        if kind == History.kind:
            return History([_message_from(m) for m in data["messages"]], str(data["reason"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed {data.get('kind', 'event')!r} on the bus: {e!r}") from e
    raise ValueError(f"unknown event kind {kind!r} on the bus")
