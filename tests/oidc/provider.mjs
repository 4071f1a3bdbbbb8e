// A real OpenID Provider for Portcullis' tests: panva's certified `oidc-provider`, with
// a minimal login page of its own (email, password, optional one-time code) that an
// HTTP client or a headless browser fills in, back-channel logout, RP-initiated
// logout, PKCE required, and `email`, `email_verified`, `groups`, `sid`, `auth_time`
// and `acr` in ID tokens.
//
// Usage: node provider.mjs [config.json]   (or OP_CONFIG=path, or OP_CONFIG_JSON='{...}')
// It listens on 127.0.0.1 only and prints one JSON line on stdout when ready:
//   {"ready":true,"port":N,"issuer":"http://127.0.0.1:N", "signing_keys":[...]?}
// Everything else (events, errors) goes to stderr. It stops on SIGTERM/SIGINT, and
// when stdin closes if `exit_on_stdin_eof` is set (a test that dies leaves no orphan).
//
// Config (all optional but `clients` and `users`):
// {
//   "port": 0,                                // 0: the OS picks
//   "clients": [{ "client_id": "rp", "client_secret": "s",
//                 "redirect_uris": ["https://auth.localhost/oidc/corp/callback"],
//                 "post_logout_redirect_uris": [...],
//                 "backchannel_logout_uri": "http://127.0.0.1:9/bc",
//                 "backchannel_logout_session_required": true,
//                 "id_token_signed_response_alg": "RS256" }],
//   "users": [{ "email": "a@example.com", "password": "pw", "email_verified": true,
//               "groups": ["staff"], "sub": "optional", "otp": "optional code" }],
//   "groups_claim": "groups",                 // the claim name groups are sent under
//   "acr_values": ["urn:portcullis:pwd", "urn:portcullis:mfa"],
//                                             // acr of a password sign-in, then of one
//                                             // with the user's correct otp
//   "dev_interactions": false,                // true: oidc-provider's own dev pages
//   "backchannel": { "resolve": {"auth.localhost:8443": "127.0.0.1:40123"},
//                    "insecure_tls": false, "ca_file": "path/to/ca.pem" },
//   "ttl": { "IdToken": 3600, "Session": 86400 },
//   "expose_signing_keys": false,             // print the private keys (PKCS#8 PEM) in
//                                             // the ready line, to forge tokens in tests
//   "exit_on_stdin_eof": false
// }

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

function loadConfig() {
  if (process.env.OP_CONFIG_JSON) return JSON.parse(process.env.OP_CONFIG_JSON);
  const path = process.argv[2] || process.env.OP_CONFIG;
  if (!path) throw new Error('usage: node provider.mjs config.json (or OP_CONFIG / OP_CONFIG_JSON)');
  return JSON.parse(fs.readFileSync(path, 'utf8'));
}

const cfg = loadConfig();
const groupsClaim = cfg.groups_claim || 'groups';
const [acrPassword, acrMfa] = cfg.acr_values || ['urn:portcullis:pwd', 'urn:portcullis:mfa'];

// ---- keys ---------------------------------------------------------------------------

function newKey(type, alg) {
  const opts = type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
  const { privateKey } = crypto.generateKeyPairSync(type, opts);
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    jwk: { ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg, use: 'sig' },
    pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
  };
}

const keys = [newKey('rsa', 'RS256'), newKey('ec', 'ES256')];

// ---- accounts -----------------------------------------------------------------------

const users = (cfg.users || []).map((u, i) => ({
  sub: u.sub || `user-${i + 1}`,
  email: u.email,
  email_verified: u.email_verified !== undefined ? u.email_verified : true,
  groups: u.groups,
  password: u.password,
  otp: u.otp,
  name: u.name || u.email,
}));

function userByEmail(email) {
  const e = String(email || '').trim().toLowerCase();
  return users.find((u) => String(u.email).toLowerCase() === e);
}

async function findAccount(_ctx, sub) {
  const u = users.find((x) => x.sub === sub);
  if (!u) return undefined;
  return {
    accountId: sub,
    async claims() {
      const c = { sub, email: u.email, email_verified: u.email_verified, name: u.name };
      if (u.groups !== undefined) c[groupsClaim] = u.groups;
      return c;
    },
  };
}

// ---- outgoing requests (back-channel logout) ----------------------------------------

