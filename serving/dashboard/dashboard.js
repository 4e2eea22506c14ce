/* repairqc 维修服务质量看板 — vanilla JS, no build step, no external assets.
 *
 * The page holds no data: it asks for an API key (role quality or admin), keeps it in
 * sessionStorage (gone when the tab closes) and calls the /v1 routes with
 * `Authorization: Bearer <key>`. Every value shown comes from those routes; the Chinese labels
 * come from /dashboard/meta (one definition in the Python models).
 */
"use strict";

const KEY_STORAGE = "repairqc.apiKey";
const VIEWS = ["queue", "kpi", "report"];
const TREND_COLORS = ["#2563eb", "#0d9488", "#d97706", "#7c3aed", "#db2777"];
const DEFAULT_PERIOD_DAYS = 30;

const state = {
  meta: null,
  view: "queue",
  loggingIn: false,
  communities: new Set(),
  queue: null,
  seq: { queue: 0, kpi: 0, report: 0 },
  report: null,
  reportKey: null,
  reportHtmlUrl: null,
  assigning: null,
};

/* ------------------------------------------------------------------ small helpers */

const $ = (id) => document.getElementById(id);

/** Build an element: h("td", {class: "num"}, "text", childNode, ...). Text is never HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const pct = (v, digits = 1) => (isNum(v) ? `${(v * 100).toFixed(digits)}%` : "—");
const num = (v, digits = 2) => (isNum(v) ? v.toFixed(digits) : "—");

function timezone() {
  return (state.meta && state.meta.timezone) || "Asia/Shanghai";
}

/** Today's date (YYYY-MM-DD) where the service's orders happen, not where the browser is. */
function today() {
  return new Intl.DateTimeFormat("en-CA", { timeZone: timezone() }).format(new Date());
}

function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const parts = new Intl.DateTimeFormat("zh-CN", {
    timeZone: timezone(), month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hour12: false,
  }).formatToParts(d);
  const get = (t) => (parts.find((p) => p.type === t) || {}).value || "";
  return `${get("month")}-${get("day")} ${get("hour")}:${get("minute")}`;
}

function label(table, key) {
  const m = state.meta && state.meta[table];
  return (m && m[key]) || key || "—";
}

function kpiDefs() {
  return (state.meta && state.meta.kpis) || [];
}

/* ------------------------------------------------------------------ API access */

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        if (d && typeof d === "object" && "msg" in d) {
          const loc = (d.loc || []).filter((x) => x !== "query" && x !== "body").join(".");
          return loc ? `${loc}: ${d.msg}` : d.msg;
        }
        return typeof d === "string" ? d : JSON.stringify(d);
      })
      .join("；");
  }
  return JSON.stringify(detail);
}

/** The Chinese message shown for a failed call (status 0: the network failed). */
function errorMessage(status, detail) {
  const d = detail ? `（${detail}）` : "";
  switch (status) {
    case 0:
      return "无法连接服务（网络错误）：请检查网络连接或服务是否正在运行，然后重试。";
    case 401:
      return "API 密钥无效或已被吊销（401）：请重新输入正确的密钥。";
    case 403:
      return "没有权限（403）：此密钥的角色不能使用质检看板，请使用质检（quality）或管理员（admin）角色的密钥。";
    case 404:
      return `未找到（404）${d}。`;
    case 409:
      return `操作冲突（409）${d}，请刷新后重试。`;
    case 422:
      return `请求参数有误（422）${d}。`;
    case 503:
      return `服务暂不可用（503）${d}：模型可能仍在加载，请稍后重试。`;
    default:
      return `服务出错（${status}）${d}，请稍后重试。`;
  }
}

async function api(path, { method = "GET", body = null, as = "json" } = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) throw new ApiError(401, errorMessage(401));
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== null) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === null ? null : JSON.stringify(body), cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, errorMessage(0));
  }
  if (!res.ok) {
    let detail = "";
    try {
      detail = detailText((await res.json()).detail);
    } catch (e) {
      detail = "";
    }
    throw new ApiError(res.status, errorMessage(res.status, detail));
  }
  return as === "text" ? res.text() : res.json();
}

