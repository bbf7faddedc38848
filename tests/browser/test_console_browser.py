"""The web console in a real browser (Debian's chromium via Playwright) against the
daemon as a real process: sign-in, the live incident list, the incident page and
its buttons, read-only sessions and CSRF, keyboard use, a phone-width screen,
ticking SLA clocks, the other pages, sign-out.

Selectors are the console contract's (ids, accessible names); every page a test
opens must meet no console error and no failed request beyond those the test
causes on purpose (`PageWatch.allow`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from tests.e2e.harness import ADMIN_TOKEN, fixture_json

from .site import (
    READ_TOKEN,
    WRONG_TOKEN_MESSAGE,
    ConsoleSite,
    Pages,
    artifacts_dir,
    outage_alerts,
    sign_in,
    webhook,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.e2e,
    pytest.mark.browser,
]

NAV = ("Incidents", "CMDB", "Changes", "Problems", "Reports")
# What the browser logs for an answer the test asked for on purpose.
_FORBIDDEN = r"(status of 403|HTTP 403)"


async def outage(site: ConsoleSite, *, change: bool = False) -> dict[str, object]:
    """Feed the two-alert database outage; the incident once both alerts are in it.
    `change`: first file the completed change on the database it will suspect."""
    if change:
        now = datetime.now(UTC)
        await site.api("POST", "/api/v1/changes", {
            "summary": "Raise max_connections on the orders database",
            "type": "standard", "state": "completed", "outcome": "successful",
            "cis": ["pg-orders"], "source": "browser-test",
            "planned_start": (now - timedelta(minutes=40)).isoformat(),
            "planned_end": (now - timedelta(minutes=25)).isoformat()})
    await site.post_alerts(webhook(outage_alerts(), "Outage"))
    return await site.wait_incident(outage_alerts()[0]["fingerprint"], alerts=2)


async def open_incident(page: Page, site: ConsoleSite, incident: dict[str, object]) -> None:
    """From the list to the incident page by its key link, as a person would."""
    await page.goto(site.url("/ui/incidents"))
    row = page.locator(f'#incidents tr[data-incident-id="{incident["id"]}"]')
    await row.get_by_role("link", name=str(incident["key"])).click()
    await expect(page).to_have_url(site.url(f"/ui/incidents/{incident['id']}"))


# --------------------------------------------------------------------------
# a. sign-in


async def test_sign_in_with_the_admin_token_lands_on_the_incident_list(
    site: ConsoleSite, pages: Pages
) -> None:
    page, watch = await pages.open()
    # Not signed in: a page sends the browser to the sign-in form, and back after it.
    await page.goto(site.url("/ui/incidents"))
    await expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=(/|%2F)ui(/|%2F)incidents$"))

    await page.get_by_label("API token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(site.url("/ui/incidents"))
    await expect(page.locator("#no-incidents, #incidents").first).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies.get("incidentd_session")
    assert session is not None, f"no session cookie after sign-in: {list(cookies)}"
    assert session["httpOnly"] and session["sameSite"] == "Strict", session
    assert ADMIN_TOKEN not in session["value"], "the cookie carries the token itself"
    watch.assert_clean()


async def test_a_wrong_token_is_refused_with_a_message(site: ConsoleSite, pages: Pages) -> None:
    page, watch = await pages.open()
    watch.allow(r"(status of 401|HTTP 401).*/ui/sign-in")  # the form comes back with 401

    await sign_in(page, site, "not-the-token")
    await expect(page.get_by_role("alert")).to_have_text(WRONG_TOKEN_MESSAGE)
    await expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    assert "incidentd_session" not in {c["name"] for c in await page.context.cookies()}
    # The refused token is not echoed back into the form.
    assert await page.get_by_label("API token").input_value() == ""
    assert "not-the-token" not in await page.content()
    # Still signed out: the list sends us back to the form.
    await page.goto(site.url("/ui/incidents"))
    await expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    watch.assert_clean()


# --------------------------------------------------------------------------
# b. live updates


async def test_a_new_incident_appears_in_the_list_without_a_reload(
    site: ConsoleSite, pages: Pages
) -> None:
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await expect(page.locator("#no-incidents")).to_be_visible()
    # Survives only if the page is never reloaded or left.
    await page.evaluate("window.__marker = 'still-here'")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url)
            if frame == page.main_frame else None)

    body = fixture_json("prometheus_firing.json")
    await site.post_alerts(body)
    incident = await site.wait_incident(body["alerts"][0]["fingerprint"])

    row = page.locator(f'#incidents tr[data-incident-id="{incident["id"]}"]')
    await expect(row).to_be_visible()
    await expect(row).to_have_attribute("data-key", str(incident["key"]))
    await expect(row.locator("td.status")).to_contain_text("triggered")
    await expect(row.get_by_role("link", name=str(incident["key"]))).to_have_attribute(
        "href", f"/ui/incidents/{incident['id']}")
    assert await page.evaluate("window.__marker") == "still-here", "the page was reloaded"
    assert navigations == [], f"the page navigated: {navigations}"
    watch.assert_clean()


async def test_the_priority_filter_narrows_the_list(site: ConsoleSite, pages: Pages) -> None:
    p1 = await outage(site)  # P1: a critical alert on a criticality-1 service
    body = fixture_json("prometheus_firing.json")
    await site.post_alerts(body)
    other = await site.wait_incident(body["alerts"][0]["fingerprint"])
    assert other["priority"] != "P1", other
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await expect(page.locator("#incidents tr[data-incident-id]")).to_have_count(2)

    await page.get_by_label("Priority").select_option("P1")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"[?&]priority=P1\b"))
    rows = page.locator("#incidents tr[data-incident-id]")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-key", str(p1["key"]))
    watch.assert_clean()


# --------------------------------------------------------------------------
# c. the incident page and its buttons


async def test_the_incident_page_shows_the_incident_and_acknowledge_works(
    site: ConsoleSite, pages: Pages
) -> None:
    incident = await outage(site, change=True)
    await site.wait_runbook_waiting(int(str(incident["id"])))
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN, name="Ann Lee")
    await open_incident(page, site, incident)

    await expect(page.locator("h1")).to_contain_text(str(incident["key"]))
    await expect(page.locator("h1")).to_contain_text(str(incident["title"]))
    await expect(page.locator("#incident-status")).to_have_text("triggered")
    topology = page.locator("svg#topology")
    await expect(topology).to_be_visible()
    await expect(topology).to_have_attribute("role", "img")
    assert (await topology.get_attribute("aria-label") or "").strip(), "the drawing has no label"
    await expect(page.locator("#timeline li[data-kind=opened]")).to_have_count(1)
    for name in ("Acknowledge", "Resolve", "Escalate", "Set priority"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_enabled()

    await page.get_by_role("button", name="Acknowledge", exact=True).click()
    await expect(page.locator("#incident-status")).to_have_text("acknowledged")
    await expect(page.locator("#timeline li[data-kind=acknowledged]")).to_have_count(1)
    # The timeline names who did it: the name given at sign-in, from the console.
    await expect(page.locator("#timeline li[data-kind=acknowledged] .actor")).to_have_text(
        "Ann Lee (console)")
    await expect(page.locator("#flash")).not_to_be_empty()
    # The API agrees: the button went through the real JSON API.
    stored = await site.api("GET", f"/api/v1/incidents/{incident['id']}")
    assert stored["status"] == "acknowledged", stored
    acked = [e for e in stored["timeline"] if e["kind"] == "acknowledged"]
    assert [e["actor"] for e in acked] == ["Ann Lee (console)"], acked

    shot = artifacts_dir() / "console-incident.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    watch.assert_clean()


async def test_a_forged_request_without_the_csrf_header_is_refused(
    site: ConsoleSite, pages: Pages
) -> None:
    """The session cookie alone does not change anything: a script (or another
    site's form) without the page's CSRF token gets 403 and the incident stays."""
    incident = await outage(site)
    page, watch = await pages.open()
    watch.allow(_FORBIDDEN)
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{incident['id']}"))

    forged = await page.evaluate(
        """async (id) => {
             const r = await fetch(`/api/v1/incidents/${id}/acknowledge`, {
               method: "POST", credentials: "same-origin",
               headers: {"Content-Type": "application/json"}, body: "{}"});
             return {status: r.status, body: await r.text()};
           }""", incident["id"])
    assert forged["status"] == 403, forged
    assert "Traceback" not in forged["body"], forged
    stored = await site.api("GET", f"/api/v1/incidents/{incident['id']}")
    assert stored["status"] == "triggered", stored

    # The same request with the page's token does go through (the 403 was the CSRF check).
    passed = await page.evaluate(
        """async (id) => {
             const token = document.querySelector('meta[name="csrf-token"]').content;
             const r = await fetch(`/api/v1/incidents/${id}/acknowledge`, {
               method: "POST", credentials: "same-origin",
               headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
               body: "{}"});
             return r.status;
           }""", incident["id"])
    assert passed == 200, passed
    watch.assert_clean()


async def test_approve_starts_a_waiting_runbook_run(site: ConsoleSite, pages: Pages) -> None:
    incident = await outage(site)
    await site.wait_runbook_waiting(int(str(incident["id"])))
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{incident['id']}"))

    runs = page.locator("#runbook-runs")
    await expect(runs).to_contain_text("scale-deployment")
    await runs.get_by_role("button", name="Approve", exact=True).click()
    await expect(page.locator("#flash")).to_have_text("Run approved.")
    await expect(runs.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
    await expect(page.locator("#timeline li[data-kind=runbook_started]")).to_have_count(1)
    waiting = await site.api(
        "GET", f"/api/v1/runbook-runs?incident={incident['id']}&status=pending_approval")
    assert waiting["items"] == [], waiting
    watch.assert_clean()


async def test_set_priority_sends_the_reason_and_shows_the_new_priority(
    site: ConsoleSite, pages: Pages
) -> None:
    incident = await outage(site)
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{incident['id']}"))

    await page.locator("#priority").select_option("P3")
    await page.get_by_label("Reason").fill("only the staging shop is affected")
    await page.get_by_role("button", name="Set priority", exact=True).click()
    await expect(page.locator("#flash")).to_have_text("Priority set.")
    await expect(page.locator("#timeline li[data-kind=priority_changed]")).to_have_count(1)
    await expect(page.locator("#timeline")).to_contain_text("only the staging shop is affected")
    # Signed in without a name: the timeline says "console", not "api".
    await expect(page.locator("#timeline li[data-kind=priority_changed] .actor")).to_have_text(
        "console")
    await expect(page.locator("#priority")).to_have_value("P3")
    stored = await site.api("GET", f"/api/v1/incidents/{incident['id']}")
    assert (stored["priority"], stored["priority_manual"]) == ("P3", True), stored
    watch.assert_clean()


async def test_an_api_refusal_is_shown_in_the_form(site: ConsoleSite, pages: Pages) -> None:
    """A button whose change the API refuses shows the API's own message by the button.
    The live stream is cut, so the page still offers Acknowledge after the incident
    was resolved elsewhere."""
    incident = await outage(site)
    page, watch = await pages.open()
    await page.route("**/ui/events", lambda route: route.abort())
    watch.allow(r"/ui/events")
    watch.allow(r"(status of 409|HTTP 409)")
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{incident['id']}"))
    await site.api("POST", f"/api/v1/incidents/{incident['id']}/resolve", {"actor": "someone"})

    ack = page.locator("form", has=page.get_by_role("button", name="Acknowledge", exact=True))
    await ack.get_by_role("button").click()
    message = ack.get_by_role("alert")
    await expect(message).not_to_be_empty()
    text = await message.inner_text()
    assert "Traceback" not in text and "{" not in text, text
    await expect(ack.get_by_role("button")).to_be_enabled()  # usable again after the answer
    watch.assert_clean()


async def test_a_live_refresh_keeps_what_the_user_typed(site: ConsoleSite, pages: Pages) -> None:
    """Changes made elsewhere refresh the incident page's live part under the user's
    hands: a half-typed reason and a chosen priority stay (unless the server's own
    value for that field changed: then the news wins), and are cleared once sent."""
    incident = await outage(site)
    ident = incident["id"]
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{ident}"))
    start = str(incident["priority"])
    mine, theirs = [p for p in ("P5", "P4", "P3") if p != start][:2]

    await page.locator("#priority").select_option(mine)
    reason = page.get_by_label("Reason")
    await reason.fill("the staging shop only, I think")  # focus stays here

    # Acknowledged elsewhere: the live part is fetched again and replaced.
    await site.api("POST", f"/api/v1/incidents/{ident}/acknowledge", {"actor": "someone"})
    await expect(page.locator("#incident-status")).to_have_text("acknowledged")
    await expect(page.locator("#timeline li[data-kind=acknowledged]")).to_have_count(1)
    await expect(reason).to_have_value("the staging shop only, I think")
    await expect(reason).to_be_focused()
    await expect(page.locator("#priority")).to_have_value(mine)

    # The priority changed elsewhere: that field shows the news, the reason stays.
    await site.api("PATCH", f"/api/v1/incidents/{ident}",
                   {"priority": theirs, "reason": "set elsewhere", "actor": "someone"})
    await expect(page.locator("#timeline li[data-kind=priority_changed]")).to_have_count(1)
    await expect(page.locator("#priority")).to_have_value(theirs)
    await expect(reason).to_have_value("the staging shop only, I think")

    # Sent: no longer the user's pending edit, so the refreshed form is empty again.
    await page.locator("#priority").select_option(mine)
    await page.get_by_role("button", name="Set priority", exact=True).click()
    await expect(page.locator("#flash")).to_have_text("Priority set.")
    await expect(page.locator("#timeline li[data-kind=priority_changed]")).to_have_count(2)
    await expect(page.get_by_label("Reason")).to_have_value("")
    await expect(page.locator("#priority")).to_have_value(mine)
    watch.assert_clean()


async def test_a_live_refresh_keeps_an_opened_step_open(site: ConsoleSite, pages: Pages) -> None:
    """A runbook step's output the user opened stays open when the page's live part is
    replaced by a change made elsewhere."""
    incident = await outage(site)
    ident = int(str(incident["id"]))
    await site.wait_runbook_waiting(ident)
    waiting = await site.api(
        "GET", f"/api/v1/runbook-runs?incident={ident}&status=pending_approval")
    run_id = waiting["items"][0]["id"]
    await site.api("POST", f"/api/v1/runbook-runs/{run_id}/approve", {"actor": "someone"})
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{ident}"))

    step = page.locator(f"#run-{run_id}-step-1")
    await expect(step).to_be_attached()  # the run has got as far as its first step
    await step.locator("summary").click()
    await expect(step).to_have_attribute("open", "")
    await site.api("POST", f"/api/v1/incidents/{ident}/acknowledge", {"actor": "someone"})
    await expect(page.locator("#incident-status")).to_have_text("acknowledged")
    await expect(page.locator(f"#run-{run_id}-step-1")).to_have_attribute("open", "")
    watch.assert_clean()


# --------------------------------------------------------------------------
# d. read-only sessions


async def test_a_read_only_session_sees_everything_and_changes_nothing(
    site: ConsoleSite, pages: Pages
) -> None:
    incident = await outage(site)
    page, watch = await pages.open()
    watch.allow(_FORBIDDEN)
    await sign_in(page, site, READ_TOKEN)
    await expect(page).to_have_url(site.url("/ui/incidents"))
    await expect(page.get_by_text("read-only", exact=False).first).to_be_visible()
    await open_incident(page, site, incident)

    await expect(page.locator("#incident-status")).to_have_text("triggered")
    for name in ("Acknowledge", "Resolve", "Escalate", "Set priority"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    await expect(page.get_by_text("Read-only session").first).to_be_visible()

    # Even with the page's CSRF token, the API refuses a read session's change.
    answer = await page.evaluate(
        """async (id) => {
             const meta = document.querySelector('meta[name="csrf-token"]');
             const headers = {"Content-Type": "application/json"};
             if (meta) headers["X-CSRF-Token"] = meta.content;
             const r = await fetch(`/api/v1/incidents/${id}/acknowledge`, {
               method: "POST", credentials: "same-origin", headers, body: "{}"});
             return {status: r.status, body: await r.text()};
           }""", incident["id"])
    assert answer["status"] == 403, answer
    stored = await site.api("GET", f"/api/v1/incidents/{incident['id']}")
    assert stored["status"] == "triggered", stored
    watch.assert_clean()


# --------------------------------------------------------------------------
# e. keyboard


async def focused(page: Page) -> dict[str, str]:
    return dict(await page.evaluate(
        """() => {
             const el = document.activeElement;
             const style = getComputedStyle(el);
             return {tag: el.tagName.toLowerCase(), text: (el.innerText || "").trim(),
                     href: el.getAttribute("href") || "", inNav: String(!!el.closest("nav")),
                     outline: style.outlineStyle, shadow: style.boxShadow};
           }"""))


async def test_the_keyboard_reaches_the_skip_link_then_the_navigation(
    site: ConsoleSite, pages: Pages
) -> None:
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url("/ui/cmdb"))

    await page.keyboard.press("Tab")
    first = await focused(page)
    assert first["tag"] == "a" and first["href"].startswith("#"), f"first Tab stop: {first}"
    assert first["outline"] != "none" or first["shadow"] != "none", f"no visible focus: {first}"
    await expect(page.locator(":focus")).to_be_visible()  # the skip link shows when focused

    # Onwards to the nav's "Incidents" before anything in the page's main part.
    stops = [first]
    for _ in range(6):
        await page.keyboard.press("Tab")
        stops.append(await focused(page))
        if stops[-1]["text"] == "Incidents":
            break
    here = stops[-1]
    assert here["text"] == "Incidents" and here["inNav"] == "true", f"Tab stops: {stops}"
    assert here["outline"] != "none" or here["shadow"] != "none", f"no visible focus: {here}"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(site.url("/ui/incidents"))

    # The skip link moves focus past the navigation into the main part.
    await page.keyboard.press("Tab")
    skip = await focused(page)
    await page.keyboard.press("Enter")
    target = skip["href"].lstrip("#")
    assert target, skip
    await expect(page.locator(f"#{target}")).to_be_visible()
    assert await page.evaluate(
        "(id) => { const t = document.getElementById(id);"
        " return t.contains(document.activeElement) || document.activeElement === t"
        " || location.hash === '#' + id; }", target), "the skip link went nowhere"
    watch.assert_clean()


# --------------------------------------------------------------------------
# f. phone


async def test_the_incident_page_fits_a_phone_screen(site: ConsoleSite, pages: Pages) -> None:
    incident = await outage(site)
    page, watch = await pages.open(phone=True)
    await sign_in(page, site, ADMIN_TOKEN)
    for path in ("/ui/incidents", f"/ui/incidents/{incident['id']}"):
        await page.goto(site.url(path))
        await expect(page.locator("h1")).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360 + 1, f"{path} is {width} px wide on a 360 px screen"
    await page.get_by_role("button", name="Acknowledge", exact=True).click()
    await expect(page.locator("#incident-status")).to_have_text("acknowledged")
    watch.assert_clean()


# --------------------------------------------------------------------------
# g. SLA clocks


async def test_an_sla_countdown_ticks(site: ConsoleSite, pages: Pages) -> None:
    incident = await outage(site)
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await page.goto(site.url(f"/ui/incidents/{incident['id']}"))

    countdown = page.locator("time.countdown").first
    await expect(countdown).to_have_text(re.compile(r"left|overdue"))
    assert re.match(r"^\d{4}-\d\d-\d\dT", await countdown.get_attribute("datetime") or ""), (
        "a countdown needs its ISO datetime")
    before = await countdown.inner_text()
    # Ticks every second; wait a few for the text to move on.
    await page.wait_for_function(
        "([el, before]) => el.textContent.trim() !== before.trim()",
        arg=[await countdown.element_handle(), before], timeout=5_000)
    watch.assert_clean()


# --------------------------------------------------------------------------
# h. the other pages


async def test_every_page_of_the_navigation_loads_cleanly(
    site: ConsoleSite, pages: Pages
) -> None:
    await outage(site)
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    for name, path in zip(NAV[1:] + NAV[:1], ("/ui/cmdb", "/ui/changes", "/ui/problems",
                                              "/ui/reports", "/ui/incidents"), strict=True):
        async with page.expect_navigation() as nav:
            await page.locator("nav").get_by_role("link", name=name, exact=True).click()
        response = await nav.value
        assert response is not None and response.status == 200, (name, response)
        await expect(page).to_have_url(site.url(path))
        await expect(page.locator("h1")).to_be_visible()
    # A CI from the search and its neighbours.
    await page.goto(site.url("/ui/cmdb?q=pg-orders"))
    await page.get_by_role("link", name=re.compile("pg-orders|Orders PostgreSQL")).first.click()
    await expect(page).to_have_url(re.compile(r"/ui/cmdb/pg-orders$"))
    await expect(page.locator("main")).to_contain_text("checkout-api")
    await expect(page.locator("main")).to_contain_text("db-01")
    # Reports draw their charts as SVG.
    await page.goto(site.url("/ui/reports?days=7"))
    assert await page.locator("main svg").count() >= 1, "no chart on the reports page"
    watch.assert_clean()


# --------------------------------------------------------------------------
# i. sign-out


async def test_sign_out_ends_the_session(site: ConsoleSite, pages: Pages) -> None:
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await expect(page).to_have_url(site.url("/ui/incidents"))

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    await expect(page.get_by_label("API token")).to_be_visible()
    assert "incidentd_session" not in {c["name"] for c in await page.context.cookies()}
    await page.goto(site.url("/ui/incidents"))
    await expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    watch.assert_clean()


async def test_a_cookie_kept_from_before_sign_out_opens_nothing(
    site: ConsoleSite, pages: Pages
) -> None:
    """Signing out ends the session on the server too, not just in this browser:
    a copy of the cookie (another tab's, a stolen one) no longer works."""
    page, watch = await pages.open()
    await sign_in(page, site, ADMIN_TOKEN)
    await expect(page).to_have_url(site.url("/ui/incidents"))
    kept = [c["value"] for c in await page.context.cookies()
            if c["name"] == "incidentd_session"]
    assert kept, "no session cookie"
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/ui/sign-in"))

    replay, replay_watch = await pages.open()
    await replay.context.add_cookies(
        [{"name": "incidentd_session", "value": kept[0], "url": site.base}])
    await replay.goto(site.url("/ui/incidents"))
    await expect(replay).to_have_url(re.compile(r"/ui/sign-in"))
    watch.assert_clean()
    replay_watch.assert_clean()

