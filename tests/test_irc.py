"""The IRC door over real sockets: an in-process client sends raw IRC lines and reads what
an IRC client would, next to telnet users in the same chat."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from tests.support import LineClient, line_client

CAPS = "server-time message-tags batch echo-message account-tag away-notify draft/chathistory"


class Irc(LineClient):
    """A raw IRC client: C{send} a line, C{expect} a pattern; answers PING like a client."""

    async def numeric(self, number: str, timeout: float = 5.0) -> str:
        return await self.expect(rf"^(@\S+ )?:chatd {number} ", timeout)


async def irc(
    server: Any,
    nick: str = "ann",
    caps: str | None = None,
    sasl: tuple[str, str] | None = None,
    password: str | None = None,
    welcome: bool = True,
) -> Irc:
    client = Irc()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.ports["irc"])
    await endpoint.connect(Factory.forProtocol(lambda: client))
    if caps or sasl:
        client.send("CAP LS 302")
    if password is not None:
        client.send(f"PASS {password}")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick} the tester")
    if caps or sasl:
        await client.expect(r" CAP \* LS ")
        wanted = " ".join(filter(None, [caps, "sasl" if sasl else ""]))
        client.send(f"CAP REQ :{wanted}")
        await client.expect(r" CAP \S+ ACK ")
    if sasl:
        client.send("AUTHENTICATE PLAIN")
        await client.expect(r"^AUTHENTICATE \+$")
        payload = base64.b64encode(f"\0{sasl[0]}\0{sasl[1]}".encode()).decode()
        client.send(f"AUTHENTICATE {payload}")
        await client.expect(r" (903|904) ")
    if caps or sasl:
        client.send("CAP END")
    if welcome:
        await client.numeric("366")  # the end of #lobby's names: registered and joined
    return client


@pytest_twisted.async_yield_fixture
async def srv(serve):
    """A service with the line and IRC doors (stopped by C{serve})."""
    yield await serve(doors=("line", "irc"), messages_per_hour=0)


@pytest_twisted.ensureDeferred
async def test_registration_welcomes_with_isupport_and_puts_the_user_in_the_lobby(srv):
    bob = await line_client(srv.ports["line"])
    ann = await irc(srv, "ann")
    welcome = "\n".join(ann.lines)
    assert ":chatd 001 ann :Welcome to chatd, ann" in welcome
    for n in ("002", "003", "004"):
        assert f":chatd {n} ann " in welcome
    isupport = next(line for line in ann.lines if " 005 " in line)
    for token in ("CHANTYPES=#", "NICKLEN=25", "CHANNELLEN=", "CASEMAPPING=ascii", "NETWORK="):
        assert token in isupport
    assert ":chatd 376 ann " in welcome  # the MOTD
    assert ":ann!chat@chatd JOIN #lobby" in welcome
    names = next(line for line in ann.lines if " 353 " in line)
    assert names.startswith(":chatd 353 ann = #lobby :") and "ann" in names.split(":")[-1]
    await bob.expect(r"^\* ann joined$")
    assert not [line for line in bob.lines if "is now" in line]  # joined once, as ann


@pytest_twisted.ensureDeferred
async def test_talking_both_ways_with_a_telnet_user(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    ann = await irc(srv, "ann")
    ann.send("PRIVMSG #lobby :hello from irssi")
    await bob.expect(r"^ann: hello from irssi$")
    bob.send("hi ann")
    await ann.expect(r"^:bob!chat@chatd PRIVMSG #lobby :hi ann$")
    ann.send("NOTICE #lobby :a notice is said too")
    await bob.expect(r"^ann: a notice is said too$")
    ann.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    await bob.expect(r"^ann: \* waves$")
    # A whisper each way.
    ann.send("PRIVMSG bob :just you")
    await bob.expect(r"^>> ann: just you$")
    bob.send("/whisper ann and you")
    await ann.expect(r"^:bob!chat@chatd PRIVMSG ann :and you$")
    ann.send("PRIVMSG nobody :hello?")
    assert "nobody" in await ann.numeric("401")
    ann.send("PRIVMSG #lobby :")
    await ann.numeric("412")


@pytest_twisted.ensureDeferred
async def test_part_leaves_the_lobby_for_another_room_and_join_comes_back(srv):
    bob = await line_client(srv.ports["line"])
    ann = await irc(srv, "ann")
    ann.send("PART #lobby")
    assert "#lobby is the only room you are in" in await ann.numeric("400")
    ann.send("JOIN #dev")
    await ann.numeric("366")
    ann.send("PART #lobby :brb")
    await ann.expect(r"^:ann!chat@chatd PART #lobby :brb$")
    await bob.expect(r"^\* ann left$")
    ann.send("PRIVMSG #lobby :can I?")
    assert "JOIN #lobby first" in await ann.numeric("404")
    ann.send("PART #lobby")
    await ann.numeric("442")
    ann.send("JOIN #LOBBY")
    await ann.expect(r"^:ann!chat@chatd JOIN #lobby$")
    await ann.numeric("366")
    bob.send("welcome back")
    await ann.expect(r"PRIVMSG #lobby :welcome back$")


@pytest_twisted.ensureDeferred
async def test_names_who_whois_topic_list_mode_kick_invite(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    ann = await irc(srv, "ann")
    ann.send("NAMES #lobby")
    names = await ann.numeric("353")
    assert set(names.split(":")[-1].split()) == {"ann", "bob"}
    await ann.numeric("366")
    ann.send("WHO #lobby")
    who = [await ann.numeric("352"), await ann.numeric("352")]
    assert any(" bob H :0 guest (line)" in line for line in who)
    await ann.numeric("315")
    ann.send("WHOIS bob")
    assert (await ann.numeric("311")).startswith(":chatd 311 ann bob chat chatd * :guest (line)")
    assert "#lobby" in await ann.numeric("319")
    await ann.numeric("318")
    ann.send("WHOIS ghost")
    await ann.numeric("401")
    ann.send("TOPIC #lobby")
    await ann.numeric("331")
    ann.send("TOPIC #lobby :new topic")
    assert "only the owner" in await ann.numeric("482")
    ann.send("LIST")
    await ann.numeric("321")
    assert (await ann.numeric("322")).startswith(":chatd 322 ann #lobby 2 ")
    await ann.numeric("323")
    ann.send("MODE #lobby")
    assert (await ann.numeric("324")).endswith("#lobby +nt")
    ann.send("MODE #lobby b")
    await ann.numeric("368")
    ann.send("MODE #lobby +m")
    await ann.numeric("482")
    ann.send("MODE ann")
    await ann.numeric("221")
    ann.send("MODE ann +i")
    await ann.expect(r"^:ann!chat@chatd MODE ann \+i$")
    ann.send("MODE ann +x")
    await ann.numeric("501")
    ann.send("MODE bob")
    await ann.numeric("502")
    ann.send("KICK #lobby bob :out")
    assert "owner" in await ann.numeric("482")
    ann.send("INVITE bob #lobby")
    assert "already" in await ann.numeric("443")
    ann.send("INVITE bob #other")
    await ann.numeric("403")
    ann.send("MOTD")
    await ann.numeric("376")
    ann.send("FROB")
    assert "FROB :Unknown command" in await ann.numeric("421")
    bob.send("still here")
    await ann.expect("still here")


@pytest_twisted.ensureDeferred
async def test_nick_changes_go_through_the_rooms_name_rules(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    ann = await irc(srv, "ann")
    cy = await irc(srv, "cy")
    ann.send("NICK annie")
    await ann.expect(r"^:ann!chat@chatd NICK annie$")
    await bob.expect(r"^\* ann is now known as annie$")
    await cy.expect(r"^:ann!chat@chatd NICK annie$")
    ann.send("NICK bob")
    assert "bob is taken" in await ann.numeric("433")
    ann.send("NICK a[b]")
    assert "letters, digits" in await ann.numeric("432")
    # A name IRC cannot show as it is: "." is written "|", and back.
    bob.send("/rename b.o.b")
    await ann.expect(r"^:bob!chat@chatd NICK b\|o\|b$")
    ann.send("PRIVMSG b|o|b :dots")
    await bob.expect(r"^>> annie: dots$")


@pytest_twisted.ensureDeferred
async def test_a_taken_nick_at_registration_asks_for_another(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    client = await irc(srv, "bob", welcome=False)
    assert "bob is taken" in await client.numeric("433")
    client.send("NICK bob_")
    await client.expect(r"^:chatd 001 bob_ ")
    await bob.expect(r"^\* bob_ joined$")


@pytest_twisted.ensureDeferred
async def test_ping_never_counts_against_the_flood_caps(serve):
    server = await serve(doors=("line", "irc"), lines_per_second=2)
    ann = await irc(server, "ann")
    for i in range(30):
        ann.send(f"PING :t{i}")
    await ann.expect(r"^:chatd PONG chatd :t29$")
    assert not [line for line in ann.lines if "lines a second" in line]
    assert sum(" PONG " in line for line in ann.lines) == 30
    for i in range(6):
        ann.send(f"WHOIS ann{i}")
    await ann.expect("lines a second")  # other commands do count


@pytest_twisted.ensureDeferred
async def test_the_rooms_refusals_are_numerics_with_its_text(serve):
    server = await serve(doors=("line", "irc"), messages_per_hour=1)
    ann = await irc(server, "ann")
    ann.send("PRIVMSG #lobby :one")
    ann.send("PRIVMSG #lobby :two")
    refused = await ann.numeric("404")
    assert "you have sent 1 messages in the last hour" in refused
    ann.send("PRIVMSG #lobby :" + "x" * 5000)
    assert "over the limit of 4096" in await ann.numeric("417|404")


@pytest_twisted.ensureDeferred
async def test_capabilities_echo_time_msgid_account_and_nak(srv):
    ann = await irc(srv, "ann", caps="server-time message-tags echo-message")
    ann.send("CAP REQ :no-such-cap")
    await ann.expect(r" CAP ann NAK :no-such-cap$")
    ann.send("CAP LIST")
    listed = await ann.expect(r" CAP ann LIST ")
    assert set(listed.split(":")[-1].split()) == {"server-time", "message-tags", "echo-message"}
    ann.send("PRIVMSG #lobby :echo me")
    echoed = await ann.expect(r"PRIVMSG #lobby :echo me$")
    tags = dict(t.split("=") for t in echoed.split(" ")[0][1:].split(";"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tags["time"])
    assert tags["msgid"].isdigit()
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    ann.send("PRIVMSG bob :whispers echo too")
    await ann.expect(r"^@\S*msgid=w\d+\S* :ann!chat@chatd PRIVMSG bob :whispers echo too$")


@pytest_twisted.ensureDeferred
async def test_sasl_logs_in_to_an_account_made_on_telnet_and_joins_once(srv):
    maker = await line_client(srv.ports["line"])
    maker.send("/register ann secret-pass")
    await maker.expect("account ann created")
    maker.close()
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    client = await irc(srv, "whatever", caps="account-tag", sasl=("ann", "secret-pass"))
    text = "\n".join(client.lines)
    assert ":chatd 900 whatever ann!chat@chatd ann :You are now logged in as ann" in text
    assert ":chatd 903 " in text and ":chatd 001 ann " in text
    client.send("WHOIS ann")
    assert (await client.numeric("330")).endswith("ann ann :is logged in as")
    client.send("PRIVMSG #lobby :it is me")
    await bob.expect(r"^ann: it is me$")
    # Others saw the account arrive once, under its own name.
    about_ann = [line for line in bob.lines if re.search(r"\bann\b", line)]
    assert about_ann in (["ann: it is me"], ["* ann joined", "ann: it is me"]), about_ann
    wrong = await irc(srv, "mallory", sasl=("ann", "not-the-password"), welcome=False)
    await wrong.expect(r"^:chatd 001 mallory ")  # a guest, after CAP END
    assert ":chatd 904 mallory :SASL authentication failed: wrong name or password" in wrong.lines


@pytest_twisted.ensureDeferred
async def test_pass_logs_in_and_a_wrong_one_is_refused(srv):
    maker = await line_client(srv.ports["line"])
    maker.send("/register cy cy-password")
    await maker.expect("account cy created")
    maker.send("/logout")
    await maker.expect("you are ")
    cy = await irc(srv, "cy", password="cy-password")
    assert ":chatd 001 cy " in "\n".join(cy.lines)
    bad = await irc(srv, "eve", password="cy:wrong-password", welcome=False)
    assert "Password incorrect" in await bad.numeric("464")
    await bad.expect(r"^ERROR :Closing link")


@pytest_twisted.ensureDeferred
async def test_chathistory_fills_the_gap_after_a_reconnect(srv):
    maker = await line_client(srv.ports["line"])
    maker.send("/register dee dee-password")
    await maker.expect("account dee created")
    caps = "server-time message-tags batch draft/chathistory account-tag"
    dee = await irc(srv, "dee", caps=caps, sasl=("dee", "dee-password"))
    maker.send("before the gap")
    seen = await dee.expect(r"PRIVMSG #lobby :before the gap$")
    last = re.search(r"msgid=(\d+)", seen).group(1)
    dee.send("QUIT :train tunnel")
    await dee.expect(r"^ERROR ")
    maker.send("missed one")
    maker.send("missed two")
    dee = await irc(srv, "dee", caps=caps, sasl=("dee", "dee-password"))
    dee.send(f"CHATHISTORY AFTER #lobby msgid={last} 50")
    start = await dee.expect(r"^:chatd BATCH \+(\S+) chathistory #lobby$")
    ref = start.split()[2][1:]
    one = await dee.expect(rf"^@batch={ref};time=\S+ :\S+ PRIVMSG #lobby :missed one$")
    await dee.expect(rf"^@batch={ref};time=\S+ :\S+ PRIVMSG #lobby :missed two$")
    await dee.expect(rf"^:chatd BATCH -{ref}$")
    assert "msgid=" in one and "account=dee" in one  # the telnet device is dee's too
    dee.send("CHATHISTORY LATEST #lobby * 1")
    await dee.expect(r"^:chatd BATCH \+")
    await dee.expect(r"PRIVMSG #lobby :missed two$")
    dee.send("CHATHISTORY BEFORE #lobby msgid=1 10")
    await dee.expect(r"^:chatd BATCH \+")
    dee.send("CHATHISTORY LATEST #nowhere * 10")
    await dee.expect(r"^:chatd FAIL CHATHISTORY INVALID_TARGET ")
    dee.send("CHATHISTORY AFTER #lobby bogus 10")
    await dee.expect(r"^:chatd FAIL CHATHISTORY INVALID_MSGREFTYPE ")


@pytest_twisted.ensureDeferred
async def test_long_lines_from_other_doors_are_split_within_512_bytes(srv):
    bob = await line_client(srv.ports["line"])
    ann = await irc(srv, "ann")
    text = ("é" * 700) + " " + ("word " * 300).strip()
    bob.send(text)
    pieces: list[str] = []
    while "".join(pieces).replace(" ", "") != text.replace(" ", ""):
        line = await ann.expect(r"PRIVMSG #lobby :")
        pieces.append(line.split(" :", 1)[1])
    raw = [line.encode() for line in ann.lines if "PRIVMSG" in line]
    assert len(raw) > 2 and all(len(r) + 2 <= 512 for r in raw)


@pytest_twisted.ensureDeferred
async def test_away_quit_and_chatd_commands(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    ann = await irc(srv, "ann")
    cy = await irc(srv, "cy", caps="away-notify")
    ann.send("AWAY :lunch")
    await ann.numeric("306")
    await cy.expect(r"^:ann!chat@chatd AWAY :lunch$")
    cy.send("PRIVMSG ann :there?")
    assert (await cy.numeric("301")).endswith("ann lunch")
    cy.send("WHO ann")
    assert " ann G :0 " in await cy.numeric("352")
    ann.send("AWAY")
    await ann.numeric("305")
    await cy.expect(r"^:ann!chat@chatd AWAY$")
    ann.send("HELP")  # a chatd command, sent raw
    await ann.expect(r"^:chatd NOTICE ann :Type a line to talk to the room")
    ann.send("QUIT :bye now")
    await ann.expect(r"^ERROR :Closing link: Quit: bye now$")
    await bob.expect(r"^\* ann left$")
    await cy.expect(r"^:ann!chat@chatd QUIT ")


@pytest_twisted.ensureDeferred
async def test_bad_input_is_answered(srv):
    early = await irc(srv, "early", welcome=False)
    await early.numeric("001")
    fresh = Irc()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", srv.ports["irc"])
    await endpoint.connect(Factory.forProtocol(lambda: fresh))
    fresh.send("PRIVMSG #lobby :too soon")
    await fresh.numeric("451")
    fresh.send(b"NICK \xff\xfe")
    await fresh.expect("not valid UTF-8")
    fresh.send("X" * 9000)
    await fresh.numeric("417")
    fresh.send("NICK fine")
    fresh.send("USER fine 0 * :Fine")
    await fresh.expect(r"^:chatd 001 fine ")


@pytest_twisted.ensureDeferred
async def test_the_default_room_setting_names_the_channel(serve):
    server = await serve(doors=("line", "irc"), default_room="#chat")
    ann = await irc(server, "ann")
    assert ":ann!chat@chatd JOIN #chat" in ann.lines
    ann.send("PRIVMSG #lobby :hi")
    assert "no room #lobby" in await ann.numeric("403")


def test_a_default_room_is_a_channel_name():
    from chatd.config import ConfigError, load

    assert load(overrides={"default_room": "#chat"}).default_room == "#chat"
    with pytest.raises(ConfigError, match="a room name is #"):
        load(overrides={"default_room": "lobby"})
