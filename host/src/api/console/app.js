// The berth console: plain JavaScript, no build step and no third-party code. It reads the same API as
// the CLI (/v1/* and Marathon's /v2/*) every two seconds while its tab is visible, and keeps the history
// it draws (shares, plugin latency) in memory for as long as the tab is open.
'use strict';

const POLL_MS = 2000;
const HISTORY = 450; // points kept per series: 15 minutes at one every two seconds
const SHOWN_ROWS = 200; // rows drawn at most per table, so a big cluster does not freeze the tab
const LOG_LIMIT = 1 << 20; // characters of output kept in the log view

const session = { token: sessionStorage.getItem('berth.token') || '', operator: false };
const history = { shares: new Map(), p99: new Map(), started: Date.now() };
let current = null; // { name, refresh, leave }

// ---- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    // Through the CSSOM: the content security policy refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svgNs = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function replace(id, ...children) {
  const el = document.getElementById(id);
  if (el) el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function notify(message, error) {
  const el = h('div', { class: error ? 'msg error' : 'msg' }, message);
  document.getElementById('notice').append(el);
  setTimeout(() => el.remove(), error ? 9000 : 4000);
}

function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => () => {
      dialog.close();
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      resolve(answer);
    };
    const yes = document.getElementById('confirm-yes');
    const no = document.getElementById('confirm-no');
    const onYes = done(true);
    const onNo = done(false);
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
    dialog.showModal();
  });
}

const fmt = {
  num: (n, d = 1) => (n === undefined || n === null ? '-' : Number(n).toFixed(d).replace(/\.0+$/, '')),
  cpus: (milli) => fmt.num(milli / 1000, 2),
  mib: (m) => (m >= 10240 ? fmt.num(m / 1024, 1) + ' GiB' : fmt.num(m, 0) + ' MiB'),
  us: (us) => (us >= 1000 ? fmt.num(us / 1000, 1) + ' ms' : fmt.num(us, 0) + ' µs'),
  pct: (x) => fmt.num(x * 100, 1) + '%',
  ago: (ms) => {
    if (!ms) return '-';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
  },
};

function state(name) {
  return h('span', { class: 'state ' + String(name).toLowerCase().replace(/^task_/, '') }, String(name).toLowerCase().replace(/^task_/, ''));
}

/// A bar: what is held (light) and, under it, what is used (dark).
function bar(held, total, used, text) {
  const pct = (x) => Math.max(0, Math.min(100, total > 0 ? (x / total) * 100 : 0)).toFixed(1) + '%';
  return h('div', { class: 'bar', title: text },
    h('div', { class: 'fill', style: `width:${pct(held)}` }),
    used !== null && used !== undefined ? h('div', { class: 'use', style: `width:${pct(used)}` }) : null,
    h('div', { class: 'text' }, text));
}

const palette = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];

/// A line chart of `series` ([{name, points: [[ms, value]]}]) over the last `span` ms.
function lineChart(series, { height = 180, yLabel = '', yFormat = (v) => fmt.num(v, 2), id } = {}) {
  const width = 640;
  const pad = { l: 46, r: 8, t: 8, b: 18 };
  const now = Date.now();
  const all = series.flatMap((x) => x.points);
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : now - 60000;
  const yMax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => pad.l + ((t - t0) / Math.max(1, now - t0)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / yMax) * (height - pad.t - pad.b);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': yLabel, ...(id ? { id } : {}) });
  for (const f of [0, 0.5, 1]) {
    svg.append(s('line', { x1: pad.l, x2: width - pad.r, y1: y(yMax * f / 1.1), y2: y(yMax * f / 1.1), stroke: '#e5e7eb' }));
    svg.append(s('text', { x: 4, y: y(yMax * f / 1.1) + 3 }, yFormat(yMax * f / 1.1)));
  }
  svg.append(s('text', { x: pad.l, y: height - 4 }, fmt.ago(t0)));
  svg.append(s('text', { x: width - pad.r - 24, y: height - 4 }, 'now'));
  series.forEach((line, i) => {
    if (!line.points.length) return;
    const d = line.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: d, fill: 'none', stroke: palette[i % palette.length], 'stroke-width': 2, 'data-series': line.name }));
  });
  const legend = h('div', { class: 'legend' }, series.map((line, i) => {
    const last = line.points.length ? line.points[line.points.length - 1][1] : null;
    return h('span', {}, h('i', { style: `background:${palette[i % palette.length]}` }), `${line.name} ${last === null ? '' : yFormat(last)}`);
  }));
  return h('div', {}, svg, legend);
}

