// The web inbox: sign-in, the three panes, live updates, the reply box, the supervisor view.
// Customer text (names, handles, messages, notes, tags) is untrusted: it only ever reaches
// the page through textContent or attribute values, never as markup.

import { ApiError, api, get, post, query, setCsrf, upload } from './api.js';
import {
  applyCatalog, currentLanguage, formatDuration, formatTime, loadLanguage, preferredLanguage, t,
  timeZone,
} from './i18n.js';

const $ = (id) => document.getElementById(id);
const RANK = { agent: 1, supervisor: 2, admin: 3 };
const SEEN_KEY = 'inboxhub.seen';
const EVENT_KINDS = ['new_message', 'reply', 'delivery', 'assignment', 'status', 'sla_breach',
  'viewing', 'typing', 'reset'];

const state = {
  me: null,
  conversations: [],
  nextCursor: null,
  selected: null,
  detail: null,
  notes: [],
  routing: null,
  search: '',
  events: null,
  lastEventId: '',
  timers: [],
  others: new Map(),
  breaches: [],
  draftSeq: 0,
  picked: new Set(),
  contact: null,
  agents: [],
  accounts: null,
  files: [],
};

// -- small DOM helpers (text only) ------------------------------------------------------

function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined) node.textContent = options.text;
  for (const [name, value] of Object.entries(options.attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function badge(text, kind, label) {
  const node = el('span', { className: `badge badge-${kind}`, text });
  if (label) node.title = label;
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function errorText(error) {
  if (error instanceof ApiError) return t('error.api', { status: error.status, message: error.message });
  console.error(error);
  return t('error.network');
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function seen() {
  try {
    return JSON.parse(localStorage.getItem(SEEN_KEY) || '{}');
  } catch {
    return {};
  }
}

function markSeen(conversation) {
  const all = seen();
  all[conversation.id] = conversation.last_inbound_at || conversation.updated_at;
  localStorage.setItem(SEEN_KEY, JSON.stringify(all));
}

function isUnread(conversation) {
  if (!conversation.last_inbound_at || conversation.id === state.selected) return false;
  return (seen()[conversation.id] || 0) < conversation.last_inbound_at;
}

function contactLabel(conversation) {
  return conversation.contact_name || conversation.contact_handle || conversation.thread_id;
}

function workStatusLabel(status) {
  switch (status) {
    case 'pending': return t('work.pending');
    case 'snoozed': return t('work.snoozed');
    case 'resolved': return t('work.resolved');
    default: return t('work.open');
  }
}

function routingStatusLabel(status) {
  switch (status) {
    case 'new': return t('routing.new');
    case 'queued': return t('routing.queued');
    case 'assigned': return t('routing.assigned');
    default: return t('routing.resolved');
  }
}

function deliveryLabel(status) {
  switch (status) {
    case 'received': return t('delivery.received');
    case 'queued': return t('delivery.queued');
    case 'sending': return t('delivery.sending');
    case 'sent': return t('delivery.sent');
    case 'delivered': return t('delivery.delivered');
    case 'read': return t('delivery.read');
    default: return t('delivery.failed');
  }
}

// -- sign-in ----------------------------------------------------------------------------

function showSignin(message = '') {
  stopSession();
  show($('app'), false);
  show($('signin'), true);
  $('signin-error').textContent = message;
  $('signin-username').focus();
}

async function signIn(event) {
  event.preventDefault();
  const username = $('signin-username').value.trim();
  const password = $('signin-password').value;
  if (!username || !password) {
    $('signin-error').textContent = t('signin.required');
    return;
  }
  try {
    const me = await post('/auth/login', { username, password });
    $('signin-password').value = '';
    await startSession(me);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      $('signin-error').textContent = t('signin.invalid');
    } else if (error instanceof ApiError && error.status === 429) {
      $('signin-error').textContent = t('signin.rate_limited');
    } else {
      $('signin-error').textContent = errorText(error);
    }
  }
}

async function signOut() {
  try {
    await post('/auth/logout');
  } catch {
    // The session may have ended already; the sign-in form is shown either way.
  }
  showSignin();
}

function stopSession() {
  if (state.events) state.events.close();
  state.events = null;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.me = null;
  state.selected = null;
  state.detail = null;
  setCsrf(null);
}

async function startSession(me) {
  state.me = me;
  setCsrf(me.csrf_token);
  show($('signin'), false);
  show($('app'), true);
  $('whoami').textContent = t('app.signed_in_as', { name: me.agent_id, zone: timeZone() });
  const supervisor = RANK[me.role] >= RANK.supervisor;
  show($('nav-supervisor'), supervisor);
  showView('inbox');
  clearConversation();
  await loadList();
  openEvents();
  setPresence('online', true);
  state.timers.push(setInterval(heartbeat, 30000));
  if (supervisor) state.timers.push(setInterval(refreshSupervision, 10000));
  state.timers.push(setInterval(tickSla, 1000));
  updateNotifyButton();
}

// -- the conversation list --------------------------------------------------------------

function listParams() {
  const params = { limit: 50 };
  const view = $('filter-view').value;
  if (view === 'open') params.status = 'new,queued,assigned';
  else if (view === 'mine') params.mine = 'true';
  else if (view === 'unassigned') params.unassigned = 'true';
  else if (view === 'resolved') params.status = 'resolved';
  const language = $('filter-language').value.trim().toLowerCase();
  if (/^[a-z]{2}$/.test(language)) params.language = language;
  const market = $('filter-market').value.trim().toUpperCase();
  if (/^[A-Z]{2}$/.test(market)) params.market = market;
  const channel = $('filter-channel').value.trim();
  if (channel) params.channel = channel;
  const tag = $('filter-tag').value.trim();
  if (tag) params.tag = tag;
  return params;
}

async function loadList(more = false) {
  if (!state.me) return;
  try {
    let page;
    if (state.search) {
      page = await get(`/search${query({ q: state.search, limit: 50, cursor: more ? state.nextCursor : null })}`);
    } else {
      page = await get(`/conversations${query({ ...listParams(), cursor: more ? state.nextCursor : null })}`);
    }
    state.conversations = more ? [...state.conversations, ...page.conversations] : page.conversations;
    state.nextCursor = page.next_cursor;
    renderList();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignin(t('signin.expired'));
    else $('live-status').textContent = errorText(error);
  }
}

const refreshList = debounce(() => loadList(), 250);

function renderList() {
  const list = $('conversation-list');
  // A live update re-renders the list: the focus stays on the same conversation's control.
  const active = document.activeElement;
  const focused = list.contains(active) ? {
    id: active.closest('li') && active.closest('li').querySelector('[data-id]').dataset.id,
    pick: active.classList.contains('pick'),
  } : null;
  list.replaceChildren();
  for (const conversation of state.conversations) {
    const selected = conversation.id === state.selected;
    const unread = isUnread(conversation);
    const badges = el('span', { className: 'badges' }, [
      badge(conversation.channel, 'channel', t('side.channel')),
      conversation.language
        ? badge(conversation.language.toUpperCase() + (conversation.language_low_confidence ? '?' : ''),
          'language', t('side.language'))
        : null,
      conversation.market ? badge(conversation.market, 'market', t('side.market')) : null,
      conversation.work_status !== 'open'
        ? badge(workStatusLabel(conversation.work_status), 'work') : null,
      conversation.status === 'queued' ? badge(t('routing.queued'), 'queued') : null,
      conversation.sla_due_at != null ? slaBadge(conversation.sla_due_at) : null,
      conversation.spam ? badge(t('list.spam'), 'spam') : null,
      unread ? badge(t('list.unread'), 'unread') : null,
    ]);
    const button = el('button', {
      className: `conversation-item${unread ? ' unread' : ''}`,
      attrs: { type: 'button', 'data-id': conversation.id, 'aria-current': selected ? 'true' : null },
    }, [
      el('span', { className: 'conversation-name', text: contactLabel(conversation) }),
      el('span', { className: 'conversation-time', text: formatTime(conversation.updated_at) }),
      badges,
    ]);
    button.addEventListener('click', () => openConversation(conversation.id));
    const pick = el('input', {
      className: 'pick',
      attrs: { type: 'checkbox', 'aria-label': t('bulk.pick', { name: contactLabel(conversation) }) },
    });
    pick.checked = state.picked.has(conversation.id);
    pick.addEventListener('change', () => {
      if (pick.checked) state.picked.add(conversation.id);
      else state.picked.delete(conversation.id);
      renderBulkBar();
    });
    list.append(el('li', { className: 'conversation-row' }, [pick, button]));
  }
  if (focused && focused.id) {
    const button = list.querySelector(`[data-id="${CSS.escape(focused.id)}"]`);
    const target = button && (focused.pick ? button.parentElement.querySelector('.pick') : button);
    if (target) target.focus();
  }
  const listed = new Set(state.conversations.map((c) => c.id));
  for (const id of state.picked) if (!listed.has(id)) state.picked.delete(id);
  renderBulkBar();
  if (state.detail && state.routing) $('side-sla').textContent = slaText();
  show($('list-empty'), state.conversations.length === 0);
  show($('list-more'), Boolean(state.nextCursor));
}

// The SLA countdown of a list row: the soonest running deadline (sla_due_at), repainted
// every second by tickSla. A breached one says so in words ("overdue"), not only in colour.
function slaBadge(due) {
  const node = el('span', { className: 'badge badge-sla', attrs: { 'data-due': String(due) } });
  paintSla(node);
  return node;
}

function paintSla(node) {
  const due = Number(node.dataset.due);
  const left = due - Date.now() / 1000;
  const breached = left < 0;
  node.textContent = breached ? t('sla.badge_overdue', { time: formatDuration(-left) })
    : t('sla.badge_due', { time: formatDuration(left) });
  node.classList.toggle('breached', breached);
  node.dataset.state = breached ? 'breached' : 'running';
  node.title = t('sla.badge_title', { time: formatTime(due) });
}

function tickSla() {
  for (const node of document.querySelectorAll('#conversation-list .badge-sla')) paintSla(node);
  if (state.detail && state.routing) $('side-sla').textContent = slaText();
}

function renderBulkBar() {
  show($('bulk-bar'), state.picked.size > 0);
  $('bulk-count').textContent = t('bulk.count', { n: state.picked.size });
}

// Resolve the picked conversations in one request (POST /conversations/bulk, at most 100):
// each id succeeds or fails on its own; the failures are listed.
async function bulkResolve() {
  const ids = [...state.picked].slice(0, 100);
  if (!ids.length) return;
  $('bulk-error').textContent = '';
  try {
    const answer = await post('/conversations/bulk', { action: 'resolve', ids });
    const failed = (answer.results || []).filter((item) => !item.ok);
    state.picked.clear();
    if (failed.length) $('bulk-error').textContent = t('bulk.failed', { n: failed.length });
  } catch (error) {
    $('bulk-error').textContent = errorText(error);
  }
  if (ids.includes(state.selected)) await reloadDetail();
  await loadList();
}

async function bulkAssign() {
  const agent = $('bulk-agent').value.trim();
  if (!agent) {
    $('bulk-error').textContent = t('bulk.agent_required');
    $('bulk-agent').focus();
    return;
  }
  await bulkAction({ action: 'assign', agent });
}

async function bulkTag() {
  const tag = $('bulk-tag').value.trim();
  if (!tag) {
    $('bulk-error').textContent = t('bulk.tag_required');
    $('bulk-tag').focus();
    return;
  }
  if (await bulkAction({ action: 'tag', tags: [tag] })) $('bulk-tag').value = '';
}

// One bulk request for assign or tag; the picked stay picked when some fail, so the agent
// sees which (their reasons listed) and can try again.
async function bulkAction(body) {
  const ids = [...state.picked].slice(0, 100);
  if (!ids.length) return false;
  $('bulk-error').textContent = '';
  let ok = false;
  try {
    const answer = await post('/conversations/bulk', { ...body, ids });
    const failed = (answer.results || []).filter((item) => !item.ok);
    if (failed.length) {
      $('bulk-error').textContent = t('bulk.failed_reasons', {
        n: failed.length, reasons: [...new Set(failed.map((item) => item.message || item.code))].join('; '),
      });
      for (const item of answer.results) if (item.ok) state.picked.delete(item.id);
    } else {
      state.picked.clear();
      ok = true;
    }
  } catch (error) {
    $('bulk-error').textContent = errorText(error);
  }
  if (ids.includes(state.selected)) await reloadDetail();
  await loadList();
  return ok;
}

function moveSelection(step) {
  if (!state.conversations.length) return;
  const index = state.conversations.findIndex((c) => c.id === state.selected);
  const next = index < 0 ? 0 : Math.min(Math.max(index + step, 0), state.conversations.length - 1);
  const id = state.conversations[next].id;
  openConversation(id).then(() => {
    const button = $('conversation-list').querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (button) button.focus();
  });
}

// -- one conversation -------------------------------------------------------------------

function clearConversation() {
  state.selected = null;
  state.detail = null;
  state.contact = null;
  $('conversation-title').textContent = t('conversation.none');
  show($('conversation-body'), false);
  show($('side-body'), false);
}

async function openConversation(id) {
  const previous = state.selected;
  state.selected = id;
  if (previous && previous !== id) {
    presence(previous, 'left');
    state.files = [];  // uploads belong to their conversation
    renderFiles();
  }
  state.others.clear();
  await reloadDetail();
  if (state.detail) {
    markSeen(state.detail.conversation);
    presence(id, 'viewing');
    checkDraft();
  }
  renderList();
}

async function reloadDetail() {
  const id = state.selected;
  if (!id) return;
  try {
    const [detail, notes, routing] = await Promise.all([
      get(`/conversations/${encodeURIComponent(id)}`),
      get(`/conversations/${encodeURIComponent(id)}/notes`).catch(() => ({ notes: [] })),
      get(`/conversations/${encodeURIComponent(id)}/routing`).catch(() => null),
    ]);
    if (state.selected !== id) return;
    state.detail = detail;
    state.notes = notes.notes;
    state.routing = routing ? routing.state : null;
    renderConversation();
    renderSide();
    if (!state.contact || state.contact.conversation !== id) loadContact(id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      clearConversation();
      refreshList();
    } else {
      $('action-error').textContent = errorText(error);
    }
  }
}

const refreshDetail = debounce(() => reloadDetail(), 150);

function attachmentLink(message, attachment, index) {
  if (attachment.refused) {
    return el('li', { className: 'attachment refused', text: t('message.attachment_refused', { name: attachment.name }) });
  }
  const link = el('a', {
    text: t('message.attachment', { name: attachment.name, size: Math.ceil(attachment.size / 1024) }),
    attrs: {
      href: `/api/v1/messages/${encodeURIComponent(message.id)}/attachments/${index}`,
      download: attachment.name,
    },
  });
  return el('li', { className: 'attachment' }, [link]);
}

function messageItem(message) {
  const inbound = message.direction === 'in';
  const { conversation } = state.detail;
  const buyer = !message.sender_handle || message.sender_handle === conversation.contact_handle;
  const who = inbound
    ? (message.sender_name || (buyer ? contactLabel(conversation) : message.sender_handle))
    : t('message.agent', { name: message.author || '' });
  const head = el('div', { className: 'message-head' }, [
    el('span', { className: 'message-author', text: who }),
    badge(message.channel, 'channel', t('side.channel')),
    el('time', { text: formatTime(message.created_at) }),
  ]);
  const body = el('div', { className: 'message-text', text: message.text });
  const item = el('li', {
    className: `message ${inbound ? 'inbound' : 'outbound'}${message.status === 'failed' ? ' failed' : ''}`,
    attrs: { 'data-id': message.id, 'data-status': message.status },
  }, [head, body]);
  const attachments = message.attachments || [];
  if (attachments.length) {
    item.append(el('ul', { className: 'attachments' },
      attachments.map((a, i) => attachmentLink(message, a, i))));
  }
  if (!inbound) {
    const status = el('p', { className: 'delivery', text: deliveryLabel(message.status) });
    if (message.status === 'failed' && message.error) {
      status.append(el('span', { className: 'delivery-error', text: ` ${t('delivery.error', { error: message.error })}` }));
    }
    if (message.status === 'failed' && canRetry(conversation)) {
      const retry = el('button', { className: 'retry', text: t('delivery.retry'), attrs: { type: 'button' } });
      retry.addEventListener('click', () => retrySend(conversation.id, message.id, retry));
      status.append(' ', retry);
    }
    item.append(status);
  }
  return item;
}

// The agent who holds the conversation retries their failed replies; supervisors any.
function canRetry(conversation) {
  return RANK[state.me.role] >= RANK.supervisor || conversation.assignee === state.me.agent_id;
}

// POST .../replies/{reply_id}/retry: the reply is queued again once (409 when it is not
// failed any more, e.g. another retry won).
async function retrySend(conversationId, messageId, button) {
  button.disabled = true;
  try {
    await post(`/conversations/${encodeURIComponent(conversationId)}/replies/${encodeURIComponent(messageId)}/retry`);
    await reloadDetail();
  } catch (error) {
    button.disabled = false;
    $('action-error').textContent = errorText(error);
  }
}

function noteItem(note) {
  return el('li', { className: 'message note', attrs: { 'data-id': note.id } }, [
    el('div', { className: 'message-head' }, [
      el('span', { className: 'message-author', text: t('note.by', { name: note.author }) }),
      el('time', { text: formatTime(note.created_at) }),
    ]),
    el('div', { className: 'message-text', text: note.text }),
  ]);
}

function renderConversation() {
  const { conversation, messages } = state.detail;
  $('conversation-title').textContent = t('conversation.title', { name: contactLabel(conversation) });
  show($('conversation-body'), true);
  // Messages in their order, each private note placed at the time it was written.
  const timeline = [];
  let n = 0;
  for (const message of messages) {
    while (n < state.notes.length && state.notes[n].created_at < message.created_at) {
      timeline.push(noteItem(state.notes[n++]));
    }
    timeline.push(messageItem(message));
  }
  while (n < state.notes.length) timeline.push(noteItem(state.notes[n++]));
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...timeline);
  if (atBottom || list.dataset.conversation !== conversation.id) list.scrollTop = list.scrollHeight;
  list.dataset.conversation = conversation.id;
  const resolved = conversation.work_status === 'resolved' || conversation.status === 'resolved';
  $('action-resolve').disabled = resolved;
  $('action-snooze').disabled = resolved;
  $('action-reopen').disabled = !['snoozed', 'pending'].includes(conversation.work_status);
  const base = `/api/v1/conversations/${encodeURIComponent(conversation.id)}/export`;
  $('export-html').href = `${base}?format=html`;
  $('export-json').href = `${base}?format=json`;
  $('action-error').textContent = '';
  renderCollision();
  renderReplyBox();
}

function renderReplyBox() {
  const { conversation, reply_window: window_ } = state.detail;
  const templates = state.detail.templates || [];
  const disabled = conversation.replies_disabled || conversation.unreachable;
  let text = '';
  let templateOnly = false;
  if (disabled) {
    text = t('window.no_replies', { reason: disabled });
  } else if (window_) {
    if (window_.open) {
      text = window_.closes_at ? t('window.open_until', { time: formatTime(window_.closes_at) }) : t('window.open');
    } else if (window_.template_required) {
      text = t('window.closed_template');
      templateOnly = true;
    } else if ((window_.extended || []).length) {
      text = t('window.closed_extended', { tags: window_.extended.map((w) => w.tag).join(', ') });
    } else {
      text = t('window.closed');
    }
  }
  renderAttachRules();
  $('window-state').textContent = text;
  $('window-state').className = `window-state${templateOnly || disabled ? ' closed' : ''}`;
  show($('free-reply'), !templateOnly && !disabled);
  const picker = $('template-picker');
  show(picker, Boolean(templateOnly && templates.length));
  if (templateOnly) renderTemplates(templates);
}

function renderTemplates(templates) {
  const select = $('template-select');
  // Rebuilt only when the conversation or its templates change: a live update must not
  // wipe parameters the agent is typing.
  const signature = JSON.stringify([state.selected, templates]);
  if (select.dataset.signature === signature) return;
  select.dataset.signature = signature;
  const chosen = select.value;
  select.replaceChildren(...templates.map((spec, i) => el('option', {
    text: spec.language ? `${spec.name} (${spec.language})` : spec.name,
    attrs: { value: String(i) },
  })));
  if (chosen && Number(chosen) < templates.length) select.value = chosen;
  renderTemplateParameters();
}

function chosenTemplate() {
  const templates = (state.detail && state.detail.templates) || [];
  return templates[Number($('template-select').value)] || null;
}

function renderTemplateParameters() {
  const spec = chosenTemplate();
  const box = $('template-parameters');
  box.replaceChildren();
  if (!spec) return;
  (spec.parameters || []).forEach((label, i) => {
    const id = `template-parameter-${i}`;
    box.append(el('label', { text: t('template.parameter', { n: i + 1, label }), attrs: { for: id } }));
    const input = el('input', { attrs: { id, 'data-index': String(i), maxlength: '1024', required: 'required' } });
    input.addEventListener('input', renderTemplatePreview);
    box.append(input);
  });
  renderTemplatePreview();
}

function templateValues() {
  return [...$('template-parameters').querySelectorAll('input')].map((input) => input.value);
}

function renderTemplatePreview() {
  const spec = chosenTemplate();
  const values = templateValues();
  const body = spec && spec.body ? spec.body.replace(/\{\{(\d+)\}\}/g, (whole, n) => values[Number(n) - 1] || whole) : '';
  $('template-preview').textContent = body ? t('template.preview', { text: body }) : '';
}

async function sendTemplate() {
  const spec = chosenTemplate();
  if (!spec || !state.selected) return;
  const parameters = templateValues();
  if (parameters.some((value) => !value.trim())) {
    $('reply-error').textContent = t('template.fill_all');
    return;
  }
  await sendReply({ template: { name: spec.name, language: spec.language, parameters } });
}

async function sendReply(body) {
  const id = state.selected;
  $('reply-error').textContent = '';
  try {
    await post(`/conversations/${encodeURIComponent(id)}/replies`, { ...body, client_key: crypto.randomUUID() });
    if (body.text !== undefined) $('reply-text').value = '';
    checkDraft();
    await reloadDetail();
    refreshList();
    return true;
  } catch (error) {
    $('reply-error').textContent = t('reply.failed', { message: errorText(error) });
    return false;
  }
}

async function submitReply(event) {
  if (event) event.preventDefault();
  const text = $('reply-text').value;
  if ((!text.trim() && !state.files.length) || !state.selected) return;
  if (state.files.some((f) => !f.id)) {
    $('reply-error').textContent = t('attach.wait');
    return;
  }
  const body = text.trim() ? { text } : {};
  if (state.files.length) body.attachments = state.files.map((f) => f.id);
  if (await sendReply(body)) {
    $('reply-text').value = '';
    state.files = [];
    renderFiles();
  }
}

// -- attachments on a reply: the channel's rules (attachment_policy) are applied before the
// upload (count, size; the hub judges the type by the bytes), then each file is uploaded at
// once and its id sent with the reply.

function renderAttachRules() {
  const policy = state.detail && state.detail.attachment_policy;
  const allowed = Boolean(policy && policy.max_count > 0);
  show($('reply-file-box'), allowed);
  $('reply-file').disabled = !allowed;
  $('attach-rules').textContent = !policy ? '' : allowed
    ? t('attach.rules', {
      count: policy.max_count,
      size: Math.floor(policy.max_bytes / 1048576) >= 1 ? `${Math.floor(policy.max_bytes / 1048576)} MB` : `${Math.ceil(policy.max_bytes / 1024)} KB`,
      types: policy.types.length ? policy.types.join(', ') : t('attach.any_type'),
    })
    : t('attach.none');
}

function renderFiles() {
  $('reply-files').replaceChildren(...state.files.map((file, i) => {
    const remove = el('button', { className: 'tag-remove', text: '×', attrs: { type: 'button', 'aria-label': t('attach.remove', { name: file.name }) } });
    remove.addEventListener('click', () => {
      state.files.splice(i, 1);
      renderFiles();
    });
    return el('li', { className: 'tag', attrs: { 'data-state': file.id ? 'ready' : 'uploading' } }, [
      el('span', { text: file.id ? t('attach.ready', { name: file.name, size: Math.ceil(file.size / 1024) }) : t('attach.uploading', { name: file.name }) }),
      remove,
    ]);
  }));
}

async function chooseFiles() {
  const input = $('reply-file');
  const chosen = [...input.files];
  input.value = '';
  const policy = state.detail && state.detail.attachment_policy;
  const id = state.selected;
  if (!policy || !id || !chosen.length) return;
  $('reply-error').textContent = '';
  if (state.files.length + chosen.length > policy.max_count) {
    $('reply-error').textContent = t('attach.too_many', { n: policy.max_count });
    return;
  }
  for (const file of chosen) {
    if (file.size > policy.max_bytes) {
      $('reply-error').textContent = t('attach.too_big', { name: file.name, size: Math.ceil(policy.max_bytes / 1024) });
      continue;
    }
    const entry = { name: file.name, size: file.size, id: null };
    state.files.push(entry);
    renderFiles();
    try {
      const answer = await upload(`/conversations/${encodeURIComponent(id)}/attachments${query({ name: file.name })}`, file);
      if (state.selected !== id) return;
      entry.id = answer.id;
    } catch (error) {
      state.files.splice(state.files.indexOf(entry), 1);
      $('reply-error').textContent = t('attach.refused', { name: file.name, message: errorText(error) });
    }
    renderFiles();
  }
}

// The counter and the channel's verdict, from POST .../draft (the channel's own limit,
// parts, SMS segments and charset), as the agent types.
async function checkDraft() {
  const id = state.selected;
  if (!id || $('free-reply').hidden) {
    $('reply-counter').textContent = '';
    return;
  }
  const seq = ++state.draftSeq;
  try {
    const answer = await post(`/conversations/${encodeURIComponent(id)}/draft`, { text: $('reply-text').value });
    if (seq !== state.draftSeq || !answer.check) return;
    const { check } = answer;
    let text = t('reply.counter', { length: check.length, max: check.max_length });
    if (check.segments) text += ` · ${t('reply.segments', { n: check.segments })}`;
    // An empty draft is not a problem to show; any other refusal is, with the channel's
    // own explanation on hover.
    const refused = !check.fits && check.length > 0;
    if (refused) text += ` · ${check.length > check.max_length ? t('reply.too_long') : t('reply.refused')}`;
    $('reply-counter').textContent = text;
    $('reply-counter').title = refused && check.problem ? check.problem : '';
    $('reply-counter').className = `counter${refused ? ' over' : ''}`;
  } catch {
    $('reply-counter').textContent = '';
  }
}

const checkDraftSoon = debounce(checkDraft, 150);

function renderSide() {
  const { conversation } = state.detail;
  show($('side-body'), true);
  $('side-contact').textContent = conversation.contact_handle && conversation.contact_name
    ? `${conversation.contact_name} (${conversation.contact_handle})` : contactLabel(conversation);
  $('side-channel').textContent = `${conversation.channel} · ${conversation.channel_instance}`;
  $('side-market').textContent = conversation.market || t('side.unknown');
  $('side-order').textContent = state.detail.order_id || t('side.no_order');
  const language = $('side-language');
  language.replaceChildren(el('span', { text: conversation.language || t('side.unknown') }));
  if (conversation.language_low_confidence) {
    language.append(badge(t('side.low_confidence'), 'warning'));
  }
  $('language-input').value = conversation.language || '';
  $('side-status').textContent = `${routingStatusLabel(conversation.status)} · ${workStatusLabel(conversation.work_status)}`
    + (conversation.snoozed_until ? ` · ${t('work.until', { time: formatTime(conversation.snoozed_until) })}` : '');
  $('side-assignee').textContent = conversation.assignee || conversation.queue || t('side.nobody');
  $('side-sla').textContent = slaText();
  const tags = $('tag-list');
  tags.replaceChildren(...(conversation.tags || []).map((tag) => {
    const remove = el('button', { className: 'tag-remove', text: '×', attrs: { type: 'button', 'aria-label': t('tags.remove', { tag }) } });
    remove.addEventListener('click', () => changeTags({ remove: [tag] }));
    return el('li', { className: 'tag' }, [el('span', { text: tag }), remove]);
  }));
  $('side-error').textContent = '';
}

// -- the buyer across channels (GET .../contact, then /people/{id}/conversations) ----------

async function loadContact(conversationId) {
  state.contact = { conversation: conversationId, person: null, conversations: [], next: null };
  renderContact();
  try {
    const answer = await get(`/conversations/${encodeURIComponent(conversationId)}/contact${query({ limit: 10 })}`);
    if (state.selected !== conversationId) return;
    state.contact = { conversation: conversationId, person: answer.person, conversations: answer.conversations, next: answer.next_cursor };
  } catch (error) {
    if (state.selected !== conversationId) return;
    state.contact.error = errorText(error);
  }
  renderContact();
}

async function moreContact() {
  const contact = state.contact;
  if (!contact || !contact.person || !contact.next) return;
  try {
    const page = await get(`/people/${encodeURIComponent(contact.person.id)}/conversations${query({ limit: 10, cursor: contact.next })}`);
    if (state.contact !== contact) return;
    contact.conversations = [...contact.conversations, ...page.conversations];
    contact.next = page.next_cursor;
  } catch (error) {
    contact.error = errorText(error);
  }
  renderContact();
}

function renderContact() {
  const contact = state.contact;
  const list = $('contact-conversations');
  list.replaceChildren();
  show($('contact-more'), Boolean(contact && contact.next));
  if (!contact || !contact.person) {
    $('contact-summary').textContent = contact && contact.error ? contact.error : t('contact.loading');
    return;
  }
  const channels = [...new Set(contact.person.contacts.map((c) => c.channel))];
  $('contact-summary').textContent = t('contact.summary', {
    contacts: contact.person.contacts.length, channels: channels.join(', '),
  });
  for (const other of contact.conversations) {
    const current = other.id === contact.conversation;
    const button = el('button', {
      className: 'contact-conversation',
      attrs: { type: 'button', 'data-id': other.id, 'aria-current': current ? 'true' : null },
    }, [
      badge(other.channel, 'channel', t('side.channel')),
      el('span', { text: other.contact_name || other.contact_handle }),
      el('span', { className: 'muted', text: `${routingStatusLabel(other.status)} · ${formatTime(other.updated_at)}` }),
      current ? el('span', { className: 'muted', text: t('contact.this_one') }) : null,
    ]);
    button.disabled = current;
    button.addEventListener('click', () => openConversation(other.id));
    list.append(el('li', {}, [button]));
  }
}

// The soonest running deadline is the list row's sla_due_at (the routing state keeps the
// deadlines of clocks an answer already stopped, so it alone would still say overdue).
function slaText() {
  const routing = state.routing;
  if (!routing) return t('side.unknown');
  const now = Date.now() / 1000;
  const row = state.conversations.find((c) => c.id === state.selected);
  if (row && row.sla_due_at != null) {
    return row.sla_due_at >= now ? t('sla.due_in', { time: formatDuration(row.sla_due_at - now) })
      : t('sla.overdue', { time: formatDuration(now - row.sla_due_at) });
  }
  if (Object.keys(routing.sla_breached_at || {}).length) return t('sla.breached');
  if (row) return t('sla.none');
  const deadlines = Object.values(routing.sla_deadlines || {}).sort((a, b) => a - b);
  if (!deadlines.length) return t('sla.none');
  return deadlines[0] >= now ? t('sla.due_in', { time: formatDuration(deadlines[0] - now) })
    : t('sla.overdue', { time: formatDuration(now - deadlines[0]) });
}

function renderCollision() {
  const banner = $('collision');
  const now = Date.now() / 1000;
  const others = [...state.others.entries()].filter(([, entry]) => entry.until > now);
  if (!others.length) {
    banner.textContent = '';
    show(banner, false);
    return;
  }
  const typing = others.filter(([, entry]) => entry.state === 'typing').map(([agent]) => agent);
  const names = others.map(([agent]) => agent).join(', ');
  banner.textContent = typing.length ? t('collision.typing', { names: typing.join(', ') }) : t('collision.viewing', { names });
  show(banner, true);
}

// -- actions ----------------------------------------------------------------------------

async function act(path, body, target = 'action-error') {
  if (!state.selected) return null;
  $(target).textContent = '';
  try {
    const answer = await post(`/conversations/${encodeURIComponent(state.selected)}${path}`, body);
    await reloadDetail();
    refreshList();
    return answer;
  } catch (error) {
    $(target).textContent = errorText(error);
    return null;
  }
}

const resolve = () => act('/resolve');
const snooze = () => act('/status', { status: 'snoozed', snooze_until: Date.now() / 1000 + Number($('snooze-for').value) });
const reopen = () => act('/status', { status: 'open' });

async function markSpam() {
  if (window.confirm(t('actions.spam_confirm'))) await act('/spam', { spam: true });
}

async function blockSender() {
  if (!state.detail || !window.confirm(t('actions.block_confirm'))) return;
  try {
    await post(`/contacts/${encodeURIComponent(state.detail.conversation.contact_id)}/block`);
    await reloadDetail();
    refreshList();
  } catch (error) {
    $('action-error').textContent = errorText(error);
  }
}

async function changeTags(change) {
  await act('/tags', change, 'side-error');
}

async function addTag(event) {
  event.preventDefault();
  const tag = $('tag-input').value.trim();
  if (!tag) return;
  if (await act('/tags', { add: [tag] }, 'side-error')) $('tag-input').value = '';
}

async function addNote(event) {
  event.preventDefault();
  const text = $('note-text').value;
  if (!text.trim()) return;
  if (await act('/notes', { text }, 'side-error')) $('note-text').value = '';
}

async function correctLanguage(event) {
  event.preventDefault();
  const language = $('language-input').value.trim().toLowerCase();
  if (!/^[a-z]{2}$/.test(language)) {
    $('side-error').textContent = t('side.language_invalid');
    return;
  }
  await act('/language', { language }, 'side-error');
}

async function openCanned() {
  if (!state.selected || $('free-reply').hidden) return;
  const list = $('canned-list');
  list.replaceChildren();
  try {
    const answer = await get(`/conversations/${encodeURIComponent(state.selected)}/canned-replies`);
    for (const reply of answer.replies) {
      const button = el('button', { className: 'canned-item', attrs: { type: 'button', 'data-language': reply.language } }, [
        el('span', { className: 'canned-name', text: reply.name }),
        badge(reply.language.toUpperCase(), 'language', t('side.language')),
        el('span', { className: 'canned-text', text: reply.text }),
        (reply.missing || []).length ? el('span', { className: 'muted', text: t('canned.missing', { names: reply.missing.join(', ') }) }) : null,
      ]);
      button.addEventListener('click', () => useCanned(reply.text));
      list.append(el('li', {}, [button]));
    }
    show($('canned-empty'), answer.replies.length === 0);
  } catch (error) {
    list.append(el('li', { className: 'error', text: errorText(error) }));
  }
  $('canned-dialog').showModal();
  const first = list.querySelector('button');
  if (first) first.focus();
}

function useCanned(text) {
  $('canned-dialog').close();
  const box = $('reply-text');
  box.value = box.value ? `${box.value}\n${text}` : text;
  box.focus();
  checkDraftSoon();
}

function presence(id, status) {
  post(`/conversations/${encodeURIComponent(id)}/presence`, { state: status }).catch(() => {});
}

const typing = debounce(() => {
  if (state.selected) presence(state.selected, 'typing');
}, 400);

// -- presence, heartbeat, notifications ---------------------------------------------------

async function setPresence(status, quiet = false) {
  if (!state.me) return;
  try {
    await post(`/agents/${encodeURIComponent(state.me.agent_id)}/status`, { status });
    $('presence').value = status;
    show($('presence'), true);
  } catch (error) {
    // Accounts that are not routing agents (an admin) have no presence to set.
    if (quiet) show($('presence'), false);
    else $('live-status').textContent = errorText(error);
  }
}

function heartbeat() {
  if (state.me && !$('presence').hidden) {
    post(`/agents/${encodeURIComponent(state.me.agent_id)}/heartbeat`).catch(() => {});
  }
}

function updateNotifyButton() {
  const button = $('notify-button');
  if (!('Notification' in window)) {
    show(button, false);
    return;
  }
  const permission = Notification.permission;
  button.textContent = permission === 'granted' ? t('notify.enabled')
    : permission === 'denied' ? t('notify.denied') : t('notify.enable');
  button.disabled = permission !== 'default';
}

async function enableNotifications() {
  if ('Notification' in window) await Notification.requestPermission();
  updateNotifyButton();
}

function notifyAssigned(conversationId) {
  if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
  const notification = new Notification(t('notify.title'), { body: t('notify.assigned'), tag: conversationId });
  notification.addEventListener('click', () => {
    window.focus();
    openConversation(conversationId);
  });
}

// -- live events (SSE, resumed with Last-Event-ID) ----------------------------------------

function openEvents() {
  if (state.events) state.events.close();
  const source = new EventSource(`/api/v1/events${query({ last_event_id: state.lastEventId })}`);
  state.events = source;
  for (const kind of EVENT_KINDS) source.addEventListener(kind, (event) => onEvent(kind, event));
  source.addEventListener('open', () => {
    $('live-status').textContent = t('live.connected');
  });
  source.addEventListener('error', () => {
    if (state.events !== source) return;
    $('live-status').textContent = t('live.reconnecting');
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (the hub answered an error): check the session, then resume
      // from the last event seen.
      setTimeout(async () => {
        if (state.events !== source) return;
        try {
          await get('/me');
          openEvents();
        } catch (error) {
          if (error instanceof ApiError && error.status === 401) showSignin(t('signin.expired'));
          else openEvents();
        }
      }, 2000);
    }
  });
}

function onEvent(kind, event) {
  if (event.lastEventId) state.lastEventId = event.lastEventId;
  if (kind === 'reset') {
    loadList();
    reloadDetail();
    return;
  }
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  const current = data.conversation_id === state.selected;
  if (kind === 'viewing' || kind === 'typing') {
    if (current && data.agent && data.agent !== state.me.agent_id) {
      state.others.set(data.agent, { state: kind, until: Date.now() / 1000 + 30 });
      renderCollision();
    }
    return;
  }
  if (kind === 'assignment' && data.agent === state.me.agent_id) notifyAssigned(data.conversation_id);
  if (kind === 'sla_breach') addBreach(data);
  if (current) refreshDetail();
  refreshList();
  if (!$('supervisor').hidden) refreshBoard();
}

// -- supervisor view --------------------------------------------------------------------

function showView(view) {
  const supervisor = view === 'supervisor';
  show($('inbox'), !supervisor);
  show($('supervisor'), supervisor);
  $('nav-inbox').setAttribute('aria-pressed', String(!supervisor));
  $('nav-supervisor').setAttribute('aria-pressed', String(supervisor));
  if (supervisor) {
    refreshSupervision();
    loadReports();
    loadAgents();
  }
}

async function refreshSupervision() {
  if (!state.me || $('supervisor').hidden) return;
  try {
    const board = await get('/supervision');
    $('queue-rows').replaceChildren(...board.queues.map((queue) => el('tr', {}, [
      el('td', { text: queue.pool }),
      el('td', { text: String(queue.waiting) }),
      el('td', { text: queue.oldest_wait_seconds == null ? t('supervisor.none') : formatDuration(queue.oldest_wait_seconds) }),
      el('td', { text: String(queue.online_agents) }),
    ])));
    $('agent-rows').replaceChildren(...board.agents.map((agent) => el('tr', {}, [
      el('td', { text: agent.name ? `${agent.name} (${agent.id})` : agent.id }),
      el('td', { text: presenceLabel(agent.status) }),
      el('td', {
        text: Object.keys(agent.capacity).map((kind) => `${kind} ${agent.load[kind] || 0}/${agent.capacity[kind]}`).join(', '),
      }),
    ])));
  } catch (error) {
    $('live-status').textContent = errorText(error);
  }
}

const refreshBoard = debounce(() => refreshSupervision(), 500);

function presenceLabel(status) {
  switch (status) {
    case 'online': return t('presence.online');
    case 'away': return t('presence.away');
    default: return t('presence.offline');
  }
}

function addBreach(data) {
  state.breaches.unshift(data);
  state.breaches = state.breaches.slice(0, 50);
  $('breach-list').replaceChildren(...state.breaches.map((breach) => el('li', {
    text: t('supervisor.breach', { conversation: breach.conversation_id, clock: breach.clock || '', time: formatTime(breach.at) }),
  })));
  show($('breaches-empty'), state.breaches.length === 0);
  refreshSupervision();
}

// -- reports (charts drawn by the hub as SVG, shown as images; tables from JSON) ----------

function reportRange() {
  const days = Number($('reports-range').value) || 7;
  const to = Math.ceil(Date.now() / 60000) * 60;
  return { from: to - days * 86400, to, tz: timeZone(), interval: days <= 2 ? 'hour' : 'day' };
}

// Each chart is an <img> of GET /api/v1/reports/chart: the SVG never becomes part of this
// document (no markup from the server is injected), and the image CSP forbids its scripts.
function chartImages() {
  return [
    ['chart-response-language', 'response_time', 'language', t('reports.response_language')],
    ['chart-response-market', 'response_time', 'market', t('reports.response_market')],
    ['chart-volume-language', 'volume', 'language', t('reports.volume_language')],
    ['chart-volume-market', 'volume', 'market', t('reports.volume_market')],
    ['chart-csat', 'csat', 'language', t('reports.csat_trend')],
  ];
}

function seconds(duration) {
  if (!duration) return null;
  return duration.mean_business_seconds ?? duration.mean_seconds;
}

async function loadReports() {
  if (!state.me || RANK[state.me.role] < RANK.supervisor) return;
  const range = reportRange();
  $('reports-error').textContent = '';
  $('reports-period').textContent = t('reports.period', { from: formatTime(range.from), to: formatTime(range.to) });
  for (const [id, chart, by, alt] of chartImages()) {
    const img = $(id);
    img.alt = alt;
    img.dataset.loaded = 'false';
    img.src = `/api/v1/reports/chart${query({ chart, by, ...range, lang: currentLanguage() })}`;
  }
  const span = query({ from: range.from, to: range.to, tz: range.tz });
  try {
    const [board, total] = await Promise.all([
      get(`/reports/breakdown${span}&by=agent`),
      get(`/reports/summary${span}`),
    ]);
    renderLeaderboard(board.rows);
    renderCsat(total.csat);
  } catch (error) {
    $('reports-error').textContent = errorText(error);
  }
}

function renderLeaderboard(rows) {
  const ranked = [...rows].sort((a, b) => (b.counts.resolved || 0) - (a.counts.resolved || 0)
    || (a.key < b.key ? -1 : 1));
  const body = $('leaderboard-rows');
  if (!ranked.length) {
    body.replaceChildren(el('tr', {}, [el('td', { text: t('reports.no_data'), attrs: { colspan: '6' } })]));
    return;
  }
  body.replaceChildren(...ranked.map((row, i) => {
    const first = seconds(row.durations.first_response);
    return el('tr', { attrs: { 'data-agent': row.key } }, [
      el('td', { text: String(i + 1) }),
      el('th', { text: row.key, attrs: { scope: 'row' } }),
      el('td', { text: String(row.counts.resolved || 0) }),
      el('td', { text: String(row.counts.replies || 0) }),
      el('td', { text: first == null ? t('reports.none') : formatDuration(first) }),
      el('td', {
        text: row.csat.mean_score == null ? t('reports.none')
          : t('reports.csat_cell', { score: row.csat.mean_score.toFixed(1), n: row.csat.answered }),
      }),
    ]);
  }));
}

function renderCsat(csat) {
  $('csat-summary').textContent = csat.sent === 0 && csat.answered === 0 ? t('reports.csat_none')
    : t('reports.csat_summary', {
      score: csat.mean_score == null ? t('reports.none') : csat.mean_score.toFixed(1),
      answered: csat.answered,
      sent: csat.sent,
      satisfied: csat.satisfied_share == null ? t('reports.none') : `${Math.round(csat.satisfied_share * 100)}%`,
    });
}

// -- agent management (GET/PUT /agents; accounts for admins) -------------------------------

// "es:5, pt:3" <-> {es: 5, pt: 3}; a bare "es" is level 3. Markets: "BR, MX".
function parseLevels(text, field) {
  const levels = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const match = /^([A-Za-z][\w.-]{0,31})(?:\s*:\s*([1-5]))?$/.exec(part);
    if (!match) throw new Error(t('agents.bad_levels', { field, part }));
    levels[match[1].toLowerCase()] = Number(match[2] || 3);
  }
  return levels;
}

