"""Joining and leaving rooms, and what their owners may do: the moves between
L{Conversation}s, with their rules, notices, and what the store and other nodes keep.

Everyone is in the default room from connecting on, so a client that never joins another
sees the chat as it was before there were rooms. A person may be in several rooms; the one
they type into is their session's current room. The default room may be parted like any
other while one is in another room (a person is always in one room at least: parting the
last is refused); it is joined again with /join, at the next connection, or when the
other rooms are gone (a kick, a part). An account's rooms
are kept in the store and rejoined on every device at login. A room made by an account is
owned by it (and kept while nobody is in it); an unowned room ends with its last member.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.config import Config
from chatd.conversation import Conversation, Conversations, kick_keys, room_key
from chatd.crowd import Crowd
from chatd.errors import CommandError
from chatd.events import History, Notice, Presence
from chatd.events import Rooms as RoomList
from chatd.link import Link
from chatd.members import Members, deliver
from chatd.people import Session, User, name_key
from chatd.store import Store, StoreUnavailable, log_failed
from chatd.voice import Voice

log = Logger(namespace="chatd.rooms")

JOIN_HISTORY = 20  # recent messages a joiner is shown at most
MISSING = (
    "the kept rooms could not be read from the database: until they are, their owners, "
    "topics, kicks and invite-only rules do not hold on this server"
)
AGAIN = "the kept rooms could not be read again: what other servers changed in them is missed"


def minutes(seconds: float) -> str:
    n = max(1, math.ceil(seconds / 60))
    return f"{n} minute{'s' if n != 1 else ''}"


class Rooms:
    """The rooms of one node and the moves between them."""

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        store: Store,
        members: Members,
        conversations: Conversations,
        voice: Voice,
        crowd: Crowd,
        link: Link,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.members = members
        self.all = conversations
        self.voice = voice
        self.crowd = crowd
        self.link = link
        self._claiming: set[str] = set()  # keys of new rooms the store has not yet confirmed
        self._loaded: list[Deferred[None]] | None = []  # waiting for the first reading
        self._known = False  # whether the kept rooms were read
        # What is written to the store (a room's state, a membership), by what it is about:
        # the latest write of each while in flight, and those an outage kept from it, with
        # how to write them again once the database answers (L{_write}).
        self._writing: dict[tuple[str, ...], object] = {}
        self._missed: dict[tuple[str, ...], Callable[[], None]] = {}
        self._awaiting_recovery = False

    @property
    def default(self) -> Conversation:
        return self.all.default

    # -- start-up and other nodes ----------------------------------------------------------

    def restore(self) -> None:
        """Read the rooms kept in the store (owned ones): their owners, topics and rules.

        L{loaded} fires once the first reading is done, or failed: the doors wait for it,
        so nobody joins a kept room before its owner and kicks are known. When the database
        does not answer, the log says what is missing and the rooms are read once it does.
        """

        def read(states: list[str]) -> None:
            self._known = True
            for raw in states:
                if not self._unwritten(raw):  # else what is here is newer than the store's
                    self.heard_state(raw)

        def failed(failure: Failure) -> None:
            # Read before (another node's changes are read again after a Redis outage):
            # what this node knows holds meanwhile. Never read: nothing does.
            missing = AGAIN if self._known else MISSING
            if failure.check(StoreUnavailable):
                log.error(
                    missing + "; they are read once the database answers ({why})",
                    why=failure.value,
                )
                # Once, however often it failed meanwhile (each Redis reconnect asks again).
                self._missed[("kept rooms",)] = self.restore
                self._write_after_outage()
            else:
                log.failure(missing, failure)

        self.store.rooms().addCallbacks(read, failed).addBoth(self._read)

    def loaded(self) -> Deferred[None]:
        """Fires once the kept rooms were first read (or could not be: the log says so)."""
        d: Deferred[None] = Deferred()
        if self._loaded is None:
            d.callback(None)
        else:
            self._loaded.append(d)
        return d

    def _read(self, _: object) -> None:
        waiting, self._loaded = self._loaded or [], None
        for d in waiting:
            d.callback(None)

    def heard_state(self, raw: str) -> None:
        """A room's state from the store or another node (a topic, a kick, an invitation)."""
        try:
            data = json.loads(raw)
            name = str(data["name"])
        except (ValueError, KeyError, TypeError) as e:
            log.warn("dropped a malformed room state: {e!r}", e=e)
            return
        conversation = self.all.get(name) or self.all.add(Conversation(name))
        conversation.take_state(data)
        now = self.clock.seconds()
        held = False
        for user in list(conversation.users):  # kicked on another node: out here too
            if conversation.kicked_for(user, now):
                # That node knew the name only: a guest is held by its address here, and
                # every node hears it, so a new guest name does not get round the kick.
                until = max(conversation.kicked.get(k, 0.0) for k in kick_keys(user))
                for key in kick_keys(user):
                    held = held or key not in conversation.kicked
                    conversation.kicked[key] = until
                self._leave(user, conversation, "removed")
        if held:
            self._keep(conversation)

    def heard_members(self, node: str, room: str, names: list[str]) -> None:
        """Who is in C{room} on another node now."""
        conversation = self.all.get(room)
        if conversation is None:
            if not names:
                return
            conversation = self.all.add(Conversation(room))
        if names:
            conversation.elsewhere[node] = names
        else:
            conversation.elsewhere.pop(node, None)
            self._expire(conversation)
        sessions = self.all.sessions(conversation)
        if sessions:  # this room's member list, not every room's
            event = Presence(self.all.names(conversation), True, conversation.name)
            self.voice.outbox.later(lambda: deliver(sessions, event))

    def heard_renamed(self, old: str, new: str) -> None:
        """Someone on another node is now called C{new}: who is online and in each room
        says so at once, not when that node's next lists come (one of them a moment
        before the other), so nobody seems to leave a room and come back."""
        key, new_key = name_key(old), name_key(new)
        if new_key in self.members.users:
            return  # one of ours has the name too: the claims settle it (a rename follows)
        if self.members.elsewhere.pop(key, None) is not None:
            self.members.elsewhere[new_key] = new
        for conversation in self.all:
            for node, names in conversation.elsewhere.items():
                if any(name_key(n) == key for n in names):
                    renamed = [new if name_key(n) == key else n for n in names]
                    conversation.elsewhere[node] = renamed
        self.crowd.refresh()

    # -- moves -----------------------------------------------------------------------------

    def join(self, session: Session, name: str) -> None:
        """C{/join #room}: into the room (made if new), which becomes the current one."""
        user = session.user
        name = self.all.normal(name)
        conversation = self.all.get(name)
        if conversation is self.default and self.all.enter_default(user):
            self._back_in_default(session, "you joined")
            return
        if conversation is not None and self.all.holds(user, conversation):
            session.move(conversation.name)
            self._tell_current(session, f"you are now talking in {conversation.name}")
            self._show_topic(session, conversation)
            self.voice.event(session, RoomList([c.name for c in self.joined(user)], session.room))
            return
        if conversation is None:
            problem = self.all.problem(name)
            if problem is not None:
                raise CommandError(problem)
            if len(self.all) >= self.config.max_rooms:
                raise CommandError("there are as many rooms as this server allows; join one")
        self._may_join(user, conversation)
        if conversation is None:
            conversation = self.all.add(Conversation(name, owner=user.account))
            if user.account is None:
                conversation.maker = user
            else:
                self._claim(conversation, session)
            log.info("{user} made {room}", user=user, room=name)
        self._enter(user, conversation)
        session.move(conversation.name)
        self.crowd.moved("joined", user.name, conversation.name)
        self.tell_rooms(user)  # first: the page shows the room the next lines are about
        self._tell_current(session, f"you joined {conversation.name}; what you type goes there")
        self._show_topic(session, conversation)
        self._show_recent(session, conversation)

    def _back_in_default(self, session: Session, how: str) -> None:
        """C{session}'s person is in the default room again (a /join, or the other rooms
        gone): those in it hear it, the page lists it."""
        user, default = session.user, self.default
        session.move(default.name)
        self.crowd.moved("joined", user.name, default.name)
        self.tell_rooms(user)
        self._tell_current(session, f"{how} {default.name}; what you type goes there")
        self._show_topic(session, default)
        self._show_recent(session, default)

    def _may_join(self, user: User, conversation: Conversation | None) -> None:
        n = len(self.joined(user))  # the default room counts while one is in it
        if n >= self.config.max_rooms_per_person:
            raise CommandError(f"you are in {n} rooms, as many as allowed; /part one first")
        if conversation is None:
            return
        # An invitation lifts an earlier kick (a kick takes the invitation back), also one
        # held by a guest's address on another node, which the inviter's node cannot see.
        invited = user.key in conversation.invited
        left = 0.0 if invited else conversation.kicked_for(user, self.clock.seconds())
        if left:
            raise CommandError(
                f"you were removed from {conversation.name}; you may rejoin in {minutes(left)}"
            )
        if (
            conversation.invite_only
            and user.key not in conversation.invited
            and (user.account is None or user.account != conversation.owner)
        ):
            raise CommandError(f"{conversation.name} is invite-only; ask its owner to /invite you")
        if self.all.count(conversation) >= self.config.max_room_members:
            raise CommandError(f"{conversation.name} is full")

    def _enter(self, user: User, conversation: Conversation) -> None:
        user.rooms[conversation.key] = conversation
        conversation.add(user)
        if user.account is not None:
            self._remember(user.account, conversation.name, True)

    def part(self, session: Session, name: str | None = None) -> None:
        """C{/part [#room]}: leave the current room or the named one."""
        user = session.user
        conversation = self.all.get(self.all.normal(name)) if name else self.current(session)
        if conversation is None or not self.all.holds(user, conversation):
            raise CommandError(f"you are not in {name}; /rooms lists yours")
        if len(self.joined(user)) == 1:  # a connection is always in a room: where else?
            raise CommandError(
                f"{conversation.name} is the only room you are in; /join another room first "
                "(/quit leaves the chat)"
            )
        if conversation is self.default:
            self._part_default(session)
            return
        self._tell_current(session, f"you left {conversation.name}")
        self._leave(user, conversation, "left")

    def _part_default(self, session: Session) -> None:
        """Out of the default room (the person is in another: L{part} checked)."""
        user, default = session.user, self.default
        self.all.leave_default(user)
        self._tell_current(session, f"you left {default.name}")
        for s in user.sessions:
            if s.room == default.name:
                s.move(self._last(user).name)
                self._tell_current(s, f"you are now talking in {s.room}")
        self.tell_rooms(user)
        self.crowd.moved("left", user.name, default.name)

    def _leave(self, user: User, conversation: Conversation, verb: str) -> None:
        """C{user} leaves C{conversation} ("left", or "removed" by its owner)."""
        user.rooms.pop(conversation.key, None)
        conversation.remove(user)
        if not user.rooms and self.all.enter_default(user):  # never in no room at all
            self.crowd.moved("joined", user.name, self.default.name)
        for s in user.sessions:
            if s.room == conversation.name:
                s.move(self._last(user).name)
                if verb != "left":
                    self.voice.tell(s, f"you were removed from {conversation.name}")
                self._tell_current(s, f"you are now talking in {s.room}")
        if user.account is not None:
            self._remember(user.account, conversation.name, False)
        self.tell_rooms(user)
        if verb == "left":
            self.crowd.moved("left", user.name, conversation.name)
        else:
            self.crowd.changed()
        self._expire(conversation)

    def tell_rooms(self, user: User) -> None:
        """Each of C{user}'s sessions hears which rooms it is in (the page lists them)."""
        names = [c.name for c in self.joined(user)]
        for s in user.sessions:
            self.voice.event(s, RoomList(names, self.current(s).name))

    def _last(self, user: User) -> Conversation:
        """The room a session goes back to: the last one joined, or the default (someone
        who parted it is always in another)."""
        return next(reversed(user.rooms.values()), self.default)

    def gone(self, user: User) -> list[str]:
        """C{user}'s last session went: out of every room; the names of those rooms."""
        rooms = list(user.rooms.values())
        for conversation in rooms:
            conversation.remove(user)
            self._expire(conversation)
        user.rooms = {}
        self.all.enter_default(user)  # the next connection starts there
        return [c.name for c in rooms]

    def rejoin(self, session: Session, names: tuple[str, ...], quiet: bool = False) -> None:
        """At login: the account's rooms (and those the session had as a guest) again;
        C{quiet} when it was here a moment ago (a reload tells nobody)."""
        user = session.user
        account = user.account
        for key, conversation in list(user.rooms.items()):
            if account is not None:
                self._remember(account, conversation.name, True)
                if conversation.owner is None and conversation.maker is user:
                    conversation.owner = account  # made as a guest a moment before logging in
                    self._claim(conversation, session)
            if self.all.get(conversation.name) is not conversation:
                del user.rooms[key]  # expired meanwhile
        for name in names:
            conversation = self.all.get(name)
            if conversation is self.default or (
                conversation is not None and conversation.key in user.rooms
            ):
                continue
            try:
                self._may_join(user, conversation)
            except CommandError as e:
                self.voice.tell(session, f"not back in {name}: {e}")
                if account is not None:
                    self._remember(account, name, False)
                continue
            if conversation is None:
                if len(self.all) >= self.config.max_rooms or self.all.problem(name):
                    self.voice.tell(session, f"not back in {name}: it is gone")
                    continue
                conversation = self.all.add(Conversation(name))
            self._enter(user, conversation)
            if not quiet:
                self.crowd.moved("joined", user.name, conversation.name)
        if not user.rooms and self.all.enter_default(user):
            self.crowd.moved("joined", user.name, self.default.name)
        if user.rooms:
            shown = ", ".join(c.name for c in self.joined(user))
            self.voice.tell(session, f"you are in {shown}")
            self.tell_rooms(user)
        self.crowd.changed()

    def _expire(self, conversation: Conversation) -> None:
        """An unowned room nobody is in (on any node) ends."""
        if (
            conversation is not self.default
            and conversation.owner is None
            and not conversation.users
            and not conversation.names()
        ):
            self.all.drop(conversation)
            self.crowd.changed()

    # -- what owners may do ----------------------------------------------------------------

    def set_topic(self, session: Session, name: str | None, text: str) -> None:
        conversation = self._mine(session, name, "set the topic of")
        conversation.topic = text
        self._keep(conversation)
        who = session.user.name
        said = f"{who} set the topic: {text}" if text else f"{who} cleared the topic"
        self.voice.notice_all(said, room=conversation.name, about="topic", subject=(who, text))

    def kick(self, session: Session, name: str | None, who: str, minutes_: int) -> None:
        conversation = self._mine(session, name, "remove people from")
        key = name_key(who)
        if key == session.user.key:
            raise CommandError("you cannot remove yourself; /part leaves the room")
        members = {u.key: u for u in conversation.users}
        spelled = members[key].name if key in members else None
        if spelled is None:
            spelled = next(
                (n for n in conversation.names() if name_key(n) == key),
                None,
            )
        if spelled is None:
            raise CommandError(f"nobody called {who} is in {conversation.name}")
        seconds = minutes_ * 60
        until = self.clock.seconds() + seconds
        for held in kick_keys(members[key]) if key in members else [key]:
            conversation.kicked[held] = until
        conversation.invited.discard(key)
        self.voice.notice_all(
            f"{spelled} was removed from {conversation.name} for {minutes(seconds)}"
            f" by {session.user.name}",
            room=conversation.name,
            about="removed",
            subject=(spelled, session.user.name),
        )
        if key in members:
            self._leave(members[key], conversation, "removed")
        self._keep(conversation)

    def invite(self, session: Session, name: str | None, who: str) -> str:
        """C{/invite NAME}: the room becomes invite-only (those in it stay invited) and
        C{who} may join it; returns their name as spelled."""
        conversation = self._mine(session, name, "invite people to")
        target = self.members.find(who)
        spelled = target.name if target else self.members.is_elsewhere(who)
        if spelled is None:
            raise CommandError(f"nobody called {who} is online; /list shows who is")
        if not conversation.invite_only:
            conversation.invite_only = True
            conversation.invited.update(name_key(n) for n in self.all.names(conversation))
            self.voice.notice_all(f"{conversation.name} is now invite-only", room=conversation.name)
        conversation.invited.add(name_key(spelled))
        held = kick_keys(target) if target is not None else [name_key(spelled)]
        for key in held:  # a guest's address too, or the invitation would not let them in
            conversation.kicked.pop(key, None)
        self._keep(conversation)
        told = f"{session.user.name} invited you to {conversation.name}; /join {conversation.name}"
        invited = (session.user.name, conversation.name)
        notice = Notice(told, about="invited", subject=invited)
        if target is not None:
            self.voice.tell_user(target, notice)
        else:
            self.link.invited(spelled, notice)
        return spelled

    def _mine(self, session: Session, name: str | None, what: str) -> Conversation:
        """The room named (or the current one), if the caller may change it: its owner,
        or anyone in a room without one (not the default room, which is everyone's)."""
        conversation = self.all.get(self.all.normal(name)) if name else self.current(session)
        if conversation is None:
            raise CommandError(f"there is no room {name}; /rooms lists them")
        user = session.user
        if conversation.owner is None:
            if conversation is self.default or conversation.key not in user.rooms:
                raise CommandError(f"only the owner may {what} {conversation.name}")
            if what != "set the topic of":
                raise CommandError(
                    f"{conversation.name} has no owner (a guest made it); "
                    "rooms made by accounts have one"
                )
        elif user.account is None or name_key(user.account) != name_key(conversation.owner):
            raise CommandError(
                f"only {conversation.owner}, its owner, may {what} {conversation.name}"
            )
        return conversation

    # -- what the doors and commands read --------------------------------------------------

    def current(self, session: Session) -> Conversation:
        found = self.all.get(session.room) if session.room else None
        user = session.user
        if found is None or not self.all.holds(user, found):
            found = self.default if self.all.holds(user, self.default) else self._last(user)
            session.move(found.name)
        return found

    def joined(self, user: User) -> list[Conversation]:
        """C{user}'s rooms: the default one first (unless parted), then in joining order."""
        if self.all.holds(user, self.default):
            return [self.default, *user.rooms.values()]
        return list(user.rooms.values())

    def _show_topic(self, session: Session, conversation: Conversation) -> None:
        if conversation.topic:
            told = Notice(f"topic: {conversation.topic}", conversation.name, "current")
            self.voice.event(session, told)

    def _tell_current(self, session: Session, text: str) -> None:
        """What a session is told as its current room changes (IRC, which has none, skips
        it: its client names the channel of every line)."""
        self.voice.event(session, Notice(text, about="current"))

    def _show_recent(self, session: Session, conversation: Conversation) -> None:
        since = self.clock.seconds() - self.config.history_ttl
        d = self.store.messages(0, 2**63 - 1, since, JOIN_HISTORY, (conversation.name,))

        def show(messages: list[Any]) -> None:
            if messages:
                self.voice.event(
                    session,
                    History(messages, f"recent in {conversation.name}", conversation.name),
                )

        d.addCallbacks(
            show, lambda f: log_failed(log, f, "reading {r} failed", r=conversation.name)
        )

    # -- what is kept ----------------------------------------------------------------------

    def _claim(self, conversation: Conversation, session: Session | None) -> None:
        """A room an account just made here: the store decides whose it is, since another
        node may have made it at the same moment (each thought it new); only then do the
        other nodes hear of it, so every node ends up with the owner the store kept."""
        key, mine = conversation.key, name_key(conversation.owner or "")
        self._claiming.add(key)

        def kept(raw: str) -> None:
            self._claiming.discard(key)
            owner = str(json.loads(raw).get("owner") or "")
            if name_key(owner) != mine:
                log.info(
                    "{room} was made on another node first: {owner} owns it", room=key, owner=owner
                )
                self.heard_state(raw)
                if session is not None:
                    self.voice.tell(
                        session,
                        f"{conversation.name} was made on another server at the same moment; "
                        f"{owner} owns it",
                    )
            self._keep(conversation)  # what changed meanwhile, and the other nodes

        def failed(failure: Failure) -> Failure:
            self._claiming.discard(key)
            self.link.room_changed(conversation.state())
            return failure

        d = self.store.claim_room(key, conversation.state()).addCallbacks(kept, failed)
        self._write(
            ("claim", key),
            d,
            lambda: self._claim(conversation, None) if self._exists(conversation) else None,
            "keeping the new room {r} failed",
            r=key,
        )

    def _keep(self, conversation: Conversation) -> None:
        """An owned room's state goes to the store (it outlives its members) and to the
        other nodes; while the store has not yet said whose a new room is, it waits for
        that (L{_claim})."""
        if conversation.key in self._claiming:
            return
        self._save(conversation)
        self.link.room_changed(conversation.state())

    def _save(self, conversation: Conversation) -> None:
        if conversation.owner is None:
            return
        self._write(
            ("room", conversation.key),
            self.store.save_room(conversation.key, conversation.state()),
            lambda: self._save(conversation) if self._exists(conversation) else None,
            "saving {r} failed",
            r=conversation.name,
        )

    def _remember(self, account: str, room: str, joined: bool) -> None:
        op = self.store.join_room if joined else self.store.part_room
        self._write(
            ("member", name_key(account), room),
            op(account, room),
            lambda: self._remember(account, room, joined),
            "saving the rooms of {a} failed",
            a=account,
        )

    def _write(
        self,
        about: tuple[str, ...],
        d: Deferred[Any],
        again: Callable[[], None],
        what: str,
        **fields: object,
    ) -> None:
        """Follow the write C{d} about C{about}: if an outage keeps it from the store, it is
        done again (C{again}) once the database answers, unless a later write about the
        same thing came meanwhile (the store does them in order: the later one holds).
        Else what is kept would differ from what everyone here sees until a restart loses
        it."""
        mine = object()
        self._writing[about] = mine
        self._missed.pop(about, None)

        def failed(failure: Failure) -> None:
            if self._writing.get(about) is mine and failure.check(StoreUnavailable):
                self._missed[about] = again
                self._write_after_outage()
            log_failed(log, failure, what, **fields)

        def settled(_: object) -> None:
            if self._writing.get(about) is mine:
                del self._writing[about]

        d.addErrback(failed).addBoth(settled)

    def _write_after_outage(self) -> None:
        if self._awaiting_recovery:
            return
        self._awaiting_recovery = True

        def again(_: object) -> None:
            self._awaiting_recovery = False
            missed, self._missed = self._missed, {}
            log.info(
                "redoing {n} room reads and writes the outage kept from the database",
                n=len(missed),
            )
            for write in missed.values():
                write()

        self.store.recovered().addCallback(again)

    def _unwritten(self, raw: str) -> bool:
        """Whether the kept room state C{raw} is of a room whose state here is still being
        written to the store, or waits for the end of an outage to be."""
        try:
            about = ("room", room_key(str(json.loads(raw)["name"])))
        except (ValueError, KeyError, TypeError):
            return False  # heard_state says it is malformed
        return about in self._writing or about in self._missed

    def _exists(self, conversation: Conversation) -> bool:
        return self.all.get(conversation.name) is conversation


__all__ = ["Rooms", "room_key"]