/// A sparkline of the last values.
function sparkline(values, title) {
  const w = 120, hgt = 28;
  const svg = s('svg', { viewBox: `0 0 ${w} ${hgt}`, class: 'spark' }, s('title', {}, title));
  if (values.length > 1) {
    const max = Math.max(1e-9, ...values);
    const pts = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: pts, fill: 'none', stroke: '#2563eb', 'stroke-width': 1.5 }));
  }
  return svg;
}

function push(map, key, point) {
  let list = map.get(key);
  if (!list) map.set(key, (list = []));
  list.push(point);
  if (list.length > HISTORY) list.shift();
}

// ---- the API ----------------------------------------------------------------------------------

async function api(method, path, body, { raw = false, type } = {}) {
  const headers = { 'x-berth-console': '1' };
  if (session.token) headers.authorization = 'Bearer ' + session.token;
  let payload;
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) {
      headers['content-type'] = type || 'application/octet-stream';
      payload = body;
    } else {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
  }
  const response = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    let message = (data && data.message) || text || `${response.status} ${response.statusText}`;
    if (data && Array.isArray(data.details)) {
      message += ': ' + data.details.map((d) => [d.path, (d.errors || []).join(', ')].filter(Boolean).join(' ')).join('; ');
    }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

/// Runs a change the user asked for, saying how it went. A Marathon change refused because a deployment
/// holds the app (409) can be forced, as Marathon's own UI offers, after a confirmation.
async function act(what, f) {
  try {
    let result;
    try {
      result = await f(false);
    } catch (e) {
      if (e.status !== 409 || !/deployment/i.test(e.message)) throw e;
      if (!(await confirmAction(`${e.message}. Force the change (the running deployment is replaced)?`))) throw e;
      result = await f(true);
    }
    notify(what + ': done');
    await refresh();
    return result;
  } catch (e) {
    notify(`${what}: ${e.message}`, true);
    return undefined;
  }
}

function operatorOnly(el) {
  el.classList.add('needs-operator');
  el.disabled = !session.operator;
  if (!session.operator) el.title = 'log in with the operator token to change things';
  return el;
}

// ---- shared polling: frameworks and plugins, for the history the charts draw --------------------

const shared = { frameworks: [], plugins: [], error: null };

async function sample() {
  try {
    const [frameworks, plugins] = await Promise.all([api('GET', '/v1/frameworks'), api('GET', '/v1/plugins')]);
    const now = Date.now();
    shared.frameworks = frameworks;
    shared.plugins = plugins;
    shared.error = null;
    for (const f of frameworks) push(history.shares, f.name, [now, f.share]);
    for (const p of plugins) {
      const active = p.versions.find((v) => v.active);
      if (active) push(history.p99, p.name, [now, active.stats.p99_us]);
    }
  } catch (e) {
    shared.error = e;
  }
}

// ---- pages ------------------------------------------------------------------------------------

const pages = {};

