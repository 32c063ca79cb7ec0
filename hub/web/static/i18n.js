// The interface catalogs (i18n/en.json, i18n/zh.json) and the agent's date format.
// Every visible string comes from here: t(name) in scripts, data-i18n* in the page.
// tests/test_web_i18n.py checks that every key used exists in both catalogs.

const STORAGE_KEY = 'inboxhub.language';
export const LANGUAGES = ['en', 'zh'];
let catalog = {};
let language = 'en';

export function preferredLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (LANGUAGES.includes(saved)) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export async function loadLanguage(wanted) {
  const lang = LANGUAGES.includes(wanted) ? wanted : 'en';
  const response = await fetch(`/inbox/static/i18n/${lang}.json`, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(`catalog ${lang}: ${response.status}`);
  catalog = await response.json();
  language = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  applyCatalog(document);
}

export function currentLanguage() {
  return language;
}

// t(name, {value: 'x'}): the catalog's text with {name} filled (values are inserted as text
// by the callers, never as markup). A missing key shows the key itself, visibly.
export function t(key, values = {}) {
  const text = catalog[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

export function applyCatalog(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll('[data-i18n-aria-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
}

// Dates and times in the agent's own time zone (the browser's), in the interface language.
export function formatTime(seconds) {
  if (seconds == null) return '';
  const locale = language === 'zh' ? 'zh-CN' : 'en-GB';
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' })
    .format(new Date(seconds * 1000));
}

export function timeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

// "in 5 min" / "3 h ago" for SLA deadlines and waits.
export function formatDuration(seconds) {
  const abs = Math.abs(seconds);
  if (abs < 60) return t('time.seconds', { n: Math.round(abs) });
  if (abs < 3600) return t('time.minutes', { n: Math.round(abs / 60) });
  if (abs < 86400) return t('time.hours', { n: Math.round(abs / 3600) });
  return t('time.days', { n: Math.round(abs / 86400) });
}
