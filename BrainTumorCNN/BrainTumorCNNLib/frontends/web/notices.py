"""The front door's own pages, in words a reader understands: all sessions in use (a page that tries
again by itself) and a session that has ended (why, and a way to start again).  A browser gets HTML;
anything else (curl, scripts) the same words as plain text."""
from __future__ import annotations

import html

#: Seconds between two tries of the "all sessions in use" page (also its Retry-After).
RETRY_S = 10


def wants_html(accept: str) -> bool:
    return "text/html" in (accept or "")


def in_use_text(max_sessions: int) -> str:
    return (f"braintumorcnn serve: all {max_sessions} sessions are in use (--max-sessions {max_sessions}: one "
            "process per browser session); close one of their pages or try again later\n")


def in_use_page(max_sessions: int) -> str:
    """Tries again every RETRY_S seconds by itself (a refresh, with a countdown shown) until a session is free."""
    return _page("All sessions are in use", f"""
<p id="in-use">All {max_sessions} sessions of this server are in use (one process per browser session,
<code>--max-sessions {max_sessions}</code>). A session is freed when its page is closed or left idle.</p>
<p id="retrying">This page tries again by itself: next try in <span id="countdown">{RETRY_S}</span> s
(try <span id="tries">1</span>).</p>
<script>
  const tries = Number(sessionStorage.getItem("braintumorcnn_tries") || "0") + 1;
  sessionStorage.setItem("braintumorcnn_tries", String(tries));
  document.getElementById("tries").textContent = tries;
  let left = {RETRY_S};
  setInterval(() => {{
    left -= 1;
    document.getElementById("countdown").textContent = Math.max(left, 0);
    if (left === 0) location.reload();
  }}, 1000);
</script>""")


def ended_text(number: int, reason: str) -> str:
    return (f"braintumorcnn serve: session {number} has ended: {reason}. Its case, result and uploaded files are "
            "gone from the server; open the server's address for a new session\n")


def ended_page(number: int, reason: str) -> str:
    """A session's page after its process ended: what happened and a way to start again."""
    return _page("Session ended", f"""
<p id="ended">Your session (number {number}) has ended: {html.escape(reason)}.</p>
<p>Its case, its result and the files uploaded to it are gone from the server. If you had not downloaded the
result, open the case again in a new session and segment it again.</p>
<p><a id="start-again" href="/" onclick="sessionStorage.removeItem('braintumorcnn_tries')">Start a new
session</a></p>""")


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>BrainTumorCNN: {title}</title>
<style>body {{ font-family: sans-serif; background: #212121; color: #eee; max-width: 44em; margin: 4em auto; }}
a {{ color: #8cf; font-size: 1.2em; }} code {{ color: #ccc; }}</style></head>
<body><h1>BrainTumorCNN</h1><h2>{title}</h2>{body}
</body></html>
"""
