//! Simulated browsers: each signs in through the balancer with a cookie jar and no
//! connection pool (so every step of the flow may land on another node), then calls
//! the app as an XHR, through the balancer and directly on each node, until its token
//! is refused; then it gets a new one the way a browser would (silent re-issue, or the
//! sign-in form again). Every protected request goes into the history with the token
//! it carried.

use crate::ctx::Ctx;
use crate::fleet::User;
use crate::history::{Exchange, Kind, Request, Token, Via, excerpt};
use base64::Engine as _;
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::Client;
use reqwest::cookie::{CookieStore, Jar};
use std::sync::Arc;
use std::time::Duration;

/// Sends the protected request `GET /soak/<id>` carrying token `tok` and records it.
/// Returns the status (0: no HTTP answer).
pub async fn send(ctx: &Ctx, tok: usize, via: Via, kind: Kind) -> u16 {
    let (cookie, host) = ctx.rec.with(|h| {
        let t = &h.tokens[tok];
        (t.cookie.clone(), t.host.clone())
    });
    let id = ctx.next_id();
    let (client, port) = match via {
        Via::Balancer => (&ctx.lb_client, ctx.lb_port),
        Via::Node(i) => (&ctx.direct[i], ctx.fleet.nodes[i].https),
    };
    let url = format!("https://{host}:{port}/soak/{id}");
    let sent = ctx.rec.now();
    let r = client
        .get(&url)
        .header("cookie", cookie)
        .header("x-requested-with", "XMLHttpRequest")
        .header("accept", "application/json")
        .send()
        .await;
    let (status, reason) = match r {
        Ok(r) => {
            let s = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (
                s,
                if s == 200 {
                    String::new()
                } else {
                    excerpt(&body, 240)
                },
            )
        }
        Err(e) => (0, excerpt(&format!("{e:?}"), 240)),
    };
    let done = ctx.rec.now();
    ctx.rec.request(Request {
        id,
        token: tok,
        via,
        node: match via {
            Via::Node(i) => Some(i),
            Via::Balancer => None,
        },
        sent,
        done,
        status,
        reason,
        kind,
    });
    status
}

pub struct Browser {
    user: User,
    host: &'static str,
    app: &'static str,
    jar: Arc<Jar>,
    client: Client,
    token: Option<usize>,
    last_jti: String,
    rng: StdRng,
}

enum SignIn {
    Got(usize),
    Wait(Duration),
}

