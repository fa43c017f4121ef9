// admin.js - the operators' status page: asks /admin/status with the admin key
// (kept in sessionStorage: this tab only) every 5 s and draws the answer. Every
// value reaches the page as text (textContent), never as HTML.
'use strict';

(function () {
  const KEY = 'tessera.admin.key';
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function bytes(n) {
    if (!(n >= 0)) return '?';
    const u = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  function state(ok, good, bad) {
    return el('span', { class: 'state ' + (ok ? 'ok' : 'bad') }, ok ? good : bad);
  }

  function chart(name, points) {
    const svg = $('chart-' + name);
    svg.replaceChildren();
    const vals = (points || []).map((p) => p[1]);
    $('now-' + name).textContent = vals.length ? vals[vals.length - 1].toFixed(name === 'queue' ? 0 : 2) : 'no data';
    if (vals.length < 2) return;
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const max = Math.max(...vals, name === 'errors' ? 0.1 : 1);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', points.map((p) =>
      ((p[0] - t0) / (t1 - t0 || 1) * 300).toFixed(1) + ',' + (78 - p[1] / max * 74).toFixed(1)).join(' '));
    svg.appendChild(line);
  }

  function instances(list) {
    const box = $('instances');
    box.replaceChildren();
    const roles = {};
    for (const i of list) (roles[i.job.replace(/^tessera-/, '')] ||= []).push(i);
    for (const role of Object.keys(roles).sort()) {
      const div = el('div', { class: 'role', 'data-role': role });
      const up = roles[role].filter((i) => i.up && i.ready !== false).length;
      div.appendChild(el('h3', {}, role + ' (' + up + '/' + roles[role].length + ' ready)'));
      const ul = el('ul', { class: 'pills' });
      for (const i of roles[role].sort((a, b) => (a.name || a.instance).localeCompare(b.name || b.instance))) {
        const cls = !i.up ? 'bad' : i.ready === false ? 'warn' : 'ok';
        const what = !i.up ? 'down' : i.ready === false ? 'not ready' : 'ready';
        const li = el('li', { class: 'pill ' + cls, title: i.instance, 'data-name': i.name || i.instance },
          (i.name || i.instance) + ': ' + what);
        ul.appendChild(li);
      }
      div.appendChild(ul);
      box.appendChild(div);
    }
  }

  function render(s) {
    const note = $('prom-note');
    note.hidden = s.prometheus === 'ok';
    note.textContent = s.prometheus === 'ok' ? '' : 'Prometheus ' + s.prometheus +
      ' (admin.prometheus_url): instances, disk usage and charts need it; the rest is what ' + s.role + ' on ' + s.listen + ' sees.';
    for (const c of ['requests', 'errors', 'queue']) chart(c, s.charts && s.charts[c]);
    instances(s.instances || []);

    const db = $('db');
    db.replaceChildren();
    for (const n of s.db) {
      const tr = el('tr', { 'data-node': n.name });
      tr.append(el('td', {}, n.name), el('td', {}, n.addr), el('td', {}, n.role));
      const td = el('td');
      td.appendChild(state(n.reachable, n.usable ? 'up' : 'up, not used', 'down'));
      tr.append(td, el('td', {}, n.reachable && n.role === 'replica' && n.lag_ms >= 0 ? n.lag_ms + ' ms' : ''));
      db.appendChild(tr);
    }

    $('epoch').textContent = s.ring.epoch ? 'epoch ' + s.ring.epoch : '(no ring: one local store)';
    const ring = $('ring');
    ring.replaceChildren();
    for (const sh of s.ring.shards) {
      const u = (s.usage || {})[sh.id] || {};
      const div = el('div', { class: 'shard' + (sh.up ? '' : ' bad'), 'data-shard': sh.id });
      div.appendChild(el('strong', {}, sh.id + ' '));
      div.appendChild(state(sh.up, 'up', 'DOWN'));
      div.appendChild(el('div', { class: 'muted' }, sh.addr));
      if (u.size_bytes > 0) {
        const used = u.size_bytes - u.free_bytes;
        div.appendChild(el('div', {}, bytes(u.bytes) + ' of blobs; disk ' + bytes(used) + ' / ' + bytes(u.size_bytes)));
        div.appendChild(el('meter', { min: '0', max: String(u.size_bytes), value: String(used), high: String(u.size_bytes * 0.9) }));
      }
      ring.appendChild(div);
    }

    const lr = s.ring.last_repair;
    $('repair').textContent = !s.ring.shards.length ? '' : !lr ? 'No complete tessera repair walk yet.'
      : 'Last repair walk ' + new Date(lr.at * 1000).toLocaleString() + ': ' + lr.away + ' copies away from home, ' +
        lr.missing + ' home copies missing, ' + lr.lost + ' lost.';
    $('repair').classList.toggle('error', !!(lr && lr.lost > 0));

    const redis = $('redis');
    redis.replaceChildren();
    if (!s.redis.length) redis.appendChild(el('li', {}, 'no Redis configured'));
    for (const r of s.redis) redis.appendChild(el('li', { class: 'pill ' + (r.up ? 'ok' : 'bad') }, r.addr + ': ' + (r.up ? 'up' : 'down')));

    const jobs = $('jobs');
    jobs.replaceChildren();
    if (s.jobs === null) {
      jobs.appendChild(el('tr')).appendChild(el('td', { colspan: '6' }, 'the database primary does not answer'));
    } else {
      if (!s.jobs.kinds.length) jobs.appendChild(el('tr')).appendChild(el('td', { colspan: '6' }, 'no jobs queued'));
      for (const k of s.jobs.kinds) {
        const tr = el('tr', { 'data-kind': k.kind });
        for (const v of [k.kind, k.queued, k.due, k.running, k.dead, k.oldest_due_age_s ? k.oldest_due_age_s + ' s' : '']) tr.appendChild(el('td', {}, String(v)));
        jobs.appendChild(tr);
      }
    }
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY);
    if (!key) return;
    let r;
    try {
      r = await fetch('/admin/status', { headers: { Authorization: 'Bearer ' + key }, cache: 'no-store' });
    } catch (e) {
      $('updated').textContent = 'cannot reach the service: ' + e.message;
      return;
    }
    if (r.status === 401 || r.status === 404) {
      const body = await r.json().catch(() => ({}));
      sessionStorage.removeItem(KEY);
      show(false, (body.error && body.error.message) || 'the key was refused');
      return;
    }
    if (!r.ok) {
      $('updated').textContent = 'status answered ' + r.status;
      return;
    }
    show(true);
    render(await r.json());
  }

  function show(on, err) {
    $('login').hidden = on;
    $('status').hidden = !on;
    $('forget').hidden = !on;
    $('login-error').textContent = err || '';
    clearInterval(timer);
    timer = on ? setInterval(refresh, 5000) : null;
  }

  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $('key').value);
    $('key').value = '';
    refresh();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    show(false);
  });
  if (sessionStorage.getItem(KEY)) refresh();
})();
