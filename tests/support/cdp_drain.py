#!/usr/bin/env python3
"""Drives tierlb's status page in headless Chromium as an operator would, for tests/admin.rs.

    cdp_drain.py URL NODE TOKEN

Opens URL, waits for NODE's row, clicks its drain button, answers the page's token prompt with
TOKEN, and waits until the row says "drained". Prints the table's HTML before and after, as JSON:
{"before": "...", "after": "..."}. Talks to Chromium over --remote-debugging-pipe (the DevTools
protocol as NUL-terminated JSON on descriptors 3 and 4), so it needs nothing but the standard
library. Every wait is bounded; Chromium is killed on the way out.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

TIMEOUT = 20.0


class Chromium:
    def __init__(self, profile):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def wire():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-pipe", "--user-data-dir=" + profile],
            preexec_fn=wire, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.next_id = 0
        self.buffer = b""
        self.events = []

    def read_message(self, deadline):
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self.read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, session, expression):
        result = self.call("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")

    def wait_for(self, session, expression):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.evaluate(session, expression):
                return
            time.sleep(0.1)
        raise TimeoutError("the page never showed: " + expression)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def main():
    url, node, token = sys.argv[1:4]
    # Chromium's helpers may still be writing the profile as it is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        chromium = Chromium(profile)
        try:
            target = chromium.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = chromium.call("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
            chromium.call("Page.enable", session=session)
            chromium.call("Runtime.enable", session=session)
            chromium.call("Page.navigate", {"url": url}, session)
            row = f'[...document.querySelectorAll("#nodes tr")].find(r => r.cells[0].textContent === {json.dumps(node)})'
            chromium.wait_for(session, f"!!({row})")
            before = chromium.evaluate(session, 'document.getElementById("nodes").closest("table").outerHTML')
            # The click opens the token prompt; the dialog blocks the page until answered, so
            # the click is not awaited.
            chromium.call("Runtime.evaluate", {
                "expression": f'setTimeout(() => ({row}).querySelector("button[data-action=drain]").click(), 0)'
            }, session)
            deadline = time.monotonic() + TIMEOUT
            while not any(e.get("method") == "Page.javascriptDialogOpening" for e in chromium.events):
                chromium.events.append(chromium.read_message(deadline))
            chromium.call("Page.handleJavaScriptDialog",
                          {"accept": True, "promptText": token}, session)
            chromium.wait_for(session, f'({row}).className === "drained"')
            after = chromium.evaluate(session, 'document.getElementById("nodes").closest("table").outerHTML')
            print(json.dumps({"before": before, "after": after}))
        finally:
            chromium.close()


if __name__ == "__main__":
    main()
