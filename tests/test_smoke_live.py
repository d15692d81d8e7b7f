from conftest import LiveGateway


def test_live_gateway_serves_https(live_gateway: LiveGateway) -> None:
    created = live_gateway("POST", "/mail/account/",
                           json={"name": "alice", "domain": "example.com", "password": "pw"})
    assert created.status_code == 201, created.text
    got = live_gateway("GET", "/mail/account/alice@example.com/")
    assert got.json()["id"] == "alice@example.com"
