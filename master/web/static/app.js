// My Space's script: live updates, the request form's two views in sync, copy
// buttons. Pages work without it; it only adds. Values from the server are put
// into the page as text (textContent), never as markup.
"use strict";

function $(selector, root) { return (root || document).querySelector(selector); }
function $all(selector, root) { return Array.from((root || document).querySelectorAll(selector)); }
function debounce(fn, ms) { let t; return function () { clearTimeout(t); t = setTimeout(fn, ms); }; }
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function setStatus(node, status) {
  node.textContent = status;
  node.className = "status status-" + status;
}

function copyButtons() {
  $all("button.copy").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      const source = document.getElementById(button.dataset.copy);
      const text = source ? source.textContent.trim() : "";
      const done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { select(source); });
      } else { select(source); }
    });
  });
  $all("button.print").forEach(function (b) { b.hidden = false; b.addEventListener("click", function () { window.print(); }); });
}
function select(node) {
  if (!node) return;
  const details = node.closest("details"); if (details) details.open = true;
  const range = document.createRange(); range.selectNodeContents(node);
  const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
}

function live(url, onData) {
  if (!window.EventSource) return;
  const source = new EventSource(url);
  source.onmessage = function (event) { onData(JSON.parse(event.data)); };
  source.addEventListener("gone", function () { source.close(); });
  window.addEventListener("pagehide", function () { source.close(); });
}

function serviceRow(row, me) {
  const tr = el("tr", null, {"data-key": row.owner + "/" + row.title});
  const link = el("a", row.title, {href: "/services/" + encodeURIComponent(row.title) +
    (row.owner !== me ? "?owner=" + encodeURIComponent(row.owner) : "")});
  const first = el("td"); first.appendChild(link);
  if (row.owner !== me) first.appendChild(el("span", " (" + row.owner + ")", {"class": "muted"}));
  tr.appendChild(first);
  tr.appendChild(el("td", row.release));
  const status = el("span", null, {"data-field": "status"}); setStatus(status, row.status);
  const cell = el("td"); cell.appendChild(status); tr.appendChild(cell);
  tr.appendChild(el("td", row.state, {"data-field": "state"}));
  tr.appendChild(el("td", row.node || "—", {"data-field": "node"}));
  return tr;
}

function liveServices() {
  const table = $("#services[data-live]");
  if (!table) return;
  const me = ($(".who") || {}).textContent || "";
  live(table.dataset.live, function (rows) {
    const body = $("tbody", table);
    const existing = new Map($all("tr[data-key]", body).map(function (tr) { return [tr.dataset.key, tr]; }));
    const fresh = document.createDocumentFragment();
    rows.forEach(function (row) {
      const key = row.owner + "/" + row.title;
      let tr = existing.get(key);
      if (tr) {
        setStatus($("[data-field=status]", tr), row.status);
        $("[data-field=state]", tr).textContent = row.state;
        $("[data-field=node]", tr).textContent = row.node || "—";
      } else { tr = serviceRow(row, me); }
      fresh.appendChild(tr);
    });
    body.replaceChildren(fresh);
    if (!rows.length) {
      const tr = el("tr", null, {"class": "empty"}); const td = el("td", "No services yet.", {colspan: "5"});
      tr.appendChild(td); body.appendChild(tr);
    }
  });
}

