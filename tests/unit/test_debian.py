"""The private apt configuration: made from the host's own sources, never naming an archive of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import debian
from lab.errors import LabError

DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://other.example/apt
Suites: nodistro
Components: main
Enabled: no
"""

ONE_LINE = """\
# the classic format
deb [arch=amd64 signed-by=/etc/keys/debian.gpg] http://mirror.example/debian bookworm main
deb-src http://mirror.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main
deb http://thirdparty.example/apt stable main
"""

MADISON = """\
linux-source-6.12 | 6.12.117-1~deb12u1 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-source-6.12 | 6.12.117-1 | http://mirror.example/debian sid/main amd64 Packages
linux-source-7.3 | 7.3.4-1~bpo13+1 | http://mirror.example/debian trixie-backports/main amd64 Packages
linux | 7.3.4-1 | http://mirror.example/debian sid/main Sources
"""


def test_deb822_stanzas_enabled_deb_only() -> None:
    entries = debian.parse_deb822(DEB822)
    assert [e.suites for e in entries] == [("bookworm", "bookworm-updates"), ("bookworm-security",)]
    assert entries[0].uris == ("http://mirror.example/debian",)
    assert entries[0].components == ("main", "contrib")
    assert entries[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line_format_with_options() -> None:
    entries = debian.parse_one_line(ONE_LINE)
    assert [(e.uris[0], e.suites[0]) for e in entries] == [
        ("http://mirror.example/debian", "bookworm"),
        ("http://mirror.example/debian-security", "bookworm-security"),
        ("http://thirdparty.example/apt", "stable"),
    ]
    assert entries[0].signed_by == "/etc/keys/debian.gpg"


@pytest.mark.parametrize("text", [DEB822, ONE_LINE])
def test_private_sources_reuse_the_hosts_archive_and_add_newer_suites(text: str) -> None:
    entries = debian.parse_deb822(text) if "Types:" in text else debian.parse_one_line(text)
    lines = debian.private_sources(entries, "bookworm").splitlines()
    # The host's own Debian suites stay; third-party and disabled sources do not come along.
    assert any(" http://mirror.example/debian bookworm " in f" {line} " for line in lines)
    assert any("debian-security bookworm-security" in line for line in lines)
    assert not any("thirdparty" in line or "other.example" in line for line in lines)
    # The newer suites come from the same archive, with the same key.
    for suite in debian.NEWER_SUITES:
        (line,) = [ln for ln in lines if f" {suite} " in ln]
        assert "http://mirror.example/debian " in line
        assert ("signed-by=" in line) == ("signed-by=" in lines[0])


def test_a_host_without_a_debian_archive_is_told_what_to_do() -> None:
    entries = debian.parse_one_line("deb http://thirdparty.example/apt stable main\n")
    with pytest.raises(LabError, match="no Debian archive for 'bookworm'.*pass --src DIR"):
        debian.private_sources(entries, "bookworm")


def test_madison_and_the_choice_of_version() -> None:
    offers = debian.parse_madison(MADISON)
    assert [o.suite for o in offers] == ["bookworm-security", "sid", "trixie-backports"]
    six = [o for o in offers if o.package == "linux-source-6.12"]
    # The host release's own (security-supported) build wins over a newer suite's.
    assert debian.choose(six, "bookworm") == six[0]
    seven = [o for o in offers if o.package == "linux-source-7.3"]
    assert debian.choose(seven, "bookworm") == debian.Offer("linux-source-7.3", "7.3.4-1~bpo13+1", "trixie-backports")
    assert debian.choose([], "bookworm") is None


def test_host_files_are_read_in_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(ONE_LINE)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://ignored.example/ x main\n")
    entries = debian.host_entries(tmp_path)
    assert len(entries) == 5
    assert not any("ignored" in e.uris[0] for e in entries)