/** Handle a failed call: a bad key ends the session; anything else is shown in the banner. */
function fail(err, where) {
  const status = err instanceof ApiError ? err.status : -1;
  const message = err instanceof ApiError ? err.message : `页面出错：${err}`;
  // a wrong key ends the session; while logging in, so do a wrong role and an unreachable
  // service (the key could not be checked): the user stays on the login form with the message
  if (status === 401 || (state.loggingIn && (status === 403 || status === 0))) {
    logout(message);
    return;
  }
  showError(where ? `${where}：${message}` : message);
}

function showError(message) {
  const el = $("global-error");
  el.textContent = message;
  el.hidden = !message;
}

let toastTimer = null;
function toast(message) {
  const el = $("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

function setBusy(button, busy) {
  if (!button) return;
  button.disabled = busy;
  button.classList.toggle("busy", busy);
}

/* ------------------------------------------------------------------ session and views */

function showLogin(message) {
  $("login-view").hidden = false;
  $("tabs").hidden = true;
  $("session").hidden = true;
  for (const v of VIEWS) $(`${v}-view`).hidden = true;
  showError("");
  const err = $("login-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("api-key").value = "";
  $("api-key").focus();
}

function logout(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.loggingIn = false;
  state.report = null;
  state.reportKey = null;
  clearViews();
  showLogin(message);
}

/** Forget what the last key was shown: the next user of this tab sees nothing of it. */
function clearViews() {
  clearQueue();
  $("queue-empty").hidden = true;
  for (const id of ["kpi-cards", "kpi-trend", "kpi-community-table", "report-summary"]) {
    $(id).replaceChildren();
  }
  $("kpi-meta").textContent = "";
  $("kpi-notice").hidden = true;
  $("report-summary-card").hidden = true;
  $("report-frame").removeAttribute("srcdoc");
  $("report-frame").classList.remove("loaded");
  $("report-empty").hidden = false;
  if (state.reportHtmlUrl) URL.revokeObjectURL(state.reportHtmlUrl);
  state.reportHtmlUrl = null;
  $("report-open").disabled = true;
  $("report-download").removeAttribute("href");
  $("report-download").setAttribute("aria-disabled", "true");
  $("session-text").textContent = "验证中…";
}

function currentView() {
  const v = (location.hash || "").replace("#", "");
  return VIEWS.includes(v) ? v : "queue";
}

async function showView(view) {
  state.view = view;
  $("login-view").hidden = true;
  $("tabs").hidden = false;
  $("session").hidden = false;
  for (const v of VIEWS) {
    $(`${v}-view`).hidden = v !== view;
    $(`tab-${v}`).classList.toggle("active", v === view);
    if (v === view) $(`tab-${v}`).setAttribute("aria-current", "page");
    else $(`tab-${v}`).removeAttribute("aria-current");
  }
  showError("");
  if (view === "queue") await loadQueue();
  else if (view === "kpi") await loadKpis();
  else await loadReport();
}

async function login(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  state.loggingIn = true;
  setBusy($("login-submit"), true);
  try {
    await showView(currentView());
  } finally {
    setBusy($("login-submit"), false);
    if (state.loggingIn && sessionStorage.getItem(KEY_STORAGE)) {
      state.loggingIn = false;
      $("session-text").textContent = "密钥已验证";
    }
  }
}

function rememberCommunities(ids) {
  let added = false;
  for (const id of ids) {
    if (id && !state.communities.has(id)) {
      state.communities.add(id);
      added = true;
    }
  }
  if (!added) return;
  const list = $("community-list");
  list.replaceChildren(...[...state.communities].sort().map((c) => h("option", { value: c })));
}

/* ------------------------------------------------------------------ 今日质检队列 */

async function loadQueue() {
  const day = $("queue-date").value || today();
  $("queue-date").value = day;
  const community = $("queue-community").value.trim();
  const q = new URLSearchParams({ date: day });
  if (community) q.set("community", community);
  const seq = ++state.seq.queue;
  setBusy($("queue-load"), true);
  try {
    const data = await api(`/v1/inspections/queue?${q}`);
    if (seq !== state.seq.queue) return; // a newer query was sent meanwhile: its answer wins
    state.queue = data;
    renderQueue(data);
  } catch (err) {
    if (seq !== state.seq.queue) return;
    clearQueue();
    if (err instanceof ApiError && err.status === 404 && community) {
      showError(`小区“${community}”没有任何工单（404）：请检查小区编号，或清空以查看全部小区。`);
    } else {
      fail(err, "加载质检队列失败");
    }
  } finally {
    if (seq === state.seq.queue) setBusy($("queue-load"), false);
  }
}

/** No rows, no counts: after a failed query the page must not show another query's queue. */
function clearQueue() {
  state.queue = null;
  $("queue-body").replaceChildren();
  $("queue-stats").replaceChildren();
  $("queue-meta").textContent = "";
  $("queue-empty").textContent = "查询未成功，暂无数据。";
  $("queue-empty").hidden = false;
}

function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, label("statuses", status));
}

function priorityBadge(priority) {
  return h("span", { class: `badge prio-${priority}` }, label("priorities", priority));
}

function riskCell(v, scale = 1) {
  const w = isNum(v) ? Math.max(0, Math.min(1, v / scale)) * 100 : 0;
  return h(
    "td", { class: "num risk" },
    h("span", { class: "meter", "aria-hidden": "true" }, h("span", { style: `width:${w.toFixed(1)}%` })),
    h("span", { class: "val" }, scale === 1 ? pct(v) : num(v, 3)),
  );
}

function reasonsCell(item) {
  const why = (item.inspection_reasons || []).map((r) =>
    h("li", { class: "why" },
      h("span", { class: `tag src-${r.source}` }, label("reason_sources", r.source)),
      " ", r.text || r.code));
  const model = (item.reasons || []).slice(0, 3).map((r) => h("li", { class: "model" }, r.text || r.code));
  return h("td", { class: "reasons" },
    why.length ? h("ul", { class: "why-list" }, why) : null,
    model.length ? h("ul", { class: "model-list", title: "模型给出的主要风险因素" }, model) : null);
}

function renderQueue(data) {
  const items = data.items || [];
  rememberCommunities([data.community, ...items.map((i) => i.community_id)]);
  const counts = data.counts || {};
  const stat = (key, text, cls) => h("div", { class: `stat ${cls}`, dataset: { count: key } },
    h("div", { class: "stat-value" }, isNum(counts[key]) ? counts[key] : "—"),
    h("div", { class: "stat-label" }, text));
  $("queue-stats").replaceChildren(
    h("div", { class: "stat neutral", dataset: { count: "capacity" } },
      h("div", { class: "stat-value" }, isNum(data.capacity) ? data.capacity : "—"),
      h("div", { class: "stat-label" }, "每日质检容量")),
    stat("open", label("statuses", "open"), "open"),
    stat("assigned", label("statuses", "assigned"), "assigned"),
    stat("overdue", label("statuses", "overdue"), "overdue"),
    stat("done", label("statuses", "done"), "done"),
  );
  const overflow = isNum(data.overflow) && data.overflow > 0 ? ` · 另有 ${data.overflow} 单超出当日容量` : "";
  $("queue-meta").textContent =
    `${data.community ? `小区 ${data.community}` : "全部小区"} · ${data.date || ""} · 共 ${items.length} 单${overflow}`;
  const maxHarm = Math.max(1e-9, ...items.map((i) => (isNum(i.expected_harm) ? i.expected_harm : 0)));
  const rows = items.map((item, idx) => {
    const canAssign = item.status === "open" || item.status === "overdue" || item.status === "assigned";
    const assign = canAssign
      ? h("button", {
        type: "button", class: "btn small assign", dataset: { order: item.order_id },
        onclick: () => openAssign(item),
      }, item.status === "assigned" ? "改派" : "指派")
      : h("span", { class: "muted small" }, "—");
    return h("tr", {
      dataset: { orderId: item.order_id, status: item.status, harm: String(item.expected_harm) },
      class: `row-${item.status}`,
    },
    h("td", { class: "num muted" }, idx + 1),
    h("td", {}, h("div", { class: "strong mono" }, item.order_id),
      h("div", { class: "muted small" }, item.community_id)),
    h("td", {}, h("div", {}, label("categories", item.category)), priorityBadge(item.priority)),
    h("td", { class: "mono" }, item.technician_id || "—"),
    h("td", { class: "nowrap" }, fmtTime(item.completed_at)),
    riskCell(item.rework_risk),
    riskCell(item.dissatisfaction_prob),
    h("td", { class: "num" }, num(item.severity, 1)),
    riskCell(item.expected_harm, maxHarm),
    h("td", { class: "status-cell" }, statusBadge(item.status),
      item.assignee ? h("div", { class: "small assignee" }, `质检员：${item.assignee}`) : null,
      item.due_at ? h("div", { class: `small ${item.status === "overdue" ? "danger" : "muted"}` },
        `截止 ${fmtTime(item.due_at)}`) : null),
    reasonsCell(item),
    h("td", {}, assign));
  });
  $("queue-body").replaceChildren(...rows);
  $("queue-empty").textContent = "该日期没有需要质检的工单。";
  $("queue-empty").hidden = rows.length > 0;
}

function openAssign(item) {
  state.assigning = item;
  $("assign-order").textContent =
    `工单 ${item.order_id} · ${label("categories", item.category)} · ${item.community_id}`;
  $("assign-inspector").value = item.assignee || "";
  $("assign-error").hidden = true;
  $("assign-dialog").showModal();
  $("assign-inspector").focus();
}

async function confirmAssign(ev) {
  ev.preventDefault();
  const item = state.assigning;
  const inspector = $("assign-inspector").value.trim();
  if (!item) return;
  if (!inspector) {
    $("assign-error").textContent = "请填写质检员。";
    $("assign-error").hidden = false;
    return;
  }
  setBusy($("assign-confirm"), true);
  try {
    await api(`/v1/inspections/${encodeURIComponent(item.order_id)}/assign`, {
      method: "POST", body: { inspector },
    });
    $("assign-dialog").close();
    toast(`已将工单 ${item.order_id} 指派给 ${inspector}`);
    await loadQueue();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $("assign-dialog").close();
      fail(err);
      return;
    }
    $("assign-error").textContent = err instanceof ApiError ? err.message : String(err);
    $("assign-error").hidden = false;
  } finally {
    setBusy($("assign-confirm"), false);
  }
}