pages.overview = () => {
  replace('page',
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards', id: 'summary' }),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' }, h('h2', {}, 'Dominant shares over time'), h('div', { id: 'share-chart' })),
      h('section', { class: 'panel' }, h('h2', {}, 'Offer cycle duration (recent cycles)'), h('div', { id: 'cycle-chart' }))),
    h('section', { class: 'panel' }, h('h2', {}, 'Frameworks'), h('div', { class: 'scroll', id: 'frameworks' })),
    h('section', { class: 'panel' }, h('h2', {}, 'Nodes'), h('div', { class: 'scroll', id: 'nodes' })));
  return async () => {
    const [nodes, cycles] = await Promise.all([api('GET', '/v1/nodes'), api('GET', '/v1/cycles')]);
    const frameworks = shared.frameworks;
    const allocator = (shared.plugins.find((p) => p.in_use_as_allocator) || {}).name || '-';
    const durations = cycles.map((c) => c.duration_us).sort((a, b) => a - b);
    const quantile = (q) => (durations.length ? durations[Math.min(durations.length - 1, Math.floor(q * durations.length))] : null);
    const running = nodes.reduce((n, x) => n + x.active_tasks, 0);
    replace('summary',
      card('Nodes', `${nodes.filter((n) => n.state === 'active' && n.connected).length} / ${nodes.length} up`, 'nodes-up'),
      card('Tasks placed', running, 'tasks-count'),
      card('Frameworks', frameworks.length, 'frameworks-count'),
      card('Allocator', allocator, 'allocator'),
      card('Cycle p50 / p99', durations.length ? `${fmt.us(quantile(0.5))} / ${fmt.us(quantile(0.99))}` : '-', 'cycle-latency'));
    replace('share-chart', lineChart([...history.shares.entries()].map(([name, points]) => ({ name, points })), { yLabel: 'weighted dominant share', yFormat: fmt.pct, id: 'shares' }));
    replace('cycle-chart', lineChart([{ name: 'cycle duration', points: cycles.map((c) => [c.at_ms, c.duration_us]) },
      { name: 'allocator call', points: cycles.map((c) => [c.at_ms, c.allocate_us]) }], { yFormat: fmt.us, height: 180 }));
    replace('frameworks', h('table', { id: 'frameworks-table' },
      h('tr', {}, ['Framework', 'Plugin', 'Weight', 'Share', 'Tasks', 'CPUs held', 'Memory held', 'Offers', ''].map((t) => h('th', {}, t))),
      frameworks.map((f) => h('tr', { 'data-framework': f.name },
        h('td', {}, f.name, f.error ? h('div', { class: 'state error', title: f.error }, 'not running') : null),
        h('td', { class: 'mono' }, `${f.plugin} v${f.plugin_version}`),
        h('td', { class: 'weight' }, fmt.num(f.weight, 3)),
        h('td', { class: 'share' }, fmt.pct(f.share)),
        h('td', {}, f.active_tasks),
        h('td', {}, fmt.cpus(f.allocated.milli_cpus)),
        h('td', {}, fmt.mib(f.allocated.mem_mib)),
        h('td', {}, f.suppressed ? state('suppressed') : 'wanted'),
        h('td', {}, weightEditor(f))))));
    const shown = nodes.slice(0, SHOWN_ROWS);
    replace('nodes', h('table', { id: 'nodes-table' },
      h('tr', {}, ['Node', 'State', 'CPUs', 'Memory', 'Tasks', 'Backend', 'Seen'].map((t) => h('th', {}, t))),
      shown.map((n) => {
        const usedCpu = n.total.milli_cpus - n.available.milli_cpus;
        const usedMem = n.total.mem_mib - n.available.mem_mib;
        return h('tr', { 'data-node': n.hostname },
          h('td', {}, n.hostname),
          h('td', {}, state(n.connected ? n.state : 'gone')),
          h('td', {}, bar(usedCpu, n.total.milli_cpus, n.in_use.cpus * 1000,
            `${fmt.cpus(usedCpu)} / ${fmt.cpus(n.total.milli_cpus)} held · ${fmt.num(n.in_use.cpus, 2)} in use`)),
          h('td', {}, bar(usedMem, n.total.mem_mib, n.in_use.mem_mib,
            `${fmt.mib(usedMem)} / ${fmt.mib(n.total.mem_mib)} held · ${fmt.mib(n.in_use.mem_mib)} in use`)),
          h('td', {}, n.active_tasks),
          h('td', {}, n.backend),
          h('td', {}, fmt.ago(n.last_seen_ms)));
      })),
      nodes.length > shown.length ? h('p', { class: 'muted' }, `${nodes.length - shown.length} more nodes not drawn (see /v1/nodes)`) : null);
  };
};

function card(label, value, id) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value', id }, String(value)));
}

function weightEditor(f) {
  const input = operatorOnly(h('input', { type: 'number', min: '0.001', step: 'any', value: f.weight, 'aria-label': `weight of ${f.name}` }));
  const set = operatorOnly(h('button', { class: 'set-weight', onclick: () => act(`weight of ${f.name}`, () => api('POST', `/v1/frameworks/${encodeURIComponent(f.name)}/weight`, { weight: Number(input.value) })) }, 'Set weight'));
  return h('span', { class: 'row' }, input, set);
}

const EXAMPLE_APP = {
  id: 'my-app', cpus: 0.1, mem: 64, instances: 1,
  container: { type: 'DOCKER', docker: { image: 'my-app:latest' } },
  cmd: 'my-app',
};

