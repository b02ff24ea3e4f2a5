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
import math
import shlex
import stat
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from artcast.server.patterns import REST, STAR, isPattern
from artcast.wire import keyPath

from twisted.python.filepath import FilePath

if TYPE_CHECKING:
    from artcast.server.store import Datum

__all__ = [
    "CHART_BYTES",
    "CHART_POINTS",
    "CHART_SERIES",
    "DASHBOARD_TEXT",
    "LATEST_TEXT",
    "chartPoints",
    "listPage",
    "listeningLine",
    "livePage",
    "readTemplate",
    "sendLine",
]

#: How many of a key's last values its live page embeds for the chart.
CHART_POINTS = 100

#: The most JSON text of values the live page embeds: older values past it
#: are left out (the chart then starts with fewer points).
CHART_BYTES = 64 * 1024

#: How many numeric fields of an object the chart draws, one line each.
CHART_SERIES = 6

#: How many characters of a value the dashboard shows.
DASHBOARD_TEXT = 120

#: How much of a value's text the live page shows before following it live.
LATEST_TEXT = 64 * 1024

_STYLE = """
:root { color-scheme: light; --ink: #1f2933; --muted: #6b7280; --line: #e5e7eb;
        --accent: #2563eb; --paper: #fdfdfc; --flash: #fef3c7; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 64rem; padding: 0 1rem; color: var(--ink); background: var(--paper); }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
h1 { font-size: 1.4rem; font-weight: 600; margin: .5rem 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: .95rem; }
td, th { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
     font-weight: 600; }
td { overflow-wrap: break-word; }
tbody tr:hover td { background-color: #f5f7fa; }
code, pre, .value { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
tr.artcast td.key { white-space: nowrap; }
tr.artcast td.value { font-weight: 600; max-width: 22rem; overflow-wrap: anywhere; }
tr.artcast td.changed { color: var(--muted); white-space: nowrap; font-size: .85rem; }
tr.artcast td { transition: background-color 1.2s ease-out; }
tr.artcast.flash td { background-color: var(--flash); transition: none; }
#value { font-size: 2.5rem; white-space: pre-wrap; word-break: break-all;
         margin: 1rem 0; font-weight: 600; }
.long #value { font-size: 1.1rem; font-family: ui-monospace, "SFMono-Regular", Menlo, monospace;
              font-weight: 500; max-height: 12rem; overflow: auto; }
#status { color: var(--muted); font-size: .9rem; }
#from { color: var(--muted); font-size: .9rem; margin: .5rem 0 0; }
#hint { border: 1px solid var(--line); border-radius: 6px; padding: .5rem 1rem;
        background: #f8fafc; }
#hint pre { white-space: pre-wrap; overflow-wrap: anywhere; }
#chart { width: 100%; margin: 1rem 0 .5rem; }
#chart svg { display: block; width: 100%; height: auto; background: #fff;
             border: 1px solid var(--line); border-radius: 6px; }
#chart text { font: 12px system-ui, sans-serif; fill: var(--muted); }
#legend { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; font-size: .9rem;
          margin-bottom: 1rem; }
#legend span.swatch { display: inline-block; width: .9rem; height: .25rem;
                      border-radius: 2px; vertical-align: middle; margin-right: .35rem; }
@media (max-width: 40rem) {
  body { margin: 1rem auto; } #value { font-size: 1.8rem; }
  td.more, th.more, td.provenance, th.provenance { display: none; }
}
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


def _shown(datum: Datum, limit: int) -> str:
    """
    The first C{limit} characters of a datum's text (a string as itself,
    anything else as JSON), with an ellipsis if there is more; only the
    beginning of a long value is decoded.
    """
    text = datum.text
    shown = text[: 4 * limit + 4].decode("utf-8", "replace")
    if len(shown) > limit or len(text) > 4 * limit + 4:
        return shown[:limit] + "\u2026"
    return shown


def _isNumber(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def chartPoints(datums: Sequence[Datum]) -> list[list[Any]]:
    """
    What a key's live page embeds for its chart: C{[time in ms, value]} for
    each of the last L{CHART_POINTS} datums whose value is a number, or an
    object with numeric top-level fields (only those, and only the first
    L{CHART_SERIES} field names met, oldest first).  Booleans, strings and
    other values are left out; so are the older datums past L{CHART_BYTES}
    of JSON text, which are never decoded.
    """
    chosen: list[Datum] = []
    size = 0
    for datum in reversed(datums[-CHART_POINTS:]):
        size += datum.size
        if size > CHART_BYTES:
            break
        chosen.append(datum)
    points: list[list[Any]] = []
    fields: list[str] = []
    for datum in reversed(chosen):
        value = datum.value
        if _isNumber(value):
            points.append([round(datum.received * 1000), value])
        elif isinstance(value, dict):
            numeric = {}
            for name, field in value.items():
                if not _isNumber(field):
                    continue
                if name not in fields:
                    if len(fields) >= CHART_SERIES:
                        continue
                    fields.append(name)
                numeric[name] = field
            if numeric:
                points.append([round(datum.received * 1000), numeric])
    return points


#: The EventSource-following part of the pages' scripts: C{follow(url,
#: lastId, statusEl, on)} opens an EventSource on C{url} and calls
#: C{on.open(lastId)}, C{on.message(message)} and C{on.gap()}.
_FOLLOW = """
  function follow(url, lastId, statusEl, on) {
    var delay = 1000;
    function connect() {
      // EventSource resumes by itself with Last-Event-ID; a new one (after it
      // gave up, as on a proxy's error page) resumes with since=, as does the
      // first one after the value the page came with.
      var source = new EventSource(
        lastId === null ? url : url + "?since=" + encodeURIComponent(lastId));
      source.onopen = function () {
        delay = 1000;
        on.open(lastId);
      };
      source.onmessage = function (event) {
        var message;
        try {
          message = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        lastId = message.id || event.lastEventId || lastId;
        on.message(message);
      };
      source.addEventListener("gap", on.gap);
      source.onerror = function () {
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          statusEl.textContent = "Disconnected; trying again in " +
            Math.round(delay / 1000) + " s";
          setTimeout(connect, delay);
          delay = Math.min(delay * 2, 30000);
        } else {
          statusEl.textContent = "Reconnecting\\u2026";
        }
      };
    }
    connect();
  }