/* ------------------------------------------------------------------ report data (KPI + 报告) */

function periodInputs(prefix) {
  return { from: $(`${prefix}-from`), to: $(`${prefix}-to`), community: $(`${prefix}-community`) };
}

/** Both period views share one period: copy it into this view's inputs. */
function syncPeriod(prefix) {
  const p = periodInputs(prefix);
  const shared = state.period || { from: addDays(today(), 1 - DEFAULT_PERIOD_DAYS), to: today(), community: "" };
  state.period = shared;
  p.from.value = shared.from;
  p.to.value = shared.to;
  p.community.value = shared.community;
}

/** A quick period ending today (the last ``days`` days) or the previous calendar month. */
function presetPeriod(button) {
  const end = today();
  if (button.dataset.month === "previous") {
    const first = `${end.slice(0, 7)}-01`;
    const last = addDays(first, -1);
    return { from: `${last.slice(0, 7)}-01`, to: last };
  }
  return { from: addDays(end, 1 - Number(button.dataset.days)), to: end };
}

function readPeriod(prefix) {
  const p = periodInputs(prefix);
  state.period = { from: p.from.value, to: p.to.value, community: p.community.value.trim() };
  return state.period;
}

function reportQuery(period) {
  const q = new URLSearchParams({ from: period.from, to: period.to });
  if (period.community) q.set("community", period.community);
  return q.toString();
}