// oidc-provider refuses to call loopback addresses (SSRF protection) and resolves names
// with the system resolver; the tests need both: the relying party listens on loopback,
// under names like auth.localhost that must not depend on /etc/hosts.
function harnessFetch(url, options) {
  const bc = cfg.backchannel || {};
  const u = new URL(url);
  const target = (bc.resolve || {})[u.host] || (bc.resolve || {})[u.hostname];
  const [connectHost, connectPort] = target
    ? [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))]
    : [u.hostname, Number(u.port) || (u.protocol === 'https:' ? 443 : 80)];
  const headers = Object.fromEntries(new Headers(options.headers || {}).entries());
  headers.host = u.host;
  const body = options.body === undefined ? undefined : String(options.body);
  if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
  const mod = u.protocol === 'https:' ? https : http;
  const tls = u.protocol === 'https:'
    ? {
      servername: u.hostname,
      rejectUnauthorized: !bc.insecure_tls,
      ca: bc.ca_file ? fs.readFileSync(bc.ca_file) : undefined,
    }
    : {};
  return new Promise((resolve, reject) => {
    const req = mod.request({
      host: connectHost, port: connectPort, method: options.method || 'GET',
      path: `${u.pathname}${u.search}`, headers, signal: options.signal, ...tls,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const nullBody = [101, 204, 205, 304].includes(res.statusCode);
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          for (const one of [].concat(v)) h.append(k, String(one));
        }
        resolve(new Response(nullBody ? null : Buffer.concat(chunks), { status: res.statusCode, headers: h }));
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

// ---- the provider -------------------------------------------------------------------

function clientMetadata(c) {
  const m = {
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris || [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
    require_auth_time: true,
  };
  if (c.id_token_signed_response_alg) m.id_token_signed_response_alg = c.id_token_signed_response_alg;
  if (c.backchannel_logout_uri) {
    m.backchannel_logout_uri = c.backchannel_logout_uri;
    m.backchannel_logout_session_required = c.backchannel_logout_session_required !== false;
  }
  return m;
}

// First-party clients: consent is given on the user's behalf, for whatever was asked.
async function loadExistingGrant(ctx) {
  const { client, session, params } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  const grant = grantId ? await ctx.oidc.provider.Grant.find(grantId)
    : new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  grant.addOIDCScope(String(params.scope || 'openid'));
  grant.addOIDCClaims(['sub', 'email', 'email_verified', 'name', groupsClaim]);
  await grant.save();
  return grant;
}

function page(title, inner) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>`
    + `<body><h1>${esc(title)}</h1>${inner}</body></html>`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const configuration = {
  clients: (cfg.clients || []).map(clientMetadata),
  findAccount,
  loadExistingGrant,
  jwks: { keys: keys.map((k) => k.jwk) },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', groupsClaim],
    groups: [groupsClaim],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  acrValues: [acrPassword, acrMfa],
  pkce: { required: () => true },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400, ...(cfg.ttl || {}) },
  features: {
    devInteractions: { enabled: Boolean(cfg.dev_interactions) },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>`
          + '<button id="stay" type="submit" form="op.logoutForm">No, stay signed in</button>');
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p id="signed-out">You are signed out of the test OP.</p>');
      },
    },
  },
  fetch: harnessFetch,
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('OP error', Object.entries(out).map(([k, v]) => `<p class="error" data-key="${esc(k)}">${esc(k)}: ${esc(v)}</p>`).join(''));
  },
};

// ---- the login page -----------------------------------------------------------------

function loginForm(uid, params, error) {
  const asked = params.acr_values ? `<p id="acr-asked">acr_values: ${esc(params.acr_values)}</p>` : '';
  return page('Sign in to the test OP', `${error ? `<p id="error">${esc(error)}</p>` : ''}${asked}`
    + `<form id="login" method="post" action="/interaction/${esc(uid)}/login">`
    + '<label>Email <input id="email" name="email" type="email" autofocus></label>'
    + '<label>Password <input id="password" name="password" type="password"></label>'
    + '<label>One-time code <input id="otp" name="otp" autocomplete="one-time-code"></label>'
    + '<button id="submit" type="submit">Sign in</button></form>'
    + `<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Interaction mismatch', ''));
  const { prompt, params } = details;
  if (action === 'abort' && req.method === 'POST') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    // First-party client: consent to whatever is missing, then resume.
    const { missingOIDCScope, missingOIDCClaims } = prompt.details;
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }
  if (action !== 'login' || req.method !== 'POST') return send(res, 200, loginForm(uid, params));
  const form = await readForm(req);
  const user = userByEmail(form.get('email'));
  const pwOk = user && crypto.timingSafeEqual(
    crypto.createHash('sha256').update(String(form.get('password') || '')).digest(),
    crypto.createHash('sha256').update(String(user.password)).digest(),
  );
  if (!pwOk) return send(res, 200, loginForm(uid, params, 'Wrong email or password'));
  const otp = form.get('otp') || '';
  if (otp && otp !== user.otp) return send(res, 200, loginForm(uid, params, 'Wrong one-time code'));
  const mfa = Boolean(otp) && otp === user.otp;
  return provider.interactionFinished(req, res, {
    login: { accountId: user.sub, acr: mfa ? acrMfa : acrPassword, amr: mfa ? ['pwd', 'otp'] : ['pwd'] },
  }, { mergeWithLastSubmission: false });
}

// ---- server -------------------------------------------------------------------------

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

async function main() {
  let provider;
  const server = http.createServer((req, res) => {
    const m = /^\/interaction\/([^/?]+)(?:\/(login|abort))?(?:\?.*)?$/.exec(req.url);
    if (!m || cfg.dev_interactions) return provider.callback()(req, res);
    return interaction(provider, req, res, m[1], m[2]).catch((err) => {
      process.stderr.write(`interaction error: ${err.stack || err}\n`);
      if (!res.headersSent) send(res, 400, page('Interaction failed', `<p id="error">${esc(err.message)}</p>`));
    });
  });
  const port = await listen(server, Number(cfg.port || 0));
  const issuer = `http://127.0.0.1:${port}`;
  provider = new Provider(issuer, configuration);
  for (const ev of ['backchannel.success', 'backchannel.error', 'server_error', 'end_session.success']) {
    provider.on(ev, (...args) => {
      const err = args.find((a) => a instanceof Error);
      process.stderr.write(`${JSON.stringify({ event: ev, error: err ? String(err.message) : undefined })}\n`);
    });
  }
  const ready = { ready: true, port, issuer };
  if (cfg.expose_signing_keys) {
    ready.signing_keys = keys.map((k) => ({ kid: k.jwk.kid, alg: k.jwk.alg, pem: k.pem }));
  }
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (cfg.exit_on_stdin_eof) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}

main().catch((err) => {
  process.stderr.write(`provider failed: ${err.stack || err}\n`);
  process.exit(1);
});
