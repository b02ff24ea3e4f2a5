# -*- test-case-name: tests.test_web -*-
"""
The HTML pages: the list of artcasts, the live page of one key, and a key's
own page from the C{--templates} folder (L{readTemplate}).

They need nothing beyond the server (no CDN, no framework).  Every key, value
and piece of metadata is escaped: a source's text never becomes markup.
"""

from __future__ import annotations

import html
import json
import os
import stat
from typing import Any

from artcast.wire import keyPath

from twisted.python.filepath import FilePath

__all__ = [
    "listPage",
    "livePage",
    "readTemplate",
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 50rem;
       padding: 0 1rem; color: #222; background: #fdfdfc; }
h1 { font-size: 1.4rem; } table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd;
         vertical-align: top; }
code, pre { font-family: ui-monospace, monospace; }
#value { font-size: 2.5rem; white-space: pre-wrap; word-break: break-all;
         margin: 1rem 0; }
#status { color: #777; font-size: .9rem; }
"""

def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _script(value: object) -> str:
    """
    A JSON value safe to put inside a C{<script>} element.
    """
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _license(meta: dict[str, Any]) -> str:
    license = meta.get("license")
    if not isinstance(license, dict):
        return ""
    title = html.escape(_text(license.get("title") or license.get("uri") or ""))
    uri = license.get("uri")
    if isinstance(uri, str) and uri.lower().startswith(("http://", "https://")):
        return f'<a href="{html.escape(uri)}" rel="license">{title}</a>'
    return title


def listPage(artcasts: list[dict[str, Any]]) -> bytes:
    """
    The page listing every artcast, linking to each one's live page.
    """
    rows = []
    for artcast in artcasts:
        key = artcast["key"]
        extra = {
            name: value
            for name, value in artcast.items()
            if name not in ("key", "description", "provenance", "license")
        }
        rows.append(
            "<tr>"
            f'<td><a href="{html.escape(keyPath(key))}"><code>{html.escape(key)}</code></a></td>'
            f"<td>{html.escape(_text(artcast.get('description', '')))}</td>"
            f"<td>{html.escape(_text(artcast.get('provenance', '')))}</td>"
            f"<td>{_license(artcast)}</td>"
            f"<td>{html.escape(_text(extra)) if extra else ''}</td>"
            "</tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="5">No artcasts yet.</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Artcasts</title><style>{_STYLE}</style></head>
<body><h1>Artcasts</h1>
<table><thead><tr><th>Key</th><th>Description</th><th>Provenance</th><th>License</th><th>More</th></tr></thead>
<tbody>
{body}
</tbody></table>
<p id="status"><a href="/artcasts">JSON</a> with <code>Accept: application/json</code></p>
</body></html>
""".encode("utf-8")


_LIVE_SCRIPT = """
(function () {
  var key = %(key)s, url = %(url)s;
  var valueEl = document.getElementById("value");
  var statusEl = document.getElementById("status");
  var keyEl = document.getElementById("matched");
  var lastId = null, missed = false, delay = 1000;
  function show(message) {
    var value = message.value;
    valueEl.textContent = typeof value === "string" ? value : JSON.stringify(value);
    keyEl.textContent = message.key || key;
    statusEl.textContent = "Updated " + new Date().toLocaleTimeString() +
      " (id " + message.id + ")" + (missed ? "; some values were missed" : "");
    missed = false;
  }
  function connect() {
    if (!window.EventSource) {
      statusEl.textContent = "This browser cannot follow live values.";
      return;
    }
    // EventSource resumes by itself with Last-Event-ID; a new one (after it
    // gave up, as on a proxy's error page) resumes with since=.
    var source = new EventSource(
      lastId === null ? url : url + "?since=" + encodeURIComponent(lastId));
    source.onopen = function () {
      delay = 1000;
    };
    source.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      lastId = message.id || event.lastEventId || lastId;
      show(message);
    };
    source.addEventListener("gap", function () {
      missed = true;
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        statusEl.textContent = "Disconnected; trying again in " +
          Math.round(delay / 1000) + " s";
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      } else {
        statusEl.textContent = "Reconnecting\u2026";
      }
    };
  }
  connect();
})();
"""


def livePage(key: str) -> bytes:
    """
    The live page of a key (or pattern): it shows the latest value and
    updates itself as datums arrive.
    """
    script = _LIVE_SCRIPT % {"key": _script(key), "url": _script(keyPath(key))}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(key)} — Artcast</title><style>{_STYLE}</style></head>
<body><p><a href="/artcasts">All artcasts</a></p>
<h1><code id="matched">{html.escape(key)}</code></h1>
<div id="value">…</div>
<p id="status">Waiting for the first value…</p>
<script>{script}</script>
</body></html>
""".encode("utf-8")


def readTemplate(folder: FilePath[str], key: str) -> bytes | None:
    """
    The content of a key's template, C{<folder>/<key>.html}, or L{None}
    when there is none.

    Only a regular file reached through real folders is a template: if the
    file, or any folder below C{folder} on its way, is a symbolic link, the
    key has no template, wherever the link points (even inside C{folder}).
    The file itself is opened with C{O_NOFOLLOW}, so a link put in its place
    after the check is not followed either.  C{folder} itself may be a link.

    @raise InsecurePath: if a level of the key would leave the folder.
    """
    template = folder.descendant((key + ".html").split("/"))
    step = folder
    for segment in template.segmentsFrom(folder)[:-1]:
        step = step.child(segment)
        if step.islink() or not step.isdir():
            return None
    try:
        fd = os.open(template.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as opened:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return opened.read()
