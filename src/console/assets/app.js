/* The console's page: plain JavaScript, no library, nothing loaded from
 * elsewhere (the Content-Security-Policy allows only this origin). Talks to
 * the self-service API next to it (api/...), with the session cookie and,
 * for every change, the anti-CSRF token the sign-in answer gave. A new key
 * lives only in the reveal dialog's field, and only until it is closed. */
'use strict';
(function () {
  var csrf = null;      /* this session's anti-CSRF token */
  var policy = null;    /* require_scopes, key_max_lifetime_days, scopes */
  var pending = null;   /* the key a confirmation dialog is about */
  var $ = function (id) { return document.getElementById(id); };

  function api(method, path, body) {
    var opts = { method: method, credentials: 'same-origin', headers: {} };
    if (csrf && method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var doc = null;
        try { doc = t ? JSON.parse(t) : null; } catch (e) { doc = null; }
        return { status: r.status, doc: doc };
      });
    });
  }

  function message(doc, fallback) {
    if (doc && typeof doc.detail === 'string') return doc.detail;
    if (doc && doc.error && typeof doc.error.message === 'string') return doc.error.message;
    return fallback;
  }

  function say(text) { $('status').textContent = text; }

  function fmt(t) {
    if (!t) return null;
    var d = new Date(t);
    return isNaN(d) ? t : d.toLocaleString();
  }

  /* ---- views ---- */

  function showSignin() {
    csrf = null;
    policy = null;
    $('who').hidden = true;
    $('keys-view').hidden = true;
    $('signin-view').hidden = false;
    $('keys-body').textContent = '';
    api('GET', 'api/config').then(function (r) {
      var on = r.doc && r.doc.signup;
      $('signup-offer').hidden = !on;
      if (on) $('signup-form').dataset.path = r.doc.signup_path;
      if (r.doc && r.doc.password_min) $('pw-min').textContent = r.doc.password_min;
    });
    $('login').focus();
  }

  function showKeys(session) {
    csrf = session.csrf_token;
    policy = session.policy;
    $('signin-view').hidden = true;
    $('keys-view').hidden = false;
    $('who').hidden = false;
    $('who-name').textContent = session.user.email || session.user.username;
    $('password').value = '';
    load();
  }

  function stateLabel(s) {
    return { active: 'Active', expired: 'Expired', revoked: 'Revoked', disabled: 'Disabled' }[s] || s;
  }

  function cell(tr, label, text, cls) {
    var td = document.createElement('td');
    td.dataset.label = label;
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function button(text, cls, onclick) {
    var b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.textContent = text;
    b.addEventListener('click', onclick);
    return b;
  }

  /* Canary and allowlist are set by the operator (CLI or admin API), so
   * the page only shows them, under the name where they stay readable at
   * 360 px. */
  function nameCell(tr, k) {
    var td = cell(tr, 'Name', k.name, 'name');
    if (k.canary) {
      var b = document.createElement('span');
      b.className = 'badge canary';
      b.title = 'A canary key never grants access: every use gets 401 and is reported to your operator.';
      b.textContent = 'Canary';
      var why = document.createElement('span');
      why.className = 'sr';
      why.textContent = ' (never grants access; every use is reported)';
      b.appendChild(why);
      td.appendChild(b);
    }
    if (k.allowed_ips && k.allowed_ips.length) {
      var ips = document.createElement('span');
      ips.className = 'ips';
      ips.textContent = 'Only from: ';
      k.allowed_ips.forEach(function (c) {
        var code = document.createElement('code');
        code.textContent = c;
        ips.appendChild(code);
      });
      td.appendChild(ips);
    }
  }

  /* From expires_at, as the reader's clock sees it ("expiring" is the
   * server's word that it is within 14 days). */
  function reminder(t) {
    var days = Math.ceil((new Date(t) - Date.now()) / 86400000);
    if (isNaN(days) || days < 1) return 'Expires today \u2014 regenerate it now';
    return 'Expires in ' + days + (days === 1 ? ' day' : ' days') +
      ' \u2014 regenerate it before then';
  }

  function render(keys) {
    var body = $('keys-body');
    body.textContent = '';
    $('empty').hidden = keys.length !== 0;
    $('keys-table').hidden = keys.length === 0;
    var expiring = 0;
    keys.forEach(function (k) {
      var tr = document.createElement('tr');
      tr.dataset.id = k.id;
      nameCell(tr, k);
      cell(tr, 'Key', '\u2022\u2022\u2022\u2022\u2022' + k.last4, 'key');
      var sc = cell(tr, 'Scopes', undefined, 'scopes');
      if (!k.scopes || k.scopes.length === 0) sc.textContent = 'All (no scopes)';
      (k.scopes || []).forEach(function (s) {
        var span = document.createElement('span');
        span.className = 'scope';
        span.textContent = s;
        sc.appendChild(span);
      });
      cell(tr, 'Created', fmt(k.created_at));
      cell(tr, 'Last used', fmt(k.last_used_at) || 'Never', 'last-used');
      var ex = cell(tr, 'Expires', fmt(k.expires_at) || 'Never', 'expires');
      if (k.expiring) {
        var rem = document.createElement('span');
        rem.className = 'reminder';
        rem.textContent = reminder(k.expires_at);
        ex.appendChild(rem);
        expiring++;
      }
      cell(tr, 'State', stateLabel(k.state), 'state state-' + k.state);
      var act = cell(tr, 'Actions', undefined, 'actions-cell');
      if (k.state === 'active' || k.state === 'expired') {
        act.appendChild(button('Regenerate', 'small secondary regen', function () { askRegen(k); }));
      }
      if (k.state !== 'revoked') {
        act.appendChild(button('Revoke', 'small danger revoke', function () { askRevoke(k); }));
      }
      body.appendChild(tr);
    });
    $('expiring-banner').hidden = expiring === 0;
    $('expiring-banner').textContent = expiring === 0 ? '' :
      (expiring === 1 ? '1 of your keys expires within 14 days: regenerate it before then' +
        ' and update the integrations that use it.'
        : expiring + ' of your keys expire within 14 days: regenerate them before then' +
        ' and update the integrations that use them.');
  }

  function load() {
    var all = $('show-all').checked;
    return api('GET', all ? 'api/keys?state=all' : 'api/keys').then(function (r) {
      if (r.status === 401) return showSignin();
      if (r.status !== 200) return say(message(r.doc, 'Could not load your keys.'));
      render(r.doc.data);
    });
  }

  /* ---- one-time reveal ---- */

  function reveal(key, title) {
    $('reveal-title').textContent = title;
    $('reveal-key').value = key;
    $('copied').textContent = '';
    $('reveal-dialog').showModal();
    $('reveal-key').focus();
    $('reveal-key').select();
  }

  function forgetReveal() {
    /* The key leaves the page: the field is emptied, nothing keeps it. */
    $('reveal-key').value = '';
    $('reveal-key').defaultValue = '';
    $('copied').textContent = '';
  }

  $('copy-btn').addEventListener('click', function () {
    var field = $('reveal-key');
    var done = function () { $('copied').textContent = 'Copied'; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        field.select();
        if (document.execCommand('copy')) done();
        else $('copied').textContent = 'Select the key and copy it';
      });
    } else {
      field.select();
      if (document.execCommand('copy')) done();
    }
  });
  $('reveal-close').addEventListener('click', function () { $('reveal-dialog').close(); });
  $('reveal-dialog').addEventListener('close', function () { forgetReveal(); load(); });

  /* ---- create ---- */

  function expiryAllowed(days) {
    var max = policy && policy.key_max_lifetime_days;
    return !max || (days !== null && days <= max);
  }

  function openCreate() {
    var list = $('scopes-list');
    list.textContent = '';
    $('create-error').textContent = '';
    $('key-name').value = '';
    var scopes = (policy && policy.scopes) || [];
    $('scopes-none').hidden = scopes.length !== 0;
    scopes.forEach(function (s, i) {
      var div = document.createElement('div');
      div.className = 'scope-item';
      var cb = document.createElement('input');
      cb.type = 'checkbox';
      cb.id = 'scope-' + i;
      cb.value = s.name;
      cb.className = 'scope-cb';
      cb.addEventListener('change', scopeWarning);
      var label = document.createElement('label');
      label.htmlFor = cb.id;
      label.textContent = s.name;
      div.appendChild(cb);
      div.appendChild(label);
      if (s.description) {
        var d = document.createElement('span');
        d.className = 'desc';
        d.id = 'scope-desc-' + i;
        d.textContent = s.description;
        cb.setAttribute('aria-describedby', d.id);
        div.appendChild(d);
      }
      list.appendChild(div);
    });
    var opts = { '30d': 30, '90d': 90, '365d': 365, 'custom': 0, 'never': null };
    Array.prototype.forEach.call($('key-expiry').options, function (o) {
      o.hidden = o.disabled = !(o.value === 'custom' || expiryAllowed(opts[o.value]));
    });
    if ($('key-expiry').selectedOptions[0].disabled) $('key-expiry').value = '30d';
    if (policy && policy.key_max_lifetime_days) {
      var max = new Date(Date.now() + policy.key_max_lifetime_days * 86400000);
      $('key-expiry-date').max = max.toISOString().slice(0, 10);
    }
    $('key-expiry-date').min = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
    $('expiry-date-row').hidden = $('key-expiry').value !== 'custom';
    scopeWarning();
    $('create-dialog').showModal();
    $('key-name').focus();
  }

  function chosenScopes() {
    return Array.prototype.map.call(document.querySelectorAll('.scope-cb:checked'),
      function (cb) { return cb.value; });
  }

  function scopeWarning() {
    var none = chosenScopes().length === 0;
    var w = $('scope-warning');
    if (policy && policy.require_scopes) {
      w.textContent = 'Choose at least one scope: keys without scopes are refused.';
    } else {
      w.textContent = 'A key with no scopes has full access: it can do everything your account can.';
    }
    w.hidden = !none;
  }

  $('key-expiry').addEventListener('change', function () {
    $('expiry-date-row').hidden = this.value !== 'custom';
  });
  $('create-btn').addEventListener('click', openCreate);
  $('empty-create').addEventListener('click', openCreate);
  $('create-cancel').addEventListener('click', function () { $('create-dialog').close(); });
  $('create-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var name = $('key-name').value.trim();
    var exp = $('key-expiry').value;
    if (!name) { $('create-error').textContent = 'Enter a name for the key.'; $('key-name').focus(); return; }
    if (exp === 'custom') {
      exp = $('key-expiry-date').value;
      if (!exp) { $('create-error').textContent = 'Choose an expiry date.'; $('key-expiry-date').focus(); return; }
    }
    var scopes = chosenScopes();
    if (policy && policy.require_scopes && scopes.length === 0) {
      $('create-error').textContent = 'Choose at least one scope.';
      return;
    }
    $('create-submit').disabled = true;
    api('POST', 'api/keys', { name: name, expires: exp, scopes: scopes }).then(function (r) {
      $('create-submit').disabled = false;
      if (r.status === 401) { $('create-dialog').close(); return showSignin(); }
      if (r.status !== 201) { $('create-error').textContent = message(r.doc, 'The key could not be created.'); return; }
      $('create-dialog').close();
      var key = r.doc.key;
      r.doc.key = null;
      reveal(key, 'Your new API key: ' + r.doc.name);
      key = null;
    });
  });

  /* ---- revoke and regenerate ---- */

  function askRevoke(k) {
    pending = k;
    $('revoke-name').textContent = k.name;
    $('revoke-error').textContent = '';
    $('revoke-dialog').showModal();
    $('revoke-cancel').focus();
  }

  function askRegen(k) {
    pending = k;
    $('regen-name').textContent = k.name;
    $('regen-error').textContent = '';
    $('regen-dialog').showModal();
    $('regen-cancel').focus();
  }

  $('revoke-cancel').addEventListener('click', function () { $('revoke-dialog').close(); });
  $('regen-cancel').addEventListener('click', function () { $('regen-dialog').close(); });
  $('revoke-confirm').addEventListener('click', function () {
    api('POST', 'api/keys/' + encodeURIComponent(pending.id) + '/revoke').then(function (r) {
      if (r.status !== 200) { $('revoke-error').textContent = message(r.doc, 'The key could not be revoked.'); return; }
      $('revoke-dialog').close();
      say('Revoked ' + r.doc.name + '.');
      load();
    });
  });
  $('regen-confirm').addEventListener('click', function () {
    api('POST', 'api/keys/' + encodeURIComponent(pending.id) + '/regenerate').then(function (r) {
      if (r.status !== 201) { $('regen-error').textContent = message(r.doc, 'The key could not be regenerated.'); return; }
      $('regen-dialog').close();
      var key = r.doc.key;
      r.doc.key = null;
      reveal(key, 'Your regenerated API key: ' + r.doc.name);
      key = null;
    });
  });

  $('show-all').addEventListener('change', load);

  /* ---- sign in, sign up, sign out ---- */

  $('signin-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    $('signin-error').textContent = '';
    $('signin-btn').disabled = true;
    api('POST', 'api/session', { login: $('login').value, password: $('password').value })
      .then(function (r) {
        $('signin-btn').disabled = false;
        $('password').value = '';
        if (r.status !== 200) {
          $('signin-error').textContent = message(r.doc, 'Sign-in failed.');
          $('password').focus();
          return;
        }
        return api('GET', 'api/session').then(function (s) {
          if (s.status === 200) showKeys(s.doc);
        });
      });
  });

  $('show-signup').addEventListener('click', function () {
    $('signup-form').hidden = false;
    $('signup-email').focus();
  });
  $('signup-cancel').addEventListener('click', function () { $('signup-form').hidden = true; });
  $('signup-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var email = $('signup-email').value, pw = $('signup-password').value;
    $('signup-error').textContent = '';
    fetch(this.dataset.path, { method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: email, password: pw }) })
      .then(function (r) { return r.json().then(function (d) { return { status: r.status, doc: d }; }); })
      .then(function (r) {
        if (r.status !== 201) { $('signup-error').textContent = message(r.doc, 'The account could not be created.'); return; }
        var key = r.doc.api_key;
        r.doc.api_key = null;
        $('signup-form').hidden = true;
        $('signup-password').value = '';
        return api('POST', 'api/session', { login: email, password: pw }).then(function (s) {
          pw = null;
          return api('GET', 'api/session');
        }).then(function (s) {
          if (s.status === 200) showKeys(s.doc);
          reveal(key, 'Your first API key');
          key = null;
        });
      });
  });

  $('signout-btn').addEventListener('click', function () {
    api('DELETE', 'api/session').then(function () { say('Signed out.'); showSignin(); });
  });

  api('GET', 'api/session').then(function (r) {
    if (r.status === 200) showKeys(r.doc); else showSignin();
  });
})();
