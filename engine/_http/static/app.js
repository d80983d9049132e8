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
    inputsForm(name, flow.live);
    checkBox(name);
    let flowRuns = null;
    function showRuns() {
      if (!flowRuns) {
        const query = new URLSearchParams(location.search);
        const params = new URLSearchParams({ flow: name, limit: "100" });
        if (query.get("cursor")) params.set("cursor", query.get("cursor"));
        flowRuns = runsTable($('[data-runs="flow"]'), params, `Runs of ${name}`, pagerOf(query, "#runs"));
      }
      flowRuns.refresh().catch((error) => showError(`The runs could not be read: ${error.message}`));
    }
    const tabOf = { "#graph": "tab-graph", "#versions": "tab-versions", "#permissions": "tab-permissions", "#runs": "tab-runs", "#run": "tab-run" };
    const shown = (tab) => {
      if (tab.id === "tab-graph") showGraph();
      if (tab.id === "tab-runs") showRuns();
    };
    const select = setupTabs(tablist, (tab) => {
      history.replaceState(null, "", `#${tab.id.slice(4)}`);
      shown(tab);
    });
    const first = document.getElementById(tabOf[location.hash] || "tab-versions");
    select(first, false, true);
    shown(first);
    window.addEventListener("hashchange", () => {
      const tab = document.getElementById(tabOf[location.hash] || "");
      if (!tab || tab.getAttribute("aria-selected") === "true") return;
      select(tab, false, true);
      shown(tab);
    });

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

  // -- runs: the runs table (/runs and a flow's RUNS tab) and a run's page ------------------

  const UNFINISHED = new Set(["QUEUED", "RUNNING"]);
  const POLL_MS = 2000;

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }

  function runDuration(run) {
    if (run.started_at === null || run.started_at === undefined) return "—";
    const end = run.finished_at !== null && run.finished_at !== undefined ? run.finished_at : Date.now() / 1000;
    return duration(end - run.started_at);
  }

  function statusBadge(status) {
    return el("span", { class: `badge run-${status.toLowerCase()}`, text: status });
  }

  function runLink(runId) {
    return el("a", { href: `${base}/runs/${encodeURIComponent(runId)}`, class: "run-id", text: runId });
  }

  // Links to the older and newer pages of a runs table. The listing is keyset-paged,
  // newest first: the page's URL holds `cursor` (where it starts; none on the first page)
  // and `newer`, the cursors of the pages before it ("" for the first), so each link is
  // a plain URL that keeps the page's filters and `hash`.
  function pagerOf(query, hash) {
    const newer = query.getAll("newer");
    const cursor = query.get("cursor") || "";
    function href(start, before) {
      const params = new URLSearchParams(query);
      params.delete("cursor");
      params.delete("newer");
      if (start) params.set("cursor", start);
      for (const each of before) params.append("newer", each);
      const text = params.toString();
      return `${location.pathname}${text ? `?${text}` : ""}${hash}`;
    }
    return (nextCursor) => [
      cursor ? el("a", { href: href(newer[newer.length - 1] || "", newer.slice(0, -1)), rel: "prev", class: "pager-newer", text: "← Newer runs" }) : null,
      nextCursor ? el("a", { href: href(nextCursor, [...newer, cursor]), rel: "next", class: "pager-older", text: "Older runs →" }) : null,
    ];
  }

  // The table fills `container` from GET /api/runs?params, and while any row is QUEUED
  // or RUNNING asks again every two seconds. `pager`, if given, makes the links to the
  // other pages from the answer's next_cursor.
  function runsTable(container, params, caption, pager) {
    const tbody = el("tbody");
    const empty = el("p", { class: "muted", text: "No runs match.", hidden: true });
    const table = el(
      "table",
      { class: "grid stack runs-table" },
      el("caption", { class: "sr-only", text: caption }),
      el(
        "thead",
        {},
        el("tr", {}, ["Run", "Flow", "Status", "User", "Started", "Duration", "Error"].map((text) => el("th", { scope: "col", text }))),
      ),
      tbody,
    );
    const pages = el("nav", { class: "pager", "aria-label": `${caption}: more pages` });
    container.replaceChildren(table, empty, pages);
    let timer = null;
    async function refresh() {
      timer = null;
      const data = await api("GET", `/api/runs?${params}`);
      tbody.replaceChildren(
        ...data.runs.map((run) =>
          el(
            "tr",
            { "data-run": run.run_id, "data-status": run.status },
            el("th", { scope: "row" }, runLink(run.run_id)),
            el("td", { "data-label": "Flow" }, el("a", { href: `${base}/flows/${encodeURIComponent(run.flow)}`, text: run.flow }), ` v${run.version}`),
            el("td", { "data-label": "Status" }, statusBadge(run.status)),
            el("td", { "data-label": "User", text: run.user_id === null ? "anonymous" : run.user_id }),
            el("td", { "data-label": "Started", text: when(run.started_at) }),
            el("td", { "data-label": "Duration", text: runDuration(run) }),
            el("td", { "data-label": "Error", class: run.error_code ? "error-code" : "muted", text: run.error_code || "—" }),
          ),
        ),
      );
      empty.hidden = data.runs.length > 0;
      table.hidden = data.runs.length === 0;
      pages.replaceChildren(...(pager ? pager(data.next_cursor) : []).filter(Boolean));
      if (data.runs.some((run) => UNFINISHED.has(run.status))) {
        timer = window.setTimeout(() => refresh().catch((error) => showError(`The runs could not be read: ${error.message}`)), POLL_MS);
      }
    }
    return {
      refresh() {
        if (timer !== null) window.clearTimeout(timer);
        return refresh();
      },
    };
  }

  async function runsPage() {
    const query = new URLSearchParams(location.search);
    const params = new URLSearchParams();
    for (const name of ["flow", "status", "user"]) {
      const value = (query.get(name) || "").trim();
      const field = $(`#filter-${name}`);
      field.value = value;
      if (value) params.set(name, value);
    }
    params.set("limit", "100");
    if (query.get("cursor")) params.set("cursor", query.get("cursor"));
    await runsTable($('[data-runs="all"]'), params, "Runs, newest first", pagerOf(query, "")).refresh();
    loaded();
  }

  async function runPage() {
    const runId = body.dataset.run;
    const path = `/api/runs/${encodeURIComponent(runId)}`;
    let run;
    try {
      run = await api("GET", path);
    } catch (error) {
      loaded();
      if (error instanceof ApiError && error.code === "run_not_found") {
        showError(`There is no run “${runId}”.`);
        return;
      }
      throw error;
    }
    loaded();
    $("#run-cancel").addEventListener("click", cancel);
    const stepper = steps();
    await show();

    async function show() {
      renderRun(run);
      await Promise.all([related(), graph(), stepper.load()]);
      if (UNFINISHED.has(run.status)) window.setTimeout(poll, POLL_MS);
    }

    async function poll() {
      try {
        run = await api("GET", path);
        await show();
      } catch (error) {
        showError(`The run could not be read: ${error.message}`);
      }
    }

    async function cancel() {
      const ok = await confirmed(`Cancel run ${runId}?`, `The run of ${run.flow} v${run.version} stops where it is and ends CANCELLED. This cannot be undone.`, "Cancel run");
      if (!ok) return;
      try {
        await api("POST", `${path}/cancel`);
        run = await api("GET", path);
        renderRun(run);
        await Promise.all([graph(), stepper.load()]);
        $("#run-status").focus();
        announce(`Run ${runId} is ${run.status}.`, { near: $("#run-actions") });
      } catch (error) {
        if (!(error instanceof ApiError && error.message === "sign in again")) showError(`Could not cancel: ${error.message}`);
      }
    }

    async function related() {
      const parent = $("#run-parent");
      parent.replaceChildren(run.parent_run_id ? el("span", {}, "Started by ", runLink(run.parent_run_id)) : el("span", { class: "muted", text: "Not started by another run." }));
      const children = await api("GET", `/api/runs?parent=${encodeURIComponent(runId)}&limit=100`);
      const list = $("#run-children");
      list.replaceChildren(
        ...(children.runs.length
          ? children.runs.map((child) => el("li", {}, "Started ", runLink(child.run_id), ` (${child.flow} v${child.version}) `, statusBadge(child.status)))
          : [el("li", { class: "muted", text: "No child runs." })]),
      );
      $("#run-related").hidden = false;
    }

    // The Steps section: the variables after each block, one checkpoint at a time, with
    // that block marked in the timeline. Previous and Next are buttons (and the arrow
    // keys while the focus is in the section); each move is announced.
    function steps() {
      let data = null;
      let current = 0;
      const previous = $("#step-previous");
      const next = $("#step-next");
      previous.addEventListener("click", () => go(-1));
      next.addEventListener("click", () => go(1));
      $("#run-stepper").addEventListener("keydown", (event) => {
        const delta = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 }[event.key];
        if (delta === undefined || event.target.closest("pre") && (event.key === "ArrowUp" || event.key === "ArrowDown")) return;
        event.preventDefault();
        go(delta);
      });

      function go(delta) {
        if (!data || current + delta < 0 || current + delta >= data.steps.length) return;
        current += delta;
        render();
      }

      function note() {
        if (!data.kept) return "This run's store keeps no per-block checkpoints (the in-memory store), so there are no steps to go through. A durable store (SQLite or PostgreSQL) keeps them.";
        if (!data.steps.length) return "No block has a checkpoint yet.";
        const parts = [`The variables after each block, from the run's checkpoints (${data.steps.length}).`];
        if (!UNFINISHED.has(run.status)) parts.push("The block that ended the run has none: its output or error is above.");
        if (run.trace.length > data.limits.steps) parts.push(`Only the first ${data.limits.steps} blocks of the trace are kept.`);
        return parts.join(" ");
      }

      function mark(index) {
        for (const item of $("#run-trace").querySelectorAll("li.step")) {
          item.classList.remove("current");
          item.removeAttribute("aria-current");
        }
        const item = index === null ? null : $("#run-trace").querySelectorAll("li.step")[index];
        if (item) {
          item.classList.add("current");
          item.setAttribute("aria-current", "step");
        }
      }

      function render() {
        $("#run-steps-note").textContent = note();
        $("#run-steps-panel").hidden = false;
        const box = $("#run-stepper");
        box.hidden = !data.steps.length;
        if (!data.steps.length) return mark(null);
        const step = data.steps[current];
        const status = $("#step-status");
        const said = `Step ${current + 1} of ${data.steps.length}: after block ${step.block}`;
        if (status.textContent !== said) {  // a poll that changes nothing says nothing
          status.replaceChildren(`Step ${current + 1} of ${data.steps.length}: after block `, el("code", { text: step.block }));
        }
        status.dataset.block = step.block;
        previous.setAttribute("aria-disabled", String(current === 0));
        next.setAttribute("aria-disabled", String(current === data.steps.length - 1));
        const shown = $("#step-variables");
        shown.textContent = step.kept ? JSON.stringify(step.variables, null, 2) : `(not kept: the variables took ${step.size} bytes, more than the ${data.limits.step_bytes} a step keeps, or than this run's ${data.limits.run_bytes})`;
        shown.classList.toggle("muted", !step.kept);
        mark(step.trace_index);
      }

      return {
        async load() {
          const at = data && data.steps[current] ? data.steps[current].trace_index : null;
          data = await api("GET", `${path}/steps`);
          const found = at === null ? -1 : data.steps.findIndex((step) => step.trace_index === at);
          current = found >= 0 ? found : 0;
          render();
        },
      };
    }

    async function graph() {
      const data = await api("GET", `${path}/graph`);
      const figure = $("#graph");
      $("#graph-caption").textContent = `The blocks of ${data.flow} v${data.version}; ${data.executed.length} executed (green)${data.failed.length ? `, ${data.failed.length} failed (red)` : ""}.`;
      $("#graph-text").textContent = data.graph;
      figure.dataset.executed = data.executed.join(" ");
      $("#run-graph-panel").hidden = false;
      if (figure.dataset.drawn === data.graph) return;
      try {
        await drawGraph(figure, data.graph);
        figure.dataset.drawn = data.graph;
      } catch (error) {
        showError(`The graph could not be drawn: ${error.message}`);
      }
    }
  }

  function renderRun(run) {
    const badge = $("#run-status");
    badge.textContent = run.status;
    badge.className = `badge run-${run.status.toLowerCase()}`;
    badge.tabIndex = -1;
    badge.hidden = false;
    const flowLink = el("a", { href: `${base}/flows/${encodeURIComponent(run.flow)}`, text: run.flow });
    $("#run-flow").replaceChildren("Flow ", flowLink, ` v${run.version}`);
    $("#run-actions").hidden = !UNFINISHED.has(run.status);
    const facts = [
      ["Status", run.status],
      ["User", run.user_id === null ? "anonymous" : run.user_id],
      ["Roles", run.roles.length ? run.roles.join(", ") : "none"],
      ["Created", when(run.created_at)],
      ["Started", when(run.started_at)],
      ["Finished", when(run.finished_at)],
      ["Duration", runDuration(run)],
      ["Depth", String(run.depth)],
    ];
    $("#run-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]));
    $("#run-inputs").textContent = JSON.stringify(run.inputs, null, 2);
    const result = $("#run-result");
    if (run.error) {
      $("#run-result-title").textContent = "Error";
      const where = run.error.block ? ` at block ${run.error.block}` : "";
      result.textContent = `${run.error.code}${where}: ${run.error.message}`;
      result.className = "json error";
    } else {
      $("#run-result-title").textContent = "Output";
      result.textContent = UNFINISHED.has(run.status) ? "(not finished yet)" : JSON.stringify(run.output, null, 2);
      result.className = "json";
    }
    $("#run-details").hidden = false;
    const seen = new Map();
    $("#run-trace").replaceChildren(
      ...(run.trace.length
        ? run.trace.map((entry) => {
            const count = (seen.get(entry.block) || 0) + 1;
            seen.set(entry.block, count);
            const fine = entry.outcome === "ok" || !/error|fail|timeout/i.test(entry.outcome);
            return el(
              "li",
              { class: `step ${fine ? "ok" : "bad"}`, "data-block": entry.block, "data-outcome": entry.outcome },
              el("span", { class: "step-block", text: entry.block }),
              el("span", { class: "step-type", text: entry.type }),
              count > 1 ? el("span", { class: "tag", text: `#${count}` }) : null,
              el("span", { class: "step-outcome", text: entry.outcome }),
              el("span", { class: "step-duration muted", text: duration(entry.duration) }),
            );
          })
        : [el("li", { class: "muted", text: "No block has run yet." })]),
    );
    $("#run-trace-panel").hidden = false;
    $("#run-log").replaceChildren(
      ...(run.log.length
        ? run.log.map((line) => el("li", { class: `log-${line.level}` }, el("span", { class: "muted", text: `${when(line.time)} ${line.level} ${line.block}: ` }), line.message))
        : [el("li", { class: "muted", text: "Nothing was logged." })]),
    );
    $("#run-log-panel").hidden = false;
  }

  // -- the RUN tab: a form from the LIVE version's inputs JSON Schema ----------------------

  function inputsForm(flowName, live) {
    const form = $("#run-form");
    const fields = $("#run-fields");
    const error = $("#run-error");
    if (!live) {
      $("#run-caption").textContent = "No version is LIVE, so the flow cannot be run.";
      form.hidden = true;
      return;
    }
    $("#run-caption").textContent = `Runs v${live.version} (LIVE) as the signed-in administrator, then opens the run's page.`;
    const schema = live.inputs || {};
    const properties = schema.properties || {};
    const required = new Set(schema.required || []);
    const controls = [];
    fields.replaceChildren();
    for (const [name, prop] of Object.entries(properties)) {
      const id = `input-${name}`;
      const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
      const hint = [type || "JSON", required.has(name) ? "required" : "optional", prop.description].filter(Boolean).join(" · ");
      let control;
      if (Array.isArray(prop.enum)) {
        control = el("select", { id, name }, required.has(name) ? null : el("option", { value: "", text: "(none)" }), prop.enum.map((value, index) => el("option", { value: String(index), text: JSON.stringify(value) })));
        if (prop.default !== undefined) control.value = String(prop.enum.findIndex((value) => JSON.stringify(value) === JSON.stringify(prop.default)));
      } else if (type === "boolean") {
        control = el("input", { id, name, type: "checkbox", checked: prop.default === true });
      } else if (type === "integer" || type === "number") {
        control = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any", inputmode: type === "integer" ? "numeric" : "decimal" });
        if (prop.minimum !== undefined) control.min = String(prop.minimum);
        if (prop.maximum !== undefined) control.max = String(prop.maximum);
      } else if (type === "string") {
        control = el("input", { id, name, type: "text", autocomplete: "off" });
      } else {
        control = el("textarea", { id, name, rows: "3", spellcheck: "false" });
      }
      if (prop.default !== undefined && !Array.isArray(prop.enum) && type !== "boolean") {
        control.value = typeof prop.default === "string" && type === "string" ? prop.default : JSON.stringify(prop.default);
      }
      if (required.has(name)) control.setAttribute("aria-required", "true");
      control.setAttribute("aria-describedby", `${id}-hint`);
      controls.push({ name, type, prop, control });
      fields.append(
        el(
          "div",
          { class: `field${type === "boolean" ? " check" : ""}` },
          el("label", { for: id }, name, required.has(name) ? el("span", { class: "required", text: " *" }) : null),
          control,
          el("span", { id: `${id}-hint`, class: "hint muted", text: hint }),
        ),
      );
    }
    if (!controls.length) fields.append(el("p", { class: "muted", text: "This flow takes no inputs." }));
    form.hidden = false;
    form.onsubmit = async (event) => {
      event.preventDefault();
      error.hidden = true;
      const inputs = {};
      for (const { name, type, prop, control } of controls) {
        control.removeAttribute("aria-invalid");
        let value;
        if (Array.isArray(prop.enum)) {
          if (control.value === "") value = undefined;
          else value = prop.enum[Number(control.value)];
        } else if (type === "boolean") value = control.checked;
        else if (control.value.trim() === "") value = undefined;
        else if (type === "integer" || type === "number") {
          value = Number(control.value);
          if (!Number.isFinite(value) || (type === "integer" && !Number.isInteger(value))) return refuse(control, `${name} must be ${type === "integer" ? "a whole number" : "a number"}.`);
        } else if (type === "string") value = control.value;
        else {
          try {
            value = JSON.parse(control.value);
          } catch (_) {
            return refuse(control, `${name} must be JSON.`);
          }
        }
        if (value === undefined && required.has(name)) return refuse(control, `${name} is required.`);
        if (value !== undefined) inputs[name] = value;
      }
      try {
        const answer = await api("POST", `/api/flows/${encodeURIComponent(flowName)}/activate`, inputs);
        location.assign(`${base}/runs/${encodeURIComponent(answer.run_id)}`);
      } catch (failure) {
        if (failure instanceof ApiError && failure.message === "sign in again") return;
        error.textContent = `The run was refused: ${failure.message}`;
        error.hidden = false;
      }
    };

    function refuse(control, message) {
      control.setAttribute("aria-invalid", "true");
      error.textContent = message;
      error.hidden = false;
      control.focus();
    }
  }

  // -- the PERMISSIONS tab's "check an identity" box ---------------------------------------

  function checkBox(flowName) {
    const form = $("#check-form");
    const result = $("#check-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      const user = $("#check-user").value.trim();
      if (user) params.set("user", user);
      for (const role of $("#check-roles").value.split(",")) if (role.trim()) params.append("role", role.trim());
      let report;
      try {
        report = await api("GET", `/api/flows/${encodeURIComponent(flowName)}/check?${params}`);
      } catch (error) {
        if (error instanceof ApiError && error.message === "sign in again") return;
        result.replaceChildren(el("p", { class: "error", text: `The check failed: ${error.message}` }));
        return;
      }
      const who = `${user || "anonymous"}${params.getAll("role").length ? ` (${params.getAll("role").join(", ")})` : ""}`;
      const refusing = report.chain.filter((entry) => !entry.allowed);
      result.replaceChildren(
        el(
          "p",
          { class: `verdict-line ${report.allowed ? "allowed" : "denied"}` },
          report.allowed ? `✓ ${who} may run ${flowName} and every flow it calls.` : `✕ ${who} is refused: ${refusing.map((entry) => entry.flow).join(", ")} refuses.`,
        ),
        el(
          "ol",
          { class: "chain" },
          report.chain.map((entry) =>
            el(
              "li",
              { class: entry.allowed ? "allowed" : "denied", "data-flow": entry.flow },
              el("span", { class: "verdict" }, entry.allowed ? "✓ Allowed" : "✕ Refuses"),
              " ",
              el("strong", { text: entry.flow }),
              entry.called_from ? el("span", { class: "muted", text: ` called from ${entry.called_from}` }) : null,
              el("span", { class: "reason", text: ` — ${entry.reason}` }),
            ),
          ),
        ),
      );
    });
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

  const section = { settings: "settings", runs: "runs", run: "runs" }[page] || "flows";
  const current = document.querySelector(`.nav [data-nav="${section}"]`);
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
  const pages = { flows: flowsPage, flow: flowPage, runs: runsPage, run: runPage, settings: settingsPage };
  pages[page]().catch((error) => {
    loaded();
    if (!(error instanceof ApiError && error.message === "sign in again")) {
      showError(`Something went wrong: ${error.message}`);
    }
  });
})();
