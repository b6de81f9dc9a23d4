"""The kind platform's tool downloads: checked before use, refused on mismatch, one line on failure.

A real HTTP server on loopback serves the "downloads"; each is a shell script
that would leave a marker file if it were ever executed.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import platform
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.kubectl.tools import (
    ChecksumMismatch,
    DownloadFailed,
    Tool,
    UnpinnedHost,
    ensure_tool,
    host_platform,
    http_fetch,
    load_tools,
)


def script(marker: Path) -> bytes:
    return f"#!/bin/sh\ntouch {marker}\necho v9.9.9\n".encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def tool(url: str, data: bytes, *, member: str = "", sha: str | None = None) -> Tool:
    return Tool("faketool", "v9.9.9", url, sha or hashlib.sha256(data).hexdigest(), ("version",), member)


def test_every_pinned_tool_has_a_version_an_https_url_and_a_sha256() -> None:
    tools = load_tools()
    assert set(tools) == {"kind", "kubectl", "helm", "istioctl"}
    for pinned in tools.values():
        assert pinned.url.startswith("https://") and pinned.version in pinned.url
        assert len(pinned.sha256) == 64 and int(pinned.sha256, 16) >= 0


def test_a_good_download_is_checked_cached_and_reused(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    marker = tmp_path / "ran"
    data = script(marker)
    (root / "faketool").write_bytes(data)
    pinned = tool(f"{base}/faketool", data)
    fetched: list[str] = []

    def counting(url: str, timeout: float) -> bytes:
        fetched.append(url)
        return http_fetch(url, timeout)

    path = ensure_tool(pinned, tmp_path / "bin", fetch=counting, use_path=False)
    assert path.read_bytes() == data and path.stat().st_mode & 0o100
    assert ensure_tool(pinned, tmp_path / "bin", fetch=counting, use_path=False) == path
    assert len(fetched) == 1  # the second call trusted the cache by its sum
    path.write_bytes(data + b"# tampered\n")
    ensure_tool(pinned, tmp_path / "bin", fetch=counting, use_path=False)
    assert len(fetched) == 2 and path.read_bytes() == data  # a changed cache file is not trusted
    assert not marker.exists()


def test_a_checksum_mismatch_is_refused_deleted_and_never_run(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    marker = tmp_path / "ran"
    data = script(marker)
    (root / "faketool").write_bytes(data)
    pinned = tool(f"{base}/faketool", data, sha="0" * 64)
    with pytest.raises(ChecksumMismatch) as raised:
        ensure_tool(pinned, tmp_path / "bin", use_path=False)
    message = str(raised.value)
    assert "\n" not in message and hashlib.sha256(data).hexdigest() in message and "0" * 64 in message
    assert not marker.exists()
    assert not (tmp_path / "bin").exists() or list((tmp_path / "bin").iterdir()) == []


def test_a_tool_inside_an_archive_is_unpacked_only_after_the_check(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    data = script(tmp_path / "ran")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("linux-amd64/faketool")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    (root / "faketool.tar.gz").write_bytes(buffer.getvalue())
    path = ensure_tool(tool(f"{base}/faketool.tar.gz", buffer.getvalue(), member="linux-amd64/faketool"),
                       tmp_path / "bin", use_path=False)
    assert path.read_bytes() == data


def test_no_network_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    pinned = tool("http://127.0.0.1:9/faketool", b"x")  # the discard port: nothing listens
    with pytest.raises(DownloadFailed) as raised:
        ensure_tool(pinned, tmp_path / "bin", use_path=False, timeout=2)
    assert "\n" not in str(raised.value) and "cannot download" in str(raised.value)
    assert "put the pinned tool on PATH" in str(raised.value)


def test_a_tool_on_path_at_the_pinned_version_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    on_path = tmp_path / "path"
    on_path.mkdir()
    (on_path / "faketool").write_bytes(script(marker))
    (on_path / "faketool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")

    def no_network(url: str, timeout: float) -> bytes:
        raise AssertionError("must not download a tool that is on PATH")

    assert ensure_tool(tool("https://example.invalid/x", b"x"), tmp_path / "bin", fetch=no_network) == \
        on_path / "faketool"
    other = Tool("faketool", "v1.0.0", "http://127.0.0.1:9/x", "0" * 64, ("version",))
    with pytest.raises(DownloadFailed):  # on PATH, but another version: not used
        ensure_tool(other, tmp_path / "bin", timeout=2)


def test_the_ci_matrix_can_pick_another_pinned_istio_and_only_a_pinned_one() -> None:
    other = load_tools(versions={"istioctl": "1.30.3"})["istioctl"]
    assert other.version == "1.30.3" and "1.30.3" in other.url and other.sha256 != load_tools()["istioctl"].sha256
    with pytest.raises(DownloadFailed) as raised:
        load_tools(versions={"istioctl": "1.29.0"})
    assert str(raised.value) == "istioctl 1.29.0 is not pinned; choose 1.31.1 or one of 1.30.3"


@pytest.mark.parametrize("host", ["darwin/arm64", "darwin/amd64", "linux/arm64"])
def test_a_host_without_a_pin_gets_one_line_and_nothing_is_fetched(host: str, tmp_path: Path) -> None:
    pinned = load_tools()["kind"]

    def no_network(url: str, timeout: float) -> bytes:
        raise AssertionError(f"fetched {url}, a download for another host")

    with pytest.raises(UnpinnedHost) as raised:
        ensure_tool(pinned, tmp_path / "bin", fetch=no_network, use_path=False, host=host)
    assert str(raised.value) == (f"kind v0.33.0 is pinned only for linux/amd64; this host is {host}; put kind "
                                 "v0.33.0 on PATH (it is used when it reports that version), or add a "
                                 f"{host} url and sha256 for it to cluster/versions.toml")
    assert not (tmp_path / "bin").exists()


def test_every_pin_names_the_host_its_download_is_for() -> None:
    for pinned in [*load_tools().values(), load_tools(versions={"istioctl": "1.30.3"})["istioctl"]]:
        assert pinned.host.replace("/", "-") in pinned.url or pinned.host in pinned.url, (pinned.name, pinned.url)


def test_host_platform_uses_go_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for system, machine, expected in [("Linux", "x86_64", "linux/amd64"), ("Darwin", "arm64", "darwin/arm64"),
                                      ("Linux", "aarch64", "linux/arm64")]:
        monkeypatch.setattr(platform, "system", lambda s=system: s)
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        assert host_platform() == expected


def test_a_tool_on_path_is_used_on_any_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tmp_path / "path"
    on_path.mkdir()
    (on_path / "faketool").write_bytes(script(tmp_path / "ran"))
    (on_path / "faketool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")
    assert ensure_tool(tool("https://example.invalid/x", b"x"), tmp_path / "bin", host="darwin/arm64") == \
        on_path / "faketool"
