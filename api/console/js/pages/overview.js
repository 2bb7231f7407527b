// The cluster at a glance: every member with its role, the totals of `GET /stats`, and
// messages in/out per second drawn from successive samples of it.

import {get} from '../api.js';
import {t} from '../i18n.js';
import {h, table, header, badge} from '../ui.js';
import {LineChart, short} from '../chart.js';

const EVERY_MS = 3000;

export default function overview(view) {
  const cards = h('div', {class: 'cards', id: 'totals'});
  const canvas = h('canvas', {class: 'chart', role: 'img', 'aria-label': t('chart_label')});
  const nodes = h('div', {id: 'nodes'});
  const legend = h('p', {class: 'legend'},
    h('span', {class: 'key in'}, t('msg_in_rate')), h('span', {class: 'key out'}, t('msg_out_rate')));
  const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
  view.append(header(t('nav_overview')), error, cards,
    h('section', {class: 'card'}, h('h2', {}, t('throughput')), legend, canvas),
    h('section', {class: 'card'}, h('h2', {}, t('nodes')), nodes));
  const chart = new LineChart(canvas, [{color: '#2563eb'}, {color: '#16a34a'}]);
  let last = null;

  async function refresh() {
    try {
      const [{data: members}, {data: stats}] = await Promise.all([get('nodes'), get('stats')]);
      error.hidden = true;
      const sum = (k) => stats.reduce((a, s) => a + (s[k] || 0), 0);
      const now = performance.now();
      const totals = {received: sum('messages_received'), sent: sum('messages_sent')};
      let rates = [0, 0];
      if (last) {
        const secs = (now - last.at) / 1000;
        rates = [Math.max(0, totals.received - last.received) / secs,
          Math.max(0, totals.sent - last.sent) / secs];
        chart.push(rates);
      }
      last = {at: now, ...totals};
      const leader = members.find((m) => m.role === 'leader');
      cards.replaceChildren(
        card(t('nodes'), `${members.filter((m) => m.reachable).length} / ${members.length}`, 'nodes'),
        card(t('leader'), leader ? `#${leader.id}` : '—', 'leader'),
        card(t('connections'), short(sum('connections')), 'connections'),
        card(t('sessions'), short(sum('sessions')), 'sessions'),
        card(t('subscriptions'), short(sum('subscriptions')), 'subscriptions'),
        card(t('retained'), short(sum('retained')), 'retained'),
        card(t('msg_in_rate'), short(rates[0]), 'in-rate'),
        card(t('msg_out_rate'), short(rates[1]), 'out-rate'));
      nodes.replaceChildren(table([
        [t('node'), (m) => `#${m.id}`],
        [t('role'), (m) => badge(m.reachable ? t(`raft_${m.role}`) : t('unreachable'),
          m.reachable ? m.role : 'down')],
        [t('connections'), (m) => m.connections ?? '—'],
        [t('term'), (m) => m.term ?? '—'],
        [t('applied'), (m) => m.last_applied ?? '—'],
        [t('mqtt_addr'), (m) => m.mqtt_addr],
        [t('api_addr'), (m) => m.api_addr],
      ], members));
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  }

  refresh();
  const timer = setInterval(refresh, EVERY_MS);
  const resize = () => chart.draw();
  window.addEventListener('resize', resize);
  return () => {
    clearInterval(timer);
    window.removeEventListener('resize', resize);
  };
}

function card(label, value, id) {
  return h('div', {class: 'stat', id: `stat-${id}`},
    h('span', {class: 'label'}, label), h('span', {class: 'value'}, value));
}
