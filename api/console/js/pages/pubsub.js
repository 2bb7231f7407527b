// Publish over the REST API (`POST /mqtt/publish`) and subscribe over MQTT on WebSocket from
// the browser, with the credentials of a device (or none where anonymous access is on).

import {post, consoleEnv, isAdmin} from '../api.js';
import {t} from '../i18n.js';
import {h, form, notify} from '../ui.js';
import {MqttClient} from '../mqtt.js';

const MAX_SHOWN = 200;

export default function pubsub(view) {
  let client = null;
  const messages = h('ol', {class: 'messages', id: 'messages', 'aria-live': 'polite'});
  const state = h('p', {class: 'muted', id: 'ws-state'}, t('ws_disconnected'));

  const publish = form({
    fields: [
      {name: 'topic', label: t('topic'), value: 'test/topic', required: true},
      {name: 'payload', label: t('payload'), type: 'textarea', value: 'Hello RealMQ'},
      {name: 'qos', label: t('qos'), options: [['0', '0'], ['1', '1'], ['2', '2']]},
      {name: 'encoding', label: t('encoding'), options: [['plain', 'plain'], ['base64', 'base64']]},
      {name: 'retain', label: t('retain'), type: 'checkbox'},
    ],
    submitLabel: t('publish'),
    submit: async (v) => {
      await post('mqtt/publish', {topic: v.topic, payload: v.payload, qos: Number(v.qos),
        encoding: v.encoding, retain: v.retain});
      notify(t('published', v.topic));
    },
  });
  publish.id = 'publish-form';

  const subscribe = form({
    fields: [
      {name: 'url', label: t('ws_url'), required: true},
      {name: 'clientid', label: t('client_id'),
        value: `console-${Math.random().toString(16).slice(2, 10)}`, required: true},
      {name: 'username', label: t('username'), help: t('ws_credentials_help')},
      {name: 'password', label: t('password'), type: 'password'},
      {name: 'topic', label: t('topic_filter'), value: 'test/#', required: true},
      {name: 'qos', label: t('qos'), options: [['0', '0'], ['1', '1'], ['2', '2']]},
    ],
    submitLabel: t('connect_subscribe'),
    submit: async (v) => {
      if (client) client.disconnect();
      client = null;
      state.textContent = t('ws_connecting');
      const c = await MqttClient.connect(v.url,
        {clientId: v.clientid, username: v.username, password: v.password},
        {onMessage: show, onClose: (reason) => {
          state.textContent = `${t('ws_disconnected')}: ${reason}`;
          client = null;
        }}).catch((e) => {
        state.textContent = t('ws_disconnected');
        // A refusal is about the credentials; anything else about reaching the URL.
        throw new Error(`${e.refused ? 'username' : 'url'}: ${e.message}`);
      });
      client = c;
      try {
        const granted = await c.subscribe(v.topic, Number(v.qos));
        state.textContent = t('ws_subscribed', v.topic, granted);
      } catch (e) {
        throw new Error(`topic: ${e.message}`);
      }
    },
    extra: [h('button', {type: 'button', id: 'ws-disconnect', onclick: () => {
      client?.disconnect();
      client = null;
      state.textContent = t('ws_disconnected');
    }}, t('disconnect')),
    h('button', {type: 'button', onclick: () => messages.replaceChildren()}, t('clear'))],
  });
  subscribe.id = 'subscribe-form';

  const decoder = new TextDecoder('utf-8', {fatal: true});
  function show(topic, bytes, {qos, retain}) {
    let text;
    try {
      text = decoder.decode(bytes);
    } catch {
      text = `base64:${btoa(String.fromCharCode(...bytes))}`;
    }
    messages.prepend(h('li', {},
      h('span', {class: 'meta'}, `${new Date().toLocaleTimeString()} · ${topic} · QoS ${qos}${retain ? ' · retained' : ''}`),
      h('code', {class: 'payload'}, text)));
    while (messages.children.length > MAX_SHOWN) messages.lastChild.remove();
  }

  view.append(h('div', {class: 'page-head'}, h('h1', {}, t('nav_pubsub'))),
    h('div', {class: 'split'},
      h('section', {class: 'card'}, h('h2', {}, t('publish')),
        isAdmin() ? publish : h('p', {class: 'muted'}, t('viewer_cannot_publish'))),
      h('section', {class: 'card'}, h('h2', {}, t('subscribe')), state, subscribe)),
    h('section', {class: 'card'}, h('h2', {}, t('received')), messages));

  consoleEnv().then((env) => {
    const secure = location.protocol === 'https:';
    const port = secure ? env.wss_port : env.ws_port;
    const url = subscribe.inputs.url;
    if (port) url.value = `${secure ? 'wss' : 'ws'}://${location.hostname}:${port}/mqtt`;
    else state.textContent = t('ws_off');
  }).catch(() => {});

  return () => client?.disconnect();
}