function formatLevels(levels) {
  return Object.entries(levels || {}).map(([name, level]) => `${name}:${level}`).join(', ');
}

function parseMarkets(text) {
  return text.split(',').map((p) => p.trim().toUpperCase()).filter(Boolean);
}

async function loadAgents() {
  if (!state.me || RANK[state.me.role] < RANK.supervisor) return;
  const admin = RANK[state.me.role] >= RANK.admin;
  show($('agent-add-form'), admin);
  try {
    const [agents, accounts] = await Promise.all([
      get('/agents'),
      admin ? get('/accounts') : Promise.resolve(null),
    ]);
    state.agents = agents.agents;
    state.accounts = accounts ? new Map(accounts.accounts.map((a) => [a.id, a])) : null;
    renderAgents();
  } catch (error) {
    $('agent-admin-error').textContent = errorText(error);
  }
}

function renderAgents() {
  const rows = state.agents.map(({ profile }) => {
    const field = (name, label) => el('input', {
      className: `agent-${name}`,
      attrs: { 'aria-label': label, autocomplete: 'off', size: '14' },
    });
    const languages = field('languages', t('agents.languages_of', { agent: profile.id }));
    const markets = field('markets', t('agents.markets_of', { agent: profile.id }));
    const skills = field('skills', t('agents.skills_of', { agent: profile.id }));
    languages.value = formatLevels(profile.languages);
    markets.value = (profile.markets || []).join(', ');
    skills.value = formatLevels(profile.skills);
    const save = el('button', { className: 'agent-save', text: t('agents.save'), attrs: { type: 'button' } });
    save.addEventListener('click', () => saveAgent(profile, languages, markets, skills));
    const actions = [save];
    const account = state.accounts ? state.accounts.get(profile.id) : null;
    let accountText = t('agents.account_unknown');
    if (state.accounts) {
      accountText = !account ? t('agents.no_account') : account.enabled ? t('agents.enabled') : t('agents.disabled');
    }
    if (account) {
      const toggle = el('button', {
        className: 'agent-toggle',
        text: account.enabled ? t('agents.disable') : t('agents.enable'),
        attrs: { type: 'button' },
      });
      toggle.addEventListener('click', () => toggleAccount(profile.id, account.enabled));
      actions.push(' ', toggle);
    }
    return el('tr', { attrs: { 'data-agent': profile.id } }, [
      el('th', { text: profile.name ? `${profile.name} (${profile.id})` : profile.id, attrs: { scope: 'row' } }),
      el('td', {}, [languages]),
      el('td', {}, [markets]),
      el('td', {}, [skills]),
      el('td', { className: 'agent-account', text: accountText }),
      el('td', {}, actions),
    ]);
  });
  $('agent-admin-rows').replaceChildren(...rows);
}

