/* shipskip widget: Ship / Skip buttons and the live Community figure for one tool of one comparison.
 *
 * Embed once per page:   <script src="https://votes.example/widget.js" defer></script>
 * Mark each place:       <div data-shipskip data-comparison="ID" data-tool="TOOL_ID"></div>
 * And once a page:       <div data-shipskip data-part="forget"></div>   (a "Forget my votes" link)
 *
 * Attributes of a place (only data-comparison and data-tool are required; data-tool not for data-part="history",
 * neither for data-part="forget"):
 *   data-part        "figure" (the Community figure, with a trend line of the last 30 days once there is one),
 *                    "vote" (the buttons and what became of the visitor's vote), "history" (a larger chart of
 *                    both tools' shares over the last 30 days, with a legend; data-tool is not needed),
 *                    or absent for both, figure first; "forget": a "Forget my votes" link that asks first, then
 *                    has the votes API forget this browser's voter (every vote of it stops counting, on every
 *                    page) and clears what the widget kept of it
 *   data-tool-name   the tool's name, read out with the buttons ("Ship Acme Coder"); else the read API's name
 *   data-votes-api   the votes API's base URL; by default the origin this script came from
 *   data-read-api    the read API's base URL (figures); by default the votes API's
 *   data-theme       "light", "dark" or "auto" (follows prefers-color-scheme); absent: the page's own text colour
 *   data-lang        the language of the widget's words (en, de); absent: the page's <html lang>, then English
 *
 * Colours are CSS custom properties, inherited through the shadow root, so the host page sets them on the place:
 *   [data-shipskip] { --shipskip-ship: #0a7; }
 * --shipskip-text, --shipskip-muted, --shipskip-ship, --shipskip-skip, --shipskip-on-choice (text on a chosen
 * button), --shipskip-button-bg, --shipskip-border, --shipskip-focus. Shapes and sizes through ::part(): figure,
 * value, label, detail, trend, age, vote, buttons, button, ship, skip, note, chart, legend, forget, forget-link,
 * forget-confirm.
 * The trend line and the chart are plain inline SVG (no chart library), each an image named by the change in
 * words ("Last 30 days: 55% to 62%, up 7 points"), from the read API's /history (a point a day).
 *
 * Plain JavaScript, no build step, no dependencies. Styles live in a shadow root, so they cannot leak into the
 * host page (and the page's cannot break the widget); fonts are inherited from the page. Each part has a build
 * function (its elements, once) and a paint function (its words, on every change); every word is in STRINGS.
 * What a site owner has to fix (an origin the API does not allow, a wrong tool id) is said in the console.
 */
