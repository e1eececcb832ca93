"""A real browser for the tests of pages: Debian's chromium driven by Playwright, its sound in our sound server.

What makes it work here (measured in ``../shared/tools/browser/``): Playwright mutes headless audio
unless ``--mute-audio`` is dropped; chromium finds the private PulseAudio server through
``PULSE_SERVER``; an output buffer of 2048 frames avoids dropouts on two busy cores; and every
Playwright call counts as a user gesture, so autoplay state is read through raw CDP
(:func:`eval_no_gesture`).
"""

from __future__ import annotations

import os
import shutil
import time

CHROMIUM = "/usr/lib/chromium/chromium"  # the real binary: /usr/bin/chromium is a wrapper that adds flags


def launch_chromium(playwright, env: dict[str, str]):
    """Chromium with sound on, into the server ``env`` names, under the default autoplay policy."""
    if not os.access(CHROMIUM, os.X_OK):
        found = shutil.which("chromium")
        raise RuntimeError(f"browser tests need Debian's chromium at {CHROMIUM} (found: {found}); run scripts/setup.sh")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--autoplay-policy=document-user-activation-required",
            "--audio-buffer-size=2048",
        ],
        ignore_default_args=["--mute-audio"],
        env={**os.environ, **env},
    )


def eval_no_gesture(page, expression: str):
    """Evaluate ``expression`` in the page without granting it user activation (Playwright's own calls do)."""
    session = page.context.new_cdp_session(page)
    try:
        result = session.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "userGesture": False}
        )
    finally:
        session.detach()
    if "exceptionDetails" in result:
        raise RuntimeError(result["exceptionDetails"])
    return result["result"].get("value")


def wait_in_page(page, expression: str, timeout: float = 30.0) -> None:
    """Until ``expression`` is true in the page (Playwright's wait_for_function evaluates strings, which a
    page's Content-Security-Policy may forbid; a function call is not)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"never true in the page: {expression}"
        time.sleep(0.05)
