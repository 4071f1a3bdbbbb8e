//! RP-initiated logout: when the global session being ended came from an IdP that has
//! an `end_session_endpoint` (and `end_session` is on), the auth domain's `/logout`
//! sends the browser there too, with the ID token kept in the sealed link cookie as
//! `id_token_hint`, and the IdP sends it back to `/signed-out`.

use super::{IdpLink, Login, pages};
use crate::runtime::Runtime;
use crate::web::body::Body;
use crate::web::ctx::ReqCtx;
use crate::web::html::html;
use http::{HeaderMap, Response, StatusCode};
use url::Url;

impl Login {
    /// The IdP's end-session URL for the session `sid` this browser is logging out of,
    /// when that session came from an IdP that takes RP-initiated logout.
    pub(in crate::login) fn idp_logout_url(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
        sid: &str,
    ) -> Option<Url> {
        let link = IdpLink::find(self.auth.keys().sealer(), h)?;
        if link.sid != sid {
            return None; // the link belongs to an earlier session of this browser
        }
        let provider = self.idps.get(&link.idp)?.provider().ok()?;
        let back = Url::parse(&format!(
            "{}/signed-out",
            ctx.origin_for(&rt.config.auth_domain)
        ))
        .ok()?;
        let url = provider.end_session_url(link.id_token.as_deref(), &back)?;
        tracing::info!(idp = %link.idp, sid, "logout continues at the identity provider");
        Some(url)
    }

    /// `GET /signed-out`: where the IdP sends the browser back after its logout.
    pub(in crate::login) fn signed_out(&self, rt: &Runtime, ctx: &ReqCtx) -> Response<Body> {
        let login = format!("{}/login", ctx.origin_for(&rt.config.auth_domain));
        html(StatusCode::OK, pages::idp_signed_out(&login))
    }
}
