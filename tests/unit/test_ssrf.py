"""Webhook URLs that would reach our own network are refused, however they are spelled."""

from __future__ import annotations

import pytest

from imagegen.ssrf import WebhookUrlError, vet_webhook_url

REFUSED = [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://localhost/hook", "loopback"),
    ("https://127.1/hook", "loopback"),  # short form
    ("https://2130706433/hook", "loopback"),  # decimal
    ("https://0x7f000001/hook", "loopback"),  # hex
    ("https://0177.0.0.1/hook", "loopback"),  # octal
    ("https://10.0.0.1/hook", "private"),
    ("https://172.16.5.4/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://100.64.0.1/hook", "carrier-grade NAT"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://0.0.0.0/hook", "this network"),
    ("https://240.0.0.1/hook", "reserved"),
    ("https://[::1]/hook", "loopback"),
    ("https://[fd00::1]/hook", "unique local"),
    # Blocks Python's own flags missed on some patch releases, and ports.
    ("https://192.0.0.192/hook", "IETF protocol assignments"),
    ("https://[fec0::1]/hook", "site-local"),
    ("https://198.18.0.1/hook", "benchmarking"),
    ("https://[2001:db8::1]/hook", "documentation"),
    ("https://[::ffff:8.8.8.8]/hook", "IPv4 in IPv6"),
    ("https://8.8.8.8:25/hook", "port 25 is not allowed"),
    ("https://8.8.8.8:8443/hook", "port 8443 is not allowed"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[::ffff:127.0.0.1]/hook", "embeds 127.0.0.1"),
    ("https://[::ffff:169.254.169.254]/hook", "embeds 169.254.169.254"),
    ("https://[64:ff9b::a00:1]/hook", "embeds 10.0.0.1"),
    ("https://[2002:a00:1::]/hook", "embeds 10.0.0.1"),  # 6to4
    ("http://8.8.8.8/hook", "must be https"),
    ("ftp://8.8.8.8/hook", "must be https"),
    ("https://user:secret@8.8.8.8/hook", "credentials"),
    ("https:///hook", "no host"),
    ("https://8.8.8.8:99999/hook", "bad port"),
    ("https://no-such-host.invalid/hook", "does not resolve"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlError, match=reason):
        vet_webhook_url(url, allow_http=False)


def test_at_least_fifteen_forms_are_covered() -> None:
    assert len(REFUSED) >= 15


def test_a_public_address_passes_and_is_what_we_connect_to() -> None:
    target = vet_webhook_url(
        "https://8.8.8.8:8443/hooks/in?x=1", allow_http=False, allowed_ports=(8443,)
    )
    assert (target.address, target.port, target.host) == ("8.8.8.8", 8443, "8.8.8.8")
    assert target.path == "/hooks/in?x=1"


def test_plain_http_needs_the_setting() -> None:
    assert vet_webhook_url("http://8.8.8.8/", allow_http=True).port == 80


def test_the_table_does_not_depend_on_pythons_flags() -> None:
    import ipaddress

    from imagegen.special_addresses import special_purpose

    for public in ("8.8.8.8", "93.184.215.14", "2606:4700:4700::1111"):
        assert special_purpose(ipaddress.ip_address(public)) is None
    assert special_purpose(ipaddress.ip_address("192.0.0.192")) == "IETF protocol assignments"


def test_the_allow_list_lets_a_local_receiver_through() -> None:
    target = vet_webhook_url(
        "http://127.0.0.1:8080/hook", allow_http=True, allowed_hosts=("127.0.0.1",)
    )
    assert target.address == "127.0.0.1"
    # Only the named host: another loopback spelling is still refused.
    with pytest.raises(WebhookUrlError, match="loopback"):
        vet_webhook_url("http://localhost:8080/hook", allow_http=True, allowed_hosts=("127.0.0.1",))
