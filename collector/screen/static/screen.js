/* The line-side screen: renders the press view the daemon sends (server-sent events)
   and, when the screen offers actions and somebody is signed in, sends them.

   Everything shown comes from the view (collector/screen/view.py); this file only
   words it (i18n.js) and lays it out. Text is always set with textContent (never
   HTML from data). Times come as epoch seconds with the server's "now", so the
   countdowns run between updates with the line PC's clock, not the panel's. */
"use strict";
(function () {
  const body = document.body;
  const press = body.dataset.press;
  const lang = body.dataset.lang === "zh" ? "zh" : "en";
  const offered = (body.dataset.actions || "").split(",").filter(Boolean);
  const texts = window.I18N[lang];
  let skew = 0; // server now - local now (seconds)
  let view = null;
  let session = {signed_in: false, actions: offered};

  function t(key, params) {
    let s = texts[key] !== undefined ? texts[key] : (window.I18N.en[key] !== undefined
      ? window.I18N.en[key] : key);
    for (const [k, v] of Object.entries(params || {})) {
      s = s.split("{" + k + "}").join(v === null || v === undefined ? "—" : String(v));
    }
    return s;
  }
  function $(id) { return document.getElementById(id); }
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number"
        ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function now() { return Date.now() / 1000 + skew; }
  function clock(ts) {
    if (ts === null || ts === undefined) return "—";
    const d = new Date(ts * 1000);
    return d.toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB",
                                {hour: "2-digit", minute: "2-digit"});
  }
  function span(seconds) {
    const s = Math.max(0, Math.round(Math.abs(seconds)));
    if (s >= 3600) return `${Math.floor(s / 3600)} ${t("unit.h")} ${Math.floor(s % 3600 / 60)} ${t("unit.min")}`;
    if (s >= 60) return `${Math.floor(s / 60)} ${t("unit.min")} ${s % 60} ${t("unit.s")}`;
    return `${s} ${t("unit.s")}`;
  }
  function tol(r) {
    if (r.lsl !== null && r.usl !== null) return `${r.lsl} .. ${r.usl}`;
    if (r.usl !== null) return `≤ ${r.usl}`;
    if (r.lsl !== null) return `≥ ${r.lsl}`;
    return "—";
  }
  function verdictBadge(v) {
    if (!v) return h("span", {class: "verdict none"}, "—");
    return h("span", {class: `verdict ${v}`}, t("verdict." + v));
  }

  // -- rendering -------------------------------------------------------------------
  function render(v) {
    view = v;
    skew = v.now - Date.now() / 1000;
    body.classList.remove("loading");
    for (const c of [...body.classList]) if (c.startsWith("state-") || c.startsWith("mode-")) body.classList.remove(c);
    body.classList.add("state-" + v.state, "state-shown-" + v.shown_state, "mode-" + v.mode);
    $("press-name").textContent = v.press.toUpperCase();
    $("state").textContent = t("state." + v.state);
    $("state").className = "state " + v.state;
    const ids = clear($("ids"));
    for (const k of ["part_number", "plan_revision", "die_id", "material_lot", "heat_number"]) {
      ids.appendChild(h("div", {class: "id " + k}, h("dt", {}, t("id." + k)),
                        h("dd", {}, v.ids[k] === null ? "—" : v.ids[k])));
    }
    const strokes = clear($("strokes"));
    if (v.strokes_since_release !== null) {
      strokes.appendChild(h("div", {class: "big", id: "strokes-since"}, String(v.strokes_since_release)));
      strokes.appendChild(h("div", {class: "label"}, t("strokes_since_release")));
    } else if (v.unreleased_strokes && v.shown_state !== "released") {
      strokes.appendChild(h("div", {class: "big"}, String(v.unreleased_strokes)));
      strokes.appendChild(h("div", {class: "label"}, t("unreleased_strokes")));
    } else if (v.stroke_count !== null) {
      strokes.appendChild(h("div", {class: "big"}, String(v.stroke_count)));
      strokes.appendChild(h("div", {class: "label"}, t("stroke_count")));
    }
    renderBanners(v);
    renderSteps(v);
    renderFirstArticle(v);
    renderProduction(v);
    renderPatrol(v);
    renderAlarms(v);
    renderGauges(v);
    renderFoot(v);
    tick();
  }

  function banner(id, text) {
    const e = $(id);
    if (text === null) { e.hidden = true; clear(e); return e; }
    e.hidden = false;
    clear(e).appendChild(document.createTextNode(text));
    return e;
  }

  function renderBanners(v) {
    banner("offline-banner", v.state === "offline" ? t("offline.banner") : null);
    if (v.hold) {
      const a = v.hold.alarm || {};
      const e = banner("hold-banner", t("hold." + (v.hold.cause || "hold_command"), {
        cause: a.cause ? t("cause." + a.cause) : "", characteristic: a.characteristic,
        operator: v.hold.operator, why: v.hold.why}));
      if (v.hold.ts) e.appendChild(h("span", {class: "since"}, " — " + t("hold.since", {time: clock(v.hold.ts)})));
    } else banner("hold-banner", null);
    const i = v.inspection_100;
    banner("i100-banner", i ? t("i100.banner", {unmeasured: i.unmeasured_pieces, max: i.max_unmeasured}) : null);
    renderContainment(v.containment);
    renderConfirmations(v.confirmations);
    const n = v.notice;
    banner("notice", n ? t("notice.unassigned", {value: n.value, unit: n.unit || "", gauge: n.gauge,
      reason: texts["reason." + n.reason] ? t("reason." + n.reason) : (n.detail || n.reason)}) : null);
  }

  function panel(id, data) {
    const e = $(id);
    if (!data) { e.hidden = true; clear(e); return null; }
    e.hidden = false;
    clear(e).appendChild(h("strong", {}, t(id + ".title")));
    return e;
  }
  function kv(key, label, value) {
    return h("div", {class: "kv " + key}, h("dt", {}, label),
             h("dd", {}, value === null || value === undefined ? "—" : String(value)));
  }

  /* the suspect range of an open containment: what to isolate, from when, why */
  function renderContainment(c) {
    const e = panel("containment", c);
    if (!e) return;
    const dl = h("dl", {});
    dl.appendChild(kv("parts", t("containment.parts"), c.parts));
    dl.appendChild(kv("strokes", t("containment.strokes"),
                      (c.first_stroke ?? "—") + " – " + (c.last_stroke ?? "—") +
                      (c.range_open ? " " + t("containment.growing") : "")));
    dl.appendChild(kv("since", t("containment.since"), clock(c.since) + " – " +
                      (c.range_open ? t("containment.now") : clock(c.until))));
    dl.appendChild(kv("characteristics", t("containment.characteristics"),
                      (c.characteristics || []).join(", ")));
    dl.appendChild(kv("causes", t("containment.causes"),
                      (c.causes || []).map((x) => t("cause." + x)).join(", ")));
    const good = c.last_good;
    dl.appendChild(kv("last_good", t("containment.last_good"),
                      good && good.source ? t("containment.good." + (good.source || "release"),
                               {subgroup: good.subgroup || "", time: clock(c.since)})
                           : t("containment.good.none")));
    e.appendChild(dl);
    e.appendChild(h("p", {class: "disposition"}, t("containment.disposition")));
  }

  /* a joint setup verification: who has confirmed, who is still needed */
  function renderConfirmations(c) {
    const e = panel("confirmations", c);
    if (!e) return;
    const ul = h("ul", {});
    for (const role of c.required || []) {
      const got = (c.received || []).find((r) => r.role === role);
      ul.appendChild(h("li", {class: "role " + role + (got ? " confirmed" : " pending"),
                              "data-role": role},
        got ? t("confirmations.done", {role: t("role." + role), operator: got.operator,
                                       time: clock(got.ts)})
            : t("confirmations.pending", {role: t("role." + role)})));
    }
    e.appendChild(ul);
  }

  function renderSteps(v) {
    const e = clear($("next-steps"));
    e.appendChild(h("h2", {}, t("next_steps")));
    const ul = h("ul", {});
    for (const s of v.next_steps) {
      const p = Object.assign({}, s);
      if (p.cause) p.cause = t("cause." + p.cause);
      if (Array.isArray(p.pending)) p.pending = p.pending.join(", ");
      if (Array.isArray(p.failed)) p.failed = p.failed.join(", ");
      ul.appendChild(h("li", {class: "step " + s.code, "data-code": s.code}, t("step." + s.code, p)));
    }
    e.appendChild(ul);
  }

  function renderFirstArticle(v) {
    const fa = v.first_article;
    const sec = $("fa");
    if (!fa) { sec.hidden = true; return; }
    sec.hidden = false;
    $("fa-title").textContent = t("fa.title", {attempt: fa.attempt, measured: fa.measured, total: fa.total});
    const big = $("fa-verdict");
    if (fa.verdict) {
      big.hidden = false;
      big.className = "verdict-big " + fa.verdict;
      big.textContent = t("fa.verdict." + fa.verdict);
    } else { big.hidden = true; big.className = "verdict-big"; }
    const thead = clear($("fa-table").tHead);
    const multi = fa.sample_size > 1;
    thead.appendChild(h("tr", {}, h("th", {}, t("fa.characteristic")), multi ? h("th", {}, t("fa.piece")) : null,
      h("th", {}, t("fa.nominal")), h("th", {}, t("fa.tolerance")), h("th", {}, t("fa.value")),
      h("th", {}, t("fa.deviation")), h("th", {}, t("fa.verdict"))));
    const tbody = clear($("fa-table").tBodies[0]);
    for (const r of fa.rows) {
      const cls = ["row", r.verdict || "open"];
      if (r.next) cls.push("next");
      tbody.appendChild(h("tr", {class: cls.join(" "), "data-key": r.key},
        h("td", {class: "char"}, h("strong", {}, r.id), " ", r.name,
          r.next ? h("span", {class: "next-tag"}, t("fa.next")) : null),
        multi ? h("td", {class: "piece"}, String(r.piece)) : null,
        h("td", {class: "nominal"}, `${r.nominal} ${r.unit}`),
        h("td", {class: "tolerance"}, tol(r)),
        h("td", {class: "value"}, r.value === null ? "" : r.value),
        h("td", {class: "deviation"}, r.deviation === null ? "" : r.deviation),
        h("td", {class: "verdict-cell"}, r.value === null ? "" : verdictBadge(r.verdict))));
    }
  }

  function tolBar(c) {
    // where the last value sits in the tolerance: a bar from LSL to USL
    const bar = h("div", {class: "tolbar"});
    const last = c.last;
    const lo = c.lsl !== null ? Number(c.lsl) : Number(c.nominal) - (Number(c.usl) - Number(c.nominal));
    const hi = c.usl !== null ? Number(c.usl) : Number(c.nominal) + (Number(c.nominal) - Number(c.lsl));
    if (last && last.value !== null && isFinite(lo) && isFinite(hi) && hi > lo) {
      const span_ = hi - lo;
      const pos = Math.min(1.1, Math.max(-0.1, (Number(last.value) - lo) / span_));
      const mark = h("div", {class: "mark " + (last.verdict || "")});
      mark.style.left = `${((pos + 0.1) / 1.2 * 100).toFixed(1)}%`;
      const band = h("div", {class: "band"});
      band.style.left = `${(0.1 / 1.2 * 100).toFixed(1)}%`;
      band.style.width = `${(1 / 1.2 * 100).toFixed(1)}%`;
      bar.appendChild(band);
      bar.appendChild(mark);
    }
    return bar;
  }

  function renderProduction(v) {
    const sec = $("production");
    if (v.mode !== "production" || !v.characteristics.length) { sec.hidden = true; clear(sec); return; }
    sec.hidden = false;
    clear(sec);
    for (const c of v.characteristics) {
      const last = c.last;
      const card = h("article", {class: "char-card " + (last ? last.verdict : "none"), "data-char": c.id});
      card.appendChild(h("header", {},
        h("span", {class: "char-id"}, c.id), " ", h("span", {class: "char-name"}, c.name),
        h("span", {class: "char-tol"}, ` ${c.nominal} ${c.unit} (${tol(c)})`),
        h("span", {class: "char-kind"}, c.chart.chart ? " · " + t("chart." + c.chart.chart) : "")));
      card.appendChild(h("div", {class: "last"},
        h("span", {class: "label"}, t("last") + ": "),
        h("span", {class: "last-value"}, last ? `${last.value} ${c.unit}` : "—"), " ",
        last ? verdictBadge(last.verdict) : null,
        last && last.deviation !== null ? h("span", {class: "dev"}, ` (${Number(last.deviation) >= 0 ? "+" : ""}${last.deviation})`) : null,
        last ? h("span", {class: "when"}, " " + clock(last.ts)) : null));
      card.appendChild(tolBar(c));
      card.appendChild(window.PCChart.render(c.chart, t));
      sec.appendChild(card);
    }
  }

  function renderPatrol(v) {
    const sec = clear($("patrol"));
    sec.className = "panel";
    sec.appendChild(h("h2", {}, t("patrol")));
    const p = v.patrol;
    if (!p) {
      const planned = ["released", "stopped"].includes(v.shown_state);
      sec.appendChild(h("p", {class: "muted"}, planned ? t("patrol.none") : "—"));
      return;
    }
    if (p.due) {
      sec.classList.add(p.due.overdue ? "overdue" : "due");
      sec.appendChild(h("p", {class: "due-line"}, t(p.due.overdue ? "patrol.overdue" : "patrol.due",
                                                   {pending: p.due.pending.join(", ")})));
      sec.appendChild(h("p", {class: "countdown big", "data-deadline": p.due.deadline_ts}));
    } else if (p.next) {
      sec.appendChild(h("p", {}, t("patrol.next")));
      if (p.next.strokes_left !== null) sec.appendChild(h("p", {class: "big"}, t("patrol.next_strokes", {strokes: p.next.strokes_left})));
      if (p.next.due_ts !== null) sec.appendChild(h("p", {class: "countdown-next", "data-due": p.next.due_ts}));
    }
  }

  function renderAlarms(v) {
    const sec = clear($("alarms"));
    sec.appendChild(h("h2", {}, t("alarms")));
    if (!v.alarms.length) { sec.appendChild(h("p", {class: "muted"}, t("alarms.none"))); return; }
    const ul = h("ul", {});
    for (const a of v.alarms) {
      const li = h("li", {class: `alarm ${a.cause} ${a.acknowledged ? "acked" : "unacked"}`, "data-ref": a.ref});
      li.appendChild(h("div", {class: "alarm-head"}, h("strong", {}, t("cause." + a.cause)),
        a.characteristic ? ` ${a.characteristic} ${a.name || ""}` : "", h("span", {class: "when"}, " " + clock(a.ts))));
      if (a.value !== null && a.value !== undefined) li.appendChild(h("div", {}, t("alarm.value", {value: a.value, lsl: a.lsl, usl: a.usl})));
      if (a.rules && a.rules.length) li.appendChild(h("div", {}, t("alarm.rules", {rules: a.rules.map(r => r.rule).join(", ")})));
      if (a.actions && a.actions.length) li.appendChild(h("div", {class: "actions-taken"}, t("alarm.actions", {actions: a.actions.map(x => t("action." + x)).join(", ")})));
      if (a.acknowledged) {
        li.appendChild(h("div", {class: "ack"}, t("alarm.acknowledged", {operator: a.acknowledged.operator, time: clock(a.acknowledged.ts)})));
      } else if (canAct("acknowledge_alarm")) {
        li.appendChild(h("button", {class: "ack-button", type: "button", onclick: () => ackDialog(a)}, t("alarm.acknowledge")));
      }
      ul.appendChild(li);
    }
    sec.appendChild(ul);
  }

  function renderGauges(v) {
    const sec = clear($("gauges"));
    sec.appendChild(h("h2", {}, t("gauges")));
    const ul = h("ul", {});
    ul.appendChild(h("li", {class: "plc " + (v.plc_online === false || v.state === "offline" ? "bad" : "good")},
                     "PLC ", v.plc_online === false || v.state === "offline" ? t("plc.offline") : "✓"));
    for (const g of v.gauges) {
      const st = g.online === true ? "online" : g.online === false ? "offline" : "unknown";
      ul.appendChild(h("li", {class: "gauge " + st}, `${g.id}: ${t("gauge." + st)}`));
    }
    sec.appendChild(ul);
  }

  function renderFoot(v) {
    const who = clear($("who"));
    const acts = clear($("actions"));
    if (!offered.length) {
      who.appendChild(h("span", {class: "muted"}, t("read_only")));
    } else if (!session.signed_in) {
      who.appendChild(h("button", {id: "sign-in", type: "button", onclick: loginDialog}, t("sign_in")));
    } else {
      who.appendChild(h("span", {id: "operator"}, t("signed_in", {operator: session.operator, role: t("role." + session.role)})));
      who.appendChild(h("button", {id: "sign-out", type: "button", onclick: logout}, t("sign_out")));
      for (const name of ["start_last_piece", "repeat_measurement"]) {
        if (canAct(name)) acts.appendChild(h("button", {class: "act " + name, type: "button",
          onclick: () => actionDialog(name)}, t("act." + name)));
      }
    }
    const lc = clear($("last-command"));
    if (v.last_command) {
      lc.appendChild(document.createTextNode(t("last_command", {operator: v.last_command.operator,
        command: v.last_command.command, time: clock(v.last_command.ts)})));
    }
  }

  function tick() {
    const n = now();
    $("clock").textContent = clock(n);
    for (const e of document.querySelectorAll("[data-deadline]")) {
      const left = Number(e.dataset.deadline) - n;
      e.textContent = left >= 0 ? t("patrol.time_left", {time: span(left)}) : t("patrol.overdue_by", {time: span(left)});
      e.classList.toggle("late", left < 0);
    }
    for (const e of document.querySelectorAll("[data-due]")) {
      e.textContent = t("patrol.next_time", {time: span(Number(e.dataset.due) - n)});
    }
  }

  // -- actions ---------------------------------------------------------------------
  function canAct(name) {
    return session.signed_in && offered.includes(name) &&
      (session.presses.includes("*") || session.presses.includes(press));
  }

  async function post(url, data) {
    const headers = {"Content-Type": "application/json"};
    if (session.csrf) headers["X-CSRF-Token"] = session.csrf;
    const r = await fetch(url, {method: "POST", headers, body: JSON.stringify(data),
                                credentials: "same-origin"});
    let reply = {};
    try { reply = await r.json(); } catch (e) { reply = {ok: false, message: r.statusText}; }
    return reply;
  }

  function dialog(title, fields, onOk) {
    const dlg = $("dialog");
    $("dialog-title").textContent = title;
    const bodyEl = clear($("dialog-body"));
    const inputs = {};
    for (const f of fields) {
      const label = h("label", {}, f.label);
      let input;
      if (f.choices) {
        input = h("select", {name: f.name, id: "field-" + f.name});
        for (const [value, text] of f.choices) input.appendChild(h("option", {value}, text));
      } else {
        input = h("input", {name: f.name, id: "field-" + f.name, type: f.type || "text",
                            autocomplete: "off", maxLength: 200});
      }
      label.appendChild(input);
      bodyEl.appendChild(label);
      inputs[f.name] = input;
    }
    $("dialog-error").textContent = "";
    $("dialog-cancel").textContent = t("cancel");
    $("dialog-ok").textContent = t("ok");
    $("dialog-cancel").onclick = () => dlg.close();
    $("dialog-form").onsubmit = async (ev) => {
      ev.preventDefault();
      const values = {};
      for (const [k, input] of Object.entries(inputs)) values[k] = input.value;
      const error = await onOk(values);
      if (error) $("dialog-error").textContent = error;
      else dlg.close();
    };
    dlg.showModal();
    const first = Object.values(inputs)[0];
    if (first) first.focus();
  }

  function loginDialog() {
    dialog(t("sign_in"), [{name: "account", label: t("account")},
                          {name: "password", label: t("password"), type: "password"}],
      async (values) => {
        const reply = await post("/api/login", values);
        if (!reply.ok) return reply.message || "refused";
        session = reply;
        if (view) render(view);
        return null;
      });
  }

  async function logout() {
    await post("/api/logout", {});
    session = {signed_in: false, actions: offered};
    if (view) render(view);
  }

  async function act(name, fields) {
    const reply = await post(`/api/press/${encodeURIComponent(press)}/action/${name}`, {fields});
    if (reply.code === "signed_out") { session = {signed_in: false, actions: offered}; if (view) render(view); }
    return reply.ok ? null : t("act.refused", {action: t("act." + name), message: reply.message || reply.code});
  }

  function ackDialog(alarm) {
    dialog(t("act.acknowledge_alarm") + ": " + t("cause." + alarm.cause),
      [{name: "note", label: t("act.note")}],
      (values) => act("acknowledge_alarm", {alarm: alarm.ref, note: values.note || null}));
  }

  function actionDialog(name) {
    if (name === "repeat_measurement") {
      const choices = ["part_not_seated", "gauge_slipped", "wrong_part", "dirt"]
        .map(k => [t("reason." + k), t("reason." + k)]);
      dialog(t("act." + name), [{name: "reason", label: t("act.reason"), choices}],
        (values) => act(name, {reason: values.reason}));
    } else {
      dialog(t("act." + name), [{name: "why", label: t("act.why")}],
        (values) => act(name, {why: values.why || null}));
    }
  }

  // -- overview (the start page of a line PC with several presses) -------------------
  function renderOverview(data) {
    body.classList.remove("loading");
    body.classList.add("overview");
    const sec = $("overview");
    sec.hidden = false;
    clear(sec).appendChild(h("h2", {}, t("overview")));
    for (const p of data.presses) {
      sec.appendChild(h("a", {class: "tile " + p.state, href: `/press/${encodeURIComponent(p.press)}?lang=${lang}`},
        h("div", {class: "tile-press"}, p.press.toUpperCase()),
        h("div", {class: "tile-state"}, t("state." + p.state)),
        h("div", {}, `${p.part_number || "—"} · ${p.die_id || "—"}`),
        p.alarms ? h("div", {class: "tile-alarms"}, `${t("alarms")}: ${p.alarms}`) : null));
    }
    skew = data.now - Date.now() / 1000;
    $("clock").textContent = clock(now());
  }

  // -- live connection -------------------------------------------------------------
  function connect() {
    const url = press ? `/api/press/${encodeURIComponent(press)}/events` : "/api/events";
    const es = new EventSource(url);
    es.addEventListener("view", (ev) => {
      banner("conn-banner", null);
      body.classList.remove("disconnected");
      const data = JSON.parse(ev.data);
      if (press) render(data); else renderOverview(data);
    });
    es.addEventListener("tick", (ev) => {
      banner("conn-banner", null);
      body.classList.remove("disconnected");
      skew = JSON.parse(ev.data).now - Date.now() / 1000;
    });
    es.onerror = () => {
      body.classList.add("disconnected");
      banner("conn-banner", t("conn.lost"));
    };
  }

  async function start() {
    for (const a of document.querySelectorAll("#langs a")) {
      a.classList.toggle("current", a.dataset.lang === lang);
    }
    if (offered.length) {
      try {
        const r = await fetch("/api/session", {credentials: "same-origin"});
        session = await r.json();
      } catch (e) { /* read-only until signed in */ }
    }
    connect();
    setInterval(tick, 1000);
  }
  start();
})();
