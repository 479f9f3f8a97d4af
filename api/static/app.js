// thinkgate's page: one chat over the public API (streaming /v1/chat/completions, /v1/documents,
// /v1/threads, /healthz). Everything the server sends is shown as text (textContent, never HTML);
// the page's CSP allows scripts and styles from this origin only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { threadId: null, busy: false, turns: 0, healthTimer: null };

// ---------- small DOM helpers (text only) ----------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);  // strings become text nodes
  return e;
}
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}
const fmt = (x, d = 2) => (typeof x === "number" && isFinite(x) ? x.toFixed(d) : "–");

function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

// ---------- HTTP ----------
function headers(admin = false) {
  const h = { "Content-Type": "application/json" };
  const key = (admin && $("admin-key").value.trim()) || $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function errorText(resp) {
  let msg = resp.statusText || "request failed";
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch (_) { /* not JSON */ }
  return `${resp.status}: ${msg}`;
}
async function api(method, path, body, admin = false) {
  let resp;
  try {
    resp = await fetch(path, { method, headers: headers(admin), body: body ? JSON.stringify(body) : undefined });
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp.json();
}

// ---------- health and the demo index's build ----------
async function pollHealth() {
  clearTimeout(state.healthTimer);
  let again = false;
  try {
    const resp = await fetch("/healthz", { headers: headers() });
    if (resp.status === 401) $("health").textContent = "health: needs an API key";
    else if (!resp.ok) $("health").textContent = "health: " + (await errorText(resp));
    else {
      const h = await resp.json();
      const ix = h.index;
      if (ix && ix.state === "building") {
        const eta = ix.eta_s == null ? "" : `, about ${Math.ceil(ix.eta_s)} s left`;
        $("health").textContent = `indexing the demo documents: ${ix.files_done}/${ix.files_total} files, ` +
          `${ix.chunks} chunks${eta}`;
        again = true;
      } else if (ix && ix.state === "failed") {
        $("health").textContent = `index build failed; ${h.chunks} chunks searchable`;
      } else {
        $("health").textContent = `ready · ${h.chunks} chunks`;
      }
    }
  } catch (e) {
    $("health").textContent = "server unreachable";
    again = true;
  }
  if (again) state.healthTimer = setTimeout(pollHealth, 2000);
}
async function loadModel() {
  try {
    const m = await api("GET", "/v1/models");
    $("model").textContent = m.data.map((x) => x.id).join(", ");
  } catch (e) {
    $("model").textContent = "";
  }
}

// ---------- documents ----------
async function loadDocs() {
  const list = $("docs");
  try {
    const docs = await api("GET", "/v1/documents");
    list.replaceChildren(...docs.data.map((d) => {
      const del = el("button", { type: "button", class: "small", "aria-label": "delete " + d.source, text: "Delete" });
      del.addEventListener("click", () => deleteDoc(d, del));
      return el("li", { "data-source": d.source }, el("span", { class: "doc-name", text: d.source }),
        el("span", { class: "muted", text: ` ${d.chunks} chunks ` }), del);
    }));
    if (!docs.data.length) list.replaceChildren(el("li", { class: "muted", text: "no documents" }));
  } catch (e) {
    list.replaceChildren(el("li", { class: "muted", text: "documents: " + e.message }));
  }
}
async function deleteDoc(doc, button) {
  button.disabled = true;
  try {
    await api("DELETE", "/v1/documents/" + encodeURIComponent(doc.id), null, true);
    $("doc-status").textContent = `deleted ${doc.source}`;
    await loadDocs();
  } catch (e) {
    $("doc-status").textContent = "";
    showError("Deleting failed: " + e.message);
    button.disabled = false;
  }
}
const FORMATS = { txt: "txt", md: "md", markdown: "md", rst: "rst", html: "html", htm: "html" };
async function uploadDoc() {
  const input = $("upload");
  const file = input.files && input.files[0];
  if (!file) return;
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  const format = FORMATS[ext];
  if (!format) { showError(`Cannot add ${file.name}: only txt, md, rst and html files`); input.value = ""; return; }
  input.disabled = true;
  $("doc-status").textContent = `adding ${file.name}…`;
  try {
    const out = await api("POST", "/v1/documents", { source: file.name, text: await file.text(), format }, true);
    $("doc-status").textContent = `added ${out.source} (${out.chunks} chunks)`;
    showError("");
    await loadDocs();
  } catch (e) {
    $("doc-status").textContent = "";
    showError("Adding the document failed: " + e.message);
  } finally {
    input.disabled = false;
    input.value = "";
  }
}

// ---------- one turn's view ----------
const EXIT = {
  certain: "stopped: the probe's answer was certain (entropy ≤ τ_exit)",
  budget: "stopped: the thinking budget ran out",
  model_closed: "stopped: the model closed </think>",
  model_ended: "stopped: the model ended its turn",
};
const TRIGGER = { question: "the question", model: "<search> in the reasoning", entropy: "an uncertain step (entropy > τ_retrieve)" };

function entropyChart(values, tau, label) {
  const w = 260, h = 64, pad = 2;
  const top = Math.max(tau * 1.4, ...values, 0.5);
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", class: "chart" });
  const t = svg("title");
  t.textContent = `${label}: ${values.map((v) => fmt(v)).join(", ")} nats; τ = ${fmt(tau)}`;
  s.append(t);
  const bw = (w - 2 * pad) / Math.max(values.length, 1);
  values.forEach((v, i) => {
    const bh = Math.max(1, (v / top) * (h - 2 * pad));
    s.append(svg("rect", { x: pad + i * bw + 0.5, y: h - pad - bh, width: Math.max(1, bw - 1), height: bh,
      class: v > tau ? "bar over" : "bar" }));
  });
  const y = h - pad - (tau / top) * (h - 2 * pad);
  s.append(svg("line", { x1: 0, x2: w, y1: y, y2: y, class: "tau" }));
  const tx = svg("text", { x: w - 4, y: Math.max(10, y - 3), "text-anchor": "end", class: "tau-label" });
  tx.textContent = `τ ${fmt(tau)}`;
  s.append(tx);
  s.setAttribute("aria-label", t.textContent);
  return s;
}

function answerWithCitations(text, view) {
  // "[n]" becomes a link to passage n of this turn; the rest stays text
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    out.push(text.slice(last, m.index));
    const n = m[1];
    const a = el("a", { href: `#src-${view.id}-${n}`, class: "cite", text: `[${n}]` });
    a.addEventListener("click", (ev) => {
      const target = document.getElementById(`src-${view.id}-${n}`);
      if (target) { ev.preventDefault(); target.open = true; target.scrollIntoView({ block: "nearest" }); }
    });
    out.push(a);
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function newTurn(question) {
  const id = "t" + (++state.turns);
  const view = { id, answer: "", reasoning: "" };
  view.answerBox = el("div", { class: "answer" });
  view.live = el("pre", { class: "reasoning-live" });
  view.thinking = el("details", { class: "reasoning", hidden: "" }, el("summary", { text: "thinking…" }), view.live);
  view.meta = el("div", { class: "meta" });
  view.status = el("div", { class: "turn-status muted", text: "waiting for the server…" });
  view.root = el("article", { class: "turn", id },
    el("div", { class: "user", text: question }),
    el("div", { class: "assistant" }, view.status, view.thinking, view.answerBox, view.meta));
  $("log").append(view.root);
  view.root.scrollIntoView({ block: "end" });
  return view;
}

function addContent(view, text) {
  view.answer += text;
  view.answerBox.textContent = view.answer;
}
function addReasoning(view, text) {
  view.reasoning += text;
  view.thinking.hidden = false;
  view.live.textContent = view.reasoning;
}

function renderDone(view, tg, usage) {
  view.status.remove();
  const d = tg.decision === "think" ? (tg.votes ? "voted" : "thought") : "answered at once";
  const badge = el("div", { class: "badges" },
    el("span", { class: "badge " + d.split(" ")[0], text: d }), el("span", { class: "reason", text: tg.reason }));
  view.thinking.before(badge);  // the decision first, then the reasoning, the answer and the rest
  // the gate's draft against τ_think
  const ents = (tg.draft && tg.draft.entropies) || [];
  if (ents.length) {
    const e = tg.entropy || {};
    view.meta.append(el("div", { class: "gate" },
      el("span", { class: "muted", text: `draft: ${ents.length} tokens, mean entropy ${fmt(e.mean)} nats vs τ_think ${fmt(tg.thresholds.tau_think)}` }),
      entropyChart(ents, tg.thresholds.tau_think, "draft token entropies")));
  }
  // the reasoning: steps, probes, why it stopped
  if (tg.decision === "think") {
    const steps = tg.steps || [];
    const ntok = tg.tokens.reasoning + tg.tokens.probe;
    const why = EXIT[tg.exit_reason] || (tg.exit_reason ? "stopped: " + tg.exit_reason : "");
    view.thinking.hidden = false;
    view.thinking.querySelector("summary").textContent =
      `Thought for ${ntok} tokens · ${steps.length} step${steps.length === 1 ? "" : "s"}` + (why ? ` · ${why}` : "");
    const list = el("ol", { class: "steps" });
    for (const s of steps) {
      const li = el("li", { class: "step" },
        el("div", { class: "muted", text: `step ${s.n}: ${s.tokens} tokens, mean entropy ${fmt(s.entropy)} nats` }),
        el("pre", { text: s.text }));
      if (s.search) li.append(el("div", { class: "search", text: `searched (${TRIGGER[s.search.trigger] || s.search.trigger}): ${s.search.query}` }));
      if (s.probe) {
        const ok = s.probe.entropy <= tg.thresholds.tau_exit;
        li.append(el("div", { class: "probe " + (ok ? "certain" : "uncertain"),
          text: `probe answer “${s.probe.text.trim()}”: entropy ${fmt(s.probe.entropy)} ${ok ? "≤" : ">"} τ_exit ${fmt(tg.thresholds.tau_exit)}` }));
      }
      list.append(li);
    }
    view.live.remove();
    view.thinking.append(list);
    if (tg.votes) {
      const v = tg.votes;
      view.thinking.append(el("div", { class: "muted", text: `vote over ${(v.samples || []).length} samples: chosen ${JSON.stringify(v.chosen)} (${v.why || v.stopped || ""})` }));
    }
  }
  // the answer with its citations linked
  view.answerBox.replaceChildren(...answerWithCitations(view.answer, view));
  // retrievals and sources
  const sources = tg.sources || [];
  if ((tg.retrievals || []).length) {
    const rl = el("ul", { class: "retrievals" });
    for (const r of tg.retrievals) {
      rl.append(el("li", { text: `search for “${r.query}” (trigger: ${TRIGGER[r.trigger] || r.trigger}) → ` +
        (r.passages && r.passages.length ? r.passages.map((n) => `[${n}]`).join(" ") : "no new passages") }));
    }
    view.meta.append(el("details", { class: "retrieval-list" }, el("summary", { text: `${tg.retrievals.length} retrieval${tg.retrievals.length === 1 ? "" : "s"}` }), rl));
  }
  if (sources.length) {
    const box = el("div", { class: "sources" }, el("div", { class: "muted", text: "Sources" }));
    for (const s of sources) {
      box.append(el("details", { id: `src-${view.id}-${s.n}`, class: "source" + (s.cited ? " cited" : "") },
        el("summary", {}, el("span", { class: "src-n", text: `[${s.n}] ` }), el("span", { class: "src-path", text: s.source }),
          el("span", { class: "muted", text: ` — ${s.heading} · score ${fmt(s.score, 3)}${s.cited ? " · cited" : ""}` })),
        el("pre", { class: "passage", text: s.text || "" })));
    }
    view.meta.append(box);
  }
  // the token ledger and latency
  const t = tg.tokens, b = tg.budget || {};
  const completion = t.draft + t.probe + t.reasoning + t.answer + t.samples;
  view.meta.append(el("div", { class: "ledger muted", text:
    `tokens: draft ${t.draft} · probes ${t.probe} · reasoning ${t.reasoning} · answer ${t.answer}` +
    (t.samples ? ` · samples ${t.samples}` : "") + ` = ${completion} of max ${b.total ?? "–"}` +
    ` · prompt ${t.prompt + t.information} · ${fmt(tg.latency_s, 1)} s` }));
  if (tg.thread_id) setThread(tg.thread_id);
}

function failTurn(view, msg) {
  view.status.remove();
  view.live.textContent = view.reasoning;
  view.meta.append(el("div", { class: "turn-error", role: "alert", text: msg }));
  showError(msg);
}

// ---------- sending ----------
function setThread(id) {
  state.threadId = id;
  $("thread-id").textContent = id || "new";
}
function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("send").textContent = busy ? "Answering…" : "Send";
}

async function send() {
  const text = $("prompt").value;
  if (state.busy || !text.trim()) return;
  setBusy(true);
  showError("");
  $("prompt").value = "";
  const view = newTurn(text);
  const body = { messages: [{ role: "user", content: text }], stream: true, reasoning_effort: $("effort").value,
    stream_options: { include_usage: true } };
  const max = parseInt($("max-tokens").value, 10);
  if (max > 0) body.max_completion_tokens = max;
  if (state.threadId) body.thread_id = state.threadId; else body.store = true;
  try {
    let resp;
    try {
      resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    } catch (e) { throw new Error("the server cannot be reached (" + e.message + ")"); }
    if (!resp.ok) throw new Error(await errorText(resp));
    view.status.textContent = "answering…";
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "", done = false, finished = false;
    while (!done) {
      const r = await reader.read();
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") { done = true; break; }
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(`${obj.error.code || obj.error.type || "error"}: ${obj.error.message}`);
          const ch = (obj.choices || [])[0];
          if (ch && ch.delta) {
            if (ch.delta.content) addContent(view, ch.delta.content);
            if (ch.delta.reasoning_content) addReasoning(view, ch.delta.reasoning_content);
          }
          if (obj.thinkgate) { renderDone(view, obj.thinkgate, obj.usage); finished = true; }
        }
      }
    }
    if (!finished) throw new Error("the stream ended before the turn finished");
  } catch (e) {
    failTurn(view, "The answer failed: " + e.message);
  } finally {
    setBusy(false);
    $("prompt").focus();
  }
}

async function openThread() {
  const id = $("open-thread").value.trim();
  if (!id || state.busy) return;
  try {
    const th = await api("GET", "/v1/threads/" + encodeURIComponent(id));
    $("log").replaceChildren();
    for (const m of th.messages) {
      $("log").append(el("article", { class: "turn past" }, el("div", { class: m.role === "user" ? "user" : "answer", text: m.content })));
    }
    setThread(th.id);
    showError("");
  } catch (e) {
    showError("Opening the thread failed: " + e.message);
  }
}

function init() {
  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
  });
  $("new-chat").addEventListener("click", () => {
    if (state.busy) return;
    $("log").replaceChildren(); setThread(null); showError(""); $("prompt").focus();
  });
  $("open-thread-btn").addEventListener("click", openThread);
  $("upload").addEventListener("change", uploadDoc);
  $("refresh-docs").addEventListener("click", loadDocs);
  $("api-key").addEventListener("change", () => { loadModel(); loadDocs(); pollHealth(); });
  pollHealth(); loadModel(); loadDocs();
  $("prompt").focus();
}
document.addEventListener("DOMContentLoaded", init);
