// The Tidepool dashboard: the state the server pushes over server-sent events, drawn
// without a framework. Every /api call carries the session cookie; a 401 shows the login.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;
let last = null;

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function clock(t) {
  return new Date(t * 1000).toISOString().substring(11, 19);
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbodyParent, rows) {
  const body = tbodyParent.querySelector("tbody");
  body.replaceChildren(...rows);
}

function showLogin(message) {
  if (source) { source.close(); source = null; }
  $("app").hidden = true;
  $("logout-button").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout-button").hidden = false;
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401 && path !== "/api/login") {
    showLogin("Your session ended: log in again.");
    throw new Error("log in first");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function draw(state) {
  last = state;
  $("stale").hidden = state.quorum;
  document.body.classList.toggle("dimmed", !state.quorum);
  const status = state.status;
  if (!status || !status.health) return;
  $("cluster-id").textContent = "cluster " + status.id + " · epoch " + status.epoch + " · " + clock(state.at);
  const health = $("health");
  health.textContent = status.health.status;
  health.className = "health " + status.health.status;
  $("checks").replaceChildren(...status.health.checks.map((c) => {
    const li = document.createElement("li");
    li.textContent = c.code + ": " + c.summary;
    li.className = c.severity;
    return li;
  }));

  const data = status.data;
  $("capacity").textContent = bytes(data.used_bytes) + " used of " + bytes(data.total_bytes) +
    " (" + bytes(data.available_bytes) + " available)";
  $("capacity-bar").style.width = (data.total_bytes ? 100 * data.used_bytes / data.total_bytes : 0) + "%";
  $("objects").textContent = data.objects + " objects, " + bytes(data.stored_bytes) + " stored";

  $("pgs").replaceChildren(...Object.entries(status.pgs.by_state).map(([name, n]) => {
    const li = document.createElement("li");
    li.textContent = n + " " + name;
    return li;
  }));
  const rec = status.recovery;
  const moving = rec.degraded_objects + rec.misplaced_objects;
  const recovery = $("recovery");
  if (moving > 0) {
    const done = rec.object_copies ? Math.max(0, 1 - moving / rec.object_copies) : 0;
    recovery.textContent = "rebalancing: " + rec.degraded_objects + " degraded, " + rec.misplaced_objects +
      " misplaced copies, " + bytes(rec.bytes_per_sec) + "/s" +
      (rec.eta_seconds !== null ? ", about " + duration(rec.eta_seconds) + " left" : "");
    $("recovery-bar").style.width = (100 * done) + "%";
  } else {
    recovery.textContent = status.pgs.active_clean === status.pgs.total ? "all PGs active+clean" : "";
    $("recovery-bar").style.width = "100%";
  }

  const df = {};
  for (const row of (state.df && state.df.osds) || []) df[row.id] = row;
  let host = "";
  const rows = [];
  for (const node of state.tree || []) {
    if (node.type !== "osd") { if (node.type === "host") host = node.name; continue; }
    const row = document.createElement("tr");
    row.id = "osd-" + node.id;
    const use = df[node.id];
    cell(row, node.name);
    cell(row, host);
    cell(row, node.status, node.status === "up" ? "up" : "down").classList.add("osd-up");
    const isIn = node.reweight > 0;
    cell(row, isIn ? "in" : "out", isIn ? "" : "out").classList.add("osd-in");
    cell(row, node.weight.toFixed(2));
    cell(row, use ? use.utilization.toFixed(1) + " %" : "");
    cell(row, use ? String(use.pgs) : "");
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.textContent = isIn ? "Mark out" : "Mark in";
    button.className = isIn ? "out-button" : "in-button";
    button.onclick = () => change(node.id, isIn ? "out" : "in");
    action.appendChild(button);
    row.appendChild(action);
    rows.push(row);
  }
  fill($("osds"), rows);

  fill($("pools"), status.pools.map((p) => {
    const row = document.createElement("tr");
    cell(row, p.name); cell(row, String(p.pg_num)); cell(row, p.profile);
    return row;
  }));
  fill($("buckets"), (state.buckets || []).map(([name, owner]) => {
    const row = document.createElement("tr");
    cell(row, name); cell(row, owner);
    return row;
  }));
  fill($("users"), (state.users || []).map(([name, key]) => {
    const row = document.createElement("tr");
    cell(row, name); cell(row, key);
    return row;
  }));
  $("events").replaceChildren(...(state.events || []).slice().reverse().map(([t, text]) => {
    const li = document.createElement("li");
    li.textContent = clock(t) + " " + text;
    return li;
  }));
  chart(state.history || []);
}

function chart(history) {
  const svg = $("io-chart");
  const width = 600, height = 120;
  const max = Math.max(1, ...history.flatMap(([, r, w, rec]) => [r, w, rec]));
  const line = (index, cls) => {
    const points = history.map((h, i) => {
      const x = history.length > 1 ? (i / (history.length - 1)) * width : 0;
      const y = height - (h[index] / max) * (height - 4) - 2;
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    return '<polyline class="' + cls + '" fill="none" stroke="currentColor" stroke-width="1.5" points="' + points + '"/>';
  };
  svg.innerHTML = line(1, "read") + line(2, "write") + line(3, "recovery");
  const now = history[history.length - 1];
  $("io-now").textContent = now ? "now: read " + bytes(now[1]) + "/s, write " + bytes(now[2]) +
    "/s, recovery " + bytes(now[3]) + "/s" : "";
}

async function change(id, what) {
  const dialog = $("confirm");
  $("confirm-title").textContent = "Mark osd." + id + " " + what + "?";
  $("preview-text").textContent = "previewing…";
  $("confirm-error").hidden = true;
  $("confirm-yes").disabled = true;
  dialog.showModal();
  try {
    const preview = await api("POST", "/api/osd/" + id + "/" + what + "/preview");
    $("preview-text").textContent = preview.text;
    $("confirm-yes").disabled = false;
  } catch (e) {
    $("preview-text").textContent = "";
    $("confirm-error").textContent = e.message;
    $("confirm-error").hidden = false;
  }
  $("confirm-yes").onclick = async () => {
    try {
      await api("POST", "/api/osd/" + id + "/" + what);
      dialog.close();
    } catch (e) {
      $("confirm-error").textContent = e.message;
      $("confirm-error").hidden = false;
    }
  };
}

function follow() {
  if (source) source.close();
  source = new EventSource("/api/stream");
  source.addEventListener("state", (event) => {
    showApp();
    draw(JSON.parse(event.data));
  });
  source.onerror = async () => {
    $("stale").hidden = false;
    document.body.classList.add("dimmed");
    // A refused stream (401) means the session is gone: check, and show the login.
    try { await api("GET", "/api/state"); } catch (e) { /* the login is shown */ }
  };
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("POST", "/api/login", {
      access_key: $("access-key").value.trim(),
      secret_key: $("secret-key").value.trim(),
    });
    $("secret-key").value = "";
    showApp();
    follow();
  } catch (e) {
    showLogin(e.message);
  }
});

$("logout-button").onclick = async () => {
  try { await api("POST", "/api/logout"); } catch (e) { /* gone anyway */ }
  showLogin("");
};
$("confirm-no").onclick = () => $("confirm").close();

$("throttle-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("throttle-key").value, value = $("throttle-value").value.trim();
  if (!window.confirm("Set " + key + " to " + value + " on every OSD?")) return;
  try {
    const done = await api("POST", "/api/config", { key, value });
    $("throttle-result").textContent = key + " = " + value + " (epoch " + done.epoch + ")";
  } catch (e) {
    $("throttle-result").textContent = e.message;
  }
});

(async () => {
  try {
    draw(await api("GET", "/api/state"));
    showApp();
    follow();
  } catch (e) {
    showLogin("");
  }
})();
