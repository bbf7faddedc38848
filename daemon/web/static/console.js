/* incidentd console: forms sent to the JSON API, ticking clocks, live regions.
   Plain ES2017, no library. Every change goes through /api/v1 with the session
   cookie and the page's CSRF token; the API validates, refuses and audits. */
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const flash = document.getElementById("flash");

  function say(text) {
    if (!flash) return;
    flash.textContent = "";
    window.setTimeout(function () { flash.textContent = text; }, 50); // re-announced
  }

  // -- forms sent as JSON ------------------------------------------------------------

  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button") continue;
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) continue;
      if (el.hasAttribute("data-json")) {
        if (el.value) Object.assign(body, JSON.parse(el.value));
        continue;
      }
      if (el.value === "") continue;
      body[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    return body;
  }

  function describe(status, payload) {
    const err = payload && payload.error;
    if (!err) return "The request failed (HTTP " + status + ").";
    const fields = (err.errors || []).map(function (e) {
      return e.field + ": " + e.reason;
    });
    return [err.message].concat(fields).join(" — ");
  }

  async function send(form, submitter) {
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const alert = form.querySelector('[role="alert"]');
    const buttons = form.querySelectorAll("button, input[type=submit]");
    if (alert) alert.textContent = "";
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      const body = formBody(form);
      if (submitter && submitter.name) body[submitter.name] = submitter.value;
      const resp = await fetch(form.dataset.api, {
        method: form.dataset.method || "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf,
                   "Accept": "application/json" },
        body: JSON.stringify(body),
      });
      let payload = null;
      try { payload = await resp.json(); } catch (e) { payload = null; }
      if (resp.status === 401) { signIn(); return; }
      if (!resp.ok) {
        const text = describe(resp.status, payload);
        if (alert) alert.textContent = text; else say(text);
        return;
      }
      say(form.dataset.done || "Done.");
      settle(form);
      if (!refreshAll()) window.location.reload();
    } catch (e) {
      const text = "Could not reach incidentd; check the connection and try again.";
      if (alert) alert.textContent = text; else say(text);
    } finally {
      buttons.forEach(function (b) { if (!b.hasAttribute("data-keep-disabled")) b.disabled = false; });
    }
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
    event.preventDefault();
    send(form, event.submitter);
  });

  // Buttons rendered disabled (read-only sessions) stay disabled after a send.
  document.querySelectorAll("button:disabled").forEach(function (b) {
    b.setAttribute("data-keep-disabled", "");
  });

  function signIn() {
    const here = window.location.pathname + window.location.search;
    window.location.assign("/ui/sign-in?next=" + encodeURIComponent(here));
  }

  // -- clocks ------------------------------------------------------------------------

  function span(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    const pad = function (n) { return n < 10 ? "0" + n : String(n); };
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + pad(m) + " min";
    if (m > 0) return m + " min " + pad(s % 60) + " s";
    return s + " s";
  }

  function tickCountdowns() {
    const now = Date.now();
    document.querySelectorAll("time.countdown[datetime]").forEach(function (el) {
      const due = Date.parse(el.getAttribute("datetime"));
      if (isNaN(due)) return;
      const left = (due - now) / 1000;
      el.textContent = left >= 0 ? span(left) + " left" : "overdue by " + span(-left);
      el.classList.toggle("danger", left < 0);
    });
  }

  function tickAgo() {
    const now = Date.now();
    document.querySelectorAll("time.ago[datetime]").forEach(function (el) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      const since = (now - at) / 1000;
      if (since < 60) { el.textContent = "just now"; return; }
      const text = span(since).replace(/ \d+ s$/, "");
      el.textContent = text + " ago";
    });
  }

  // -- live regions ------------------------------------------------------------------

  const pending = new Set();
  let timer = null;

  function liveRegions() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live-src]"));
  }

  // What the user typed or opened in a live region survives its refresh. A field
  // (with an id) whose value differs from what the server rendered was edited; after
  // the refresh it gets the user's value back, unless the server's value for it
  // changed meanwhile (then the news wins). Open <details id=...> stay open.
  const FIELDS = "input[id], select[id], textarea[id]";

  function isBox(f) { return f.type === "checkbox" || f.type === "radio"; }

  function current(f) { return isBox(f) ? String(f.checked) : f.value; }

  function rendered(f) {
    if (isBox(f)) return String(f.defaultChecked);
    if (f.tagName === "SELECT") {
      const opts = Array.prototype.slice.call(f.options);
      const chosen = opts.find(function (o) { return o.defaultSelected; }) || opts[0];
      return chosen ? chosen.value : "";
    }
    return f.defaultValue;
  }

  function snapshot(root) {
    const fields = [];
    root.querySelectorAll(FIELDS).forEach(function (f) {
      if (f.type === "hidden" || f.type === "submit" || f.type === "button") return;
      if (current(f) === rendered(f)) return;
      const saved = { id: f.id, tag: f.tagName, type: f.type, server: rendered(f),
                      value: current(f), start: null, end: null };
      try { saved.start = f.selectionStart; saved.end = f.selectionEnd; } catch (e) { /* no caret */ }
      fields.push(saved);
    });
    const open = [];
    root.querySelectorAll("details[id]").forEach(function (d) { if (d.open) open.push(d.id); });
    return { fields: fields, open: open };
  }

  function restore(kept) {
    kept.fields.forEach(function (saved) {
      const f = document.getElementById(saved.id);
      if (!f || f.tagName !== saved.tag || f.type !== saved.type) return;
      if (rendered(f) !== saved.server) return; // changed on the server: show that
      if (isBox(f)) { f.checked = saved.value === "true"; return; }
      if (f.tagName === "SELECT" && !Array.prototype.some.call(
        f.options, function (o) { return o.value === saved.value; })) return;
      f.value = saved.value;
      if (saved.start !== null && document.activeElement === f) {
        try { f.setSelectionRange(saved.start, saved.end); } catch (e) { /* no caret */ }
      }
    });
    kept.open.forEach(function (id) {
      const d = document.getElementById(id);
      if (d && d.tagName === "DETAILS") d.open = true;
    });
  }

  // A form just sent: what it holds is no longer the user's pending edit, so the
  // refresh that follows shows the server's fields (an emptied Reason, say).
  function settle(form) {
    form.querySelectorAll("input, select, textarea").forEach(function (f) {
      if (isBox(f)) { f.defaultChecked = f.checked; return; }
      if (f.tagName === "SELECT") {
        Array.prototype.forEach.call(f.options, function (o) { o.defaultSelected = o.selected; });
        return;
      }
      f.defaultValue = f.value;
    });
  }

  async function refresh(el) {
    try {
      const resp = await fetch(el.dataset.liveSrc, { credentials: "same-origin",
                                                    headers: { "Accept": "text/html" } });
      if (resp.status === 401) { signIn(); return; }
      if (!resp.ok) return;
      const html = await resp.text();
      // Taken after the fetch, just before the swap: what was typed while it ran counts.
      const focusedId = document.activeElement && el.contains(document.activeElement)
        ? document.activeElement.id : null;
      const kept = snapshot(el);
      el.innerHTML = html;
      if (focusedId) {
        const again = document.getElementById(focusedId);
        if (again) again.focus();
      }
      restore(kept);
      tickCountdowns();
      tickAgo();
    } catch (e) { /* the next event tries again */ }
  }

  // Re-fetches every live region (after a form); false when the page has none.
  function refreshAll() {
    const regions = liveRegions();
    regions.forEach(refresh);
    return regions.length > 0;
  }

  // At most one refresh of each region per 500 ms, however many events arrive.
  function schedule(incident) {
    liveRegions().forEach(function (el) {
      const wanted = el.dataset.liveIncident;
      if (!wanted || String(wanted) === String(incident)) pending.add(el);
    });
    if (timer || pending.size === 0) return;
    timer = window.setTimeout(function () {
      timer = null;
      const batch = Array.from(pending);
      pending.clear();
      batch.forEach(refresh);
    }, 500);
  }

  function listen() {
    if (!window.EventSource || liveRegions().length === 0) return;
    const source = new EventSource("/ui/events");
    source.addEventListener("change", function (event) {
      let data = {};
      try { data = JSON.parse(event.data); } catch (e) { return; }
      schedule(data.incident);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  tickCountdowns();
  tickAgo();
  window.setInterval(tickCountdowns, 1000);
  window.setInterval(tickAgo, 30000);
  listen();
}());
