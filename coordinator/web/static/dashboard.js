// agent-coordinator dashboard: live parts of the server-rendered pages.
// No build step, no framework. The server escapes everything it renders; this file
// only places the server's HTML, counts lease deadlines down against the Redis
// clock, and asks for confirmation before an action.
"use strict";
(function () {
  let offset = 0; // Redis server clock minus this browser's clock, in ms
  const sources = [];

  function sync(serverNow) {
    if (serverNow) offset = Number(serverNow) - Date.now();
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // Same as coordinator.shapes.duration.
  function duration(ms) {
    if (ms < 0) return "expired";
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }

  function tick() {
    const now = Date.now() + offset;
    for (const cell of document.querySelectorAll("[data-deadline]")) {
      const left = Number(cell.dataset.deadline) - now;
      cell.textContent = duration(left);
      const holder = cell.closest("tr, .card");
      if (holder) holder.classList.toggle("expired", left < 0);
    }
  }

  function state(text) {
    const el = document.getElementById("live-state");
    if (el) el.textContent = text;
  }

  function connect(url, handlers) {
    const source = new EventSource(url);
    source.onopen = () => state("live");
    source.onerror = () => state("reconnecting…");
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => handle(JSON.parse(e.data)));
    }
    source.addEventListener("problem", (e) => state("problem: " + JSON.parse(e.data).message));
    sources.push(source);
    return source;
  }

  // An operator filling in a form inside a live view: keep it until they are done.
  function editing(el) {
    const active = document.activeElement;
    if (active && el.contains(active) && active.matches("input, select, textarea")) return true;
    for (const input of el.querySelectorAll("input")) {
      if (input.type === "checkbox" ? input.checked : input.type !== "hidden" && input.value) {
        return true;
      }
    }
    return false;
  }

  function replace(el) {
    connect(el.dataset.live, {
      html: (msg) => {
        sync(msg.now);
        if (editing(el)) return;
        el.innerHTML = msg.html;
        state("live");
        tick();
      },
    });
  }

  function tail(body) {
    const max = Number(body.dataset.maxRows || 100);
    connect(body.dataset.tail, {
      prepend: (msg) => {
        const template = document.createElement("template");
        template.innerHTML = msg.html;
        for (const empty of body.querySelectorAll("tr.empty")) empty.remove();
        for (const old of body.querySelectorAll("tr.fresh")) old.classList.remove("fresh");
        body.prepend(template.content);
        while (body.rows.length > max) body.deleteRow(-1);
        state("live");
      },
    });
  }

  function start() {
    const clock = document.querySelector("[data-server-now]");
    if (clock) sync(clock.dataset.serverNow);
    for (const el of document.querySelectorAll("[data-live]")) replace(el);
    for (const body of document.querySelectorAll("[data-tail]")) tail(body);
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (e) => {
        if (!window.confirm(form.dataset.confirm)) e.preventDefault();
      });
    }
    tick();
    setInterval(tick, 250);
    // Leaving the page: close the streams rather than have them cut.
    window.addEventListener("pagehide", () => sources.forEach((s) => s.close()));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