function liveInstance() {
  const section = $("#instance[data-live]");
  if (!section) return;
  live(section.dataset.live, function (view) {
    setStatus($("#status"), view.status);
    $("#reason").textContent = view.reason || "";
    $("#state").textContent = view.state;
    $("#where").textContent = (view.node || "—") + " " + (view.partition || "");
    const body = $("#connection tbody");
    const rows = document.createDocumentFragment();
    view.connection.forEach(function (c, i) {
      const tr = el("tr"); tr.appendChild(el("th", c.key, {scope: "row"}));
      const td = el("td"); const id = "conn-" + (i + 1);
      let value;
      if (c.secret) {
        const details = el("details"); details.appendChild(el("summary", "Reveal"));
        value = el("code", c.value, {id: id}); details.appendChild(value); td.appendChild(details);
      } else if (/^https?:\/\//.test(c.value)) {
        value = el("a", c.value, {href: c.value, id: id, rel: "noopener noreferrer"}); td.appendChild(value);
      } else { value = el("code", c.value, {id: id}); td.appendChild(value); }
      const button = el("button", "Copy", {type: "button", "class": "copy", "data-copy": id, "aria-label": "Copy " + c.key});
      button.hidden = true; td.appendChild(document.createTextNode(" ")); td.appendChild(button);
      tr.appendChild(td); rows.appendChild(tr);
    });
    if (!view.connection.length) {
      const tr = el("tr", null, {"class": "empty"}); tr.appendChild(el("td", "Nothing published yet.", {colspan: "2"}));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    const promises = $("#promises"); const items = document.createDocumentFragment();
    (view.promises || []).forEach(function (p) {
      const li = el("li"); const badge = el("span"); setStatus(badge, p.ok ? "ready" : "error");
      badge.textContent = p.ok ? "ok" : "failing"; li.appendChild(badge);
      li.appendChild(document.createTextNode(" " + p.name + (p.message ? " — " + p.message : "")));
      items.appendChild(li);
    });
    if (!(view.promises || []).length) items.appendChild(el("li", "None reported yet."));
    promises.replaceChildren(items);
    copyButtons();
  });
}

function requestForm() {
  const form = $("#request-form");
  if (!form) return;
  const xml = $("#xml"), shown = $("#xml_shown"), source = $("#source"), error = $("#xml-err");
  const extras = $("#extras");
  const csrf = $("#csrf").value;
  function post(body) {
    body.release = form.dataset.release; body.version = form.dataset.version;
    return fetch("/web/parameters", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)})
      .then(function (r) { return r.json(); });
  }
  function values() {
    const result = {};
    $all("[data-param]", form).forEach(function (input) {
      if (input.type === "checkbox") { if (input.checked) result[input.dataset.param] = "true"; }
      else result[input.dataset.param] = input.value;
    });
    return result;
  }
  const formToXml = debounce(function () {
    post({values: values()}).then(function (answer) {
      if (answer.xml !== undefined) {
        xml.value = answer.xml; shown.value = answer.xml; error.textContent = "";
        xml.removeAttribute("aria-invalid"); extras.textContent = "";
      } else if (answer.error) { error.textContent = answer.error; }
    });
  }, 250);
  const xmlToForm = debounce(function () {
    post({xml: xml.value}).then(function (answer) {
      if (answer.error) { error.textContent = answer.error; xml.setAttribute("aria-invalid", "true"); return; }
      error.textContent = ""; xml.removeAttribute("aria-invalid");
      $all("[data-param]", form).forEach(function (input) {
        const value = answer.values[input.dataset.param];
        if (input.type === "checkbox") input.checked = value === true;
        else input.value = value === undefined || value === null ? "" : value;
      });
      extras.textContent = answer.extras.length ? "Not in the form (kept in the XML): " + answer.extras.join(", ") : "";
    });
  }, 250);
  $all("[data-param]", form).forEach(function (input) {
    input.addEventListener("input", function () { source.value = "form"; formToXml(); });
    input.addEventListener("change", function () { source.value = "form"; formToXml(); });
  });
  xml.addEventListener("input", function () { source.value = "xml"; xmlToForm(); });

  const space = $("#space");
  $all(".space-choice", form).forEach(function (select) {
    select.addEventListener("change", function () {
      const query = new URLSearchParams({computer: $("#computer").value, network: $("#network").value});
      fetch("/web/space?" + query, {credentials: "same-origin"}).then(function (r) { return r.json(); })
        .then(function (answer) {
          const n = answer.free;
          space.textContent = n ? "There is space! " + n + " free partition" + (n === 1 ? "" : "s") + " fit this choice."
            : "No free partition fits this choice now; the request waits until one does.";
        });
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  copyButtons(); liveServices(); liveInstance(); requestForm();
});