/** The report JSON of a period; reused between the two views unless ``fresh`` (查询 clicked). */
async function fetchReport(period, fresh = false) {
  const key = reportQuery(period);
  if (!fresh && state.reportKey === key && state.report) return state.report;
  const data = await api(`/v1/reports/improvement?${key}`);
  state.report = data;
  state.reportKey = key;
  const byCommunity = (data.kpis && data.kpis.by_community) || {};
  rememberCommunities(Object.keys(byCommunity));
  return data;
}

function validPeriod(period) {
  if (!period.from || !period.to) return "请选择开始日期和结束日期。";
  if (period.to < period.from) return "结束日期不能早于开始日期。";
  return "";
}

/* ------------------------------------------------------------------ KPI 看板 */

async function loadKpis(fromInputs = false) {
  if (fromInputs) readPeriod("kpi");
  else syncPeriod("kpi");
  const period = state.period;
  const bad = validPeriod(period);
  if (bad) { showError(bad); return; }
  const seq = ++state.seq.kpi;
  setBusy($("kpi-load"), true);
  try {
    const report = await fetchReport(period, fromInputs);
    if (seq !== state.seq.kpi) return;
    renderKpis(report);
  } catch (err) {
    if (seq === state.seq.kpi) fail(err, "加载 KPI 失败");
  } finally {
    if (seq === state.seq.kpi) setBusy($("kpi-load"), false);
  }
}

