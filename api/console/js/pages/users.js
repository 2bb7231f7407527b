// The control center's user management (the spec's 控制中心的用户管理): API users with their
// role; administrators create, change passwords and roles, and delete.

import {get, post, put, session, signOut} from '../api.js';
import {t} from '../i18n.js';
import {h, form, listView, dialog, confirmDelete, notify, adminButton, header, navigate} from '../ui.js';

const roles = () => [['viewer', t('role_viewer')], ['administrator', t('role_administrator')]];

export default function users(view) {
  const {list, load} = listView({
    id: 'user-list',
    fetch: () => get('users'),
    columns: [
      [t('username'), (u) => u.username],
      [t('role'), (u) => t(`role_${u.role}`)],
      [t('created'), (u) => u.create_at],
      [t('actions'), (u) => h('div', {class: 'row-actions'},
        adminButton(t('change_password'), () => password(u)),
        adminButton(t('change_role'), () => role(u)),
        adminButton(t('delete'), () => remove(u), 'danger'))],
    ],
  });
  view.append(header(t('nav_users'), adminButton(t('create_user'), () => create(), 'primary')), list);

  function create() {
    const f = form({
      fields: [
        {name: 'username', label: t('username'), required: true},
        {name: 'password', label: t('password'), type: 'password', required: true},
        {name: 'role', label: t('role'), options: roles()},
      ],
      submitLabel: t('create'),
      submit: async (v) => {
        await post('users', {username: v.username.trim(), password: v.password, role: v.role});
        notify(t('user_created', v.username.trim()));
        close();
        load();
      },
    });
    f.id = 'user-form';
    const {close} = dialog(t('create_user'), f);
    f.inputs.username.focus();
  }

  function password(u) {
    const f = form({
      fields: [
        {name: 'password', label: t('new_password'), type: 'password', required: true},
        {name: 'confirm', label: t('confirm_password'), type: 'password', required: true},
      ],
      submitLabel: t('save'),
      submit: async (v) => {
        if (v.password !== v.confirm) throw new Error(t('passwords_differ'));
        await put(`users/${encodeURIComponent(u.username)}`, {password: v.password});
        close();
        // Tokens stay valid until they expire, but a user who changed their own password
        // expects to prove it: sign in again.
        if (u.username === session()?.username) {
          signOut();
          notify(t('password_changed_sign_in'));
          navigate('#/login');
        } else {
          notify(t('saved'));
        }
      },
    });
    f.id = 'password-form';
    const {close} = dialog(`${t('change_password')}: ${u.username}`, f);
    f.inputs.password.focus();
  }

  function role(u) {
    const f = form({
      fields: [{name: 'role', label: t('role'), options: roles(), value: u.role}],
      submitLabel: t('save'),
      submit: async (v) => {
        await put(`users/${encodeURIComponent(u.username)}`, {role: v.role});
        notify(t('saved'));
        close();
        load();
      },
    });
    f.id = 'role-form';
    const {close} = dialog(`${t('change_role')}: ${u.username}`, f);
  }

  function remove(u) {
    confirmDelete(t('confirm_delete_user', u.username), `users/${encodeURIComponent(u.username)}`, load);
  }

  load();
  return null;
}