"""

_LIST_SCRIPT = """
(function () {
  var config = %(config)s;
%(follow)s  var body = document.getElementById("rows");
  var statusEl = document.getElementById("status");
  var rows = new Map();
  var lastId = config.lastId, missed = false;
  function path(key) {
    return "/artcasts/" + key.split("/").map(encodeURIComponent).join("/");
  }
  function when(cell, ms) {
    var date = new Date(ms);
    cell.textContent = date.toLocaleTimeString();
    cell.title = date.toLocaleString();
  }
  Array.prototype.forEach.call(body.querySelectorAll("tr.artcast"), function (row) {
    rows.set(row.getAttribute("data-key"), row);
    var cell = row.querySelector("td.changed");
    var ms = Number(cell.getAttribute("data-ms"));
    if (ms) when(cell, ms);
  });
  function newRow(key) {
    var row = document.createElement("tr");
    row.className = "artcast";
    row.setAttribute("data-key", key);
    ["key", "value", "changed", "description", "provenance", "license", "more"]
      .forEach(function (name) {
        var cell = document.createElement("td");
        cell.className = name;
        row.appendChild(cell);
      });
    var link = document.createElement("a"), code = document.createElement("code");
    link.href = path(key);
    code.textContent = key;
    link.appendChild(code);
    row.firstChild.appendChild(link);
    var empty = document.getElementById("empty");
    if (empty) empty.parentNode.removeChild(empty);
    var before = null;
    rows.forEach(function (other, name) {
      if (name > key && (before === null || name < before.getAttribute("data-key")))
        before = other;
    });
    body.insertBefore(row, before);
    rows.set(key, row);
    return row;
  }
  function show(message) {
    if (typeof message.key !== "string") return;
    var row = rows.get(message.key) || newRow(message.key);
    var value = message.value;
    var text = typeof value === "string" ? value : JSON.stringify(value);
    if (text.length > config.limit) text = text.slice(0, config.limit) + "\\u2026";
    row.querySelector("td.value").textContent = text;
    when(row.querySelector("td.changed"), Date.now());
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
    setTimeout(function () { row.classList.remove("flash"); }, 300);
    statusEl.textContent = "Live; last change " + new Date().toLocaleTimeString() +
      (missed ? "; some values were missed" : "");
    missed = false;
  }
  if (window.EventSource) follow(config.url, lastId, statusEl, {
    open: function () {
      statusEl.textContent = "Live";
    },
    message: show,
    gap: function () {
      missed = true;
    }
  });
})();
"""


def sendLine(group: Mapping[str, Any] | None, key: str) -> str:
    """
    An C{artcast-send} command, as plain text for a shell, that sends the
    value C{42} for C{key} to where this server listens: its data group,
    port and interface, with C{--ttl 0} when it listens on loopback (a
    datagram sent by the default route never reaches it there).

    @param group: the data group's figures
        (L{artcast.server.feeds.multicast.MulticastServerProtocol.figures}),
        or L{None} when the server has no multicast feed: then the line
        names no group (the defaults).
    @param key: a key, or a pattern: each C{*} or C{...} level of it
        becomes C{example}.
    """
    levels = ["example" if level in (STAR, REST) else level for level in key.split("/")]
    words = ["artcast-send"]
    if group is not None:
        words += ["--group", str(group["group"]), "--port", str(group["port"])]
        interface = str(group["interface"])
        if interface not in ("", "0.0.0.0"):
            words += ["--interface", interface]
        if interface.startswith("127."):
            words += ["--ttl", "0"]
    words += [shlex.quote("/".join(levels)), "42"]
    return " ".join(words)


def _waitingHint(key: str, group: Mapping[str, Any] | None) -> str:
    """
    What a key's page says while the server holds no value for it, as HTML:
    that nothing arrived, that the page shows the first value when it
    comes, how to send one this server hears, and where to read more.
    """
    if isPattern(key):
        what = f"any key matching <code>{html.escape(key)}</code>"
    else:
        what = f"<code>{html.escape(key)}</code>"
    return (
        '<div id="hint">'
        f"<p>Nothing has arrived for {what} since the server started. "
        "This page shows the first value the moment it arrives.</p>"
        "<p>To send one that this server hears, from this machine:</p>"
        f"<pre><code>{html.escape(sendLine(group, key))}</code></pre>"
        "<p>If it still does not show, see &ldquo;Nothing arrives?&rdquo; in "
        "<code>docs/running.md#nothing-arrives</code>; the keys that have values are "
        'listed at <a href="/artcasts">/artcasts</a>.</p>'
        "</div>"
    )


def listeningLine(listening: Sequence[Mapping[str, Any]] | None) -> str:
    """
    The dashboard's status line on the multicast groups, as HTML: for each,
    where the server listens and when it last heard a datagram, or that it
    heard nothing yet and where the docs say why that may be.

    @param listening: each group's figures
        (L{artcast.server.feeds.multicast.MulticastServerProtocol.figures}),
        or L{None} for no line.
    """
    if not listening:
        return ""
    parts = []
    for group in listening:
        where = html.escape(
            f"Listening for {group['carries']} on {group['group']}:{group['port']} "
            f"via {group['interface']}"
        )
        last = group.get("last_datagram")
        if last is None:
            parts.append(
                f'<span class="group">{where} \u2014 nothing heard yet: see '
                "<code>docs/running.md#nothing-arrives</code></span>"
            )
        else:
            parts.append(
                f'<span class="group">{where} \u2014 last datagram at '
                f'<time datetime="{html.escape(last)}">{html.escape(last)}</time></span>'
            )
    return '<p id="listening">' + "<br>".join(parts) + "</p>"


def listPage(
    artcasts: list[dict[str, Any]],
    latest: Mapping[str, Datum] | None = None,
    listening: Sequence[Mapping[str, Any]] | None = None,
) -> bytes:
    """
    The dashboard of every artcast: a row per key with a link to its live
    page, its current value (the first L{DASHBOARD_TEXT} characters), when
    it last changed and its registration; the rows follow every key through
    one C{EventSource} on C{/artcasts/...}, resumed after the latest datum
    shown.

    @param latest: the latest datum of each key that has one.
    @param listening: the multicast groups' figures, for a status line
        under the table (L{listeningLine}).
    """
    latest = latest or {}
    rows = []
    last: Datum | None = None
    for artcast in artcasts:
        key = artcast["key"]
        extra = {
            name: value
            for name, value in artcast.items()
            if name not in ("key", "description", "provenance", "license")
        }
        datum = latest.get(key)
        if datum is not None and (last is None or datum.serial > last.serial):
            last = datum
        value = "" if datum is None else html.escape(_shown(datum, DASHBOARD_TEXT))
        changed = (
            '<td class="changed"></td>' if datum is None else
            f'<td class="changed" data-ms="{round(datum.received * 1000)}">'
            f'{time.strftime("%H:%M:%S UTC", time.gmtime(datum.received))}</td>'
        )
        rows.append(
            f'<tr class="artcast" data-key="{html.escape(key)}">'
            f'<td class="key"><a href="{html.escape(keyPath(key))}"><code>{html.escape(key)}</code></a></td>'
            f'<td class="value">{value}</td>'
            f"{changed}"
            f"<td class=\"description\">{html.escape(_text(artcast.get('description', '')))}</td>"
            f"<td class=\"provenance\">{html.escape(_text(artcast.get('provenance', '')))}</td>"
            f'<td class="license">{_license(artcast)}</td>'
            f'<td class="more">{html.escape(_text(extra)) if extra else ""}</td>'
            "</tr>"
        )
    data = None
    for group in listening or ():
        if group.get("carries") == "datums":
            data = group
    body = "\n".join(rows) or (
        '<tr id="empty"><td colspan="7">No artcasts yet: nothing has arrived since the '
        "server started. To send one that this server hears, from this machine: "
        f"<code>{html.escape(sendLine(data, 'greeting'))}</code></td></tr>"
    )
    script = _LIST_SCRIPT % {"follow": _FOLLOW, "config": _script({
        "url": keyPath(REST),
        "lastId": None if last is None else last.id,
        "limit": DASHBOARD_TEXT,
    })}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Artcasts</title><style>{_STYLE}</style></head>
<body><h1>Artcasts</h1>
<table><thead><tr><th>Key</th><th>Value</th><th>Changed</th><th>Description</th><th class="provenance">Provenance</th><th>License</th><th class="more">More</th></tr></thead>
<tbody id="rows">
{body}
</tbody></table>
<p id="status">Values follow live.</p>
{listeningLine(listening)}
<p><a href="/artcasts">JSON</a> with <code>Accept: application/json</code></p>
<script>{script}</script>
</body></html>
""".encode("utf-8")