async function saveAgent(profile, languages, markets, skills) {
  $('agent-admin-error').textContent = '';
  $('agent-admin-status').textContent = '';
  try {
    const body = {
      ...profile,
      languages: parseLevels(languages.value, t('agents.languages')),
      markets: parseMarkets(markets.value),
      skills: parseLevels(skills.value, t('agents.skills')),
    };
    await api('PUT', `/agents/${encodeURIComponent(profile.id)}`, body);
    $('agent-admin-status').textContent = t('agents.saved', { agent: profile.id });
    await loadAgents();
  } catch (error) {
    $('agent-admin-error').textContent = error instanceof ApiError ? errorText(error) : error.message;
  }
}

// Disabling ends the account's sessions at once (admin) and takes the agent offline, so
// routing stops giving them conversations; enabling leaves presence to the agent.
async function toggleAccount(id, disable) {
  $('agent-admin-error').textContent = '';
  try {
    await post(`/accounts/${encodeURIComponent(id)}/${disable ? 'disable' : 'enable'}`);
    if (disable) await post(`/agents/${encodeURIComponent(id)}/status`, { status: 'offline' });
    $('agent-admin-status').textContent = disable ? t('agents.was_disabled', { agent: id }) : t('agents.was_enabled', { agent: id });
    await loadAgents();
  } catch (error) {
    $('agent-admin-error').textContent = errorText(error);
  }
}

