"""The web client under its Content-Security-Policy in real headless Chromium: signing up, the
dashboard, a meeting room with chat and the participants panel, and the dashboard again report
no violation; script injected into the page does not run.  That is what makes keeping tokens in
localStorage acceptable (README, "Security")."""

from __future__ import annotations

from typing import Any

from tests.media.browser import chromium
from tests.media.conftest import Meeting

# Collects every violation the page reports, from before its first script runs.
WATCH = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`);
});
"""


async def signed_up(browser: Any, base: str, name: str) -> Any:
    context = await browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1280, "height": 800})
    await context.add_init_script(WATCH)
    page = await context.new_page()
    page.console_csp = []
    page.on("console", lambda m: "Content Security Policy" in m.text and page.console_csp.append(m.text))
    response = await page.goto(base + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    await page.get_by_role("link", name="Create one").click()
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Email").fill(f"{name.split()[0].lower()}@example.com")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Create account").click()
    await page.get_by_role("heading", name="Dashboard").wait_for()
    return page


async def violations(page: Any) -> list[str]:
    return await page.evaluate("() => window.cspViolations") + page.console_csp


async def test_the_web_client_runs_under_its_policy_without_violations(meeting: Meeting) -> None:
    base = str(meeting.api.client.make_url("")).rstrip("/")
    async with chromium() as browser:
        page = await signed_up(browser, base, "Ada Host")
        await page.get_by_role("button", name="New meeting").click()
        await page.get_by_role("button", name="Join now").click()
        await page.get_by_role("toolbar", name="Meeting controls").wait_for()
        await page.get_by_role("button", name="Chat").click()
        await page.get_by_role("textbox", name="Message").fill("Hello under CSP")
        await page.get_by_role("button", name="Send").click()
        await page.get_by_role("log", name="Chat messages").get_by_text("Hello under CSP").wait_for()
        await page.get_by_role("button", name="Participants").click()
        await page.get_by_role("link", name="Dashboard").click()
        await page.get_by_role("heading", name="Dashboard").wait_for()
        invite = page.get_by_role("form", name="Invite to Ada Host's meeting").first
        await invite.get_by_role("textbox").wait_for()
        assert await invite.get_by_role("textbox").evaluate("e => getComputedStyle(e).flexGrow") == "1"
        assert await violations(page) == []
        # Markup injected into the page cannot run script: the policy refuses inline handlers.
        await page.evaluate("""() => document.body.insertAdjacentHTML("beforeend",
            '<img src="/web/icon.svg" onload="window.injected = 1"><div style="color: red">x</div>')""")
        await page.wait_for_function("() => window.cspViolations.length >= 2")
        assert await page.evaluate("() => window.injected") is None
        blocked = await page.evaluate("() => window.cspViolations")
        assert any(v.startswith("script-src") for v in blocked) and any(v.startswith("style-src") for v in blocked), blocked
