// mlnet-peft ui: the page. Plain ES2020, no libraries; talks to the HTTP API of docs/ui.md.
'use strict';

(() => {
  const STEPS = ['scenario', 'data', 'training', 'evaluation', 'try', 'consume'];
  const FINAL = new Set(['completed', 'failed', 'cancelled', 'interrupted']);
  const ACTIVE = new Set(['queued', 'training']);
  const SEPARATORS = { '\t': 'TAB', ',': 'COMMA', ';': 'SEMICOLON', '|': 'PIPE', TAB: 'TAB', COMMA: 'COMMA', SEMICOLON: 'SEMICOLON', PIPE: 'PIPE', '\\t': 'TAB' };
  const COLORS = ['#2f5f98', '#d9822b', '#2e8b57', '#b3261e', '#7b52ab', '#0f8b8d', '#8c6d1f', '#c2185b', '#546e7a', '#6b8e23'];
  const METRIC_LABELS = {
    accuracy: 'Accuracy', microAccuracy: 'Micro accuracy', macroAccuracy: 'Macro accuracy', macroF1: 'Macro F1', microF1: 'Micro F1',
    f1: 'F1', precision: 'Precision', recall: 'Recall', logLoss: 'Log loss', auc: 'AUC', pearson: 'Pearson correlation',
    spearman: 'Spearman correlation', mse: 'Mean squared error', rmse: 'Root mean squared error', mae: 'Mean absolute error',
    rSquared: 'R²', topKAccuracy: 'Top-k accuracy', top5Accuracy: 'Top-5 accuracy', rows: 'Test rows',
    map50: 'mAP@0.5', map: 'mAP@[0.5:0.95]', map75: 'mAP@0.75',
  };

  const state = {
    scenarios: null,      // [{id, name, ...}]
    run: null,            // the open run
    step: null,           // the step shown, or null for the runs view
    events: null,         // the EventSource of the open run
    training: null,       // what the events said so far
    countdown: null,      // {base, at} for #time-left
    renderTimer: 0,
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showError(target, message, details) {
    const box = typeof target === 'string' ? $(target) : target;
    if (!box) return;
    box.textContent = '';
    if (!message) { box.hidden = true; return; }
    box.append(message);
    if (details) box.append(el('pre', null, details));
    box.hidden = false;
  }

  function clearError(target) { showError(target, ''); }

  // ---- HTTP ----

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError('The app does not answer (is `mlnet-peft ui` still running?).', 0);
    }
    const type = response.headers.get('Content-Type') || '';
    let payload = null;
    if (type.includes('json')) {
      try { payload = await response.json(); } catch (e) { payload = null; }
    } else {
      payload = await response.text().catch(() => '');
    }
    if (!response.ok) {
      let message = payload && typeof payload === 'object' && payload.error ? payload.error
        : (typeof payload === 'string' && payload.trim() ? payload.trim().slice(0, 500) : `${response.status} ${response.statusText}`);
      if (response.status === 401) message = 'Not signed in: open the URL with the token that `mlnet-peft ui` printed when it started.';
      throw new ApiError(message, response.status);
    }
    return payload;
  }

  const runPath = (suffix = '') => `/api/runs/${encodeURIComponent(state.run.id)}${suffix}`;

  // ---- formatting ----

  function fmtNumber(v, digits = 4) {
    if (v === null || v === undefined || v === '') return '—';
    if (typeof v !== 'number') return String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    const abs = Math.abs(v);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return v.toExponential(2);
    return Number(v.toFixed(digits)).toString();
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '—';
    s = Math.max(0, Math.round(s));
    const m = Math.floor(s / 60), sec = s % 60;
    if (m >= 60) return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
    return m > 0 ? `${m}:${String(sec).padStart(2, '0')}` : `${sec} s`;
  }

  function fmtDate(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString('en-GB', { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  }

  function metricLabel(key) {
    if (!key) return 'Metric';
    if (METRIC_LABELS[key]) return METRIC_LABELS[key];
    const words = String(key).replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function statusText(status, queuePosition) {
    switch (status) {
      case 'new': return 'No data yet';
      case 'ready': return 'Ready to train';
      case 'queued': return queuePosition ? `Queued (position ${queuePosition})` : 'Queued';
      case 'training': return 'Training…';
      case 'completed': return 'Completed';
      case 'failed': return 'Failed';
      case 'cancelled': return 'Cancelled';
      case 'interrupted': return 'Interrupted (the app stopped during training)';
      default: return status ? String(status) : '—';
    }
  }

  function scenarioOf(run) {
    return (state.scenarios || []).find(s => s.id === (run && run.scenario)) || null;
  }

  // The fields of auto's metrics JSON that are not test metrics (the server may pass that JSON as it is, metrics at the top).
  const RESULT_FIELDS = new Set(['task', 'metric', 'metricName', 'metrics', 'validationMetric', 'trainSeconds', 'budgetSeconds', 'refitted',
    'refitSeconds', 'refitEpochs', 'trials', 'trainableParameters', 'totalParameters', 'modelBytes', 'best', 'leaderboard', 'seed',
    // recommendation's metrics JSON: sizes and settings beside rmse and mae
    'testRows', 'users', 'items', 'rank', 'modelKind', 'newUsers', 'newItems',
    // object-detection's metrics JSON: sizes and settings beside map50, map and map75
    'perClassAp50', 'testImagesPerSecond', 'method', 'epochs', 'imageSize', 'trainImages', 'testImages', 'testBoxes', 'classes']);

  // Whether a scenario has a role (a column to map): label, text, text2, user, item.
  const hasRole = (s, role) => !!s && (s.roles || []).includes(role);

  function normalizeResult(r) {
    if (!r || typeof r !== 'object') return null;
    let metrics = r.metrics && typeof r.metrics === 'object' && !Array.isArray(r.metrics) ? r.metrics : null;
    if (!metrics) {
      metrics = {};
      for (const [k, v] of Object.entries(r)) if (!RESULT_FIELDS.has(k) && typeof v === 'number' && Number.isFinite(v)) metrics[k] = v;
    }
    return { ...r, metrics, metricName: r.metricName || r.metric || null };
  }

  function testMetric(run) {
    const r = normalizeResult(run && run.result);
    if (!r || !r.metrics) return null;
    const keys = Object.keys(r.metrics);
    if (!keys.length) return null;
    const key = (r.metricName && r.metricName in r.metrics) ? r.metricName : keys[0];
    return { key, value: r.metrics[key] };
  }

  // ---- views and steps ----

  function stepReachable(step, run) {
    if (step === 'scenario') return true;
    if (!run) return false;
    if (step === 'data') return true;
    if (step === 'training') return !!run.columns || !['new'].includes(run.status);
    return run.status === 'completed';
  }

  function furthestStep(run) {
    switch (run.status) {
      case 'completed': return 'evaluation';
      case 'new': return 'data';
      default: return stepReachable('training', run) ? 'training' : 'data';
    }
  }

  function updateHeader() {
    const run = state.run;
    const box = $('#header-run');
    if (!run || state.step === null) { box.hidden = true; return; }
    box.hidden = false;
    $('#header-run-name').textContent = run.name || run.id;
    const badge = $('#header-run-status');
    badge.textContent = run.status;
    badge.className = `badge ${run.status}`;
  }

  function updateSteps() {
    const current = state.step;
    for (const button of $$('#steps button[data-step]')) {
      const step = button.dataset.step;
      button.disabled = !stepReachable(step, state.run);
      if (step === current) button.setAttribute('aria-current', 'step');
      else button.removeAttribute('aria-current');
      const index = STEPS.indexOf(step);
      button.classList.toggle('done', !!state.run && index < STEPS.indexOf(current) && !button.disabled);
    }
    updateHeader();
  }

  function showView(id) {
    for (const view of $$('.view')) view.hidden = view.id !== id;
    $('#sidebar').hidden = id === 'runs-view';
    window.scrollTo(0, 0);
  }

  function setHash() {
    const hash = state.step === null ? '' : state.run ? `#run=${encodeURIComponent(state.run.id)}&step=${state.step}` : '#new';
    if (location.hash !== hash) history.replaceState(null, '', hash || location.pathname + location.search);
  }

  function focusHeading(section) {
    const h = $('h1', section);
    if (h) { h.tabIndex = -1; h.focus({ preventScroll: true }); }
  }

  async function goStep(step, { focus = true } = {}) {
    if (!STEPS.includes(step)) step = 'scenario';
    if (!stepReachable(step, state.run)) step = state.run ? furthestStep(state.run) : 'scenario';
    state.step = step;
    showView(`step-${step}`);
    updateSteps();
    setHash();
    if (step !== 'training') stopCountdown();
    try {
      switch (step) {
        case 'scenario': await renderScenarioStep(); break;
        case 'data': renderDataStep(); break;
        case 'training': renderTrainingStep(); break;
        case 'evaluation': renderEvaluationStep(); break;
        case 'try': renderTryStep(); break;
        case 'consume': await renderConsumeStep(); break;
      }
    } catch (e) {
      showError('#app-error', e.message || String(e));
    }
    if (focus) focusHeading($(`#step-${step}`));
  }

  async function goHome() {
    closeEvents();
    stopCountdown();
    state.run = null;
    state.step = null;
    state.training = null;
    showView('runs-view');
    updateSteps();
    setHash();
    await loadRuns();
    focusHeading($('#runs-view'));
  }

  function setRun(run) {
    state.run = run;
    updateSteps();
  }

  async function refreshRun() {
    if (!state.run) return null;
    const run = await api('GET', runPath());
    if (state.run && state.run.id === run.id) setRun(run);
    return run;
  }

  // ---- runs ----

  async function ensureScenarios() {
    if (state.scenarios) return state.scenarios;
    state.scenarios = await api('GET', '/api/scenarios');
    return state.scenarios;
  }

  async function loadRuns() {
    const list = $('#runs-list');
    clearError('#runs-error');
    let runs;
    try {
      await ensureScenarios().catch(() => null);
      runs = await api('GET', '/api/runs');
    } catch (e) {
      showError('#runs-error', e.message);
      return;
    }
    list.textContent = '';
    $('#runs-empty').hidden = runs.length > 0;
    // While a run trains or waits, the list follows it.
    clearTimeout(state.runsTimer);
    if (runs.some(r => ACTIVE.has(r.status))) {
      state.runsTimer = setTimeout(() => { if (state.step === null) loadRuns(); }, 4000);
    }
    for (const run of runs) {
      const scenario = scenarioOf(run);
      const metric = testMetric(run);
      const button = el('button', { type: 'button', class: 'run-open', 'data-run-id': run.id },
        el('span', { class: 'run-name' }, run.name || run.id), ' ',
        el('span', { class: 'run-scenario' }, scenario ? scenario.name : run.scenario), ' ',
        el('span', null, el('span', { class: `badge ${run.status}` }, run.status === 'queued' && run.queuePosition ? `queued (${run.queuePosition})` : run.status)), ' ',
        el('span', { class: 'run-metric' }, metric ? `${metricLabel(metric.key)} ${fmtNumber(metric.value)}` : ''), ' ',
        el('span', { class: 'run-date' }, fmtDate(run.updated || run.created)));
      button.setAttribute('aria-label', `${run.name || run.id}, ${scenario ? scenario.name : run.scenario}, ${run.status}${metric ? `, ${metricLabel(metric.key)} ${fmtNumber(metric.value)}` : ''}`);
      button.addEventListener('click', () => openRun(run.id));
      list.append(el('li', null, button));
    }
  }

  async function openRun(id, step) {
    clearError('#app-error');
    try {
      await ensureScenarios();
      const run = await api('GET', `/api/runs/${encodeURIComponent(id)}`);
      closeEvents();
      state.training = null;
      setRun(run);
      await goStep(step && stepReachable(step, run) ? step : furthestStep(run));
    } catch (e) {
      if (state.step === null) showError('#runs-error', e.message);
      else showError('#app-error', e.message);
    }
  }

  async function newRun() {
    closeEvents();
    state.run = null;
    state.training = null;
    clearError('#app-error');
    $('#run-name').value = '';
    await goStep('scenario');
  }

  // ---- step 1: scenario ----

  async function renderScenarioStep() {
    clearError('#scenario-error');
    const list = $('#scenario-list');
    let scenarios;
    try {
      scenarios = await ensureScenarios();
    } catch (e) {
      showError('#scenario-error', e.message);
      return;
    }
    const existing = state.run;
    const checked = existing ? existing.scenario : ($('input[name="scenario"]:checked', list) || {}).value || (scenarios[0] && scenarios[0].id);
    list.textContent = '';
    for (const s of scenarios) {
      const id = `scenario-${s.id}`;
      const kind = s.data === 'images' ? 'A folder of images, one sub-folder per class'
        : s.data === 'detection' ? 'A folder of images with their boxes: a labels CSV or Pascal VOC XML files'
        : s.data === 'conll' ? 'A CoNLL file: one word and its tag a line'
          : 'A delimited text file (TSV, CSV)';
      list.append(el('label', { class: 'scenario-card', for: id },
        el('input', { type: 'radio', name: 'scenario', id, value: s.id, checked: s.id === checked, disabled: !!existing }),
        el('span', null,
          el('span', { class: 'scenario-title' }, s.name),
          el('span', { class: 'scenario-desc' }, s.description || ''),
          el('span', { class: 'scenario-meta' }, kind))));
    }
    const name = $('#run-name');
    name.readOnly = !!existing;
    if (existing) name.value = existing.name || '';
    $('#scenario-next').textContent = existing ? 'Next: data' : 'Create the run';
  }

  async function submitScenario(event) {
    event.preventDefault();
    clearError('#scenario-error');
    if (state.run) { await goStep('data'); return; }
    const chosen = $('input[name="scenario"]:checked');
    if (!chosen) { showError('#scenario-error', 'Choose a scenario.'); return; }
    const button = $('#scenario-next');
    button.disabled = true;
    try {
      const name = $('#run-name').value.trim();
      const run = await api('POST', '/api/runs', name ? { scenario: chosen.value, name } : { scenario: chosen.value });
      setRun(run);
      await goStep('data');
    } catch (e) {
      showError('#scenario-error', e.message);
    } finally {
      button.disabled = false;
    }
  }

  // ---- step 2: data ----

  function columnNames(data, hasHeader) {
    const preview = data.preview || { columns: [], rows: [] };
    const count = Math.max(preview.columns ? preview.columns.length : 0, data.header ? data.header.length : 0,
      ...(preview.rows || []).map(r => r.length));
    if (hasHeader) {
      const names = data.header && data.header.length ? data.header : (preview.rows && preview.rows[0]) || [];
      return Array.from({ length: count }, (_, i) => (names[i] !== undefined && names[i] !== '' ? String(names[i]) : String(i)));
    }
    return Array.from({ length: count }, (_, i) => String(i));
  }

  function fillColumnSelect(select, names, wanted) {
    const previousIndex = select.selectedIndex;
    select.textContent = '';
    names.forEach((n, i) => select.append(el('option', { value: n }, n === String(i) ? `Column ${i}` : `${n}`)));
    if (!setSelectValue(select, wanted) && previousIndex >= 0 && previousIndex < names.length) select.selectedIndex = previousIndex;
  }

  function setSelectValue(select, wanted) {
    if (wanted === null || wanted === undefined || wanted === '') return false;
    const v = String(wanted);
    const option = Array.from(select.options).find(o => o.value === v);
    if (option) { select.value = v; return true; }
    if (/^\d+$/.test(v) && Number(v) < select.options.length) { select.selectedIndex = Number(v); return true; }
    return false;
  }

  function renderPreview(data) {
    const table = $('#preview-table');
    table.textContent = '';
    const preview = data.preview || { columns: [], rows: [] };
    const columns = preview.columns && preview.columns.length ? preview.columns
      : columnNames(data, false);
    const roles = currentRoles();
    const roleOf = (i, name) => Object.entries(roles).filter(([, v]) => v !== null && (v === name || v === String(i))).map(([k]) => k);
    table.append(el('caption', { class: 'muted', style: 'caption-side: bottom; text-align: left; padding-top: .4rem' },
      `The first ${preview.rows ? preview.rows.length : 0} rows.`));
    table.append(el('thead', null, el('tr', null, columns.map((c, i) => {
      const r = roleOf(i, c);
      return el('th', { scope: 'col', class: r.length ? 'role' : null }, String(c), r.length ? el('span', { class: 'role-tag' }, r.join(', ')) : null);
    }))));
    table.append(el('tbody', null, (preview.rows || []).map(row =>
      el('tr', null, columns.map((_, i) => el('td', { title: row[i] !== undefined ? String(row[i]) : '' }, row[i] !== undefined ? String(row[i]) : ''))))));
  }

  function currentRoles() {
    const s = scenarioOf(state.run);
    const roles = {};
    if (!s) return roles;
    const want = new Set(s.roles || []);
    if (s.data === 'delimited') {
      if (want.has('user')) roles.user = $('#user-col').value;
      if (want.has('item')) roles.item = $('#item-col').value;
      if (want.has('label')) roles[want.has('user') ? 'rating' : 'label'] = $('#label-col').value;
      if (want.has('text')) roles.text = $('#text-col').value;
      if (want.has('text2')) roles.text2 = $('#text2-col').value;
    } else if (s.data === 'conll') {
      roles.tags = $('#tag-col').value;
    }
    return roles;
  }

  function renderDataStep() {
    const run = state.run;
    const s = scenarioOf(run) || { data: 'delimited', roles: ['label', 'text'] };
    clearError('#columns-error');
    // The last refused upload's message stays until the next attempt.
    if (run.error && run.status === 'new') showError('#data-error', run.error);
    else clearError('#data-error');
    $('#data-busy').textContent = '';
    const detection = s.data === 'detection';
    const images = s.data === 'images' || detection;
    $('#upload-file-field').hidden = images;
    $('#upload-folder-field').hidden = !images;
    $('#upload-folder-hint').textContent = detection ? '(the images and a labels CSV or Pascal VOC XML files)' : '(one sub-folder per class)';
    const ratings = hasRole(s, 'user');
    $('#upload-file-hint').textContent = s.data === 'conll' ? '(CoNLL: a word and its tags a line, a blank line between sentences)'
      : ratings ? '(delimited text: a user id, an item id and a rating a row)' : '(delimited text: TSV, CSV)';
    $('#server-path').placeholder = detection ? '/data/raccoon (images and labels.csv), or /data/raccoon/labels.csv'
      : images ? '/data/pets (one sub-folder per class)' : s.data === 'conll' ? '/data/train.conll' : ratings ? '/data/ratings.tsv' : '/data/reviews.tsv';
    $('#data-lead').textContent = detection
      ? 'Upload a folder holding the images and their boxes: a labels CSV (filename,width,height,class,xmin,ymin,xmax,ymax, one row per box) or Pascal VOC XML files; or give the path of such a folder (or of the CSV) on the machine that runs the app. A fifth of the images is held out for testing.'
      : images
      ? 'Upload a folder of images with one sub-folder per class (the sub-folder names are the labels), or give a path on the machine that runs the app.'
      : s.validation === false ? 'Upload the training data, or give a path on the machine that runs the app. Part of it is held out for testing.'
        : 'Upload the training data, or give a path on the machine that runs the app. Part of it is held out for validation and testing.';
    renderData();
  }

  function renderData() {
    const run = state.run;
    const s = scenarioOf(run) || { data: 'delimited', roles: ['label', 'text'] };
    const data = run.data;
    $('#data-details').hidden = !data;
    $('#data-next').disabled = !data || ACTIVE.has(run.status);
    if (!data) return;

    const cols = run.columns || {};
    const delimited = s.data === 'delimited';
    const roles = new Set(s.roles || []);
    const detection = s.data === 'detection';
    const rows = data.rows !== null && data.rows !== undefined ? `${fmtNumber(data.rows)} ${s.data === 'images' || detection ? 'images' : s.data === 'conll' ? 'sentences' : 'rows'}` : '';
    const boxes = typeof data.boxes === 'number' ? `${fmtNumber(data.boxes)} boxes` : '';
    $('#data-summary').textContent = [data.name, rows, boxes].filter(Boolean).join(' · ');
    if (data.note) $('#data-summary').append(el('span', { class: 'muted block' }, data.note));

    $('#columns-title').textContent = delimited ? 'Columns' : s.data === 'conll' ? 'Columns and split' : detection ? 'Split' : 'Validation split';
    $('#detection-split-note').hidden = !detection;
    $('#class-counts-title').textContent = detection ? 'Classes (boxes)' : 'Classes';
    $('#thumbnails-title').textContent = detection ? 'Sample images with their boxes' : 'Sample images';
    $('#thumbnails').classList.toggle('boxes', detection);
    $('#has-header-field').hidden = !delimited;
    $('#separator-field').hidden = !delimited;
    const hasHeader = cols.hasHeader !== undefined && cols.hasHeader !== null ? !!cols.hasHeader : !!data.hasHeader;
    $('#has-header').checked = hasHeader;
    const sep = SEPARATORS[cols.separator || data.separator] || 'TAB';
    $('#separator').value = sep;

    const detected = data.detected || {};
    const names = columnNames(data, hasHeader);
    const show = (id, on) => { $(`#${id}-field`).hidden = !on; };
    show('user-col', delimited && roles.has('user'));
    show('item-col', delimited && roles.has('item'));
    show('label-col', delimited && roles.has('label'));
    $('#label-col-label').textContent = roles.has('user') ? 'Rating column' : 'Label column';
    $('#validation-fraction-field').hidden = s.validation === false;
    show('text-col', delimited && roles.has('text'));
    show('text2-col', delimited && roles.has('text2'));
    show('tag-col', s.data === 'conll');
    if (delimited) {
      fillColumnSelect($('#user-col'), names, cols.user ?? detected.user);
      fillColumnSelect($('#item-col'), names, cols.item ?? detected.item);
      fillColumnSelect($('#label-col'), names, cols.label ?? detected.label);
      fillColumnSelect($('#text-col'), names, cols.text ?? detected.text);
      fillColumnSelect($('#text2-col'), names, cols.text2 ?? detected.text2);
    }
    if (s.data === 'conll') {
      const tagSelect = $('#tag-col');
      tagSelect.textContent = '';
      const count = names.length;
      for (let i = 1; i < count; i++) tagSelect.append(el('option', { value: String(i) }, `Column ${i}`));
      if (!setSelectValue(tagSelect, cols.tagColumn ?? detected.tagColumn) && tagSelect.options.length) tagSelect.selectedIndex = tagSelect.options.length - 1;
    }
    const fraction = cols.validationFraction;
    $('#validation-fraction').value = fraction ? String(Math.round(fraction * 100)) : '20';

    renderPreview(data);

    const classes = data.classes || [];
    $('#class-counts-card').hidden = classes.length === 0;
    const list = $('#class-counts');
    list.textContent = '';
    const max = Math.max(1, ...classes.map(c => c.count || 0));
    for (const c of classes) {
      const pct = Math.round(100 * (c.count || 0) / max);
      list.append(el('li', { 'data-class': c.name },
        el('span', { class: 'class-name', title: c.name }, c.name),
        el('span', { class: 'bar', 'aria-hidden': 'true' }, el('span', { style: `width:${pct}%` })),
        el('span', { class: 'class-count' }, fmtNumber(c.count))));
    }

    const thumbs = $('#thumbnails');
    thumbs.textContent = '';
    const images = data.images || [];
    $('#thumbnails-card').hidden = images.length === 0;
    for (const img of images.slice(0, 48)) {
      const side = detection ? 160 : 96;
      const image = el('img', { src: `${runPath('/thumbnail')}?file=${encodeURIComponent(img.file)}`, alt: `${img.label || ''} ${img.file}`.trim(), loading: 'lazy', width: side, height: side });
      image.addEventListener('error', () => { image.alt = `Could not load ${img.file}`; image.removeAttribute('src'); });
      thumbs.append(el('figure', null, image, el('figcaption', { title: img.file }, img.label || img.file)));
    }
  }

  async function sendData(body, label) {
    clearError('#data-error');
    clearError('#columns-error');
    const busy = $('#data-busy');
    busy.textContent = `Reading ${label}…`;
    const controls = ['#upload-file', '#upload-folder', '#server-path-load', '#data-next'].map(s => $(s));
    controls.forEach(c => { c.disabled = true; });
    try {
      const run = await api('POST', runPath('/data'), body);
      setRun(run);
      busy.textContent = run.data ? `Loaded ${run.data.name}.` : '';
      renderData();
    } catch (e) {
      busy.textContent = '';
      showError('#data-error', e.message);
    } finally {
      controls.forEach(c => { c.disabled = false; });
      $('#data-next').disabled = !state.run || !state.run.data;
    }
  }

  async function uploadFile() {
    const input = $('#upload-file');
    const file = input.files && input.files[0];
    if (!file) return;
    const form = new FormData();
    form.append('files', file, file.name);
    await sendData(form, file.name);
    input.value = '';
  }

  async function uploadFolder() {
    const input = $('#upload-folder');
    const files = Array.from(input.files || []).filter(f => !f.name.startsWith('.'));
    if (!files.length) { showError('#data-error', 'The folder holds no files.'); return; }
    const form = new FormData();
    for (const f of files) {
      // The relative path (folder/class/image.jpg) tells the server each image's class, or where the labels and images are.
      const rel = f.webkitRelativePath || f.name;
      form.append('files', f, rel);
    }
    const root = (files[0].webkitRelativePath || '').split('/')[0] || 'the folder';
    await sendData(form, `${root} (${files.length} files)`);
    input.value = '';
  }

  async function loadServerPath(event) {
    event.preventDefault();
    const path = $('#server-path').value.trim();
    if (!path) { showError('#data-error', 'Type the path of a file or folder on the machine that runs the app.'); return; }
    await sendData({ path }, path);
  }

  function onHeaderToggle() {
    const run = state.run;
    if (!run || !run.data) return;
    const s = scenarioOf(run);
    if (!s || s.data !== 'delimited') return;
    const names = columnNames(run.data, $('#has-header').checked);
    for (const id of ['#user-col', '#item-col', '#label-col', '#text-col', '#text2-col']) {
      const select = $(id);
      const index = select.selectedIndex;
      fillColumnSelect(select, names, null);
      if (index >= 0 && index < names.length) select.selectedIndex = index;
    }
    renderPreview(run.data);
  }

  async function submitColumns() {
    clearError('#columns-error');
    const run = state.run;
    const s = scenarioOf(run) || { data: 'delimited', roles: [] };
    const validation = s.validation !== false;
    const pct = Number($('#validation-fraction').value);
    if (validation && (!Number.isFinite(pct) || pct < 10 || pct > 40)) {
      showError('#columns-error', 'The validation split is a percentage from 10 to 40.');
      $('#validation-fraction').focus();
      return;
    }
    const roles = new Set(s.roles || []);
    const delimited = s.data === 'delimited';
    const body = {
      label: delimited && roles.has('label') ? $('#label-col').value : null,
      text: delimited && roles.has('text') ? $('#text-col').value : null,
      text2: delimited && roles.has('text2') ? $('#text2-col').value : null,
      user: delimited && roles.has('user') ? $('#user-col').value : null,
      item: delimited && roles.has('item') ? $('#item-col').value : null,
      hasHeader: delimited ? $('#has-header').checked : false,
      separator: delimited ? $('#separator').value : null,
      validationFraction: validation ? Math.round(pct) / 100 : null,
      tagColumn: s.data === 'conll' && $('#tag-col').value !== '' ? Number($('#tag-col').value) : null,
    };
    if (delimited) {
      const used = [body.label, body.text, body.text2, body.user, body.item].filter(v => v !== null);
      if (new Set(used).size !== used.length) {
        showError('#columns-error', roles.has('user') ? 'Each role needs its own column: the user, item and rating columns must differ.'
          : 'Each role needs its own column: the label and text columns must differ.');
        return;
      }
    }
    const button = $('#data-next');
    button.disabled = true;
    try {
      const updated = await api('PUT', runPath('/columns'), body);
      setRun(updated);
      await goStep('training');
    } catch (e) {
      showError('#columns-error', e.message);
    } finally {
      button.disabled = !state.run || !state.run.data;
    }
  }

  // ---- step 3: training ----

  function emptyTraining() {
    return { search: null, trials: new Map(), done: null, status: null, error: null, queuePosition: null, message: '', lastElapsed: 0 };
  }

  function renderTrainingStep() {
    const run = state.run;
    const s = scenarioOf(run) || { methods: [], defaultMethod: null };
    const method = $('#method');
    method.textContent = '';
    for (const m of s.methods || []) method.append(el('option', { value: m }, m));
    const t = run.training || {};
    setSelectValue(method, t.method || s.defaultMethod);
    // A scenario without a search (budget: false) trains the chosen method; it may offer the number of passes.
    const budget = s.budget !== false;
    $('#mode-budget-option').hidden = !budget;
    $('#train-time-field').hidden = !budget;
    $('#passes-field').hidden = !s.passes;
    $('#passes-label').textContent = s.data === 'detection' ? 'Epochs (passes over the images)' : 'Passes over the data';
    $('#passes').value = t.iterations ? String(t.iterations) : '';
    $('#training-lead').textContent = budget
      ? 'The search tries PEFT methods and settings within the time you give, then refits the best one and measures it on held-out test rows.'
      : 'Trains the chosen model on the data, showing the training loss after each pass, then measures it on held-out test rows.';
    $('#mode-method-hint').textContent = budget ? 'Search the settings of one method.' : 'Train this model with its default settings.';
    const mode = !budget || t.mode === 'method' ? 'method' : 'budget';
    for (const r of $$('input[name="train-mode"]')) r.checked = r.value === mode;
    if (t.trainTime) $('#train-time').value = String(t.trainTime);
    onModeChange();
    clearError('#training-error');

    if (!state.events) {
      state.training = emptyTraining();
      state.training.status = run.status;
      renderTraining();
      if (run.status !== 'new' && run.status !== 'ready') openEvents();
    } else {
      renderTraining();
    }
    updateTrainingControls();
  }

  function onModeChange() {
    const mode = ($('input[name="train-mode"]:checked') || {}).value;
    const active = ACTIVE.has(state.run && state.run.status);
    $('#method').disabled = mode !== 'method' || active;
    $('#passes').disabled = active;
    updatePassesHint();
  }

  function updatePassesHint() {
    const s = scenarioOf(state.run);
    if (!s || !s.passes) return;
    const passes = s.passes[$('#method').value];
    $('#passes').placeholder = passes ? String(passes) : '';
    $('#passes-hint').textContent = passes ? `Empty: ${passes}, the default of ${$('#method').value}.` : "Empty: the method's default.";
  }

  function updateTrainingControls() {
    const run = state.run;
    if (!run) return;
    const active = ACTIVE.has(run.status);
    $('#start-training').disabled = active;
    $('#cancel-training').disabled = !active;
    $('#train-time').disabled = active;
    for (const r of $$('input[name="train-mode"]')) r.disabled = active;
    onModeChange();
    $('#training-next').disabled = run.status !== 'completed';
    $('#start-training').textContent = ['completed', 'failed', 'cancelled', 'interrupted'].includes(run.status) ? 'Train again' : 'Start training';
  }

  async function startTraining(event) {
    event.preventDefault();
    clearError('#training-error');
    const s = scenarioOf(state.run) || {};
    const budget = s.budget !== false;
    const mode = budget ? (($('input[name="train-mode"]:checked') || {}).value || 'budget') : 'method';
    const trainTime = Number($('#train-time').value);
    if (budget && (!Number.isFinite(trainTime) || trainTime < 10)) {
      showError('#training-error', 'The time to train is a number of seconds, at least 10.');
      $('#train-time').focus();
      return;
    }
    const body = { mode, trainTime: budget ? Math.round(trainTime) : 120 };
    if (mode === 'method') body.method = $('#method').value;
    if (s.passes && $('#passes').value.trim() !== '') {
      const passes = Number($('#passes').value);
      if (!Number.isInteger(passes) || passes < 1 || passes > 10000) {
        showError('#training-error', 'The number of passes is a whole number from 1 to 10,000 (or empty for the default).');
        $('#passes').focus();
        return;
      }
      body.iterations = passes;
    }
    const button = $('#start-training');
    button.disabled = true;
    try {
      const run = await api('POST', runPath('/train'), body);
      setRun(run);
      closeEvents();
      state.training = emptyTraining();
      state.training.status = run.status;
      state.training.queuePosition = run.queuePosition;
      renderTraining();
      updateTrainingControls();
      openEvents();
    } catch (e) {
      showError('#training-error', e.message);
      button.disabled = false;
    }
  }

  async function cancelTraining() {
    const button = $('#cancel-training');
    button.disabled = true;
    try {
      const run = await api('POST', runPath('/cancel'));
      setRun(run);
      $('#training-status').textContent = run.status === 'cancelled' ? statusText('cancelled') : 'Cancelling…';
      if (FINAL.has(run.status)) onFinal(run.status, run.error);
    } catch (e) {
      showError('#training-error', e.message);
      button.disabled = false;
    }
  }

  function closeEvents() {
    if (state.events) {
      state.events.close();
      state.events = null;
    }
  }

  function openEvents() {
    closeEvents();
    if (!state.run) return;
    const runId = state.run.id;
    const source = new EventSource(runPath('/events'), { withCredentials: true });
    state.events = source;
    let opened = false;
    source.addEventListener('open', () => {
      // The stream starts with every event so far: start from scratch on each (re)connection.
      if (state.events !== source) return;
      if (opened || state.training.search || state.training.trials.size) {
        const status = state.training.status;
        state.training = emptyTraining();
        state.training.status = status;
      }
      opened = true;
    });
    const handle = (message) => {
      if (state.events !== source || !state.run || state.run.id !== runId) return;
      let ev;
      try { ev = JSON.parse(message.data); } catch (e) { return; }
      if (!ev || typeof ev !== 'object') return;
      if (!ev.type && message.type && message.type !== 'message') ev.type = message.type;
      onEvent(ev);
    };
    source.addEventListener('message', handle);
    for (const type of ['search', 'trial', 'epoch', 'trialEnd', 'message', 'done', 'status']) {
      if (type !== 'message') source.addEventListener(type, handle);
    }
    source.addEventListener('error', () => {
      if (state.events !== source) return;
      // The server ends the stream after a final status; otherwise check the run and follow it again.
      source.close();
      state.events = null;
      if (FINAL.has(state.training && state.training.status)) return;
      setTimeout(async () => {
        if (!state.run || state.run.id !== runId || state.events) return;
        try {
          const run = await refreshRun();
          if (!run || state.run.id !== runId) return;
          if (FINAL.has(run.status)) {
            onFinal(run.status, run.error);
          } else if (state.step === 'training' && ACTIVE.has(run.status)) {
            openEvents();
          }
        } catch (e) {
          if (state.step === 'training') showError('#training-error', e.message);
        }
      }, 1500);
    });
  }

  function onEvent(ev) {
    const t = state.training || (state.training = emptyTraining());
    if (typeof ev.elapsed === 'number') t.lastElapsed = ev.elapsed;
    switch (ev.type) {
      case 'search':
        // A new search: whatever came before belonged to an earlier training of this run.
        t.trials = new Map();
        t.done = null;
        t.search = ev;
        if (typeof ev.budgetSeconds === 'number') startCountdown(ev.budgetSeconds - (ev.elapsed || 0));
        break;
      case 'trial': {
        const trial = getTrial(t, ev.trial);
        trial.parameters = ev.parameters || {};
        trial.status = 'running';
        if (typeof ev.secondsLeft === 'number') startCountdown(ev.secondsLeft);
        break;
      }
      case 'epoch': {
        const trial = getTrial(t, ev.trial);
        trial.epochs = trial.epochs.filter(e => e.epoch !== ev.epoch);
        trial.epochs.push({ epoch: ev.epoch, loss: ev.loss, validation: ev.validation });
        trial.epochs.sort((a, b) => a.epoch - b.epoch);
        trial.maxEpoch = ev.maxEpoch;
        if (ev.metric) trial.metricName = ev.metric;
        if (t.search && typeof t.search.budgetSeconds === 'number' && typeof ev.elapsed === 'number') startCountdown(t.search.budgetSeconds - ev.elapsed);
        break;
      }
      case 'trialEnd': {
        const trial = getTrial(t, ev.trial);
        trial.status = ev.status || 'completed';
        trial.metric = ev.metric;
        trial.seconds = ev.seconds;
        trial.error = ev.error || null;
        if (t.search && typeof t.search.budgetSeconds === 'number' && typeof ev.elapsed === 'number') startCountdown(t.search.budgetSeconds - ev.elapsed);
        break;
      }
      case 'message':
        t.message = ev.text || '';
        break;
      case 'done':
        t.done = ev;
        t.message = (scenarioOf(state.run) || {}).budget === false ? 'The training is done.' : 'The search is done.';
        stopCountdown('0 s');
        break;
      case 'status':
        if (ev.status === 'queued') {
          // Waiting for its turn: events replayed before this are an earlier training's.
          t.trials = new Map();
          t.search = null;
          t.done = null;
          t.message = '';
        }
        t.status = ev.status;
        t.error = ev.error || null;
        t.queuePosition = ev.queuePosition || null;
        if (state.run) {
          state.run.status = ev.status;
          state.run.queuePosition = ev.queuePosition;
          updateSteps();
          if (state.step === 'training') updateTrainingControls();
        }
        if (FINAL.has(ev.status)) onFinal(ev.status, ev.error);
        break;
      default:
        break;
    }
    scheduleRender();
  }

  function getTrial(t, number) {
    const key = Number(number);
    let trial = t.trials.get(key);
    if (!trial) {
      trial = { trial: key, parameters: {}, status: 'running', epochs: [], maxEpoch: null, metric: null, seconds: null, error: null, metricName: null };
      t.trials.set(key, trial);
    }
    return trial;
  }

  async function onFinal(status, error) {
    const runId = state.run && state.run.id;
    closeEvents();
    stopCountdown(status === 'completed' ? '0 s' : '—');
    if (state.training) {
      state.training.status = status;
      state.training.error = error || null;
      if (status === 'cancelled') state.training.message = 'The training was cancelled; nothing was saved. Start it again when you like.';
      if (status === 'interrupted') state.training.message = 'The app stopped while this run was training; start it again to train it.';
      for (const tr of state.training.trials.values()) if (tr.status === 'running') tr.status = 'stopped';
    }
    renderTraining();
    try {
      const run = await refreshRun();
      if (!run || !state.run || state.run.id !== runId) return;
      if (state.step === 'training') updateTrainingControls();
    } catch (e) {
      if (state.step === 'training') showError('#training-error', e.message);
    }
    if (status === 'failed' && state.step === 'training') await showTrainingFailure(error || (state.run && state.run.error));
    if (status === 'completed' && state.step === 'training') {
      $('#training-message').textContent = 'Training completed. Next: the evaluation.';
    }
  }

  async function showTrainingFailure(error) {
    let tail = '';
    try {
      const log = await api('GET', runPath('/log'));
      const lines = String(log || '').replace(/\s+$/, '').split(/\r?\n/);
      tail = lines.slice(-20).join('\n');
    } catch (e) {
      tail = `(the log could not be read: ${e.message})`;
    }
    showError('#training-error', `Training failed: ${error || 'the training process stopped with an error.'}`, tail ? `Last lines of the log:\n${tail}` : '');
  }

  function startCountdown(secondsLeft) {
    if (!Number.isFinite(secondsLeft)) return;
    const t = state.training;
    if (t && FINAL.has(t.status)) return;
    state.countdown = { base: Math.max(0, secondsLeft), at: Date.now() };
    if (!state.countdownTimer) state.countdownTimer = setInterval(tickCountdown, 1000);
    tickCountdown();
  }

  function stopCountdown(text) {
    if (state.countdownTimer) clearInterval(state.countdownTimer);
    state.countdownTimer = 0;
    state.countdown = null;
    if (text !== undefined) $('#time-left').textContent = text;
  }

  function tickCountdown() {
    const c = state.countdown;
    if (!c) return;
    const left = c.base - (Date.now() - c.at) / 1000;
    $('#time-left').textContent = left > 0 ? fmtSeconds(left) : 'finishing…';
  }

  function scheduleRender() {
    if (state.renderTimer) return;
    state.renderTimer = setTimeout(() => {
      state.renderTimer = 0;
      if (state.step === 'training') renderTraining();
    }, 60);
  }

  function renderTraining() {
    const t = state.training || emptyTraining();
    const run = state.run;
    const status = t.status || (run && run.status);
    const statusBox = $('#training-status');
    const text = status === 'new' || status === 'ready' ? 'Not started' : statusText(status, t.queuePosition || (run && run.queuePosition));
    if (statusBox.textContent !== text) statusBox.textContent = text;
    if (!ACTIVE.has(status) && !state.countdown) {
      $('#time-left').textContent = status === 'completed' ? '0 s' : '—';
    }
    $('#training-message').textContent = t.message || '';

    const metricName = (t.search && t.search.metric) || firstMetricName(t);
    const higher = !t.search || t.search.higherIsBetter !== false;
    $('#trials-metric-head').textContent = metricName ? metricLabel(metricName) : 'Metric';
    $('#validation-caption').textContent = `Validation ${metricName ? metricLabel(metricName).toLowerCase() : 'metric'} per epoch`;

    const trials = Array.from(t.trials.values()).sort((a, b) => a.trial - b.trial);
    let best = null;
    for (const tr of trials) {
      if (typeof tr.metric !== 'number' || tr.status !== 'completed') continue;
      if (!best || (higher ? tr.metric > best.metric : tr.metric < best.metric)) best = tr;
    }
    if (t.done && t.done.bestTrial !== undefined && t.done.bestTrial !== null) {
      const chosen = t.trials.get(Number(t.done.bestTrial));
      const metric = typeof t.done.validationMetric === 'number' ? t.done.validationMetric : chosen && chosen.metric;
      best = { trial: Number(t.done.bestTrial), metric };
    }
    const bestTrial = best && best.trial;
    $('#best-so-far').textContent = best ? `${fmtNumber(best.metric)} (trial ${best.trial})` : '—';

    const tbody = $('#trials-table tbody');
    tbody.textContent = '';
    for (const tr of trials) {
      const settings = Object.entries(tr.parameters || {}).map(([k, v]) => `${k}=${typeof v === 'number' ? fmtNumber(v, 6) : v}`).join(', ');
      const last = tr.epochs[tr.epochs.length - 1];
      const epoch = last ? `${last.epoch}${tr.maxEpoch ? ` / ${tr.maxEpoch}` : ''}` : '—';
      const metric = typeof tr.metric === 'number' ? tr.metric : (last && typeof last.validation === 'number' ? last.validation : null);
      tbody.append(el('tr', { 'data-trial': tr.trial, class: tr.trial === bestTrial ? 'best' : null },
        el('td', null, String(tr.trial)),
        el('td', { class: 'settings' }, settings || '—'),
        el('td', { title: tr.error || null }, el('span', { class: `badge ${trialBadge(tr.status)}` }, tr.status), tr.error ? ` ${tr.error}` : ''),
        el('td', { class: 'num' }, epoch),
        el('td', { class: 'num' }, metric === null ? '—' : fmtNumber(metric)),
        el('td', { class: 'num' }, tr.seconds !== null && tr.seconds !== undefined ? fmtSeconds(tr.seconds) : '')));
    }
    if (!trials.length) {
      tbody.append(el('tr', null, el('td', { colspan: 6, class: 'muted' }, ACTIVE.has(status) ? 'Waiting for the first trial…' : 'No trials yet.')));
    }

    const series = (pick) => trials.map((tr, i) => ({
      name: `Trial ${tr.trial}`,
      color: COLORS[i % COLORS.length],
      points: tr.epochs.filter(e => typeof e[pick] === 'number' && Number.isFinite(e[pick])).map(e => [e.epoch, e[pick]]),
    })).filter(sr => sr.points.length > 0);
    drawChart($('#loss-chart'), series('loss'), { xLabel: 'epoch', yLabel: 'loss', empty: ACTIVE.has(status) ? 'Waiting for the first epoch…' : 'No epochs yet.' });
    const noValidation = (scenarioOf(run) || {}).validation === false;
    drawChart($('#validation-chart'), series('validation'), { xLabel: 'epoch', yLabel: metricName ? metricLabel(metricName).toLowerCase() : 'metric',
      empty: noValidation ? 'No validation set: the test metrics come after training.' : ACTIVE.has(status) ? 'Waiting for the first validation…' : 'No validation yet.' });
  }

  function firstMetricName(t) {
    for (const tr of t.trials.values()) if (tr.metricName) return tr.metricName;
    return null;
  }

  function trialBadge(status) {
    switch (status) {
      case 'completed': return 'completed';
      case 'running': return 'training';
      case 'failed': return 'failed';
      default: return 'cancelled';
    }
  }

  // ---- charts: small SVG line charts ----

  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  function ticks(min, max, count) {
    if (!(max > min)) { const pad = Math.abs(min) * 0.1 || 0.5; min -= pad; max += pad; }
    const step = niceStep(max - min, count);
    const start = Math.floor(min / step) * step;
    const end = Math.ceil(max / step) * step;
    const list = [];
    for (let v = start; v <= end + step / 2; v += step) list.push(Number(v.toPrecision(12)));
    return { min: start, max: end, list, step };
  }

  function tickLabel(v, step) {
    const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step)) + (step % 1 && String(step).includes('.25') ? 1 : 0)));
    return Math.abs(v) >= 1e5 ? v.toExponential(1) : v.toFixed(digits);
  }

  function drawChart(node, series, opts) {
    if (!node) return;
    while (node.firstChild) node.removeChild(node.firstChild);
    const W = 460;
    const legendPerRow = 5;
    const legendRows = series.length ? Math.ceil(series.length / legendPerRow) : 0;
    const top = 12 + legendRows * 18;
    const H = 240 + legendRows * 18;
    node.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const left = 54, right = 14, bottom = 36;
    const plotW = W - left - right, plotH = H - top - bottom;

    if (!series.length) {
      node.append(svg('rect', { x: left, y: top, width: plotW, height: plotH, fill: '#fafbfc', stroke: '#eceff2' }));
      node.append(svg('text', { x: left + plotW / 2, y: top + plotH / 2, 'text-anchor': 'middle', class: 'empty' }, opts.empty || 'No data yet.'));
      return;
    }

    const xs = series.flatMap(s => s.points.map(p => p[0]));
    const ys = series.flatMap(s => s.points.map(p => p[1]));
    const xMax = Math.max(2, ...xs);
    const xMin = Math.min(1, ...xs);
    const yT = ticks(Math.min(...ys), Math.max(...ys), 4);
    const xStep = Math.max(1, Math.ceil((xMax - xMin) / 8));
    const X = (v) => left + (xMax === xMin ? plotW / 2 : (v - xMin) / (xMax - xMin) * plotW);
    const Y = (v) => top + plotH - (v - yT.min) / (yT.max - yT.min || 1) * plotH;

    for (const v of yT.list) {
      const y = Y(v);
      node.append(svg('line', { x1: left, x2: left + plotW, y1: y, y2: y, class: 'grid' }));
      node.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, tickLabel(v, yT.step)));
    }
    for (let v = xMin; v <= xMax; v += xStep) {
      const x = X(v);
      node.append(svg('line', { x1: x, x2: x, y1: top + plotH, y2: top + plotH + 4, class: 'axis' }));
      node.append(svg('text', { x, y: top + plotH + 16, 'text-anchor': 'middle' }, String(v)));
    }
    node.append(svg('line', { x1: left, x2: left, y1: top, y2: top + plotH, class: 'axis' }));
    node.append(svg('line', { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, class: 'axis' }));
    node.append(svg('text', { x: left + plotW / 2, y: H - 4, 'text-anchor': 'middle' }, opts.xLabel));
    node.append(svg('text', { x: 12, y: top + plotH / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${top + plotH / 2})` }, opts.yLabel));

    series.forEach((s, i) => {
      const g = svg('g', { 'data-series': s.name });
      g.append(svg('title', {}, s.name));
      g.append(svg('polyline', { points: s.points.map(p => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' '), stroke: s.color }));
      for (const p of s.points) g.append(svg('circle', { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.6, fill: s.color }));
      node.append(g);
      const row = Math.floor(i / legendPerRow), col = i % legendPerRow;
      const lx = left + col * (plotW / legendPerRow), ly = 6 + row * 18;
      node.append(svg('rect', { x: lx, y: ly + 2, width: 14, height: 4, rx: 2, fill: s.color }));
      node.append(svg('text', { x: lx + 19, y: ly + 8 }, s.name));
    });
  }

  // ---- step 4: evaluation ----

  function renderEvaluationStep() {
    const run = state.run;
    const r = normalizeResult(run.result) || {};
    const table = $('#metrics-table');
    table.textContent = '';
    const metrics = r.metrics || {};
    const tbody = el('tbody');
    tbody.append(el('tr', { class: 'section' }, el('th', { colspan: 2, scope: 'colgroup' }, 'Test metrics')));
    for (const [key, value] of Object.entries(metrics)) {
      tbody.append(el('tr', { 'data-metric': key }, el('th', { scope: 'row' }, metricLabel(key)), el('td', { class: 'num' }, fmtNumber(value))));
    }
    if (!Object.keys(metrics).length) tbody.append(el('tr', null, el('td', { colspan: 2, class: 'muted' }, 'No test metrics were recorded.')));
    table.append(tbody);

    const info = el('tbody', { class: 'info' });
    const s = scenarioOf(run) || {};
    info.append(el('tr', { class: 'section' }, el('th', { colspan: 2, scope: 'colgroup' }, s.budget === false ? 'Model' : 'Search and model')));
    const add = (label, value, num = true) => { if (value !== null && value !== undefined && value !== '') info.append(el('tr', null, el('th', { scope: 'row' }, label), el('td', { class: num ? 'num' : 'settings' }, value))); };
    if (typeof r.validationMetric === 'number') add(`Validation ${r.metricName ? metricLabel(r.metricName).toLowerCase() : 'metric'} (best trial)`, fmtNumber(r.validationMetric));
    if (r.trials !== undefined && r.trials !== null) add('Trials', Array.isArray(r.trials) ? String(r.trials.length) : fmtNumber(r.trials));
    if (s.budget !== false && typeof r.trainSeconds === 'number') add('Search time', `${fmtSeconds(r.trainSeconds)}${typeof r.budgetSeconds === 'number' ? ` of ${fmtSeconds(r.budgetSeconds)}` : ''}`);
    if (r.best) {
      add('Best trial', r.best.trial !== undefined ? String(r.best.trial) : null);
      const p = r.best.parameters;
      if (p && typeof p === 'object') add('Best settings', Object.entries(p).map(([k, v]) => `${k}=${v}`).join(', '), false);
    }
    if (r.modelKind) add('Model', String(r.modelKind));
    if (typeof r.rank === 'number') add('Rank', fmtNumber(r.rank));
    if (typeof r.users === 'number' && typeof r.items === 'number') add('Users, items', `${fmtNumber(r.users)}, ${fmtNumber(r.items)}`);
    if (typeof r.testRows === 'number') add('Test rows', fmtNumber(r.testRows));
    if (s.budget === false && typeof r.trainSeconds === 'number') add('Training time', fmtSeconds(r.trainSeconds));
    if (typeof r.modelBytes === 'number') add('Model file', `${(r.modelBytes / (1024 * 1024)).toFixed(r.modelBytes < 10 * 1024 * 1024 ? 2 : 1)} MB`);
    if (typeof r.trainableParameters === 'number') {
      const share = typeof r.totalParameters === 'number' && r.totalParameters > 0 ? ` (${(100 * r.trainableParameters / r.totalParameters).toFixed(2)}% of ${fmtNumber(r.totalParameters)})` : '';
      add('Trainable parameters', `${fmtNumber(r.trainableParameters)}${share}`);
    }
    table.append(info);

    const frame = $('#report-frame');
    const report = s.report !== false;
    $('#no-report').hidden = report;
    frame.hidden = !report;
    $('#evaluation-lead').textContent = report ? "The best model's metrics on the test rows, and the search's report." : "The model's metrics on the held-out test rows.";
    if (!report) { frame.removeAttribute('src'); return; }
    const src = runPath('/report');
    if (frame.getAttribute('src') !== src) frame.setAttribute('src', src);
  }

  // ---- step 5: try it ----

  function renderTryStep() {
    const s = scenarioOf(state.run) || { data: 'delimited', roles: ['text'] };
    const images = s.data === 'images' || s.data === 'detection';
    const pairs = (s.roles || []).includes('text2');
    const ratings = hasRole(s, 'user');
    $('#try-user-field').hidden = !ratings;
    $('#try-item-field').hidden = !ratings;
    $('#try-text-field').hidden = images || ratings;
    $('#try-text2-field').hidden = images || !pairs;
    $('#try-image-field').hidden = !images;
    $('#try-text-label').textContent = pairs ? 'First text' : s.data === 'conll' ? 'Sentence' : 'Text';
    $('#try-lead').textContent = ratings ? 'Type a user id and an item id from the data and see the rating the model predicts.'
      : s.data === 'detection' ? 'Choose a photo and see the boxes the model finds, with their classes and scores.'
      : images ? 'Choose an image and see what the model predicts.'
      : s.id === 'sentence-similarity' || s.labelKind === 'number' ? 'Type two sentences and see how similar the model finds them.'
        : s.data === 'conll' ? 'Type a sentence and see the tag the model gives each word.'
          : pairs ? 'Type two sentences and see what the model predicts for the pair.'
            : 'Type a sentence and see what the model predicts, with the probability of each class.';
    clearError('#try-error');
  }

  function onTryImage() {
    const file = $('#try-image').files && $('#try-image').files[0];
    const img = $('#try-image-preview');
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    if (!file) { img.hidden = true; img.removeAttribute('src'); return; }
    const url = URL.createObjectURL(file);
    img.dataset.url = url;
    img.src = url;
    img.hidden = false;
  }

  async function predict(event) {
    event.preventDefault();
    clearError('#try-error');
    const s = scenarioOf(state.run) || { data: 'delimited', roles: ['text'] };
    let body;
    if (s.data === 'images' || s.data === 'detection') {
      const file = $('#try-image').files && $('#try-image').files[0];
      if (!file) { showError('#try-error', 'Choose an image first.'); $('#try-image').focus(); return; }
      body = new FormData();
      body.append('image', file, file.name);
    } else if (hasRole(s, 'user')) {
      const user = $('#try-user').value.trim();
      const item = $('#try-item').value.trim();
      if (!user) { showError('#try-error', 'Type a user id first.'); $('#try-user').focus(); return; }
      if (!item) { showError('#try-error', 'Type an item id too.'); $('#try-item').focus(); return; }
      body = { user, item };
    } else {
      const text = $('#try-text').value.trim();
      const pairs = (s.roles || []).includes('text2');
      const text2 = pairs ? $('#try-text2').value.trim() : null;
      if (!text) { showError('#try-error', 'Type some text first.'); $('#try-text').focus(); return; }
      if (pairs && !text2) { showError('#try-error', 'Type the second text too.'); $('#try-text2').focus(); return; }
      body = pairs ? { text, text2 } : { text };
    }
    const button = $('#try-predict');
    button.disabled = true;
    try {
      const p = await api('POST', runPath('/predict'), body);
      renderPrediction(p || {});
    } catch (e) {
      showError('#try-error', e.message);
    } finally {
      button.disabled = false;
    }
  }

  function renderPrediction(p) {
    const result = $('#try-result');
    const label = $('#try-label');
    const scores = $('#try-scores');
    const tokens = $('#try-tokens');
    const drawn = $('#try-drawn');
    scores.textContent = '';
    tokens.textContent = '';
    drawn.hidden = !p.image;
    if (p.image) drawn.src = p.image; else drawn.removeAttribute('src');
    if (Array.isArray(p.boxes)) {
      // Object detection: the image with its boxes drawn, and a table of the boxes.
      $('#try-label-caption').textContent = 'Found';
      label.textContent = p.predicted || `${p.boxes.length} boxes`;
      if (p.boxes.length) {
        scores.append(el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Class'), el('th', { scope: 'col', class: 'num' }, 'Score'),
          el('th', { scope: 'col', class: 'num', title: 'xmin, ymin, xmax, ymax in pixels' }, 'Box'), el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Bar')))));
        scores.append(el('tbody', null, p.boxes.map(b => {
          const pct = Math.max(0, Math.min(100, 100 * b.score));
          return el('tr', { 'data-label': b.label, 'data-score': String(b.score) },
            el('td', null, b.label),
            el('td', { class: 'num' }, fmtNumber(b.score, 3)),
            el('td', { class: 'num' }, [b.xmin, b.ymin, b.xmax, b.ymax].map(v => Math.round(v)).join(', ')),
            el('td', { class: 'bar-cell' }, el('span', { class: 'bar', role: 'presentation' }, el('span', { style: `width:${pct.toFixed(1)}%` }))));
        })));
        scores.hidden = false;
      } else {
        scores.hidden = true;
      }
      result.hidden = false;
      return;
    }
    if (p.tokens) {
      $('#try-label-caption').textContent = 'Entities';
      const entities = p.tokens.filter(t => t.tag && t.tag !== 'O').length;
      label.textContent = p.predicted !== null && p.predicted !== undefined && typeof p.predicted !== 'object' ? String(p.predicted)
        : `${entities} tagged word${entities === 1 ? '' : 's'}`;
      tokens.append(el('table', { class: 'table tokens' },
        el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Word'), el('th', { scope: 'col' }, 'Tag'))),
        el('tbody', null, p.tokens.map(t => el('tr', { class: t.tag && t.tag !== 'O' ? 'entity' : null }, el('td', null, t.word), el('td', null, t.tag))))));
    } else if (typeof p.score === 'number' && !p.scores) {
      $('#try-label-caption').textContent = hasRole(scenarioOf(state.run), 'user') ? 'Predicted rating' : 'Similarity';
      label.textContent = fmtNumber(p.score, 3);
    } else {
      $('#try-label-caption').textContent = 'Predicted';
      label.textContent = p.predicted !== null && p.predicted !== undefined ? String(p.predicted) : '—';
    }
    if (Array.isArray(p.scores) && p.scores.length) {
      const sorted = p.scores.slice().sort((a, b) => b.score - a.score);
      scores.append(el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Class'), el('th', { scope: 'col', class: 'num' }, 'Probability'), el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Bar')))));
      scores.append(el('tbody', null, sorted.map(sc => {
        const pct = Math.max(0, Math.min(100, 100 * sc.score));
        return el('tr', { 'data-label': sc.label, 'data-score': String(sc.score) },
          el('td', null, sc.label),
          el('td', { class: 'num' }, `${pct.toFixed(1)}%`),
          el('td', { class: 'bar-cell' }, el('span', { class: 'bar', role: 'presentation' }, el('span', { style: `width:${pct.toFixed(1)}%` }))));
      })));
      scores.hidden = false;
    } else {
      scores.hidden = true;
    }
    result.hidden = false;
  }

  // ---- step 6: consume ----

  async function renderConsumeStep() {
    clearError('#consume-error');
    $('#download-model').href = runPath('/model.zip');
    $('#download-code').href = runPath('/code.zip');
    // A scenario the project generator does not cover: the model alone, and the server's word on it.
    const s = scenarioOf(state.run) || {};
    const generated = s.code !== false;
    $('#download-code').hidden = !generated;
    $('#code-run').hidden = !generated;
    $('#code-snippet').parentElement.hidden = !generated;
    $('#copy-snippet').hidden = !generated;
    $('#consume-lead').textContent = generated ? 'Take the model into your application: the model file, and a generated C# project that loads it.'
      : 'Take the model into your application: the model file. The C# project generator does not cover this scenario yet.';
    $('#copy-status').textContent = '';
    const code = $('#code-snippet');
    const command = $('#code-command');
    code.textContent = 'Loading…';
    command.textContent = '';
    try {
      const snippet = await api('GET', runPath('/snippet'));
      $('#code-title').textContent = snippet.fileName || 'Program.cs';
      code.textContent = snippet.code || '';
      command.textContent = snippet.command || '';
    } catch (e) {
      code.textContent = '';
      if (!generated) $('#code-title').textContent = 'Using the model';
      showError('#consume-error', e.message);
    }
  }

  async function copySnippet() {
    const status = $('#copy-status');
    try {
      await navigator.clipboard.writeText($('#code-snippet').textContent);
      status.textContent = 'Copied.';
    } catch (e) {
      status.textContent = 'The browser did not allow copying; select the code and copy it.';
    }
  }

  // ---- wiring ----

  function wire() {
    $('#home').addEventListener('click', () => { goHome(); });
    $('#new-run').addEventListener('click', () => { newRun(); });
    for (const button of $$('#steps button[data-step]')) {
      button.addEventListener('click', () => { if (!button.disabled) goStep(button.dataset.step); });
    }
    $('#scenario-form').addEventListener('submit', submitScenario);
    $('#upload-file').addEventListener('change', () => { uploadFile(); });
    $('#upload-folder').addEventListener('change', () => { uploadFolder(); });
    $('#server-path-form').addEventListener('submit', loadServerPath);
    $('#has-header').addEventListener('change', onHeaderToggle);
    for (const id of ['#user-col', '#item-col', '#label-col', '#text-col', '#text2-col', '#tag-col']) {
      $(id).addEventListener('change', () => { if (state.run && state.run.data) renderPreview(state.run.data); });
    }
    $('#data-next').addEventListener('click', () => { submitColumns(); });
    $('#training-form').addEventListener('submit', startTraining);
    for (const r of $$('input[name="train-mode"]')) r.addEventListener('change', onModeChange);
    $('#method').addEventListener('change', updatePassesHint);
    $('#cancel-training').addEventListener('click', () => { cancelTraining(); });
    $('#training-next').addEventListener('click', () => { goStep('evaluation'); });
    $('#evaluation-next').addEventListener('click', () => { goStep('try'); });
    $('#try-form').addEventListener('submit', predict);
    $('#try-image').addEventListener('change', onTryImage);
    $('#try-next').addEventListener('click', () => { goStep('consume'); });
    $('#copy-snippet').addEventListener('click', () => { copySnippet(); });

    // Never leave an error uncaught: show it on the page instead.
    window.addEventListener('unhandledrejection', (e) => {
      e.preventDefault();
      showError('#app-error', (e.reason && e.reason.message) || String(e.reason));
    });
    window.addEventListener('error', (e) => {
      if (e.error) {
        e.preventDefault();
        showError('#app-error', e.error.message || String(e.error));
      }
    });
  }

  async function start() {
    wire();
    // Drop the token from the address bar once the cookie is set (it stays valid in the cookie).
    if (/[?&]token=/.test(location.search)) history.replaceState(null, '', location.pathname + location.hash);
    const m = /^#run=([^&]+)(?:&step=(\w+))?/.exec(location.hash);
    if (m) {
      state.step = 'loading';
      await openRun(decodeURIComponent(m[1]), m[2]);
      if (state.step === 'loading') await goHome();
    } else if (location.hash === '#new') {
      await newRun();
    } else {
      await goHome();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => { start(); });
  else start();
})();
