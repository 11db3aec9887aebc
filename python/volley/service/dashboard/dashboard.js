// The Volley dashboard: polls the service's JSON overview routes and draws them.
// Every text from the service is set with textContent (error texts come from users' functions):
// nothing here parses HTML.  The token lives in sessionStorage and travels only in the
// Authorization header.
"use strict";

(function () {
  const TOKEN_KEY = "volley-token";
  const POLL_MS = 3000;
  const API = new URL("../volley/v1/", window.location.href);
  const SVG_NS = "http://www.w3.org/2000/svg";

  let selected = null; // the task group shown in detail; the newest when none was picked
  let timer = null;
  let round = 0; // a refresh started later (a click) supersedes one still waiting for answers

  const $ = (id) => document.getElementById(id);

  class Unauthorized extends Error {}

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function clock(ts) {
    return ts == null ? "–" : new Date(ts * 1000).toLocaleTimeString();
  }

  function ago(ts) {
    if (ts == null) return "never";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return new Date(ts * 1000).toLocaleString();
  }

  function num(v) {
    return v == null ? "–" : String(v);
  }

  async function api(path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const r = await fetch(new URL(path, API), {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    if (r.status === 401) throw new Unauthorized((body && body.message) || "the token was refused");
    if (!r.ok) throw new Error((body && body.message) || `HTTP ${r.status} on ${path}`);
    return body;
  }

  // --- drawing -----------------------------------------------------------------------------
  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function drawEndpoints(page) {
    const rows = page.endpoints.map((ep) => {
      const tr = el("tr");
      tr.dataset.endpointId = ep.endpoint_id;
      tr.append(el("td", ep.display_name || ep.name), el("td", ep.endpoint_id, "id"));
      const status = el("td");
      status.append(el("span", ep.status, `badge ${ep.status === "online" ? "ok" : "off"}`));
      tr.append(status, el("td", ago(ep.last_heartbeat)));
      const workers = ep.total_workers == null ? "–" : `${num(ep.idle_workers)} / ${ep.total_workers}`;
      tr.append(el("td", workers, "n"), el("td", num(ep.outstanding_tasks), "n"), el("td", num(ep.queue_depth), "n"));
      return tr;
    });
    fill($("endpoints").tBodies[0], rows);
    $("endpoints-empty").hidden = rows.length > 0;
  }

  function drawTaskGroups(page) {
    const rows = page.task_groups.map((tg) => {
      const tr = el("tr");
      tr.dataset.taskGroupId = tg.task_group_id;
      if (tg.task_group_id === selected) tr.className = "selected";
      const pick = el("button", tg.task_group_id, "link id");
      pick.type = "button";
      pick.addEventListener("click", () => {
        selected = tg.task_group_id;
        refresh();
      });
      const idCell = el("td");
      idCell.append(pick);
      const c = tg.counts;
      tr.append(idCell, el("td", clock(tg.created_at)), el("td", c["waiting-for-ep"], "n"),
        el("td", c.success, "n"), el("td", c.failed, c.failed ? "n bad" : "n"), el("td", tg.total, "n"));
      return tr;
    });
    fill($("task-groups").tBodies[0], rows);
    $("task-groups-empty").hidden = rows.length > 0;
  }

  function drawChart(t) {
    const chart = $("throughput");
    const W = 600, H = 160, PAD = 28;
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const n = t.success.length;
    const totals = t.success.map((s, i) => s + t.failed[i]);
    const top = Math.max(1, ...totals);
    const parts = [svg("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" })];
    const label = svg("text", { x: 2, y: 12, class: "label" });
    label.textContent = String(top);
    parts.push(label);
    const slot = n ? (W - PAD) / n : 0;
    for (let i = 0; i < n; i++) {
      const x = PAD + i * slot + slot * 0.1;
      const w = Math.max(1, slot * 0.8);
      const hs = ((H - 2 * PAD) * t.success[i]) / top;
      const hf = ((H - 2 * PAD) * t.failed[i]) / top;
      const from = t.start + i * t.bucket_s;
      const title = `${clock(from)}: ${t.success[i]} done, ${t.failed[i]} failed`;
      for (const [h, y, cls] of [[hs, H - PAD - hs, "bar-success"], [hf, H - PAD - hs - hf, "bar-failed"]]) {
        if (h <= 0) continue;
        const bar = svg("rect", { x, y, width: w, height: h, class: cls });
        const tip = svg("title");
        tip.textContent = title;
        bar.append(tip);
        parts.push(bar);
      }
    }
    if (n) {
      const a = svg("text", { x: PAD, y: H - 8, class: "label" });
      a.textContent = clock(t.start);
      const b = svg("text", { x: W, y: H - 8, class: "label end" });
      b.textContent = clock(t.start + n * t.bucket_s);
      parts.push(a, b);
    }
    chart.replaceChildren(...parts);
    $("throughput-caption").textContent = n
      ? `tasks completed per ${t.bucket_s} s (done, failed stacked on top)`
      : "nothing completed yet";
  }

  function drawSummary(s) {
    $("summary").hidden = false;
    $("summary-id").textContent = s.task_group_id;
    $("count-waiting").textContent = s.counts["waiting-for-ep"];
    $("count-done").textContent = s.counts.success;
    $("count-failed").textContent = s.counts.failed;
    $("count-total").textContent = s.total;
    $("rate").textContent = s.rate_per_s == null ? "–" : `${s.rate_per_s.toPrecision(3)} tasks/s`;
    drawChart(s.throughput);
    const items = s.failures.map((f) => {
      const li = el("li");
      li.dataset.taskId = f.task_id;
      const head = el("p");
      head.append(el("code", f.task_id), el("span", ` ${f.error_code || "error"} at ${clock(f.completion_t)}`));
      const text = el("pre", (f.truncated ? "…" : "") + f.exception, "error-text");
      li.append(head, text);
      return li;
    });
    $("failures").replaceChildren(...items);
    $("failures-empty").hidden = items.length > 0;
  }

  // --- polling -------------------------------------------------------------------------------
  async function refresh() {
    clearTimeout(timer);
    const mine = ++round;
    try {
      const [eps, groups] = await Promise.all([api("endpoints"), api("task_groups")]);
      if (mine !== round) return;
      drawEndpoints(eps);
      const ids = groups.task_groups.map((g) => g.task_group_id);
      if (!ids.includes(selected)) selected = ids.length ? ids[0] : null;
      drawTaskGroups(groups);
      if (selected) {
        const summary = await api(`task_groups/${encodeURIComponent(selected)}`);
        if (mine !== round) return;
        drawSummary(summary);
      } else {
        $("summary").hidden = true;
      }
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      $("status").className = "";
    } catch (e) {
      if (mine !== round) return;
      if (e instanceof Unauthorized) {
        signOut(`Signed out: ${e.message}`);
        return;
      }
      $("status").textContent = `update failed: ${e.message}; retrying`;
      $("status").className = "error";
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  function show(signedIn) {
    $("login").hidden = signedIn;
    $("board").hidden = !signedIn;
    $("logout").hidden = !signedIn;
  }

  function signOut(message) {
    clearTimeout(timer);
    round++;
    sessionStorage.removeItem(TOKEN_KEY);
    selected = null;
    for (const id of ["endpoints", "task-groups"]) $(id).tBodies[0].replaceChildren();
    $("failures").replaceChildren();
    $("summary").hidden = true;
    $("status").textContent = "";
    $("login-error").textContent = message || "";
    show(false);
  }

  function start() {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      $("token").value = "";
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("login-error").textContent = "";
      show(true);
      refresh();
    });
    $("logout").addEventListener("click", () => signOut(""));
    if (sessionStorage.getItem(TOKEN_KEY)) {
      show(true);
      refresh();
    } else {
      show(false);
    }
  }

  start();
})();