(() => {
  "use strict";
  const VERSION = "2";
  const TOKEN_KEY = "shipskip.voter@"; // + the votes API base: a voter token per API, kept across pages
  const CHOICE_KEY = "shipskip.choice.";
  const MAX_RETRIES = 4; // after the first try of a vote: 1, 2, 4, 8 s apart unless the API says otherwise
  const MAX_WAIT_S = 30; // a longer Retry-After is told to the visitor instead of waited out
  const SENDING_AFTER_MS = 400; // a vote confirmed sooner says nothing in between
  const STALE_AFTER_MS = 60000; // figures older than this, with no live stream, show their age
  const POLL_MS = 30000; // without the stream, the figures are fetched this often
  const REOPEN_MS = 15000; // a stream the browser gave up on is opened again after this
  const HISTORY_MS = 600000; // the daily history (trend lines) is fetched again this often
  const SVG_NS = "http://www.w3.org/2000/svg";
  const script = document.currentScript;
  const SCRIPT_ORIGIN = script && script.src ? new URL(script.src, location.href).origin : "";

  const STRINGS = {
    en: {
      ship: "Ship",
      skip: "Skip",
      verdictOn: "Your verdict on {tool}",
      community: "Community",
      votes: { one: "{n} vote", other: "{n} votes" },
      notEnough: "Not enough votes yet ({n} of {min})",
      unavailable: "Figures unavailable",
      trend: "Last {days} days: {from} to {to}, {change}",
      up: { one: "up {n} point", other: "up {n} points" },
      down: { one: "down {n} point", other: "down {n} points" },
      unchanged: "unchanged",
      chart: "Community ship share, last {days} days",
      noTrend: "Not enough votes yet for a trend",
      updatedAgo: "Updated {ago} ago",
      seconds: "{n} s",
      minutes: "{n} min",
      hours: "{n} h",
      sending: "Sending your vote…",
      counted: { ship: "Thanks — your Ship is counted.", skip: "Thanks — your Skip is counted." },
      retracted: "Your vote was taken back.",
      retrying: "Not confirmed yet — trying again in {wait}…",
      offline: "You are offline — your vote will be sent when you are back online.",
      notSent: "Your vote was not sent: the vote service cannot be reached. Check your connection and try again.",
      notCounted: "The vote service is having trouble: your vote was not counted. Try again in {wait}.",
      unconfirmed: "We could not confirm your vote. It may have been counted; voting again will not count it twice.",
      limited: {
        "voter-tokens": "Too many new voters from your network — try again in {wait}.",
        voter: "You have voted a lot in a short time — try again in {wait}.",
        address: "Too many votes from your network — try again in {wait}.",
        comparison: "Very many people are voting on this right now — try again in {wait}.",
      },
      notHere: "Voting is not available on this site right now.",
      refused: "This vote cannot be taken. Please reload the page and try again.",
      forget: "Forget my votes",
      forgetAsk: "Forget every vote from this browser? They stop counting on this site. This cannot be undone.",
      forgetYes: "Yes, forget them",
      forgetNo: "Cancel",
      forgetting: "Forgetting your votes…",
      forgotten: "Your votes are forgotten: they no longer count.",
      forgetNothing: "This browser has no votes to forget here.",
      forgetRefused: "This browser's votes cannot be forgotten: its voter key is no longer valid.",
      forgetLimited: "Too many requests — try again in {wait}.",
      forgetNotSent: "Your votes were not forgotten: the vote service cannot be reached. Check your connection " +
        "and try again.",
      forgetTrouble: "The vote service is having trouble: your votes are not forgotten yet. Try again in {wait}.",
    },
    de: {
      ship: "Einsetzen",
      skip: "Auslassen",
      verdictOn: "Ihr Urteil zu {tool}",
      community: "Community",
      votes: { one: "{n} Stimme", other: "{n} Stimmen" },
      notEnough: "Noch zu wenige Stimmen ({n} von {min})",
      unavailable: "Zahlen nicht verfügbar",
      trend: "Letzte {days} Tage: von {from} auf {to}, {change}",
      up: { one: "plus {n} Punkt", other: "plus {n} Punkte" },
      down: { one: "minus {n} Punkt", other: "minus {n} Punkte" },
      unchanged: "unverändert",
      chart: "Community-Anteil „Einsetzen“, letzte {days} Tage",
      noTrend: "Noch zu wenige Stimmen für einen Verlauf",
      updatedAgo: "Stand vor {ago}",
      seconds: "{n} s",
      minutes: "{n} Min.",
      hours: "{n} Std.",
      sending: "Ihre Stimme wird gesendet …",
      counted: { ship: "Danke – Ihr „Einsetzen“ ist gezählt.", skip: "Danke – Ihr „Auslassen“ ist gezählt." },
      retracted: "Ihre Stimme wurde zurückgenommen.",
      retrying: "Noch nicht bestätigt – neuer Versuch in {wait} …",
      offline: "Sie sind offline – Ihre Stimme wird gesendet, sobald Sie wieder online sind.",
      notSent: "Ihre Stimme wurde nicht gesendet: Der Abstimmungsdienst ist nicht erreichbar. Prüfen Sie Ihre " +
        "Verbindung und versuchen Sie es erneut.",
      notCounted: "Der Abstimmungsdienst hat Probleme: Ihre Stimme wurde nicht gezählt. Versuchen Sie es in {wait} " +
        "erneut.",
      unconfirmed: "Ihre Stimme konnte nicht bestätigt werden. Vielleicht wurde sie gezählt; erneutes Abstimmen " +
        "zählt sie nicht doppelt.",
      limited: {
        "voter-tokens": "Zu viele neue Abstimmende aus Ihrem Netzwerk – versuchen Sie es in {wait} erneut.",
        voter: "Sie haben in kurzer Zeit sehr oft abgestimmt – versuchen Sie es in {wait} erneut.",
        address: "Zu viele Stimmen aus Ihrem Netzwerk – versuchen Sie es in {wait} erneut.",
        comparison: "Gerade stimmen sehr viele hierüber ab – versuchen Sie es in {wait} erneut.",
      },
      notHere: "Abstimmen ist auf dieser Website gerade nicht möglich.",
      refused: "Diese Stimme kann nicht angenommen werden. Bitte laden Sie die Seite neu und versuchen Sie es erneut.",
      forget: "Meine Stimmen vergessen",
      forgetAsk: "Alle Stimmen dieses Browsers vergessen? Sie zählen dann auf dieser Website nicht mehr. Das lässt " +
        "sich nicht rückgängig machen.",
      forgetYes: "Ja, vergessen",
      forgetNo: "Abbrechen",
      forgetting: "Ihre Stimmen werden vergessen …",
      forgotten: "Ihre Stimmen sind vergessen: Sie zählen nicht mehr.",
      forgetNothing: "Dieser Browser hat hier keine Stimmen, die vergessen werden könnten.",
      forgetRefused: "Die Stimmen dieses Browsers können nicht vergessen werden: Sein Abstimmungsschlüssel ist " +
        "nicht mehr gültig.",
      forgetLimited: "Zu viele Anfragen – versuchen Sie es in {wait} erneut.",
      forgetNotSent: "Ihre Stimmen wurden nicht vergessen: Der Abstimmungsdienst ist nicht erreichbar. Prüfen Sie " +
        "Ihre Verbindung und versuchen Sie es erneut.",
      forgetTrouble: "Der Abstimmungsdienst hat Probleme: Ihre Stimmen sind noch nicht vergessen. Versuchen Sie es " +
        "in {wait} erneut.",
    },
  };

  // ---- words -------------------------------------------------------------------------------------------------

  function language(el) {
    const wanted = el.getAttribute("data-lang") || (el.closest("[lang]") || document.documentElement).lang || "";
    const tag = wanted.toLowerCase();
    if (STRINGS[tag]) return tag;
    const primary = tag.split("-")[0];
    return STRINGS[primary] ? primary : "en";
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
  }

  class Words {
    constructor(lang) {
      this.lang = lang;
      this.t = STRINGS[lang];
      this.plurals = new Intl.PluralRules(lang);
      this.numbers = new Intl.NumberFormat(lang);
      this.percents = new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 0 });
    }

    count(forms, n) {
      return fill(forms[this.plurals.select(n)] || forms.other, { n: this.numbers.format(n) });
    }

    percent(pct) {
      return this.percents.format(pct / 100);
    }

    duration(seconds) {
      // Rounded up: "try again in 3 min" must not send the visitor back too early.
      if (seconds < 90) return fill(this.t.seconds, { n: Math.max(1, Math.ceil(seconds)) });
      if (seconds < 5400) return fill(this.t.minutes, { n: Math.ceil(seconds / 60) });
      return fill(this.t.hours, { n: Math.ceil(seconds / 3600) });
    }

    age(seconds) {
      // Rounded down: "updated 5 min ago" must not claim newer figures than they are.
      if (seconds < 90) return fill(this.t.seconds, { n: Math.floor(seconds) });
      if (seconds < 5400) return fill(this.t.minutes, { n: Math.floor(seconds / 60) });
      return fill(this.t.hours, { n: Math.floor(seconds / 3600) });
    }
  }

  // ---- looks -------------------------------------------------------------------------------------------------

  const PALETTES = {
    light: { text: "#1c1b19", muted: "#6b6760", ship: "#1f7a4d", skip: "#9b2c2c", "on-choice": "#fff",
      "button-bg": "#fff", border: "#b9b5ad", focus: "#2563eb" },
    dark: { text: "#ecebe8", muted: "#a8a49c", ship: "#3fb27f", skip: "#e07070", "on-choice": "#111",
      "button-bg": "#24231f", border: "#5a5750", focus: "#7aa7ff" },
  };

  function palette(colours) {
    // Each colour is the host page's --shipskip-NAME when set, else the theme's own.
    const names = Object.keys(colours).filter((name) => name !== "text");
    return "color:var(--shipskip-text," + colours.text + ");" +
      names.map((name) => "--_" + name + ":var(--shipskip-" + name + "," + colours[name] + ")").join(";");
  }

  const CSS =
    // Without data-theme the widget takes the page's text colour and keeps its own ship/skip colours.
    ":host{display:block;font:inherit;color:var(--shipskip-text,inherit);" +
    "--_muted:var(--shipskip-muted,color-mix(in srgb,currentColor 65%,transparent));" +
    "--_ship:var(--shipskip-ship,#1f7a4d);--_skip:var(--shipskip-skip,#9b2c2c);--_on-choice:var(--shipskip-on-choice,#fff);" +
    "--_button-bg:var(--shipskip-button-bg,transparent);--_border:var(--shipskip-border,currentColor);" +
    "--_focus:var(--shipskip-focus,#2563eb)}" +
    ":host([data-theme=light]){" + palette(PALETTES.light) + "}" +
    ":host([data-theme=dark]){" + palette(PALETTES.dark) + "}" +
    ":host([data-theme=auto]){" + palette(PALETTES.light) + "}" +
    "@media (prefers-color-scheme:dark){:host([data-theme=auto]){" + palette(PALETTES.dark) + "}}" +
    ".ss{display:flex;flex-direction:column;gap:.6em}" +
    ".value{font-size:1.4em;font-weight:650}" +
    ".label{font-size:.75em;text-transform:uppercase;letter-spacing:.05em;color:var(--_muted)}" +
    ".detail,.age{font-size:.75em;color:var(--_muted)}.age:empty,.detail:empty{display:none}" +
    ".buttons{display:flex;flex-wrap:wrap;gap:.5em}" +
    "button{position:relative;font:inherit;cursor:pointer;min-height:44px;min-width:44px;padding:.35em 1.1em;border-radius:999px;" +
    "border:1px solid var(--_border);background:var(--_button-bg);color:inherit}" +
    "button.ship[aria-pressed=true]{background:var(--_ship);border-color:var(--_ship);color:var(--_on-choice)}" +
    "button.skip[aria-pressed=true]{background:var(--_skip);border-color:var(--_skip);color:var(--_on-choice)}" +
    "button:focus-visible{outline:2px solid var(--_focus);outline-offset:2px}" +
    "button[aria-disabled=true]{opacity:.7;cursor:progress}" +
    ".vh{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}" +
    ".note{font-size:.85em;min-height:1.2em;color:var(--_muted)}" +
    // The forget link: small and quiet, but a 44 px target like every button.
    "button.link{border:0;background:none;padding:.35em .2em;border-radius:4px;text-decoration:underline;" +
    "font-size:.85em;color:var(--_muted)}" +
    ".confirm{display:flex;flex-direction:column;gap:.5em}.confirm[hidden]{display:none}" +
    ".confirm p{margin:0;font-size:.9em}" +
    ".trend:empty{display:none}.trend svg{display:block;width:6em;height:1.5em;color:var(--_ship);overflow:visible}" +
    ".chart svg{display:block;width:100%;height:auto;overflow:visible}.chart .grid{stroke:var(--_muted);opacity:.35}" +
    ".chart text{fill:var(--_muted);font-size:12px}.legend{display:flex;flex-wrap:wrap;gap:.4em 1.2em;font-size:.85em}" +
    ".legend i{display:inline-block;width:1.2em;height:0;border-top:2px solid;vertical-align:middle;margin-right:.4em}" +
    ".line1{color:var(--_ship)}.line2{color:var(--_skip)}.line2 i,.line2 polyline{stroke-dasharray:4 3}";

  // ---- storage and tokens ------------------------------------------------------------------------------------

  function storage(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key);
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) {
      /* storage may be blocked; the cookie still identifies the voter */
    }
    return null;
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return String(Date.now()) + Math.random().toString(16).slice(2);
  }

  const tokenRequests = {}; // one token request per votes API at a time, shared by the page's widgets
  const tokens = {}; // and the token itself, for pages whose storage is blocked (one voter per page, at least)

  function keepToken(api, token) {
    if (token) tokens[api] = token;
    else delete tokens[api];
    storage(TOKEN_KEY + api, token);
  }

  function voterToken(api) {
    const stored = storage(TOKEN_KEY + api) || tokens[api];
    if (stored) return Promise.resolve(stored);
    if (!tokenRequests[api]) {
      tokenRequests[api] = (async () => {
        let response;
        try {
          response = await fetch(api + "/v1/voters", { method: "POST", credentials: "include" });
        } catch (e) {
          throw await networkFailure(api, "token");
        }
        if (!response.ok) throw await answerFailure(response, "token");
        const body = await response.json();
        keepToken(api, body.voter_token);
        return body.voter_token;
      })().finally(() => delete tokenRequests[api]);
    }
    return tokenRequests[api];
  }

  // Has the votes API forget this browser's voter (DELETE /v1/voters/me, by the stored token or the cookie), then
  // drops what the widget kept of it: the token (the next vote asks for a new one) and every remembered choice.
  async function forgetVoter(api) {
    const token = storage(TOKEN_KEY + api) || tokens[api];
    let response;
    try {
      response = await fetch(api + "/v1/voters/me", {
        method: "DELETE", headers: token ? { "X-Voter-Token": token } : {}, credentials: "include",
      });
    } catch (e) {
      throw await networkFailure(api, "forget");
    }
    if (response.ok || response.status === 401) {
      // Forgotten, or a token the API refuses (no votes of it can be forgotten): either way it votes no more.
      keepToken(api, null);
      forgetChoices(api);
    }
    if (!response.ok) throw await answerFailure(response, "forget");
  }

  function forgetChoices(api) {
    try {
      const keys = [];
      for (let i = 0; i < window.localStorage.length; i++) {
        const key = window.localStorage.key(i);
        if (key && key.indexOf(CHOICE_KEY) === 0) keys.push(key);
      }
      keys.forEach((key) => window.localStorage.removeItem(key));
    } catch (e) {
      /* storage may be blocked: nothing was kept there */
    }
    const places = document.querySelectorAll("[data-shipskip]");
    for (let i = 0; i < places.length; i++) {
      const widget = places[i].__shipskip;
      if (widget && widget.paint && widget.votesApi === api && widget.choice) {
        widget.choice = null; // the page's buttons no longer show a vote that does not count
        widget.note = "";
        widget.paint();
      }
    }
  }

  // ---- why a request did not go through ----------------------------------------------------------------------

  // A failure: { kind, stage ("token", "vote" or "forget"), status, code, detail, retryAfter (s), policy, quota }.
  // kinds: offline, unreachable (network or the API gone), origin (the API refuses this page's origin),
  // server (5xx), limited (429), token (401: the voter token was refused), refused (any other 4xx).

  function policyOf(response) {
    // RateLimit-Policy: "voter-tokens";q=300;w=3600 (exposed to cross-origin pages by the API's CORS).
    const field = response.headers.get("RateLimit-Policy") || "";
    const match = /^"([^"]+)";q=(\d+);w=(\d+)/.exec(field);
    return match ? { name: match[1], quota: match[2] + " per " + match[3] + " s" } : { name: null, quota: null };
  }

  async function answerFailure(response, stage) {
    let body = {};
    try {
      body = await response.json();
    } catch (e) {
      /* a proxy's error page: the status says enough */
    }
    const header = parseInt(response.headers.get("Retry-After") || "", 10);
    const retryAfter = Number.isFinite(header) ? header : (typeof body.retry_after === "number" ? body.retry_after : null);
    const status = response.status;
    const failure = { stage, status, code: body.error || null, detail: body.detail || "", retryAfter };
    if (status === 429) {
      const policy = policyOf(response);
      const name = policy.name || (stage === "token" ? "voter-tokens" : null); // the one limit on new tokens
      return Object.assign(failure, { kind: "limited", policy: name, quota: policy.quota });
    }
    if (status === 401) return Object.assign(failure, { kind: "token" });
    if (status >= 500) return Object.assign(failure, { kind: "server" });
    return Object.assign(failure, { kind: "refused" });
  }

  async function answers(url, mode) {
    try {
      await fetch(url, { mode, cache: "no-store", credentials: "omit" });
      return true;
    } catch (e) {
      return false;
    }
  }

  async function networkFailure(api, stage) {
    // fetch says only "TypeError" both when the network is down and when CORS refused the answer. An ordinary
    // GET tells them apart: the API answers it to every origin, but with CORS headers to allowed ones only.
    if (navigator.onLine === false) return { kind: "offline", stage };
    const origin = new URL(api || location.href, location.href).origin;
    if (origin !== location.origin && !(await answers(api + "/healthz", "cors"))) {
      if (await answers(api + "/healthz", "no-cors")) return { kind: "origin", stage, api };
    }
    return { kind: "unreachable", stage, api: api || location.origin };
  }

  const RETRIED = { offline: true, unreachable: true, server: true };

  function consoleNote(failure, widget) {
    const where = widget.comparison
      ? 'shipskip widget (data-comparison="' + widget.comparison + '" data-tool="' + widget.tool + '"): '
      : 'shipskip widget (data-part="forget"): ';
    const api = failure.api || widget.votesApi || location.origin;
    if (failure.kind === "origin") {
      console.error(where + "the votes API at " + api + " does not allow pages of " + location.origin + ". Add " +
        location.origin + " to SHIPSKIP_CORS_ORIGINS (comma-separated origins) on the votes service and restart " +
        "it. If it is listed already, a proxy in front of the API is answering without CORS headers.");
    } else if (failure.kind === "limited" && failure.policy === "voter-tokens") {
      console.warn(where + "the votes API refused a new voter token: too many new voters from one address (" +
        (failure.quota || "the voter-tokens limit") + "). Visitors behind one office, school or mobile-carrier " +
        "address share it; the limit is SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS on the votes service.");
    } else if (failure.kind === "limited") {
      console.warn(where + "the votes API refused a vote under its " + (failure.policy || "a") + " rate limit (" +
        (failure.quota || "429") + "); retry in " + failure.retryAfter + " s.");
    } else if (failure.kind === "refused" || failure.kind === "token") {
      console.error(where + "the votes API at " + api + " refused the " + failure.stage + " request: " +
        failure.status + " " + failure.code + ": " + failure.detail);
    } else if (failure.kind === "server") {
      console.warn(where + "the votes API at " + api + " answered " + failure.status + " " + (failure.code || "") +
        " to the " + failure.stage + " request.");
    } else {
      console.warn(where + "cannot reach the votes API at " + api + " (" + failure.kind + ").");
    }
  }

  // ---- live figures ------------------------------------------------------------------------------------------

  const feeds = {}; // one Feed per read API and comparison, shared by that comparison's widgets

  class Feed {
    constructor(readApi, comparison) {
      this.url = readApi + "/v1/comparisons/" + encodeURIComponent(comparison) + "/community";
      this.historyUrl = readApi + "/v1/comparisons/" + encodeURIComponent(comparison) + "/history?bucket=day";
      this.history = null; // the last 30 days, a point a day, once a part wants it
      this.historyTimer = null;
      this.figures = null;
      this.live = false; // the stream is open: the figures are current
      this.failed = false; // figures could not be had
      this.freshAt = 0; // when the figures were last known current (Date.now())
      this.listeners = [];
      this.source = null;
      this.timer = null;
      this.warned = false;
      this.fetch();
      this.open();
    }

    listen(fn) {
      this.listeners.push(fn);
      fn();
    }

    changed() {
      this.listeners.forEach((fn) => fn());
    }

    receive(figures, live) {
      // A fetch answered after a newer pushed event must not take the figures back (position: the stream's seq).
      if (!this.figures || !(figures.position < this.figures.position)) this.figures = figures;
      this.failed = false;
      this.freshAt = Date.now();
      if (live) this.live = true;
      this.changed();
    }

    async fetch() {
      try {
        const response = await fetch(this.url, { cache: "no-cache" });
        if (!response.ok) throw new Error("the read API answered " + response.status);
        this.receive(await response.json(), false);
      } catch (error) {
        this.trouble(error);
      }
    }

    open() {
      if (!window.EventSource) return this.lost();
      const source = (this.source = new EventSource(this.url + "/stream"));
      source.onopen = () => {
        this.live = true;
        this.freshAt = Date.now();
        this.watch(false);
        this.changed();
      };
      source.onmessage = (event) => {
        try {
          this.receive(JSON.parse(event.data), true);
        } catch (e) {
          /* a malformed event changes nothing */
        }
      };
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          // Refused (an HTTP error, a full server): the browser will not try again by itself.
          this.source = null;
          setTimeout(() => this.open(), REOPEN_MS);
        }
        if (this.live) this.freshAt = Date.now(); // current until this moment
        this.lost();
        if (!this.figures) this.trouble(new Error("the figures stream is unavailable"));
      };
    }

    lost() {
      this.live = false;
      this.watch(true);
      this.changed();
    }

    watch(on) {
      // Without the stream: fetch now and then, and repaint so that the figures' age shows.
      if (on && !this.timer) {
        let ticks = 0;
        this.timer = setInterval(() => {
          ticks += 1;
          if (ticks % (POLL_MS / 10000) === 0) this.fetch();
          this.changed();
        }, 10000);
      } else if (!on && this.timer) {
        clearInterval(this.timer);
        this.timer = null;
      }
    }

    trouble(error) {
      if (this.figures) return;
      this.failed = true;
      if (!this.warned) {
        this.warned = true;
        console.warn("shipskip widget: cannot load the figures from " + this.url + " (" + error.message + ")");
      }
      this.changed();
    }

    wantHistory() {
      if (this.historyTimer) return;
      const load = async () => {
        try {
          const response = await fetch(this.historyUrl);
          if (!response.ok) throw new Error("the read API answered " + response.status);
          this.history = await response.json();
          this.changed();
        } catch (error) {
          console.warn("shipskip widget: cannot load the history from " + this.historyUrl + " (" + error.message + ")");
        }
      };
      load();
      this.historyTimer = setInterval(load, HISTORY_MS);
    }

    ageSeconds() {
      return (Date.now() - this.freshAt) / 1000;
    }

    stale() {
      return !this.live && this.figures !== null && Date.now() - this.freshAt > STALE_AFTER_MS;
    }
  }

  function feed(readApi, comparison) {
    const key = readApi + " " + comparison;
    return feeds[key] || (feeds[key] = new Feed(readApi, comparison));
  }

  // ---- the parts ---------------------------------------------------------------------------------------------

  function element(parent, tag, attributes, text) {
    const el = document.createElement(tag);
    for (const name in attributes) el.setAttribute(name, attributes[name]);
    if (text) el.textContent = text;
    parent.appendChild(el);
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text; // an unchanged text is not a change
  }

  // The Community figure: its value, "Community", the votes behind it and, when the stream is gone, its age.
  function buildFigure(widget, root) {
    const box = element(root, "div", { class: "figure", part: "figure" });
    widget.els.value = element(box, "div", { class: "value", part: "value" }, "—");
    widget.els.label = element(box, "div", { class: "label", part: "label" }, widget.words.t.community);
    widget.els.detail = element(box, "div", { class: "detail", part: "detail" });
    widget.els.trend = element(box, "div", { class: "trend", part: "trend" });
    widget.els.age = element(box, "div", { class: "age", part: "age" });
    widget.wantsHistory = true;
  }

  function paintFigure(widget) {
    const { words, feed, els } = widget;
    const t = words.t;
    const tool = widget.toolFigures();
    let value = "—";
    let detail = "";
    if (tool && tool.ship_pct !== null && tool.ship_pct !== undefined) {
      value = words.percent(tool.ship_pct);
      detail = words.count(t.votes, tool.votes);
    } else if (tool) {
      detail = fill(t.notEnough, { n: words.numbers.format(tool.votes), min: words.numbers.format(feed.figures.min_ballots) });
    } else if (feed.failed || feed.figures) {
      detail = t.unavailable;
      if (feed.figures && !widget.warned) {
        widget.warned = true;
        console.error('shipskip widget: data-tool="' + widget.tool + '" is not a tool of comparison "' +
          widget.comparison + '" (its tools: ' + feed.figures.tools.map((t) => t.tool_id).join(", ") + ")");
      }
    }
    setText(els.value, value);
    setText(els.detail, detail);
    paintSparkline(widget);
    setText(els.age, feed.stale() ? fill(t.updatedAgo, { ago: words.age(feed.ageSeconds()) }) : "");
  }

  // ---- trends ------------------------------------------------------------------------------------------------

  // A tool's daily points that have a share (null below the minimum ballots): { points: [[index, pct]], count,
  // first, last }, or null with fewer than two.
  function trendOf(history, toolId) {
    const tool = history && (history.tools || []).find((t) => t.tool_id === toolId);
    if (!tool) return null;
    const points = [];
    tool.points.forEach((p, i) => {
      if (typeof p.ship_pct === "number") points.push([i, p.ship_pct]);
    });
    if (points.length < 2) return null;
    return { points, count: tool.points.length, first: points[0][1], last: points[points.length - 1][1] };
  }

  function trendWords(words, trend) {
    // The change in whole points between the shares as they are read out, so that the words add up.
    const t = words.t;
    const change = Math.round(trend.last) - Math.round(trend.first);
    const how = change > 0 ? words.count(t.up, change) : change < 0 ? words.count(t.down, -change) : t.unchanged;
    return fill(t.trend, { days: trend.count, from: words.percent(trend.first), to: words.percent(trend.last),
      change: how });
  }

  function svgElement(parent, tag, attributes) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const name in attributes) el.setAttribute(name, attributes[name]);
    parent.appendChild(el);
    return el;
  }

  // A polyline's points: share 100 % at the top of the box (x, y, width, height), one step a day.
  function linePoints(trend, box) {
    const step = trend.count > 1 ? box.width / (trend.count - 1) : 0;
    return trend.points.map(([i, pct]) =>
      (box.x + i * step).toFixed(1) + "," + (box.y + ((100 - pct) * box.height) / 100).toFixed(1)).join(" ");
  }

  // The small trend line under the figure: an inline SVG image whose name is the change in words.
  function paintSparkline(widget) {
    const { els, feed, words } = widget;
    const trend = trendOf(feed.history, widget.tool);
    if (!trend) {
      if (els.sparkline) {
        els.trend.textContent = "";
        els.sparkline = null;
      }
      return;
    }
    if (!els.sparkline) {
      const svg = svgElement(els.trend, "svg", { viewBox: "0 0 100 24", preserveAspectRatio: "none", role: "img" });
      els.sparkline = { svg, title: svgElement(svg, "title", {}), line: svgElement(svg, "polyline", {
        fill: "none", stroke: "currentColor", "stroke-width": "1.5", "vector-effect": "non-scaling-stroke",
        "stroke-linejoin": "round" }) };
    }
    const text = trendWords(words, trend);
    els.sparkline.svg.setAttribute("aria-label", text);
    setText(els.sparkline.title, text);
    els.sparkline.line.setAttribute("points", linePoints(trend, { x: 1, y: 1, width: 98, height: 22 }));
  }

  // The larger chart (the demo page's): both tools' shares over the last 30 days, a legend that says each
  // tool's change in words, and gridlines at 0, 50 and 100 %.
  function buildChart(widget, root) {
    const box = element(root, "div", { class: "chart", part: "chart" });
    const svg = svgElement(box, "svg", { viewBox: "0 0 640 150", role: "img" });
    const title = svgElement(svg, "title", {});
    [0, 50, 100].forEach((pct) => {
      const y = 10 + ((100 - pct) * 130) / 100;
      svgElement(svg, "line", { class: "grid", x1: "40", x2: "636", y1: y, y2: y });
      svgElement(svg, "text", { x: "34", y: y + 4, "text-anchor": "end" }).textContent = pct + "%";
    });
    const lines = [1, 2].map((n) => svgElement(svgElement(svg, "g", { class: "line" + n }), "polyline", {
      fill: "none", stroke: "currentColor", "stroke-width": "2", "stroke-linejoin": "round" }));
    const legend = element(box, "div", { class: "legend", part: "legend" });
    widget.els.chart = { svg, title, lines, legend, items: [] };
    widget.wantsHistory = true;
  }

  function paintChart(widget) {
    const { els, feed, words } = widget;
    const chart = els.chart;
    const tools = (feed.history && feed.history.tools) || [];
    const days = tools.length ? tools[0].points.length : 30;
    const said = [];
    tools.slice(0, 2).forEach((tool, n) => {
      const trend = trendOf(feed.history, tool.tool_id);
      chart.lines[n].setAttribute("points", trend ? linePoints(trend, { x: 40, y: 10, width: 596, height: 130 }) : "");
      if (!chart.items[n]) {
        const item = element(chart.legend, "span", { class: "line" + (n + 1) });
        element(item, "i", { "aria-hidden": "true" });
        chart.items[n] = element(item, "span", {});
      }
      const text = tool.name + ": " + (trend ? trendWords(words, trend) : words.t.noTrend);
      setText(chart.items[n], text);
      said.push(text);
    });
    const name = fill(words.t.chart, { days }) + (said.length ? ". " + said.join(". ") : "");
    chart.svg.setAttribute("aria-label", name);
    setText(chart.title, name);
  }

  // The buttons, and a status line that says what became of the visitor's own vote (and nothing else).
  function buildVote(widget, root) {
    const box = element(root, "div", { class: "vote", part: "vote" });
    const group = (widget.els.group = element(box, "div", { class: "buttons", part: "buttons", role: "group" }));
    widget.els.buttons = {};
    widget.els.names = [];
    ["ship", "skip"].forEach((verdict) => {
      const button = element(group, "button", { type: "button", class: verdict, part: "button " + verdict,
        "aria-pressed": "false" }, widget.words.t[verdict]);
      widget.els.names.push(element(button, "span", { class: "vh" })); // the tool's name, for screen readers
      button.addEventListener("click", () => widget.vote(verdict));
      widget.els.buttons[verdict] = button;
    });
    widget.els.note = element(box, "div", { class: "note", part: "note", role: "status" });
  }

  function paintVote(widget) {
    const { els, words } = widget;
    const name = widget.toolName();
    els.group.setAttribute("aria-label", fill(words.t.verdictOn, { tool: name }));
    els.names.forEach((span) => setText(span, " " + name));
    for (const verdict in els.buttons) {
      els.buttons[verdict].setAttribute("aria-pressed", String(widget.choice === verdict));
      els.buttons[verdict].setAttribute("aria-disabled", String(widget.busy));
    }
    setText(els.note, widget.note);
  }

  // "Forget my votes": a quiet link that opens a confirmation (focus on Cancel, the safe choice; Escape closes it),
  // and a status line that says what came of it. Once a page is enough: it forgets the voter, not one vote.
  function buildForget(widget, root) {
    const t = widget.words.t;
    const box = element(root, "div", { class: "forget", part: "forget" });
    const els = widget.els;
    els.forgetLink = element(box, "button", { type: "button", class: "link", part: "forget-link",
      "aria-expanded": "false", "aria-controls": "shipskip-forget-confirm" }, t.forget);
    els.confirm = element(box, "div", { class: "confirm", part: "forget-confirm", role: "group",
      id: "shipskip-forget-confirm", "aria-labelledby": "shipskip-forget-ask", hidden: "" });
    element(els.confirm, "p", { id: "shipskip-forget-ask" }, t.forgetAsk);
    const buttons = element(els.confirm, "div", { class: "buttons" });
    els.forgetYes = element(buttons, "button", { type: "button", class: "yes" }, t.forgetYes);
    els.forgetNo = element(buttons, "button", { type: "button", class: "no" }, t.forgetNo);
    els.forgetNote = element(box, "div", { class: "note", part: "note", role: "status" });
    els.forgetLink.addEventListener("click", () => widget.askForget());
    els.forgetYes.addEventListener("click", () => widget.forget());
    els.forgetNo.addEventListener("click", () => widget.closeForget());
    els.confirm.addEventListener("keydown", (event) => {
      if (event.key === "Escape") widget.closeForget();
    });
  }

  function paintForget(widget) {
    const els = widget.els;
    els.forgetLink.setAttribute("aria-expanded", String(widget.confirming));
    if (widget.confirming) els.confirm.removeAttribute("hidden");
    else els.confirm.setAttribute("hidden", "");
    els.forgetYes.setAttribute("aria-disabled", String(widget.busy));
    setText(els.forgetNote, widget.forgetNote);
  }

  // Each part has its build and paint.
  const PARTS = {
    figure: { build: buildFigure, paint: paintFigure },
    vote: { build: buildVote, paint: paintVote },
    forget: { build: buildForget, paint: paintForget },
    history: { build: buildChart, paint: paintChart },
  };

  // ---- a widget ----------------------------------------------------------------------------------------------

  class Widget {
    constructor(el) {
      this.el = el;
      this.comparison = el.getAttribute("data-comparison");
      this.tool = el.getAttribute("data-tool");
      const api = el.hasAttribute("data-votes-api") ? el.getAttribute("data-votes-api") : SCRIPT_ORIGIN;
      this.votesApi = (api || "").replace(/\/$/, "");
      this.readApi = (el.getAttribute("data-read-api") || this.votesApi).replace(/\/$/, "");
      this.words = new Words(language(el));
      this.choiceKey = CHOICE_KEY + this.comparison + "." + this.tool;
      this.choice = storage(this.choiceKey);
      this.busy = false;
      this.note = "";
      this.confirming = false;
      this.forgetNote = "";
      this.els = {};
      const wanted = el.getAttribute("data-part");
      this.parts = PARTS[wanted] ? [PARTS[wanted]] : [PARTS.figure, PARTS.vote];
      const root = el.attachShadow ? el.attachShadow({ mode: "open" }) : el;
      element(root, "style", {}, CSS);
      const box = element(root, "div", { class: "ss", part: "widget" });
      this.parts.forEach((part) => part.build(this, box));
      if (wanted === "forget") {
        this.feed = null; // no figures: the link is about the visitor, not a tool
        this.paint();
      } else {
        this.feed = feed(this.readApi, this.comparison);
        if (this.wantsHistory) this.feed.wantHistory();
        this.feed.listen(() => this.paint());
      }
    }

    paint() {
      this.parts.forEach((part) => part.paint(this));
    }

    toolFigures() {
      const figures = this.feed && this.feed.figures;
      return figures ? (figures.tools || []).find((tool) => tool.tool_id === this.tool) || null : null;
    }

    toolName() {
      const figures = this.toolFigures();
      return this.el.getAttribute("data-tool-name") || (figures && figures.name) || this.tool;
    }

    say(note) {
      this.note = note;
      this.paint();
    }

    async vote(verdict) {
      if (this.busy) return; // one vote at a time: the buttons stay focusable, so clicks are ignored instead
      const previous = this.choice;
      const next = previous === verdict ? null : verdict; // clicking the chosen button again takes it back
      this.choice = next;
      this.busy = true;
      this.say("");
      this.sending = setTimeout(() => this.say(this.words.t.sending), SENDING_AFTER_MS);
      try {
        await this.send(next, newKey());
        clearTimeout(this.sending);
        storage(this.choiceKey, next);
        this.busy = false;
        this.say(next ? this.words.t.counted[next] : this.words.t.retracted);
      } catch (failure) {
        clearTimeout(this.sending);
        this.choice = previous; // what the visitor sees is what the API holds (or, unconfirmed, held before)
        this.busy = false;
        if (!failure || !failure.kind) console.error(failure); // a bug in this script, not an answer
        else consoleNote(failure, this);
        this.say(failure && failure.kind ? this.explain(failure) : this.words.t.notSent);
      }
    }

    askForget() {
      if (this.busy) return;
      this.confirming = !this.confirming; // the link opens the question, and closes it again
      this.forgetNote = "";
      this.paint();
      if (this.confirming) this.els.forgetNo.focus();
    }

    closeForget() {
      this.confirming = false;
      this.paint();
      this.els.forgetLink.focus(); // back where the visitor came from
    }

    async forget() {
      if (this.busy) return;
      this.busy = true;
      this.forgetNote = this.words.t.forgetting;
      this.paint();
      let note = this.words.t.forgotten;
      try {
        await forgetVoter(this.votesApi);
      } catch (failure) {
        if (!failure || !failure.kind) console.error(failure); // a bug in this script, not an answer
        else if (failure.code !== "voter_token_missing") consoleNote(failure, this);
        note = failure && failure.kind ? this.explainForget(failure) : this.words.t.forgetNotSent;
      }
      this.busy = false;
      this.forgetNote = note;
      this.closeForget(); // the question is answered; focus goes back to the link
    }

    explainForget(failure) {
      const t = this.words.t;
      const wait = (seconds) => this.words.duration(seconds);
      switch (failure.kind) {
        case "limited":
          return fill(t.forgetLimited, { wait: wait(failure.retryAfter || 60) });
        case "token":
          return failure.code === "voter_token_missing" ? t.forgetNothing : t.forgetRefused;
        case "origin":
        case "refused":
          return t.notHere;
        case "server":
          return fill(t.forgetTrouble, { wait: wait(failure.retryAfter || 60) });
        default:
          return t.forgetNotSent;
      }
    }

    explain(failure) {
      const t = this.words.t;
      const wait = (seconds) => this.words.duration(seconds);
      switch (failure.kind) {
        case "limited":
          return fill(t.limited[failure.policy] || t.limited.address, { wait: wait(failure.retryAfter || 60) });
        case "origin":
          return t.notHere;
        case "refused":
        case "token":
          return t.refused;
        default:
          if (failure.maybeStored) return t.unconfirmed;
          if (failure.kind === "server") return fill(t.notCounted, { wait: wait(failure.retryAfter || 60) });
          return t.notSent;
      }
    }

    request(verdict, key, token) {
      const base = this.votesApi + "/v1/comparisons/" + encodeURIComponent(this.comparison) + "/votes";
      const headers = { "X-Voter-Token": token, "Idempotency-Key": key };
      if (!verdict) {
        return fetch(base + "/" + encodeURIComponent(this.tool), { method: "DELETE", headers, credentials: "include" });
      }
      headers["Content-Type"] = "application/json";
      const body = JSON.stringify({ tool_id: this.tool, verdict });
      return fetch(base, { method: "POST", headers, credentials: "include", body });
    }

    // One intended vote, under one Idempotency-Key however often it is sent: the API stores it at most once.
    async send(verdict, key) {
      let renewed = false;
      let maybeStored = false; // a try that may have reached the stream (an unknown outcome)
      for (let attempt = 0; ; attempt += 1) {
        let failure;
        try {
          const token = await voterToken(this.votesApi);
          let response;
          try {
            response = await this.request(verdict, key, token);
          } catch (e) {
            throw await networkFailure(this.votesApi, "vote");
          }
          if (response.ok) return;
          failure = await answerFailure(response, "vote");
          if (failure.kind === "token" && (storage(TOKEN_KEY + this.votesApi) || tokens[this.votesApi]) === token) {
            keepToken(this.votesApi, null); // expired, or signed with a retired key
          }
        } catch (error) {
          if (!error || !error.kind) throw error; // a bug, not an answer
          failure = error;
        }
        if (failure.stage === "vote" && failure.kind !== "offline" && failure.kind !== "origin" &&
          (failure.kind === "unreachable" || (failure.kind === "server" && failure.status !== 503))) {
          maybeStored = true; // a 503 means not stored; a 504, another 5xx or a lost answer may have been
        }
        failure.maybeStored = maybeStored;
        if (failure.kind === "token" && !renewed) {
          renewed = true; // get a new token once, transparently
          attempt -= 1;
          continue;
        }
        if (!RETRIED[failure.kind] || attempt >= MAX_RETRIES) throw failure;
        const told = failure.retryAfter;
        if (told !== null && told !== undefined && told > MAX_WAIT_S) throw failure;
        const seconds = told !== null && told !== undefined ? told : Math.min(8, 2 ** attempt) * (0.8 + 0.4 * Math.random());
        clearTimeout(this.sending); // what happens now is said instead
        if (failure.kind === "offline") {
          this.say(this.words.t.offline);
          await backOnline(MAX_WAIT_S * 1000);
        } else {
          this.say(fill(this.words.t.retrying, { wait: this.words.duration(seconds) }));
          await sleep(seconds * 1000);
        }
      }
    }
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function backOnline(ms) {
    return new Promise((resolve) => {
      const done = () => {
        window.removeEventListener("online", done);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, ms);
      window.addEventListener("online", done);
    });
  }

  function start() {
    const places = document.querySelectorAll("[data-shipskip]");
    for (let i = 0; i < places.length; i++) {
      const place = places[i];
      if (place.__shipskip) continue;
      const part = place.getAttribute("data-part");
      const forgetOnly = part === "forget";
      const chart = part === "history"; // both tools: no data-tool
      if (!forgetOnly && (!place.getAttribute("data-comparison") || (!chart && !place.getAttribute("data-tool")))) {
        console.error("shipskip widget: a [data-shipskip] place needs data-comparison and data-tool", place);
        place.__shipskip = true;
        continue;
      }
      place.__shipskip = new Widget(place);
    }
  }

  window.shipskip = { version: VERSION, start };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