async function addAgent(event) {
  event.preventDefault();
  $('agent-admin-error').textContent = '';
  const id = $('agent-add-id').value.trim();
  const name = $('agent-add-name').value.trim();
  try {
    const languages = parseLevels($('agent-add-languages').value, t('agents.languages'));
    const skills = parseLevels($('agent-add-skills').value, t('agents.skills'));
    if (!id || !Object.keys(languages).length) throw new Error(t('agents.add_required'));
    await post('/accounts', { id, name: name || id, role: $('agent-add-role').value, password: $('agent-add-password').value });
    await api('PUT', `/agents/${encodeURIComponent(id)}`, {
      id, name, languages, skills, markets: parseMarkets($('agent-add-markets').value),
    });
    $('agent-add-form').reset();
    $('agent-admin-status').textContent = t('agents.added', { agent: id });
    await loadAgents();
  } catch (error) {
    $('agent-admin-error').textContent = error instanceof ApiError ? errorText(error) : error.message;
  }
}

// -- password change --------------------------------------------------------------------

function openPassword() {
  $('password-form').reset();
  $('password-username').value = state.me.agent_id;
  $('password-error').textContent = '';
  $('password-dialog').showModal();
  $('password-current').focus();
}

async function changePassword(event) {
  event.preventDefault();
  const current = $('password-current').value;
  const fresh = $('password-new').value;
  if (fresh !== $('password-confirm').value) {
    $('password-error').textContent = t('password.mismatch');
    return;
  }
  try {
    await post(`/accounts/${encodeURIComponent(state.me.agent_id)}/password`, { current_password: current, password: fresh });
    $('password-dialog').close();
    showSignin(t('password.changed'));
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) $('password-error').textContent = t('password.wrong_current');
    else if (error instanceof ApiError && error.status === 400) $('password-error').textContent = t('password.weak');
    else $('password-error').textContent = errorText(error);
  }
}