_LIVE_SCRIPT = """
(function () {
  var config = %(config)s;
%(follow)s  var key = config.key, url = config.url;
  var valueEl = document.getElementById("value");
  var statusEl = document.getElementById("status");
  var keyEl = document.getElementById("matched");
  var fromEl = document.getElementById("from");
  var chartEl = document.getElementById("chart");
  var legendEl = document.getElementById("legend");
  var lastId = config.lastId, missed = false;
  var COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
  var skew = Date.now() - config.now;
  var points = [], fields = [];
  if (!chartEl || !legendEl) config.chart = false;
  function numeric(value) {
    return typeof value === "number" && isFinite(value);
  }
  function add(ms, value) {
    if (!config.chart) return false;
    var point = {t: ms, v: {}}, any = false;
    if (numeric(value)) {
      if (fields.indexOf("") < 0 && fields.length < config.series) fields.push("");
      if (fields.indexOf("") >= 0) { point.v[""] = value; any = true; }
    } else if (value && typeof value === "object" && !Array.isArray(value)) {
      Object.keys(value).forEach(function (name) {
        if (!numeric(value[name])) return;
        if (fields.indexOf(name) < 0) {
          if (fields.length >= config.series) return;
          fields.push(name);
        }
        point.v[name] = value[name];
        any = true;
      });
    }
    if (!any) return false;
    points.push(point);
    if (points.length > config.points) points.splice(0, points.length - config.points);
    return true;
  }
  function label(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toPrecision(4);
    return String(Number(v.toPrecision(6)));
  }
  function el(name, attrs, text) {
    // The SVG namespace, from the page's own (no URL written in the page).
    var node = document.createElementNS(
      document.documentElement.namespaceURI.replace("1999/xhtml", "2000/svg"), name);
    Object.keys(attrs).forEach(function (a) { node.setAttribute(a, attrs[a]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function draw() {
    if (!points.length) return;
    var width = Math.max(320, Math.round(chartEl.clientWidth || 800));
    var height = Math.round(Math.min(360, Math.max(200, width * 0.42)));
    var left = 64, right = 16, top = 14, bottom = 30;
    var lo = Infinity, hi = -Infinity, t0 = points[0].t, t1 = points[points.length - 1].t;
    points.forEach(function (p) {
      Object.keys(p.v).forEach(function (f) {
        lo = Math.min(lo, p.v[f]);
        hi = Math.max(hi, p.v[f]);
      });
    });
    var span = hi - lo || Math.abs(hi) || 1;
    var bottomV = hi === lo ? lo - span / 2 : lo, topV = hi === lo ? hi + span / 2 : hi;
    function x(p, i) {
      var w = width - left - right;
      if (t1 > t0) return left + w * (p.t - t0) / (t1 - t0);
      return left + (points.length > 1 ? w * i / (points.length - 1) : w);
    }
    function y(v) {
      return top + (height - top - bottom) * (topV - v) / (topV - bottomV);
    }
    var svg = el("svg", {viewBox: "0 0 " + width + " " + height, width: width,
                         height: height, role: "img"});
    [topV, (topV + bottomV) / 2, bottomV].forEach(function (v) {
      svg.appendChild(el("line", {x1: left, x2: width - right, y1: y(v), y2: y(v),
                                  stroke: "#e5e7eb", "stroke-width": 1}));
    });
    svg.appendChild(el("text", {id: "ymax", x: left - 8, y: y(hi) + 4,
                                "text-anchor": "end"}, label(hi)));
    svg.appendChild(el("text", {id: "ymin", x: left - 8, y: y(lo) + 4,
                                "text-anchor": "end"}, label(lo)));
    function clock(ms) {
      return new Date(ms + skew).toLocaleTimeString();
    }
    svg.appendChild(el("text", {id: "tfirst", x: left, y: height - 8}, clock(t0)));
    svg.appendChild(el("text", {id: "tlast", x: width - right, y: height - 8,
                                "text-anchor": "end"}, clock(t1)));
    fields.forEach(function (f, n) {
      var coords = [];
      points.forEach(function (p, i) {
        if (f in p.v) coords.push(x(p, i).toFixed(1) + "," + y(p.v[f]).toFixed(1));
      });
      if (!coords.length) return;
      var line = el("polyline", {"class": "series", points: coords.join(" "),
                                 fill: "none", stroke: COLOURS[n %% COLOURS.length],
                                 "stroke-width": 2, "stroke-linejoin": "round",
                                 "stroke-linecap": "round"});
      line.setAttribute("data-field", f);
      if (fields.length === 1 && coords.length > 1) {
        var first = coords[0].split(",")[0], end = coords[coords.length - 1].split(",")[0];
        svg.appendChild(el("polygon", {
          points: first + "," + y(bottomV) + " " + coords.join(" ") + " " + end + "," + y(bottomV),
          fill: COLOURS[0], "fill-opacity": 0.08, stroke: "none"}));
      }
      svg.appendChild(line);
      var last = coords[coords.length - 1].split(",");
      svg.appendChild(el("circle", {cx: last[0], cy: last[1], r: 3.5,
                                    fill: COLOURS[n %% COLOURS.length]}));
    });
    chartEl.replaceChildren(svg);
    legendEl.replaceChildren();
    if (fields.length > 1 || (fields.length === 1 && fields[0] !== "")) {
      fields.forEach(function (f, n) {
        var item = document.createElement("span"), swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = COLOURS[n %% COLOURS.length];
        item.appendChild(swatch);
        item.appendChild(document.createTextNode(f || "value"));
        legendEl.appendChild(item);
      });
    }
  }
  config.history.forEach(function (p) { add(p[0], p[1]); });
  draw();
  var drawn = 0;
  if (window.addEventListener) {
    window.addEventListener("resize", function () {
      clearTimeout(drawn);
      drawn = setTimeout(draw, 100);
    });
  }
  function show(message) {
    var value = message.value;
    var text = typeof value === "string" ? value : JSON.stringify(value);
    valueEl.textContent = text;
    if (valueEl.parentNode) valueEl.parentNode.className = text.length > 24 ? "long" : "";
    // The heading is the key or pattern and stays so; the key of each
    // datum is shown beside its value (on a pattern's page).
    keyEl.textContent = message.key || key;
    if (fromEl && config.pattern) fromEl.hidden = false;
    var hint = document.getElementById("hint");
    if (hint && hint.parentNode) hint.parentNode.removeChild(hint);
    if (add(Date.now() - skew, value)) draw();
    statusEl.textContent = "Updated " + new Date().toLocaleTimeString() +
      " (id " + message.id + ")" + (missed ? "; some values were missed" : "");
    missed = false;
  }
  if (!window.EventSource) {
    statusEl.textContent = "This browser cannot follow live values.";
  } else {
    // The first EventSource resumes after the value the page came with.
    follow(url, lastId, statusEl, {
      open: function (lastId) {
        if (lastId !== null) statusEl.textContent = "Live; the latest value has id " + lastId;
      },
      message: show,
      gap: function () {
        missed = true;
      }
    });
  }
})();
"""


