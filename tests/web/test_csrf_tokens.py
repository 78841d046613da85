"""Issue 11, point 8: only CSRF tokens this server issued, for this session, count; a login issues a new one."""

from __future__ import annotations

import httpx

from tests.web.webapp import PASSWORD, Web


async def _post(web: Web, url: str, cookies: dict[str, str], data: dict[str, str]) -> httpx.Response:
    """A post from a browser holding exactly ``cookies`` (as a planted cookie would make it)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web.app), base_url="http://testserver"
    ) as http:
        header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return await http.post(url, data=data, headers={"Cookie": header})


async def test_a_planted_csrf_cookie_is_refused(web: Web) -> None:
    """The hazard: any value in the CSRF cookie was accepted if the form repeated it, so whoever could set a
    cookie for the site (a sibling subdomain, a proxy) could forge posts."""
    form = {"username": "alice", "password": PASSWORD, "csrf_token": "planted", "next": "/"}
    response = await _post(web, "/login", {"aihub_csrf": "planted"}, form)
    assert response.status_code == 403
    # a value shaped like a real token but signed by nobody
    forged = "nonce." + "0" * 64
    response = await _post(web, "/login", {"aihub_csrf": forged}, {**form, "csrf_token": forged})
    assert response.status_code == 403


async def test_login_renews_the_token_and_binds_it_to_the_session(web: Web) -> None:
    alice = await web.client("alice")  # logged in through the form
    before = web.anonymous()
    await before.get("/login")
    planted = before.csrf  # issued by the server, before any login
    session = alice.http.cookies["aihub_session"]
    assert alice.csrf != planted
    # the pre-login token, planted in a logged-in browser, is refused
    refused = await _post(
        web,
        "/language",
        {"aihub_session": session, "aihub_csrf": planted},
        {"lang": "en", "csrf_token": planted},
    )
    assert refused.status_code == 403
    # so is another user's token (bob's, issued for bob's session)
    bob = await web.client("bob")
    refused = await _post(
        web,
        "/language",
        {"aihub_session": session, "aihub_csrf": bob.csrf},
        {"lang": "en", "csrf_token": bob.csrf},
    )
    assert refused.status_code == 403
    # alice's own works
    assert (await alice.post("/language", {"lang": "en", "next": "/runs"})).status_code == 303


async def test_the_login_response_sets_a_new_token(web: Web) -> None:
    client = web.anonymous()
    await client.get("/login")
    first = client.csrf
    response = await client.post("/login", {"username": "alice", "password": PASSWORD, "next": "/"})
    assert response.status_code == 303
    assert "aihub_csrf=" in "; ".join(response.headers.get_list("set-cookie"))
    assert client.csrf != first
    page = await client.get("/runs")
    assert client.csrf in page.text  # the pages carry the new one
