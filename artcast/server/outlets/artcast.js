/* artcast.js: follow an Artcast key from a web page.  Served by every
 * Artcast server at /artcast.js; no dependencies, a classic script.
 *
 *   <script src="http://127.0.0.1:8888/artcast.js"></script>
 *   <script>
 *     Artcast.follow("test/tick", function (value, info) {
 *       // info: {key, id, gap}; gap is true when values before this one were missed
 *     });
 *   </script>
 *
 * Artcast.follow(keyOrPattern, onValue, options) -> {close()}
 *   options.base     the server's URL (default: where this script came from)
 *   options.since    start after this datum id (default: the current value)
 *   options.onGap    function (sinceId): values after sinceId were missed
 *   options.onStatus function (text): "open", "shutdown", "error"
 * Artcast.next(key, {since, base}) -> Promise of {value, key, id, gap}
 */
(function (global) {
  "use strict";

  // Where this script was loaded from: the server to talk to by default.
  var script = typeof document !== "undefined" && document.currentScript;
  var defaultBase = script && script.src ? new URL(script.src).origin : "";

  function path(base, key) {
    // Each level percent-encoded, the "/" between levels kept.
    return (base || defaultBase) + "/artcasts/" +
      key.split("/").map(encodeURIComponent).join("/");
  }

  function follow(key, onValue, options) {
    options = options || {};
    var lastId = options.since || null;
    var source = null;
    var timer = null;
    var delay = 1;          // seconds before the next try after an error
    var closed = false;
    var pendingGap = false; // a "gap" event came: the next value follows a loss

    function status(text) {
      if (options.onStatus) options.onStatus(text);
    }

    function later(seconds) {
      if (source) source.close();
      source = null;
      if (!closed) timer = setTimeout(open, seconds * 1000);
    }

    function open() {
      timer = null;
      // A new EventSource resumes with ?since=; the browser's own
      // reconnects (Last-Event-ID) are not used: errors are handled here.
      var url = path(options.base, key) + (lastId ? "?since=" + encodeURIComponent(lastId) : "");
      source = new EventSource(url);
      source.onopen = function () {
        delay = 1;
        status("open");
      };
      source.onmessage = function (event) {
        var datum = JSON.parse(event.data);   // {key, id, value}
        var gap = pendingGap;
        pendingGap = false;
        lastId = datum.id;
        onValue(datum.value, {key: datum.key, id: datum.id, gap: gap});
      };
      source.addEventListener("gap", function (event) {
        // Values after this id were missed (no longer held by the server).
        var since = JSON.parse(event.data).since;
        if (options.onGap) options.onGap(since);
        pendingGap = true;
      });
      source.addEventListener("shutdown", function (event) {
        // The server is stopping: come back when it says, after our last id.
        var retryAfter = JSON.parse(event.data).retryAfter || delay;
        status("shutdown");
        later(retryAfter);
      });
      source.onerror = function () {
        // Down, unreachable or refused: try again later, 1 s doubling to 30 s.
        status("error");
        later(delay);
        delay = Math.min(delay * 2, 30);
      };
    }

    open();
    return {
      close: function () {
        closed = true;
        if (timer) clearTimeout(timer);
        if (source) source.close();
        source = null;
      }
    };
  }

  // One value: the next after options.since (or the current one with
  // since "latest"), through a long poll.
  function next(key, options) {
    options = options || {};
    var url = path(options.base, key);
    if (options.since) url += "?since=" + encodeURIComponent(options.since);
    return fetch(url, {headers: {Accept: "application/json"}, cache: "no-store"})
      .then(function (response) {
        if (response.status !== 200) {
          return response.text().then(function (text) {
            throw new Error(response.status + ": " + text);
          });
        }
        return response.json().then(function (value) {
          var header = response.headers.get("Artcast-Key");  // percent-encoded
          return {
            value: value,
            key: header === null ? key : decodeURIComponent(header),
            id: response.headers.get("Artcast-Id"),
            gap: response.headers.get("Artcast-Gap") === "1"
          };
        });
      });
  }

  global.Artcast = {follow: follow, next: next};
})(typeof window !== "undefined" ? window : this);