function changeBadge(change, current) {
  if (!isNum(current) && current !== undefined) return h("span", { class: "delta flat" }, "本期无可计算工单");
  if (!isNum(change)) return h("span", { class: "delta flat" }, "上期无数据，无法比较");
  const pp = change * 100;
  const cls = pp > 0.05 ? "up" : pp < -0.05 ? "down" : "flat";
  const arrow = cls === "up" ? "▲" : cls === "down" ? "▼" : "■";
  return h("span", { class: `delta ${cls}` }, `${arrow} ${pp >= 0 ? "+" : ""}${pp.toFixed(1)} 个百分点`);
}

function trendSeries(report, key) {
  const trend = report.trend || {};
  return Object.keys(trend).sort().map((m) => [m, trend[m] ? trend[m][key] : null]);
}

function sparkline(points, color) {
  const vals = points.map((p) => p[1]).filter(isNum);
  const w = 160, hgt = 36;
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, "aria-hidden": "true" });
  if (vals.length < 2) return svg;
  const lo = Math.min(...vals), hi = Math.max(...vals);
  const span = hi - lo || 0.01;
  const n = points.length;
  const pts = points
    .map(([, v], i) => (isNum(v) ? `${((i / (n - 1)) * (w - 4) + 2).toFixed(1)},${(hgt - 3 - ((v - lo) / span) * (hgt - 6)).toFixed(1)}` : null))
    .filter(Boolean);
  svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round" }));
  return svg;
}

function renderKpis(report) {
  const overall = (report.kpis && report.kpis.overall) || {};
  const fractions = (report.fractions && report.fractions.overall) || {};
  const previous = (report.previous && report.previous.overall) || {};
  const changes = (report.changes && report.changes.overall) || {};
  const counts = (report.counts && report.counts.current) || {};
  const period = report.period || {};
  $("kpi-meta").textContent = `${report.community ? `小区 ${report.community} · ` : "全部小区 · "}本期工单 ${isNum(counts.orders) ? counts.orders : "—"} 单`;

  const notice = $("kpi-notice");
  const dataEnd = report.source && report.source.data_end ? String(report.source.data_end).slice(0, 10) : "";
  if (counts.orders === 0 && dataEnd) {
    const button = h("button", {
      type: "button", class: "btn small", onclick: () => {
        state.period = { ...state.period, from: addDays(dataEnd, 1 - DEFAULT_PERIOD_DAYS), to: dataEnd };
        loadKpis();
      },
    }, `查看 ${dataEnd} 前 ${DEFAULT_PERIOD_DAYS} 天`);
    notice.replaceChildren(`所选期间没有报修工单；数据截至 ${dataEnd}。`, button);
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }

  // a KPI this source cannot measure (the store holds completed orders only: completion rate)
  const unavailable = report.unavailable || {};
  const cards = kpiDefs().map((def, i) => {
    const f = fractions[def.key] || {};
    const why = unavailable[def.key];
    return h("div", { class: "card kpi", dataset: { kpi: def.key }, title: why ? `${def.definition_zh}\n${why}` : def.definition_zh },
      h("div", { class: "kpi-head" },
        h("span", { class: "kpi-name" }, def.name_zh),
        h("span", { class: "kpi-key muted" }, def.key)),
      h("div", { class: "kpi-value" }, pct(overall[def.key])),
      why ? h("div", { class: "kpi-note muted small", dataset: { unavailable: def.key } }, why) : null,
      h("div", { class: "kpi-sub" }, changeBadge(changes[def.key], overall[def.key])),
      h("div", { class: "kpi-foot muted small" },
        h("span", {}, `上期 ${pct(previous[def.key])}`),
        h("span", {}, isNum(f.denominator) ? `${f.numerator} / ${f.denominator}` : "")),
      sparkline(trendSeries(report, def.key), TREND_COLORS[i % TREND_COLORS.length]));
  });
  $("kpi-cards").replaceChildren(...cards);
  $("kpi-trend").replaceChildren(trendChart(report, $("kpi-trend").clientWidth));
  $("kpi-community-table").replaceChildren(...communityTable(report));
  if (period.from) $("kpi-meta").title = `统计期间 ${period.from} — ${period.to}`;
}

