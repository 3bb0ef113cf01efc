"""Settings: an INI file, command-line options that win, and clear usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from chatd import config
from chatd.service import Options


def parse(*args: str) -> config.Config:
    options = Options()
    options.parseOptions(list(args))
    return options.config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file():
    c = parse()
    # The backlog holds a reconnect storm (docs/operations.md), not Twisted's 50.
    assert c.line == "tcp:6969:interface=127.0.0.1:backlog=4096"
    assert c.web == "tcp:8080:interface=127.0.0.1:backlog=4096"
    assert c.minechat_read.endswith(":backlog=4096") and c.minechat_write.endswith(":backlog=4096")
    assert c.metrics == "none"
    assert c.max_line_bytes == 4096
    assert c.max_output_bytes == 1048576


def test_the_file_sets_doors_and_limits_and_the_command_line_wins(tmp_path):
    path = write(
        tmp_path,
        "[server]\nline = tcp:7000:interface=127.0.0.1\nweb = none\ndata_dir = /srv/chat\n"
        "[limits]\nmax_line_bytes = 512\nhandshake_timeout = 2.5\n"
        "[accounts]\nlogin_required = yes\n",
    )
    c = parse("--config", path, "--line", "tcp:7001:interface=127.0.0.1")
    assert c.line == "tcp:7001:interface=127.0.0.1"
    assert c.web == "none"
    assert c.data_dir == "/srv/chat"
    assert c.max_line_bytes == 512
    assert c.handshake_timeout == 2.5
    assert c.login_required is True
    assert parse("-c", path, "--data-dir", "here").data_dir == "here"


def test_sections_for_plugins_are_kept_for_them(tmp_path):
    path = write(tmp_path, "[dice]\nsides = 20\n")
    assert parse("--config", path).extra == {"dice": {"sides": "20"}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nlien = tcp:7000\n", "[server] has no setting 'lien'; known: data_dir, irc,"),
        ("[limits]\nmax_line_bytes = lots\n", "[limits] max_line_bytes: 'lots' is not a valid int"),
        ("[limits]\nmax_line_bytes = -1\n", "[limits] max_line_bytes: must not be negative"),
        ("[accounts]\nlogin_required = maybe\n", "'maybe' is not a valid bool"),
        ("line = tcp:7000\n", "is not a valid INI file"),
        ("[server]\nline = a\nline = b\n", "is not a valid INI file"),
    ],
)
def test_a_bad_file_is_a_usage_error_that_says_what_is_wrong(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        parse("--config", path)
    assert message in str(raised.value)
    assert path in str(raised.value)


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"cannot read config file .*nope.ini: No such file"):
        parse("--config", str(tmp_path / "nope.ini"))


@pytest.mark.parametrize("endpoint", ["tcp:notaport", "bogus:6969", "6969x"])
def test_a_door_that_is_not_an_endpoint_is_a_usage_error(tmp_path, endpoint):
    with pytest.raises(UsageError, match=f"--web: '{endpoint}' is not a Twisted endpoint"):
        parse("--web", endpoint)
    path = write(tmp_path, f"[server]\nline = {endpoint}\n")
    with pytest.raises(UsageError, match=r"\[server\] line: .* is not a Twisted endpoint"):
        parse("--config", path)


def test_unknown_options_are_usage_errors():
    with pytest.raises(UsageError, match="option --bogus not recognized"):
        parse("--bogus", "1")


def test_the_example_file_is_a_valid_config_with_the_defaults(tmp_path):
    path = write(tmp_path, config.example_ini())
    assert parse("--config", path) == config.Config()


def test_seed_001s_config_ini_is_read_as_the_two_doors(tmp_path):
    path = write(
        tmp_path,
        "[tcp_server]\nhost = localhost\nport = 6969\n\n"
        "[ws_server]\nhost = localhost\nport = 6968\n",
    )
    c = parse("--config", path)
    assert c.line == "tcp:6969:interface=localhost:backlog=4096"
    assert c.web == "tcp:6968:interface=localhost:backlog=4096"
    assert parse("--config", path, "--web", "none").web == "none"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tcp_server]\nhost = localhost\n", r"\[tcp_server\] needs a port"),
        ("[ws_server]\nport = web\n", r"\[ws_server\]: 'tcp:web:interface=[^']*' is not a"),
        ("[tcp_server]\nport = 1\nhots = x\n", r"\[tcp_server\] has no setting 'hots'"),
        ("[tcp_server]\nport = 1\n[server]\nline = none\n", r"both set the line door; keep one"),
        ("[limit]\nmax_line_bytes = 1\n", r"no section \[limit\]; did you mean \[limits\]\?"),
    ],
)
def test_mistakes_in_sections_are_usage_errors(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        parse("--config", write(tmp_path, text))


def test_a_cluster_without_a_shared_database_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"must share one database: set \[storage\] url"):
        parse("--redis-url", "redis://127.0.0.1:6379")


def test_the_cluster_services_are_named_as_operators_write_them(tmp_path):
    path = write(
        tmp_path,
        "[storage]\nurl = postgresql://postgres@127.0.0.1/test\n"
        "[cluster]\nredis_url = redis://127.0.0.1:6379\n",
    )
    c = parse("--config", path)
    assert c.storage_url == "postgresql://postgres@127.0.0.1/test"
    assert c.redis_url == "redis://127.0.0.1:6379"
    assert "[storage]\n# " in config.example_ini() and "\nurl = \n" in config.example_ini()


def test_the_readme_lists_every_setting_with_its_default():
    """The README's settings block is config.example_ini(); regenerate it when this fails."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"```ini\n{config.example_ini()}```" in readme


