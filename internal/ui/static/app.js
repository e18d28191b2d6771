// The script of "kubectl webhook ui": plain JavaScript, no build step.
// It keeps the list and the status panel live from the server-sent events
// of /api/watch, saves the form, and runs the secret, test and delivery
// actions through the page's JSON API. Every change carries the CSRF token.
'use strict';

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const initialNode = document.getElementById('initial-data');
  const initial = initialNode ? JSON.parse(initialNode.textContent || '{}') : {};
  const selected = initial.selected || '';
  const perms = initial.perms || {};
  const views = new Map();
  (initial.views || []).forEach((v) => views.set(v.name, v));

  // pendingTest is the token of the test delivery the page waits for.
  let pendingTest = null;
  let pendingTestTimer = null;

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // el builds an element with attributes and children (strings become text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // call sends a request to the page's API and returns {ok, status, data}.
  async function call(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, status: 0, data: { message: 'The page cannot reach kubectl webhook ui: is it still running? (' + e.message + ')' } };
    }
    let data;
    try {
      data = await res.json();
    } catch (e) {
      data = { message: res.status + ' ' + res.statusText };
    }
    return { ok: res.ok, status: res.status, data };
  }

  // human renders a duration in milliseconds as kubectl's AGE column does.
  function human(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 120) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 120) return m + 'm';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h';
    return Math.floor(h / 24) + 'd';
  }

  function ago(time) {
    if (!time) return '-';
    const t = Date.parse(time);
    return isNaN(t) ? '-' : human(Date.now() - t);
  }

  function code(c) {
    return c ? String(c) : 'none (no response)';
  }

  // ---- the list ----

  function renderRows() {
    const tbody = $('whc-rows');
    if (!tbody) return;
    const names = [...views.keys()].sort();
    tbody.replaceChildren(...names.map((n) => row(views.get(n))));
    $('whc-empty').hidden = names.length > 0;
  }

  function row(v) {
    const cell = (col, text) => el('td', { 'data-col': col }, text);
    return el('tr', { id: 'row-' + v.name, 'data-name': v.name, 'aria-current': v.name === selected ? 'true' : null },
      el('th', { scope: 'row' }, el('a', { href: '/webhooks/' + enc(v.name) }, v.name)),
      cell('active', String(v.active)),
      cell('ready', v.ready || '-'),
      cell('delivering', v.delivering || '-'),
      cell('successRate', v.successRate || '-'),
      cell('sent', String(v.sent)),
      cell('lastDelivery', ago(v.lastDelivery && v.lastDelivery.time)),
      cell('age', ago(v.creationTimestamp)));
  }

  // ---- the status panel ----

  function renderStatus() {
    const panel = $('status-panel');
    if (!panel || !selected) return;
    const v = views.get(selected);
    if (!v) {
      panel.replaceChildren(el('p', { class: 'notice' }, 'This WebhookConfig no longer exists.'));
      return;
    }
    const dl = el('dl', { class: 'status' });
    const add = (term, desc, key) => dl.append(el('dt', {}, term), el('dd', { 'data-key': key }, desc));
    let active = String(v.active);
    if (v.paused) active += ' (paused)';
    if (!v.enabled) active += ' (disabled)';
    add('Active', active, 'active');
    for (const type of ['Ready', 'Delivering', 'Stalled']) {
      const c = (v.conditions || []).find((x) => x.type === type);
      if (!c) continue;
      let text = c.status;
      if (c.reason) text += ' · ' + c.reason;
      if (c.message) text += ': ' + c.message;
      add(type, text, type.toLowerCase());
    }
    if ((v.conditions || []).length === 0) {
      add('Ready', 'not reconciled yet: is the operator running?', 'ready');
    }
    add('Success rate (24h)', v.successRate || '-', 'successRate');
    add('Sent', String(v.sent), 'sent');
    add('Delivered', String(v.delivered), 'delivered');
    add('Failed', String(v.failed), 'failed');
    add('Pending', String(v.pending), 'pending');
    add('Consecutive failures', String(v.consecutiveFailures), 'consecutiveFailures');
    const d = v.lastDelivery;
    add('Last delivery', d
      ? `${ago(d.time)} ago · ${d.eventType} ${d.eventID} · attempt ${d.attempt} · HTTP ${code(d.statusCode)} · ${d.durationMilliseconds} ms · ${d.result}${d.error ? ' · ' + d.error : ''}`
      : 'none yet', 'lastDelivery');
    const t = v.lastTest;
    if (t) {
      add('Last test', `${t.result} · HTTP ${code(t.statusCode)} · ${t.durationMilliseconds || 0} ms${t.error ? ' · ' + t.error : ''} · ${ago(t.time)} ago`, 'lastTest');
    }
    if (v.secretRotationEndsAt) {
      add('Secret rotation', 'the previous secret signs beside the new one until ' + v.secretRotationEndsAt, 'rotation');
    }
    if ((v.conditions || []).length > 0 && v.observedGeneration !== v.generation) {
      add('Note', 'the operator has not caught up with the last change yet', 'note');
    }
    panel.replaceChildren(dl);
  }

  function renderAll() {
    renderRows();
    renderStatus();
    checkTest();
  }

  // ---- the live stream ----

  function setLive(state, text) {
    const live = $('live');
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  let deliveriesTimer = null;
  function scheduleDeliveries() {
    clearTimeout(deliveriesTimer);
    deliveriesTimer = setTimeout(loadDeliveries, 500);
  }

  function connect() {
    if (!$('whc-rows')) return;
    const es = new EventSource('/api/watch');
    es.addEventListener('snapshot', (e) => {
      views.clear();
      JSON.parse(e.data).forEach((v) => views.set(v.name, v));
      setLive('live', 'Live: kept up to date from a watch on the API server.');
      renderAll();
    });
    es.addEventListener('upsert', (e) => {
      const v = JSON.parse(e.data);
      views.set(v.name, v);
      renderAll();
      if (v.name === selected) scheduleDeliveries();
    });
    es.addEventListener('delete', (e) => {
      views.delete(JSON.parse(e.data).name);
      renderAll();
    });
    es.addEventListener('problem', (e) => {
      setLive('problem', 'Not live: ' + JSON.parse(e.data).message);
    });
    es.onerror = () => setLive('reconnecting', 'Reconnecting to kubectl webhook ui…');
  }

  // ---- the form ----

  function clearErrors(form) {
    form.querySelectorAll('p.error').forEach((p) => { p.textContent = ''; });
    form.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
  }

  // showErrors puts each validation error beside its field, and the rest,
  // or the message when no field fits, in the general error line.
  function showErrors(form, data) {
    const general = [];
    let placed = 0;
    let first = null;
    for (const f of data.fields || []) {
      const p = f.field ? $('err-' + f.field) : null;
      if (!p) {
        general.push((f.path ? f.path + ': ' : '') + f.message);
        continue;
      }
      p.textContent = p.textContent ? p.textContent + ' ' + f.message : f.message;
      placed++;
      const input = form.querySelector(`[aria-describedby~="${CSS.escape(p.id)}"]`);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        first = first || input;
      }
      if (f.field.startsWith('spec.delivery.')) $('advanced').open = true;
    }
    const g = $('err-general');
    if (placed === 0) {
      g.textContent = data.message || 'Not saved.';
    } else {
      general.unshift(`Not saved: the API server refused ${placed === 1 ? 'a value' : placed + ' values'}, shown beside ${placed === 1 ? 'its field' : 'their fields'}.`);
      g.textContent = general.join(' ');
    }
    if (first) first.focus();
  }

  function collect(form, create) {
    const body = {
      url: form.elements.url.value.trim(),
      events: [...form.querySelectorAll('input[name="events"]:checked')].map((i) => i.value),
      allEvents: $('f-all-events').checked,
      enabled: $('f-enabled').checked,
      paused: $('f-paused').checked,
      delivery: {},
    };
    const bad = [];
    for (const key of ['timeoutSeconds', 'maxAttempts', 'initialBackoffSeconds', 'maxBackoffSeconds', 'maxAgeSeconds', 'maxInFlight']) {
      const s = form.elements[key].value.trim();
      if (s === '') {
        body.delivery[key] = null; // the default
        continue;
      }
      const n = Number(s);
      if (!Number.isInteger(n)) {
        bad.push({ field: 'spec.delivery.' + key, path: 'spec.delivery.' + key, message: 'must be a whole number' });
        continue;
      }
      body.delivery[key] = n;
    }
    if (create) {
      body.name = form.elements.name.value.trim();
      body.secret = form.elements.secret.value.trim();
    }
    return { body, bad };
  }

  function setupForm() {
    const form = $('whc-form');
    if (!form) return;
    const create = form.dataset.create === 'true';
    const all = $('f-all-events');
    const each = [...form.querySelectorAll('input[name="events"]')];
    const syncAll = () => each.forEach((i) => { i.disabled = all.checked; });
    all.addEventListener('change', syncAll);
    syncAll();

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearErrors(form);
      const status = $('save-status');
      const { body, bad } = collect(form, create);
      if (bad.length) {
        showErrors(form, { message: 'Not saved.', fields: bad });
        status.textContent = 'Not saved.';
        return;
      }
      status.textContent = 'Saving…';
      status.dataset.state = 'saving';
      const save = $('save');
      save.disabled = true;
      const r = create
        ? await call('POST', '/api/webhookconfigs', body)
        : await call('PUT', '/api/webhookconfigs/' + enc(form.dataset.name), body);
      save.disabled = false;
      if (r.ok) {
        status.textContent = 'Saved.';
        status.dataset.state = 'saved';
        views.set(r.data.name, r.data);
        renderAll();
        if (create) location.assign('/webhooks/' + enc(r.data.name));
        return;
      }
      status.textContent = 'Not saved.';
      status.dataset.state = 'refused';
      showErrors(form, r.data);
    });

    if (create) {
      const secret = $('f-secret');
      const toggle = $('secret-toggle');
      $('secret-generate').addEventListener('click', async () => {
        const r = await call('POST', '/api/generate-secret', {});
        if (!r.ok) {
          $('err-secret').textContent = r.data.message;
          return;
        }
        secret.value = r.data.secret;
        $('err-secret').textContent = '';
      });
      toggle.addEventListener('click', () => {
        const show = secret.type === 'password';
        secret.type = show ? 'text' : 'password';
        toggle.textContent = show ? 'Hide' : 'Show';
        toggle.setAttribute('aria-pressed', String(show));
      });
    }
  }

  // ---- secret, test, deliveries of the selected WebhookConfig ----

  function message(node, text, state) {
    node.replaceChildren(text);
    node.dataset.state = state;
  }

  async function showSecret() {
    const box = $('secret-value');
    const btn = $('secret-show');
    if (!box.hidden) {
      box.hidden = true;
      $('secret-list').replaceChildren();
      btn.textContent = 'Show secret';
      btn.setAttribute('aria-expanded', 'false');
      return;
    }
    const r = await call('POST', `/api/webhookconfigs/${enc(selected)}/secret`, {});
    if (!r.ok) {
      message($('secret-status'), r.data.message, 'error');
      return;
    }
    $('secret-list').replaceChildren(...r.data.secrets.map((s, i) => el('li', {},
      el('code', { class: 'secret' }, s), ' ',
      i === 0 ? '(newest: configure your receiver with it)' : '(previous: still signs during the rotation)')));
    box.hidden = false;
    btn.textContent = 'Hide secret';
    btn.setAttribute('aria-expanded', 'true');
  }

  async function rotate(e) {
    e.preventDefault();
    const status = $('secret-status');
    message(status, 'Rotating…', 'busy');
    const r = await call('POST', `/api/webhookconfigs/${enc(selected)}/rotate`, { grace: $('f-grace').value.trim() });
    if (!r.ok) {
      message(status, r.data.message, 'error');
      return;
    }
    message(status, r.data.endsAt
      ? `Secret ${r.data.secret} rotated: the new and the previous secret sign until ${r.data.endsAt}, then the new one alone.`
      : `Secret ${r.data.secret} rotated: the new secret signs alone.`, 'done');
    if (!$('secret-value').hidden) {
      $('secret-value').hidden = true;
      await showSecret();
    }
  }

  async function requestTest() {
    const out = $('test-result');
    clearTimeout(pendingTestTimer);
    message(out, 'Requesting a test delivery…', 'busy');
    const r = await call('POST', `/api/webhookconfigs/${enc(selected)}/test`, {});
    if (!r.ok) {
      pendingTest = null;
      message(out, r.data.message, 'error');
      return;
    }
    pendingTest = r.data.token;
    message(out, 'Test delivery requested; waiting for the operator to report its outcome…', 'waiting');
    pendingTestTimer = setTimeout(() => {
      if (!pendingTest) return;
      pendingTest = null;
      message(out, 'The operator did not report the outcome within 60 seconds: is the manager running?', 'error');
    }, 60000);
    checkTest();
  }

  function checkTest() {
    const v = views.get(selected);
    if (!pendingTest || !v || !v.lastTest || v.lastTest.requestedAt !== pendingTest) return;
    pendingTest = null;
    clearTimeout(pendingTestTimer);
    const t = v.lastTest;
    const dl = el('dl', { class: 'status' },
      el('dt', {}, 'Result'), el('dd', { 'data-key': 'result' }, t.result),
      el('dt', {}, 'Status code'), el('dd', { 'data-key': 'statusCode' }, code(t.statusCode)),
      el('dt', {}, 'Duration'), el('dd', { 'data-key': 'duration' }, (t.durationMilliseconds || 0) + ' ms'));
    if (t.error) dl.append(el('dt', {}, 'Error'), el('dd', { 'data-key': 'error' }, t.error));
    const out = $('test-result');
    out.replaceChildren(dl);
    out.dataset.state = t.result === 'Succeeded' ? 'succeeded' : 'failed';
  }

  async function loadDeliveries() {
    const box = $('deliveries');
    if (!box || !selected) return;
    const r = await call('GET', `/api/webhookconfigs/${enc(selected)}/deliveries`);
    if (!r.ok) {
      box.replaceChildren(el('p', { class: 'notice', 'data-state': 'error' }, r.data.message));
      return;
    }
    if (!r.data.available) {
      box.replaceChildren(el('p', { class: 'notice', id: 'deliveries-unavailable', 'data-state': 'unavailable' }, r.data.message));
      return;
    }
    if (r.data.deliveries.length === 0) {
      box.replaceChildren(el('p', { 'data-state': 'empty' }, 'No deliveries in the log yet.'));
      return;
    }
    const rows = r.data.deliveries.map((d) => {
      const attempts = d.status.attempts || [];
      const last = attempts[attempts.length - 1];
      const list = el('ol', {}, ...attempts.map((a) => el('li', {},
        `${a.time} · attempt ${a.attempt} · HTTP ${code(a.statusCode)} · ${a.durationMilliseconds || 0} ms · ${a.result}${a.error ? ' · ' + a.error : ''}`)));
      const out = el('span', { role: 'status', class: 'resend-status' });
      const btn = el('button', { type: 'button', class: 'resend', 'aria-label': 'Resend event ' + d.spec.eventID, disabled: !perms.resend }, 'Resend');
      btn.addEventListener('click', () => resend(d.spec.eventID, btn, out));
      return el('tr', { 'data-event-id': d.spec.eventID },
        el('th', { scope: 'row' }, el('code', {}, d.spec.eventID)),
        el('td', {}, d.spec.type),
        el('td', { 'data-col': 'state' }, d.status.state),
        el('td', {}, attempts.length ? el('details', {}, el('summary', {}, `${attempts.length} attempt${attempts.length === 1 ? '' : 's'}`), list) : '0'),
        el('td', {}, last ? code(last.statusCode) : '-'),
        el('td', {}, ago(d.spec.acceptedAt || d.metadata.creationTimestamp)),
        el('td', {}, btn, ' ', out));
    });
    box.replaceChildren(el('table', { id: 'deliveries-table' },
      el('thead', {}, el('tr', {}, ...['Event ID', 'Type', 'State', 'Attempts', 'Last code', 'Age', 'Action'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, ...rows)));
  }

  async function resend(eventID, btn, out) {
    btn.disabled = true;
    const r = await call('POST', `/api/webhookconfigs/${enc(selected)}/resend`, { eventID });
    btn.disabled = !perms.resend;
    if (!r.ok) {
      message(out, r.data.message, 'error');
      return;
    }
    message(out, 'Stored again for delivery.', 'done');
    scheduleDeliveries();
  }

  function setupActions() {
    if (!selected) return;
    const show = $('secret-show');
    if (show) show.addEventListener('click', showSecret);
    const rot = $('rotate-form');
    if (rot) rot.addEventListener('submit', rotate);
    const test = $('test');
    if (test) test.addEventListener('click', requestTest);
    const refresh = $('deliveries-refresh');
    if (refresh) refresh.addEventListener('click', loadDeliveries);
    loadDeliveries();
  }

  if (initial.problem) setLive('problem', 'Not live: ' + initial.problem);
  renderAll();
  setupForm();
  setupActions();
  connect();
  // Ages move on by themselves; only their text changes, so focus stays.
  setInterval(() => {
    for (const tr of document.querySelectorAll('#whc-rows tr')) {
      const v = views.get(tr.dataset.name);
      if (!v) continue;
      tr.querySelector('[data-col="age"]').textContent = ago(v.creationTimestamp);
      tr.querySelector('[data-col="lastDelivery"]').textContent = ago(v.lastDelivery && v.lastDelivery.time);
    }
  }, 5000);
}());
