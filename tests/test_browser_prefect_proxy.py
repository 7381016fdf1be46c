"""The Prefect UI through ScriptFlow's navigation, in a real browser (issue 14, deliverable 3):
an admin clicks "Prefect" and works in Prefect's own UI with no auth prompt; a user who is
not a power user gets 403; Prefect's live event websocket works through the proxy."""

from __future__ import annotations

import pytest
from browser.fixtures import PASSWORDS, SCREENSHOTS, login
from conftest import unique, upload, wait_run

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

# Prefect's V2 UI starts Amplitude (analytics) on every load, whatever the server's analytics
# setting says; the proxy's content security policy keeps it from calling out, and Chromium
# reports each refusal on the console. Those are expected; any other console error is a bug.
BLOCKED_ON_PURPOSE = "amplitude.com"


@pytest.fixture
def prefect_page(request, browser, stack):
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error"
            and not msg.text.startswith("Failed to load resource")
            and BLOCKED_ON_PURPOSE not in msg.text
            else None
        ),
    )
    p.on(
        "response", lambda r: errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None
    )
    dialogs: list[str] = []  # an auth prompt would be a dialog or Prefect's login form
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        yield p
        if getattr(request.node, "failed_call", False):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            p.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"browser console errors: {errors}"
    assert not dialogs, dialogs


def _assert_no_auth_prompt(page) -> None:
    assert page.locator("input[type=password]").count() == 0, "Prefect asked for a password"


def test_an_admin_opens_the_prefect_ui_from_the_navigation(prefect_page, alice, stack):
    page = prefect_page
    script = upload(alice, "print('hello through the proxy')\n", name=unique("proxied"))
    run = alice.post(f"/scripts/{script['id']}/runs").json()
    assert wait_run(alice, run["id"])["status"] == "succeeded"

    login(page, "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Prefect").click()
    page.wait_for_url("**/prefect/**")
    assert stack.prefect_url not in page.url  # the overlay's address, not Prefect's port
    page.get_by_role("link", name="Deployments").first.click()
    page.get_by_text("run_script").first.wait_for()  # the scripts' deployments are listed
    page.get_by_placeholder("Search deployments").fill(script["name"])  # past page 1 too
    page.get_by_role("link", name=script["name"]).wait_for()
    _assert_no_auth_prompt(page)
    page.screenshot(path=str(SCREENSHOTS / "prefect-deployments-1280.png"))

    # The run's page in Prefect's UI shows its output (Prefect's log table, polled through
    # the proxy's API).
    page.goto(f"/prefect/v2/runs/flow-run/{run['id']}")
    page.get_by_text("hello through the proxy").first.wait_for()
    _assert_no_auth_prompt(page)


def test_prefects_live_events_reach_the_page_over_the_proxys_websocket(prefect_page, alice, stack):
    page = prefect_page
    script = upload(alice, "print('live')\n", name=unique("live"))
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    login(page, "admin")
    page.goto("/prefect/v2/")
    # What a page of the UI does to follow events live: Prefect's socket protocol, with no
    # token of its own (the browser has none; the proxy puts the real one in).
    page.evaluate(
        """() => {
          window.sfEvents = [];
          const ws = new WebSocket(
            location.origin.replace(/^http/, "ws") + "/prefect/api/events/out", "prefect");
          ws.onopen = () => ws.send(JSON.stringify({type: "auth", token: null}));
          ws.onmessage = (m) => {
            const message = JSON.parse(m.data);
            window.sfEvents.push(message);
            if (message.type === "auth_success") {
              // Prefect's filters end "now" unless told otherwise: follow the next hour.
              const until = new Date(Date.now() + 3600 * 1000).toISOString();
              ws.send(JSON.stringify({type: "filter", filter: {
                event: {prefix: ["prefect.flow-run."]}, occurred: {until: until}}}));
            }
          };
        }"""
    )
    page.wait_for_function("() => window.sfEvents.some(m => m.type === 'auth_success')")
    run = alice.post(f"/scripts/{script['id']}/runs").json()  # after the page subscribed
    page.wait_for_function(
        "(id) => window.sfEvents.some(m => m.type === 'event'"
        " && m.event.resource['prefect.resource.id'] === 'prefect.flow-run.' + id)",
        arg=run["id"],
        timeout=60_000,
    )
    assert [s.url for s in sockets] == [
        stack.url.replace("http", "ws", 1) + "/prefect/api/events/out"
    ]
    assert not sockets[0].is_closed()


@pytest.mark.parametrize("user", ["bob"])
def test_a_user_who_is_not_a_power_user_gets_403(prefect_page, user):
    page = prefect_page
    login(page, user, PASSWORDS[user])
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Prefect").count() == 0
    response = page.goto("/prefect/")
    assert response.status == 403
    assert (
        "Only administrators and power users can open the Prefect UI"
        in page.locator("main").inner_text()
    )
