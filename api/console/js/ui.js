// Small DOM helpers shared by the pages: elements, labelled forms that show the API's error
// next to the field it names, tables, paging, dialogs and notices.

import {t} from './i18n.js';
import {isAdmin, del} from './api.js';

/** `h('button', {type: 'button', onclick}, 'Save')`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  // Children nest freely (a list of [label, input] pairs, say): flatten them all.
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let uid = 0;

/**
 * A labelled form. `fields`: `{name, label, type?, value?, options?, required?, help?}`;
 * `submit(values)` may throw an ApiError, whose message goes next to the field it names (or
 * above the buttons when it names none).
 */
export function form({fields, submitLabel, submit, extra = []}) {
  const inputs = {};
  const el = h('form', {class: 'form', novalidate: true});
  for (const f of fields) {
    const id = `f${++uid}-${f.name}`;
    let input;
    if (f.options) {
      input = h('select', {id, name: f.name},
        f.options.map(([value, text]) => h('option', {value}, text)));
    } else if (f.type === 'textarea' || f.type === 'code') {
      input = h('textarea', {id, name: f.name, rows: f.rows || 4,
        class: f.type === 'code' ? 'code' : '', spellcheck: f.type === 'code' ? 'false' : null});
    } else if (f.type === 'checkbox') {
      input = h('input', {id, name: f.name, type: 'checkbox'});
      input.checked = !!f.value;
    } else {
      input = h('input', {id, name: f.name, type: f.type || 'text',
        autocomplete: f.autocomplete || (f.type === 'password' ? 'new-password' : 'off')});
    }
    if (f.value !== undefined && f.type !== 'checkbox') input.value = f.value ?? '';
    if (f.required) input.required = true;
    const help = f.help ? h('small', {id: `${id}-help`, class: 'help'}, f.help) : null;
    if (help) input.setAttribute('aria-describedby', help.id);
    inputs[f.name] = input;
    el.append(h('div', {class: `field field-${f.type || 'text'}`, 'data-field': f.name},
      h('label', {for: id}, f.label), input, help));
  }
  const status = h('p', {class: 'form-error', role: 'alert', hidden: true});
  const button = h('button', {type: 'submit', class: 'primary'}, submitLabel);
  el.append(status, h('div', {class: 'actions'}, button, ...extra));
  const values = () => Object.fromEntries(Object.entries(inputs).map(([name, input]) =>
    [name, input.type === 'checkbox' ? input.checked : input.value]));
  /** Runs `action` with the values, showing its error the way a submit does. */
  el.run = async (action) => {
    clearErrors(el, status);
    button.disabled = true;
    try {
      await action(values());
    } catch (e) {
      showError(el, inputs, status, e);
    } finally {
      button.disabled = false;
    }
  };
  el.addEventListener('submit', (ev) => {
    ev.preventDefault();
    el.run(submit);
  });
  el.inputs = inputs;
  return el;
}

function clearErrors(el, status) {
  el.querySelectorAll('.field-error').forEach((n) => n.remove());
  el.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  status.hidden = true;
  status.textContent = '';
}

/** The field an API message is about: its first word (`name: ...`, `username must ...`), or the
 * first field named anywhere in it as a whole word. */
