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

  // Every notice is spoken through the #announce live region. It is also shown in the
  // notice bar, which sits in the page's flow just after what it is about (never over a
  // control) and offers Undo when the change can be taken back.
  function announce(text, options) {
    const { near, undo } = options || {};
    const region = $("#announce");
    region.textContent = "";
    window.setTimeout(() => {
      region.textContent = text;
    }, 30);
    const bar = $("#notice");
    if (near) near.after(bar);
    else $("#main").append(bar);
    $("#notice-text").textContent = text;
    const button = $("#notice-undo");
    button.hidden = !undo;
    button.onclick = undo || null;
    bar.hidden = false;
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
    if (!decision) return el("td", { class: "effective", "data-label": "Effective" }, el("span", { class: "muted" }, "…"));
    const verdict = decision.allowed ? "Allowed" : "Denied";
    return el(
      "td",
      { class: `effective ${decision.allowed ? "allowed" : "denied"}`, "data-label": "Effective" },
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
            { class: "grid permissions-table stack" },
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
        el("td", { class: "setting", "data-label": scope === "flow" ? "This flow" : "App-wide" }, toggle, el("span", { class: "state", text: WORD[state] }), hint ? el("span", { class: "hint", text: hint }) : null),
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

    // Saves one setting, shows the new view and puts the focus back on that toggle;
    // answers the row as it is now (listed, or kept as an added row).
    async function change(info, name, permission) {
      const key = `${info.kind}:${name}`;
      view =
        permission === "INHERIT"
          ? await api("DELETE", subjectPath(info, name))
          : await api("PUT", subjectPath(info, name), { permission });
      const listed = view[info.plural].find((entry) => entry.name === name);
      if (listed) pending.delete(key);
      else pending.set(key, await decisionFor(info, name));
      render();
      const again = container.querySelector(`button.toggle[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
      return listed || { effective: pending.get(key) };
    }

    function outcome(shown) {
      const verdict = shown.effective.allowed ? "allowed" : "denied";
      return `Now ${verdict}: ${shown.effective.reason}.`;
    }

    async function cycle(info, row, toggle) {
      if (toggle.getAttribute("aria-busy") === "true") return;
      toggle.setAttribute("aria-busy", "true");
      const previous = row.permission;
      const next = NEXT[previous];
      try {
        const shown = await change(info, row.name, next);
        announce(`${info.label} ${row.name}: ${WORD[next]}. ${outcome(shown)}`, {
          near: tables[info.kind].closest("table"),
          undo: () => undo(info, row.name, previous),
        });
      } catch (error) {
        toggle.removeAttribute("aria-busy");
        if (!(error instanceof ApiError && error.message === "sign in again")) {
          showError(`Could not save: ${error.message}`);
        }
      }
    }

    async function undo(info, name, previous) {
      const button = $("#notice-undo");
      if (button.getAttribute("aria-busy") === "true") return;
      button.setAttribute("aria-busy", "true");
      try {
        const shown = await change(info, name, previous);
        const text = `Undone: ${info.label} ${name} is ${WORD[previous]} again. ${outcome(shown)}`;
        announce(text, { near: tables[info.kind].closest("table") });
      } catch (error) {
        if (!(error instanceof ApiError && error.message === "sign in again")) {
          showError(`Could not undo: ${error.message}`);
        }
      } finally {
        button.removeAttribute("aria-busy");
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
      const text = listed ? `${info.label} ${name} is already listed.` : `${info.label} ${name} added: inherited.`;
      announce(text, { near: tables[info.kind].closest("table") });
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
          el("td", { "data-label": "LIVE version", text: flow.live_version !== null ? `v${flow.live_version}` : "—" }),
          el("td", { "data-label": "Status" }, el("span", { class: `badge ${status.replace(" ", "-").toLowerCase()}`, text: status })),
          el("td", { "data-label": "Versions", text: String(flow.versions.length) }),
          el("td", { class: "muted", "data-label": "Description", text: flow.description || "" }),
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
    const tabOf = { "#graph": "tab-graph", "#versions": "tab-versions", "#permissions": "tab-permissions" };
    const select = setupTabs(tablist, (tab) => {
      history.replaceState(null, "", `#${tab.id.slice(4)}`);
      if (tab.id === "tab-graph") showGraph();
    });
    const first = document.getElementById(tabOf[location.hash] || "tab-versions");
    select(first, false, true);
    if (first.id === "tab-graph") showGraph();

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
            { "data-version": version.version },
            el("th", { scope: "row", text: `v${version.version}` }),
            el("td", { "data-label": "Status" }, el("span", { class: `badge ${version.status.toLowerCase()}`, text: version.status })),
            el("td", { "data-label": "Problems" }, problemList(version)),
            el(
              "td",
              { "data-label": "Actions" },
              actions.length
                ? el(
                    "div",
                    { class: "actions" },
                    actions.map(([verb, text]) =>
                      el("button", { type: "button", text, onclick: () => lifecycle(verb, version.version) }),
                    ),
                  )
                : el("span", { class: "muted", text: "—" }),
            ),
          ),
        );
      }
    }

    async function lifecycle(verb, version) {
      const [title, text, action] = CONFIRM[verb](name, version);
      if (!(await confirmed(title, text, action))) return;
      const target = verb === "start" ? `${path}/versions/${version}/start` : `${path}/${verb}`;
      try {
        await api("POST", target);
        flow = await api("GET", path);
        renderFlow(flow);
        const row = $(`#versions-table tr[data-version="${version}"]`);
        const next = (row && $("button", row)) || $("#tab-versions");
        next.focus();
        announce(`${name}: ${DONE[verb]} v${version}. It is now ${$("#flow-badge").textContent}.`, {
          near: $("#versions-table"),
        });
        if (!$("#panel-graph").hidden) showGraph();
      } catch (error) {
        if (!(error instanceof ApiError && error.message === "sign in again")) {
          showError(`Could not ${verb}: ${error.message}`);
        }
      }
    }

    function showGraph() {
      const caption = $("#graph-caption");
      const figure = $("#graph");
      if (!flow.live) {
        caption.textContent = "No version is LIVE, so there is no graph to draw.";
        figure.hidden = true;
        $("#graph-source").hidden = true;
        return;
      }
      if (figure.dataset.drawn === flow.graph) return;
      const blocks = Object.keys(flow.live.document.blocks || {}).length;
      caption.textContent = `The blocks of the LIVE version, v${flow.live.version} (${blocks} block${blocks === 1 ? "" : "s"}); the start block is rounded, and dashed arrows lead to error handlers.`;
      $("#graph-text").textContent = flow.graph;
      $("#graph-source").hidden = false;
      drawGraph(figure, flow.graph).then(
        () => {
          figure.dataset.drawn = flow.graph;
        },
        (error) => showError(`The graph could not be drawn: ${error.message}`),
      );
    }
  }

  const CONFIRM = {
    start: (flow, v) => [`Start v${v} of ${flow}?`, `v${v} becomes LIVE and takes new activations. A version that is LIVE or PAUSED now goes back to READY; its runs in flight finish.`, `Start v${v}`],
    pause: (flow, v) => [`Pause ${flow}?`, `v${v} refuses new activations until it is resumed. Runs in flight continue.`, "Pause"],
    resume: (flow, v) => [`Resume ${flow}?`, `v${v} takes new activations again.`, "Resume"],
    stop: (flow, v) => [`Stop ${flow}?`, `v${v} stops taking activations and goes back to READY. Its runs in flight are cancelled.`, "Stop"],
  };
  const DONE = { start: "started", pause: "paused", resume: "resumed", stop: "stopped" };

  function problemList(version) {
    const details = version.problem_details || [];
    if (!details.length) return el("span", { class: "muted", text: "none" });
    return el(
      "ul",
      { class: "problems" },
      details.map((problem) => {
        const where = [];
        if (problem.block !== null) where.push(`block ${problem.block}`);
        if (problem.field) where.push(`field ${problem.field}`);
        if (problem.line !== null && problem.line !== undefined) {
          where.push(problem.column !== null && problem.column !== undefined ? `line ${problem.line}, column ${problem.column}` : `line ${problem.line}`);
        }
        return el("li", {}, where.length ? el("span", { class: "where", text: `${where.join(" · ")}: ` }) : null, problem.message);
      }),
    );
  }

  // An accessible confirmation: a modal <dialog> (focus moves into it and stays there,
  // Escape cancels, focus goes back where it was). Answers true for the action button.
  function confirmed(title, text, action) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    const ok = $("#confirm-ok");
    ok.textContent = action;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      ok.onclick = () => dialog.close("ok");
      $("#confirm-cancel").onclick = () => dialog.close("cancel");
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("#confirm-cancel").focus();
    });
  }

  // -- the flow graph: Mermaid text drawn as an inline SVG, under the strict CSP --------------
  //
  // Mermaid draws with inline styles, which this page's policy forbids, so it runs in a
  // sandboxed frame of its own (/graph-renderer) that answers the SVG. Here the SVG's
  // <style> rules go into a constructed style sheet and its style attributes into each
  // element's CSSOM style (neither of which the policy restricts) before it is put in
  // the page.

  let renderer = null;

  function graphRenderer() {
    if (!renderer) {
      renderer = new Promise((resolve, reject) => {
        const frame = el("iframe", {
          src: `${base}/graph-renderer`,
          sandbox: "allow-scripts",
          title: "Graph renderer",
          class: "renderer",
          tabindex: "-1",
          "aria-hidden": "true",
        });
        const waiting = new Map();
        let asked = 0;
        const timer = window.setTimeout(() => reject(new Error("the graph renderer did not start")), 30000);
        const draw = (text) =>
          new Promise((done, fail) => {
            asked += 1;
            waiting.set(asked, { done, fail });
            const fontFamily = getComputedStyle(body).fontFamily;
            frame.contentWindow.postMessage({ id: asked, text, fontFamily }, "*");
          });
        window.addEventListener("message", (event) => {
          if (event.source !== frame.contentWindow || !event.data) return;
          if (event.data.ready) {
            window.clearTimeout(timer);
            resolve(draw);
            return;
          }
          const pending = waiting.get(event.data.id);
          if (!pending) return;
          waiting.delete(event.data.id);
          if (typeof event.data.svg === "string") pending.done(event.data);
          else pending.fail(new Error(String(event.data.error || "no picture")));
        });
        body.append(frame);
      });
    }
    return renderer;
  }

  async function drawGraph(figure, text) {
    const draw = await graphRenderer();
    const { svg, css, styles } = await draw(text);
    const root = new DOMParser().parseFromString(svg, "image/svg+xml").documentElement;
    if (root.nodeName !== "svg") throw new Error("the renderer gave no picture");
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    const picture = document.importNode(root, true);
    for (const node of [picture, ...picture.querySelectorAll("[data-style]")]) {
      if (!node.hasAttribute("data-style")) continue;
      node.style.cssText = styles[Number(node.getAttribute("data-style"))] || "";
      node.removeAttribute("data-style");
    }
    picture.setAttribute("role", "img");
    picture.setAttribute("aria-labelledby", "graph-caption");
    document.adoptedStyleSheets = [...document.adoptedStyleSheets.filter((other) => other !== drawGraph.sheet), sheet];
    drawGraph.sheet = sheet;
    figure.replaceChildren(picture);
    figure.hidden = false;
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
