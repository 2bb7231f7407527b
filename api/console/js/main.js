// The console's shell: the navigation, the language switch, sign-in and sign-out, and a hash
// router (`#/devices/7`) so every page has an address, works with back/forward and needs no
// server-side routes.

import {session, signIn, signOut, setUnauthorizedHandler} from './api.js';
import {t, lang, setLang} from './i18n.js';
import {h, form, navigate} from './ui.js';
import overview from './pages/overview.js';
import products from './pages/products.js';
import devices from './pages/devices.js';
import clients from './pages/clients.js';
import users from './pages/users.js';
import rules from './pages/rules.js';
import pubsub from './pages/pubsub.js';

const PAGES = {overview, products, devices, clients, users, rules, pubsub};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let leave = null;

/** Stops what the previous page left running (timers, MQTT connections). */
function cleanup() {
  if (leave) leave();
  leave = null;
}

function renderNav(current) {
  nav.replaceChildren(h('ul', {}, Object.keys(PAGES).map((name) =>
    h('li', {}, h('a', {href: `#/${name}`, 'aria-current': name === current ? 'page' : null},
      t(`nav_${name}`))))));
}

function renderChrome() {
  const s = session();
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  document.title = t('title');
  document.getElementById('lang-label').textContent = t('language');
  document.getElementById('skip-link').textContent = t('skip');
  document.getElementById('who').textContent = s ? `${s.username} · ${t(`role_${s.role}`)}` : '';
  const out = document.getElementById('sign-out');
  out.textContent = t('sign_out');
  out.hidden = !s;
  nav.hidden = !s;
  document.getElementById('menu-toggle').hidden = !s;
}

function loginPage() {
  const f = form({
    fields: [
      {name: 'username', label: t('username'), autocomplete: 'username', required: true},
      {name: 'password', label: t('password'), type: 'password', autocomplete: 'current-password',
        required: true},
    ],
    submitLabel: t('sign_in'),
    submit: async ({username, password}) => {
      await signIn(username, password);
      // Back to the page that asked for a sign-in (a shared link to a device, say).
      const asked = location.hash;
      navigate(asked && !asked.startsWith('#/login') ? asked : '#/overview');
    },
  });
  f.id = 'login-form';
  main.replaceChildren(h('section', {class: 'login card'},
    h('h1', {}, t('sign_in_title')), h('p', {class: 'muted'}, t('sign_in_hint')), f));
  f.inputs.username.focus();
}

export function route() {
  cleanup();
  renderChrome();
  const [path, search] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  if (!session()) {
    loginPage();
    return;
  }
  const page = PAGES[name] || null;
  if (!page) {
    location.replace('#/overview');
    return;
  }
  renderNav(name);
  nav.classList.remove('open');
  document.getElementById('menu-toggle').setAttribute('aria-expanded', 'false');
  const view = h('section', {class: `page page-${name}`});
  main.replaceChildren(view);
  leave = page(view, rest.map(decodeURIComponent), new URLSearchParams(search || '')) || null;
  main.focus({preventScroll: true});
}

setUnauthorizedHandler(() => {
  signOut();
  route();
});

document.getElementById('sign-out').addEventListener('click', () => {
  signOut();
  navigate('#/login');
});

const langSelect = document.getElementById('lang');
langSelect.value = lang();
langSelect.addEventListener('change', () => {
  setLang(langSelect.value);
  route();
});

document.getElementById('menu-toggle').addEventListener('click', (ev) => {
  const open = nav.classList.toggle('open');
  ev.currentTarget.setAttribute('aria-expanded', String(open));
});

// A choice in the folded (phone) menu closes it, also when it names the current page.
nav.addEventListener('click', (ev) => {
  if (!ev.target.closest('a')) return;
  nav.classList.remove('open');
  document.getElementById('menu-toggle').setAttribute('aria-expanded', 'false');
});

window.addEventListener('hashchange', route);
route();
