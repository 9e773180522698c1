"""Issue 15: the console in a real browser (headless Chromium) against the real daemon, with 10,000 devices
and 10,000 dead letters: a wrong token is refused; sign in, see Running; Pause, see Paused and a refused
verb's reason; a dry run shows each stage; a dead letter is tried in the dry run, replayed and seen
Completed (and the telemetry one CompletedWithWarnings: a replay has no connection to reply on).
A screenshot of each step goes to tests/artifacts/<test>/."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import http
from tests.support.console import fill_data_dir
from tests.support.daemon import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

STAGES = ["planner", "sentinel", "inputtranslator", "workflow", "outputtranslator", "transmitter"]


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Wait for a condition the page shows (WebDriverWait without its import noise)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a stale element while the page redraws: look again
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"the page did not show {what} within {timeout}s (last error: {last!r})")


def test_console_in_a_real_browser(tmp_path: Path, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    by_id = lambda i: d.find_element(By.ID, i)  # noqa: E731
    text = lambda i: by_id(i).text  # noqa: E731

    def shot(name: str) -> None:
        d.save_screenshot(str(shots / f"{name}.png"))

    data = tmp_path / "data"
    fill_data_dir(data, devices=10_000, deadletters=10_000)
    with Daemon(data, "--listener-port", "restin=0", "--input-command-port", "0") as daemon:
        status = daemon.wait_state("Running", timeout=60)
        rest = next(x["port"] for x in status["listeners"] if x["key"] == "restin")
        d.get(daemon.base + "/ui")
        assert "token" not in d.current_url

        # a wrong token is refused, with the keyboard only (focus starts in the token field)
        until(lambda: d.switch_to.active_element.get_attribute("id") == "token", "the focused token field")
        d.switch_to.active_element.send_keys("not-the-token", Keys.ENTER)
        until(lambda: "refused" in text("sign-in-error"), "the refusal")
        assert by_id("console").is_displayed() is False
        shot("01-wrong-token")

        # sign in: the state comes live from the feed
        by_id("token").send_keys(daemon.token, Keys.ENTER)
        until(lambda: text("state") == "Running", "Running")
        assert d.execute_script("return sessionStorage.getItem('nuviot-admin-token')") == daemon.token
        assert daemon.token not in d.current_url
        until(lambda: "demo" in text("solution") and text("uptime") != "\u2013", "the solution and uptime")
        until(lambda: d.find_elements(By.CSS_SELECTOR, "#listener-rows tr[data-listener=restin]"), "the listener")
        # one page of each big list, paged on the server
        until(lambda: "of 10,002" in text("dev-page"), "the device page count", timeout=30)
        assert len(d.find_elements(By.CSS_SELECTOR, "#device-rows tr")) == 50
        until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#deadletter-rows tr[data-id]")) == 25, "25 dead letters")
        assert text("dl-page") == "1\u201325"
        shot("02-running")
        # every field has a label and every button a name (for screen readers and keyboard users)
        unnamed = d.execute_script("""
          const fields = [...document.querySelectorAll('input, select, textarea')].filter((e) => !e.labels.length);
          const buttons = [...document.querySelectorAll('button')]
            .filter((b) => !(b.getAttribute('aria-label') || b.textContent.trim()));
          return [...fields, ...buttons].map((e) => e.outerHTML);""")
        assert unnamed == []
        by_id("device-filter").send_keys("BULK-000")
        until(lambda: text("dev-page") == "1\u201350 of 100", "the filtered device page")
        d.execute_script("document.getElementById('devices').scrollIntoView()")
        shot("02-devices-filtered")
        by_id("device-filter").send_keys(Keys.BACKSPACE * len("BULK-000"))
        until(lambda: "of 10,002" in text("dev-page"), "the whole device list again")

        # Pause (from the keyboard) -> Paused; Pause again -> the 409's reason is shown
        by_id("verb-pause").send_keys(Keys.ENTER)
        until(lambda: text("state") == "Paused", "Paused")
        shot("03-paused")
        by_id("verb-pause").click()
        until(lambda: "refused" in text("control-message") and "DEP1006" in text("control-message"), "the refusal")
        shot("04-pause-refused")

        # the dry run while Paused: each stage in order, nothing changed
        before = daemon.request("GET", "/devices/thermo-001")[1]
        by_id("dr-path").send_keys("/devices/thermo-001/telemetry")
        by_id("dr-payload").send_keys(json.dumps({"temperature": 22.5, "humidity": 40, "mode": "heat"}))
        by_id("dr-run").click()
        stages = until(lambda: [li.get_attribute("data-stage") for li in
                                d.find_elements(By.CSS_SELECTOR, "#dryrun-result li.stage[data-ok=true]")] == STAGES,
                       "six ok stages")
        assert stages
        assert "Completed" in text("dryrun-summary")
        assert "heating" in by_id("dryrun-result").text
        d.execute_script("document.getElementById('dryrun').scrollIntoView()")
        shot("05-dry-run")
        assert daemon.request("GET", "/devices/thermo-001")[1] == before

        # back to Running; a message for an unknown device becomes a dead letter
        by_id("verb-start").click()
        until(lambda: text("state") == "Running", "Running again")
        status = daemon.wait_state("Running")
        rest = next(x["port"] for x in status["listeners"] if x["key"] == "restin")
        code, body, _ = http("POST", f"http://127.0.0.1:{rest}/devices/late-001/telemetry", {"temperature": 19.0})
        assert code == 404, body
        first_row = "#deadletter-rows tr:first-child"
        until(lambda: "late-001" in d.find_element(By.CSS_SELECTOR, first_row).text, "the new dead letter")
        assert "CouldNotFindDevice" in d.find_element(By.CSS_SELECTOR, first_row).text
        telemetry_id = d.find_element(By.CSS_SELECTOR, first_row).get_attribute("data-id")
        telemetry_row = f"#deadletter-rows tr[data-id='{telemetry_id}']"
        # and so does its "online" system message
        code, body, _ = http("POST", f"http://127.0.0.1:{rest}/nuviot/srvr/dvcsrvc/late-001/online", "")
        assert code == 404, body
        until(lambda: d.find_element(By.CSS_SELECTOR, first_row).get_attribute("data-id") != telemetry_id,
              "the online dead letter")
        online_id = d.find_element(By.CSS_SELECTOR, first_row).get_attribute("data-id")
        online_row = f"#deadletter-rows tr[data-id='{online_id}']"

        # try the telemetry in the dry run: it stops at the planner; provision the device and it passes
        d.find_element(By.CSS_SELECTOR, f"{telemetry_row} button.try").click()
        until(lambda: [li.get_attribute("data-stage") for li in d.find_elements(By.CSS_SELECTOR, "#dryrun-result li.stage")]
              == ["planner"], "the planner stop")
        assert "CouldNotFindDevice" in by_id("dryrun-result").text
        assert by_id("dr-path").get_attribute("value") == "/devices/late-001/telemetry"
        assert json.loads(by_id("dr-payload").get_attribute("value")) == {"temperature": 19.0}
        shot("06-dead-letter-in-dry-run")
        assert daemon.request("PUT", "/devices/late-001", {"deviceConfiguration": "thermostat"})[0] == 201
        by_id("dr-run").click()
        until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#dryrun-result li.stage[data-ok=true]")) == 6,
              "six ok stages for the provisioned device")

        # a device error (an err/... system message) shows on the device's row
        code, body, _ = http("POST", f"http://127.0.0.1:{rest}/nuviot/srvr/dvcsrvc/thermo-002/err/E42/raise",
                             "heater overheated")
        assert code == 200, body
        by_id("device-filter").send_keys("thermo-002")
        # (one look at the row's text: the list may redraw between two looks, and a redrawn row is a new element)
        until(lambda: "E42" in (row := d.find_element(By.CSS_SELECTOR, "#device-rows tr[data-device=thermo-002]").text)
              and "heater overheated" in row, "the device error", timeout=30)
        # and as an event: the feed's deviceErrorEvents moved, so the page reloaded its events
        until(lambda: "thermo-002: E42 raised" in text("event-rows"), "the device error event", timeout=30)
        assert "(systemmessage) heater overheated" in text("event-rows")

        # replay for real: the device's "online" message from before it was provisioned is Completed
        d.find_element(By.CSS_SELECTOR, f"{online_row} button.replay").click()
        until(lambda: by_id("deadletter-message").get_attribute("data-result") == "Completed", "the replay Completed")
        assert text("deadletter-message") == f"Replay of {online_id}: Completed"
        until(lambda: "replayed" in d.find_element(By.CSS_SELECTOR, online_row).text, "the row marked replayed")
        d.execute_script("document.getElementById('deadletters').scrollIntoView()")
        shot("07-replayed")
        # the telemetry one: the demo's route answers on the original listener, and a replay has no
        # connection to answer on, so its record says CompletedWithWarnings (outbound/original.py)
        d.find_element(By.CSS_SELECTOR, f"{telemetry_row} button.replay").click()
        until(lambda: text("deadletter-message").startswith(f"Replay of {telemetry_id}: CompletedWithWarnings"),
              "the telemetry replay")
        assert daemon.request("GET", "/devices/late-001")[1]["attributes"]["temperature"] == 19.0

        # the whole page, for people (and docs/console.png when CONSOLE_SCREENSHOT names a file)
        d.execute_script("window.scrollTo(0, 0)")
        shot("08-console")
        target = os.environ.get("CONSOLE_SCREENSHOT")
        if target:
            shutil.copyfile(shots / "08-console.png", target)
        assert not any(daemon.token in line for line in daemon.lines)
        assert by_id("datastreams").is_displayed() is True  # GET /datastreams answers (issue 13): the panel shows
        head = [th.get_attribute("textContent") for th in d.find_elements(By.CSS_SELECTOR, "#datastreams thead th")]
        assert head == ["Stream", "Type", "Depth", "Rejected", "Last write", "Last error"], head
        # no card's content runs over its neighbour, here (1400 px) or in a narrower window (the dead letters'
        # table needs ~1,040 px, the dry run ~700): it fits, or scrolls inside its card
        for width in (1400, 900):
            d.set_window_size(width, 1800)
            until(lambda w=width: d.execute_script("return window.innerWidth") <= w, f"the window at {width} px")
            spilled = d.execute_script("""
              return [...document.querySelectorAll('.card')].filter((c) => c.offsetParent !== null
                && c.scrollWidth > c.clientWidth && !['auto', 'scroll'].includes(getComputedStyle(c).overflowX))
                .map((c) => c.id || c.className);""")
            assert spilled == [], (width, spilled)
        d.set_window_size(1400, 1800)
        # no script error and no policy violation; the refused requests (401, 409) are the only errors logged
        problems = [e["message"] for e in d.get_log("browser")
                    if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
        assert problems == []
