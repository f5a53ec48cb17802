"""The review page (``GET /review``): the queue of requests worth a look, and a form built from the
registry to confirm, correct or mark each one out of scope. One HTML document with its script; it
talks to ``/v1/review``, ``/v1/review/intents``, ``/v1/feedback`` and ``/v1/review/export`` with
the same credentials as the page (the token cookie ``/review?token=…`` sets)."""

from __future__ import annotations

import enum
from typing import Any

from ..registry import Registry

__all__ = ["REVIEW_PAGE", "registry_form"]


def registry_form(registry: Registry) -> list[dict[str, Any]]:
    """Each intent with its parameters as the review form needs them: kind, required, choices."""
    out = []
    for spec in registry:
        params = []
        for p in spec.params:
            choices = [c.value if isinstance(c, enum.Enum) else c for c in dict.fromkeys(p.choice_values.values())]
            params.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "required": p.required,
                    "choices": choices or list(p.choices),
                    "description": p.description,
                }
            )
        out.append({"name": spec.name, "description": spec.description, "params": params})
    return out


REVIEW_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>intentkit · review</title>
<style>
 body { font: 15px/1.45 system-ui, "Noto Sans CJK SC", sans-serif; margin: 0 auto; max-width: 980px; padding: 1rem; color: #222; }
 header { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
 header h1 { font-size: 1.3rem; margin: 0; }
 #stats { color: #555; }
 .item { border: 1px solid #ddd; border-radius: 6px; padding: .7rem .9rem; margin: .7rem 0; }
 .item.done { opacity: .55; }
 .utterance { font-size: 1.15rem; font-weight: 600; }
 .meta, .runners { color: #666; font-size: .85rem; }
 code { background: #f4f4f4; padding: 0 .25rem; border-radius: 3px; }
 .actions button, .save, .cancel { margin: .4rem .4rem 0 0; }
 form.edit-form { margin-top: .5rem; padding: .5rem; background: #fafafa; border-radius: 4px; }
 form.edit-form label { display: block; margin: .25rem 0; }
 .error { color: #b00020; }
 .state { color: #0a7d32; font-weight: 600; }
</style>
</head>
<body>
<header>
 <h1>Review queue</h1>
 <span id="stats"></span>
 <label><input type="checkbox" id="show-reviewed"> show reviewed</label>
 <a id="export" href="/v1/review/export" download="corrections.jsonl">Export corrections (JSONL)</a>
</header>
<p id="message" class="error"></p>
<main id="queue"></main>
<template id="item-template">
 <article class="item">
  <div class="utterance"></div>
  <div>answered <code class="answer"></code> <span class="confidence"></span></div>
  <div class="runners"></div>
  <div class="suggestion"></div>
  <div class="meta"></div>
  <div class="actions">
   <button type="button" class="confirm">Confirm</button>
   <button type="button" class="edit">Correct…</button>
   <button type="button" class="oos">Out of scope</button>
   <button type="button" class="down">👎</button>
  </div>
  <span class="state"></span> <span class="error item-error"></span>
 </article>
</template>
<script>
"use strict";
let intents = [];

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function literal(value) { return JSON.stringify(value); }

function callText(name, values) {
  const parts = Object.entries(values).map(([k, v]) => k + "=" + literal(v));
  return name + "(" + parts.join(", ") + ")";
}

function parseArgs(text) {
  // The model's canonical call text: name(key="value", key=3); enough to prefill the form.
  const out = {};
  const match = /^[^(]*\\((.*)\\)\\s*$/s.exec(text || "");
  if (!match) return out;
  const re = /([A-Za-z_][A-Za-z0-9_]*)\\s*=\\s*("(?:[^"\\\\]|\\\\.)*"|[^,]+)/g;
  let m;
  while ((m = re.exec(match[1])) !== null) {
    try { out[m[1]] = JSON.parse(m[2]); } catch (e) { out[m[1]] = m[2].trim(); }
  }
  return out;
}

async function send(article, request, payload) {
  article.querySelector(".item-error").textContent = "";
  try {
    await api("/v1/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ request_id: request.id }, payload)),
    });
    article.classList.add("done");
    article.querySelector(".state").textContent = payload.correct ? "saved: " + payload.correct : "voted " + payload.vote;
    const form = article.querySelector("form");
    if (form) form.remove();
    loadStats();
  } catch (error) {
    article.querySelector(".item-error").textContent = error.message;
  }
}

function paramInput(param, value) {
  let input;
  if (param.choices && param.choices.length) {
    input = document.createElement("select");
    const blank = document.createElement("option");
    blank.value = ""; blank.textContent = param.required ? "(choose)" : "(none)";
    input.append(blank);
    for (const choice of param.choices) {
      const option = document.createElement("option");
      option.value = literal(choice); option.textContent = String(choice);
      input.append(option);
    }
    if (value !== undefined) input.value = literal(value);
  } else if (param.kind === "bool") {
    input = document.createElement("select");
    for (const [label, v] of [["", ""], ["true", "true"], ["false", "false"]]) {
      const option = document.createElement("option");
      option.value = v; option.textContent = label || "(none)";
      input.append(option);
    }
    if (value !== undefined) input.value = String(value);
  } else {
    input = document.createElement("input");
    input.type = param.kind === "int" || param.kind === "float" ? "number" : "text";
    if (param.kind === "int") input.step = "1";
    if (param.kind === "float") input.step = "any";
    if (value !== undefined) input.value = typeof value === "object" ? JSON.stringify(value) : String(value);
  }
  input.name = param.name;
  input.dataset.kind = param.kind;
  input.dataset.choice = param.choices && param.choices.length ? "1" : "";
  return input;
}

function readValue(input) {
  const raw = input.value;
  if (raw === "") return undefined;
  if (input.dataset.choice || input.dataset.kind === "bool") return JSON.parse(raw);
  if (input.dataset.kind === "int") {
    if (!/^-?\\d+$/.test(raw)) throw new Error(input.name + ": a whole number, not " + raw);
    return parseInt(raw, 10);
  }
  if (input.dataset.kind === "float") {
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new Error(input.name + ": a number, not " + raw);
    return n;
  }
  if (input.dataset.kind === "list" || input.dataset.kind === "object") return JSON.parse(raw);
  return raw;
}

function openForm(article, request) {
  if (article.querySelector("form")) return;
  const form = document.createElement("form");
  form.className = "edit-form";
  form.noValidate = true;  // the checks below say what is wrong, in the item's own error line
  const select = document.createElement("select");
  select.className = "intent";
  for (const intent of intents) {
    const option = document.createElement("option");
    option.value = intent.name; option.textContent = intent.name + (intent.description ? " — " + intent.description : "");
    select.append(option);
  }
  const current = intents.find(i => i.name === request.intent) || intents[0];
  if (current) select.value = current.name;
  const fields = document.createElement("div");
  const prefill = request.intent ? parseArgs(request.call_text) : {};
  function renderFields() {
    fields.replaceChildren();
    const intent = intents.find(i => i.name === select.value);
    for (const param of intent ? intent.params : []) {
      const label = document.createElement("label");
      label.append(param.name + (param.required ? " *" : "") + " ");
      label.append(paramInput(param, select.value === request.intent ? prefill[param.name] : undefined));
      fields.append(label);
    }
  }
  select.addEventListener("change", renderFields);
  renderFields();
  const save = document.createElement("button");
  save.type = "submit"; save.className = "save"; save.textContent = "Save correction";
  const cancel = document.createElement("button");
  cancel.type = "button"; cancel.className = "cancel"; cancel.textContent = "Cancel";
  cancel.addEventListener("click", () => form.remove());
  form.append(select, fields, save, cancel);
  form.addEventListener("submit", event => {
    event.preventDefault();
    try {
      const values = {};
      for (const input of fields.querySelectorAll("input, select")) {
        const v = readValue(input);
        if (v !== undefined) values[input.name] = v;
      }
      send(article, request, { correct: callText(select.value, values) });
    } catch (error) {
      article.querySelector(".item-error").textContent = error.message;
    }
  });
  article.append(form);
}

function render(request) {
  const article = document.getElementById("item-template").content.firstElementChild.cloneNode(true);
  article.dataset.requestId = request.id;
  article.querySelector(".utterance").textContent = request.model_input || request.utterance;
  article.querySelector(".answer").textContent = request.call_text;
  article.querySelector(".confidence").textContent =
    request.confidence == null ? "" : "confidence " + request.confidence.toFixed(3);
  article.querySelector(".runners").textContent = request.runners_up.length
    ? "runners-up: " + request.runners_up.map(([n, p]) => n + " " + p.toFixed(3)).join(", ") : "";
  const suggestion = article.querySelector(".suggestion");
  if (request.suggestion) {
    suggestion.textContent = "teacher suggests " + request.suggestion +
      (request.suggestion_confidence == null ? "" : " (" + request.suggestion_confidence.toFixed(3) + ") ");
    const use = document.createElement("button");
    use.type = "button"; use.className = "use-suggestion"; use.textContent = "Use teacher's";
    use.addEventListener("click", () => send(article, request, { correct: request.suggestion }));
    suggestion.append(use);
  }
  const votes = request.feedback.filter(f => f.vote).map(f => f.vote);
  article.querySelector(".meta").textContent = [
    request.status, new Date(request.created_at * 1000).toLocaleString(), request.endpoint,
    votes.length ? "votes: " + votes.join(" ") : "", request.correction ? "corrected: " + request.correction : "",
  ].filter(Boolean).join(" · ");
  const confirm = article.querySelector(".confirm");
  confirm.disabled = request.status !== "ok" && request.status !== "low_confidence" && request.status !== "no_intent";
  const answered = request.intent ? request.call_text : "no_intent()";
  confirm.addEventListener("click", () => send(article, request, { vote: "up", correct: answered }));
  article.querySelector(".edit").addEventListener("click", () => openForm(article, request));
  article.querySelector(".oos").addEventListener("click", () => send(article, request, { correct: "no_intent()" }));
  article.querySelector(".down").addEventListener("click", () => send(article, request, { vote: "down" }));
  return article;
}

async function loadStats(stats) {
  if (!stats) stats = (await api("/v1/review?limit=1")).stats;
  document.getElementById("stats").textContent =
    stats.requests + " requests · " + stats.corrected + " corrected · " + stats.up + " 👍 · " + stats.down + " 👎";
}

async function load() {
  const message = document.getElementById("message");
  message.textContent = "";
  try {
    if (!intents.length) intents = (await api("/v1/review/intents")).intents;
    const reviewed = document.getElementById("show-reviewed").checked;
    const body = await api("/v1/review?limit=100&reviewed=" + reviewed);
    const queue = document.getElementById("queue");
    queue.replaceChildren(...body.items.map(render));
    if (!body.items.length) queue.textContent = "Nothing to review.";
    loadStats(body.stats);
    document.body.dataset.loaded = "1";
  } catch (error) {
    message.textContent = error.message;
  }
}

document.getElementById("show-reviewed").addEventListener("change", load);
load();
</script>
</body>
</html>
"""