impl Browser {
    pub fn new(ctx: &Ctx, n: usize, seed: u64) -> Browser {
        let user = ctx.users[n % ctx.users.len()].clone();
        let (app, host) = crate::fleet::APPS[n % crate::fleet::APPS.len()];
        let jar = Arc::new(Jar::default());
        let client = ctx
            .builder(ctx.lb_addr())
            .cookie_provider(jar.clone())
            .pool_max_idle_per_host(0)
            .build()
            .expect("browser client");
        Browser {
            user,
            host,
            app,
            jar,
            client,
            token: None,
            last_jti: String::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Signs in and calls the app until the load phase ends.
    pub async fn run(mut self, ctx: Arc<Ctx>) {
        while !ctx.load_over() {
            let Some(tok) = self.token else {
                match self.sign_in(&ctx).await {
                    SignIn::Got(t) => self.token = Some(t),
                    SignIn::Wait(d) => ctx.pause(d).await,
                }
                continue;
            };
            let k = self.rng.random_range(0..(ctx.fleet.n() + 2));
            let via = if k < 2 {
                Via::Balancer
            } else {
                Via::Node(k - 2)
            };
            match send(&ctx, tok, via, Kind::Browser).await {
                401 => self.token = None,
                503 => ctx.pause(Duration::from_millis(200)).await,
                _ => {}
            }
            let think = self.rng.random_range(100..400);
            ctx.pause(Duration::from_millis(think)).await;
        }
    }

    /// Opens the app; signs in if the form appears; returns the new token.
    async fn sign_in(&mut self, ctx: &Ctx) -> SignIn {
        let start = format!("https://{}:{}/", self.host, ctx.lb_port);
        let (status, url, body) = match self.navigate(ctx, &start).await {
            Some(x) => x,
            None => return SignIn::Wait(Duration::from_millis(300)),
        };
        let done = match status {
            200 if body.contains("name=\"password\"") => self.post_form(ctx, &url, &body).await,
            200 => true,
            _ => false,
        };
        if !done {
            // 403: the lockout after a revocation of the user; 503: a node catching up
            // or cut off; 429: throttled.
            return SignIn::Wait(Duration::from_millis(if status == 403 { 700 } else { 300 }));
        }
        match self.take_token(ctx) {
            Some(t) => SignIn::Got(t),
            None => SignIn::Wait(Duration::from_millis(300)),
        }
    }

    /// Posts the sign-in form found at `url`; true when it ends on the app.
    async fn post_form(&mut self, ctx: &Ctx, url: &str, html: &str) -> bool {
        let (Some(csrf), return_to) = (extract(html, "csrf"), extract(html, "return_to")) else {
            return false;
        };
        let post = join(url, "/login");
        let sent = ctx.rec.now();
        let r = self
            .client
            .post(&post)
            .header("accept", "text/html")
            .form(&[
                ("csrf", csrf.as_str()),
                ("email", self.user.email.as_str()),
                ("password", self.user.password.as_str()),
                ("return_to", return_to.as_deref().unwrap_or("")),
            ])
            .send()
            .await;
        let Ok(r) = r else { return false };
        let s = r.status().as_u16();
        let loc = location(&r);
        if s >= 500 {
            let body = r.text().await.unwrap_or_default();
            record_5xx(ctx, "POST /login", sent, s, &body);
            return false;
        }
        let Some(loc) = loc.filter(|_| (300..400).contains(&s)) else {
            return false;
        };
        matches!(self.navigate(ctx, &join(&post, &loc)).await, Some((200, _, ref b)) if !b.contains("name=\"password\""))
    }

    /// Follows redirects like a browser; the final status, URL and body.
    async fn navigate(&self, ctx: &Ctx, url: &str) -> Option<(u16, String, String)> {
        let mut url = url.to_string();
        for _ in 0..12 {
            let sent = ctx.rec.now();
            let r = self
                .client
                .get(&url)
                .header("accept", "text/html,application/xhtml+xml")
                .send()
                .await
                .ok()?;
            let s = r.status().as_u16();
            if let Some(loc) = location(&r).filter(|_| (300..400).contains(&s)) {
                url = join(&url, &loc);
                continue;
            }
            let body = r.text().await.unwrap_or_default();
            if s >= 500 {
                let path = url.split('?').next().unwrap_or("").to_string();
                record_5xx(ctx, &format!("GET {path}"), sent, s, &body);
            }
            return Some((s, url, body));
        }
        None
    }

    /// The app token and binding cookie now in the jar, as a new token of the history
    /// (None if the jar still holds the token we had).
    fn take_token(&mut self, ctx: &Ctx) -> Option<usize> {
        let cookies = self
            .jar
            .cookies(&format!("https://{}/", self.host).parse().ok()?)?;
        let cookies = cookies.to_str().ok()?.to_string();
        let jwt = cookies
            .split("; ")
            .find_map(|kv| kv.strip_prefix("portcullis_app="))?;
        let claims = decode_claims(jwt)?;
        let jti = claims["jti"].as_str()?.to_string();
        if jti == self.last_jti {
            return None;
        }
        self.last_jti = jti.clone();
        let keep: Vec<&str> = cookies
            .split("; ")
            .filter(|kv| kv.starts_with("portcullis_app=") || kv.starts_with("portcullis_binding="))
            .collect();
        let t = Token {
            jti,
            sid: claims["sid"].as_str()?.to_string(),
            email: claims["email"].as_str()?.to_string(),
            groups: claims["groups"]
                .as_array()?
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            app: claims["aud"].as_str()?.to_string(),
            iat_us: claims["iat_us"].as_i64()?,
            obtained: ctx.rec.now(),
            cookie: keep.join("; "),
            host: self.host.to_string(),
        };
        debug_assert_eq!(t.app, self.app);
        let n = ctx.rec.token(t);
        ctx.recent(n);
        Some(n)
    }
}

fn record_5xx(ctx: &Ctx, what: &str, sent: i64, status: u16, body: &str) {
    ctx.rec.exchange(Exchange {
        what: what.to_string(),
        via: Via::Balancer,
        sent,
        done: ctx.rec.now(),
        status,
        reason: excerpt(body, 240),
    });
}

/// The JSON claims of a JWT (not verified: the driver only reads what it was given).
pub fn decode_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn join(base: &str, loc: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(loc))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| loc.to_string())
}

/// The value of the form field `name` in the sign-in page.
fn extract(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html.find(&needle)? + needle.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}
