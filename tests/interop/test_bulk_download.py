"""A 50 MB download through the proxy arrives intact, and the access log counts every byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from .conftest import CHUNK_SIZE, crossed_proxy, curl, sha256_file


def download_with_curl(proxy_url: str, url: str, workdir: Path) -> tuple[str, int]:
    """curl -o FILE; returns the file's sha256 and size."""
    target = workdir / "download.bin"
    result = curl("--proxy", proxy_url, "--output", str(target), url)
    assert result.returncode == 0, result.stderr
    return sha256_file(target), target.stat().st_size


def download_with_requests(proxy_url: str, url: str, workdir: Path) -> tuple[str, int]:
    """requests streaming the body in chunks; returns its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with requests.Session() as session:
        session.trust_env = False
        with session.get(url, proxies={"http": proxy_url}, stream=True, timeout=10) as response:
            response.raise_for_status()
            for chunk in response.iter_content(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


@pytest.mark.parametrize(
    ("download", "scheme", "origin_host"),
    [
        pytest.param(download_with_curl, "socks5", "127.0.0.1", id="curl-ipv4"),
        pytest.param(download_with_requests, "socks5h", "::1", id="requests-ipv6"),
    ],
)
def test_50_mb_download_arrives_intact_and_is_counted_in_bytes_down(
    socks_server, origins, big_body, tmp_path, download, scheme, origin_host
) -> None:
    origin = origins[origin_host]
    digest, size = download(socks_server.url(scheme), origin.url("/big"), tmp_path)
    assert size == big_body.size
    assert digest == big_body.sha256
    crossed_proxy(socks_server, origin.destination, min_bytes_down=big_body.size)
