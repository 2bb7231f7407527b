// Rules of the rule engine: the list with each rule's counters, create and edit with an SQL
// editor and a "test" that runs the SQL on a sample message (`POST /rules/test`), enable /
// disable and delete.

import {get, post, put, query, isAdmin} from '../api.js';
import {t} from '../i18n.js';
import {h, form, table, listView, dialog, confirmDelete, notify, adminButton, header, badge} from '../ui.js';

const SAMPLE_SQL = 'SELECT payload.temp AS temp, clientid\nFROM "sensors/+/temp"\nWHERE payload.temp > 30';
const SAMPLE_ACTIONS = JSON.stringify(
  [{type: 'republish', topic: 'alarms/${clientid}', payload: '{"temp": ${temp}}', qos: 1}], null, 2);
const SAMPLE_CONTEXT = JSON.stringify(
  {topic: 'sensors/1/temp', payload: '{"temp": 42}', clientid: 'sensor-1'}, null, 2);

export default function rules(view) {
  const {list, load} = listView({
    id: 'rule-list',
    fetch: (page) => get(`rules${query({_page: page, _limit: 20})}`),
    empty: t('no_rules'),
    columns: [
      [t('name'), (r) => h('button', {type: 'button', class: 'link', onclick: () => metrics(r)}, r.name)],
      [t('sql'), (r) => h('code', {class: 'sql'}, r.sql)],
      [t('rule_actions'), (r) => r.actions.map((a) => a.type).join(', ')],
      [t('status'), (r) => badge(r.enable ? t('enabled') : t('disabled'), r.enable ? 'online' : 'down')],
      [t('actions'), (r) => h('div', {class: 'row-actions'},
        h('button', {type: 'button', onclick: () => metrics(r)}, t('metrics')),
        adminButton(t('edit'), () => edit(r)),
        adminButton(r.enable ? t('disable') : t('enable'), () => toggle(r)),
        adminButton(t('delete'), () => remove(r), 'danger'))],
    ],
  });
  view.append(header(t('nav_rules'),
    h('button', {type: 'button', onclick: () => load()}, t('refresh')),
    h('button', {type: 'button', onclick: () => edit(null, true)}, t('test_sql')),
    adminButton(t('create_rule'), () => edit(null), 'primary')), list);

  /** The editor; `testOnly` opens it for trying SQL without saving (viewers may too). */
  function edit(r, testOnly = false) {
    const output = h('pre', {class: 'output', id: 'rule-test-output', 'aria-live': 'polite'});
    const fields = [
      {name: 'sql', label: t('sql'), type: 'code', rows: 6, value: r?.sql ?? SAMPLE_SQL,
        help: t('sql_help')},
      {name: 'context', label: t('test_context'), type: 'code', rows: 5, value: SAMPLE_CONTEXT,
        help: t('test_context_help')},
    ];
    if (!testOnly) {
      fields.unshift({name: 'name', label: t('name'), value: r?.name, required: true});
      fields.push(
        {name: 'actions', label: t('rule_actions'), type: 'code', rows: 6,
          value: r ? JSON.stringify(r.actions, null, 2) : SAMPLE_ACTIONS, help: t('actions_help')},
        {name: 'description', label: t('description'), value: r?.description},
        {name: 'enable', label: t('enabled'), type: 'checkbox', value: r ? r.enable : true});
    }
    const runTest = async (v) => {
      let context;
      try {
        context = JSON.parse(v.context || '{}');
      } catch (e) {
        throw new Error(`context: ${e.message}`);
      }
      const {data} = await post('rules/test', {sql: v.sql, context});
      output.textContent = data.matched
        ? `${t('test_matched')}\n${JSON.stringify(data.output, null, 2)}`
        : `${t('test_not_matched')}: ${data.reason}`;
    };
    const testButton = h('button', {type: 'button', id: 'rule-test'}, t('test'));
    const f = form({
      fields,
      submitLabel: testOnly ? t('test') : r ? t('save') : t('create'),
      extra: testOnly || !isAdmin() ? [] : [testButton],
      submit: async (v) => {
        if (testOnly) return runTest(v);
        let actions;
        try {
          actions = JSON.parse(v.actions);
        } catch (e) {
          throw new Error(`actions: ${e.message}`);
        }
        const body = {name: v.name.trim(), sql: v.sql, actions, description: v.description,
          enable: v.enable};
        if (r) await put(`rules/${r.id}`, body);
        else await post('rules', body);
        notify(t('saved'));
        close();
        load();
      },
    });
    f.id = 'rule-form';
    // The test goes through the form's error display too, so a bad SQL is marked at `sql`.
    testButton.addEventListener('click', () => f.run(runTest));
    f.append(h('h3', {}, t('test_result')), output);
    const {close} = dialog(testOnly ? t('test_sql') : r ? t('edit_rule') : t('create_rule'), f);
  }

  async function metrics(r) {
    try {
      const {data: d} = await get(`rules/${r.id}`);
      const names = Object.keys(d.metrics || {});
      dialog(`${t('metrics')}: ${d.name}`,
        h('dl', {class: 'detail', id: 'rule-metrics'},
          names.map((k) => [h('dt', {}, k), h('dd', {}, d.metrics[k])])),
        h('h3', {}, t('per_node')),
        table([[t('node'), (m) => `#${m.node}`],
          [t('running'), (m) => (m.running ? t('yes') : t('no'))],
          ...names.map((k) => [k, (m) => m[k] ?? '—'])],
        d.node_metrics || []));
    } catch (e) {
      notify(e.message, true);
    }
  }

  async function toggle(r) {
    try {
      await put(`rules/${r.id}`, {enable: !r.enable});
      notify(r.enable ? t('rule_disabled') : t('rule_enabled'));
      load();
    } catch (e) {
      notify(e.message, true);
    }
  }

  function remove(r) {
    confirmDelete(t('confirm_delete_rule', r.name), `rules/${r.id}`, load);
  }

  load();
  return null;
}
