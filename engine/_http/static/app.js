// flowwarden's web UI: fills the server's page shells from the management API.
// The administrator token lives in sessionStorage and goes out as a Bearer header.
"use strict";

(() => {
  const body = document.body;
  const base = body.dataset.base || "";
  const page = body.dataset.page;
  const TOKEN_KEY = "flowwarden.token";
  const NEXT = { INHERIT: "GRANT", GRANT: "DENY", DENY: "INHERIT" };
  const WORD = { INHERIT: "inherited", GRANT: "granted", DENY: "denied" };
  const VERB = { INHERIT: "inherit", GRANT: "grant", DENY: "deny" };
  const MARK = { INHERIT: "✓", GRANT: "✓", DENY: "✕" };

  // -- small helpers ----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (selector, root) => (root || document).querySelector(selector);

  function announce(text) {
    const region = $("#announce");
    region.textContent = "";
    window.setTimeout(() => {
      region.textContent = text;
      region.classList.add("visible");
      window.clearTimeout(announce.timer);
      announce.timer = window.setTimeout(() => region.classList.remove("visible"), 4000);
    }, 30);
  }

  function showError(message) {
    let banner = $("#page-error");
    if (!banner) {
      banner = el("p", { id: "page-error", class: "error banner", role: "alert" });
      $("#main").prepend(banner);
    }
    banner.textContent = message;
  }

  function loaded() {
    const loading = $("#loading");
    if (loading) loading.hidden = true;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function toSignIn(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    const params = new URLSearchParams({ next: location.pathname + location.hash });
    if (reason) params.set("reason", reason);
    location.assign(`${base}/sign-in?${params}`);
  }

  async function api(method, path, payload) {
    const headers = { Accept: "application/json" };
    headers.Authorization = `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`;
    const init = { method, headers };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(base + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    const code = data && data.error;
    if (response.status === 401 || (response.status === 403 && code === "forbidden")) {
      toSignIn(response.status === 401 ? "expired" : "forbidden");
      throw new ApiError(response.status, code, "sign in again");
    }
    if (!response.ok) {
      throw new ApiError(response.status, code, (data && data.message) || response.statusText);
    }
    return data;
  }

  function decisionCell(decision) {
    if (!decision) return el("td", { class: "effective" }, el("span", { class: "muted" }, "…"));
    const verdict = decision.allowed ? "Allowed" : "Denied";
    return el(
      "td",
      { class: `effective ${decision.allowed ? "allowed" : "denied"}` },
      el("span", { class: "verdict" }, el("span", { "aria-hidden": "true" }, decision.allowed ? "✓ " : "✕ "), verdict),
      el("span", { class: "reason" }, decision.reason),
    );
  }

  // -- tabs (WAI-ARIA tabs pattern: arrows, Home and End move between tabs) ----------------

  function setupTabs(tablist, onSelect) {
    const tabs = [...tablist.querySelectorAll('[role="tab"]')];
    function select(tab, focus, quiet) {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      }
      if (focus) tab.focus();
      if (onSelect && !quiet) onSelect(tab);
    }
    for (const tab of tabs) {
      tab.addEventListener("click", () => select(tab, false));
      tab.addEventListener("keydown", (event) => {
        const index = tabs.indexOf(tab);
        const moves = {
          ArrowRight: index + 1,
          ArrowLeft: index - 1,
          Home: 0,
          End: tabs.length - 1,
        };
        if (!(event.key in moves)) return;
        event.preventDefault();
        select(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
      });
    }
    return select;
  }

  // -- the permission tables (a flow's PERMISSIONS tab and the app-wide page) --------------

  function permissionsEditor(container, scope, prefix) {
    const kinds = [
      { kind: "user", plural: "users", title: "USER PERMISSIONS", label: "User", noun: "user" },
      { kind: "role", plural: "roles", title: "ROLES PERMISSIONS", label: "Role", noun: "role" },
    ];
    const pending = new Map(); // "kind:name" -> decision (rows added here, not yet set)
    const tables = {};
    let view = null;

    const tablist = el("div", {
      class: "tabs subtabs",
      role: "tablist",
      "aria-label": scope === "flow" ? "Permissions of this flow" : "App-wide permissions",
    });
    container.append(tablist);
    for (const [index, info] of kinds.entries()) {
      const id = `${scope}-${info.plural}`;
      tablist.append(
        el("button", {
          type: "button",
          role: "tab",
          id: `tab-${id}`,
          "aria-controls": `panel-${id}`,
          "aria-selected": String(index === 0),
          tabindex: index === 0 ? "0" : "-1",
          text: info.title,
        }),
      );
      const tbody = el("tbody");
      tables[info.kind] = tbody;
      const inputId = `add-${id}`;
      const error = el("p", { class: "error", role: "alert", hidden: true });
      const input = el("input", {
        id: inputId,
        type: "text",
        autocomplete: "off",
        spellcheck: "false",
        placeholder: info.kind === "user" ? "user id" : "role name",
      });
      const form = el(
        "form",
        { class: "add-row", onsubmit: (event) => addRow(event, info, input, error) },
        el("label", { for: inputId, text: `Add a ${info.noun}` }),
        input,
        el("button", { type: "submit", text: `Add ${info.noun} row` }),
        error,
      );
      container.append(
        el(
          "section",
          { role: "tabpanel", id: `panel-${id}`, "aria-labelledby": `tab-${id}`, hidden: index !== 0 },
          el(
            "table",
            { class: "grid permissions-table" },
            el("caption", { class: "sr-only", text: info.title }),
            el(
              "thead",
              {},
              el(
                "tr",
                {},
                el("th", { scope: "col", text: info.label }),
                el("th", { scope: "col", text: scope === "flow" ? "This flow" : "App-wide" }),
                el("th", { scope: "col", text: "Effective decision" }),
              ),
            ),
            tbody,
          ),
          form,
        ),
      );
    }
    setupTabs(tablist);

    function rowsOf(info) {
      const rows = view[info.plural].map((row) => ({ ...row }));
      const names = new Set(rows.map((row) => row.name));
      for (const [key, decision] of pending) {
        const [kind, ...rest] = key.split(":");
        const name = rest.join(":");
        if (kind === info.kind && !names.has(name)) {
          rows.push({ name, permission: "INHERIT", effective: decision, pending: true });
        }
      }
      return rows;
    }

    function render() {
      for (const info of kinds) {
        const tbody = tables[info.kind];
        tbody.replaceChildren();
        const rows = rowsOf(info);
        if (!rows.length) {
          tbody.append(
            el("tr", {}, el("td", { colspan: "3", class: "muted", text: `No ${info.noun} has a setting yet. Add a row below.` })),
          );
        }
        for (const row of rows) tbody.append(renderRow(info, row));
      }
    }

    function renderRow(info, row) {
      const state = row.permission;
      const label = `${info.label} ${row.name}: ${WORD[state]} (click to ${VERB[NEXT[state]]})`;
      const hint =
        state === "INHERIT" && scope === "flow" && row.app_permission && row.app_permission !== "INHERIT"
          ? `app-wide: ${WORD[row.app_permission]}`
          : null;
      const toggle = el("button", {
        type: "button",
        class: `toggle ${state.toLowerCase()}`,
        "aria-label": label,
        title: label,
        "data-key": `${info.kind}:${row.name}`,
        "data-state": state,
        onclick: () => cycle(info, row, toggle),
        text: MARK[state],
      });
      return el(
        "tr",
        { "data-key": `${info.kind}:${row.name}` },
        el(
          "th",
          { scope: "row" },
          el("span", { class: "subject", text: row.name }),
          row.system ? el("span", { class: "tag", text: "system role" }) : null,
        ),
        el("td", { class: "setting" }, toggle, el("span", { class: "state", text: WORD[state] }), hint ? el("span", { class: "hint", text: hint }) : null),
        decisionCell(row.effective),
      );
    }

    function subjectPath(info, name) {
      return `${prefix}/${info.plural}/${encodeURIComponent(name)}`;
    }

    async function decisionFor(info, name) {
      const params = new URLSearchParams();
      if (info.kind === "user") params.set("user", name);
      else {
        params.set("user", view.role_member);
        params.set("role", name);
      }
      const answer = await api("GET", `${prefix}?${params}`);
      view = answer;
      return answer.identity.effective;
    }

    async function cycle(info, row, toggle) {
      if (toggle.getAttribute("aria-busy") === "true") return;
      toggle.setAttribute("aria-busy", "true");
      const next = NEXT[row.permission];
      const key = `${info.kind}:${row.name}`;
      try {
        view =
          next === "INHERIT"
            ? await api("DELETE", subjectPath(info, row.name))
            : await api("PUT", subjectPath(info, row.name), { permission: next });
        const listed = view[info.plural].find((entry) => entry.name === row.name);
        if (listed) pending.delete(key);
        else pending.set(key, await decisionFor(info, row.name));
        render();
        const again = container.querySelector(`button.toggle[data-key="${CSS.escape(key)}"]`);
        if (again) again.focus();
        const shown = listed || { effective: pending.get(key) };
        const verdict = shown.effective.allowed ? "allowed" : "denied";
        announce(`${info.label} ${row.name}: ${WORD[next]}. Now ${verdict}: ${shown.effective.reason}.`);
      } catch (error) {
        toggle.removeAttribute("aria-busy");
        if (!(error instanceof ApiError && error.message === "sign in again")) {
          showError(`Could not save: ${error.message}`);
        }
      }
    }

    async function addRow(event, info, input, error) {
      event.preventDefault();
      const name = input.value.trim();
      error.hidden = true;
      const fail = (message) => {
        error.textContent = message;
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      };
      if (!name) return fail(`Type a ${info.noun} ${info.kind === "user" ? "id" : "name"}.`);
      if (info.kind === "user" && ["NonAuthenticatedUser", "AuthenticatedUser"].includes(name)) {
        return fail(`${name} is a system role: add it under ROLES PERMISSIONS.`);
      }
      input.removeAttribute("aria-invalid");
      const key = `${info.kind}:${name}`;
      const listed = rowsOf(info).some((row) => row.name === name);
      if (!listed) {
        try {
          pending.set(key, await decisionFor(info, name));
        } catch (failure) {
          return fail(`Could not add the row: ${failure.message}`);
        }
      }
      input.value = "";
      render();
      const toggle = container.querySelector(`button.toggle[data-key="${CSS.escape(key)}"]`);
      if (toggle) toggle.focus();
      announce(listed ? `${info.label} ${name} is already listed.` : `${info.label} ${name} added: inherited.`);
    }

    return {
      show(data) {
        view = data;
        render();
      },
    };
  }

  // -- pages ------------------------------------------------------------------------------

  async function flowsPage() {
    const data = await api("GET", "/api/flows");
    loaded();
    const table = $("#flows-table");
    const tbody = $("tbody", table);
    if (!data.flows.length) {
      $("#flows-empty").hidden = false;
      return;
    }
    for (const flow of data.flows) {
      const status = flow.live_version !== null ? "LIVE" : flow.paused_version !== null ? "PAUSED" : "not running";
      tbody.append(
        el(
          "tr",
          {},
          el("th", { scope: "row" }, el("a", { href: `${base}/flows/${encodeURIComponent(flow.flow)}`, text: flow.flow })),
          el("td", { text: flow.live_version !== null ? `v${flow.live_version}` : "—" }),
          el("td", {}, el("span", { class: `badge ${status.replace(" ", "-").toLowerCase()}`, text: status })),
          el("td", { text: String(flow.versions.length) }),
          el("td", { class: "muted", text: flow.description || "" }),
        ),
      );
    }
    table.hidden = false;
  }

  async function flowPage() {
    const name = body.dataset.flow;
    const path = `/api/flows/${encodeURIComponent(name)}`;
    let flow;
    try {
      flow = await api("GET", path);
    } catch (error) {
      loaded();
      if (error instanceof ApiError && error.code === "flow_not_found") {
        showError(`There is no flow named “${name}”.`);
        return;
      }
      throw error;
    }
    const permissions = await api("GET", `${path}/permissions`);
    loaded();
    renderFlow(flow);
    const editor = permissionsEditor($("#panel-permissions .permissions"), "flow", `${path}/permissions`);
    editor.show(permissions);
    const tablist = $("#flow-tabs");
    tablist.hidden = false;
    const select = setupTabs(tablist, (tab) => {
      const hash = tab.id === "tab-permissions" ? "#permissions" : "#versions";
      history.replaceState(null, "", hash);
    });
    select(location.hash === "#permissions" ? $("#tab-permissions") : $("#tab-versions"), false, true);

    function renderFlow(current) {
      const badge = $("#flow-badge");
      const live = current.live_version;
      badge.textContent = live !== null ? `LIVE v${live}` : current.paused_version !== null ? `PAUSED v${current.paused_version}` : "not running";
      badge.className = `badge ${live !== null ? "live" : current.paused_version !== null ? "paused" : "not-running"}`;
      badge.hidden = false;
      $("#flow-description").textContent = current.description || "";
      const tbody = $("#versions-table tbody");
      tbody.replaceChildren();
      for (const version of [...current.versions].reverse()) {
        const actions = [];
        if (version.status === "READY") actions.push(["start", `Start v${version.version}`]);
        if (version.status === "LIVE") actions.push(["pause", "Pause"], ["stop", "Stop"]);
        if (version.status === "PAUSED") actions.push(["resume", "Resume"], ["stop", "Stop"]);
        tbody.append(
          el(
            "tr",
            {},
            el("th", { scope: "row", text: `v${version.version}` }),
            el("td", {}, el("span", { class: `badge ${version.status.toLowerCase()}`, text: version.status })),
            el("td", {}, version.problems.length ? el("ul", { class: "problems" }, version.problems.map((p) => el("li", { text: p }))) : el("span", { class: "muted", text: "none" })),
            el(
              "td",
              { class: "actions" },
              actions.map(([verb, text]) =>
                el("button", { type: "button", text, onclick: () => lifecycle(verb, version.version) }),
              ),
            ),
          ),
        );
      }
    }

    async function lifecycle(verb, version) {
      if (verb === "stop" && !window.confirm(`Stop ${name}? Its runs in flight are cancelled.`)) return;
      const target = verb === "start" ? `${path}/versions/${version}/start` : `${path}/${verb}`;
      try {
        const current = await api("POST", target);
        renderFlow(current);
        announce(`${name}: ${verb} done.`);
      } catch (error) {
        showError(`Could not ${verb}: ${error.message}`);
      }
    }
  }

  async function settingsPage() {
    const data = await api("GET", "/api/permissions");
    loaded();
    $("#default-permission").textContent = data.default === "GRANT" ? "granted" : "denied";
    $("#panel-app").hidden = false;
    permissionsEditor($("#panel-app .permissions"), "app", "/api/permissions").show(data);
  }

  function signInPage() {
    const params = new URLSearchParams(location.search);
    const reasons = {
      expired: "Your token is no longer accepted. Sign in again.",
      forbidden: "That token does not hold the administrator role.",
    };
    const reason = reasons[params.get("reason")];
    if (reason) {
      const notice = $("#sign-in-reason");
      notice.textContent = reason;
      notice.hidden = false;
    }
    const input = $("#token");
    const error = $("#sign-in-error");
    input.focus();
    function fail(message) {
      error.textContent = message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    // A path of this site only: one leading "/" not followed by "/" or "\\" (which a
    // browser reads as another host), no control characters (which URL parsing drops),
    // and the same once parsed ("/.//host" becomes "//host").
    const SAME_SITE = /^\/(?![\/\\])[^\u0000-\u001f\u007f]*$/;
    function next() {
      const wanted = params.get("next");
      if (wanted && SAME_SITE.test(wanted)) {
        const url = new URL(wanted, location.origin);
        const path = url.pathname + url.hash;
        if (url.origin === location.origin && SAME_SITE.test(path) && url.pathname.startsWith(`${base}/`)) {
          return path;
        }
      }
      return `${base}/`;
    }
    $("#sign-in-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return fail("Paste an administrator token.");
      let response;
      try {
        response = await fetch(`${base}/api/flows`, { headers: { Authorization: `Bearer ${token}` } });
      } catch (_) {
        return fail("The server cannot be reached.");
      }
      if (response.ok) {
        sessionStorage.setItem(TOKEN_KEY, token);
        location.assign(next());
      } else if (response.status === 401) {
        fail("That token is not valid.");
      } else if (response.status === 403) {
        fail("That token is valid but does not hold the administrator role.");
      } else {
        fail(`The server could not check the token (HTTP ${response.status}).`);
      }
    });
  }

  // -- start ------------------------------------------------------------------------------

  const current = document.querySelector(`.nav [data-nav="${page === "settings" ? "settings" : "flows"}"]`);
  if (current && page !== "sign-in") current.setAttribute("aria-current", "page");

  if (page === "sign-in") {
    signInPage();
    return;
  }
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    toSignIn();
    return;
  }
  const signOut = $("#sign-out");
  signOut.hidden = false;
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.assign(`${base}/sign-in`);
  });
  const pages = { flows: flowsPage, flow: flowPage, settings: settingsPage };
  pages[page]().catch((error) => {
    loaded();
    if (!(error instanceof ApiError && error.message === "sign in again")) {
      showError(`Something went wrong: ${error.message}`);
    }
  });
})();
