// Devices: the list filtered by product, status and name; create (the API generates a password
// when none is given, and the console shows it once); enable / disable (disabling kicks the
// device); delete; and a detail page that follows the device's status live.

import {get, post, put, query} from '../api.js';
import {t} from '../i18n.js';
import {h, form, table, listView, failure, dialog, confirmDelete, notify, adminButton, header, badge, navigate} from '../ui.js';

const STATUS = ['disabled', 'inactive', 'offline', 'online'];
const statusBadge = (s) => badge(t(`status_${STATUS[s] ?? 'inactive'}`), `status-${STATUS[s]}`);

/** Every product as `[product_key, name]`, for the filters and the create form. */
async function productOptions() {
  const out = [];
  for (let page = 1; page <= 50; page++) {
    const {data, meta} = await get(`products${query({_page: page, _limit: 100})}`);
    out.push(...data.map((p) => [p.product_key, `${p.name} (${p.product_key})`]));
    if (!meta?.hasnext) break;
  }
  return out;
}

export default function devices(view, [id], params) {
  if (id) return detail(view, id);
  const product = h('select', {id: 'device-product', name: 'product_key'},
    h('option', {value: ''}, t('all')));
  const status = h('select', {id: 'device-status', name: 'status'},
    h('option', {value: ''}, t('all')),
    STATUS.map((s, i) => h('option', {value: String(i)}, t(`status_${s}`))));
  const name = h('input', {type: 'search', id: 'device-search', name: 'device_name'});
  let products = [];
  const {form: filters, list, load} = listView({
    id: 'device-list',
    filters: [[t('product'), product], [t('status'), status], [t('search_name'), name]],
    fetch: (page) => get(`devices${query({_page: page, _limit: 10, product_key: product.value,
      status: status.value, device_name: name.value.trim()})}`),
    empty: t('no_devices'),
    columns: [
      [t('name'), (d) => h('a', {href: `#/devices/${d.id}`}, d.name)],
      [t('product_key'), (d) => h('code', {}, d.product_key)],
      [t('username'), (d) => d.username],
      [t('client_id'), (d) => d.mqtt_client_id],
      [t('status'), (d) => statusBadge(d.status)],
      [t('ip'), (d) => d.ip || '—'],
      [t('actions'), (d) => h('div', {class: 'row-actions'},
        adminButton(d.enable ? t('disable') : t('enable'), () => toggle(d, load)),
        adminButton(t('delete'), () => remove(d, load), 'danger'))],
    ],
  });
  view.append(
    header(t('nav_devices'),
      h('button', {type: 'button', onclick: () => load()}, t('refresh')),
      adminButton(t('create_device'), () => create(), 'primary')),
    filters, list);

  function create() {
    const f = form({
      fields: [
        {name: 'name', label: t('name'), required: true},
        {name: 'product_key', label: t('product'), options: products},
        {name: 'username', label: t('username'), required: true, help: t('username_help')},
        {name: 'mqtt_client_id', label: t('client_id'), required: true},
        {name: 'password', label: t('device_password'), type: 'password',
          help: t('password_generated_help')},
        {name: 'nickname', label: t('nickname')},
        {name: 'description', label: t('description'), type: 'textarea'},
      ],
      submitLabel: t('create'),
      submit: async (v) => {
        const body = {name: v.name.trim(), product_key: v.product_key, username: v.username.trim(),
          mqtt_client_id: v.mqtt_client_id.trim(), nickname: v.nickname, description: v.description};
        if (v.password) body.password = v.password;
        await post('devices', body);
        close();
        load();
        await created(body);
      },
    });
    f.id = 'device-form';
    // The user name and client id follow the name until they are edited.
    for (const k of ['username', 'mqtt_client_id']) {
      f.inputs[k].addEventListener('input', () => { f.inputs[k].dataset.edited = '1'; });
    }
    f.inputs.name.addEventListener('input', () => {
      for (const k of ['username', 'mqtt_client_id']) {
        if (!f.inputs[k].dataset.edited) f.inputs[k].value = f.inputs.name.value;
      }
    });
    const {close} = dialog(t('create_device'), f);
    if (!products.length) {
      f.prepend(h('p', {class: 'form-error', role: 'alert'}, t('create_product_first')));
    }
    f.inputs.name.focus();
  }

  /** Shows the new device's credentials, its generated password included. */
  async function created(body) {
    const {data} = await get(`devices${query({product_key: body.product_key,
      device_name: body.name, _limit: 100})}`);
    const d = data.find((x) => x.name === body.name);
    if (!d) return;
    const {data: [full]} = await get(`devices/${d.id}`);
    dialog(t('device_created'),
      h('p', {}, t('device_created_hint')),
      h('dl', {class: 'detail', id: 'device-credentials'},
        h('dt', {}, t('username')), h('dd', {}, h('code', {}, full.username)),
        h('dt', {}, t('client_id')), h('dd', {}, h('code', {}, full.mqtt_client_id)),
        h('dt', {}, t('device_password')), h('dd', {}, h('code', {id: 'device-password'}, full.password))),
      h('p', {}, h('a', {href: `#/devices/${d.id}`}, t('open_device'))));
  }

  productOptions().then((opts) => {
    products = opts;
    product.append(...opts.map(([v, text]) => h('option', {value: v}, text)));
    if (params.get('product_key')) {
      product.value = params.get('product_key');
      load();
    }
  }).catch((e) => notify(e.message, true));
  if (!params.get('product_key')) load();
  return null;
}