// -- keyboard ---------------------------------------------------------------------------

function typingInField(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

function onKey(event) {
  if (!state.me || event.ctrlKey || event.metaKey || event.altKey) return;
  if (document.querySelector('dialog[open]') || typingInField(event.target)) return;
  if (!$('supervisor').hidden && event.key !== '?') return;
  const actions = {
    j: () => moveSelection(1),
    k: () => moveSelection(-1),
    e: () => state.selected && !$('action-resolve').disabled && resolve(),
    s: () => state.selected && !$('action-snooze').disabled && snooze(),
    c: () => openCanned(),
    '/': () => $('search').focus(),
    '?': () => $('shortcuts-dialog').showModal(),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
}

function onReplyKey(event) {
  // Enter sends, Shift+Enter is a new line; an IME composing Chinese keeps its Enter.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitReply();
  }
}

// -- start ------------------------------------------------------------------------------

async function switchLanguage(lang) {
  await loadLanguage(lang);
  for (const select of document.querySelectorAll('.ui-language')) select.value = currentLanguage();
  if (state.me) {
    $('whoami').textContent = t('app.signed_in_as', { name: state.me.agent_id, zone: timeZone() });
    renderList();
    if (state.detail) {
      renderConversation();
      renderSide();
      renderContact();
    } else {
      $('conversation-title').textContent = t('conversation.none');
    }
    updateNotifyButton();
    checkDraft();
    if (!$('supervisor').hidden) {
      loadReports();
      renderAgents();
    }
  }
}

function wire() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  for (const select of document.querySelectorAll('.ui-language')) {
    select.addEventListener('change', () => switchLanguage(select.value));
  }
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.search = $('search').value.trim();
    show($('search-clear'), Boolean(state.search));
    loadList();
  });
  $('search-clear').addEventListener('click', () => {
    $('search').value = '';
    state.search = '';
    show($('search-clear'), false);
    loadList();
  });
  $('search').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') $('search').blur();
  });
  for (const id of ['filter-view', 'filter-language', 'filter-market', 'filter-channel', 'filter-tag']) {
    $(id).addEventListener('change', () => loadList());
  }
  $('list-more').addEventListener('click', () => loadList(true));
  $('bulk-resolve').addEventListener('click', bulkResolve);
  $('bulk-assign').addEventListener('click', bulkAssign);
  $('bulk-tag-add').addEventListener('click', bulkTag);
  $('contact-more').addEventListener('click', moreContact);
  $('reports-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadReports();
  });
  $('reports-range').addEventListener('change', loadReports);
  for (const [id] of chartImages()) {
    $(id).addEventListener('load', () => { $(id).dataset.loaded = 'true'; });
    $(id).addEventListener('error', () => {
      $(id).dataset.loaded = 'error';
      $('reports-error').textContent = t('reports.chart_failed');
    });
  }
  $('agent-add-form').addEventListener('submit', addAgent);
  $('bulk-clear').addEventListener('click', () => {
    state.picked.clear();
    renderList();
  });
  $('action-resolve').addEventListener('click', resolve);
  $('action-snooze').addEventListener('click', snooze);
  $('action-reopen').addEventListener('click', reopen);
  $('action-spam').addEventListener('click', markSpam);
  $('action-block').addEventListener('click', blockSender);
  $('reply-form').addEventListener('submit', submitReply);
  $('reply-text').addEventListener('keydown', onReplyKey);
  $('reply-text').addEventListener('input', () => {
    checkDraftSoon();
    typing();
  });
  $('canned-button').addEventListener('click', openCanned);
  $('reply-file').addEventListener('change', chooseFiles);
  $('template-select').addEventListener('change', renderTemplateParameters);
  $('template-send').addEventListener('click', sendTemplate);
  $('tag-form').addEventListener('submit', addTag);
  $('note-form').addEventListener('submit', addNote);
  $('language-form').addEventListener('submit', correctLanguage);
  $('nav-inbox').addEventListener('click', () => showView('inbox'));
  $('nav-supervisor').addEventListener('click', () => showView('supervisor'));
  $('presence').addEventListener('change', () => setPresence($('presence').value));
  $('notify-button').addEventListener('click', enableNotifications);
  $('password-button').addEventListener('click', openPassword);
  $('password-form').addEventListener('submit', changePassword);
  $('password-cancel').addEventListener('click', () => $('password-dialog').close());
  $('shortcuts-button').addEventListener('click', () => $('shortcuts-dialog').showModal());
  document.addEventListener('keydown', onKey);
  window.addEventListener('inboxhub:unauthorized', () => {
    if (state.me) showSignin(t('signin.expired'));
  });
  window.addEventListener('beforeunload', () => {
    if (state.selected) presence(state.selected, 'left');
  });
}

async function boot() {
  await loadLanguage(preferredLanguage());
  for (const select of document.querySelectorAll('.ui-language')) select.value = currentLanguage();
  applyCatalog(document);
  wire();
  try {
    const me = await get('/me');
    await startSession(me);
  } catch {
    showSignin();
  }
  document.body.dataset.ready = 'true';
}

boot();
