"""Issue 5: a script that loops, allocates without end or throws fails that message only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import http
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "runaway.yaml"


def test_runaway_script_is_stopped_and_the_next_message_runs(tmp_path: Path) -> None:
    with Daemon(tmp_path / "data", "--solution", str(FIXTURE), "--input-command-port", "0") as d:
        status = d.wait_state("Running")
        url = f"http://127.0.0.1:{status['listeners'][0]['port']}/devices/d1/cmd"
        started = time.monotonic()
        code, body, _ = http("POST", url, {"what": "loop"})
        assert time.monotonic() - started < 3
        assert code == 422 and body["error"]["code"] == "script_timeout", body
        assert "input what / onSet" in body["error"]["message"]
        code, body, _ = http("POST", url, {"what": "grow"})
        assert code == 422 and body["error"]["code"] in ("script_out_of_memory", "script_timeout"), body
        code, body, _ = http("POST", url, {"what": "throw"})
        assert code == 422 and body["error"]["code"] == "script_error"
        assert "bad value throw" in body["error"]["message"] and "line" in body["error"]["message"]
        code, body, _ = http("POST", url, {"what": "fine"})
        assert code == 200, body
        assert d.request("GET", "/devices/d1")[1]["attributes"]["last"] == "fine"
        letters = d.request("GET", "/deadletters")[1]
        codes = sorted(x["error"].split(":")[0] for x in letters)
        assert len(codes) == 3 and codes[0] == "script_error" and codes[-1] == "script_timeout"
        assert d.request("GET", "/status")[1]["state"] == "Running"


def test_a_script_that_replaces_built_ins_harms_no_later_message(tmp_path: Path) -> None:
    """Issue 18 item 3: before, every later message of every device failed with 500 internal_error."""
    with Daemon(tmp_path / "data", "--solution", str(FIXTURE), "--input-command-port", "0") as d:
        status = d.wait_state("Running")
        base = f"http://127.0.0.1:{status['listeners'][0]['port']}/devices"
        code, body, _ = http("POST", f"{base}/d1/cmd", {"what": "pollute"})
        assert code == 200, body  # sloppy mode: the assignments to frozen built-ins do nothing
        for device in ("d2", "d1", "d2"):
            code, body, _ = http("POST", f"{base}/{device}/cmd", {"what": "check"})
            assert code == 200, body
            assert d.request("GET", f"/devices/{device}")[1]["attributes"]["last"] == \
                '{"polluted":null,"leaked":"undefined"}'
        assert d.request("GET", "/deadletters")[1] == []