/** A line chart of the five KPIs by month, drawn at the container's width (text stays 12px). */
function trendChart(report, width) {
  const months = Object.keys(report.trend || {}).sort();
  if (!months.length) return h("p", { class: "empty" }, "暂无趋势数据。");
  const defs = kpiDefs();
  const W = Math.max(560, Math.round(width || 960)), H = 300, L = 48, R = 36, T = 16, B = 36;
  const all = [];
  for (const m of months) for (const d of defs) if (isNum(report.trend[m][d.key])) all.push(report.trend[m][d.key]);
  if (!all.length) return h("p", { class: "empty" }, "暂无趋势数据。");
  const lo = Math.max(0, Math.floor((Math.min(...all) - 0.02) * 10) / 10);
  const hi = Math.min(1, Math.ceil((Math.max(...all) + 0.001) * 10) / 10);
  const x = (i) => L + (months.length > 1 ? (i / (months.length - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (v) => T + (1 - (v - lo) / (hi - lo || 1)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "trend-svg", role: "img", "aria-label": "五项指标月度趋势" });
  const steps = Math.round((hi - lo) / 0.1) <= 2 ? 0.05 : 0.1;
  for (let v = lo; v <= hi + 1e-9; v += steps) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", class: "axis" }, pct(v, 0)));
  }
  const every = Math.ceil(months.length / 12);
  months.forEach((m, i) => {
    if (i % every === 0) svg.append(s("text", { x: x(i), y: H - 12, "text-anchor": "middle", class: "axis" }, m));
  });
  defs.forEach((d, k) => {
    const color = TREND_COLORS[k % TREND_COLORS.length];
    const pts = months.map((m, i) => [i, report.trend[m][d.key]]).filter(([, v]) => isNum(v));
    if (!pts.length) return;
    svg.append(s("polyline", {
      points: pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2.5, "stroke-linejoin": "round", "data-kpi": d.key,
    }));
    for (const [i, v] of pts) {
      svg.append(s("circle", { cx: x(i), cy: y(v), r: 3.5, fill: "#fff", stroke: color, "stroke-width": 2 },
        s("title", {}, `${d.name_zh} ${months[i]}：${pct(v)}`)));
    }
  });
  const legend = h("div", { class: "legend" }, defs.map((d, k) =>
    h("span", {}, h("i", { style: `background:${TREND_COLORS[k % TREND_COLORS.length]}` }), d.name_zh)));
  return h("div", {}, legend, svg);
}

function communityTable(report) {
  const by = (report.kpis && report.kpis.by_community) || {};
  const fr = (report.fractions && report.fractions.by_community) || {};
  const ch = (report.changes && report.changes.by_community) || {};
  const defs = kpiDefs();
  const head = h("thead", {}, h("tr", {}, h("th", {}, "小区 / 项目"),
    defs.map((d) => h("th", { class: "num" }, d.name_zh)), h("th", { class: "num" }, "工单数")));
  const ids = Object.keys(by).sort();
  if (!ids.length) {
    return [head, h("tbody", {}, h("tr", {}, h("td", { colspan: defs.length + 2, class: "empty" }, "本期没有数据。")))];
  }
  const rows = ids.map((c) => h("tr", {
    class: "clickable", dataset: { community: c }, title: `查看 ${c}`,
    onclick: () => {
      state.period = { ...state.period, community: c };
      window.scrollTo({ top: 0, behavior: "smooth" }); // the cards above show the community
      loadKpis();
    },
  },
  h("td", { class: "strong mono" }, c),
  defs.map((d) => {
    const change = ch[c] ? ch[c][d.key] : null;
    const cls = isNum(change) ? (change > 0.0005 ? "up" : change < -0.0005 ? "down" : "flat") : "flat";
    return h("td", { class: "num" }, pct(by[c][d.key]),
      isNum(change) ? h("span", { class: `delta mini ${cls}` }, ` ${change >= 0 ? "+" : ""}${(change * 100).toFixed(1)}`) : null);
  }),
  h("td", { class: "num" }, fr[c] && fr[c].completion_rate ? fr[c].completion_rate.denominator : "—")));
  return [head, h("tbody", {}, rows)];
}

/* ------------------------------------------------------------------ 改进报告 */

async function loadReport(fromInputs = false) {
  if (fromInputs) readPeriod("report");
  else syncPeriod("report");
  const period = state.period;
  const bad = validPeriod(period);
  if (bad) { showError(bad); return; }
  const seq = ++state.seq.report;
  setBusy($("report-load"), true);
  try {
    // one after the other: the page is rendered from the report the JSON call just built
    const report = await fetchReport(period, fromInputs);
    const page = await api(`/v1/reports/improvement.html?${reportQuery(period)}`, { as: "text" });
    if (seq !== state.seq.report) return;
    renderReportSummary(report);
    showReportPage(page);
  } catch (err) {
    if (seq === state.seq.report) fail(err, "加载改进报告失败");
  } finally {
    if (seq === state.seq.report) setBusy($("report-load"), false);
  }
}

function showReportPage(page) {
  // shown in a sandboxed frame (no scripts run in it) and offered as a file to open or save
  $("report-frame").srcdoc = page;
  $("report-frame").classList.add("loaded");
  $("report-empty").hidden = true;
  if (state.reportHtmlUrl) URL.revokeObjectURL(state.reportHtmlUrl);
  state.reportHtmlUrl = URL.createObjectURL(new Blob([page], { type: "text/html;charset=utf-8" }));
  $("report-open").disabled = false;
  const dl = $("report-download");
  dl.href = state.reportHtmlUrl;
  dl.removeAttribute("aria-disabled");
  const p = state.period;
  dl.download = `改进报告_${p.community || "全部"}_${p.from}_${p.to}.html`;
}

function renderReportSummary(report) {
  const c = (report.counts && report.counts.current) || {};
  const overall = (report.kpis && report.kpis.overall) || {};
  const changes = (report.changes && report.changes.overall) || {};
  const p = report.period || {};
  const lastDay = p.to ? addDays(String(p.to).slice(0, 10), -1) : "";
  const scope = report.community ? `小区 ${report.community}` : "全部小区";
  $("report-period").textContent = p.from ? `${scope} · 统计期间 ${String(p.from).slice(0, 10)} 至 ${lastDay}` : scope;
  const facts = h("div", { class: "facts" },
    [["本期工单", c.orders], ["已完工", c.completed], ["已取消", c.cancelled], ["有评价", c.rated]]
      .map(([t, v]) => h("div", { class: "fact" }, h("b", {}, isNum(v) ? v : "—"), h("span", {}, t))));
  const sorted = kpiDefs()
    .filter((d) => isNum(changes[d.key]))
    .sort((a, b) => changes[a.key] - changes[b.key]);
  const worst = sorted.length && changes[sorted[0].key] < 0 ? sorted[0] : null;
  const best = sorted.length && changes[sorted[sorted.length - 1].key] > 0 ? sorted[sorted.length - 1] : null;
  const bullets = [];
  for (const d of kpiDefs()) {
    bullets.push(h("li", { dataset: { kpi: d.key } }, h("b", {}, d.name_zh), `：${pct(overall[d.key])} `, changeBadge(changes[d.key], overall[d.key])));
  }
  const lines = [];
  if (worst) lines.push(h("p", { class: "callout down" }, `下降最多：${worst.name_zh}（${(changes[worst.key] * 100).toFixed(1)} 个百分点），建议优先整改。`));
  if (best) lines.push(h("p", { class: "callout up" }, `提升最多：${best.name_zh}（+${(changes[best.key] * 100).toFixed(1)} 个百分点）。`));
  const extra = reportExtras(report);
  $("report-summary").replaceChildren(facts, h("ul", { class: "kpi-list" }, bullets), ...lines, ...extra);
  $("report-summary-card").hidden = false;
}

/** Sections beyond the KPIs, each shown only when the report carries it (the report's own
 * page, embedded below, has everything; these are the parts a team acts on first). */
function reportExtras(report) {
  const boxes = [];
  const box = (title, key, body, note) => h("div", { class: "section-box", dataset: { section: key } },
    h("h3", {}, title, note ? h("span", { class: "muted small" }, ` ${note}`) : null), body);
  const list = (rows, cls = "") => h("ul", { class: `plain ${cls}` }, rows);
  const PRIO = { high: "高", medium: "中", low: "低" };

  const recs = Array.isArray(report.recommendations) ? report.recommendations : [];
  if (recs.length) {
    boxes.push(box("建议整改事项", "recommendations", list(recs.slice(0, 8).map((r) => h("li", {},
      h("span", { class: `badge prio-${r.priority || "low"}` }, PRIO[r.priority] || r.priority || "—"),
      " ", typeof r === "string" ? r : (r.title_zh || r.title || r.code),
      r.owner_hint ? h("span", { class: "muted small" }, ` · 建议负责：${r.owner_hint}`) : null))),
    recs.length > 8 ? `（共 ${recs.length} 项，前 8 项）` : `（共 ${recs.length} 项）`));
  }
  const rect = report.rectification && report.rectification.rectifications;
  if (rect && rect.available) {
    const overdue = rect.overdue || [];
    boxes.push(box("逾期整改", "rectification", overdue.length
      ? list(overdue.slice(0, 6).map((r) => h("li", {}, h("b", {}, r.title || r.rectification_id),
        h("span", { class: "muted small" }, ` · ${r.owner || "—"} · 逾期 ${r.days_overdue} 天`))))
      : h("p", { class: "muted" }, `没有逾期的整改事项（进行中 ${rect.open ?? 0} 项）。`)));
  }
  const hot = report.hotspots;
  if (hot && hot.available && Array.isArray(hot.hotspot_units)) {
    boxes.push(box("返修热点房屋", "hotspots", hot.hotspot_units.length
      ? list(hot.hotspot_units.slice(0, 6).map((u) => h("li", {}, h("b", { class: "mono" }, u.unit_id),
        ` ${u.community_id || ""} · 复报 ${u.repeat_orders} 次 · `,
        (u.categories || []).map((c) => label("categories", c)).join("、"))))
      : h("p", { class: "muted" }, "本期没有返修热点房屋。"),
    isNum(hot.repeat_orders) ? `（本期返修复报 ${hot.repeat_orders} 单）` : ""));
  }
  const drivers = report.drivers;
  if (drivers && drivers.available) {
    const rows = drivers.rework_risk || drivers.rework || drivers.combined || [];
    if (rows.length) {
      boxes.push(box("返修风险主要驱动因素", "drivers",
        list(rows.slice(0, 5).map((r) => h("li", {}, r.text || r.name_zh || r.feature || r.code)), "numbered")));
    }
  }
  const comments = report.comments;
  if (comments && comments.available && Array.isArray(comments.themes) && comments.themes.length) {
    boxes.push(box("差评主题", "comments", h("div", { class: "chips" },
      comments.themes.slice(0, 10).map((t) => h("span", { class: "chip" }, t.keyword,
        h("small", {}, ` ${t.n_negative}`)))),
    isNum(comments.negative_comments) ? `（差评 ${comments.negative_comments} 条）` : ""));
  }
  return boxes.length ? [h("div", { class: "sections" }, boxes)] : [];
}

/* ------------------------------------------------------------------ start */

async function loadMeta() {
  try {
    const res = await fetch("/dashboard/meta", { cache: "no-store" });
    if (!res.ok) throw new Error(String(res.status));
    state.meta = await res.json();
  } catch (e) {
    state.meta = null;
    showError(errorMessage(0));
  }
}

function bind() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      $("login-error").textContent = "请输入 API 密钥。";
      $("login-error").hidden = false;
      return;
    }
    login(key);
  });
  $("logout").addEventListener("click", () => logout(""));
  $("queue-load").addEventListener("click", () => loadQueue());
  $("queue-date").addEventListener("change", () => loadQueue());
  $("queue-community").addEventListener("keydown", (ev) => { if (ev.key === "Enter") loadQueue(); });
  $("kpi-load").addEventListener("click", () => loadKpis(true));
  $("report-load").addEventListener("click", () => loadReport(true));
  $("report-open").addEventListener("click", () => {
    if (state.reportHtmlUrl) window.open(state.reportHtmlUrl, "_blank", "noopener");
  });
  for (const group of document.querySelectorAll(".presets")) {
    group.addEventListener("click", (ev) => {
      const button = ev.target.closest("button");
      if (!button) return;
      const view = group.dataset.view;
      const community = $(`${view}-community`).value.trim();
      state.period = { ...presetPeriod(button), community };
      syncPeriod(view);
      if (view === "kpi") loadKpis(true);
      else loadReport(true);
    });
  }
  $("assign-form").addEventListener("submit", confirmAssign);
  $("assign-cancel").addEventListener("click", () => $("assign-dialog").close());
  window.addEventListener("hashchange", () => {
    if (sessionStorage.getItem(KEY_STORAGE)) showView(currentView());
  });
}

async function start() {
  bind();
  $("queue-date").value = today();
  await loadMeta();
  $("queue-date").value = today();
  if (sessionStorage.getItem(KEY_STORAGE)) {
    await login(sessionStorage.getItem(KEY_STORAGE));
  } else {
    showLogin("");
  }
}

document.addEventListener("DOMContentLoaded", start);
