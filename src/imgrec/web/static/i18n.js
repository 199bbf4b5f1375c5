// The page's words, in English and Korean. Every string a person reads comes from one table
// per language, i18n-en.json and i18n-ko.json next to this file: flat keys ("area.name") to
// texts with {placeholders}. To add a string:
//   1. add the same key to BOTH tables (tests/test_web_i18n.py checks the key sets, and the
//      placeholders of each key, are equal, and that every key is used);
//   2. in index.html, give the element data-i18n="key" (its text) or data-i18n-title,
//      data-i18n-alt, data-i18n-placeholder, data-i18n-aria-label (an attribute), and
//      leave it empty; in JavaScript, call say(element, msg("key", {param: value})) so
//      that a switch of language redraws it, or t("key", params) for a string used once.
// Text that comes from the server (its error messages, model and class names) is shown as
// it arrives: say(element, text) with a plain string.

export const LANGUAGES = ["en", "ko"];
const STORAGE_KEY = "imgrec-language";
// The attributes that may hold a key, and their names in element.dataset.
const ATTRIBUTES = {
  title: "i18nTitle",
  alt: "i18nAlt",
  placeholder: "i18nPlaceholder",
  "aria-label": "i18nAriaLabel",
};
// Everything that holds a key: redrawn when the language changes.
const SELECTOR = ["", ...Object.keys(ATTRIBUTES).map((name) => `-${name}`)]
  .map((suffix) => `[data-i18n${suffix}]`)
  .join(",");

const tables = new Map(); // language -> Promise of {key: text}
let current = "en";
let table = null; // the current language's table, once loaded
const listeners = [];
let requested = 0; // the latest switch wins, whichever table arrives first

function load(language) {
  if (!tables.has(language)) {
    const url = new URL(`./i18n-${language}.json`, import.meta.url);
    const loading = fetch(url).then((response) => {
      if (!response.ok) throw new Error(`${url.pathname}: ${response.status}`);
      return response.json();
    });
    tables.set(language, loading);
    loading.catch(() => tables.delete(language));
  }
  return tables.get(language);
}

// A message to show later, in whatever language is current then: {key, params}. A param may
// itself be a message, or a plain value (numbers are formatted by the caller).
export function msg(key, params = {}) {
  return { key, params };
}

// The text of `key` in the current language, with {name} replaced by params.name.
export function t(key, params = {}) {
  const template = table?.[key];
  if (template === undefined) return key;
  return template.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!(name in params)) return whole;
    const value = params[name];
    return value !== null && typeof value === "object" && "key" in value
      ? t(value.key, value.params)
      : String(value);
  });
}

// A text for `message`, a message or a plain string (a server's words, shown as they are).
export function text(message) {
  if (message === null || message === undefined) return "";
  return typeof message === "string" ? message : t(message.key, message.params);
}

// Show `message` as the text of `element` (or one of its attributes), and keep its key so a
// switch of language redraws it. A plain string is shown as it is and never translated.
export function say(element, message, attribute = null) {
  const name = attribute ? ATTRIBUTES[attribute] : "i18n";
  const args = `${name}Args`;
  if (message && typeof message === "object") {
    element.dataset[name] = message.key;
    element.dataset[args] = JSON.stringify(message.params ?? {});
  } else {
    delete element.dataset[name];
    delete element.dataset[args];
  }
  if (attribute) element.setAttribute(attribute, text(message));
  else element.textContent = text(message);
}

// An error the page itself raises, in words of the tables.
export class PageError extends Error {
  constructor(key, params = {}) {
    super(t(key, params));
    this.text = msg(key, params);
  }
}

// Draw every element that holds a key under `root` in the current language.
export function translate(root = document) {
  const args = (value) => (value ? JSON.parse(value) : {});
  for (const element of root.querySelectorAll(SELECTOR)) {
    const { dataset } = element;
    if (dataset.i18n) element.textContent = t(dataset.i18n, args(dataset.i18nArgs));
    for (const [attribute, name] of Object.entries(ATTRIBUTES)) {
      if (dataset[name]) {
        element.setAttribute(attribute, t(dataset[name], args(dataset[`${name}Args`])));
      }
    }
  }
}

export function language() {
  return current;
}

// Call `listener(language)` after each switch (for views that draw text some other way).
export function onLanguageChange(listener) {
  listeners.push(listener);
}

// Switch to `language`: load its table, redraw the page, set <html lang>, and remember the
// choice (`remember` false: a first visit's guess, not a choice).
export async function setLanguage(language, { remember = true } = {}) {
  if (!LANGUAGES.includes(language)) language = "en";
  const mine = ++requested;
  const loaded = await load(language);
  if (mine !== requested) return;
  current = language;
  table = loaded;
  document.documentElement.lang = language;
  document.documentElement.dataset.translated = language; // for tests: the tables are drawn
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, language);
    } catch {
      // storage refused (a private window): the choice lasts until the page closes
    }
  }
  translate();
  for (const button of document.querySelectorAll("[data-language]")) {
    button.setAttribute("aria-pressed", String(button.dataset.language === language));
  }
  for (const listener of listeners) listener(language);
}

// The language a visit starts in: the one chosen before, or else the browser's (ko* is
// Korean, anything else English).
export function startingLanguage() {
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch {
    // no storage: follow the browser
  }
  if (LANGUAGES.includes(stored)) return stored;
  return (navigator.language || "").toLowerCase().startsWith("ko") ? "ko" : "en";
}

// Draw the page in its starting language and make the switch's buttons work.
export async function startI18n() {
  for (const button of document.querySelectorAll("[data-language]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.language));
  }
  const first = startingLanguage();
  await setLanguage(first, { remember: false });
}