def test_a_systemd_socket_that_was_not_passed_is_a_clear_error():
    with pytest.raises(UsageError, match=r"systemd passed no such socket; start chatd through its"):
        parse("--line", "systemd:domain=INET:index=0")


@pytest.mark.parametrize(
    ("url", "endpoint", "username", "password", "db"),
    [
        ("redis://10.0.0.6", "tcp:host=10.0.0.6:port=6379:timeout=5", None, None, 0),
        ("redis://:s3cret@h:7000/2", "tcp:host=h:port=7000:timeout=5", None, "s3cret", 2),
        ("redis://chatd:p%40ss@h/0", "tcp:host=h:port=6379:timeout=5", "chatd", "p@ss", 0),
        ("rediss://:pw@[::1]:6380", "tls:host=\\:\\:1:port=6380:timeout=5", None, "pw", 0),
    ],
)
def test_a_redis_url_names_where_and_how_to_log_in(url, endpoint, username, password, db):
    target = config.redis_target(url)
    assert target[:4] == (endpoint, username, password, db)
    assert (password or "@") not in target.where.partition("@")[0].replace("***", "")


def test_a_redis_url_may_name_the_authorities_to_trust(tmp_path):
    target = config.redis_target(f"rediss://:pw@h?ca={tmp_path}")
    assert target.endpoint.endswith(f":trustRoots={tmp_path}")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:hunter2@h", "is not redis://"),
        ("redis://:hunter2@h/one", "the path is a database number"),
        ("redis://chatd@h", "names a user without a password"),
        ("redis://:hunter2@h?ca=/tmp", "the only option is ?ca=DIR, for rediss://"),
        ("rediss://:hunter2@h?ca=/nowhere/at/all", "is not a directory"),
    ],
)
def test_a_bad_redis_url_is_a_usage_error_that_does_not_show_the_password(url, problem):
    with pytest.raises(UsageError) as raised:
        parse("--redis-url", url, "--storage-url", "postgresql://h/db")
    assert problem in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_storage_deadline_is_a_setting_and_must_be_positive(tmp_path):
    assert parse("--storage-timeout", "2.5").storage_timeout == 2.5
    assert parse().storage_timeout == 5.0
    with pytest.raises(UsageError, match="must be more than 0"):
        parse("--storage-timeout", "0")
