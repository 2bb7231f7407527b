// Connected clients on every node, looked up by client id or user name, and kicked.

import {get, del, query} from '../api.js';
import {t} from '../i18n.js';
import {h, listView, confirmDialog, notify, adminButton, header} from '../ui.js';

export default function clients(view) {
  const clientid = h('input', {type: 'search', id: 'client-search', name: 'clientid'});
  const username = h('input', {type: 'search', id: 'client-username', name: 'username'});
  const {form: filters, list, load} = listView({
    id: 'client-list',
    filters: [[t('client_id'), clientid], [t('username'), username]],
    fetch: (page) => get(`clients${query({_page: page, _limit: 20,
      clientid: clientid.value.trim(), username: username.value.trim()})}`),
    empty: t('no_clients'),
    columns: [
      [t('client_id'), (c) => h('code', {}, c.clientid)],
      [t('username'), (c) => c.username ?? '—'],
      [t('node'), (c) => `#${c.node}`],
      [t('ip'), (c) => (c.ip_address ? `${c.ip_address}:${c.port ?? ''}` : '—')],
      [t('protocol'), (c) => (c.proto_ver === 5 ? 'MQTT 5.0' : 'MQTT 3.1.1')],
      [t('keepalive'), (c) => c.keepalive],
      [t('clean_start'), (c) => (c.clean_start ? t('yes') : t('no'))],
      [t('connected_at'), (c) => c.connected_at],
      [t('subscriptions'), (c) => c.subscriptions_cnt],
      [t('inflight'), (c) => c.inflight],
      [t('queued'), (c) => c.mqueue_len],
      [t('actions'), (c) => adminButton(t('kick'), () => kick(c), 'danger')],
    ],
  });
  view.append(
    header(t('nav_clients'), h('button', {type: 'button', onclick: () => load()}, t('refresh'))),
    filters, list);

  function kick(c) {
    confirmDialog(t('confirm_kick', c.clientid), async () => {
      await del(`clients/${encodeURIComponent(c.clientid)}`);
      notify(t('kicked', c.clientid));
      load();
    });
  }

  load();
  return null;
}
