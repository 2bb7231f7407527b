// Products: the list with search and paging, create, edit, delete, and the secret (shown to
// administrators only, on request).

import {get, post, put, query} from '../api.js';
import {t} from '../i18n.js';
import {h, form, listView, dialog, confirmDelete, notify, adminButton, header} from '../ui.js';

const typeOptions = () => [['1', t('type_direct')], ['2', t('type_gateway')]];
const regOptions = () => [['1', t('allowed')], ['0', t('not_allowed')]];

export default function products(view) {
  const search = h('input', {type: 'search', id: 'product-search', name: 'product_name'});
  const {form: filters, list, load} = listView({
    id: 'product-list',
    filters: [[t('search_name'), search]],
    fetch: (page) => get(`products${query({_page: page, _limit: 10,
      product_name: search.value.trim()})}`),
    empty: t('no_products'),
    columns: [
      [t('name'), (p) => p.name],
      [t('product_key'), (p) => h('code', {}, p.product_key)],
      [t('type'), (p) => (Number(p.type) === 2 ? t('type_gateway') : t('type_direct'))],
      [t('dynamic_reg'), (p) => (Number(p.dynamic_reg) === 1 ? t('allowed') : t('not_allowed'))],
      [t('device_count'), (p) => p.device_count],
      [t('created'), (p) => p.create_at],
      [t('actions'), (p) => h('div', {class: 'row-actions'},
        h('a', {href: `#/devices?product_key=${encodeURIComponent(p.product_key)}`},
          t('nav_devices')),
        adminButton(t('show_secret'), () => secret(p)),
        adminButton(t('edit'), () => edit(p)),
        adminButton(t('delete'), () => remove(p), 'danger'))],
    ],
  });
  view.append(
    header(t('nav_products'), adminButton(t('create_product'), () => edit(null), 'primary')),
    filters, list);

  function edit(p) {
    const f = form({
      fields: [
        {name: 'name', label: t('name'), value: p?.name, required: true},
        {name: 'type', label: t('type'), options: typeOptions(), value: String(p?.type ?? 1)},
        {name: 'dynamic_reg', label: t('dynamic_reg'), options: regOptions(),
          value: String(p?.dynamic_reg ?? 1)},
        {name: 'description', label: t('description'), type: 'textarea', value: p?.description},
      ],
      submitLabel: p ? t('save') : t('create'),
      submit: async (v) => {
        const body = {name: v.name.trim(), type: v.type, dynamic_reg: v.dynamic_reg,
          description: v.description};
        if (p) {
          await put(`products/${p.id}`, body);
          notify(t('saved'));
        } else {
          const {data} = await post('products', body);
          notify(t('product_created', data.product_key));
        }
        close();
        load();
      },
    });
    f.id = 'product-form';
    const {close} = dialog(p ? t('edit_product') : t('create_product'), f);
    f.inputs.name.focus();
  }

  async function secret(p) {
    try {
      const {data} = await get(`products/${p.id}`);
      const d = data[0];
      dialog(t('product_secret'),
        h('dl', {class: 'detail'},
          h('dt', {}, t('product_key')), h('dd', {}, h('code', {}, d.product_key)),
          h('dt', {}, t('product_secret')), h('dd', {}, h('code', {id: 'secret'}, d.product_secret)),
          h('dt', {}, t('online')), h('dd', {}, d.online_count),
          h('dt', {}, t('offline')), h('dd', {}, d.offline_count)));
    } catch (e) {
      notify(e.message, true);
    }
  }

  function remove(p) {
    confirmDelete(t('confirm_delete_product', p.name), `products/${p.id}`, load);
  }

  load();
  return null;
}