function toggle(d, then) {
  put(`devices/${d.id}`, {enable: !d.enable})
    .then(() => {
      notify(d.enable ? t('device_disabled') : t('device_enabled'));
      then();
    })
    .catch((e) => notify(e.message, true));
}

function remove(d, then) {
  confirmDelete(t('confirm_delete_device', d.name), `devices/${d.id}`, then);
}

const EVERY_MS = 2000;

function detail(view, id) {
  const body = h('div', {id: 'device-detail'});
  const subs = h('div', {id: 'device-subscriptions'});
  const tools = h('div', {class: 'tools'});
  view.append(h('p', {}, h('a', {href: '#/devices'}, `← ${t('nav_devices')}`)),
    h('div', {class: 'page-head'}, h('h1', {id: 'device-title'}, t('device')), tools),
    h('section', {class: 'card'}, body),
    h('section', {class: 'card'}, h('h2', {}, t('subscriptions')), subs));

  let shown = '';
  async function load() {
    try {
      const {data: [d]} = await get(`devices/${encodeURIComponent(id)}`);
      const {data: rows} = await get(`subscriptions${query({clientid: d.mqtt_client_id, _limit: 100})}`);
      // Redrawn only on a change, so a poll never swaps a button from under the pointer.
      const now = JSON.stringify([d, rows]);
      if (now === shown) return;
      shown = now;
      document.getElementById('device-title').textContent = d.name;
      tools.replaceChildren(...[
        adminButton(d.enable ? t('disable') : t('enable'), () => toggle(d, load)),
        adminButton(t('delete'), () => remove(d, () => navigate('#/devices')), 'danger'),
      ].filter(Boolean));
      const row = (k, v, key) => [h('dt', {}, k), h('dd', {'data-key': key}, v ?? '—')];
      body.replaceChildren(h('dl', {class: 'detail'},
        row(t('status'), statusBadge(d.status), 'status'),
        row(t('enabled'), d.enable ? t('yes') : t('no'), 'enable'),
        row(t('product_key'), d.product_key, 'product_key'),
        row(t('username'), d.username, 'username'),
        row(t('client_id'), d.mqtt_client_id, 'mqtt_client_id'),
        row(t('nickname'), d.nickname || null, 'nickname'),
        row(t('ip'), d.ip, 'ip'),
        row(t('connected_at'), d.connected_at || null, 'connected_at'),
        row(t('disconnected_at'), d.disconnected_at || null, 'disconnected_at'),
        row(t('created'), d.create_at, 'create_at'),
        row(t('description'), d.description, 'description')));
      subs.replaceChildren(table([
        [t('topic'), (s) => h('code', {}, s.topic)],
        [t('qos'), (s) => s.qos],
        [t('node'), (s) => `#${s.node}`],
      ], rows, t('no_subscriptions')));
    } catch (e) {
      shown = '';
      body.replaceChildren(failure(e));
    }
  }

  load();
  const timer = setInterval(load, EVERY_MS);
  return () => clearInterval(timer);
}
