/* shipskip widget: Ship / Skip buttons and the live Community figure for one tool of one comparison.
 *
 * Embed once per page:   <script src="https://votes.example/widget.js" defer></script>
 * Mark each place:       <div data-shipskip data-comparison="ID" data-tool="TOOL_ID"
 *                             data-votes-api="https://votes.example" data-read-api="https://read.example"></div>
 *
 * Plain JavaScript, no build step, no dependencies. Styles live in a shadow root, so they cannot leak into the
 * host page (and the page's cannot break the widget); fonts are inherited from the page.
 */
(function () {
  "use strict";
  var VERSION = "1";
  var TOKEN_KEY = "shipskip.voter";
  var CHOICE_KEY = "shipskip.choice.";
  var streams = {};   // one EventSource per read API and comparison, shared by that comparison's widgets
  var tokenPromise = {};

  var CSS =
    ":host{display:block;font:inherit;color:inherit}" +
    ".ss{display:flex;flex-direction:column;gap:.4em}" +
    ".row{display:flex;gap:.5em}" +
    "button{font:inherit;cursor:pointer;padding:.35em .9em;border-radius:999px;border:1px solid currentColor;" +
    "background:transparent;color:inherit}" +
    "button[aria-pressed=true]{background:#1f7a4d;border-color:#1f7a4d;color:#fff}" +
    "button.skip[aria-pressed=true]{background:#9b2c2c;border-color:#9b2c2c}" +
    "button:focus-visible{outline:2px solid #2563eb;outline-offset:2px}" +
    "button[disabled]{opacity:.6;cursor:wait}" +
    ".figure{font-weight:600}.note{font-size:.85em;min-height:1.2em;opacity:.85}";

  function storage(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key);
      if (value === null) window.localStorage.removeItem(key); else window.localStorage.setItem(key, value);
    } catch (e) { /* storage may be blocked; the cookie still identifies the voter */ }
    return null;
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return String(Date.now()) + Math.random().toString(16).slice(2);
  }

  function voterToken(api) {
    var stored = storage(TOKEN_KEY + "@" + api);
    if (stored) return Promise.resolve(stored);
    if (!tokenPromise[api]) {
      tokenPromise[api] = fetch(api + "/v1/voters", { method: "POST", credentials: "include" })
        .then(function (r) {
          if (!r.ok) throw r;
          return r.json();
        })
        .then(function (body) {
          storage(TOKEN_KEY + "@" + api, body.voter_token);
          return body.voter_token;
        })
        .catch(function (error) {
          delete tokenPromise[api];
          throw error;
        });
    }
    return tokenPromise[api];
  }

  function figureText(tool) {
    if (!tool) return "—";
    if (tool.ship_pct === null || tool.ship_pct === undefined) {
      return "— (" + tool.votes + (tool.votes === 1 ? " vote" : " votes") + ")";
    }
    return Math.round(tool.ship_pct) + "% ship · " + tool.votes + " votes";
  }

  function subscribe(readApi, comparison, listener) {
    var key = readApi + " " + comparison;
    var entry = streams[key];
    if (!entry) {
      entry = streams[key] = { listeners: [], last: null, source: null };
      var url = readApi + "/v1/comparisons/" + encodeURIComponent(comparison) + "/community";
      var deliver = function (figures) {
        entry.last = figures;
        entry.listeners.forEach(function (fn) { fn(figures); });
      };
      fetch(url).then(function (r) { return r.ok ? r.json() : null; }).then(function (f) { if (f) deliver(f); });
      if (window.EventSource) {
        entry.source = new EventSource(url + "/stream");
        entry.source.onmessage = function (event) {
          try { deliver(JSON.parse(event.data)); } catch (e) { /* a malformed event changes nothing */ }
        };
        entry.source.addEventListener("figures", entry.source.onmessage);
      }
    }
    entry.listeners.push(listener);
    if (entry.last) listener(entry.last);
  }

  function Widget(el) {
    this.el = el;
    this.comparison = el.getAttribute("data-comparison");
    this.tool = el.getAttribute("data-tool");
    this.votesApi = (el.getAttribute("data-votes-api") || "").replace(/\/$/, "");
    this.readApi = (el.getAttribute("data-read-api") || this.votesApi).replace(/\/$/, "");
    this.choiceKey = CHOICE_KEY + this.comparison + "." + this.tool;
    this.choice = storage(this.choiceKey);
    this.figures = null;
    this.render();
  }

  Widget.prototype.render = function () {
    var root = this.el.attachShadow ? this.el.attachShadow({ mode: "open" }) : this.el;
    root.innerHTML =
      "<style>" + CSS + "</style>" +
      '<div class="ss" part="widget">' +
      '<div class="row" role="group" aria-label="Your verdict">' +
      '<button type="button" class="ship" aria-pressed="false">Ship</button>' +
      '<button type="button" class="skip" aria-pressed="false">Skip</button></div>' +
      '<div class="figure" aria-live="polite" aria-atomic="true">—</div>' +
      '<div class="note" role="status"></div></div>';
    this.buttons = { ship: root.querySelector(".ship"), skip: root.querySelector(".skip") };
    this.figure = root.querySelector(".figure");
    this.note = root.querySelector(".note");
    var self = this;
    ["ship", "skip"].forEach(function (verdict) {
      self.buttons[verdict].addEventListener("click", function () { self.click(verdict); });
    });
    this.showChoice();
    subscribe(this.readApi, this.comparison, function (figures) { self.update(figures); });
  };

  Widget.prototype.showChoice = function () {
    for (var verdict in this.buttons) {
      this.buttons[verdict].setAttribute("aria-pressed", String(this.choice === verdict));
    }
  };

  Widget.prototype.update = function (figures) {
    this.figures = figures;
    var tool = null;
    (figures.tools || []).forEach(function (t) { if (t.tool_id === this.tool) tool = t; }, this);
    this.figure.textContent = "Community: " + figureText(tool);
  };

  Widget.prototype.busy = function (on) {
    this.buttons.ship.disabled = on;
    this.buttons.skip.disabled = on;
  };

  Widget.prototype.click = function (verdict) {
    var previous = this.choice;
    var next = previous === verdict ? null : verdict;  // clicking the chosen button again takes it back
    this.choice = next;
    this.showChoice();
    this.note.textContent = "";
    this.busy(true);
    var self = this;
    this.send(next, newKey(), 0).then(
      function () {
        storage(self.choiceKey, next);
        self.note.textContent = next ? "Thanks — your " + next + " is counted." : "Your vote was taken back.";
      },
      function (message) {
        self.choice = previous;  // roll back
        self.showChoice();
        self.note.textContent = message;
      }
    ).then(function () { self.busy(false); });
  };

  Widget.prototype.send = function (verdict, key, attempt) {
    var self = this;
    var base = this.votesApi + "/v1/comparisons/" + encodeURIComponent(this.comparison) + "/votes";
    return voterToken(this.votesApi).then(function (token) {
      var headers = { "X-Voter-Token": token, "Idempotency-Key": key };
      var request = { method: "DELETE", headers: headers, credentials: "include" };
      var url = base + "/" + encodeURIComponent(self.tool);
      if (verdict) {
        headers["Content-Type"] = "application/json";
        request = { method: "POST", headers: headers, credentials: "include",
          body: JSON.stringify({ tool_id: self.tool, verdict: verdict }) };
        url = base;
      }
      return fetch(url, request);
    }).then(function (response) {
      if (response.ok) return response;
      var retryAfter = parseInt(response.headers.get("Retry-After") || "1", 10);
      if (response.status === 503 && attempt < 3) {
        // The same Idempotency-Key: however many tries reach the stream, the vote is stored once.
        return new Promise(function (resolve) { setTimeout(resolve, retryAfter * 1000); })
          .then(function () { return self.send(verdict, key, attempt + 1); });
      }
      if (response.status === 429) throw "Too many votes — try again in " + retryAfter + " s.";
      if (response.status === 401) { storage(TOKEN_KEY + "@" + self.votesApi, null); throw "Please try again."; }
      throw "Your vote could not be counted (" + response.status + ").";
    }, function (error) {
      if (typeof error === "string") throw error;
      throw "Your vote could not be sent — check your connection.";
    });
  };

  function start() {
    var places = document.querySelectorAll("[data-shipskip]");
    for (var i = 0; i < places.length; i++) {
      if (!places[i].__shipskip) places[i].__shipskip = new Widget(places[i]);
    }
  }

  window.shipskip = { version: VERSION, start: start };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