def livePage(
    key: str,
    latest: Datum | None = None,
    recent: Sequence[Datum] = (),
    now: float = 0.0,
    listening: Mapping[str, Any] | None = None,
) -> bytes:
    """
    The live page of a key (or pattern): it shows the latest value and
    updates itself as datums arrive, following from C{latest} on so that
    nothing is missed or shown twice.  Its heading is the key or pattern;
    on a pattern's page, the key each value came from is shown above it.

    While there is no value, the page says so, with how to send one that
    this server hears (L{sendLine}); that hint goes when the first value
    arrives.

    A key (not a pattern) whose values are numbers, or objects with numeric
    fields, gets a chart too: C{recent} (its last datums, oldest first) is
    embedded as L{chartPoints}, and live values are added to it.

    @param latest: the latest datum of the key or pattern, if any.
    @param now: the server's time, to place the embedded points on the
        browser's clock.
    @param listening: the data group's figures, for the hint's
        C{artcast-send} line; L{None} for a line without a group.
    """
    chart = not isPattern(key)
    config = {
        "key": key,
        "url": keyPath(key),
        "lastId": None if latest is None else latest.id,
        "now": round(now * 1000),
        "chart": chart,
        "pattern": not chart,
        "history": chartPoints(recent) if chart else [],
        "points": CHART_POINTS,
        "series": CHART_SERIES,
    }
    script = _LIVE_SCRIPT % {"follow": _FOLLOW, "config": _script(config)}
    hint = ""
    if latest is None:
        value, status = "\u2026", "Waiting for the first value\u2026"
        long = ""
        hint = _waitingHint(key, listening)
    else:
        shown = _shown(latest, LATEST_TEXT)
        long = ' class="long"' if len(shown) > 24 else ""
        value = html.escape(shown)
        status = "Latest value held by the server (id " + html.escape(latest.id) + ")"
    matched = key if latest is None else latest.key
    # On a pattern's page, the key the value came from; a key's page has it
    # as its heading already.
    fromHidden = " hidden" if latest is None or chart else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(key)} — Artcast</title><style>{_STYLE}</style></head>
<body><p><a href="/artcasts">All artcasts</a></p>
<h1><code id="key">{html.escape(key)}</code></h1>
{hint}
<p id="from"{fromHidden}>from <code id="matched">{html.escape(matched)}</code></p>
<div id="latest"{long}><div id="value">{value}</div></div>
<div id="chart"></div>
<div id="legend"></div>
<p id="status">{status}</p>
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