pages.apps = () => {
  const editor = h('textarea', { id: 'app-json', spellcheck: 'false', 'aria-label': 'app definition (JSON)' }, JSON.stringify(EXAMPLE_APP, null, 2));
  replace('page',
    h('h1', {}, 'Apps'),
    h('section', { class: 'panel' }, h('h2', {}, 'Apps'), h('div', { class: 'scroll', id: 'apps' })),
    h('section', { class: 'panel' }, h('h2', {}, 'Deployments'), h('div', { class: 'scroll', id: 'deployments' })),
    h('section', { class: 'panel' },
      h('h2', {}, 'Deploy an app'),
      h('p', { class: 'muted' }, 'A Marathon app definition. An id that exists is updated (a new deployment); a new one is created.'),
      editor,
      h('div', { class: 'row' }, operatorOnly(h('button', { id: 'deploy', class: 'primary', onclick: () => deploy(editor.value) }, 'Deploy')))));
  return async () => {
    const [apps, deployments] = await Promise.all([
      api('GET', '/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure'),
      api('GET', '/v2/deployments?embed=lastFailure'),
    ]);
    replace('apps', apps.apps.length === 0 ? h('p', { class: 'muted' }, 'No apps yet.') : h('table', { id: 'apps-table' },
      h('tr', {}, ['App', 'Instances', 'Running', 'Healthy', 'Staged', 'CPUs', 'Memory', 'Image', 'Deploying', 'Last failure'].map((t) => h('th', {}, t))),
      apps.apps.map((a) => h('tr', { 'data-app': a.id },
        h('td', {}, h('a', { href: '#/apps/' + encodeURIComponent(a.id.replace(/^\//, '')) }, a.id)),
        h('td', { class: 'instances' }, a.instances),
        h('td', { class: 'running' }, a.tasksRunning),
        h('td', { class: 'healthy' }, a.tasksHealthy),
        h('td', {}, a.tasksStaged),
        h('td', {}, a.cpus),
        h('td', {}, fmt.mib(a.mem)),
        h('td', { class: 'mono' }, (a.container && a.container.docker && a.container.docker.image) || '-'),
        h('td', {}, a.deployments.length ? state('deploying') : '-'),
        h('td', { class: 'wrap' }, a.lastTaskFailure ? `${a.lastTaskFailure.state}: ${a.lastTaskFailure.message} (${a.lastTaskFailure.timestamp})` : '-')))));
    replace('deployments', deploymentsTable(deployments));
  };
};

function deploymentsTable(deployments) {
  if (!deployments.length) return h('p', { class: 'muted' }, 'No deployment in progress.');
  return h('table', { id: 'deployments-table' },
    h('tr', {}, ['Deployment', 'Apps', 'Progress', 'Now', 'Last failure', ''].map((t) => h('th', {}, t))),
    deployments.map((d) => h('tr', { 'data-deployment': d.id },
      h('td', { class: 'mono' }, d.id),
      h('td', {}, (d.affectedApps || []).join(', ')),
      h('td', {}, h('div', { class: 'progress', title: `step ${d.currentStep} of ${d.totalSteps}` },
        h('div', { style: `width:${d.totalSteps ? Math.round(((d.currentStep - 1) / d.totalSteps) * 100) : 0}%` })),
        h('span', { class: 'muted' }, `step ${d.currentStep} / ${d.totalSteps}`)),
      h('td', { class: 'wrap' }, (d.currentActions || []).map((a) => `${a.action} ${a.app}`).join(', ')),
      h('td', { class: 'wrap' }, d.lastFailure ? (d.lastFailure.message || JSON.stringify(d.lastFailure)) : '-'),
      h('td', {}, operatorOnly(h('button', { class: 'danger', onclick: async () => {
        if (await confirmAction(`Cancel deployment ${d.id}? berth rolls its apps back to what they were.`)) {
          act('cancel deployment', () => api('DELETE', `/v2/deployments/${encodeURIComponent(d.id)}`));
        }
      } }, 'Cancel'))))));
}

async function deploy(text) {
  let app;
  try { app = JSON.parse(text); } catch (e) { notify('The definition is not JSON: ' + e.message, true); return; }
  const id = String(app.id || '').replace(/^\//, '');
  let exists = false;
  try { await api('GET', '/v2/apps/' + encodeURIComponent(id)); exists = id !== ''; } catch (e) { if (e.status !== 404) { notify(e.message, true); return; } }
  const result = await act(exists ? `update of /${id}` : `deployment of /${id}`,
    (force) => (exists ? api('PUT', '/v2/apps/' + encodeURIComponent(id) + (force ? '?force=true' : ''), app) : api('POST', '/v2/apps', app)));
  if (result) location.hash = '#/apps/' + encodeURIComponent(id);
}

pages.app = (id) => {
  const path = '/v2/apps/' + encodeURIComponent(id);
  const scale = operatorOnly(h('input', { type: 'number', id: 'scale', min: '0', step: '1', 'aria-label': 'instances' }));
  replace('page',
    h('h1', {}, h('a', { href: '#/apps' }, 'Apps'), ' / ', id),
    h('div', { class: 'cards', id: 'app-summary' }),
    h('section', { class: 'panel' },
      h('div', { class: 'row' },
        scale,
        operatorOnly(h('button', { id: 'scale-apply', class: 'primary', onclick: () => act(`scale of /${id}`, (force) => api('PUT', path + (force ? '?force=true' : ''), { instances: Number(scale.value) })) }, 'Scale')),
        operatorOnly(h('button', { id: 'restart', onclick: async () => {
          if (await confirmAction(`Restart every task of /${id}? They are replaced as a rolling deployment.`)) act(`restart of /${id}`, (force) => api('POST', path + '/restart' + (force ? '?force=true' : '')));
        } }, 'Restart')),
        operatorOnly(h('button', { id: 'delete', class: 'danger', onclick: async () => {
          if (await confirmAction(`Delete /${id} and kill its tasks?`)) {
            if (await act(`deletion of /${id}`, () => api('DELETE', path))) location.hash = '#/apps';
          }
        } }, 'Delete')))),
    h('section', { class: 'panel' }, h('h2', {}, 'Tasks'), h('div', { class: 'scroll', id: 'app-tasks' })),
    h('section', { class: 'panel' }, h('h2', {}, 'Deployments'), h('div', { class: 'scroll', id: 'deployments' })),
    h('section', { class: 'panel' }, h('h2', {}, 'Definition'), h('pre', { class: 'mono scroll', id: 'app-definition' })));
  let first = true;
  return async () => {
    const [{ app }, usage, deployments] = await Promise.all([
      api('GET', path + '?embed=app.tasks&embed=app.lastTaskFailure').catch((e) => {
        if (e.status !== 404) throw e;
        replace('page', h('h1', {}, h('a', { href: '#/apps' }, 'Apps'), ' / ', id), h('p', {}, `There is no app /${id} (any more).`));
        current = null; // this page is done: refresh() stays quiet about the error below
        throw e;
      }),
      api('GET', '/v1/tasks?framework=marathon&state=running'),
      api('GET', '/v2/deployments?embed=lastFailure'),
    ]);
    if (first) { scale.value = app.instances; first = false; }
    const byId = new Map(usage.map((t) => [t.id, t]));
    replace('app-summary',
      card('Instances', app.instances, 'app-instances'),
      card('Running', app.tasksRunning, 'app-running'),
      card('Healthy', (app.healthChecks || []).length ? `${app.tasksHealthy} / ${app.tasksRunning}` : 'no checks', 'app-healthy'),
      card('Deployments', app.deployments.length, 'app-deployments'),
      card('Last failure', app.lastTaskFailure ? app.lastTaskFailure.message || app.lastTaskFailure.state : '-', 'app-failure'));
    replace('app-tasks', (app.tasks || []).length === 0 ? h('p', { class: 'muted' }, 'No tasks.') : h('table', { id: 'app-tasks-table' },
      h('tr', {}, ['Task', 'State', 'Health', 'Host', 'Ports', 'CPU', 'Memory', 'Started', ''].map((t) => h('th', {}, t))),
      app.tasks.map((t) => {
        const health = (t.healthCheckResults || []).length ? (t.healthCheckResults.every((r) => r.alive) ? 'yes' : 'no') : '-';
        return h('tr', { 'data-task': t.id },
          h('td', { class: 'mono' }, t.id),
          h('td', {}, state(t.state)),
          h('td', {}, health === '-' ? '-' : state(health)),
          h('td', {}, t.host),
          h('td', {}, (t.ports || []).join(', ')),
          usageCells(byId.get(t.id)),
          h('td', {}, t.startedAt || '-'),
          h('td', {}, taskButtons('marathon', t.id)));
      })));
    replace('deployments', deploymentsTable(deployments.filter((d) => (d.affectedApps || []).includes(app.id))));
    const definition = { ...app };
    delete definition.tasks;
    replace('app-definition', JSON.stringify(definition, null, 2));
  };
};

function usageCells(task) {
  const u = task && task.usage;
  if (!u) return [h('td', { class: 'muted' }, '-'), h('td', { class: 'muted' }, '-')];
  const r = task.resources;
  return [
    h('td', { class: 'usage-cpu' }, bar(u.cpus * 1000, r.milli_cpus, null, `${fmt.num(u.cpus, 2)} / ${fmt.cpus(r.milli_cpus)}`)),
    h('td', { class: 'usage-mem' }, bar(u.mem_mib, r.mem_mib, null, `${fmt.mib(u.mem_mib)} / ${fmt.mib(r.mem_mib)}`)),
  ];
}

function taskButtons(framework, id) {
  return h('span', { class: 'row' },
    operatorOnly(h('button', { class: 'logs', onclick: () => { location.hash = `#/tasks/${encodeURIComponent(framework)}/${encodeURIComponent(id)}`; } }, 'Logs')),
    operatorOnly(h('button', { class: 'kill danger', onclick: async () => {
      if (await confirmAction(`Kill task ${id}? Its framework decides whether to replace it.`)) {
        act(`kill of ${id}`, () => api('POST', `/v1/frameworks/${encodeURIComponent(framework)}/tasks/${encodeURIComponent(id)}/kill`));
      }
    } }, 'Kill')));
}

pages.tasks = (framework, taskId) => {
  const filters = {
    framework: h('select', { id: 'filter-framework', 'aria-label': 'framework' }, h('option', { value: '' }, 'all frameworks')),
    state: h('select', { id: 'filter-state', 'aria-label': 'state' },
      ['', 'running', 'staging', 'starting', 'killing', 'finished', 'failed', 'killed', 'lost'].map((x) => h('option', { value: x }, x || 'any state'))),
    text: h('input', { id: 'filter-text', type: 'search', placeholder: 'task id, host or image', 'aria-label': 'filter' }),
  };
  const logs = h('pre', { class: 'logs', id: 'logs' });
  replace('page',
    h('h1', {}, 'Tasks'),
    h('section', { class: 'panel', id: 'logs-panel', hidden: !taskId },
      h('div', { class: 'row' }, h('h2', { id: 'logs-title' }, taskId ? `Output of ${taskId}` : 'Output'),
        h('span', { class: 'muted', id: 'logs-state' }),
        h('button', { id: 'logs-stop', onclick: () => stopLogs('stopped') }, 'Stop following')),
      logs),
    h('section', { class: 'panel' },
      h('div', { class: 'row' }, filters.framework, filters.state, filters.text),
      h('div', { class: 'scroll', id: 'tasks' })));
  for (const el of Object.values(filters)) el.addEventListener('input', () => refresh());
  if (framework && taskId) followLogs(framework, taskId, logs);
  return async () => {
    for (const f of shared.frameworks) {
      if (![...filters.framework.options].some((o) => o.value === f.name)) filters.framework.append(h('option', { value: f.name }, f.name));
    }
    const query = new URLSearchParams();
    if (filters.framework.value) query.set('framework', filters.framework.value);
    if (filters.state.value) query.set('state', filters.state.value);
    const text = filters.text.value.trim().toLowerCase();
    const tasks = (await api('GET', '/v1/tasks?' + query)).filter((t) => !text ||
      [t.id, t.status.hostname || '', t.image].some((v) => v.toLowerCase().includes(text)));
    const shown = tasks.slice(-SHOWN_ROWS).reverse();
    replace('tasks', h('table', { id: 'tasks-table' },
      h('tr', {}, ['Framework', 'Task', 'State', 'Healthy', 'Host', 'Ports', 'CPU', 'Memory', 'Image', ''].map((t) => h('th', {}, t))),
      shown.map((t) => h('tr', { 'data-task': t.id },
        h('td', {}, t.framework),
        h('td', { class: 'mono' }, t.id),
        h('td', {}, state(t.status.state), t.status.message ? h('div', { class: 'muted wrap' }, t.status.message) : null),
        h('td', {}, t.status.healthy === null || t.status.healthy === undefined ? '-' : state(t.status.healthy ? 'yes' : 'no')),
        h('td', {}, t.status.hostname || '-'),
        h('td', {}, (t.resources.ports || []).map((p) => (p.begin === p.end ? p.begin : `${p.begin}-${p.end}`)).join(', ')),
        usageCells(t),
        h('td', { class: 'mono' }, t.image || '-'),
        h('td', {}, taskButtons(t.framework, t.id))))),
    tasks.length > shown.length ? h('p', { class: 'muted' }, `${tasks.length - shown.length} more tasks match (the newest ${SHOWN_ROWS} are drawn)`) : null);
  };
};

let logStream = null;

function stopLogs(why) {
  if (logStream) {
    logStream.abort();
    logStream = null;
    const el = document.getElementById('logs-state');
    if (el) el.textContent = why;
  }
}

async function followLogs(framework, id, pre) {
  stopLogs('');
  const controller = new AbortController();
  logStream = controller;
  const status = document.getElementById('logs-state');
  status.textContent = 'following…';
  const headers = { 'x-berth-console': '1', authorization: 'Bearer ' + session.token };
  try {
    const response = await fetch(`/v1/frameworks/${encodeURIComponent(framework)}/tasks/${encodeURIComponent(id)}/logs?follow=true&tail=500`,
      { headers, signal: controller.signal, cache: 'no-store' });
    if (!response.ok) {
      const body = await response.text();
      let message = body;
      try { message = JSON.parse(body).message; } catch { /* plain text */ }
      throw new Error(message || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      pre.textContent = (pre.textContent + decoder.decode(value, { stream: true })).slice(-LOG_LIMIT);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    status.textContent = 'the output ended';
  } catch (e) {
    if (e.name !== 'AbortError') status.textContent = 'cannot read the output: ' + e.message;
  } finally {
    if (logStream === controller) logStream = null;
  }
}

pages.plugins = () => {
  const file = h('input', { type: 'file', id: 'plugin-file', accept: '.wasm,application/wasm', 'aria-label': 'component file' });
  const name = h('input', { id: 'plugin-name', placeholder: 'name', 'aria-label': 'plugin name' });
  const kind = h('select', { id: 'plugin-kind', 'aria-label': 'kind' }, h('option', { value: 'allocator' }, 'allocator'), h('option', { value: 'framework' }, 'framework'));
  const config = h('input', { id: 'plugin-config', placeholder: 'config (allocators, optional)', 'aria-label': 'config' });
  const activate = h('input', { type: 'checkbox', id: 'plugin-activate', checked: true });
  replace('page',
    h('h1', {}, 'Plugins'),
    h('div', { class: 'cards', id: 'plugin-summary' }),
    h('div', { id: 'plugins' }),
    h('section', { class: 'panel' },
      h('h2', {}, 'Upload a version'),
      h('p', { class: 'muted' }, 'A WebAssembly component. Made active, it replaces the running version without a restart (a hot swap); the previous one stays loaded for a rollback.'),
      h('div', { class: 'row' }, file, name, kind, config, h('label', {}, activate, ' make it active'),
        operatorOnly(h('button', { id: 'upload', class: 'primary', onclick: () => upload(file, name.value.trim(), kind.value, config.value, activate.checked) }, 'Upload')))));
  file.addEventListener('change', () => {
    if (!name.value && file.files[0]) name.value = file.files[0].name.replace(/\.wasm$/, '');
  });
  return async () => {
    const plugins = shared.plugins;
    const allocator = plugins.find((p) => p.in_use_as_allocator);
    replace('plugin-summary',
      card('Allocator in use', allocator ? `${allocator.name} v${allocator.active_version}` : '-', 'allocator-in-use'),
      card('Plugins', plugins.length, 'plugins-count'));
    replace('plugins', plugins.map((p) => h('section', { class: 'panel', 'data-plugin': p.name },
      h('div', { class: 'row' },
        h('h2', {}, `${p.name} `, h('span', { class: 'muted' }, `${p.kind}, v${p.active_version} active`)),
        sparkline((history.p99.get(p.name) || []).map((x) => x[1]), `p99 call latency of ${p.name}, recent`),
        p.in_use_as_allocator ? state('in use') : null,
        p.frameworks.length ? h('span', { class: 'muted' }, 'runs ' + p.frameworks.join(', ')) : null,
        operatorOnly(h('button', { class: 'rollback', disabled: p.versions.length < 2 || !session.operator, onclick: async () => {
          if (await confirmAction(`Roll ${p.name} back to the version that was active before v${p.active_version}?`)) {
            act(`rollback of ${p.name}`, () => api('POST', `/v1/plugins/${encodeURIComponent(p.name)}/rollback`));
          }
        } }, 'Roll back')),
        p.kind === 'allocator' && !p.in_use_as_allocator ? operatorOnly(h('button', { class: 'use-allocator', onclick: async () => {
          if (await confirmAction(`Make ${p.name} the allocator? The next offer cycle uses it.`)) {
            act(`allocator ${p.name}`, () => api('PUT', '/v1/allocator', { name: p.name }));
          }
        } }, 'Use as allocator')) : null),
      h('div', { class: 'scroll' }, h('table', {},
        h('tr', {}, ['Version', '', 'Calls', 'p50', 'p99', 'Traps', 'Deadline', 'Memory', 'Limits', 'Peak memory', 'Loaded', 'sha256', ''].map((t) => h('th', {}, t))),
        p.versions.slice().reverse().map((v) => h('tr', { 'data-version': v.version, class: v.active ? 'active' : '' },
          h('td', {}, 'v' + v.version),
          h('td', {}, v.active ? state('active') : v.rolled_back ? h('span', { class: 'state error', title: v.rolled_back }, 'rolled back') : ''),
          h('td', {}, v.stats.calls),
          h('td', {}, fmt.us(v.stats.p50_us)),
          h('td', {}, fmt.us(v.stats.p99_us)),
          h('td', {}, v.stats.traps),
          h('td', {}, v.stats.deadline_exceeded),
          h('td', {}, v.stats.memory_exceeded),
          h('td', {}, v.stats.limits_exceeded),
          h('td', {}, fmt.mib(v.stats.peak_memory_bytes / 1048576)),
          h('td', {}, fmt.ago(v.loaded_at_ms)),
          h('td', { class: 'mono', title: v.sha256 }, v.sha256.slice(0, 12)),
          h('td', {}, v.active ? '' : operatorOnly(h('button', { class: 'activate', onclick: async () => {
            if (await confirmAction(`Make v${v.version} of ${p.name} the active version (a hot swap)?`)) {
              act(`activation of ${p.name} v${v.version}`, () => api('POST', `/v1/plugins/${encodeURIComponent(p.name)}/activate`, { version: v.version }));
            }
          } }, 'Activate'))))))))));
  };
};

async function upload(file, name, kind, config, activate) {
  const f = file.files[0];
  if (!f) { notify('Choose a .wasm component first.', true); return; }
  if (!name) { notify('Give the plugin a name.', true); return; }
  const existing = shared.plugins.find((p) => p.name === name);
  if (existing && activate && !(await confirmAction(`Hot-swap ${name}: make the uploaded component its active version, replacing v${existing.active_version}?`))) return;
  const query = new URLSearchParams({ kind });
  if (!activate) query.set('inactive', 'true');
  if (config) query.set('config', config);
  await act(`upload of ${name}`, async () => {
    const v = await api('POST', `/v1/plugins/${encodeURIComponent(name)}/versions?${query}`, f, { type: 'application/wasm' });
    await sample();
    return v;
  });
}

// ---- login, routing, polling -------------------------------------------------------------------

async function checkToken() {
  try {
    session.operator = (await api('GET', '/v1/whoami')).operator;
  } catch {
    session.operator = false;
  }
  const who = document.getElementById('whoami');
  who.textContent = session.operator ? 'operator' : 'read-only';
  who.className = session.operator ? 'operator' : '';
  document.getElementById('token').hidden = session.operator;
  document.getElementById('login').hidden = session.operator;
  document.getElementById('logout').hidden = !session.operator;
}

async function login(event) {
  event.preventDefault();
  const input = document.getElementById('token');
  session.token = input.value.trim();
  input.value = '';
  await checkToken();
  if (session.operator) {
    sessionStorage.setItem('berth.token', session.token);
    notify('Logged in as the operator.');
  } else {
    session.token = sessionStorage.getItem('berth.token') || '';
    notify('That token is not the operator token.', true);
  }
  route();
}

function logout() {
  sessionStorage.removeItem('berth.token');
  session.token = '';
  checkToken().then(route);
}

function route() {
  stopLogs('');
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  let [name, ...rest] = parts;
  if (!pages[name]) name = 'overview';
  if (name === 'apps' && rest.length) { name = 'app'; rest = [rest.join('/')]; }
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('current', a.dataset.page === (name === 'app' ? 'apps' : name));
  current = { name, refresh: pages[name](...rest) };
  refresh();
}

let refreshing = null;
let again = false;
async function refresh() {
  if (!current) return undefined;
  if (refreshing) {
    again = true; // the page may have changed meanwhile: refresh once more when this one ends
    return refreshing;
  }
  const page = current;
  refreshing = (async () => {
    try {
      await sample();
      if (shared.error && shared.error.status === 401) {
        replace('page', h('h1', {}, 'Log in'), h('p', {}, "This master's reads are protected: log in with the operator token (berth prints where it keeps it when it starts)."));
        current = null;
        return;
      }
      await page.refresh();
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) {
      if (page === current) notify(e.message, true);
    } finally {
      refreshing = null;
      if (again) {
        again = false;
        refresh();
      }
    }
  })();
  return refreshing;
}

document.getElementById('login-form').addEventListener('submit', login);
document.getElementById('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
checkToken().then(route);
