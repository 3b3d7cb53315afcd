"""Drives `dsv4 chat --demo` through a pseudo-terminal, as a person would.

    python3 repl_pty.py /path/to/dsv4

Checks: a multi-turn conversation where the second turn reuses the first from the live
session, /help and other commands, Ctrl+C stopping a long answer and returning to the prompt,
Ctrl+D quitting. Exits non-zero with the transcript on any failure. Every wait is bounded.
"""
import os
import pty
import re
import select
import sys
import time

BIN = sys.argv[1]


class Term:
    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(BIN, [BIN] + args)
        self.buf = b""

    def expect(self, pattern, timeout=120):
        deadline = time.time() + timeout
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end():]
                return out.decode("utf-8", "replace"), m
            left = deadline - time.time()
            if left <= 0:
                fail(f"timed out waiting for {pattern!r}")
            r, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    fail(f"process ended while waiting for {pattern!r}")
                self.buf += chunk

    def send(self, s):
        os.write(self.fd, s.encode() if isinstance(s, str) else s)

    def wait(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                if r:
                    self.buf += os.read(self.fd, 65536)
            except OSError:
                pass
        fail("process did not exit")


TRANSCRIPT = []


def fail(msg):
    sys.stderr.write(f"FAIL: {msg}\n--- transcript ---\n{''.join(TRANSCRIPT)}\n")
    sys.exit(1)


def step(t, pattern, timeout=120):
    out, m = t.expect(pattern, timeout)
    TRANSCRIPT.append(out)
    return m


PROMPT = r"dsv4> "
STATS = r"\[prompt (\d+) tokens \((\d+) reused\).*?\]"

# A short multi-turn conversation.
t = Term(["chat", "--demo", "--nothink", "--temp", "0", "-n", "6"])
step(t, PROMPT)
t.send("/help\r")
step(t, r"/think-max")
step(t, PROMPT)
t.send("Hello there, how are you?\r")
m1 = step(t, STATS)
step(t, PROMPT)
t.send("And a second question?\r")
m2 = step(t, STATS)
first_prompt = int(m1.group(1))
reused = int(m2.group(2))
if reused < first_prompt:
    fail(f"second turn reused {reused} tokens, the first prompt alone had {first_prompt}")
step(t, PROMPT)
# /read sends a file's contents as the next message.
import tempfile
with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("A question read from a file?")
t.send(f"/read {f.name}\r")
m_read = step(t, STATS)
if int(m_read.group(2)) < int(m2.group(1)):
    fail("the /read turn should reuse the conversation so far")
step(t, PROMPT)
t.send("/read /nonexistent/file\r")
step(t, r"cannot read")
step(t, PROMPT)
t.send("/think-max\r")
step(t, r"high will be used")
step(t, PROMPT)
t.send("/think\r")
step(t, r"thinking: high")
step(t, PROMPT)
t.send("/nothink\r")
step(t, r"thinking: off")
step(t, PROMPT)
t.send("/ctx 4096\r")
step(t, r"context: 4096")
step(t, PROMPT)
t.send("After the new context\r")
m_ctx = step(t, STATS)
if int(m_ctx.group(2)) != 0:
    fail("a new context re-prefills the conversation")
step(t, PROMPT)
t.send("/ctx 3\r")
step(t, r"usage: /ctx")
step(t, PROMPT)
t.send("/bogus\r")
step(t, r"unknown command")
step(t, PROMPT)
t.send("/reset\r")
step(t, r"forgotten")
step(t, PROMPT)
t.send("Fresh start\r")
m3 = step(t, STATS)
if int(m3.group(2)) != 0:
    fail("after /reset nothing should be reused")
step(t, PROMPT)
t.send(b"\x04")  # Ctrl+D
code = t.wait()
if code != 0:
    fail(f"Ctrl+D exit code {code}")

# Ctrl+C stops a long answer and returns to the prompt; the REPL keeps working.
t = Term(["chat", "--demo", "--nothink", "--temp", "0", "-n", "100000", "--no-loop-guard"])
step(t, PROMPT)
t.send("Write a very long story.\r")
time.sleep(1.5)
t.send(b"\x03")
step(t, r"cancelled", timeout=30)
step(t, PROMPT, timeout=30)
t.send("/quit\r")
code = t.wait()
if code != 0:
    fail(f"/quit exit code {code}")
print("repl ok")