export function fieldOf(message, names) {
  const first = /^[`'"]?([a-z_]+)/i.exec(message)?.[1];
  if (first && names.includes(first)) return first;
  return names.find((n) => new RegExp(`\\b${n}\\b`).test(message));
}

function showError(el, inputs, status, e) {
  const message = e.message || String(e);
  const name = fieldOf(message, Object.keys(inputs));
  if (name) {
    const input = inputs[name];
    const err = h('p', {class: 'field-error', id: `${input.id}-error`, role: 'alert'}, message);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-errormessage', err.id);
    input.closest('.field').append(err);
    input.focus();
  } else {
    status.textContent = message;
    status.hidden = false;
  }
}

/** A table with a header row; `columns`: `[label, row => cell]`. */
export function table(columns, rows, empty = t('empty')) {
  if (!rows.length) return h('p', {class: 'empty'}, empty);
  return h('div', {class: 'table-wrap'},
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map(([label]) => h('th', {scope: 'col'}, label)))),
      h('tbody', {}, rows.map((r) =>
        h('tr', {}, columns.map(([label, cell]) => h('td', {'data-label': label}, cell(r))))))));
}

/** The API's message where a list or a detail would be. */
export function failure(e) {
  return h('p', {class: 'form-error', role: 'alert'}, e.message);
}

/**
 * A list page's body: a search form over `filters` (`[label, input]`), and a table of what
 * `fetch(page)` answers, with paging when the answer has `meta`. Returns `{form, list, load}`.
 */
export function listView({id, filters = [], fetch, columns, empty}) {
  let page = 1;
  const list = h('div', {id});
  const load = async () => {
    try {
      const {data, meta} = await fetch(page);
      list.replaceChildren(table(columns, data, empty), meta ? pager(meta, (n) => {
        page = n;
        load();
      }) : '');
    } catch (e) {
      list.replaceChildren(failure(e));
    }
  };
  const search = filters.length ? h('form', {class: 'filters', role: 'search', onsubmit: (ev) => {
    ev.preventDefault();
    page = 1;
    load();
  }}, filters.map(([label, input]) => [h('label', {for: input.id}, label), input]),
  h('button', {type: 'submit'}, t('search'))) : null;
  return {form: search, list, load};
}

/** Previous / next buttons from a list's `meta` (`page` and `limit` are strings there). */
export function pager(meta, go) {
  const page = Number(meta?.page || 1);
  const limit = Number(meta?.limit || 10);
  const count = Number(meta?.count || 0);
  const pages = Math.max(1, Math.ceil(count / limit));
  return h('nav', {class: 'pager', 'aria-label': t('paging')},
    h('button', {type: 'button', disabled: page <= 1, onclick: () => go(page - 1)}, t('previous')),
    h('span', {}, t('page_of', page, pages, count)),
    h('button', {type: 'button', disabled: !meta?.hasnext, onclick: () => go(page + 1)}, t('next')));
}

/** A modal dialog; Escape and the close button dismiss it. Returns `{el, close}`. */
export function dialog(title, ...content) {
  const close = () => {
    d.close();
    d.remove();
  };
  const d = h('dialog', {'aria-label': title},
    h('div', {class: 'dialog-head'}, h('h2', {}, title),
      h('button', {type: 'button', class: 'link close', 'aria-label': t('close'), onclick: close}, '✕')),
    ...content);
  d.addEventListener('close', () => d.remove());
  document.body.append(d);
  d.showModal();
  return {el: d, close};
}

/** Asks before a destructive action. */
export function confirmDialog(message, action) {
  const {close} = dialog(t('confirm'),
    h('p', {}, message),
    h('div', {class: 'actions'},
      h('button', {type: 'button', class: 'danger', onclick: async () => {
        try {
          await action();
          close();
        } catch (e) {
          close();
          notify(e.message, true);
        }
      }}, t('yes')),
      h('button', {type: 'button', onclick: () => close()}, t('cancel'))));
}

/** Asks, then DELETEs `path` through the API, says so and runs `then`. */
export function confirmDelete(message, path, then) {
  confirmDialog(message, async () => {
    await del(path);
    notify(t('deleted'));
    then();
  });
}

let toastTimer;
export function notify(message, error = false) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = `toast show${error ? ' error' : ''}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = 'toast'; }, 4000);
}

/** A button only administrators see; viewers get read-only pages. */
export function adminButton(label, onclick, cls = '') {
  if (!isAdmin()) return null;
  return h('button', {type: 'button', class: `admin ${cls}`, onclick}, label);
}

/** Goes to `hash`, rendering it again when it is the current one. */
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

/** A page's heading with its tools. */
export function header(title, ...tools) {
  return h('div', {class: 'page-head'}, h('h1', {}, title), h('div', {class: 'tools'}, ...tools));
}

export function badge(text, kind) {
  return h('span', {class: `badge ${kind}`}, text);
}
